//! Mamba2 / SSD: `linear-attention.md` table row "Mamba2 (SSD)":
//! ```text
//! h_t = exp(A dt_t) h_{t-1} + dt_t x_t B_t^T;   y_t = h_t C_t + D x_t
//! ```
//! computed as simple GLA ([`super::gla`]) with `q = C`, `k = B`, `v = x * dt`,
//! `g = A * dt` (floored at [`LOG_DECAY_FLOOR`]), scale 1, plus the `D * x` skip.
//! Parameterization helpers: `dt = softplus(raw + dt_bias)` ([`mamba2_dt`]) and
//! `A = -exp(A_log)` with `exp` clamped to a finite value ([`mamba2_a`]).
//!
//! Layouts, with `G` groups of B/C (mamba's `ngroups`), `H` heads, state size `N` and head
//! dim `P`: x `[B,T,H,P]`, dt `[B,T,H]`, A and D `[H]`, B and C `[B,T,G,N]`, output
//! `[B,T,H,P]`. In [`Dims`] that is `q_heads = k_heads = G`, `v_heads = H` (`G` divides `H`:
//! head `h` uses group `h * G / H`, mamba's convention), `dk = N`, `dv = P`.
//! The state is `[B, H, N, P]` (fla's `[.., K, V]`): the transpose of mamba_ssm's
//! `ssm_state [B, H, P, N]`.
use super::gla::{simple_gla_chunked, simple_gla_recurrent, SimpleGlaInputs};
use super::{check_len, dims_err, softplus, Dims, LinearOutput, LOG_DECAY_FLOOR};
use crate::error::{Result, RuntimeError};

/// Inputs of a Mamba2 SSD call (layouts in the module header).
#[derive(Clone, Copy, Debug)]
pub struct Mamba2Inputs<'a> {
    /// `[B, T, H, P]`.
    pub x: &'a [f32],
    /// Step sizes after softplus, `[B, T, H]`.
    pub dt: &'a [f32],
    /// `A = -exp(A_log)`, `[H]`.
    pub a: &'a [f32],
    /// `B` (the keys), `[B, T, G, N]`.
    pub b: &'a [f32],
    /// `C` (the queries), `[B, T, G, N]`.
    pub c: &'a [f32],
    /// Skip `D`, `[H]`; none = 0.
    pub d: Option<&'a [f32]>,
    /// `[B, H, N, P]`; zeros when absent.
    pub initial_state: Option<&'a [f32]>,
}

/// `dt = softplus(raw + dt_bias[h])` for `raw [.., H]`.
pub fn mamba2_dt(raw: &[f32], dt_bias: &[f32]) -> Result<Vec<f32>> {
    let h = dt_bias.len();
    if h == 0 || !raw.len().is_multiple_of(h) {
        return Err(RuntimeError::Input {
            name: "dt".into(),
            msg: format!("{} elements do not split into rows of {h} heads", raw.len()),
        });
    }
    Ok(raw.iter().enumerate().map(|(i, x)| softplus(x + dt_bias[i % h])).collect())
}

/// `A = -exp(A_log)`, `exp` clamped to `f32::MAX`.
pub fn mamba2_a(a_log: &[f32]) -> Vec<f32> {
    a_log.iter().map(|x| -x.exp().min(f32::MAX)).collect()
}

/// Token-by-token Mamba2 SSD.
pub fn mamba2_recurrent(dims: &Dims, x: &Mamba2Inputs) -> Result<LinearOutput> {
    mamba2(dims, x, None)
}

/// Chunked Mamba2 SSD (the SSD chunk algorithm = chunked simple GLA).
pub fn mamba2_chunked(dims: &Dims, x: &Mamba2Inputs, chunk: usize) -> Result<LinearOutput> {
    mamba2(dims, x, Some(chunk))
}

fn mamba2(dims: &Dims, x: &Mamba2Inputs, chunk: Option<usize>) -> Result<LinearOutput> {
    if dims.q_heads != dims.k_heads || dims.k_heads > dims.v_heads {
        return Err(dims_err(format!(
            "Mamba2 needs q_heads = k_heads = groups <= v_heads = heads, got q {}, k {}, v {}",
            dims.q_heads, dims.k_heads, dims.v_heads
        )));
    }
    let sz = dims.check()?;
    let h = dims.v_heads;
    check_len("x", x.x, sz.v)?;
    check_len("dt", x.dt, sz.gate)?;
    check_len("B", x.b, sz.k)?;
    check_len("C", x.c, sz.q)?;
    check_len("A", x.a, h)?;
    if let Some(d) = x.d {
        check_len("D", d, h)?;
    }
    let p = dims.dv;
    let v: Vec<f32> = x.x.iter().enumerate().map(|(i, xv)| xv * x.dt[i / p]).collect();
    let g: Vec<f32> =
        x.dt.iter()
            .enumerate()
            .map(|(i, dt)| {
                let g = x.a[i % h] * dt;
                if g < LOG_DECAY_FLOOR {
                    LOG_DECAY_FLOOR
                } else {
                    g
                }
            })
            .collect();
    let s = SimpleGlaInputs { q: x.c, k: x.b, v: &v, g: &g, scale: 1.0, initial_state: x.initial_state };
    let mut out = match chunk {
        None => simple_gla_recurrent(dims, &s)?,
        Some(c) => simple_gla_chunked(dims, &s, c)?,
    };
    if let Some(d) = x.d {
        for (i, (y, xv)) in out.o.iter_mut().zip(x.x).enumerate() {
            *y += d[(i / p) % h] * xv;
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::super::testutil::*;
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn goldens() {
        for name in golden_names("mamba2_") {
            let gd = Golden::load(&name);
            let dims = gd.dims_of("C", "B", "x");
            let dt = mamba2_dt(gd.get("dt_raw"), gd.get("dt_bias")).unwrap();
            let a = mamba2_a(gd.get("A_log"));
            let x = Mamba2Inputs {
                x: gd.get("x"),
                dt: &dt,
                a: &a,
                b: gd.get("B"),
                c: gd.get("C"),
                d: gd.opt("D"),
                initial_state: gd.opt("h0"),
            };
            gd.check(&format!("mamba2 recurrent {name}"), &mamba2_recurrent(&dims, &x).unwrap());
            for chunk in [64, 16, 5] {
                gd.check(&format!("mamba2 chunked({chunk}) {name}"), &mamba2_chunked(&dims, &x, chunk).unwrap());
            }
            let shifted = shift_tokens(&dt, dims.batch, dims.seq);
            gd.check_differs(
                &format!("mamba2 shifted dt {name}"),
                &mamba2_chunked(&dims, &Mamba2Inputs { dt: &shifted, ..x }, 64).unwrap(),
            );
            let d2: Vec<f32> = x.d.unwrap_or(&[]).iter().map(|d| d + 0.5).collect();
            if x.d.is_some() {
                gd.check_differs(
                    &format!("mamba2 perturbed D {name}"),
                    &mamba2_recurrent(&dims, &Mamba2Inputs { d: Some(&d2), ..x }).unwrap(),
                );
            }
        }
    }

    #[test]
    fn helpers() {
        let dt = mamba2_dt(&[0.0, 30.0, -1.0, 2.0], &[0.5, -1.0]).unwrap();
        assert!((dt[0] - 0.5f32.exp().ln_1p()).abs() < 1e-6);
        assert_eq!(dt[1], 29.0);
        assert!(mamba2_dt(&[0.0; 3], &[0.0; 2]).is_err());
        assert_eq!(mamba2_a(&[0.0, 1000.0]), [-1.0, -f32::MAX]);
        let dims = Dims::new(1, 2, 2, 3, 4);
        let bad = Mamba2Inputs { x: &[], dt: &[], a: &[], b: &[], c: &[], d: None, initial_state: None };
        assert!(mamba2_recurrent(&dims.with_heads(2, 1, 2), &bad).is_err());
        assert!(mamba2_recurrent(&dims.with_heads(2, 2, 1), &bad).is_err());
        assert!(mamba2_recurrent(&dims, &bad).is_err());
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 32, ..ProptestConfig::default() })]

        #[test]
        fn recurrent_equals_chunked_and_decode(batch in 1usize..3, seq in 0usize..40, (g, h) in prop::sample::select(vec![(1, 1), (1, 3), (2, 4)]), n in 1usize..9, p in 1usize..9, chunk in 1usize..20, seed in 0u64..1000) {
            let dims = Dims { batch, seq, q_heads: g, k_heads: g, v_heads: h, dk: n, dv: p };
            let c = Case::random(&dims, seed, -1.0);
            let dt: Vec<f32> = c.beta.iter().map(|b| b * 0.5).collect();
            let a: Vec<f32> = (0..h).map(|i| -0.5 - i as f32).collect();
            let d: Vec<f32> = (0..h).map(|i| 0.25 * i as f32 + 0.1).collect();
            let x = Mamba2Inputs { x: &c.v, dt: &dt, a: &a, b: &c.k, c: &c.q, d: Some(&d), initial_state: Some(&c.h0) };
            let r = mamba2_recurrent(&dims, &x).unwrap();
            let ch = mamba2_chunked(&dims, &x, chunk).unwrap();
            prop_assert!(rel_rms(&ch.o, &r.o) < 2e-5 && rel_rms(&ch.state, &r.state) < 2e-5);
            let mut cd = c.clone();
            cd.beta = dt.clone();
            let (o, state) = decode_steps(&dims, &cd, |dd, s, st| {
                mamba2_recurrent(dd, &Mamba2Inputs { x: &s.v, dt: &s.beta, a: &a, b: &s.k, c: &s.q, d: Some(&d), initial_state: Some(st) }).unwrap()
            });
            prop_assert!(rel_rms(&o, &r.o) < 2e-5 && rel_rms(&state, &r.state) < 2e-5);
        }
    }
}
