//! A prepared set of tasks: every task file read, every text tokenized and every prompt
//! built once, then scored on as many models as a caller likes. `jetc eval` scores one
//! model with it; the search scores dozens of subnets of one supernet with the same suite,
//! so each subnet sees exactly the same examples.
use std::collections::HashMap;
use std::path::{Path, PathBuf};

use crate::runner::Runner;
use jetc_text::Tokenizer;
use jetc_train::data::{list_files, tokenize};

use crate::error::{task_err, EvalError, Result};
use crate::{choice, expand_tasks, generative, lm, needle, passkey, Score, CHOICE_TASKS, GENERATIVE_TASKS, TASKS};

/// What to score and on which examples.
#[derive(Clone, Debug)]
pub struct SuiteOptions {
    /// Task or group names (`TASKS`).
    pub tasks: Vec<String>,
    /// Text of the lm task.
    pub data: Vec<PathBuf>,
    pub text_field: String,
    /// lm: tokens per window.
    pub seq_len: usize,
    /// At most this many examples per task (passkey: the prompt count, default 12).
    pub limit: Limits,
    pub filler_tokens: usize,
    pub seed: u64,
    /// Where the multiple-choice and generative task files are.
    pub task_dir: PathBuf,
    /// Generative tasks: at most this many new tokens per answer (default: each example's
    /// own `max_tokens`, 512 for GSM8K's worked solutions, 50 elsewhere).
    pub max_new_tokens: Option<usize>,
}

/// Example caps: one for every task, and per-task exceptions (`--limit 8,mmlu=100`).
#[derive(Clone, Debug, Default, PartialEq, serde::Serialize)]
pub struct Limits {
    pub all: Option<usize>,
    pub per_task: Vec<(String, usize)>,
}

impl Limits {
    /// Parses `N`, `task=N` or a comma-separated mix (`8,mmlu=100,passkey=12`).
    pub fn parse(s: &str) -> Result<Limits> {
        let mut out = Limits::default();
        for part in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            let bad = || {
                task_err(
                    "eval",
                    format!("--limit `{part}`: give N or TASK=N (e.g. 8,mmlu=100)"),
                )
            };
            match part.split_once('=') {
                Some((t, n)) => {
                    let t = t.trim();
                    if !TASKS.contains(&t) {
                        return Err(task_err(
                            t,
                            format!(
                                "--limit {part}: unknown task `{t}` (the tasks are {})",
                                TASKS.join(", ")
                            ),
                        ));
                    }
                    out.per_task
                        .push((t.to_string(), n.trim().parse().map_err(|_| bad())?));
                }
                None => out.all = Some(part.parse().map_err(|_| bad())?),
            }
        }
        Ok(out)
    }

    /// The cap of `task` (a group's cap applies to its members).
    pub fn of(&self, task: &str) -> Option<usize> {
        let group = crate::GROUPS
            .iter()
            .find(|g| g.1.contains(&task))
            .map(|g| g.0);
        self.per_task
            .iter()
            .rev()
            .find(|(t, _)| t == task || Some(t.as_str()) == group)
            .map(|p| p.1)
            .or(self.all)
    }

    /// `8,mmlu=100` form (`none` without caps).
    pub fn describe(&self) -> String {
        let parts: Vec<String> = self.all.iter().map(|n| n.to_string()).chain(self.per_task.iter().map(|(t, n)| format!("{t}={n}"))).collect();
        if parts.is_empty() { "none".into() } else { parts.join(",") }
    }

    fn has_zero(&self) -> bool {
        self.all == Some(0) || self.per_task.iter().any(|p| p.1 == 0)
    }
}

/// One task's examples, ready to score.
enum Prepared {
    Lm(Vec<Vec<u32>>),
    Choice(Vec<choice::Question>),
    /// Prompts with one answer each: passkey, niah, kv-recall.
    Prompts(Vec<passkey::Prompt>),
    /// Prompts the model answers in its own words.
    Generative(Vec<generative::Example>),
}

/// The tasks of [`SuiteOptions`], ready to score on any model with this tokenizer.
pub struct Suite {
    tok: Tokenizer,
    tasks: Vec<(String, Prepared)>,
    max_new_tokens: Option<usize>,
}

/// The task file of `task` in `dir`: the fetched `.jsonl.gz`, or a plain `.jsonl` of the
/// same requests.
pub fn task_file(task: &str, dir: &Path) -> Result<PathBuf> {
    [format!("{task}.jsonl.gz"), format!("{task}.jsonl")].iter().map(|f| dir.join(f)).find(|p| p.is_file()).ok_or_else(|| {
        task_err(
            task,
            format!(
                "neither {task}.jsonl.gz nor {task}.jsonl is in {}; fetch the tasks with `python3 scripts/fetch_eval_data.py` (or give --task-dir)",
                dir.display()
            ),
        )
    })
}

/// Checks the task names and the options that do not need any file.
pub fn check(opts: &SuiteOptions) -> Result<Vec<String>> {
    if opts.tasks.is_empty() {
        return Err(task_err(
            "eval",
            format!("no task given (one of {})", TASKS.join(", ")),
        ));
    }
    if let Some(t) = opts.tasks.iter().find(|t| !TASKS.contains(&t.as_str())) {
        return Err(task_err(
            t,
            format!("unknown task `{t}` (the tasks are {})", TASKS.join(", ")),
        ));
    }
    if opts.limit.has_zero() {
        return Err(task_err(
            "eval",
            "--limit 0 leaves nothing to score (give at least 1)",
        ));
    }
    if opts.max_new_tokens == Some(0) {
        return Err(task_err("eval", "--max-new-tokens 0 leaves nothing to generate (give at least 1)"));
    }
    let tasks = expand_tasks(&opts.tasks);
    if tasks.iter().any(|t| t == "lm") && opts.data.is_empty() {
        return Err(task_err(
            "lm",
            "the lm task scores a text set: give --data FILE|DIR (.txt, .md, .jsonl, .parquet)",
        ));
    }
    Ok(tasks)
}

/// The generative task files of `opts`, read and capped.
fn read_generative_tasks(opts: &SuiteOptions) -> Result<HashMap<String, Vec<generative::Example>>> {
    let mut out = HashMap::new();
    for t in check(opts)?.iter().filter(|t| GENERATIVE_TASKS.contains(&t.as_str())) {
        let mut ex = generative::read(t, &task_file(t, &opts.task_dir)?)?;
        if let Some(n) = opts.limit.of(t) {
            ex = choice::spread(ex, n);
        }
        out.insert(t.clone(), ex);
    }
    Ok(out)
}

/// Reads the multiple-choice files of `opts` and checks its generative ones (before any
/// model loads: a bad file fails fast).
pub fn read_choice_tasks(opts: &SuiteOptions) -> Result<HashMap<String, Vec<choice::Question>>> {
    read_generative_tasks(opts)?;
    let mut out = HashMap::new();
    for t in check(opts)?
        .iter()
        .filter(|t| CHOICE_TASKS.contains(&t.as_str()))
    {
        let mut qs = choice::read(t, &task_file(t, &opts.task_dir)?)?;
        if let Some(n) = opts.limit.of(t) {
            qs = choice::spread(qs, n);
        }
        out.insert(t.clone(), qs);
    }
    Ok(out)
}

impl Suite {
    /// Prepares every task of `opts`; `choices` are the files [`read_choice_tasks`] read.
    pub fn prepare(
        opts: &SuiteOptions,
        tok: Tokenizer,
        mut choices: HashMap<String, Vec<choice::Question>>,
    ) -> Result<Suite> {
        let encode = |s: &str| tok.encode(s, false).map_err(|e| task_err("tokenizer", e));
        let mut tasks = Vec::new();
        let mut generated = read_generative_tasks(opts)?;
        for t in check(opts)? {
            let prepared = match t.as_str() {
                "lm" => {
                    let files = list_files(&opts.data)?;
                    let enc = |s: &str| tok.encode(s, false).map_err(|e| e.to_string());
                    let (stream, _) = tokenize(&files, &opts.text_field, &enc, tok.eos_id())?;
                    Prepared::Lm(lm::windows(&stream, opts.seq_len, opts.limit.of("lm"))?)
                }
                "niah" | "kv-recall" => {
                    let o = needle::Options { prompts: opts.limit.of(&t).unwrap_or(12), context_tokens: opts.filler_tokens, seed: opts.seed };
                    let count = |s: &str| encode(s).map(|v| v.len());
                    Prepared::Prompts(if t == "niah" { needle::niah(&o, &count)? } else { needle::kv_recall(&o, &count)? })
                }
                "passkey" => {
                    let o = passkey::Options {
                        prompts: opts.limit.of("passkey").unwrap_or(12),
                        filler_tokens: opts.filler_tokens,
                        seed: opts.seed,
                    };
                    Prepared::Prompts(passkey::prompts(&o, &|s| encode(s).map(|v| v.len()))?)
                }
                name if GENERATIVE_TASKS.contains(&name) => Prepared::Generative(generated.remove(name).unwrap_or_default()),
                name => match choices.remove(name) {
                    Some(qs) => Prepared::Choice(qs),
                    None => Prepared::Choice(
                        read_choice_tasks(&SuiteOptions {
                            tasks: vec![name.to_string()],
                            ..opts.clone()
                        })?
                        .remove(name)
                        .unwrap_or_default(),
                    ),
                },
            };
            tasks.push((t, prepared));
        }
        Ok(Suite { tok, tasks, max_new_tokens: opts.max_new_tokens })
    }

    /// The task names, in order.
    pub fn names(&self) -> Vec<&str> {
        self.tasks.iter().map(|t| t.0.as_str()).collect()
    }

    /// Examples per task.
    pub fn examples(&self) -> Vec<usize> {
        self.tasks
            .iter()
            .map(|(_, p)| match p {
                Prepared::Lm(w) => w.len(),
                Prepared::Choice(q) => q.len(),
                Prepared::Prompts(p) => p.len(),
                Prepared::Generative(e) => e.len(),
            })
            .collect()
    }

    /// Scores every task on `gen`; `progress(task, i, n)` follows each example; returns each
    /// score with its seconds.
    pub fn score(
        &self,
        gen: &mut Runner,
        progress: &mut dyn FnMut(&str, usize, usize),
    ) -> Result<Vec<(Score, f64)>> {
        let encode = |s: &str| {
            self.tok.encode(s, false).map_err(|e| EvalError::Task {
                task: "tokenizer".into(),
                msg: e.to_string(),
            })
        };
        let decode = |ids: &[u32]| {
            self.tok.decode(ids, true).map_err(|e| EvalError::Task {
                task: "tokenizer".into(),
                msg: e.to_string(),
            })
        };
        let stop_ids: Vec<u32> = self.tok.eos_id().into_iter().collect();
        let mut out = Vec::with_capacity(self.tasks.len());
        for ((name, prepared), n) in self.tasks.iter().zip(self.examples()) {
            let t0 = std::time::Instant::now();
            let mut step = |i: usize| progress(name, i + 1, n);
            let score = match prepared {
                Prepared::Lm(windows) => {
                    let bytes =
                        |ids: &[u32]| self.tok.decode(ids, false).map(|s| s.len()).unwrap_or(0);
                    lm::score(gen, windows, &bytes, &mut step)?
                }
                Prepared::Choice(qs) => choice::score(name, gen, &encode, qs, &mut step)?,
                Prepared::Prompts(prompts) => passkey::score_task(name, gen, &encode, prompts, &mut step)?,
                Prepared::Generative(examples) => {
                    // Generated tokens differ between models: nothing to share.
                    gen.set_caching(false);
                    let s = generative::score(name, gen, &encode, &decode, &stop_ids, examples, self.max_new_tokens, &mut step);
                    gen.set_caching(true);
                    s?
                }
            };
            out.push((score, t0.elapsed().as_secs_f64()));
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limits_parse_with_per_task_and_group_caps() {
        let l = Limits::parse("8,mmlu=100,commonsense=20").unwrap();
        assert_eq!(
            (l.of("lm"), l.of("mmlu"), l.of("piqa"), l.of("passkey")),
            (Some(8), Some(100), Some(20), Some(8))
        );
        assert_eq!(Limits::parse("passkey=3").unwrap().of("lm"), None);
        assert!(Limits::parse("mmlu-pro=3")
            .unwrap_err()
            .to_string()
            .contains("unknown task `mmlu-pro`"));
        assert!(Limits::parse("x")
            .unwrap_err()
            .to_string()
            .contains("give N or TASK=N"));
        assert!(Limits::parse("0").unwrap().has_zero());
    }
}
