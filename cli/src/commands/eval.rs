//! `jetc eval`: scores a model on offline tasks (`jetc_eval`): `lm` (NLL, perplexity and
//! bits per byte on `--data`), synthetic retrieval (`passkey`, `niah`, `kv-recall`),
//! multiple choice (MMLU, ARC, HellaSwag, PIQA, WinoGrande, arithmetic) and generative
//! tasks (SQuAD, DROP, NQ-open, TriviaQA, CoQA, GSM8K). Prints a table, or one JSON object
//! with `--json`.
//!
//! With layout flags (`--full-attn`, `--swa`, `--layout`...) MODEL is the base model and the
//! layout's hybrid is scored in memory; with `--supernet RUN` too, its blocks (and any other
//! weights the run trained) take the run's distilled weights, so a search can score subnets
//! of a trained supernet without writing each one out.
use std::path::PathBuf;
use std::time::Instant;

use indicatif::{ProgressBar, ProgressStyle};
use jetc_eval::suite::{self, Limits, Suite, SuiteOptions};
use jetc_models::generate::Generator;
use serde_json::json;

use crate::error::{CliError, Result};
use crate::load;

/// The task flags shared by `jetc eval` and `jetc search`.
#[derive(clap::Args, Clone, Debug)]
pub struct TaskFlags {
    /// Tasks, comma-separated: lm, passkey, niah, kv-recall, squad, drop, nq, triviaqa,
    /// coqa, mmlu, mmlu-dev, gsm8k, arith, arc-e, arc-c, hellaswag, piqa, winogrande, or the
    /// groups retrieval (passkey, niah, kv-recall, squad, drop, nq, triviaqa, coqa), math
    /// (gsm8k, arith) and commonsense (arc-e, arc-c, hellaswag, piqa, winogrande).
    #[arg(
        long = "task",
        visible_alias = "tasks",
        value_delimiter = ',',
        required = true
    )]
    pub tasks: Vec<String>,
    /// Text for the lm task: files or directories of .txt/.md/.rst, JSONL or Parquet.
    #[arg(long, value_delimiter = ',')]
    pub data: Vec<PathBuf>,
    /// The JSONL field or Parquet column holding the text.
    #[arg(long, default_value = "text")]
    pub text_field: String,
    /// lm: tokens per scored window (each window starts from a fresh state).
    #[arg(long, default_value_t = 512)]
    pub seq_len: usize,
    /// At most this many examples per task (lm: windows; passkey: prompts, default 12;
    /// multiple choice: questions spread evenly over the file): N, or per task, e.g.
    /// `8,mmlu=100,passkey=12`.
    #[arg(long)]
    pub limit: Option<String>,
    /// passkey, niah, kv-recall: tokens of context around the answer (about).
    #[arg(long, default_value_t = 600)]
    pub filler_tokens: usize,
    /// passkey, niah, kv-recall: seed of the keys and their depths.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Generative tasks (squad, drop, nq, triviaqa, coqa, gsm8k): at most this many new
    /// tokens per answer (default: each example's own limit, 512 for GSM8K, 50 elsewhere).
    #[arg(long)]
    pub max_new_tokens: Option<usize>,
    /// Directory of the multiple-choice and generative task files (`scripts/fetch_eval_data.py` writes
    /// them; default $JETC_EVAL_DIR or ~/.cache/jetc/eval).
    #[arg(long)]
    pub task_dir: Option<PathBuf>,
}

impl TaskFlags {
    pub fn options(&self) -> Result<SuiteOptions> {
        Ok(SuiteOptions {
            tasks: self.tasks.clone(),
            data: self.data.clone(),
            text_field: self.text_field.clone(),
            seq_len: self.seq_len,
            limit: self
                .limit
                .as_deref()
                .map(Limits::parse)
                .transpose()
                .map_err(msg)?
                .unwrap_or_default(),
            filler_tokens: self.filler_tokens,
            seed: self.seed,
            max_new_tokens: self.max_new_tokens,
            task_dir: self
                .task_dir
                .clone()
                .or_else(|| std::env::var_os("JETC_EVAL_DIR").map(PathBuf::from))
                .or_else(|| {
                    std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache/jetc/eval"))
                })
                .unwrap_or_else(|| PathBuf::from("eval-data")),
        })
    }
}

pub struct EvalArgs {
    pub model: PathBuf,
    pub suite: SuiteOptions,
    pub tokenizer: Option<PathBuf>,
    pub json: bool,
    pub layout: super::convert::LayoutFlags,
    /// A `jetc distill` run whose weights the layout's hybrid takes.
    pub supernet: Option<PathBuf>,
}

/// Whether any layout flag was given (then MODEL is converted before scoring).
fn has_layout(l: &super::convert::LayoutFlags) -> bool {
    !l.full_attn.is_empty()
        || !l.swa.is_empty()
        || l.layout.is_some()
        || l.window.is_some()
        || l.heads.is_some()
        || l.dk.is_some()
        || l.dv.is_some()
        || l.block != "jetblock"
}

/// The graph scored: the model, or its layout's hybrid (with a supernet's weights).
fn scored_graph(a: &EvalArgs) -> Result<jetc_ir::Graph> {
    if a.supernet.is_none() && !has_layout(&a.layout) {
        // Scored as it is: the weights stay in the file's precision.
        return Ok(load::load_raised_with(&a.model, load::Precision::Stored)?);
    }
    let mut graph = load::load_raised(&a.model)?;
    let layout = super::convert::layout_of(&a.layout)?;
    let Some(run) = &a.supernet else {
        jetc::convert::convert(&mut graph, &layout, 0)
            .map_err(|m| msg(format!("{}: {m}", a.model.display())))?;
        return Ok(graph);
    };
    // The run's seed gives the same non-learned constants as the run's own model.
    let net = jetc_search::supernet::Supernet::open(run)?;
    net.check_model(&graph, &a.model)?;
    let graph = net.subnet(&graph, &layout)?;
    if !a.json {
        eprintln!("the subnet's weights from {}", net.checkpoint.display());
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
    if let Ok(style) =
        ProgressStyle::with_template("{msg:>10} [{bar:30}] {pos}/{len} {per_sec} eta {eta}")
    {
        pb.set_style(style.progress_chars("=> "));
    }
    pb.set_message(what.to_string());
    pb
}

pub fn run(a: &EvalArgs) -> Result<()> {
    let opts = &a.suite;
    // Every task file is read before the model loads: a missing or bad file fails fast.
    let choices = suite::read_choice_tasks(opts).map_err(msg)?;
    let started = Instant::now();
    let (tok, _) = super::generate::text_for(&a.tokenizer, &a.model)?;
    let suite = Suite::prepare(opts, tok, choices).map_err(msg)?;
    let graph = scored_graph(a)?;
    let mut gen = jetc_eval::runner::Runner::new(Generator::new(&graph).map_err(msg)?);
    let bars: Vec<ProgressBar> = suite
        .names()
        .iter()
        .zip(suite.examples())
        .map(|(t, n)| bar(n, t, a.json))
        .collect();
    let names: Vec<String> = suite.names().iter().map(|s| s.to_string()).collect();
    let scores = suite
        .score(&mut gen, &mut |task, i, n| {
            if let Some(k) = names.iter().position(|t| t == task) {
                bars[k].set_position(i as u64);
                if i == n {
                    bars[k].finish_and_clear();
                }
            }
        })
        .map_err(msg)?;
    if a.json {
        let tasks: Vec<serde_json::Value> = scores
            .iter()
            .map(|(s, secs)| {
                let metrics: serde_json::Map<String, serde_json::Value> = s
                    .metrics
                    .iter()
                    .map(|m| {
                        (
                            m.name.clone(),
                            json!({"value": m.value, "stderr": m.stderr}),
                        )
                    })
                    .collect();
                json!({"task": s.task, "examples": s.examples, "metrics": metrics, "seconds": secs})
            })
            .collect();
        let out = json!({"model": a.model.display().to_string(), "supernet": a.supernet.as_ref().map(|p| p.display().to_string()), "tasks": tasks, "seed": a.suite.seed, "seconds": started.elapsed().as_secs_f64()});
        println!("{}", serde_json::to_string_pretty(&out).map_err(msg)?);
        return Ok(());
    }
    println!("{}", a.model.display());
    println!(
        "{:<10} {:<16} {:>14} {:>10} {:>9}",
        "task", "metric", "value", "stderr", "examples"
    );
    for (s, _) in &scores {
        for m in &s.metrics {
            let err = m.stderr.map_or("-".to_string(), |e| format!("{e:.4}"));
            println!(
                "{:<10} {:<16} {:>14.4} {:>10} {:>9}",
                s.task, m.name, m.value, err, s.examples
            );
        }
    }
    Ok(())
}
