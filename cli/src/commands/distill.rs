//! `jetc distill`: distillation of a layout's linear mixers, then the distilled model written
//! the way `jetc convert` writes it, with the loss curve (loss.png, loss.svg), per-step
//! metrics (metrics.jsonl), the summary (distill.json) and checkpoints.
//!
//! Two phases (`--phase`):
//! - `local`: every linear layer of the layout gets its block built beside the teacher
//!   attention, all trained at once from one streamed teacher forward per batch
//!   (`jetc_train::local`);
//! - `path`: the student runs a layout end to end and every layer's output hidden state is
//!   matched to the teacher's (`jetc_train::path`), optionally with the cross-entropy against
//!   the teacher's logits (`--kl`). The layout is the one given, or one sampled per step
//!   (`--sample uniform|budget:K`: PostNAS's once-for-all training of every layer's block).
//!
//! With `--supernet attn,swa,jetblock,...` every layer holds all the candidates: the local
//! phase trains every linear candidate of every layer at once, and the sampled path phase
//! draws a candidate per layer per step (`jetc_train::sample`). `--train-attn` trains the
//! attention projections in the path and kd phases, `--ce W` adds the data's next-token
//! cross-entropy.
//!
//! `--init-from RUN` starts from the weights of an earlier run's newest checkpoint (a local
//! phase before a path phase). With `--eval-every N` the held-out NLL of the layout's model
//! is measured every N steps. The run refuses an output directory that already holds files.
use std::collections::HashMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Instant;

use indicatif::{ProgressBar, ProgressStyle};
use jetc::convert::convert;
use jetc_ir::Op;
use jetc_runtime::Session;
use jetc_train::data::{list_files, tokenize_cached, windows as windows_of, Windows};
use jetc_train::feed::prefill_inputs;
use jetc_train::local::{build_local, build_local_candidates, initial_values, run_step, LocalGraph};
use jetc_train::sample::{layout_of_choices, sample_choices, Candidates, Sample};
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
    /// `local` or `path`.
    pub phase: String,
    /// Path phase: `fixed` (the layout given), `uniform` or `budget:K`.
    pub sample: String,
    /// Path phase: weight of the cross-entropy against the teacher's logits.
    pub kl: f32,
    /// Start from the weights of this earlier run's newest checkpoint.
    pub init_from: Option<PathBuf>,
    /// Held-out NLL of the layout's model every N steps (0: before and after only).
    pub eval_every: u64,
    /// Path and kd phases: the MLPs train too.
    pub train_mlp: bool,
    /// `attention` or `calibrated` (output projections fitted by least squares).
    pub init: String,
    /// Tokens of the calibrated init's fit.
    pub calib_tokens: usize,
    /// The supernet's candidates (`attn,swa,jetblock,...`); None: attn and the layout's block.
    pub supernet: Option<String>,
    /// Path and kd phases: the attention projections train too.
    pub train_attn: bool,
    /// Path and kd phases: weight of the data's next-token cross-entropy.
    pub ce: f32,
    /// Where the held-out NLL is measured: windows of these files (text the training data does
    /// not contain). None: every 20th window of the training data, kept out of training.
    pub eval_data: Vec<PathBuf>,
    /// How many held-out windows the NLL is measured on.
    pub eval_windows: usize,
}

/// Held-out windows the NLL is measured on unless --eval-windows says otherwise.
pub const DEFAULT_EVAL_WINDOWS: usize = 8;

/// Relative ridge of the calibrated init's least squares (lambda = this x mean diag Z^T Z).
const CALIB_RIDGE: f64 = 1e-3;

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
        "model={} layout={layout:?} data={data:?} text_field={:?} steps={:?} tokens={:?} seq_len={} batch={} lr={} warmup={:?} wd={} clip={} seed={}{}{}",
        a.model.display(), a.text_field, a.steps, a.tokens, a.seq_len, a.batch, a.lr, a.warmup, a.weight_decay, a.clip, a.seed,
        // The local phase's fingerprint is unchanged from before the path phase existed.
        if a.phase == "local" && a.init_from.is_none() { String::new() } else {
            format!(" phase={} sample={} kl={} init_from={:?} train_mlp={}", a.phase, a.sample, a.kl, a.init_from, a.train_mlp)
        },
        // Runs from the mapped init keep their fingerprint from before --init existed.
        if a.init == "attention" { String::new() } else { format!(" init={} calib_tokens={}", a.init, a.calib_tokens) },
    ) + &if a.supernet.is_none() && !a.train_attn && a.ce == 0.0 {
        String::new()
    } else {
        format!(" supernet={:?} train_attn={} ce={}", a.supernet, a.train_attn, a.ce)
    } + &if a.eval_data.is_empty() && a.eval_windows == DEFAULT_EVAL_WINDOWS {
        // Runs measured on the training data's own held-out windows keep their fingerprint.
        String::new()
    } else {
        format!(" eval_data={:?} eval_windows={}", a.eval_data, a.eval_windows)
    };
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

/// What one training step of either phase gives the loop.
struct PhaseStep {
    loss: f32,
    /// Per-layer losses (layer index as text -> loss).
    layers: Vec<(usize, f32)>,
    /// Per (layer, candidate) losses of a supernet's local phase (empty otherwise).
    terms: Vec<(usize, jetc_passes::linearize::Block, f32)>,
    /// Gradients in the optimizer's slot order (`None`: the slot's weight was off this step's
    /// path).
    grads: Vec<Option<ArrayD<f32>>>,
    /// Phase-specific numbers for the metrics line.
    extra: serde_json::Map<String, serde_json::Value>,
}

/// Mean loss over the held-out windows (at most `max_batches` batches) of the local graph.
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

/// The layout's model for held-out NLL: `convert`'s hybrid with only the logits kept.
struct NllModel {
    graph: jetc_ir::Graph,
    /// Weight nodes by name (those the optimizer trains).
    params: Vec<(jetc_ir::NodeId, String)>,
}

impl NllModel {
    /// The layout's hybrid, or with no layout the teacher itself (the reference the run's
    /// held-out NLL is read against).
    fn new(teacher: &jetc_ir::Graph, layout: Option<&jetc::convert::Layout>, seed: u64, names: &[&str]) -> Result<NllModel> {
        let mut g = teacher.clone();
        if let Some(layout) = layout {
            convert(&mut g, layout, seed).map_err(msg)?;
        }
        g.outputs.retain(|o| o.name == "logits");
        if g.outputs.is_empty() {
            return Err(msg("the model has no `logits` output to score"));
        }
        g.prune_dead()?;
        let wanted: std::collections::HashSet<&str> = names.iter().copied().collect();
        let params = g
            .node_ids()
            .filter_map(|id| {
                let n = g.node(id).ok()?;
                (matches!(n.op, Op::Const(_)) && wanted.contains(n.name.as_str())).then(|| (id, n.name.clone()))
            })
            .collect();
        Ok(NllModel { graph: g, params })
    }

    /// Mean next-token NLL over at most `max_windows` held-out windows, with the optimizer's
    /// current weights bound.
    fn heldout_nll(&self, session: &Session, data: &Windows, opt: &AdamW, max_windows: usize) -> Result<Option<f64>> {
        let count = data.heldout.len().min(max_windows);
        if count == 0 {
            return Ok(None);
        }
        let by_name: HashMap<&str, &ArrayD<f32>> = opt.slots.iter().map(|s| (s.name.as_str(), &s.value)).collect();
        let mut params = jetc_runtime::Params::new();
        for (id, name) in &self.params {
            if let Some(v) = by_name.get(name.as_str()) {
                params.insert(*id, jetc_runtime::Value::f32((*v).clone()));
            }
        }
        let (mut total, mut tokens) = (0f64, 0usize);
        for i in 0..count {
            let ids = data.heldout_window(i);
            let feed = prefill_inputs(&self.graph, &ids, 1, data.seq_len).map_err(msg)?;
            let outs = session.run_with(feed, &params, &[])?;
            let logits = outs.into_iter().find(|(n, _)| n == "logits").and_then(|(_, v)| v.as_f32().cloned()).ok_or_else(|| msg("no logits"))?;
            let vocab = logits.shape().last().copied().unwrap_or(1);
            let l = jetc_models::generate::Logits { vocab, data: logits.iter().copied().collect() };
            let ids32: Vec<u32> = ids.iter().map(|&t| t as u32).collect();
            total += jetc_eval::lm::window_nll(&l, &ids32).map_err(msg)?;
            tokens += ids32.len() - 1;
        }
        Ok(Some(total / tokens.max(1) as f64))
    }
}

/// Weights of an earlier run's newest checkpoint, by name.
fn init_weights(run: &Path) -> Result<HashMap<String, ArrayD<f32>>> {
    let ck = jetc_train::checkpoint::latest(run)
        .map_err(msg)?
        .ok_or_else(|| msg(format!("--init-from {}: no checkpoint in it", run.display())))?;
    Ok(ck.state.into_iter().map(|(name, (w, _, _))| (name, w)).collect())
}

pub fn run(a: &DistillArgs) -> Result<()> {
    let layout = layout_of(&a.layout)?;
    if !matches!(a.format.as_str(), "onnx" | "jet-hf" | "both" | "auto") {
        return Err(msg(format!("unknown format `{}` (onnx, jet-hf, both or auto)", a.format)));
    }
    if a.batch == 0 || a.seq_len == 0 {
        return Err(msg("--batch and --seq-len must be at least 1"));
    }
    let (path_phase, features) = match a.phase.as_str() {
        "local" => (false, false),
        "path" => (true, true),
        "kd" => (true, false),
        p => return Err(msg(format!("unknown --phase `{p}` (local, path or kd)"))),
    };
    let sample = Sample::parse(&a.sample).map_err(msg)?;
    if !matches!(a.init.as_str(), "attention" | "calibrated") {
        return Err(msg(format!("unknown --init `{}` (attention or calibrated)", a.init)));
    }
    if !path_phase && (sample != Sample::Fixed || a.kl != 0.0 || a.train_mlp || a.train_attn || a.ce != 0.0) {
        return Err(msg("--sample, --kl, --ce, --train-mlp and --train-attn belong to the path and kd phases (--phase path|kd)"));
    }
    if !(a.ce >= 0.0 && a.ce.is_finite()) {
        return Err(msg(format!("--ce must be a finite weight >= 0, got {}", a.ce)));
    }
    // The candidates of every layer: the supernet's, or attention and the layout's block.
    let mut layout = layout;
    let cands = match &a.supernet {
        Some(s) => {
            let c = Candidates::parse(s).map_err(msg)?;
            if c.swa && layout.window.is_none() {
                return Err(msg("--supernet with swa needs --window (the SWA candidate's window)"));
            }
            if path_phase && sample == Sample::Fixed {
                return Err(msg("--supernet in the path phase trains sampled subnets: give --sample uniform, budget:K or layouts"));
            }
            // The run's own layout (its held-out NLL, DIR/model) takes the first candidate.
            if !c.linear.contains(&layout.block) {
                layout.block = c.linear[0];
            }
            c
        }
        None => Candidates { attn: true, swa: false, linear: vec![layout.block] },
    };
    let supernet = a.supernet.is_some();
    // Knowledge distillation is the KL alone (weight 1 unless given).
    let kl = if a.phase == "kd" && a.kl == 0.0 { 1.0 } else { a.kl };
    if !(a.kl >= 0.0 && a.kl.is_finite()) {
        return Err(msg(format!("--kl must be a finite weight >= 0, got {}", a.kl)));
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
    let n_layers = jetc_passes::linearize::attention_layers(&teacher).map_err(msg)?.len();
    if let Sample::Budget(k) = sample {
        if k >= n_layers {
            return Err(msg(format!("--sample budget:{k} keeps every one of the model's {n_layers} layers as attention")));
        }
        if k > 0 && !cands.attn {
            return Err(msg(format!("--sample budget:{k} needs `attn` among the --supernet candidates")));
        }
    }
    let init = a.init_from.as_deref().map(init_weights).transpose()?;
    // The local graph is built for either phase's checks; the path phase builds its own.
    let lg = match (path_phase, supernet) {
        (true, _) => None,
        (false, false) => Some(build_local(&teacher, &layout, a.seed).map_err(|e| msg(format!("{}: {e}", a.model.display())))?),
        // A supernet's local phase: every layer, every linear candidate.
        (false, true) => {
            let all: Vec<usize> = (0..n_layers).collect();
            Some(build_local_candidates(&teacher, &all, &cands.linear, &layout.config, a.seed).map_err(|e| msg(format!("{}: {e}", a.model.display())))?)
        }
    };
    let path_opts = jetc_train::path::PathOptions { features, kl_weight: kl, train_mlp: a.train_mlp, train_attn: a.train_attn, ce_weight: a.ce };
    let fixed_path = if path_phase {
        Some(jetc_train::path::build_path(&teacher, &layout, a.seed, path_opts).map_err(|e| msg(format!("{}: {e}", a.model.display())))?)
    } else {
        None
    };
    let (tok, _) = super::generate::text_for(&a.tokenizer, &a.model)?;
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
    // The held-out NLL's windows: --eval-data's, or the training data's held-out ones.
    let eval_windows = if a.eval_data.is_empty() {
        None
    } else {
        let files = list_files(&a.eval_data).map_err(|e| msg(format!("--eval-data: {e}")))?;
        let (stream, documents, _) = tokenize_cached(&files, &a.text_field, &tok_key, &encode, tok.eos_id(), cache.as_deref()).map_err(|e| msg(format!("--eval-data: {e}")))?;
        let w = jetc_train::data::heldout_windows(stream, documents, a.seq_len);
        if w.heldout.is_empty() {
            return Err(msg(format!("--eval-data: {} tokens, not one window of --seq-len {}", w.tokens(), a.seq_len)));
        }
        Some(w)
    };
    let heldout = eval_windows.as_ref().unwrap_or(&windows);
    if a.eval_windows == 0 {
        return Err(msg("--eval-windows must be at least 1"));
    }
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
        let max_id = windows.max_id().max(heldout.max_id()) as i64;
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
    // The optimizer's weights: the trained layout's, and for a sampled path phase every
    // layer's block (the all-linear layout names them all).
    let mut initial = match (&lg, &fixed_path) {
        (Some(lg), _) => initial_values(lg).map_err(msg)?,
        (None, Some(pg)) => jetc_train::path::initial_values(pg).map_err(msg)?,
        _ => return Err(msg("internal: no training graph")),
    };
    if path_phase && sample != Sample::Fixed {
        // Every candidate's blocks on every layer (an all-linear layout per block), and with
        // --train-attn every layer's attention.
        let have: std::collections::HashSet<String> = initial.iter().map(|(n, _)| n.clone()).collect();
        let mut extra = Vec::new();
        for &block in &cands.linear {
            let all = jetc::convert::Layout { full_attn: vec![], swa: vec![], blocks: vec![], block, ..layout.clone() };
            let every = jetc_train::path::build_path(&teacher, &all, a.seed, path_opts).map_err(msg)?;
            extra.extend(jetc_train::path::initial_values(&every).map_err(msg)?);
        }
        if a.train_attn {
            let w = jetc_train::path::attention_weights(&teacher).map_err(msg)?;
            extra.extend(jetc_train::local::weight_values(&teacher, &w).map_err(msg)?);
        }
        let mut added = std::collections::HashSet::new();
        initial.extend(extra.into_iter().filter(|(n, _)| !have.contains(n) && added.insert(n.clone())));
        initial.sort_by(|x, y| x.0.cmp(&y.0));
    }
    // The calibrated init: every trained block's output projection fitted to its attention.
    let mut calibration = Vec::new();
    if a.init == "calibrated" {
        let per_batch = a.batch * a.seq_len;
        let count = a.calib_tokens.div_ceil(per_batch).max(1);
        let batches: Vec<Vec<i64>> = (0..count as u64).map(|b| batch_ids(&windows, b, a.batch)).collect();
        // One fit per linear candidate, over the layers whose block of that kind trains.
        let mut blocks: Vec<jetc_passes::linearize::Block> = cands.linear.clone();
        blocks.extend(layout.blocks.iter().map(|b| b.1).filter(|b| !cands.linear.contains(b)));
        for block in blocks {
            let prefix = block.weight_prefix();
            let layers: Vec<usize> = (0..n_layers).filter(|l| initial.iter().any(|(n, _)| *n == format!("layers.{l}.{prefix}.o_proj.weight"))).collect();
            if layers.is_empty() {
                continue;
            }
            let t0 = Instant::now();
            let of_block = jetc::convert::Layout { blocks: vec![], block, ..layout.clone() };
            let fitted = jetc_train::calibrate::calibrate_outputs(&teacher, &of_block, &layers, a.seed, &batches, a.batch, a.seq_len, CALIB_RIDGE)
                .map_err(|e| msg(format!("--init calibrated ({}): {e}", block.name())))?;
            for c in fitted {
                if let Some((_, v)) = initial.iter_mut().find(|(n, _)| *n == c.name) {
                    *v = c.value.clone();
                }
                let mut entry = json!({"layer": c.layer, "nmse_before": c.nmse_before, "nmse_after": c.nmse_after});
                if cands.linear.len() > 1 || !layout.blocks.is_empty() {
                    entry["block"] = json!(block.name());
                }
                calibration.push(entry);
            }
            eprintln!("calibrated {} {} output projections on {} tokens in {:.1} s", layers.len(), block.name(), count * per_batch, t0.elapsed().as_secs_f64());
        }
    }
    if let Some(init) = &init {
        let mut taken = 0;
        for (name, value) in initial.iter_mut() {
            if let Some(w) = init.get(name) {
                if w.shape() != value.shape() {
                    return Err(msg(format!("--init-from: `{name}` has shape {:?} there, {:?} here (another model or mixer config?)", w.shape(), value.shape())));
                }
                *value = w.clone();
                taken += 1;
            }
        }
        eprintln!("initialized {taken} of {} weights from {}", initial.len(), a.init_from.as_ref().map(|p| p.display().to_string()).unwrap_or_default());
    }
    let mut opt = AdamW::new(AdamWConfig { weight_decay: a.weight_decay, clip_norm: (a.clip > 0.0).then_some(a.clip), ..Default::default() }, initial);
    let slot_of: HashMap<String, usize> = opt.slots.iter().enumerate().map(|(i, s)| (s.name.clone(), i)).collect();
    let names: Vec<&str> = opt.slots.iter().map(|s| s.name.as_str()).collect();
    let nll_model = NllModel::new(&teacher, Some(&layout), a.seed, &names)?;
    let nll_session = Session::new(&nll_model.graph)?;
    let nll_windows = a.eval_windows;
    let teacher_nll = {
        let t = NllModel::new(&teacher, None, a.seed, &[])?;
        t.heldout_nll(&Session::new(&t.graph)?, heldout, &opt, nll_windows)?
    };
    if let Some(v) = teacher_nll {
        eprintln!("teacher's held-out NLL on the same windows: {v:.4}");
    }

    // The step of each phase, as a closure over its graphs.
    let local_session = match &lg {
        Some(lg) => Some(Session::new(&lg.graph)?),
        None => None,
    };
    let teacher_graph = if path_phase { Some(jetc_train::path::teacher_graph(&teacher, features, kl > 0.0).map_err(msg)?) } else { None };
    let teacher_session = match &teacher_graph {
        Some(g) => Some(Session::new(g)?),
        None => None,
    };
    let fixed_session = match &fixed_path {
        Some(pg) if sample == Sample::Fixed => Some(Session::new(&pg.graph)?),
        _ => None,
    };
    let path_step = |pg: &jetc_train::path::PathGraph, session: &Session, ids: &[i64], opt: &AdamW| -> Result<PhaseStep> {
        let ts = teacher_session.as_ref().ok_or_else(|| msg("internal: no teacher session"))?;
        let tg = teacher_graph.as_ref().ok_or_else(|| msg("internal: no teacher graph"))?;
        let tfeed = prefill_inputs(tg, ids, a.batch, a.seq_len).map_err(msg)?;
        let mut targets = jetc_train::path::teacher_targets(ts, tfeed, if features { pg.layers } else { 0 }, kl > 0.0).map_err(msg)?;
        if a.ce > 0.0 {
            targets.labels = Some(jetc_train::path::labels_of(ids, a.batch, a.seq_len).map_err(msg)?);
        }
        let is_target = |n: &str| n.starts_with("target.") || n == jetc_train::path::TEACHER_PROBS || n == jetc_train::path::LABELS;
        let feed = jetc_train::feed::prefill_inputs_except(&pg.graph, ids, a.batch, a.seq_len, &is_target).map_err(msg)?;
        let w: Vec<&ArrayD<f32>> = pg
            .params
            .iter()
            .map(|(_, n)| slot_of.get(n).map(|&i| &opt.slots[i].value).ok_or_else(|| msg(format!("internal: no optimizer slot for `{n}`"))))
            .collect::<Result<_>>()?;
        let out = jetc_train::path::run_path(pg, session, feed, &targets, &w).map_err(msg)?;
        let mut grads: Vec<Option<ArrayD<f32>>> = vec![None; opt.slots.len()];
        for ((_, n), g) in pg.params.iter().zip(out.grads) {
            grads[slot_of[n]] = Some(g);
        }
        let mut extra = serde_json::Map::new();
        if let Some(f) = out.features {
            extra.insert("features".into(), json!(f));
        }
        if let (Some(ce), Some(h)) = (out.cross_entropy, targets.entropy) {
            extra.insert("cross_entropy".into(), json!(ce));
            extra.insert("kl".into(), json!(ce as f64 - h));
        }
        if let Some(c) = out.data_cross_entropy {
            extra.insert("data_ce".into(), json!(c));
        }
        extra.insert("full_attn".into(), json!(pg.layout.full_attn));
        if supernet {
            extra.insert("layer_types".into(), json!((0..pg.layers).map(|l| pg.layout.layer_type(l)).collect::<Vec<_>>()));
        }
        Ok(PhaseStep { loss: out.loss, layers: out.layer_losses.into_iter().enumerate().collect(), terms: Vec::new(), grads, extra })
    };
    let step_fn = |step: u64, ids: &[i64], opt: &AdamW| -> Result<PhaseStep> {
        if let (Some(lg), Some(session)) = (&lg, &local_session) {
            let feed = prefill_inputs(&lg.graph, ids, a.batch, a.seq_len).map_err(msg)?;
            let w: Vec<&ArrayD<f32>> = opt.slots.iter().map(|s| &s.value).collect();
            let out = run_step(lg, session, feed, &w).map_err(msg)?;
            let mut extra = serde_json::Map::new();
            if lg.terms.len() > lg.layers.len() {
                let per: serde_json::Map<String, serde_json::Value> = out.term_losses.iter().map(|(l, b, v)| (format!("{l}.{}", b.name()), json!(v))).collect();
                extra.insert("candidates".into(), serde_json::Value::Object(per));
            }
            return Ok(PhaseStep { loss: out.loss, layers: out.layer_losses, terms: out.term_losses, grads: out.grads.into_iter().map(Some).collect(), extra });
        }
        match (&fixed_path, &fixed_session) {
            (Some(pg), Some(session)) => path_step(pg, session, ids, opt),
            _ => {
                let choices = sample_choices(&cands, &sample, n_layers, a.seed, step).map_err(msg)?;
                let l = layout_of_choices(&layout, &cands, &choices);
                let pg = jetc_train::path::build_path(&teacher, &l, a.seed, path_opts).map_err(msg)?;
                let session = Session::new(&pg.graph)?;
                path_step(&pg, &session, ids, opt)
            }
        }
    };
    let heldout_fn = |opt: &AdamW| -> Result<Option<f32>> {
        match (&lg, &local_session) {
            (Some(lg), Some(session)) => {
                let w: Vec<&ArrayD<f32>> = opt.slots.iter().map(|s| &s.value).collect();
                heldout_loss(lg, session, heldout, &w, a.batch, 4)
            }
            _ => Ok(nll_model.heldout_nll(&nll_session, heldout, opt, nll_windows)?.map(|v| v as f32)),
        }
    };
    let heldout_name = if path_phase { "held-out NLL" } else { "held-out loss" };
    let heldout_before = heldout_fn(&opt)?;
    let nll_before = if path_phase { heldout_before.map(f64::from) } else { nll_model.heldout_nll(&nll_session, heldout, &opt, nll_windows)? };
    if let Some(v) = nll_before {
        eprintln!("held-out NLL before training: {v:.4}");
    }
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
    let mut metrics = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .truncate(false)
        .open(&metrics_path)
        .map_err(|e| msg(format!("{}: {e}", metrics_path.display())))?;
    let interrupted = interrupt_flag();
    let save = |opt: &AdamW| -> Result<PathBuf> {
        jetc_train::checkpoint::save(&a.output, opt, opt.step * a.batch as u64, &print, 2).map_err(msg)
    };
    let trained_layers: Vec<usize> = match (&lg, &fixed_path) {
        (Some(lg), _) => lg.layers.clone(),
        (None, Some(pg)) => pg.linear.clone(),
        _ => Vec::new(),
    };
    eprintln!(
        "distilling ({} phase{}) {} linear layers ({} parameters) on {} train windows of {} tokens ({} documents, {} files), {steps} steps of batch {}",
        a.phase,
        if path_phase && sample != Sample::Fixed { format!(", subnets of {} sampled {}", cands.describe(), a.sample) } else if supernet { format!(", candidates {}", cands.describe()) } else { String::new() },
        trained_layers.len(),
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
    let mut last_terms = Vec::new();
    for step in start..steps {
        let lr = schedule.lr(step);
        let ids = batch_ids(&windows, step, a.batch);
        let out = step_fn(step, &ids, &opt)?;
        if !out.loss.is_finite() {
            return Err(msg(format!("step {step}: the loss is not finite ({}); training stopped, nothing written", out.loss)));
        }
        let grads: Vec<Option<&ArrayD<f32>>> = out.grads.iter().map(Option::as_ref).collect();
        let report = opt.step_some(&grads, lr).map_err(msg)?;
        first.get_or_insert(out.loss);
        last = out.loss;
        last_layers = out.layers.clone();
        last_terms = out.terms.clone();
        let done = step + 1;
        let tokens = done * (a.batch * a.seq_len) as u64;
        let tps = (done - start) as f64 * (a.batch * a.seq_len) as f64 / started.elapsed().as_secs_f64().max(1e-9);
        let layers: HashMap<String, f32> = out.layers.iter().map(|(l, v)| (l.to_string(), *v)).collect();
        let mut line = json!({"step": done, "tokens": tokens, "loss": out.loss, "lr": lr, "grad_norm": report.grad_norm, "tokens_per_s": tps, "peak_activation_bytes": bar_peak(&local_session, &fixed_session), "layers": layers});
        for (k, v) in out.extra {
            line[k] = v;
        }
        if a.eval_every > 0 && done % a.eval_every == 0 && done < steps {
            if let Some(v) = nll_model.heldout_nll(&nll_session, heldout, &opt, nll_windows)? {
                line["heldout_nll"] = json!(v);
            }
        }
        // One line per step, flushed: a run watched from outside (or killed) shows every step.
        writeln!(metrics, "{line}").map_err(|e| msg(format!("{}: {e}", metrics_path.display())))?;
        bar.set_message(format!("{} loss {:.4}  {:.0} tok/s", a.phase, out.loss, tps));
        bar.inc(1);
        if a.checkpoint_every > 0 && done % a.checkpoint_every == 0 && done < steps {
            save(&opt)?;
        }
        if interrupted.load(std::sync::atomic::Ordering::SeqCst) {
            bar.finish_and_clear();
            let dir = save(&opt)?;
            return Err(msg(format!("interrupted at step {done}: checkpoint {} written; continue with --resume", dir.display())));
        }
    }
    save(&opt)?;
    bar.finish_and_clear();
    let secs = started.elapsed().as_secs_f64();
    let heldout_after = heldout_fn(&opt)?;
    let nll_after = if path_phase { heldout_after.map(f64::from) } else { nll_model.heldout_nll(&nll_session, heldout, &opt, nll_windows)? };
    if a.eval_every > 0 {
        if let Some(v) = nll_after {
            // The last step's line carries the final held-out NLL.
            let text = std::fs::read_to_string(&metrics_path).unwrap_or_default();
            let mut lines: Vec<String> = text.lines().map(str::to_string).collect();
            if let Some(lastl) = lines.last_mut() {
                if let Ok(mut v0) = serde_json::from_str::<serde_json::Value>(lastl) {
                    v0["heldout_nll"] = json!(v);
                    *lastl = v0.to_string();
                }
            }
            std::fs::write(&metrics_path, lines.join("\n") + "\n").map_err(|e| msg(format!("{}: {e}", metrics_path.display())))?;
        }
    }

    // The converted model, with the distilled weights in place of the initial ones.
    let mut g = teacher.clone();
    convert(&mut g, &layout, a.seed).map_err(|m| msg(format!("{}: {m}", a.model.display())))?;
    let by_name: HashMap<&str, &ArrayD<f32>> = opt.slots.iter().map(|s| (s.name.as_str(), &s.value)).collect();
    let replaced = jetc_search::supernet::bind_weights(&mut g, &by_name)?;
    let layout_layers = trained_layers.len();
    if replaced < layout_layers.min(1) || (sample == Sample::Fixed && !supernet && replaced != opt.slots.len()) {
        return Err(msg(format!("internal: {replaced} of {} distilled weights found in the converted model", opt.slots.len())));
    }
    let tokens = steps * (a.batch * a.seq_len) as u64;
    let summary = json!({
        "model": a.model.display().to_string(),
        "phase": a.phase,
        "sample": a.sample,
        "kl": kl,
        "train_mlp": a.train_mlp,
        "init_from": a.init_from.as_ref().map(|p| p.display().to_string()),
        "init": a.init,
        "calibration": calibration,
        "calib_tokens": (a.init == "calibrated").then_some(a.calib_tokens),
        "layers": trained_layers,
        "block": layout.block.name(),
        "model_fingerprint": jetc_search::supernet::fingerprint(&teacher),
        "mixer": {"heads": layout.config.heads, "dk": layout.config.dk, "dv": layout.config.dv, "conv": layout.config.conv, "reduction": layout.config.reduction, "window": layout.window},
        "steps": steps,
        "tokens": tokens,
        "seconds": secs,
        "tokens_per_s": (steps - start) as f64 * (a.batch * a.seq_len) as f64 / secs.max(1e-9),
        "peak_activation_bytes": bar_peak(&local_session, &fixed_session),
        "loss_first": first,
        "loss_last": last,
        "layer_losses_last": last_layers.iter().map(|(l, v)| json!({"layer": l, "loss": v})).collect::<Vec<_>>(),
        "candidate_losses_last": last_terms.iter().map(|(l, b, v)| json!({"layer": l, "block": b.name(), "loss": v})).collect::<Vec<_>>(),
        "supernet": cands.describe(),
        "train_attn": a.train_attn,
        "ce": a.ce,
        "heldout_loss_before": heldout_before,
        "heldout_loss_after": heldout_after,
        "teacher_heldout_nll": teacher_nll,
        "heldout_nll_before": nll_before,
        "heldout_nll_after": nll_after,
        "data": {"files": files.len(), "documents": windows.documents, "corpus_tokens": windows.tokens(), "text_field": a.text_field},
        "heldout_windows": windows.heldout.len(),
        // What the held-out NLL figures were measured on.
        "eval": {
            "data": a.eval_data.iter().map(|p| p.display().to_string()).collect::<Vec<_>>(),
            "windows": heldout.heldout.len().min(nll_windows),
            "tokens_per_window": a.seq_len,
        },
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
    if !path_phase {
        if let Some(v) = heldout_before {
            held.push((0, v));
        }
        if let Some(v) = heldout_after {
            held.push((steps, v));
        }
    }
    let title = format!("jetc distill ({}): {} {} layers", a.phase, trained_layers.len(), layout.block.name());
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
        // In the path phase the held-out measure is the NLL itself: printed once.
        let nll = if path_phase {
            String::new()
        } else {
            format!("; held-out NLL {} -> {}", nll_before.map_or("-".into(), |v| format!("{v:.4}")), nll_after.map_or("-".into(), |v| format!("{v:.4}")))
        };
        eprintln!(
            "distilled in {secs:.1} s ({:.0} tokens/s): loss {:.4} -> {last:.4}; {heldout_name} {} -> {}{nll}",
            (steps - start) as f64 * (a.batch * a.seq_len) as f64 / secs.max(1e-9),
            first.unwrap_or(f32::NAN),
            heldout_before.map_or("-".into(), |v| format!("{v:.4}")),
            heldout_after.map_or("-".into(), |v| format!("{v:.4}")),
        );
    }
    Ok(())
}

/// Peak live bytes of the last training run (the session that ran it).
fn bar_peak(local: &Option<Session>, path: &Option<Session>) -> usize {
    local.as_ref().or(path.as_ref()).map_or(0, Session::last_peak_bytes)
}

/// The process's Ctrl-C flag, cleared for this run. The handler is installed once per
/// process: `jetc postnas` distils many times in one process, and each run must see the
/// Ctrl-C that arrives during it (a second `set_handler` would fail and leave the first
/// run's flag in charge).
fn interrupt_flag() -> &'static std::sync::atomic::AtomicBool {
    static FLAG: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);
    static INSTALL: std::sync::Once = std::sync::Once::new();
    INSTALL.call_once(|| {
        if let Err(e) = ctrlc::set_handler(|| FLAG.store(true, std::sync::atomic::Ordering::SeqCst)) {
            eprintln!("note: Ctrl-C will not write a checkpoint: {e}");
        }
    });
    FLAG.store(false, std::sync::atomic::Ordering::SeqCst);
    &FLAG
}
