//! DeltaNet: `linear-attention.md` table row "DeltaNet" — Gated DeltaNet without the decay
//! (`g = 0`), computed by the Gated DeltaNet kernels of [`super::gated_delta`] with no gate:
//! ```text
//! u_t = beta_t (v_t - S_{t-1}^T k_t);  S_t = S_{t-1} + k_t u_t^T;  o_t = S_t^T (scale q_t)
//! ```
//! Chunked: the same WY / UT steps with `D = 1`. `g == 0` is the numerically delicate corner
//! of the delta rule (no forgetting), tested against fla's `delta_rule_recurrence`.
//! Layouts as Gated DeltaNet: q `[B,T,Hq,dk]`, k `[B,T,Hk,dk]`, v `[B,T,Hv,dv]`, beta
//! `[B,T,Hs]`, state `[B,Hs,dk,dv]`, output `[B,T,Ho,dv]`.
use super::gated_delta::delta_family;
use super::{Dims, LinearOutput};
use crate::error::Result;

/// Inputs of a DeltaNet call.
#[derive(Clone, Copy, Debug)]
pub struct DeltaInputs<'a> {
    pub q: &'a [f32],
    pub k: &'a [f32],
    pub v: &'a [f32],
    /// `[B, T, Hs]`.
    pub beta: &'a [f32],
    pub scale: f32,
    /// `[B, Hs, dk, dv]`; zeros when absent.
    pub initial_state: Option<&'a [f32]>,
}

/// Token-by-token DeltaNet.
pub fn delta_rule_recurrent(dims: &Dims, x: &DeltaInputs) -> Result<LinearOutput> {
    delta_family(dims, x.q, x.k, x.v, None, x.beta, x.scale, x.initial_state, None)
}

/// Chunked DeltaNet with chunk length `chunk`.
pub fn delta_rule_chunked(dims: &Dims, x: &DeltaInputs, chunk: usize) -> Result<LinearOutput> {
    delta_family(dims, x.q, x.k, x.v, None, x.beta, x.scale, x.initial_state, Some(chunk))
}

#[cfg(test)]
mod tests {
    use super::super::gated_delta::{gated_delta_chunked, gated_delta_recurrent, GatedDeltaInputs};
    use super::super::testutil::*;
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn goldens() {
        for name in golden_names("delta_") {
            let gd = Golden::load(&name);
            let dims = gd.dims();
            let x = DeltaInputs {
                q: gd.get("q"),
                k: gd.get("k"),
                v: gd.get("v"),
                beta: gd.get("beta"),
                scale: gd.scalar("scale"),
                initial_state: gd.opt("h0"),
            };
            gd.check(&format!("delta recurrent {name}"), &delta_rule_recurrent(&dims, &x).unwrap());
            for chunk in [64, 32, 7] {
                gd.check(&format!("delta chunked({chunk}) {name}"), &delta_rule_chunked(&dims, &x, chunk).unwrap());
            }
            // A small decay must be visible: the comparison is sensitive to the gate.
            let g = vec![-0.05f32; dims.check().unwrap().gate];
            let gx = GatedDeltaInputs {
                q: x.q,
                k: x.k,
                v: x.v,
                g: &g,
                beta: x.beta,
                scale: x.scale,
                initial_state: x.initial_state,
            };
            if dims.seq > 1 {
                gd.check_differs(&format!("delta with a decay {name}"), &gated_delta_chunked(&dims, &gx, 64).unwrap());
            }
            // Perturbing beta of one token is visible too.
            let mut beta = x.beta.to_vec();
            beta[0] *= 0.5;
            gd.check_differs(
                &format!("delta perturbed beta {name}"),
                &delta_rule_recurrent(&dims, &DeltaInputs { beta: &beta, ..x }).unwrap(),
            );
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 32, ..ProptestConfig::default() })]

        #[test]
        fn equals_gated_delta_with_zero_gate(dims in arb_dims(), chunk in 1usize..20, seed in 0u64..1000) {
            let c = Case::random(&dims, seed, 0.0);
            let zero = vec![0.0f32; c.g.len()];
            let gx = GatedDeltaInputs { g: &zero, ..c.gdn() };
            let x = DeltaInputs { q: &c.q, k: &c.k, v: &c.v, beta: &c.beta, scale: c.scale, initial_state: Some(&c.h0) };
            let a = delta_rule_recurrent(&dims, &x).unwrap();
            let b = gated_delta_recurrent(&dims, &gx).unwrap();
            prop_assert_eq!(&a, &b);
            let ac = delta_rule_chunked(&dims, &x, chunk).unwrap();
            let bc = gated_delta_chunked(&dims, &gx, chunk).unwrap();
            prop_assert!(rel_rms(&ac.o, &bc.o) < 1e-6 && rel_rms(&ac.state, &bc.state) < 1e-6);
            prop_assert!(rel_rms(&ac.o, &a.o) < 2e-5 && rel_rms(&ac.state, &a.state) < 2e-5);
        }

        #[test]
        fn decode_equals_one_pass(dims in arb_dims(), seed in 0u64..1000) {
            let c = Case::random(&dims, seed, 0.0);
            let x = DeltaInputs { q: &c.q, k: &c.k, v: &c.v, beta: &c.beta, scale: c.scale, initial_state: Some(&c.h0) };
            let full = delta_rule_chunked(&dims, &x, 16).unwrap();
            let (o, state) = decode_steps(&dims, &c, |d, s, st| {
                delta_rule_recurrent(d, &DeltaInputs { q: &s.q, k: &s.k, v: &s.v, beta: &s.beta, scale: s.scale, initial_state: Some(st) }).unwrap()
            });
            prop_assert!(rel_rms(&o, &full.o) < 2e-5 && rel_rms(&state, &full.state) < 2e-5);
        }
    }
}
