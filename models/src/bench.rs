//! Throughput of a decoder on the CPU executor at a chosen context length and batch: what
//! `jetc bench` measures and compares between an original model and its hybrid.
//!
//! - **Prefill**: `batch` sequences of `tokens` ids from empty caches, one run.
//! - **Decode at context C**: every cache that grows with the sequence (a KV cache: an axis
//!   the graph leaves symbolic, zero-length at the start) is filled with C random entries,
//!   and every fixed-size state (a linear mixer's state, a convolution's last inputs) with
//!   random values; then one untimed step (a sliding-window layer trims its cache to the
//!   window there), then `steps` timed steps that feed each sequence's argmax token back. A
//!   step's cost does not depend on the values in the caches, only on their sizes, so this
//!   measures decode at context C without a prefill of C tokens (quadratic, minutes on a CPU
//!   at 32K).
//! - **Bytes per step**: what a step must at least move: the weights it reads whole (every
//!   weight but the tables it only gathers rows from; shared blocks once), each cache read
//!   once, and written once where it is a fixed-size state (one entry where it grows). The
//!   ratio of two models' bytes per step is the decode speedup a bandwidth-bound engine would
//!   show; [`stream_read_bandwidth`] gives this machine's bandwidth to compare with.
//! - **Memory**: the executor's peak of live values in a step, and the process's peak RSS
//!   over the measurement (Linux: reset before each one through `/proc/self/clear_refs`).
use std::collections::HashMap;
use std::time::Instant;

use jetc_ir::Graph;
use jetc_runtime::{Data, Session, Value};
use ndarray::{ArrayD, IxDyn};
use rayon::prelude::*;

use crate::generate::{int_value, interface, ones, GenerateError, Interface, Result};

/// One prefill measurement.
#[derive(Clone, Debug, PartialEq)]
pub struct PrefillMeasure {
    pub batch: usize,
    pub tokens: usize,
    pub seconds: f64,
    /// Prompt tokens per second over all sequences (`batch * tokens / seconds`).
    pub tokens_per_s: f64,
    pub peak_rss_bytes: Option<u64>,
}

/// One decode measurement at a context length.
#[derive(Clone, Debug, PartialEq)]
pub struct DecodeMeasure {
    pub batch: usize,
    pub context: usize,
    pub steps: usize,
    pub seconds: f64,
    /// New tokens per second over all sequences (`batch * steps / seconds`).
    pub tokens_per_s: f64,
    /// The median step's seconds.
    pub median_step_s: f64,
    /// Bytes of the caches at the first timed step (all sequences).
    pub cache_bytes: u64,
    /// Bytes of the weights a step reads whole.
    pub weight_bytes: u64,
    /// What a step must at least move (see the module header), averaged over the steps.
    pub bytes_per_step: u64,
    /// `bytes_per_step / median_step_s`: the bandwidth the step would need if it moved only that.
    pub effective_gb_per_s: f64,
    /// The executor's peak of live values in the last step.
    pub peak_value_bytes: u64,
    pub peak_rss_bytes: Option<u64>,
}

/// A decoder prepared for throughput measurements (its weights converted once).
pub struct Bench<'g> {
    session: Session<'g>,
    io: Interface,
    vocab: usize,
}

fn model_err(m: String) -> GenerateError {
    GenerateError::Model(m)
}

/// xorshift64* values in [-0.5, 0.5): cache contents whose values do not matter.
fn fill_random(data: &mut [f32], seed: u64) {
    data.par_chunks_mut(1 << 16).enumerate().for_each(|(i, chunk)| {
        let mut s = seed ^ (i as u64 + 1).wrapping_mul(0x9E37_79B9_7F4A_7C15);
        for v in chunk {
            s ^= s >> 12;
            s ^= s << 25;
            s ^= s >> 27;
            *v = ((s.wrapping_mul(0x2545_F491_4F6C_DD1D) >> 40) as f32 / (1u64 << 24) as f32) - 0.5;
        }
    });
}

impl<'g> Bench<'g> {
    /// Prepares `graph` (a decoder with caches, as `jetc generate` runs) and converts its
    /// weights with one token.
    pub fn new(graph: &'g Graph) -> Result<Bench<'g>> {
        let io = interface(graph)?;
        if io.caches.is_empty() {
            return Err(model_err("the model has no caches (past*/present* pairs): decode throughput needs a decoder with caches".into()));
        }
        let vocab = graph
            .outputs
            .iter()
            .find(|o| o.name == io.logits)
            .and_then(|o| graph.fact(o.outlet).ok())
            .and_then(|f| f.shape.as_ref().and_then(|s| s.last().and_then(|d| d.as_known())))
            .and_then(|v| usize::try_from(v).ok())
            .filter(|&v| v > 0)
            .unwrap_or(2);
        let session = Session::new(graph)?;
        let mut bench = Bench { session, io, vocab };
        let caches = bench.caches(1, 0, 0);
        bench.step(&[0], 1, 0, caches)?;
        Ok(bench)
    }

    /// The session (its weights, its last peak of live values).
    pub fn session(&self) -> &Session<'g> {
        &self.session
    }

    /// The caches of `batch` sequences at `context` entries: growing axes (zero-length at the
    /// start) get `context`, the batch axis `batch`; random contents unless `context` is 0.
    fn caches(&self, batch: usize, context: usize, seed: u64) -> HashMap<String, Value> {
        self.io
            .caches
            .iter()
            .enumerate()
            .map(|(i, c)| {
                let dims: Vec<usize> = c
                    .init
                    .shape()
                    .iter()
                    .enumerate()
                    .map(|(axis, &d)| if axis == 0 { batch } else if d == 0 { context } else { d })
                    .collect();
                let mut data = vec![0.0f32; dims.iter().product()];
                if context > 0 {
                    fill_random(&mut data, seed.wrapping_add(i as u64));
                }
                let arr = ArrayD::from_shape_vec(IxDyn(&dims), data).unwrap_or_default();
                (c.input.clone(), Value { dtype: c.init.dtype, data: Data::F(arr) })
            })
            .collect()
    }

    /// One run of `ids` ([batch, t] row-major) after `past` tokens with `caches`; returns the
    /// new caches and each sequence's argmax token.
    fn step(&mut self, ids: &[u32], batch: usize, past: usize, mut feed: HashMap<String, Value>) -> Result<(HashMap<String, Value>, Vec<u32>)> {
        let t = ids.len() / batch.max(1);
        feed.insert("input_ids".into(), int_value(self.io.ids, &[batch, t], ids.iter().map(|&i| i as i64).collect()));
        if let Some(dt) = self.io.positions {
            let pos: Vec<i64> = (0..batch).flat_map(|_| (past..past + t).map(|p| p as i64)).collect();
            feed.insert("position_ids".into(), int_value(dt, &[batch, t], pos));
        }
        if let Some(dt) = self.io.mask {
            feed.insert("attention_mask".into(), ones(dt, &[batch, past + t]));
        }
        let outputs = self.session.run(feed)?;
        let mut by_name: HashMap<String, Value> = outputs.into_iter().collect();
        let mut caches = HashMap::new();
        for c in &self.io.caches {
            let v = by_name.remove(&c.output).ok_or_else(|| model_err(format!("output `{}` was not produced", c.output)))?;
            caches.insert(c.input.clone(), v);
        }
        let logits = by_name.remove(&self.io.logits).ok_or_else(|| model_err(format!("output `{}` was not produced", self.io.logits)))?;
        let a = logits.as_f32().ok_or_else(|| model_err(format!("output `{}` is not floating-point", self.io.logits)))?;
        let vocab = *a.shape().last().unwrap_or(&1);
        let data: Vec<f32> = a.iter().copied().collect();
        let rows = data.len() / vocab.max(1);
        let per_seq = rows / batch.max(1);
        let next = (0..batch)
            .map(|b| {
                let row = (b + 1) * per_seq - 1;
                crate::generate::argmax(&data[row * vocab..(row + 1) * vocab])
            })
            .collect();
        Ok((caches, next))
    }

    /// Prefill of `batch` sequences of `tokens` random ids from empty caches.
    pub fn prefill(&mut self, batch: usize, tokens: usize, seed: u64) -> Result<PrefillMeasure> {
        if batch == 0 || tokens == 0 {
            return Err(model_err("prefill needs a batch and a token count of at least 1".into()));
        }
        let mut s = seed | 1;
        let ids: Vec<u32> = (0..batch * tokens)
            .map(|_| {
                s ^= s << 13;
                s ^= s >> 7;
                s ^= s << 17;
                (s % self.vocab as u64) as u32
            })
            .collect();
        let caches = self.caches(batch, 0, 0);
        reset_peak_rss();
        let t0 = Instant::now();
        self.step(&ids, batch, 0, caches)?;
        let seconds = t0.elapsed().as_secs_f64();
        Ok(PrefillMeasure { batch, tokens, seconds, tokens_per_s: (batch * tokens) as f64 / seconds.max(1e-12), peak_rss_bytes: peak_rss_bytes() })
    }

    /// Decode of `batch` sequences at `context` cached entries: one untimed step, then
    /// `steps` timed ones (see the module header).
    pub fn decode(&mut self, batch: usize, context: usize, steps: usize, seed: u64) -> Result<DecodeMeasure> {
        if batch == 0 || steps == 0 {
            return Err(model_err("decode needs a batch and a step count of at least 1".into()));
        }
        let growing: Vec<bool> = self.io.caches.iter().map(|c| c.init.shape().iter().skip(1).any(|&d| d == 0)).collect();
        reset_peak_rss();
        let caches = self.caches(batch, context, seed);
        let mut ids: Vec<u32> = (0..batch).map(|b| (b % self.vocab) as u32).collect();
        let (mut caches, next) = self.step(&ids, batch, context, caches)?;
        ids = next;
        let weight_bytes = self.session.streamed_weight_bytes() as u64;
        let (mut times, mut moved) = (Vec::with_capacity(steps), 0u64);
        let mut cache_bytes = 0u64;
        for i in 0..steps {
            let mut step_bytes = weight_bytes;
            for (c, &grows) in self.io.caches.iter().zip(&growing) {
                let Some(v) = caches.get(&c.input) else { continue };
                let bytes = 4 * v.len() as u64;
                let entry = match grows {
                    // One entry of the growing axis (the first symbolic one after the batch).
                    true => c.init.shape().iter().zip(v.shape()).skip(1).find(|(&d0, _)| d0 == 0).map_or(0, |(_, &n)| if n > 0 { bytes / n as u64 } else { 0 }),
                    false => bytes,
                };
                step_bytes += bytes + entry;
                if i == 0 {
                    cache_bytes += bytes;
                }
            }
            moved += step_bytes;
            let t0 = Instant::now();
            let (c, next) = self.step(&ids, batch, context + 1 + i, std::mem::take(&mut caches))?;
            times.push(t0.elapsed().as_secs_f64());
            caches = c;
            ids = next;
        }
        let seconds: f64 = times.iter().sum();
        let mut sorted = times.clone();
        sorted.sort_by(f64::total_cmp);
        let median_step_s = sorted[sorted.len() / 2];
        let bytes_per_step = moved / steps as u64;
        Ok(DecodeMeasure {
            batch,
            context,
            steps,
            seconds,
            tokens_per_s: (batch * steps) as f64 / seconds.max(1e-12),
            median_step_s,
            cache_bytes,
            weight_bytes,
            bytes_per_step,
            effective_gb_per_s: bytes_per_step as f64 / median_step_s.max(1e-12) / 1e9,
            peak_value_bytes: self.session.last_peak_bytes() as u64,
            peak_rss_bytes: peak_rss_bytes(),
        })
    }
}

/// This process's peak resident memory since start or the last [`reset_peak_rss`] (Linux's
/// VmHWM); `None` where /proc does not tell.
pub fn peak_rss_bytes() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}

/// Resets the peak RSS to the current RSS (Linux: `5` into /proc/self/clear_refs); a no-op
/// elsewhere.
pub fn reset_peak_rss() {
    let _ = std::fs::write("/proc/self/clear_refs", "5");
}

/// This machine's read bandwidth in GB/s: all threads summing a buffer of `bytes` (far larger
/// than the caches), best of `rounds` passes.
pub fn stream_read_bandwidth(bytes: usize, rounds: usize) -> f64 {
    let n = (bytes / 4).max(1 << 16);
    let mut data = vec![0.0f32; n];
    fill_random(&mut data, 7);
    let mut best = 0.0f64;
    for _ in 0..rounds.max(1) {
        let t0 = Instant::now();
        let sum: f32 = data.par_chunks(1 << 16).map(sum16).sum();
        let s = t0.elapsed().as_secs_f64();
        std::hint::black_box(sum);
        best = best.max((4 * n) as f64 / s.max(1e-12) / 1e9);
    }
    best
}

/// A chunk's sum in 16 lanes (so that it vectorizes and the read, not the adds, bounds it).
fn sum16(chunk: &[f32]) -> f32 {
    let mut acc = [0.0f32; 16];
    let mut it = chunk.chunks_exact(16);
    for c in &mut it {
        for (a, &v) in acc.iter_mut().zip(c) {
            *a += v;
        }
    }
    acc.iter().sum::<f32>() + it.remainder().iter().sum::<f32>()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn random_fill_is_in_range_and_not_constant() {
        let mut v = vec![0.0f32; 200_000];
        fill_random(&mut v, 3);
        assert!(v.iter().all(|x| (-0.5..0.5).contains(x)));
        let mean = v.iter().map(|&x| x as f64).sum::<f64>() / v.len() as f64;
        assert!(mean.abs() < 0.01, "mean {mean}");
        assert_ne!(v[0], v[1]);
        assert_ne!(v[0], v[1 << 16], "chunks must not repeat");
    }

    #[test]
    fn sum16_matches_a_plain_sum() {
        let v: Vec<f32> = (0..1037).map(|i| (i % 7) as f32).collect();
        assert_eq!(sum16(&v), v.iter().sum::<f32>());
    }
}
