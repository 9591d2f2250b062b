//! The `passkey` task (Mohtashami & Jaggi, 2023): a 5-digit key hidden at a seeded depth in
//! repeated filler text, then asked for. A prompt is correct when the model's greedy choice
//! at every answer position is the key's next token, scored teacher-forced in one forward
//! (the same verdict as greedy decoding of the key, without generating). Its `answer_loss`,
//! the key's NLL per token, is the continuous signal a search ranks on when few prompts pass.
//!
//! Prompts are seeded: the same seed, filler length and count give the same keys and depths
//! on every machine, for every model with the same tokenizer.
use jetc_models::generate::argmax;

use crate::runner::Runner;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use crate::error::{task_err, Result};
use crate::stats::{log_sum_exp, mean};
use crate::{Metric, Score};

const INTRO: &str = "There is an important info hidden inside a lot of irrelevant text. Find it and memorize it. I will quiz you about the important information there.\n\n";
const FILLER: &str = "The grass is green. The sky is blue. The sun is yellow. Here we go. There and back again. ";
const QUESTION: &str = "\n\nWhat is the pass key? The pass key is";

/// One prompt: the text up to the question, the answer (with its leading space), the key's
/// depth in the filler (0 = start, 1 = end).
#[derive(Clone, Debug, PartialEq)]
pub struct Prompt {
    pub text: String,
    pub answer: String,
    pub depth: f64,
}

/// How many prompts, how long their filler (tokens, roughly), and their seed.
#[derive(Clone, Copy, Debug)]
pub struct Options {
    pub prompts: usize,
    pub filler_tokens: usize,
    pub seed: u64,
}

impl Default for Options {
    fn default() -> Self {
        Options { prompts: 12, filler_tokens: 600, seed: 0 }
    }
}

/// The prompts of `opts`: the filler repeated until it holds about `filler_tokens` tokens
/// (`count_tokens` measures), the key after a seeded number of repetitions. Depths are
/// spread evenly over the prompts, jittered by the seed.
pub fn prompts(opts: &Options, count_tokens: &dyn Fn(&str) -> Result<usize>) -> Result<Vec<Prompt>> {
    if opts.prompts == 0 {
        return Err(task_err("passkey", "--limit must be at least 1"));
    }
    let per = count_tokens(FILLER)?.max(1);
    let reps = opts.filler_tokens.div_ceil(per).max(1);
    let mut rng = StdRng::seed_from_u64(opts.seed);
    let mut out = Vec::with_capacity(opts.prompts);
    for i in 0..opts.prompts {
        let key: u32 = rng.random_range(10000..100000);
        let depth = ((i as f64 + rng.random_range(0.0..1.0)) / opts.prompts as f64).clamp(0.0, 1.0);
        let before = ((reps as f64) * depth).round() as usize;
        let needle = format!("The pass key is {key}. Remember it. {key} is the pass key. ");
        let text = format!("{INTRO}{}{needle}{}{QUESTION}", FILLER.repeat(before), FILLER.repeat(reps - before.min(reps)));
        out.push(Prompt { text, answer: format!(" {key}"), depth });
    }
    Ok(out)
}

/// The ids of prompt + answer, and where the answer starts: the joint tokenization when the
/// prompt's own ids are its prefix, else prompt and answer tokenized apart.
pub fn answer_span(encode: &dyn Fn(&str) -> Result<Vec<u32>>, p: &Prompt) -> Result<(Vec<u32>, usize)> {
    let prompt = encode(&p.text)?;
    let joint = encode(&format!("{}{}", p.text, p.answer))?;
    if joint.len() > prompt.len() && joint.starts_with(&prompt) {
        return Ok((joint, prompt.len()));
    }
    let mut ids = prompt.clone();
    ids.extend(encode(&p.answer)?);
    Ok((ids, prompt.len()))
}

/// Whether the greedy choice at every answer position is the answer's token, and the
/// answer's NLL per token (nats): the retrieval signal that still moves while every
/// verdict is wrong.
pub fn verdict(gen: &mut Runner, ids: &[u32], start: usize) -> Result<(bool, f64)> {
    if start == 0 || start >= ids.len() {
        return Err(task_err("passkey", "the prompt or the answer has no tokens"));
    }
    gen.reset();
    let logits = gen.forward(ids)?;
    if logits.rows() < ids.len() {
        return Err(task_err("passkey", format!("the model returned {} logit rows for {} tokens", logits.rows(), ids.len())));
    }
    let mut nll = 0.0;
    for j in start..ids.len() {
        let row = logits.row(j - 1);
        let t = *row.get(ids[j] as usize).ok_or_else(|| task_err("passkey", format!("token id {} is outside the vocabulary of {}", ids[j], row.len())))?;
        nll += log_sum_exp(row) - t as f64;
    }
    let hit = (start..ids.len()).all(|j| argmax(logits.row(j - 1)) == ids[j]);
    Ok((hit, nll / (ids.len() - start) as f64))
}

/// Scores every prompt; `progress(i)` is called after prompt `i`.
pub fn score(
    gen: &mut Runner,
    encode: &dyn Fn(&str) -> Result<Vec<u32>>,
    prompts: &[Prompt],
    progress: &mut dyn FnMut(usize),
) -> Result<Score> {
    score_task("passkey", gen, encode, prompts, progress)
}

/// [`score`] for any task of prompts with one answer each (the needle tasks too).
pub fn score_task(
    task: &str,
    gen: &mut Runner,
    encode: &dyn Fn(&str) -> Result<Vec<u32>>,
    prompts: &[Prompt],
    progress: &mut dyn FnMut(usize),
) -> Result<Score> {
    let mut hits = Vec::with_capacity(prompts.len());
    let mut lengths = Vec::with_capacity(prompts.len());
    let mut losses = Vec::with_capacity(prompts.len());
    for (i, p) in prompts.iter().enumerate() {
        let (ids, start) = answer_span(encode, p)?;
        let (hit, loss) = verdict(gen, &ids, start).map_err(|e| task_err(task, e))?;
        hits.push(if hit { 1.0 } else { 0.0 });
        losses.push(loss);
        lengths.push(ids.len() as f64);
        progress(i);
    }
    Ok(Score {
        task: task.into(),
        examples: prompts.len(),
        metrics: vec![
            Metric::mean_of("acc", &hits),
            Metric { name: "correct".into(), value: hits.iter().sum(), stderr: None, values: vec![] },
            Metric::mean_of("answer_loss", &losses),
            Metric { name: "prompt_tokens_mean".into(), value: mean(&lengths), stderr: None, values: vec![] },
        ],
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn words(s: &str) -> Result<usize> {
        Ok(s.split_whitespace().count())
    }

    #[test]
    fn prompts_are_seeded_and_hide_the_key_at_spread_depths() {
        let o = Options { prompts: 6, filler_tokens: 200, seed: 7 };
        let a = prompts(&o, &words).unwrap();
        assert_eq!(a, prompts(&o, &words).unwrap(), "same seed, same prompts");
        assert_ne!(a, prompts(&Options { seed: 8, ..o }, &words).unwrap());
        for (i, p) in a.iter().enumerate() {
            let key = p.answer.trim();
            assert_eq!(key.len(), 5);
            assert!(p.text.contains(&format!("The pass key is {key}.")) && p.text.ends_with("The pass key is"));
            assert!(p.depth >= i as f64 / 6.0 && p.depth <= (i + 1) as f64 / 6.0);
            let filler_words = p.text.matches("grass").count() * words(FILLER).unwrap();
            assert!((200..240).contains(&filler_words), "{filler_words}");
        }
    }

    #[test]
    fn the_answer_span_follows_the_prompt() {
        let enc = |s: &str| -> Result<Vec<u32>> { Ok(s.bytes().map(u32::from).collect()) };
        let p = Prompt { text: "key is".into(), answer: " 12".into(), depth: 0.0 };
        let (ids, start) = answer_span(&enc, &p).unwrap();
        assert_eq!(start, 6);
        assert_eq!(&ids[start..], b" 12".map(u32::from).as_slice());
    }
}
