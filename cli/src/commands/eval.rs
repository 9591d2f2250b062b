//! `jetc eval`: scores a model on offline tasks (`jetc_eval`): `lm` (NLL, perplexity and
//! bits per byte on `--data`) and `passkey` (synthetic retrieval). Prints a table, or one
//! JSON object with `--json`.
//!
//! With layout flags (`--full-attn`, `--swa`, `--layout`...) MODEL is the base model and the
//! layout's hybrid is scored in memory; with `--supernet RUN` too, its blocks (and any other
//! weights the run trained) take the run's distilled weights, so a search can score subnets
//! of a trained supernet without writing each one out.
use std::path::PathBuf;
use std::time::Instant;

use indicatif::{ProgressBar, ProgressStyle};
use jetc_eval::{choice, lm, passkey, Score, TASKS};
use jetc_models::generate::Generator;
use jetc_train::data::{list_files, tokenize};
use serde_json::json;

use crate::error::{CliError, Result};
use crate::load;

pub struct EvalArgs {
    pub model: PathBuf,
    pub tasks: Vec<String>,
    pub data: Vec<PathBuf>,
    pub text_field: String,
    pub tokenizer: Option<PathBuf>,
    pub seq_len: usize,
    pub limit: Option<usize>,
    pub filler_tokens: usize,
    pub seed: u64,
    pub json: bool,
    pub layout: super::convert::LayoutFlags,
    /// A `jetc distill` run whose weights the layout's hybrid takes.
    pub supernet: Option<PathBuf>,
    /// Where the multiple-choice task files are (default $JETC_EVAL_DIR or ~/.cache/jetc/eval).
    pub task_dir: Option<PathBuf>,
}

/// The directory of the multiple-choice task files.
fn task_dir(a: &EvalArgs) -> PathBuf {
    a.task_dir
        .clone()
        .or_else(|| std::env::var_os("JETC_EVAL_DIR").map(PathBuf::from))
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache/jetc/eval")))
        .unwrap_or_else(|| PathBuf::from("eval-data"))
}

/// Whether any layout flag was given (then MODEL is converted before scoring).
fn has_layout(l: &super::convert::LayoutFlags) -> bool {
    !l.full_attn.is_empty() || !l.swa.is_empty() || l.layout.is_some() || l.window.is_some() || l.heads.is_some() || l.dk.is_some() || l.dv.is_some() || l.block != "jetblock"
}

/// The graph scored: the model, or its layout's hybrid (with a supernet's weights).
fn scored_graph(a: &EvalArgs) -> Result<jetc_ir::Graph> {
    let mut graph = load::load_raised(&a.model)?;
    if a.supernet.is_none() && !has_layout(&a.layout) {
        return Ok(graph);
    }
    let layout = super::convert::layout_of(&a.layout)?;
    // The run's seed gives the same non-learned constants as the run's own model.
    let seed = a
        .supernet
        .as_ref()
        .and_then(|r| std::fs::read(r.join("distill.json")).ok())
        .and_then(|b| serde_json::from_slice::<serde_json::Value>(&b).ok())
        .and_then(|v| v["seed"].as_u64())
        .unwrap_or(0);
    jetc::convert::convert(&mut graph, &layout, seed).map_err(|m| msg(format!("{}: {m}", a.model.display())))?;
    if let Some(run) = &a.supernet {
        let (n, dir) = super::convert::bind_supernet(&mut graph, run)?;
        if !a.json {
            eprintln!("{n} weights from {}", dir.display());
        }
    }
    Ok(graph)
}

fn msg(e: impl std::fmt::Display) -> CliError {
    CliError::Msg(e.to_string())
}

fn bar(n: usize, what: &str, quiet: bool) -> ProgressBar {
    if quiet {
        return ProgressBar::hidden();
    }
    let pb = ProgressBar::new(n as u64);
    if let Ok(style) = ProgressStyle::with_template("{msg:>10} [{bar:30}] {pos}/{len} {per_sec} eta {eta}") {
        pb.set_style(style.progress_chars("=> "));
    }
    pb.set_message(what.to_string());
    pb
}

pub fn run(a: &EvalArgs) -> Result<()> {
    if a.tasks.is_empty() {
        return Err(msg(format!("no task given (--task; one of {})", TASKS.join(", "))));
    }
    if let Some(t) = a.tasks.iter().find(|t| !TASKS.contains(&t.as_str())) {
        return Err(msg(format!("unknown task `{t}` (the tasks are {})", TASKS.join(", "))));
    }
    if a.limit == Some(0) {
        return Err(msg("--limit 0 leaves nothing to score (give at least 1)"));
    }
    let tasks = jetc_eval::expand_tasks(&a.tasks);
    // Every task file is read before the model loads: a missing file fails fast.
    let dir = task_dir(a);
    let mut questions = std::collections::HashMap::new();
    for t in tasks.iter().filter(|t| jetc_eval::CHOICE_TASKS.contains(&t.as_str())) {
        // The fetched file, or a plain JSONL of the same requests put there by hand.
        let Some(path) = [format!("{t}.jsonl.gz"), format!("{t}.jsonl")].iter().map(|f| dir.join(f)).find(|p| p.is_file()) else {
            return Err(msg(format!(
                "{t}: neither {t}.jsonl.gz nor {t}.jsonl is in {}; fetch the tasks with `python3 scripts/fetch_eval_data.py` (or give --task-dir)",
                dir.display()
            )));
        };
        let mut qs = choice::read(t, &path).map_err(msg)?;
        if let Some(n) = a.limit {
            qs = choice::spread(qs, n);
        }
        questions.insert(t.clone(), qs);
    }
    if tasks.iter().any(|t| t == "lm") && a.data.is_empty() {
        return Err(msg("the lm task scores a text set: give --data FILE|DIR (.txt, .md, .jsonl, .parquet)"));
    }
    let started = Instant::now();
    let (tok, _) = match &a.tokenizer {
        Some(p) => super::generate::text_from(p)?,
        None => super::generate::text_of(&a.model)?,
    };
    let graph = scored_graph(a)?;
    let mut gen = Generator::new(&graph).map_err(msg)?;
    let encode = |s: &str| tok.encode(s, false).map_err(|e| jetc_eval::EvalError::Task { task: "tokenizer".into(), msg: e.to_string() });
    let mut scores: Vec<(Score, f64)> = Vec::new();
    for task in &tasks {
        let t0 = Instant::now();
        let score = match task.as_str() {
            "lm" => {
                let files = list_files(&a.data).map_err(msg)?;
                let enc = |s: &str| tok.encode(s, false).map_err(|e| e.to_string());
                let (stream, _) = tokenize(&files, &a.text_field, &enc, tok.eos_id()).map_err(msg)?;
                let windows = lm::windows(&stream, a.seq_len, a.limit).map_err(msg)?;
                let pb = bar(windows.len(), "lm", a.json);
                let bytes = |ids: &[u32]| tok.decode(ids, false).map(|s| s.len()).unwrap_or(0);
                let s = lm::score(&mut gen, &windows, &bytes, &mut |_| pb.inc(1)).map_err(msg)?;
                pb.finish_and_clear();
                s
            }
            t if questions.contains_key(t) => {
                let qs = &questions[t];
                let pb = bar(qs.len(), t, a.json);
                let s = choice::score(t, &mut gen, &encode, qs, &mut |_| pb.inc(1)).map_err(msg)?;
                pb.finish_and_clear();
                s
            }
            _ => {
                let opts = passkey::Options { prompts: a.limit.unwrap_or(12), filler_tokens: a.filler_tokens, seed: a.seed };
                let prompts = passkey::prompts(&opts, &|s| encode(s).map(|v| v.len())).map_err(msg)?;
                let pb = bar(prompts.len(), "passkey", a.json);
                let s = passkey::score(&mut gen, &encode, &prompts, &mut |_| pb.inc(1)).map_err(msg)?;
                pb.finish_and_clear();
                s
            }
        };
        scores.push((score, t0.elapsed().as_secs_f64()));
    }
    if a.json {
        let tasks: Vec<serde_json::Value> = scores
            .iter()
            .map(|(s, secs)| {
                let metrics: serde_json::Map<String, serde_json::Value> =
                    s.metrics.iter().map(|m| (m.name.clone(), json!({"value": m.value, "stderr": m.stderr}))).collect();
                json!({"task": s.task, "examples": s.examples, "metrics": metrics, "seconds": secs})
            })
            .collect();
        let out = json!({"model": a.model.display().to_string(), "supernet": a.supernet.as_ref().map(|p| p.display().to_string()), "tasks": tasks, "seed": a.seed, "seconds": started.elapsed().as_secs_f64()});
        println!("{}", serde_json::to_string_pretty(&out).map_err(msg)?);
        return Ok(());
    }
    println!("{}", a.model.display());
    println!("{:<10} {:<16} {:>14} {:>10} {:>9}", "task", "metric", "value", "stderr", "examples");
    for (s, _) in &scores {
        for m in &s.metrics {
            let err = m.stderr.map_or("-".to_string(), |e| format!("{e:.4}"));
            println!("{:<10} {:<16} {:>14.4} {:>10} {:>9}", s.task, m.name, m.value, err, s.examples);
        }
    }
    Ok(())
}
