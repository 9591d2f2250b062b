//! `jetc distill`: local (teacher-forced) distillation of a layout's linear mixers, then the
//! distilled model written the way `jetc convert` writes it, with the loss curve (loss.png,
//! loss.svg), per-step metrics (metrics.jsonl), the summary (distill.json) and checkpoints.
//!
//! Every linear layer of the layout gets its block built beside the teacher attention, all
//! trained at once from one streamed teacher forward per batch (`jetc_train::local`). The run
//! writes `metrics.jsonl` (one line per step) and `distill.json` (the summary) into the
//! output directory, and refuses a directory that already holds files.
use std::collections::HashMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Instant;

use indicatif::{ProgressBar, ProgressStyle};
use jetc::convert::convert;
use jetc_ir::{Op, Tensor};
use jetc_runtime::Session;
use jetc_train::data::{list_files, tokenize_cached, windows as windows_of, Windows};
use jetc_train::feed::prefill_inputs;
use jetc_train::local::{build_local, initial_values, run_step, LocalGraph};
use jetc_train::optim::{AdamW, AdamWConfig, Schedule};
use ndarray::ArrayD;
use serde_json::json;

use super::convert::{layout_of, write_converted, LayoutFlags, Report};
use crate::error::{CliError, Result};
use crate::load;

pub struct DistillArgs {
    pub model: PathBuf,
    pub output: PathBuf,
    pub layout: LayoutFlags,
    pub data: Vec<PathBuf>,
    /// The JSONL field or Parquet column holding the text.
    pub text_field: String,
    pub tokenizer: Option<PathBuf>,
    pub steps: Option<u64>,
    pub tokens: Option<u64>,
    pub seq_len: usize,
    pub batch: usize,
    pub lr: f32,
    pub warmup: Option<u64>,
    pub weight_decay: f32,
    pub clip: f32,
    pub seed: u64,
    pub format: String,
    pub json: bool,
    pub checkpoint_every: u64,
    pub resume: bool,
    /// Token cache directory (`none`: no cache); default ~/.cache/jetc/tokens.
    pub token_cache: Option<PathBuf>,
}

fn msg(e: impl std::fmt::Display) -> CliError {
    CliError::Msg(e.to_string())
}

/// What identifies a run: a resumed run must have been started with the same model, layout,
/// data and hyper-parameters (SHA-256 of their description).
fn fingerprint(a: &DistillArgs, layout: &jetc::convert::Layout, files: &[PathBuf]) -> String {
    use sha2::{Digest, Sha256};
    let data: Vec<String> = files
        .iter()
        .map(|f| format!("{}:{}", f.display(), std::fs::metadata(f).map(|m| m.len()).unwrap_or(0)))
        .collect();
    let text = format!(
        "model={} layout={layout:?} data={data:?} text_field={:?} steps={:?} tokens={:?} seq_len={} batch={} lr={} warmup={:?} wd={} clip={} seed={}",
        a.model.display(), a.text_field, a.steps, a.tokens, a.seq_len, a.batch, a.lr, a.warmup, a.weight_decay, a.clip, a.seed
    );
    Sha256::digest(text.as_bytes()).iter().map(|b| format!("{b:02x}")).collect()
}

/// The metrics lines of steps up to `step` (a resumed run continues the file from there).
fn keep_metrics(path: &Path, step: u64) -> Result<()> {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let kept: Vec<&str> = text
        .lines()
        .filter(|l| serde_json::from_str::<serde_json::Value>(l).ok().and_then(|v| v["step"].as_u64()).is_some_and(|s| s <= step))
        .collect();
    let mut body = kept.join("\n");
    if !body.is_empty() {
        body.push('\n');
    }
    std::fs::write(path, body).map_err(|e| msg(format!("{}: {e}", path.display())))
}

/// An output directory is new or empty: never mix two runs.
fn check_output(dir: &Path) -> Result<()> {
    if dir.exists() {
        if !dir.is_dir() {
            return Err(msg(format!("{}: the output must be a directory", dir.display())));
        }
        let mut entries = std::fs::read_dir(dir).map_err(|e| msg(format!("{}: {e}", dir.display())))?;
        if entries.next().is_some() {
            return Err(msg(format!("{}: the output directory already holds files (another run?); give a new or empty directory", dir.display())));
        }
    }
    Ok(())
}

fn batch_ids(windows: &Windows, step: u64, batch: usize) -> Vec<i64> {
    (0..batch).flat_map(|i| windows.train_window(step as usize * batch + i)).collect()
}

/// Mean loss over the held-out windows (at most `max_batches` batches).
fn heldout_loss(lg: &LocalGraph, session: &Session, data: &Windows, w: &[&ArrayD<f32>], batch: usize, max_batches: usize) -> Result<Option<f32>> {
    let windows: Vec<Vec<i64>> = (0..data.heldout.len().min(batch * max_batches)).map(|i| data.heldout_window(i)).collect();
    if windows.is_empty() {
        return Ok(None);
    }
    let seq = data.seq_len;
    let mut sum = 0f64;
    let mut n = 0usize;
    for chunk in windows.chunks(batch).take(max_batches) {
        let ids: Vec<i64> = chunk.iter().flatten().copied().collect();
        let feed = prefill_inputs(&lg.graph, &ids, chunk.len(), seq).map_err(msg)?;
        sum += run_step(lg, session, feed, w).map_err(msg)?.loss as f64;
        n += 1;
    }
    Ok(Some((sum / n as f64) as f32))
}

pub fn run(a: &DistillArgs) -> Result<()> {
    let layout = layout_of(&a.layout)?;
    if !matches!(a.format.as_str(), "onnx" | "jet-hf" | "both" | "auto") {
        return Err(msg(format!("unknown format `{}` (onnx, jet-hf, both or auto)", a.format)));
    }
    if a.batch == 0 || a.seq_len == 0 {
        return Err(msg("--batch and --seq-len must be at least 1"));
    }
    if a.resume {
        if !jetc_train::checkpoint::checkpoints_dir(&a.output).is_dir() {
            return Err(msg(format!("{}: nothing to resume (no checkpoints/ in it)", a.output.display())));
        }
    } else {
        check_output(&a.output)?;
    }
    let teacher = load::load_raised(&a.model)?;
    if let Some(ctx) = teacher.meta.get("context_length").and_then(|c| c.parse::<usize>().ok()) {
        if a.seq_len > ctx {
            return Err(msg(format!("--seq-len {} is longer than the model's context of {ctx} tokens", a.seq_len)));
        }
    }
    let lg = build_local(&teacher, &layout, a.seed).map_err(|e| msg(format!("{}: {e}", a.model.display())))?;
    let (tok, _) = match &a.tokenizer {
        Some(p) => super::generate::text_from(p)?,
        None => super::generate::text_of(&a.model)?,
    };
    let files = list_files(&a.data).map_err(msg)?;
    let encode = |s: &str| tok.encode(s, false).map_err(|e| e.to_string());
    let cache = match &a.token_cache {
        Some(p) if p.as_os_str() == "none" => None,
        Some(p) => Some(p.clone()),
        None => std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache/jetc/tokens")),
    };
    let tok_key = tok.inner().to_string(false).unwrap_or_else(|_| tok.source().to_string());
    let (stream, documents, cached) = tokenize_cached(&files, &a.text_field, &tok_key, &encode, tok.eos_id(), cache.as_deref()).map_err(msg)?;
    if cached {
        eprintln!("tokens from the cache ({} tokens)", stream.len());
    }
    let windows = windows_of(stream, documents, a.seq_len, 20, a.seed).map_err(msg)?;
    // Token ids past the model's vocabulary: the tokenizer is not the model's own.
    let vocab = teacher.node_ids().find_map(|id| {
        let n = teacher.node(id).ok()?;
        if !matches!(n.op, jetc_ir::Op::Embedding) {
            return None;
        }
        let table = n.inputs().first().copied().flatten()?;
        teacher.fact(table).ok()?.concrete_shape()?.first().copied()
    });
    if let Some(v) = vocab {
        let max_id = windows.max_id() as i64;
        if max_id >= v as i64 {
            return Err(msg(format!(
                "the tokenizer produced token id {max_id}, but the model's vocabulary has {v} tokens: give the model's own tokenizer (--tokenizer)"
            )));
        }
    }
    let steps = match (a.steps, a.tokens) {
        (Some(s), _) => s,
        (None, Some(t)) => t.div_ceil((a.batch * a.seq_len) as u64),
        (None, None) => (windows.train.len() as u64).div_ceil(a.batch as u64),
    }
    .max(1);
    let warmup = a.warmup.unwrap_or((steps / 10).min(100));
    let schedule = Schedule { peak: a.lr, warmup, total: steps, min_ratio: 0.1 };
    let session = Session::new(&lg.graph)?;
    let mut opt = AdamW::new(
        AdamWConfig { weight_decay: a.weight_decay, clip_norm: (a.clip > 0.0).then_some(a.clip), ..Default::default() },
        initial_values(&lg).map_err(msg)?,
    );
    // The optimizer's weights by reference (run_step copies them once into the bound values).
    fn weights(o: &AdamW) -> Vec<&ArrayD<f32>> {
        o.slots.iter().map(|s| &s.value).collect()
    }
    let heldout_before = heldout_loss(&lg, &session, &windows, &weights(&opt), a.batch, 4)?;
    let print = fingerprint(a, &layout, &files);
    let mut start = 0u64;
    if a.resume {
        let ck = jetc_train::checkpoint::latest(&a.output)
            .map_err(msg)?
            .ok_or_else(|| msg(format!("{}: nothing to resume (no checkpoint)", a.output.display())))?;
        for (dir, why) in &ck.skipped {
            eprintln!("note: skipping {}: {why}", dir.display());
        }
        if ck.meta.fingerprint != print {
            return Err(msg(format!(
                "{}: the checkpoint belongs to a run with another model, layout, data or settings; resume with the same flags",
                ck.dir.display()
            )));
        }
        jetc_train::checkpoint::restore(&mut opt, &ck).map_err(msg)?;
        start = ck.meta.step;
        eprintln!("resuming at step {start} from {}", ck.dir.display());
    }
    std::fs::create_dir_all(&a.output).map_err(|e| msg(format!("{}: {e}", a.output.display())))?;
    let metrics_path = a.output.join("metrics.jsonl");
    if a.resume {
        keep_metrics(&metrics_path, start)?;
    }
    let metrics_file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .truncate(false)
        .open(&metrics_path)
        .map_err(|e| msg(format!("{}: {e}", metrics_path.display())))?;
    let mut metrics = std::io::BufWriter::new(metrics_file);
    let interrupted = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    {
        let flag = interrupted.clone();
        if let Err(e) = ctrlc::set_handler(move || flag.store(true, std::sync::atomic::Ordering::SeqCst)) {
            eprintln!("note: Ctrl-C will not write a checkpoint: {e}");
        }
    }
    let save = |opt: &AdamW| -> Result<PathBuf> {
        jetc_train::checkpoint::save(&a.output, opt, opt.step * a.batch as u64, &print, 2).map_err(msg)
    };
    eprintln!(
        "distilling {} linear layers ({} parameters) on {} train windows of {} tokens ({} documents, {} files), {steps} steps of batch {}",
        lg.layers.len(),
        opt.slots.iter().map(|s| s.value.len()).sum::<usize>(),
        windows.train.len(),
        a.seq_len,
        windows.documents,
        files.len(),
        a.batch
    );
    let bar = ProgressBar::new(steps);
    bar.set_position(start);
    bar.set_style(
        ProgressStyle::with_template("{bar:30} {pos}/{len} steps  {msg}  [{elapsed_precise} ETA {eta_precise}]")
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    let started = Instant::now();
    let (mut first, mut last) = (None, f32::NAN);
    if a.resume {
        // The run's first loss is the first line of its metrics.
        first = std::fs::read_to_string(&metrics_path)
            .ok()
            .and_then(|t| t.lines().next().and_then(|l| serde_json::from_str::<serde_json::Value>(l).ok()))
            .and_then(|v| v["loss"].as_f64())
            .map(|v| v as f32);
    }
    let mut last_layers = Vec::new();
    for step in start..steps {
        let lr = schedule.lr(step);
        let ids = batch_ids(&windows, step, a.batch);
        let feed = prefill_inputs(&lg.graph, &ids, a.batch, a.seq_len).map_err(msg)?;
        let out = run_step(&lg, &session, feed, &weights(&opt)).map_err(msg)?;
        if !out.loss.is_finite() {
            return Err(msg(format!("step {step}: the loss is not finite ({}); training stopped, nothing written", out.loss)));
        }
        let report = opt.step(&out.grads, lr).map_err(msg)?;
        first.get_or_insert(out.loss);
        last = out.loss;
        last_layers = out.layer_losses.clone();
        let tokens = (step + 1) * (a.batch * a.seq_len) as u64;
        let tps = (step + 1 - start) as f64 * (a.batch * a.seq_len) as f64 / started.elapsed().as_secs_f64().max(1e-9);
        let layers: HashMap<String, f32> = out.layer_losses.iter().map(|(l, v)| (l.to_string(), *v)).collect();
        let line = json!({"step": step + 1, "tokens": tokens, "loss": out.loss, "lr": lr, "grad_norm": report.grad_norm, "tokens_per_s": tps, "peak_activation_bytes": session.last_peak_bytes(), "layers": layers});
        writeln!(metrics, "{line}").map_err(|e| msg(format!("{}: {e}", metrics_path.display())))?;
        bar.set_message(format!("loss {:.4}  {:.0} tok/s", out.loss, tps));
        bar.inc(1);
        let done = step + 1;
        if a.checkpoint_every > 0 && done % a.checkpoint_every == 0 && done < steps {
            metrics.flush().map_err(|e| msg(format!("{}: {e}", metrics_path.display())))?;
            save(&opt)?;
        }
        if interrupted.load(std::sync::atomic::Ordering::SeqCst) {
            bar.finish_and_clear();
            metrics.flush().map_err(|e| msg(format!("{}: {e}", metrics_path.display())))?;
            let dir = save(&opt)?;
            return Err(msg(format!("interrupted at step {done}: checkpoint {} written; continue with --resume", dir.display())));
        }
    }
    metrics.flush().map_err(|e| msg(format!("{}: {e}", metrics_path.display())))?;
    save(&opt)?;
    bar.finish_and_clear();
    metrics.flush().map_err(|e| msg(format!("{}: {e}", metrics_path.display())))?;
    let secs = started.elapsed().as_secs_f64();
    let trained = weights(&opt);
    let heldout_after = heldout_loss(&lg, &session, &windows, &trained, a.batch, 4)?;

    // The converted model, with the distilled weights in place of the initial ones.
    let mut g = teacher.clone();
    convert(&mut g, &layout, a.seed).map_err(|m| msg(format!("{}: {m}", a.model.display())))?;
    let by_name: HashMap<&str, &ArrayD<f32>> = opt.slots.iter().map(|s| (s.name.as_str(), &s.value)).collect();
    let mut replaced = 0;
    for id in g.node_ids().collect::<Vec<_>>() {
        let node = g.node_mut(id)?;
        if let (Op::Const(t), Some(v)) = (&node.op, by_name.get(node.name.as_str())) {
            let shape = t.shape().to_vec();
            let data: Vec<f32> = v.iter().copied().collect();
            node.op = Op::Const(Tensor::from_f32(shape, &data)?);
            replaced += 1;
        }
    }
    if replaced != opt.slots.len() {
        return Err(msg(format!("internal: {replaced} of {} distilled weights found in the converted model", opt.slots.len())));
    }
    let tokens = steps * (a.batch * a.seq_len) as u64;
    let summary = json!({
        "model": a.model.display().to_string(),
        "layers": lg.layers,
        "block": layout.block.name(),
        "steps": steps,
        "tokens": tokens,
        "seconds": secs,
        "tokens_per_s": (steps - start) as f64 * (a.batch * a.seq_len) as f64 / secs.max(1e-9),
        "peak_activation_bytes": session.last_peak_bytes(),
        "loss_first": first,
        "loss_last": last,
        "layer_losses_last": last_layers.iter().map(|(l, v)| json!({"layer": l, "loss": v})).collect::<Vec<_>>(),
        "heldout_loss_before": heldout_before,
        "heldout_loss_after": heldout_after,
        "data": {"files": files.len(), "documents": windows.documents, "corpus_tokens": windows.tokens(), "text_field": a.text_field},
        "heldout_windows": windows.heldout.len(),
        "train_windows": windows.train.len(),
        "seq_len": a.seq_len,
        "batch": a.batch,
        "lr": a.lr,
        "warmup": warmup,
        "seed": a.seed,
    });
    // The loss curve of the whole run (metrics.jsonl holds every step, resumed runs too).
    let curve: Vec<(u64, f32)> = std::fs::read_to_string(&metrics_path)
        .unwrap_or_default()
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter_map(|v| Some((v["step"].as_u64()?, v["loss"].as_f64()? as f32)))
        .collect();
    let mut held = Vec::new();
    if let Some(v) = heldout_before {
        held.push((0, v));
    }
    if let Some(v) = heldout_after {
        held.push((steps, v));
    }
    let title = format!("jetc distill: {} {} layers", lg.layers.len(), layout.block.name());
    match jetc_train::plot::loss_curve(&a.output.join("loss.png"), &a.output.join("loss.svg"), &curve, &held, &title) {
        Ok(true) => {}
        Ok(false) => eprintln!("note: no font found for the loss-curve labels (set JETC_FONT to a .ttf); drawn without text"),
        Err(e) => eprintln!("note: the loss curve was not drawn: {e}"),
    }
    let summary_path = a.output.join("distill.json");
    std::fs::write(&summary_path, serde_json::to_string_pretty(&summary).unwrap_or_default()).map_err(|e| msg(format!("{}: {e}", summary_path.display())))?;
    let model_dir = a.output.join("model");
    let target = if a.format == "onnx" { model_dir.join("model.onnx") } else { model_dir };
    write_converted(&g, &a.model, &target, &a.format, Report::Silent, None).map_err(|e| msg(format!("writing the distilled model: {e}")))?;
    if a.json {
        println!("{}", serde_json::to_string_pretty(&summary).unwrap_or_default());
    } else {
        eprintln!(
            "distilled in {secs:.1} s ({:.0} tokens/s, {:.0} MB of activations at peak): loss {:.4} -> {last:.4}; held-out {} -> {}",
            (steps - start) as f64 * (a.batch * a.seq_len) as f64 / secs.max(1e-9),
            session.last_peak_bytes() as f64 / 1e6,
            first.unwrap_or(f32::NAN),
            heldout_before.map_or("-".into(), |v| format!("{v:.4}")),
            heldout_after.map_or("-".into(), |v| format!("{v:.4}")),
        );
    }
    Ok(())
}
