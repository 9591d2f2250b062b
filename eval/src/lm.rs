//! The `lm` task: next-token negative log-likelihood of a text set, as perplexity and bits
//! per byte. The text is tokenized with the model's tokenizer (EOS after each document),
//! cut into consecutive windows of `seq_len` tokens (the tail too, when it has two or more),
//! and each window is scored from a fresh state: its first token is context only, every
//! other token is predicted from the ones before it in the window.
//!
//! Metrics: `nll` (mean nats per predicted token, with the standard error over windows),
//! `ppl` = exp(nll), `bits_per_byte` (total nats / ln 2 / UTF-8 bytes of the predicted
//! tokens: comparable across tokenizers), `tokens`.
use crate::runner::Runner;

use crate::error::{task_err, Result};
use crate::stats::{log_sum_exp, mean, stderr};
use crate::{Metric, Score};

/// Consecutive windows of `seq_len` tokens of `stream` (the tail when it holds >= 2
/// tokens), at most `limit`.
pub fn windows(stream: &[u32], seq_len: usize, limit: Option<usize>) -> Result<Vec<Vec<u32>>> {
    if seq_len < 2 {
        return Err(task_err("lm", "--seq-len must be at least 2 (one context token, one predicted)"));
    }
    let mut out: Vec<Vec<u32>> = stream.chunks(seq_len).filter(|w| w.len() >= 2).map(<[u32]>::to_vec).collect();
    if let Some(n) = limit {
        out.truncate(n);
    }
    if out.is_empty() {
        return Err(task_err("lm", format!("the text holds {} tokens: nothing to score", stream.len())));
    }
    Ok(out)
}

/// The summed NLL (nats) of tokens `ids[1..]` under `logits` rows `0..len-1`.
pub fn window_nll(logits: &jetc_models::generate::Logits, ids: &[u32]) -> Result<f64> {
    if logits.rows() < ids.len() {
        return Err(task_err("lm", format!("the model returned {} logit rows for {} tokens (a graph that outputs only the last position cannot be scored)", logits.rows(), ids.len())));
    }
    let mut nll = 0.0;
    for (i, &next) in ids.iter().enumerate().skip(1) {
        let row = logits.row(i - 1);
        let target = *row
            .get(next as usize)
            .ok_or_else(|| task_err("lm", format!("token id {next} is outside the model's vocabulary of {}", row.len())))?;
        nll += log_sum_exp(row) - target as f64;
    }
    Ok(nll)
}

/// Scores `windows`; `bytes_of(ids)` is the UTF-8 length of tokens `ids` (for bits per
/// byte), `progress(i)` is called after window `i`.
pub fn score(
    gen: &mut Runner,
    windows: &[Vec<u32>],
    bytes_of: &dyn Fn(&[u32]) -> usize,
    progress: &mut dyn FnMut(usize),
) -> Result<Score> {
    let mut per_window = Vec::with_capacity(windows.len());
    let (mut total, mut tokens, mut bytes) = (0f64, 0usize, 0usize);
    for (i, w) in windows.iter().enumerate() {
        gen.reset();
        let logits = gen.forward(w)?;
        let nll = window_nll(&logits, w)?;
        if !nll.is_finite() {
            return Err(task_err("lm", format!("window {i}: the NLL is not finite ({nll}); the model produced NaN or inf logits")));
        }
        per_window.push(nll / (w.len() - 1) as f64);
        total += nll;
        tokens += w.len() - 1;
        bytes += bytes_of(&w[1..]);
        progress(i);
    }
    let nll = total / tokens as f64;
    Ok(Score {
        task: "lm".into(),
        examples: windows.len(),
        metrics: vec![
            Metric { name: "nll".into(), value: nll, stderr: stderr(&per_window), values: per_window.clone() },
            Metric { name: "ppl".into(), value: nll.exp(), stderr: None, values: vec![] },
            Metric { name: "bits_per_byte".into(), value: total / std::f64::consts::LN_2 / bytes.max(1) as f64, stderr: None, values: vec![] },
            Metric { name: "tokens".into(), value: tokens as f64, stderr: None, values: vec![] },
            Metric { name: "window_nll_mean".into(), value: mean(&per_window), stderr: None, values: vec![] },
        ],
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use jetc_models::generate::Logits;

    #[test]
    fn windows_keep_the_tail_and_the_limit() {
        let s: Vec<u32> = (0..10).collect();
        assert_eq!(windows(&s, 4, None).unwrap(), vec![vec![0, 1, 2, 3], vec![4, 5, 6, 7], vec![8, 9]]);
        assert_eq!(windows(&s[..9], 4, None).unwrap().len(), 2, "a 1-token tail predicts nothing");
        assert_eq!(windows(&s, 4, Some(1)).unwrap().len(), 1);
        assert!(windows(&s, 1, None).is_err());
        assert!(windows(&[], 4, None).unwrap_err().to_string().contains("nothing to score"));
    }

    #[test]
    fn nll_of_known_logits() {
        // Uniform over 4 tokens: every prediction costs ln 4.
        let l = Logits { vocab: 4, data: vec![0.0; 12] };
        assert!((window_nll(&l, &[0, 1, 2]).unwrap() - 2.0 * 4f64.ln()).abs() < 1e-12);
        // A confident right answer costs ~0, a wrong one ~20 nats.
        let mut d = vec![0.0f32; 8];
        d[1] = 20.0;
        d[4] = 20.0;
        let l = Logits { vocab: 4, data: d };
        let right = window_nll(&l, &[0, 1]).unwrap();
        assert!(right < 1e-8, "{right}");
        let wrong = window_nll(&l, &[0, 3]).unwrap();
        assert!((wrong - (20f64.exp() + 3.0).ln()).abs() < 1e-9, "{wrong}");
        assert!(window_nll(&l, &[0, 9]).unwrap_err().to_string().contains("outside the model's vocabulary"));
    }
}
