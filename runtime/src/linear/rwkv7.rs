//! RWKV7 as a diagonal-plus-low-rank (DPLR) delta rule: `linear-attention.md` table row
//! "RWKV7 (DPLR)", following fla's `generalized_delta_rule/dplr/naive.py`
//! (`dplr_recurrence`, `dplr_chunkwise`) and `rwkv7/fused_recurrent.py` exactly:
//! ```text
//! kv  = k_t v_t^T + b_t (a_t^T S_{t-1})       # a^T S reads the undecayed state
//! S_t = Diag(exp(w_t)) S_{t-1} + kv
//! o_t = S_t^T (scale q_t)                     # q is RWKV's r; the fla RWKV7 layer uses scale 1
//! ```
//! RWKV7 parameterization ([`rwkv7_log_decay`], [`rwkv7_ab`]): `w = -0.6065 sigmoid(lora)`,
//! `a = -kk`, `b = kk * iclr` (kk the L2-normalized "removal key", the caller's).
//!
//! Chunked form (as `dplr_chunkwise`, with forward substitution instead of an explicit
//! inverse), chunk `C`, `Γ_i` = chunk-local inclusive cumulative sum of `w` (vector),
//! `Γ_{-1} = 0`, `S` the state entering the chunk, `u_j = S_{j-1}^T a_j`:
//! ```text
//! u_j = (a_j * exp(Γ_{j-1}))^T S + sum_{m<j} [a_j . (k_m * exp(Γ_{j-1} - Γ_m))] v_m
//!                                + sum_{m<j} [a_j . (b_m * exp(Γ_{j-1} - Γ_m))] u_m
//! o_i = (q_i * exp(Γ_i))^T S + sum_{j<=i} [q_i . (k_j * exp(Γ_i - Γ_j))] v_j
//!                            + sum_{j<=i} [q_i . (b_j * exp(Γ_i - Γ_j))] u_j
//! S  <- exp(Γ_last) * S + sum_j (k_j * exp(Γ_last - Γ_j)) v_j^T + (b_j * exp(Γ_last - Γ_j)) u_j^T
//! ```
//! Every exponent is a later-minus-earlier difference of cumulative log decays, `<= 0` with
//! `w <= 0` (checked).
//!
//! Layouts: r (q) `[B,T,Hq,dk]`, k `[B,T,Hk,dk]`, v `[B,T,Hv,dv]`, w, a, b `[B,T,Hs,dk]`
//! (per state head), state `[B,Hs,dk,dv]`, output `[B,T,Ho,dv]`; heads as [`super::heads`].
use super::gated_delta::{read_state, Head};
use super::heads::{gather, gather_queries, run_heads};
use super::{check_chunk, check_len, check_log_decay, check_state, decayed_dot, dexp, Dims, LinearOutput};
use crate::error::{Result, RuntimeError};

/// Inputs of an RWKV7 / DPLR call.
#[derive(Clone, Copy, Debug)]
pub struct Rwkv7Inputs<'a> {
    /// The receptance (query) `[B, T, Hq, dk]`.
    pub r: &'a [f32],
    /// Log decay `[B, T, Hs, dk]`, `<= 0`.
    pub w: &'a [f32],
    pub k: &'a [f32],
    pub v: &'a [f32],
    /// `[B, T, Hs, dk]`.
    pub a: &'a [f32],
    /// `[B, T, Hs, dk]`.
    pub b: &'a [f32],
    pub scale: f32,
    /// `[B, Hs, dk, dv]`; zeros when absent.
    pub initial_state: Option<&'a [f32]>,
}

/// RWKV7's log decay `w = -exp(-0.5) * sigmoid(x)` (`-0.6065306597126334 sigmoid`).
pub fn rwkv7_log_decay(x: &[f32]) -> Vec<f32> {
    x.iter().map(|v| -0.606_530_66 / (1.0 + (-v).exp())).collect()
}

/// RWKV7's low-rank pair: `a = -kk`, `b = kk * iclr` (same shapes).
pub fn rwkv7_ab(kk: &[f32], iclr: &[f32]) -> Result<(Vec<f32>, Vec<f32>)> {
    if kk.len() != iclr.len() {
        return Err(RuntimeError::Input {
            name: "iclr".into(),
            msg: format!("has {} elements, kk has {}", iclr.len(), kk.len()),
        });
    }
    Ok((kk.iter().map(|x| -x).collect(), kk.iter().zip(iclr).map(|(x, y)| x * y).collect()))
}

/// Token-by-token DPLR recurrence (fla `dplr_recurrence` op order).
pub fn rwkv7_recurrent(dims: &Dims, x: &Rwkv7Inputs) -> Result<LinearOutput> {
    rwkv7(dims, x, None)
}

/// Chunked DPLR (see the module header).
pub fn rwkv7_chunked(dims: &Dims, x: &Rwkv7Inputs, chunk: usize) -> Result<LinearOutput> {
    rwkv7(dims, x, Some(chunk))
}

fn rwkv7(dims: &Dims, x: &Rwkv7Inputs, chunk: Option<usize>) -> Result<LinearOutput> {
    let sz = dims.check()?;
    check_len("r", x.r, sz.q)?;
    check_len("k", x.k, sz.k)?;
    check_len("v", x.v, sz.v)?;
    check_len("w", x.w, sz.key_gate)?;
    check_len("a", x.a, sz.key_gate)?;
    check_len("b", x.b, sz.key_gate)?;
    check_state(x.initial_state, sz.state)?;
    if let Some(c) = chunk {
        check_chunk(c)?;
        check_log_decay("w", x.w)?;
    }
    let map = sz.map;
    let head = Head { seq: dims.seq, dk: dims.dk, dv: dims.dv, group: map.group(), scale: x.scale };
    Ok(run_heads(dims, &map, x.initial_state, |b, s, st| {
        let h = HeadIn {
            q: gather_queries(x.r, dims, &map, b, s),
            k: gather(x.k, dims.seq, map.hk, dims.dk, b, map.k_head(s)),
            v: gather(x.v, dims.seq, map.hv, dims.dv, b, map.v_head(s)),
            w: gather(x.w, dims.seq, map.hs, dims.dk, b, s),
            a: gather(x.a, dims.seq, map.hs, dims.dk, b, s),
            b: gather(x.b, dims.seq, map.hs, dims.dk, b, s),
        };
        match chunk {
            None => recurrent_head(&head, &h, st),
            Some(c) => chunked_head(&head, &h, c, st),
        }
    }))
}

/// One state head's inputs: q `[R, T, dk]`, k, w, a, b `[T, dk]`, v `[T, dv]`.
struct HeadIn {
    q: Vec<f32>,
    k: Vec<f32>,
    v: Vec<f32>,
    w: Vec<f32>,
    a: Vec<f32>,
    b: Vec<f32>,
}

fn recurrent_head(h: &Head, x: &HeadIn, s: &mut [f32]) -> Vec<f32> {
    let (seq, dk, dv) = (h.seq, h.dk, h.dv);
    let qs: Vec<f32> = x.q.iter().map(|v| v * h.scale).collect();
    let mut out = vec![0.0f32; h.group * seq * dv];
    let mut sa = vec![0.0f32; dv];
    for t in 0..seq {
        let (kr, vr) = (t * dk..(t + 1) * dk, t * dv..(t + 1) * dv);
        let (kt, vt) = (&x.k[kr.clone()], &x.v[vr]);
        let (wt, at, bt) = (&x.w[kr.clone()], &x.a[kr.clone()], &x.b[kr]);
        // a^T S on the state before this token's decay.
        read_state(s, at, dv, &mut sa);
        for i in 0..dk {
            let e = wt[i].exp();
            for (j, sij) in s[i * dv..(i + 1) * dv].iter_mut().enumerate() {
                *sij = *sij * e + (kt[i] * vt[j] + sa[j] * bt[i]);
            }
        }
        for r in 0..h.group {
            let o = r * seq + t;
            read_state(s, &qs[o * dk..(o + 1) * dk], dv, &mut out[o * dv..(o + 1) * dv]);
        }
    }
    out
}

fn axpy(y: &mut [f32], a: f32, x: &[f32]) {
    for (yi, xi) in y.iter_mut().zip(x) {
        *yi += a * xi;
    }
}

fn chunked_head(h: &Head, x: &HeadIn, chunk: usize, s: &mut [f32]) -> Vec<f32> {
    let (seq, dk, dv) = (h.seq, h.dk, h.dv);
    let qs: Vec<f32> = x.q.iter().map(|v| v * h.scale).collect();
    let mut out = vec![0.0f32; h.group * seq * dv];
    let c = chunk.min(seq.max(1));
    // gc row 0 = 0 (Γ_{-1}), row i + 1 = Γ_i.
    let mut gc = vec![0.0f64; (c + 1) * dk];
    let mut u = vec![0.0f32; c * dv];
    let mut tmp = vec![0.0f32; dk];
    let mut start = 0;
    while start < seq {
        let l = c.min(seq - start);
        for i in 0..l {
            for d in 0..dk {
                gc[(i + 1) * dk + d] = gc[i * dk + d] + x.w[(start + i) * dk + d] as f64;
            }
        }
        let gam = |i: usize| &gc[(i + 1) * dk..(i + 2) * dk]; // Γ_i
        let gprev = |i: usize| &gc[i * dk..(i + 1) * dk]; // Γ_{i-1}
        let kr = |i: usize| (start + i) * dk..(start + i + 1) * dk;
        let krow = |i: usize| &x.k[kr(i)];
        let vrow = |i: usize| &x.v[(start + i) * dv..(start + i + 1) * dv];
        let arow = |i: usize| &x.a[kr(i)];
        let brow = |i: usize| &x.b[kr(i)];
        // u_j by forward substitution.
        for j in 0..l {
            for (t, (aj, gp)) in tmp.iter_mut().zip(arow(j).iter().zip(gprev(j))) {
                *t = aj * dexp(*gp);
            }
            let (done, rest) = u.split_at_mut(j * dv);
            let uj = &mut rest[..dv];
            read_state(s, &tmp, dv, uj);
            for m in 0..j {
                axpy(uj, decayed_dot(arow(j), krow(m), gprev(j), gam(m)), vrow(m));
                axpy(uj, decayed_dot(arow(j), brow(m), gprev(j), gam(m)), &done[m * dv..(m + 1) * dv]);
            }
        }
        // Outputs.
        for r in 0..h.group {
            for i in 0..l {
                let at = r * seq + start + i;
                let qi = &qs[at * dk..(at + 1) * dk];
                for (t, (qd, g)) in tmp.iter_mut().zip(qi.iter().zip(gam(i))) {
                    *t = qd * dexp(*g);
                }
                let oi = &mut out[at * dv..(at + 1) * dv];
                read_state(s, &tmp, dv, oi);
                for j in 0..=i {
                    axpy(oi, decayed_dot(qi, krow(j), gam(i), gam(j)), vrow(j));
                    axpy(oi, decayed_dot(qi, brow(j), gam(i), gam(j)), &u[j * dv..(j + 1) * dv]);
                }
            }
        }
        // State.
        let gl = gam(l - 1);
        for (srow, g) in s.chunks_exact_mut(dv).zip(gl) {
            let e = dexp(*g);
            srow.iter_mut().for_each(|v| *v *= e);
        }
        for j in 0..l {
            let uj = &u[j * dv..(j + 1) * dv];
            for d in 0..dk {
                let f = dexp(gl[d] - gam(j)[d]);
                let srow = &mut s[d * dv..(d + 1) * dv];
                axpy(srow, krow(j)[d] * f, vrow(j));
                axpy(srow, brow(j)[d] * f, uj);
            }
        }
        start += l;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::super::gated_delta::gated_delta_recurrent;
    use super::super::testutil::*;
    use super::*;
    use proptest::prelude::*;

    fn of(c: &Case) -> Rwkv7Inputs<'_> {
        Rwkv7Inputs {
            r: &c.q,
            w: &c.gk,
            k: &c.k,
            v: &c.v,
            a: &c.a,
            b: &c.b,
            scale: c.scale,
            initial_state: Some(&c.h0),
        }
    }

    #[test]
    fn goldens() {
        for name in golden_names("rwkv7_") {
            let gd = Golden::load(&name);
            let dims = gd.dims_of("r", "k", "v");
            let x = Rwkv7Inputs {
                r: gd.get("r"),
                w: gd.get("w"),
                k: gd.get("k"),
                v: gd.get("v"),
                a: gd.get("a"),
                b: gd.get("b"),
                scale: gd.scalar("scale"),
                initial_state: gd.opt("h0"),
            };
            gd.check(&format!("rwkv7 recurrent {name}"), &rwkv7_recurrent(&dims, &x).unwrap());
            for chunk in [64, 16, 5] {
                gd.check(&format!("rwkv7 chunked({chunk}) {name}"), &rwkv7_chunked(&dims, &x, chunk).unwrap());
            }
            let shifted = shift_tokens(x.w, dims.batch, dims.seq);
            if shifted != x.w {
                gd.check_differs(
                    &format!("rwkv7 shifted w {name}"),
                    &rwkv7_chunked(&dims, &Rwkv7Inputs { w: &shifted, ..x }, 64).unwrap(),
                );
            }
            // Reading a^T S after the decay instead of before is caught.
            let sz = dims.check().unwrap();
            let a_decayed: Vec<f32> = x.a.iter().zip(x.w).map(|(a, w)| a * w.exp()).collect();
            if dims.seq > 1 || x.initial_state.is_some() {
                let bad = rwkv7_recurrent(&dims, &Rwkv7Inputs { a: &a_decayed, ..x }).unwrap();
                gd.check_differs(&format!("rwkv7 a^T S after decay {name}"), &bad);
            }
            assert_eq!(sz.key_gate, x.w.len());
        }
    }

    #[test]
    fn helpers() {
        let w = rwkv7_log_decay(&[0.0, 50.0]);
        assert!((w[0] + 0.303_265_33).abs() < 1e-6 && (w[1] + 0.606_530_66).abs() < 1e-6);
        let (a, b) = rwkv7_ab(&[0.5, -1.0], &[0.5, 0.25]).unwrap();
        assert_eq!((a, b), (vec![-0.5, 1.0], vec![0.25, -0.25]));
        assert!(rwkv7_ab(&[0.0], &[]).is_err());
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 40, ..ProptestConfig::default() })]

        #[test]
        fn recurrent_equals_chunked(dims in arb_dims(), chunk in 1usize..20, seed in 0u64..1000, gmin in -4.0f32..0.0) {
            let c = Case::random(&dims, seed, gmin);
            let r = rwkv7_recurrent(&dims, &of(&c)).unwrap();
            let ch = rwkv7_chunked(&dims, &of(&c), chunk).unwrap();
            prop_assert!(rel_rms(&ch.o, &r.o) < 2e-5 && rel_rms(&ch.state, &r.state) < 2e-5,
                "o {} state {}", rel_rms(&ch.o, &r.o), rel_rms(&ch.state, &r.state));
        }

        #[test]
        fn decode_equals_one_pass(dims in arb_dims(), seed in 0u64..1000) {
            let c = Case::random(&dims, seed, -1.0);
            let full = rwkv7_chunked(&dims, &of(&c), 8).unwrap();
            let (o, state) = decode_steps(&dims, &c, |d, s, st| {
                rwkv7_recurrent(d, &Rwkv7Inputs { initial_state: Some(st), ..of(s) }).unwrap()
            });
            prop_assert!(rel_rms(&o, &full.o) < 2e-5 && rel_rms(&state, &full.state) < 2e-5);
        }

        #[test]
        fn head_mapping_equals_explicit_repetition(dims in arb_dims(), seed in 0u64..1000) {
            let c = Case::random(&dims, seed, -1.0);
            let e = c.expanded(&dims);
            let got = rwkv7_chunked(&dims, &of(&c), 8).unwrap();
            let want = rwkv7_chunked(&e.dims, &of(&e.case), 8).unwrap();
            prop_assert!(rel_rms(&got.o, &want.o) < 1e-6 && rel_rms(&got.state, &e.state_of(&want.state)) < 1e-6);
        }

        /// Spec equivalence: GDN == DPLR with a = -k exp(g), b = beta k, v' = beta v, w = g.
        #[test]
        fn gated_delta_is_dplr(dims in arb_dims(), seed in 0u64..1000) {
            let c = Case::random(&dims, seed, -1.5);
            let e = c.expanded(&dims);
            let (d, x) = (&e.dims, &e.case);
            let (dk, dv) = (d.dk, d.dv);
            let w: Vec<f32> = (0..x.gk.len()).map(|i| x.g[i / dk]).collect();
            let a: Vec<f32> = (0..w.len()).map(|i| -x.k[i] * w[i].exp()).collect();
            let b: Vec<f32> = (0..w.len()).map(|i| x.beta[i / dk] * x.k[i]).collect();
            let v: Vec<f32> = (0..x.v.len()).map(|i| x.beta[i / dv] * x.v[i]).collect();
            let dplr = Rwkv7Inputs { r: &x.q, w: &w, k: &x.k, v: &v, a: &a, b: &b, scale: x.scale, initial_state: Some(&x.h0) };
            let want = gated_delta_recurrent(d, &x.gdn()).unwrap();
            let got = rwkv7_recurrent(d, &dplr).unwrap();
            prop_assert!(rel_rms(&got.o, &want.o) < 2e-5 && rel_rms(&got.state, &want.state) < 2e-5);
            let got = rwkv7_chunked(d, &dplr, 7).unwrap();
            prop_assert!(rel_rms(&got.o, &want.o) < 2e-5 && rel_rms(&got.state, &want.state) < 2e-5);
        }
    }
}
