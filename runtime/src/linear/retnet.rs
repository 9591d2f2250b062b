//! RetNet (retention): `linear-attention.md` table row "RetNet" — simple GLA with a fixed
//! decay per head, `S_t = gamma_h S_{t-1} + k_t v_t^T`, `gamma_h = 1 - 2^(-5-h)`, i.e. the
//! log decay `g = log(gamma_h)` at every token ([`retnet_log_gammas`], [`retnet_gates`]).
//! `h` is the state head index (fla: the head index of its `[B, H, T, D]` input).
//!
//! RoPE on q and k (xPos in the paper) and the gated RMSNorm on the output are the caller's
//! job: these functions take q and k already rotated.
//! Layouts as simple GLA ([`super::gla`]): q `[B,T,Hq,dk]`, k `[B,T,Hk,dk]`, v
//! `[B,T,Hv,dv]`, state `[B,Hs,dk,dv]`, output `[B,T,Ho,dv]`.
use super::gla::{simple_gla_chunked, simple_gla_recurrent, SimpleGlaInputs};
use super::{prod, Dims, LinearOutput};
use crate::error::Result;

/// Inputs of a RetNet call.
#[derive(Clone, Copy, Debug)]
pub struct RetNetInputs<'a> {
    pub q: &'a [f32],
    pub k: &'a [f32],
    pub v: &'a [f32],
    pub scale: f32,
    /// `[B, Hs, dk, dv]`; zeros when absent.
    pub initial_state: Option<&'a [f32]>,
}

/// `log(gamma_h) = log(1 - 2^(-5-h))` for `h < heads` (computed in f64, then rounded).
pub fn retnet_log_gammas(heads: usize) -> Vec<f32> {
    (0..heads).map(|h| (-(2f64.powf(-5.0 - h as f64))).ln_1p() as f32).collect()
}

/// The simple-GLA gates `[B, T, H]` of RetNet: `log(gamma_h)` at every token.
pub fn retnet_gates(batch: usize, seq: usize, heads: usize) -> Result<Vec<f32>> {
    let n = prod(&[batch, seq, heads])?;
    let lg = retnet_log_gammas(heads);
    Ok((0..n).map(|i| lg[i % heads]).collect())
}

/// Token-by-token RetNet.
pub fn retnet_recurrent(dims: &Dims, x: &RetNetInputs) -> Result<LinearOutput> {
    let sz = dims.check()?;
    let g = retnet_gates(dims.batch, dims.seq, sz.map.hs)?;
    simple_gla_recurrent(dims, &simple(x, &g))
}

/// Chunked RetNet.
pub fn retnet_chunked(dims: &Dims, x: &RetNetInputs, chunk: usize) -> Result<LinearOutput> {
    let sz = dims.check()?;
    let g = retnet_gates(dims.batch, dims.seq, sz.map.hs)?;
    simple_gla_chunked(dims, &simple(x, &g), chunk)
}

fn simple<'a>(x: &RetNetInputs<'a>, g: &'a [f32]) -> SimpleGlaInputs<'a> {
    SimpleGlaInputs { q: x.q, k: x.k, v: x.v, g, scale: x.scale, initial_state: x.initial_state }
}

#[cfg(test)]
mod tests {
    use super::super::testutil::*;
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn gammas() {
        let lg = retnet_log_gammas(3);
        for (h, x) in lg.iter().enumerate() {
            let want = (1.0 - 2f64.powi(-5 - h as i32)).ln();
            assert!((*x as f64 - want).abs() < 1e-7 * want.abs(), "{h}: {x} vs {want}");
        }
        assert_eq!(retnet_gates(2, 2, 3).unwrap(), [lg.clone(), lg.clone(), lg.clone(), lg].concat());
    }

    #[test]
    fn goldens() {
        for name in golden_names("retnet_") {
            let gd = Golden::load(&name);
            let dims = gd.dims();
            let x = RetNetInputs {
                q: gd.get("q"),
                k: gd.get("k"),
                v: gd.get("v"),
                scale: gd.scalar("scale"),
                initial_state: gd.opt("h0"),
            };
            gd.check(&format!("retnet recurrent {name}"), &retnet_recurrent(&dims, &x).unwrap());
            for chunk in [64, 16, 5] {
                gd.check(&format!("retnet chunked({chunk}) {name}"), &retnet_chunked(&dims, &x, chunk).unwrap());
            }
            // The per-head gamma matters: using the gamma of the next head is caught.
            let sz = dims.check().unwrap();
            let lg = retnet_log_gammas(sz.map.hs + 1);
            let g: Vec<f32> = (0..sz.gate).map(|i| lg[i % sz.map.hs + 1]).collect();
            let bad = simple_gla_chunked(&dims, &simple(&x, &g), 64).unwrap();
            gd.check_differs(&format!("retnet next head's gamma {name}"), &bad);
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 32, ..ProptestConfig::default() })]

        #[test]
        fn equals_simple_gla_with_log_gamma(dims in arb_dims(), chunk in 1usize..20, seed in 0u64..1000) {
            let c = Case::random(&dims, seed, -1.0);
            let hs = dims.k_heads.max(dims.v_heads);
            let lg = retnet_log_gammas(hs);
            let g: Vec<f32> = (0..c.g.len()).map(|i| lg[i % hs]).collect();
            let x = RetNetInputs { q: &c.q, k: &c.k, v: &c.v, scale: c.scale, initial_state: Some(&c.h0) };
            let sx = SimpleGlaInputs { q: &c.q, k: &c.k, v: &c.v, g: &g, scale: c.scale, initial_state: Some(&c.h0) };
            prop_assert_eq!(retnet_recurrent(&dims, &x).unwrap(), simple_gla_recurrent(&dims, &sx).unwrap());
            let a = retnet_chunked(&dims, &x, chunk).unwrap();
            let r = retnet_recurrent(&dims, &x).unwrap();
            prop_assert!(rel_rms(&a.o, &r.o) < 2e-5 && rel_rms(&a.state, &r.state) < 2e-5);
        }
    }
}
