//! The gradients of local distillation, checked against PyTorch autograd at a real model's
//! sizes: layer 1 of SmolLM2-135M (hidden 576, 9 heads) made a JetBlock or a Gated DeltaNet
//! by `build_local`, every trainable weight of the block perturbed (at init JetBlock's kernel
//! generator is zero and the short convolutions are the identity, which would hide whole
//! paths), one forward + backward on the executor, and the same loss recomputed in float64
//! torch from the same block input, target and weights (scripts/torch_grads.py, written from
//! the formulas of passes/src/linearize, not from the executor or its backward).
//!
//! Needs `JETC_SMOLLM2_GGUF` (scripts/fetch_smollm2.sh) and a Python with torch and numpy in
//! `JETC_TORCH_PYTHON` (scripts/test.sh sets both). Without them the test skips, unless `CI`
//! or `JETC_REQUIRE_TORCH` is set, when it fails. `JETC_KEEP_TMP=1` keeps the exchanged npz
//! files (under the temp dir, `jetc-torch-grads-<pid>`).
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use jetc_ir::Outlet;
use jetc_models::convert::Layout;
use jetc_models::pipeline::load_raised;
use jetc_passes::linearize::{attention_layers, Block, MixerConfig};
use jetc_runtime::npz::{read_npz, write_npz};
use jetc_runtime::{Session, Value};
use jetc_train::feed::prefill_inputs;
use jetc_train::local::{build_local, initial_values, run_step, LOSS};
use ndarray::ArrayD;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

/// Tolerance on max|jetc - torch| / max|torch| per weight.
const TOL: f64 = 1e-4;
/// The trained layer (every other layer stays attention).
const LAYER: usize = 1;
/// Batch and length: small for the per-token torch loop; the length past one chunk of the
/// recurrence (64: the backward's checkpointing crosses a chunk boundary) and a multiple of
/// neither 64 nor the conv width (a ragged tail chunk).
const BATCH: usize = 2;
const SEQ: usize = 70;

fn required() -> bool {
    std::env::var_os("CI").is_some() || std::env::var_os("JETC_REQUIRE_TORCH").is_some()
}

/// Skips (None) or, in CI / with JETC_REQUIRE_TORCH, fails with `why`.
fn skip<T>(why: &str) -> Option<T> {
    if required() {
        panic!("{why} (CI or JETC_REQUIRE_TORCH is set, so this test may not skip)");
    }
    eprintln!("skipping: {why}");
    None
}

fn python_with_torch() -> Option<PathBuf> {
    let Some(py) = std::env::var_os("JETC_TORCH_PYTHON").map(PathBuf::from) else {
        return skip("JETC_TORCH_PYTHON is not set (a Python with torch and numpy; scripts/test.sh sets it)");
    };
    let out = Command::new(&py).args(["-c", "import torch, numpy"]).output();
    match out {
        Ok(o) if o.status.success() => Some(py),
        Ok(o) => skip(&format!("{} cannot import torch and numpy: {}", py.display(), String::from_utf8_lossy(&o.stderr).trim())),
        Err(e) => skip(&format!("cannot run JETC_TORCH_PYTHON={}: {e}", py.display())),
    }
}

fn smollm2() -> Option<PathBuf> {
    match std::env::var_os("JETC_SMOLLM2_GGUF").map(PathBuf::from) {
        Some(p) if p.is_file() => Some(p),
        Some(p) => skip(&format!("JETC_SMOLLM2_GGUF={} is not a file", p.display())),
        None => skip("JETC_SMOLLM2_GGUF is not set (scripts/fetch_smollm2.sh fetches SmolLM2-135M)"),
    }
}

/// A standard normal (Box-Muller).
fn normal(rng: &mut StdRng) -> f32 {
    let u1: f64 = rng.random_range(f64::EPSILON..1.0);
    let u2: f64 = rng.random_range(0.0..1.0);
    ((-2.0 * u1.ln()).sqrt() * (2.0 * std::f64::consts::PI * u2).cos()) as f32
}

/// Deterministic noise on every trainable weight, so every path carries gradient: N(0, 0.1)
/// on `A_log` and `dt_bias` (decay rates stay in their init range), N(0, (0.25 rms)^2) on
/// the rest, N(0, 0.05^2) for all-zero tensors (the kernel generator's W1, W2).
fn perturb(name: &str, w: &ArrayD<f32>, rng: &mut StdRng) -> ArrayD<f32> {
    let rms = (w.iter().map(|v| (*v as f64).powi(2)).sum::<f64>() / w.len().max(1) as f64).sqrt() as f32;
    let std = if name.ends_with(".A_log") || name.ends_with(".dt_bias") {
        0.1
    } else if rms == 0.0 {
        0.05
    } else {
        0.25 * rms
    };
    w.mapv(|v| v + std * normal(rng))
}

fn rel_err(a: &ArrayD<f32>, b: &ArrayD<f32>) -> f64 {
    let diff = a.iter().zip(b).map(|(x, y)| (*x as f64 - *y as f64).abs()).fold(0.0, f64::max);
    let scale = b.iter().map(|y| (*y as f64).abs()).fold(0.0, f64::max);
    diff / scale.max(1e-30)
}

fn f32_of<'a>(arrays: &'a HashMap<String, Value>, name: &str, file: &Path) -> &'a ArrayD<f32> {
    arrays
        .get(name)
        .and_then(|v| v.as_f32())
        .unwrap_or_else(|| panic!("{}: no float array `{name}`", file.display()))
}

fn check_block(teacher: &jetc_ir::Graph, block: Block, py: &Path, dir: &Path) {
    let start = Instant::now();
    let layout = Layout {
        full_attn: (0..attention_layers(teacher).expect("attention layers of the teacher").len()).filter(|&l| l != LAYER).collect(),
        swa: vec![],
        window: None,
        block,
        blocks: vec![],
        config: MixerConfig::default(),
    };
    let mut lg = build_local(teacher, &layout, 7).unwrap_or_else(|e| panic!("build_local({}): {e}", block.name()));
    assert_eq!(lg.layers, vec![LAYER], "{}: the trained layers", block.name());
    // The block input x and the target y_t: input 0 and output 0 of layer 1's attention.
    let attn = attention_layers(&lg.graph).expect("attention layers of the local graph");
    let attn = *attn.get(LAYER).unwrap_or_else(|| panic!("{}: the local graph has no attention of layer {LAYER}", block.name()));
    let x = lg.graph.node(attn).and_then(|n| n.input(0)).expect("input 0 (x) of layer 1's attention");
    lg.graph.add_output("probe.x", x).expect("add output x");
    lg.graph.add_output("probe.y_t", Outlet::new(attn, 0)).expect("add output y_t");
    let session = Session::new(&lg.graph).unwrap_or_else(|e| panic!("{}: Session::new: {e}", block.name()));

    let mut rng = StdRng::seed_from_u64(0x70c4 + block as u64);
    let tokens: Vec<i64> = (0..BATCH * SEQ).map(|_| rng.random_range(0..49152)).collect();
    let init = initial_values(&lg).unwrap_or_else(|e| panic!("{}: initial_values: {e}", block.name()));
    let names: Vec<String> = init.iter().map(|p| p.0.clone()).collect();
    let weights: Vec<ArrayD<f32>> = init.iter().map(|(n, w)| perturb(n, w, &mut rng)).collect();
    let feed = || prefill_inputs(&lg.graph, &tokens, BATCH, SEQ).unwrap_or_else(|e| panic!("prefill_inputs: {e}"));

    let out = run_step(&lg, &session, feed(), &weights).unwrap_or_else(|e| panic!("{}: run_step: {e}", block.name()));
    assert!(out.loss.is_finite() && out.loss > 0.0, "{}: loss {}", block.name(), out.loss);
    // x and y_t of the same run (same feed and weights: the graph is deterministic).
    let mut params = jetc_runtime::Params::new();
    for ((id, _), w) in lg.params.iter().zip(&weights) {
        params.insert(*id, Value::f32(w.clone()));
    }
    let probes: HashMap<String, Value> = session
        .run_with(feed(), &params, &[])
        .unwrap_or_else(|e| panic!("{}: forward for x, y_t: {e}", block.name()))
        .into_iter()
        .collect();
    let jetc_secs = start.elapsed().as_secs_f64();

    let inp = dir.join(format!("{}-in.npz", block.name()));
    let outp = dir.join(format!("{}-torch.npz", block.name()));
    let mut arrays: Vec<(String, Value)> = vec![
        ("x".into(), probes.get("probe.x").expect("output probe.x").clone()),
        ("y_t".into(), probes.get("probe.y_t").expect("output probe.y_t").clone()),
    ];
    arrays.extend(names.iter().zip(&weights).map(|(n, w)| (n.clone(), Value::f32(w.clone()))));
    // jetc's gradients too, for inspection of a kept file (the script ignores them).
    arrays.extend(names.iter().zip(&out.grads).map(|(n, g)| (format!("jetc_grad.{n}"), Value::f32(g.clone()))));
    write_npz(&inp, &arrays).unwrap_or_else(|e| panic!("write {}: {e}", inp.display()));
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../scripts/torch_grads.py");
    let t0 = Instant::now();
    let run = Command::new(py)
        .arg(&script)
        .arg(&inp)
        .arg(&outp)
        .args(["--block", block.name()])
        .output()
        .unwrap_or_else(|e| panic!("run {} {}: {e}", py.display(), script.display()));
    assert!(
        run.status.success(),
        "{} failed ({}):\n{}\n{}",
        script.display(),
        run.status,
        String::from_utf8_lossy(&run.stdout),
        String::from_utf8_lossy(&run.stderr)
    );
    let torch_secs = t0.elapsed().as_secs_f64();
    let torch: HashMap<String, Value> =
        read_npz(&outp).unwrap_or_else(|e| panic!("read {}: {e}", outp.display())).into_iter().collect();

    let torch_loss = f32_of(&torch, "loss", &outp).iter().next().copied().unwrap_or(f32::NAN) as f64;
    let loss_err = (out.loss as f64 - torch_loss).abs() / torch_loss.abs();
    eprintln!("{}: loss jetc {:.7e} torch {torch_loss:.7e} (rel {loss_err:.1e}); jetc {jetc_secs:.1}s, torch {torch_secs:.1}s", block.name(), out.loss);
    assert!(loss_err <= TOL, "{}: loss {} (jetc) vs {torch_loss} (torch), rel {loss_err:.2e}", block.name(), out.loss);
    assert_eq!(out.grads.len(), names.len(), "{}: one gradient per weight", block.name());
    let mut worst = (0.0f64, String::new());
    let mut failures = Vec::new();
    for (name, g) in names.iter().zip(&out.grads) {
        let t = f32_of(&torch, &format!("grad.{name}"), &outp);
        assert_eq!(g.shape(), t.shape(), "{}: gradient of `{name}`: jetc shape {:?}, torch {:?}", block.name(), g.shape(), t.shape());
        let scale = t.iter().map(|v| v.abs()).fold(0.0f32, f32::max);
        assert!(scale > 0.0, "{}: torch's gradient of `{name}` is all zero: the perturbation does not reach it", block.name());
        let e = rel_err(g, t);
        eprintln!("  {name:<56} {:?} rel {e:.2e} (max |grad| {scale:.3e})", t.shape());
        if e > worst.0 || worst.1.is_empty() {
            worst = (e, name.clone());
        }
        if e.is_nan() || e > TOL {
            failures.push(format!("`{name}`: rel {e:.2e}"));
        }
    }
    eprintln!("{}: worst gradient `{}` rel {:.2e} over {} weights", block.name(), worst.1, worst.0, names.len());
    assert!(failures.is_empty(), "{}: gradients off torch's by more than {TOL:e}: {}", block.name(), failures.join(", "));
    // The mean loss is this layer's loss (one trained layer).
    assert!(out.layer_losses == vec![(LAYER, out.loss)], "{}: layer losses {:?} vs {LOSS} {}", block.name(), out.layer_losses, out.loss);
}

/// Gradients of every trainable weight of a JetBlock and of a Gated DeltaNet at SmolLM2-135M's
/// sizes, against torch autograd, to 1e-4 relative (max |diff| / max |torch| per weight).
#[test]
fn local_distillation_gradients_match_torch_autograd() {
    let Some(gguf) = smollm2() else { return };
    let Some(py) = python_with_torch() else { return };
    let t0 = Instant::now();
    let teacher = load_raised(&gguf).unwrap_or_else(|e| panic!("load_raised({}): {e}", gguf.display()));
    eprintln!("loaded {} in {:.1}s", gguf.display(), t0.elapsed().as_secs_f64());
    let dir = std::env::temp_dir().join(format!("jetc-torch-grads-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("create {}: {e}", dir.display()));
    for block in [Block::JetBlock, Block::GatedDeltaNet] {
        check_block(&teacher, block, &py, &dir);
    }
    if std::env::var_os("JETC_KEEP_TMP").is_some() {
        eprintln!("kept {}", dir.display());
    } else {
        std::fs::remove_dir_all(&dir).ok();
    }
}
