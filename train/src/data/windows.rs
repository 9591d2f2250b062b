//! A token stream cut into windows of `seq_len` tokens: every `heldout_every`-th window is
//! held out, the training windows are shuffled by seed. Windows are start offsets, so a
//! memory-mapped stream is never copied.
use rand::seq::SliceRandom;
use rand::SeedableRng;

use super::TokenStream;
use crate::error::{Result, TrainError};

/// Windows of one corpus as start offsets into its token stream.
pub struct Windows {
    pub stream: TokenStream,
    pub seq_len: usize,
    pub train: Vec<usize>,
    pub heldout: Vec<usize>,
    pub documents: usize,
}

impl Windows {
    pub fn tokens(&self) -> usize {
        self.stream.len()
    }

    /// The ids of train window `i` (cycling).
    pub fn train_window(&self, i: usize) -> Vec<i64> {
        self.stream.slice(self.train[i % self.train.len()], self.seq_len)
    }

    pub fn heldout_window(&self, i: usize) -> Vec<i64> {
        self.stream.slice(self.heldout[i], self.seq_len)
    }

    /// The largest token id of the corpus.
    pub fn max_id(&self) -> u32 {
        (0..self.stream.len()).map(|i| self.stream.get(i)).max().unwrap_or(0)
    }
}

/// Cuts `stream` into windows of `seq_len`, every one held out: text kept for measuring only
/// (an evaluation file beside the training data).
pub fn heldout_windows(stream: TokenStream, documents: usize, seq_len: usize) -> Windows {
    let n = if seq_len == 0 { 0 } else { stream.len() / seq_len };
    Windows { stream, seq_len, train: vec![], heldout: (0..n).map(|i| i * seq_len).collect(), documents }
}

/// Cuts `stream` into windows of `seq_len`; every `heldout_every`-th window (when > 0) is
/// held out; train windows are shuffled by `seed`.
pub fn windows(stream: TokenStream, documents: usize, seq_len: usize, heldout_every: usize, seed: u64) -> Result<Windows> {
    if seq_len == 0 {
        return Err(TrainError::Other("--seq-len must be at least 1".into()));
    }
    let n = stream.len() / seq_len;
    let mut train = Vec::new();
    let mut heldout = Vec::new();
    for i in 0..n {
        if heldout_every > 0 && i % heldout_every == heldout_every - 1 {
            heldout.push(i * seq_len);
        } else {
            train.push(i * seq_len);
        }
    }
    if train.is_empty() {
        return Err(TrainError::Other(format!(
            "the data holds {} tokens: not one training window of --seq-len {seq_len} (give more text or a shorter --seq-len)",
            stream.len()
        )));
    }
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    train.shuffle(&mut rng);
    Ok(Windows { stream, seq_len, train, heldout, documents })
}

