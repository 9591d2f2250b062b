//! Head mapping of linear attention (GQA on the query side, GVA on the value side) and the
//! driver that runs a mixer's per-head kernel over (batch, state head) on rayon.
//!
//! With `Hq` query, `Hk` key and `Hv` value heads the recurrent state has
//! `Hs = max(Hk, Hv)` heads; the smaller of `Hk`, `Hv` must divide the larger.
//! - state head `s` is written by key head `s * Hk / Hs` and value head `s * Hv / Hs`
//!   (consecutive state heads share a k or v head: fla's `repeat(x, '... h d -> ... (h g) d')`);
//!   gates and betas are per state head.
//! - `Hq > Hs` (GQA, as the ONNX `LinearAttention` op with `q_num_heads > kv_num_heads`;
//!   `Hs` must divide `Hq`): the output has `Ho = Hq` heads and output head `i` reads query
//!   head `i` against state head `i * Hs / Hq`.
//! - `Hq <= Hs` (GVA, as fla's `num_v_heads > num_heads`; `Hq` must divide `Hs`): the output
//!   has `Ho = Hs` heads and output head `s` reads query head `s * Hq / Hs` against state `s`.
//!
//! Either way each state head is read by `R = Ho / Hs` consecutive output heads
//! ([`HeadMap::outs_of_state`]), which is what the per-head kernels receive.
use std::ops::Range;

use rayon::prelude::*;

use super::{dims_err, Dims, LinearOutput};
use crate::error::Result;

/// The head counts of a call and the mapping between them (see the module header).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct HeadMap {
    pub hq: usize,
    pub hk: usize,
    pub hv: usize,
    /// State heads, `max(hk, hv)`.
    pub hs: usize,
    /// Output heads, `max(hq, hs)`.
    pub ho: usize,
}

impl HeadMap {
    pub fn new(hq: usize, hk: usize, hv: usize) -> Result<HeadMap> {
        if hq == 0 || hk == 0 || hv == 0 {
            return Err(dims_err(format!("head counts q {hq}, k {hk}, v {hv} must be at least 1")));
        }
        let hs = hk.max(hv);
        if !hs.is_multiple_of(hk) || !hs.is_multiple_of(hv) {
            return Err(dims_err(format!("key heads {hk} and value heads {hv}: the smaller must divide the larger")));
        }
        if hq > hs && !hq.is_multiple_of(hs) {
            return Err(dims_err(format!("query heads {hq} must be a multiple of the state heads {hs} (GQA)")));
        }
        if hq <= hs && !hs.is_multiple_of(hq) {
            return Err(dims_err(format!("query heads {hq} must divide the state heads {hs} (GVA)")));
        }
        Ok(HeadMap { hq, hk, hv, hs, ho: hq.max(hs) })
    }

    /// Key head that writes state head `s`.
    pub fn k_head(&self, s: usize) -> usize {
        s * self.hk / self.hs
    }

    /// Value head that writes state head `s`.
    pub fn v_head(&self, s: usize) -> usize {
        s * self.hv / self.hs
    }

    /// State head that output head `o` reads.
    pub fn state_of_out(&self, o: usize) -> usize {
        if self.hq > self.hs {
            o * self.hs / self.hq
        } else {
            o
        }
    }

    /// Query head that output head `o` uses.
    pub fn q_of_out(&self, o: usize) -> usize {
        if self.hq > self.hs {
            o
        } else {
            o * self.hq / self.hs
        }
    }

    /// Output heads per state head, `Ho / Hs`.
    pub fn group(&self) -> usize {
        self.ho / self.hs
    }

    /// The output heads that read state head `s` (consecutive).
    pub fn outs_of_state(&self, s: usize) -> Range<usize> {
        let r = self.group();
        s * r..(s + 1) * r
    }
}

/// Rows `[T, D]` of head `h` of batch `b` of a `[B, T, H, D]` tensor.
pub(crate) fn gather(x: &[f32], seq: usize, heads: usize, d: usize, b: usize, h: usize) -> Vec<f32> {
    let mut out = Vec::with_capacity(seq * d);
    for t in 0..seq {
        let at = ((b * seq + t) * heads + h) * d;
        out.extend_from_slice(&x[at..at + d]);
    }
    out
}

/// The query rows that state head `s` of batch `b` is read with: `[R, T, dk]`, one block per
/// output head of [`HeadMap::outs_of_state`], in order.
pub(crate) fn gather_queries(q: &[f32], dims: &Dims, map: &HeadMap, b: usize, s: usize) -> Vec<f32> {
    let mut out = Vec::with_capacity(map.group() * dims.seq * dims.dk);
    for o in map.outs_of_state(s) {
        out.extend(gather(q, dims.seq, map.hq, dims.dk, b, map.q_of_out(o)));
    }
    out
}

/// Runs `kernel(b, s, state)` for every (batch, state head) in parallel; `state` starts as
/// the initial state of that head (zeros without one) and is left as its final state; the
/// kernel returns the outputs of the head's `R` output heads as `[R, T, dv]`, which are
/// scattered into `[B, T, Ho, dv]`. Sizes must have been checked by the caller.
pub(crate) fn run_heads<F>(dims: &Dims, map: &HeadMap, initial_state: Option<&[f32]>, kernel: F) -> LinearOutput
where
    F: Fn(usize, usize, &mut [f32]) -> Vec<f32> + Sync + Send,
{
    let (seq, dv, hs, ho) = (dims.seq, dims.dv, map.hs, map.ho);
    let per_state = dims.dk * dv;
    let results: Vec<(Vec<f32>, Vec<f32>)> = (0..dims.batch * hs)
        .into_par_iter()
        .map(|idx| {
            let (b, s) = (idx / hs, idx % hs);
            let mut st = match initial_state {
                Some(s0) => s0[idx * per_state..(idx + 1) * per_state].to_vec(),
                None => vec![0.0; per_state],
            };
            let o = kernel(b, s, &mut st);
            (o, st)
        })
        .collect();
    let mut out = vec![0.0f32; dims.batch * seq * ho * dv];
    let mut state = Vec::with_capacity(dims.batch * hs * per_state);
    for (idx, (o, st)) in results.into_iter().enumerate() {
        let (b, s) = (idx / hs, idx % hs);
        for (r, oh) in map.outs_of_state(s).enumerate() {
            for t in 0..seq {
                let dst = ((b * seq + t) * ho + oh) * dv;
                let src = (r * seq + t) * dv;
                out[dst..dst + dv].copy_from_slice(&o[src..src + dv]);
            }
        }
        state.extend_from_slice(&st);
    }
    LinearOutput { o: out, state }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mappings() {
        // GQA: 8 query heads over 2 state heads.
        let m = HeadMap::new(8, 2, 2).unwrap();
        assert_eq!((m.hs, m.ho, m.group()), (2, 8, 4));
        assert_eq!((0..8).map(|o| m.state_of_out(o)).collect::<Vec<_>>(), [0, 0, 0, 0, 1, 1, 1, 1]);
        assert_eq!((0..8).map(|o| m.q_of_out(o)).collect::<Vec<_>>(), (0..8).collect::<Vec<_>>());
        assert_eq!(m.outs_of_state(1), 4..8);
        // GVA: 2 query/key heads, 6 value heads.
        let m = HeadMap::new(2, 2, 6).unwrap();
        assert_eq!((m.hs, m.ho, m.group()), (6, 6, 1));
        assert_eq!((0..6).map(|s| m.k_head(s)).collect::<Vec<_>>(), [0, 0, 0, 1, 1, 1]);
        assert_eq!((0..6).map(|s| m.v_head(s)).collect::<Vec<_>>(), (0..6).collect::<Vec<_>>());
        assert_eq!((0..6).map(|o| m.q_of_out(o)).collect::<Vec<_>>(), [0, 0, 0, 1, 1, 1]);
        // More key heads than value heads.
        let m = HeadMap::new(4, 4, 2).unwrap();
        assert_eq!((0..4).map(|s| m.v_head(s)).collect::<Vec<_>>(), [0, 0, 1, 1]);
        assert!(HeadMap::new(3, 2, 2).is_err());
        assert!(HeadMap::new(2, 3, 2).is_err());
        assert!(HeadMap::new(4, 6, 6).is_err());
        assert!(HeadMap::new(0, 1, 1).is_err());
        assert!(HeadMap::new(1, 1, 0).is_err());
    }
}
