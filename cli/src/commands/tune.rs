//! `jetc tune MODEL` / `jetc tune --kernel NAME --shape k=v,..`: autotunes the kernels a model
//! needs on the local GPU into the tuning database (see jetc_codegen::tune), with a progress
//! bar; a second run is served from the database. `jetc gpu-bench` runs every kernel once
//! against the CPU reference and times it (the Rust side of scripts/gpu-check.sh). Without a
//! GPU both say so and exit non-zero, without panicking.
use std::path::PathBuf;

use jetc_codegen::indicatif::{ProgressBar, ProgressStyle};
use jetc_codegen::kernels::{ChunkDims, DType, EwOp, Kernel, MixerDims, NormKind, RunSize};
use jetc_codegen::tune::{default_db_path, tune_one, TuningDb};

use crate::error::{CliError, Result};

pub struct TuneArgs {
    pub model: Option<String>,
    pub kernel: Option<String>,
    pub shape: Vec<String>,
    pub dtype: String,
    pub batch: Vec<usize>,
    pub seq: Vec<usize>,
    pub db: Option<PathBuf>,
}

fn msg(e: impl std::fmt::Display) -> CliError {
    CliError::Msg(e.to_string())
}

/// `--kernel NAME --shape heads=12,dk=96,...` to a kernel problem.
pub(crate) fn kernel_from_shape(name: &str, shape: &[String], dtype: DType) -> Result<Kernel> {
    let mut kv = std::collections::BTreeMap::new();
    for s in shape {
        for part in s.split(',').filter(|p| !p.is_empty()) {
            let (k, v) = part.split_once('=').ok_or_else(|| CliError::Msg(format!("--shape: `{part}` is not key=value")))?;
            let v: usize = v.parse().map_err(|_| CliError::Msg(format!("--shape: `{part}`: not a number")))?;
            kv.insert(k.to_string(), v);
        }
    }
    let get = |k: &str, d: Option<usize>| -> Result<usize> {
        kv.get(k).copied().or(d).ok_or_else(|| CliError::Msg(format!("--shape needs `{k}=` for {name}")))
    };
    let heads = get("heads", Some(12))?;
    Ok(match name {
        "jet_decode" => Kernel::JetDecode(MixerDims {
            qk_heads: heads,
            v_heads: get("v_heads", Some(heads))?,
            dk: get("dk", Some(96))?,
            dv: get("dv", Some(256))?,
            width: get("width", Some(4))?,
            dtype,
        }),
        "gdn_chunk_prep" | "gdn_chunk_state" => {
            let c = ChunkDims {
                qk_heads: heads,
                v_heads: get("v_heads", Some(heads))?,
                dk: get("dk", Some(96))?,
                dv: get("dv", Some(256))?,
                chunk: get("chunk", Some(64))?,
                dtype,
                qk_silu: true,
                qk_l2norm: true,
                raw_gates: true,
            };
            if name == "gdn_chunk_prep" {
                Kernel::GdnChunkPrep(c)
            } else {
                Kernel::GdnChunkState(c)
            }
        }
        "dynconv_prefill" => Kernel::DynConvPrefill { channels: get("channels", None)?, width: get("width", Some(4))?, dtype },
        "rmsnorm" => Kernel::RowNorm { kind: NormKind::RmsNorm, heads: 1, dim: get("dim", None)?, silu: false, dtype },
        "gated_rmsnorm" => Kernel::RowNorm { kind: NormKind::GatedRmsNorm, heads, dim: get("dim", None)?, silu: false, dtype },
        "l2norm" => Kernel::RowNorm { kind: NormKind::L2Norm, heads, dim: get("dim", None)?, silu: false, dtype },
        "silu_mul" => Kernel::Elementwise { op: EwOp::SiluMul, dtype },
        "add" => Kernel::Elementwise { op: EwOp::Add, dtype },
        other => {
            return Err(CliError::Msg(format!(
                "unknown kernel `{other}` (jet_decode, gdn_chunk_prep, gdn_chunk_state, dynconv_prefill, rmsnorm, gated_rmsnorm, l2norm, silu_mul, add)"
            )))
        }
    })
}

fn sizes(kernel: &Kernel, batch: &[usize], seq: &[usize]) -> Vec<RunSize> {
    let decode = matches!(kernel, Kernel::JetDecode(_));
    let batches: Vec<usize> = if batch.is_empty() { if decode { vec![1, 8, 64, 256] } else { vec![1, 8] } } else { batch.to_vec() };
    let seqs: Vec<usize> = if decode { vec![1] } else if seq.is_empty() { vec![4096] } else { seq.to_vec() };
    let mut out = Vec::new();
    for &b in &batches {
        for &t in &seqs {
            out.push(RunSize { batch: b, seq: t });
        }
    }
    out
}

pub fn run(a: &TuneArgs) -> Result<()> {
    let dtype = DType::parse(&a.dtype).map_err(msg)?;
    let kernels = match (&a.model, &a.kernel) {
        (Some(m), None) => super::codegen::model_kernels(m, dtype)?,
        (None, Some(k)) => vec![kernel_from_shape(k, &a.shape, dtype)?],
        _ => return Err(CliError::Msg("give a MODEL (or preset) or --kernel NAME --shape ..., not both".into())),
    };
    // The GPU first: without one nothing below can run.
    let mut bench = jetc_codegen::gpu::GpuBench::new().map_err(|e| {
        CliError::Msg(format!("jetc tune needs an NVIDIA GPU and NVRTC: {e}\n(`jetc codegen` compiles without a GPU)"))
    })?;
    let path = a.db.clone().unwrap_or_else(default_db_path);
    let mut db = TuningDb::open(&path).map_err(msg)?;
    if let Some(why) = &db.rebuilt {
        eprintln!("warning: tuning database {}: {why}", path.display());
    }
    let jobs: Vec<(Kernel, RunSize)> =
        kernels.iter().flat_map(|k| sizes(k, &a.batch, &a.seq).into_iter().map(move |s| (k.clone(), s))).collect();
    let bar = ProgressBar::new(jobs.len() as u64);
    bar.set_style(
        ProgressStyle::with_template("{bar:30} {pos}/{len} {msg}").unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    let mut served = 0;
    for (k, s) in &jobs {
        bar.set_message(format!("{} {}", k.family(), s.bucket()));
        let t = tune_one(&mut bench, &mut db, k, *s, &mut |inst, ms| {
            bar.set_message(format!("{} {} {}", inst.name(), s.bucket(), ms.map_or("failed".into(), |m| format!("{m:.4} ms"))));
        })
        .map_err(msg)?;
        served += usize::from(t.from_db);
        bar.println(format!(
            "{:<16} {:<44} {:<12} bv={:<4} threads={:<4} {:.4} ms{}",
            k.family(),
            k.problem_id(),
            s.bucket(),
            t.entry.best.bv,
            t.entry.best.threads,
            t.entry.best_ms,
            if t.from_db { " (database)" } else { "" }
        ));
        bar.inc(1);
    }
    bar.finish_and_clear();
    println!("{} result(s), {served} from the database, in {}", jobs.len(), path.display());
    Ok(())
}

pub struct GpuBenchArgs {
    pub model: String,
    pub dtype: String,
    pub batch: Vec<usize>,
    pub prefill_batch: Vec<usize>,
    pub seq: Vec<usize>,
    pub json: Option<PathBuf>,
}

/// `jetc gpu-bench`: every kernel of MODEL (default instance) vs the CPU reference, then timed.
pub fn gpu_bench(a: &GpuBenchArgs) -> Result<()> {
    let dtype = DType::parse(&a.dtype).map_err(msg)?;
    let kernels = super::codegen::model_kernels(&a.model, dtype)?;
    let mut bench = jetc_codegen::gpu::GpuBench::new().map_err(|e| CliError::Msg(format!("jetc gpu-bench needs an NVIDIA GPU and NVRTC: {e}")))?;
    let mut rows = Vec::new();
    let mut failed = 0;
    for k in &kernels {
        let batches = if matches!(k, Kernel::JetDecode(_)) { &a.batch } else { &a.prefill_batch };
        for s in sizes(k, batches, &a.seq) {
            let inst = k.default_instance();
            let r = bench.check_and_time(&inst, s);
            let line = match &r {
                Ok(rep) => format!(
                    "{:<72} {:<12} {:>10.4} ms  max_err {:.3e}  {:.1} GB/s",
                    inst.name(),
                    s.bucket(),
                    rep.ms,
                    rep.max_err,
                    rep.gbps
                ),
                Err(e) => {
                    failed += 1;
                    format!("{:<72} {:<12} FAILED: {e}", inst.name(), s.bucket())
                }
            };
            println!("{line}");
            rows.push(serde_json::json!({
                "kernel": inst.name(), "family": k.family(), "batch": s.batch, "seq": s.seq,
                "ms": r.as_ref().ok().map(|x| x.ms), "max_err": r.as_ref().ok().map(|x| x.max_err),
                "gbps": r.as_ref().ok().map(|x| x.gbps), "bytes": r.as_ref().ok().map(|x| x.bytes),
                "error": r.as_ref().err().map(|e| e.to_string()),
            }));
        }
    }
    if let Some(p) = &a.json {
        let text = serde_json::to_string_pretty(&serde_json::json!({ "device": bench.device_name(), "results": rows })).map_err(msg)?;
        std::fs::write(p, text).map_err(|e| CliError::Msg(format!("{}: {e}", p.display())))?;
    }
    if failed > 0 {
        return Err(CliError::Msg(format!("{failed} kernel check(s) failed")));
    }
    Ok(())
}
