//! CPU reference math of the linear-attention token mixers that PostNAS chooses between
//! (`/work/shared/spec/linear-attention.md`) and of JetBlock's dynamic convolution
//! (`jet-nemotron.md` §2). Pure f32 on row-major slices; the recurrent state is always f32.
//! The reference these agree with is flash-linear-attention (fla) 0.6.0; golden data from its
//! `naive.py` files live in `tests/golden/linear/` (made by `scripts/make_linear_goldens.py`).
//!
//! Layouts (as fla's public kernels):
//! - activations `[B, T, H, D]` flattened row-major (q, k `[B,T,Hq|Hk,dk]`, v `[B,T,Hv,dv]`);
//! - scalar gates / betas per state head `[B, T, Hs]`, vector gates `[B, T, Hs, dk]`;
//! - recurrent state `[B, Hs, dk, dv]`, read as `o_t = S_t^T q_t`;
//! - output `[B, T, Ho, dv]`; `Hs`, `Ho` and the head mapping (GQA / GVA) are in [`heads`].
//!
//! Every mixer has a recurrent form (token by token, the exact op order of the spec) and a
//! chunked form (the one GPU kernels use; chunk length a parameter, [`DEFAULT_CHUNK`] = 64).
//! Both return the output and the final state, so decode = the recurrent form with `T = 1`
//! and the previous final state as initial state. The recurrent forms accept any gate values;
//! the chunked forms need finite log decays `<= 0` (an error otherwise). In the chunked forms
//! the chunk-local cumulative log decays and their `exp` are formed in f64 and rounded to f32
//! (with f32 prefix sums, strong decays such as -20 per token lost ~5e-6 relative accuracy
//! over a 64-token chunk); all other arithmetic and the state are f32. Work is spread over (batch, state head)
//! with rayon.
//!
//! Modules: [`gated_delta`] (Gated DeltaNet), [`delta`] (DeltaNet), [`gla`] (GLA and simple
//! GLA), [`retnet`], [`mamba2`] (SSD), [`rwkv7`] (DPLR), [`dynamic_conv`] (JetBlock's
//! per-token causal convolution with its cache), [`heads`] (head mapping and the per-head
//! driver).

pub mod delta;
pub mod dynamic_conv;
pub mod gated_delta;
pub mod gla;
pub mod heads;
pub mod mamba2;
pub mod retnet;
pub mod rwkv7;

#[cfg(test)]
pub(crate) mod testutil;

use crate::error::{Result, RuntimeError};
pub use heads::HeadMap;

/// Chunk length of the chunked forms unless the caller says otherwise (fla's `BT`).
pub const DEFAULT_CHUNK: usize = 64;

/// Lowest per-token log decay the gate helpers produce (exp(-88) ~ 6e-39 is still a normal
/// f32): a floor keeps an overflowing softplus from making `-inf - -inf = NaN` later.
pub const LOG_DECAY_FLOOR: f32 = -88.0;

/// Sizes of one linear-attention call. `q_heads`, `k_heads`, `v_heads` may differ (GQA on
/// the query side, GVA on the value side, see [`heads`]); `dk != dv` is allowed everywhere.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Dims {
    pub batch: usize,
    pub seq: usize,
    pub q_heads: usize,
    pub k_heads: usize,
    pub v_heads: usize,
    pub dk: usize,
    pub dv: usize,
}

/// Element counts of every tensor of a call, checked for overflow; from [`Dims::check`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Sizes {
    pub map: HeadMap,
    /// q `[B, T, Hq, dk]`.
    pub q: usize,
    /// k `[B, T, Hk, dk]`.
    pub k: usize,
    /// v `[B, T, Hv, dv]`.
    pub v: usize,
    /// scalar gate or beta `[B, T, Hs]`.
    pub gate: usize,
    /// per-key gate (GLA's gk, RWKV7's w, a, b) `[B, T, Hs, dk]`.
    pub key_gate: usize,
    /// state `[B, Hs, dk, dv]`.
    pub state: usize,
    /// output `[B, T, Ho, dv]`.
    pub out: usize,
}

impl Dims {
    /// All three head counts equal to `heads`.
    pub fn new(batch: usize, seq: usize, heads: usize, dk: usize, dv: usize) -> Dims {
        Dims { batch, seq, q_heads: heads, k_heads: heads, v_heads: heads, dk, dv }
    }

    /// The same sizes with other head counts.
    pub fn with_heads(self, q_heads: usize, k_heads: usize, v_heads: usize) -> Dims {
        Dims { q_heads, k_heads, v_heads, ..self }
    }

    /// The same sizes with another sequence length.
    pub fn with_seq(self, seq: usize) -> Dims {
        Dims { seq, ..self }
    }

    /// fla's default attention scale `dk^-0.5`.
    pub fn default_scale(&self) -> f32 {
        1.0 / (self.dk.max(1) as f32).sqrt()
    }

    /// Checks the head mapping and that every tensor size fits in `usize`.
    pub fn check(&self) -> Result<Sizes> {
        let map = HeadMap::new(self.q_heads, self.k_heads, self.v_heads)?;
        if self.dk == 0 || self.dv == 0 {
            return Err(dims_err(format!("dk = {} and dv = {} must be at least 1", self.dk, self.dv)));
        }
        let bt = prod(&[self.batch, self.seq])?;
        Ok(Sizes {
            map,
            q: prod(&[bt, self.q_heads, self.dk])?,
            k: prod(&[bt, self.k_heads, self.dk])?,
            v: prod(&[bt, self.v_heads, self.dv])?,
            gate: prod(&[bt, map.hs])?,
            key_gate: prod(&[bt, map.hs, self.dk])?,
            state: prod(&[self.batch, map.hs, self.dk, self.dv])?,
            out: prod(&[bt, map.ho, self.dv])?,
        })
    }
}

/// Output of a linear-attention call.
#[derive(Clone, Debug, PartialEq)]
pub struct LinearOutput {
    /// `[B, T, Ho, dv]`.
    pub o: Vec<f32>,
    /// Final state `[B, Hs, dk, dv]`, f32.
    pub state: Vec<f32>,
}

pub(crate) fn dims_err(msg: impl Into<String>) -> RuntimeError {
    RuntimeError::Input { name: "linear-attention dims".into(), msg: msg.into() }
}

/// Product of sizes, an error instead of an overflow.
pub(crate) fn prod(xs: &[usize]) -> Result<usize> {
    xs.iter().try_fold(1usize, |a, &x| a.checked_mul(x)).ok_or_else(|| dims_err(format!("sizes {xs:?} overflow usize")))
}

/// Checks that input `name` has `want` elements.
pub(crate) fn check_len(name: &str, x: &[f32], want: usize) -> Result<()> {
    if x.len() != want {
        return Err(RuntimeError::Input {
            name: name.to_string(),
            msg: format!("has {} elements, the dims need {want}", x.len()),
        });
    }
    Ok(())
}

/// Checks an optional initial state.
pub(crate) fn check_state(x: Option<&[f32]>, want: usize) -> Result<()> {
    match x {
        Some(s) => check_len("initial_state", s, want),
        None => Ok(()),
    }
}

/// The chunked forms need finite log decays `<= 0`: every decay factor they form is then
/// `exp(later - earlier) <= 1` and cannot overflow.
pub(crate) fn check_log_decay(name: &str, g: &[f32]) -> Result<()> {
    if let Some((i, &x)) = g.iter().enumerate().find(|(_, x)| !(x.is_finite() && **x <= 0.0)) {
        return Err(RuntimeError::Input {
            name: name.to_string(),
            msg: format!("element {i} is {x}: the chunked form needs finite log decays <= 0"),
        });
    }
    Ok(())
}

/// Largest chunk length the chunked forms accept (their per-chunk matrices are `C x C`).
pub const MAX_CHUNK: usize = 4096;

pub(crate) fn check_chunk(chunk: usize) -> Result<()> {
    if chunk == 0 || chunk > MAX_CHUNK {
        return Err(dims_err(format!("chunk size {chunk} is not in 1..={MAX_CHUNK}")));
    }
    Ok(())
}

pub use crate::math::softplus;

/// `exp` of a log-decay difference formed in f64 (see the chunked forms), rounded to f32.
pub(crate) fn dexp(x: f64) -> f32 {
    x.exp() as f32
}

/// `sum_d x[d] y[d] exp(gi[d] - gj[d])`: a score with a per-key-dimension decay between
/// positions `i >= j` (cumulative log decays in f64).
pub(crate) fn decayed_dot(x: &[f32], y: &[f32], gi: &[f64], gj: &[f64]) -> f32 {
    x.iter().zip(y).zip(gi.iter().zip(gj)).map(|((a, b), (p, q))| a * b * dexp(p - q)).sum()
}

pub(crate) fn dot(a: &[f32], b: &[f32]) -> f32 {
    a.iter().zip(b).map(|(x, y)| x * y).sum()
}
