//! Synthetic retrieval beyond the passkey, seeded and cheap to score (teacher-forced exact
//! match of the answer in one forward, plus the answer's NLL per token, as [`crate::passkey`]):
//!
//! - `niah`: RULER-style needles in a haystack of prose. "One of the special magic numbers
//!   for {key} is: {value}." hidden at seeded depths, then asked for. The prompts cycle
//!   through three forms: single (one needle), multi-key (four needles of different keys,
//!   one asked), multi-value (one key with two values, both asked for, in order);
//! - `kv-recall`: a phonebook. Name-number pairs fill the context; one name is asked for.
//!
//! The context length is `--filler-tokens` (about; 256 to 4K is the range the search uses).
use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};

use crate::error::{task_err, Result};
use crate::passkey::Prompt;

const ADJECTIVES: &[&str] = &[
    "loud", "quiet", "brave", "gentle", "hollow", "silver", "rapid", "ancient", "bitter", "golden", "hidden", "narrow", "frozen", "bright",
    "humble", "crooked", "eager", "distant", "wooden", "velvet", "restless", "scarlet", "sturdy", "wistful",
];
const NOUNS: &[&str] = &[
    "journey", "lantern", "harbor", "meadow", "engine", "falcon", "compass", "orchard", "glacier", "violin", "canyon", "ribbon", "anchor",
    "thunder", "pebble", "mirror", "quarry", "beacon", "saddle", "tunnel", "pepper", "kettle", "marble", "cobweb",
];
const FIRST: &[&str] = &[
    "Alice", "Bruno", "Chloe", "Dmitri", "Elena", "Farid", "Grace", "Hiro", "Ines", "Jonas", "Keira", "Luca", "Maya", "Nikolai", "Olga",
    "Pavel", "Quinn", "Rosa", "Samir", "Tara", "Umar", "Vera", "Wendell", "Yara",
];
const LAST: &[&str] = &[
    "Abbott", "Baker", "Castillo", "Dalton", "Eriksen", "Fischer", "Garcia", "Hughes", "Ivanova", "Jensen", "Kowalski", "Laurent",
    "Moreau", "Novak", "Okafor", "Petrov", "Quintero", "Rossi", "Sato", "Tanaka", "Ueda", "Varga", "Weber", "Zhang",
];
/// The haystack: plain expository sentences (no digits, so no false needles).
const HAYSTACK: &[&str] = &[
    "The river bends twice before it reaches the old mill at the edge of town.",
    "Most of the orchard was planted by the first families who settled in the valley.",
    "In winter the lake freezes thick enough for the children to skate on it.",
    "The library keeps its rarest maps in a cool room behind the reading hall.",
    "A narrow path climbs from the station to the church on top of the hill.",
    "Every spring the market square fills with stalls of flowers and bread.",
    "The lighthouse keeper writes down the weather in a book at dawn and at dusk.",
    "Farmers in the region grow barley, potatoes and a little wheat.",
    "The bridge was rebuilt in stone after a flood carried the wooden one away.",
    "On clear nights the whole valley can be seen from the ridge above the vineyards.",
];
const NIAH_QUESTION: &str = "\n\nWhat is the special magic number for {key} mentioned in the provided text? The special magic number for {key} mentioned in the provided text is";
const NIAH_VALUES_QUESTION: &str = "\n\nWhat are all the special magic numbers for {key} mentioned in the provided text? The special magic numbers for {key} mentioned in the provided text are";

/// How many prompts, how long their context (tokens, roughly), and their seed.
#[derive(Clone, Copy, Debug)]
pub struct Options {
    pub prompts: usize,
    pub context_tokens: usize,
    pub seed: u64,
}

fn key(rng: &mut StdRng) -> String {
    format!("{}-{}", ADJECTIVES[rng.random_range(0..ADJECTIVES.len())], NOUNS[rng.random_range(0..NOUNS.len())])
}

/// Sentences of haystack, `n` of them, in a seeded order.
fn haystack(rng: &mut StdRng, n: usize) -> Vec<String> {
    let mut out = Vec::with_capacity(n);
    while out.len() < n {
        let mut round: Vec<&str> = HAYSTACK.to_vec();
        round.shuffle(rng);
        out.extend(round.into_iter().take(n - out.len()).map(str::to_string));
    }
    out
}

/// The niah prompts: the three forms in turn, needles at seeded depths.
pub fn niah(opts: &Options, count_tokens: &dyn Fn(&str) -> Result<usize>) -> Result<Vec<Prompt>> {
    if opts.prompts == 0 {
        return Err(task_err("niah", "--limit must be at least 1"));
    }
    let per = count_tokens(HAYSTACK[0])?.max(1);
    let sentences = opts.context_tokens.div_ceil(per).max(4);
    let mut rng = StdRng::seed_from_u64(opts.seed ^ 0x6e69_6168);
    let mut out = Vec::with_capacity(opts.prompts);
    for i in 0..opts.prompts {
        let mut hay = haystack(&mut rng, sentences);
        let depth = ((i as f64 + rng.random_range(0.0..1.0)) / opts.prompts as f64).clamp(0.0, 1.0);
        let asked = key(&mut rng);
        let value = |rng: &mut StdRng| rng.random_range(1_000_000..10_000_000u32);
        let needle = |k: &str, v: u32| format!("One of the special magic numbers for {k} is: {v}.");
        let (needles, answer, question) = match i % 3 {
            0 => {
                let v = value(&mut rng);
                (vec![needle(&asked, v)], format!(" {v}"), NIAH_QUESTION)
            }
            1 => {
                let v = value(&mut rng);
                let mut ns = vec![needle(&asked, v)];
                while ns.len() < 4 {
                    let k = key(&mut rng);
                    if k != asked {
                        ns.push(needle(&k, value(&mut rng)));
                    }
                }
                ns.shuffle(&mut rng);
                (ns, format!(" {v}"), NIAH_QUESTION)
            }
            _ => {
                let (a, b) = (value(&mut rng), value(&mut rng));
                (vec![needle(&asked, a), needle(&asked, b)], format!(" {a}, {b}"), NIAH_VALUES_QUESTION)
            }
        };
        // The first needle at the prompt's depth, the others at seeded places after it (in
        // order, so a multi-value answer lists the values as they appear).
        let at = ((hay.len() as f64) * depth).round() as usize;
        let mut spots: Vec<usize> = vec![at.min(hay.len())];
        for _ in 1..needles.len() {
            spots.push(rng.random_range(spots[0]..=hay.len()));
        }
        spots.sort_unstable();
        // Inserted last first, so every earlier spot still indexes the haystack as drawn.
        for (spot, text) in spots.iter().zip(&needles).rev() {
            hay.insert((*spot).min(hay.len()), text.clone());
        }
        let text = format!("Some special magic numbers are hidden inside the following text. Make sure to memorize them.\n\n{}{}", hay.join(" "), question.replace("{key}", &asked));
        out.push(Prompt { text, answer, depth });
    }
    Ok(out)
}

/// The kv-recall prompts: a phonebook of about `context_tokens` tokens, one name asked.
pub fn kv_recall(opts: &Options, count_tokens: &dyn Fn(&str) -> Result<usize>) -> Result<Vec<Prompt>> {
    if opts.prompts == 0 {
        return Err(task_err("kv-recall", "--limit must be at least 1"));
    }
    let per = count_tokens("Wendell Kowalski: 555-0142.")?.max(1);
    let entries = (opts.context_tokens / per).clamp(2, FIRST.len() * LAST.len());
    let mut rng = StdRng::seed_from_u64(opts.seed ^ 0x6b76_7265);
    let mut names: Vec<(usize, usize)> = (0..FIRST.len()).flat_map(|f| (0..LAST.len()).map(move |l| (f, l))).collect();
    let mut out = Vec::with_capacity(opts.prompts);
    for i in 0..opts.prompts {
        names.shuffle(&mut rng);
        let book: Vec<(String, String)> = names[..entries]
            .iter()
            .map(|&(f, l)| (format!("{} {}", FIRST[f], LAST[l]), format!("{}-{:04}", rng.random_range(200..1000), rng.random_range(0..10000))))
            .collect();
        let depth = ((i as f64 + rng.random_range(0.0..1.0)) / opts.prompts as f64).clamp(0.0, 1.0);
        let asked = ((entries as f64 - 1.0) * depth).round() as usize;
        let lines: Vec<String> = book.iter().map(|(n, p)| format!("{n}: {p}.")).collect();
        let (name, phone) = &book[asked];
        let text = format!("Here is a phonebook.\n\n{}\n\nWhat is the phone number of {name}? The phone number of {name} is", lines.join("\n"));
        out.push(Prompt { text, answer: format!(" {phone}"), depth });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn words(s: &str) -> Result<usize> {
        Ok(s.split_whitespace().count())
    }

    #[test]
    fn niah_prompts_hold_their_answers_in_three_forms() {
        let o = Options { prompts: 6, context_tokens: 300, seed: 3 };
        let a = niah(&o, &words).unwrap();
        assert_eq!(a, niah(&o, &words).unwrap(), "seeded");
        assert_ne!(a, niah(&Options { seed: 4, ..o }, &words).unwrap());
        for (i, p) in a.iter().enumerate() {
            let needles = p.text.matches("One of the special magic numbers for").count();
            assert_eq!(needles, [1, 4, 2][i % 3], "prompt {i}");
            let key = p.text.rsplit("magic number").next().unwrap();
            assert!(!key.is_empty());
            for v in p.answer.trim().split(", ") {
                assert!(p.text.contains(&format!(" is: {v}.")), "prompt {i}: {v} not in the text");
            }
            if i % 3 == 2 {
                // The values are asked for in the order they appear.
                let vs: Vec<&str> = p.answer.trim().split(", ").collect();
                assert!(p.text.find(&format!(": {}.", vs[0])).unwrap() < p.text.find(&format!(": {}.", vs[1])).unwrap());
            }
            let w = words(&p.text).unwrap();
            assert!((280..420).contains(&w), "prompt {i}: {w} words");
        }
    }

    #[test]
    fn kv_recall_asks_a_name_in_the_book_at_spread_depths() {
        let o = Options { prompts: 5, context_tokens: 200, seed: 1 };
        let a = kv_recall(&o, &words).unwrap();
        assert_eq!(a, kv_recall(&o, &words).unwrap());
        for p in &a {
            let name = p.text.rsplit("phone number of ").next().unwrap().trim_end_matches(" is");
            assert!(p.text.contains(&format!("{name}:{}.", p.answer)), "{name} -> {} not in the book", p.answer);
            assert_eq!(p.text.matches(&format!("{name}:")).count(), 1, "each name once");
        }
        let depths: Vec<f64> = a.iter().map(|p| p.depth).collect();
        assert!(depths.windows(2).all(|w| w[0] <= w[1]));
        assert!(niah(&Options { prompts: 0, ..o }, &words).is_err() && kv_recall(&Options { prompts: 0, ..o }, &words).is_err());
    }
}
