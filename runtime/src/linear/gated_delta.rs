//! Gated DeltaNet (the mixer inside JetBlock): `linear-attention.md` table row "Gated
//! DeltaNet", sections "Gated delta rule, recurrent" and "Gated delta rule, chunked";
//! `jet-nemotron.md` §2 (per-token op order).
//!
//! Per state head, `S [dk, dv]` f32, `g_t <= 0` the log decay, `beta_t` the write strength:
//! ```text
//! q *= scale; S = S0 or 0
//! for t: S = S * exp(g_t)                  # decay first
//!        u = beta_t * (v_t - S^T k_t)
//!        S = S + outer(k_t, u)
//!        o_t = S^T q_t                      # read after write
//! ```
//! Chunked form (WY / UT transform), chunk `C` (default 64), local rows `i, j < L = min(C,
//! T - start)`, `G_i` = chunk-local cumulative sum of `g`, `D_ij = exp(G_i - G_j)`:
//! 1. `A_ij = beta_i (k_i . k_j) D_ij` for `i > j`, else 0 (strictly lower);
//! 2. `T = (I + A)^-1` by forward substitution (unit lower triangular);
//! 3. `W = T (beta * exp(G) * K)` `[L, dk]`, `U = T (beta * V)` `[L, dv]`;
//! 4. with `S` the state entering the chunk: `V_new = U - W S`;
//! 5. `O = scale [ (Q * exp(G)) S + tril_incl_diag(Q K^T * D) V_new ]`;
//! 6. `S <- exp(G_last) S + (K * exp(G_last - G))^T V_new`.
//!
//! The tail chunk simply has `L < C` rows: no gate past `T` is ever read. Every decay factor
//! is `exp(later - earlier)` of cumulative log decays (never a ratio of cumulative products),
//! so with `g <= 0` (checked) it is `<= 1`.
//!
//! Layouts: q `[B,T,Hq,dk]`, k `[B,T,Hk,dk]`, v `[B,T,Hv,dv]`, g and beta `[B,T,Hs]`, state
//! `[B,Hs,dk,dv]`, output `[B,T,Ho,dv]`; head mapping in [`super::heads`].
//! The same per-head chunk kernel without the delta part is simple GLA's (see [`super::gla`]).
use super::heads::{gather, gather_queries, run_heads};
use super::{
    check_chunk, check_len, check_log_decay, check_state, dexp, dot, softplus, Dims, LinearOutput, LOG_DECAY_FLOOR,
};
use crate::error::{Result, RuntimeError};

/// Inputs of a Gated DeltaNet call (layouts in the module header).
#[derive(Clone, Copy, Debug)]
pub struct GatedDeltaInputs<'a> {
    pub q: &'a [f32],
    pub k: &'a [f32],
    pub v: &'a [f32],
    /// Log decay `[B, T, Hs]`, `<= 0`.
    pub g: &'a [f32],
    /// `[B, T, Hs]`.
    pub beta: &'a [f32],
    pub scale: f32,
    /// `[B, Hs, dk, dv]`; zeros when absent.
    pub initial_state: Option<&'a [f32]>,
}

/// Token-by-token Gated DeltaNet in the spec's exact op order.
pub fn gated_delta_recurrent(dims: &Dims, x: &GatedDeltaInputs) -> Result<LinearOutput> {
    delta_family(dims, x.q, x.k, x.v, Some(x.g), x.beta, x.scale, x.initial_state, None)
}

/// Chunked (WY / UT transform) Gated DeltaNet with chunk length `chunk`.
pub fn gated_delta_chunked(dims: &Dims, x: &GatedDeltaInputs, chunk: usize) -> Result<LinearOutput> {
    delta_family(dims, x.q, x.k, x.v, Some(x.g), x.beta, x.scale, x.initial_state, Some(chunk))
}

/// Gated DeltaNet with a per-key-dimension decay (`x.g` is `[B, T, Hs, dk]`; row `i` of the
/// state decays by `exp(g_t[i])`, Kimi Delta Attention's gate). This is what the standard
/// ONNX `LinearAttention` computes for `update_rule = "gated_delta"` with a decay of width
/// `H * d_k`. Token by token: the op's `chunk_size` is a tuning hint, and any form gives these
/// values.
pub fn gated_delta_per_key_recurrent(dims: &Dims, x: &GatedDeltaInputs) -> Result<LinearOutput> {
    let sz = dims.check()?;
    check_len("q", x.q, sz.q)?;
    check_len("k", x.k, sz.k)?;
    check_len("v", x.v, sz.v)?;
    check_len("beta", x.beta, sz.gate)?;
    check_len("g", x.g, sz.key_gate)?;
    check_state(x.initial_state, sz.state)?;
    let map = sz.map;
    let head = Head { seq: dims.seq, dk: dims.dk, dv: dims.dv, group: map.group(), scale: x.scale };
    Ok(run_heads(dims, &map, x.initial_state, |b, s, st| {
        let qh = gather_queries(x.q, dims, &map, b, s);
        let kh = gather(x.k, dims.seq, map.hk, dims.dk, b, map.k_head(s));
        let vh = gather(x.v, dims.seq, map.hv, dims.dv, b, map.v_head(s));
        let bh = gather(x.beta, dims.seq, map.hs, 1, b, s);
        let gh = gather(x.g, dims.seq, map.hs, dims.dk, b, s);
        recurrent_head(&head, &qh, &kh, &vh, Some(Gate::PerKey(&gh)), &bh, st)
    }))
}

/// JetBlock's / fla's gate: `g = -exp(A_log[h]) * softplus(a + dt_bias[h])` for `a [.., H]`,
/// with `exp(A_log)` clamped to a finite value and `g` floored at [`LOG_DECAY_FLOOR`] (NaN
/// stays NaN).
pub fn gated_delta_log_decay(a: &[f32], a_log: &[f32], dt_bias: &[f32]) -> Result<Vec<f32>> {
    let h = a_log.len();
    if h == 0 || dt_bias.len() != h || !a.len().is_multiple_of(h) {
        return Err(RuntimeError::Input {
            name: "a".into(),
            msg: format!(
                "{} elements with A_log of {h} and dt_bias of {} heads: need [.., H] and H heads each",
                a.len(),
                dt_bias.len()
            ),
        });
    }
    Ok(a.iter()
        .enumerate()
        .map(|(i, &x)| {
            let hh = i % h;
            let g = -a_log[hh].exp().min(f32::MAX) * softplus(x + dt_bias[hh]);
            if g < LOG_DECAY_FLOOR {
                LOG_DECAY_FLOOR
            } else {
                g
            }
        })
        .collect())
}

/// Shared driver of DeltaNet (`g = None`) and Gated DeltaNet; `chunk = None` is recurrent.
#[allow(clippy::too_many_arguments)]
pub(crate) fn delta_family(
    dims: &Dims,
    q: &[f32],
    k: &[f32],
    v: &[f32],
    g: Option<&[f32]>,
    beta: &[f32],
    scale: f32,
    initial_state: Option<&[f32]>,
    chunk: Option<usize>,
) -> Result<LinearOutput> {
    let sz = dims.check()?;
    check_len("q", q, sz.q)?;
    check_len("k", k, sz.k)?;
    check_len("v", v, sz.v)?;
    check_len("beta", beta, sz.gate)?;
    if let Some(g) = g {
        check_len("g", g, sz.gate)?;
    }
    check_state(initial_state, sz.state)?;
    if let Some(c) = chunk {
        check_chunk(c)?;
        if let Some(g) = g {
            check_log_decay("g", g)?;
        }
    }
    let map = sz.map;
    let head = Head { seq: dims.seq, dk: dims.dk, dv: dims.dv, group: map.group(), scale };
    Ok(run_heads(dims, &map, initial_state, |b, s, st| {
        let qh = gather_queries(q, dims, &map, b, s);
        let kh = gather(k, dims.seq, map.hk, dims.dk, b, map.k_head(s));
        let vh = gather(v, dims.seq, map.hv, dims.dv, b, map.v_head(s));
        let bh = gather(beta, dims.seq, map.hs, 1, b, s);
        let gh = g.map(|g| gather(g, dims.seq, map.hs, 1, b, s));
        match chunk {
            None => recurrent_head(&head, &qh, &kh, &vh, gh.as_deref().map(Gate::PerHead), &bh, st),
            Some(c) => chunked_head(&head, &qh, &kh, &vh, gh.as_deref(), Some(&bh), c, st),
        }
    }))
}

/// Sizes of one per-head kernel call: `group` output heads read the state.
pub(crate) struct Head {
    pub seq: usize,
    pub dk: usize,
    pub dv: usize,
    pub group: usize,
    pub scale: f32,
}

/// `out = S^T q` for `S [dk, dv]`.
pub(crate) fn read_state(s: &[f32], q: &[f32], dv: usize, out: &mut [f32]) {
    out.fill(0.0);
    for (qi, row) in q.iter().zip(s.chunks_exact(dv)) {
        for (o, x) in out.iter_mut().zip(row) {
            *o += qi * x;
        }
    }
}

/// `S += outer(a, b)`.
pub(crate) fn add_outer(s: &mut [f32], a: &[f32], b: &[f32]) {
    for (ai, row) in a.iter().zip(s.chunks_exact_mut(b.len())) {
        for (x, bj) in row.iter_mut().zip(b) {
            *x += ai * bj;
        }
    }
}

/// The log decay of one state head: one per token, or one per token and key dimension.
#[derive(Clone, Copy)]
enum Gate<'a> {
    /// `[T]`.
    PerHead(&'a [f32]),
    /// `[T, dk]`.
    PerKey(&'a [f32]),
}

/// Recurrent (gated) delta rule of one state head: q `[R, T, dk]`, k `[T, dk]`, v `[T, dv]`,
/// beta `[T]`, the gate as [`Gate`]; returns `[R, T, dv]`.
fn recurrent_head(
    h: &Head,
    q: &[f32],
    k: &[f32],
    v: &[f32],
    g: Option<Gate>,
    beta: &[f32],
    s: &mut [f32],
) -> Vec<f32> {
    let (seq, dk, dv) = (h.seq, h.dk, h.dv);
    let qs: Vec<f32> = q.iter().map(|x| x * h.scale).collect();
    let mut out = vec![0.0f32; h.group * seq * dv];
    let mut u = vec![0.0f32; dv];
    for t in 0..seq {
        match g {
            Some(Gate::PerHead(g)) => {
                let d = g[t].exp();
                s.iter_mut().for_each(|x| *x *= d);
            }
            Some(Gate::PerKey(g)) => {
                for (row, gi) in s.chunks_exact_mut(dv).zip(&g[t * dk..(t + 1) * dk]) {
                    let d = gi.exp();
                    row.iter_mut().for_each(|x| *x *= d);
                }
            }
            None => {}
        }
        let kt = &k[t * dk..(t + 1) * dk];
        read_state(s, kt, dv, &mut u);
        for (uj, vj) in u.iter_mut().zip(&v[t * dv..(t + 1) * dv]) {
            *uj = beta[t] * (vj - *uj);
        }
        add_outer(s, kt, &u);
        for r in 0..h.group {
            let at = r * seq + t;
            read_state(s, &qs[at * dk..(at + 1) * dk], dv, &mut out[at * dv..(at + 1) * dv]);
        }
    }
    out
}

/// Chunked scalar-decay linear attention of one state head, the six steps of the module
/// header. `beta = Some` is the (gated) delta rule; `beta = None` skips steps 1-4 and uses
/// `V_new = V` (simple GLA). `g = None` means no decay. Shapes as [`recurrent_head`].
#[allow(clippy::too_many_arguments)]
pub(crate) fn chunked_head(
    h: &Head,
    q: &[f32],
    k: &[f32],
    v: &[f32],
    g: Option<&[f32]>,
    beta: Option<&[f32]>,
    chunk: usize,
    s: &mut [f32],
) -> Vec<f32> {
    let (seq, dk, dv) = (h.seq, h.dk, h.dv);
    let qs: Vec<f32> = q.iter().map(|x| x * h.scale).collect();
    let mut out = vec![0.0f32; h.group * seq * dv];
    let c = chunk.min(seq.max(1));
    let mut gc = vec![0.0f64; c];
    let mut a = vec![0.0f32; c * c];
    let mut tm = vec![0.0f32; c * c];
    let mut w = vec![0.0f32; c * dk];
    let mut u = vec![0.0f32; c * dv];
    let mut vnew = vec![0.0f32; c * dv];
    let mut tmp = vec![0.0f32; dv];
    let mut start = 0;
    while start < seq {
        let l = c.min(seq - start);
        // G: chunk-local cumulative log decay (only rows < l are read).
        let mut acc = 0.0f64;
        for (i, gi) in gc.iter_mut().enumerate().take(l) {
            if let Some(g) = g {
                acc += g[start + i] as f64;
            }
            *gi = acc;
        }
        let kc = &k[start * dk..(start + l) * dk];
        let vc = &v[start * dv..(start + l) * dv];
        let krow = |i: usize| &kc[i * dk..(i + 1) * dk];
        match beta {
            Some(beta) => {
                let bc = &beta[start..start + l];
                // 1. A strictly lower.
                for i in 0..l {
                    for j in 0..i {
                        a[i * l + j] = bc[i] * dot(krow(i), krow(j)) * dexp(gc[i] - gc[j]);
                    }
                }
                // 2. T = (I + A)^-1, unit lower triangular: row i of (I + A) T = I gives
                //    T_ij = -sum_{j <= m < i} A_im T_mj.
                for i in 0..l {
                    for j in 0..i {
                        let mut acc = 0.0f32;
                        for m in j..i {
                            acc += a[i * l + m] * tm[m * l + j];
                        }
                        tm[i * l + j] = -acc;
                    }
                    tm[i * l + i] = 1.0;
                }
                // 3. W = T (beta exp(G) K), U = T (beta V); 4. V_new = U - W S.
                for i in 0..l {
                    let wi = &mut w[i * dk..(i + 1) * dk];
                    let ui = &mut u[i * dv..(i + 1) * dv];
                    wi.fill(0.0);
                    ui.fill(0.0);
                    for j in 0..=i {
                        let t = tm[i * l + j] * bc[j];
                        let tg = t * dexp(gc[j]);
                        for (x, kj) in wi.iter_mut().zip(krow(j)) {
                            *x += tg * kj;
                        }
                        for (x, vj) in ui.iter_mut().zip(&vc[j * dv..(j + 1) * dv]) {
                            *x += t * vj;
                        }
                    }
                    read_state(s, wi, dv, &mut tmp);
                    for ((x, uj), ws) in vnew[i * dv..(i + 1) * dv].iter_mut().zip(ui.iter()).zip(&tmp) {
                        *x = uj - ws;
                    }
                }
            }
            None => vnew[..l * dv].copy_from_slice(vc),
        }
        // 5. O = scale [(Q exp(G)) S + tril_incl(Q K^T D) V_new]   (q is pre-scaled).
        for r in 0..h.group {
            for i in 0..l {
                let at = r * seq + start + i;
                let qi = &qs[at * dk..(at + 1) * dk];
                let oi = &mut out[at * dv..(at + 1) * dv];
                read_state(s, qi, dv, oi);
                let e = dexp(gc[i]);
                oi.iter_mut().for_each(|x| *x *= e);
                for j in 0..=i {
                    let f = dot(qi, krow(j)) * dexp(gc[i] - gc[j]);
                    for (x, vj) in oi.iter_mut().zip(&vnew[j * dv..(j + 1) * dv]) {
                        *x += f * vj;
                    }
                }
            }
        }
        // 6. S <- exp(G_last) S + (K exp(G_last - G))^T V_new.
        let gl = gc[l - 1];
        let e = dexp(gl);
        s.iter_mut().for_each(|x| *x *= e);
        for j in 0..l {
            let f = dexp(gl - gc[j]);
            let kj: Vec<f32> = krow(j).iter().map(|x| x * f).collect();
            add_outer(s, &kj, &vnew[j * dv..(j + 1) * dv]);
        }
        start += l;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::super::testutil::*;
    use super::*;
    use proptest::prelude::*;

    fn run_golden(name: &str) {
        let gd = Golden::load(name);
        let dims = gd.dims();
        let x = GatedDeltaInputs {
            q: gd.get("q"),
            k: gd.get("k"),
            v: gd.get("v"),
            g: gd.get("g"),
            beta: gd.get("beta"),
            scale: gd.scalar("scale"),
            initial_state: gd.opt("h0"),
        };
        let rec = gated_delta_recurrent(&dims, &x).unwrap();
        gd.check(&format!("gdn recurrent {name}"), &rec);
        for chunk in [64, 16, 5] {
            let ch = gated_delta_chunked(&dims, &x, chunk).unwrap();
            gd.check(&format!("gdn chunked({chunk}) {name}"), &ch);
        }
        // The comparison would catch an off-by-one in the gate: shift g by one token.
        let shifted = shift_tokens(x.g, dims.batch, dims.seq);
        if shifted != x.g {
            let bad = gated_delta_chunked(&dims, &GatedDeltaInputs { g: &shifted, ..x }, 64).unwrap();
            gd.check_differs(&format!("gdn shifted gate {name}"), &bad);
        }
    }

    #[test]
    fn goldens() {
        for name in golden_names("gdn_") {
            run_golden(&name);
        }
    }

    #[test]
    fn rejects_bad_inputs() {
        let dims = Dims::new(1, 3, 2, 4, 5);
        let sz = dims.check().unwrap();
        let (q, v, g, b) = (vec![0.1; sz.q], vec![0.2; sz.v], vec![-0.1; sz.gate], vec![0.5; sz.gate]);
        let ok = GatedDeltaInputs { q: &q, k: &q, v: &v, g: &g, beta: &b, scale: 0.5, initial_state: None };
        assert!(gated_delta_chunked(&dims, &ok, 2).is_ok());
        assert!(gated_delta_recurrent(&dims, &GatedDeltaInputs { v: &q, ..ok }).is_err());
        assert!(gated_delta_recurrent(&dims, &GatedDeltaInputs { initial_state: Some(&q), ..ok }).is_err());
        assert!(gated_delta_chunked(&dims, &ok, 0).is_err());
        assert!(gated_delta_chunked(&dims, &ok, super::super::MAX_CHUNK + 1).is_err());
        assert!(gated_delta_chunked(&dims, &ok, super::super::MAX_CHUNK).is_ok());
        let pos = vec![0.1; sz.gate];
        assert!(gated_delta_chunked(&dims, &GatedDeltaInputs { g: &pos, ..ok }, 2).is_err());
        let inf = vec![f32::NEG_INFINITY; sz.gate];
        assert!(gated_delta_chunked(&dims, &GatedDeltaInputs { g: &inf, ..ok }, 2).is_err());
        assert!(gated_delta_recurrent(&Dims::new(1, usize::MAX, 2, 4, 5), &ok).is_err());
        assert!(gated_delta_recurrent(&dims.with_heads(3, 2, 2), &ok).is_err());
    }

    #[test]
    fn log_decay_helper() {
        let g = gated_delta_log_decay(&[0.0, 1.0, 10.0, -5.0], &[0.5, 90.0], &[0.1, 0.0]).unwrap();
        assert!((g[0] - (-(0.5f32.exp()) * softplus(0.1))).abs() < 1e-6);
        assert_eq!(g[1], LOG_DECAY_FLOOR);
        assert!((g[2] - (-(0.5f32.exp()) * softplus(10.1))).abs() < 1e-5);
        assert_eq!(g[3], LOG_DECAY_FLOOR);
        assert!(gated_delta_log_decay(&[0.0; 3], &[0.0; 2], &[0.0; 2]).is_err());
    }

    #[test]
    fn empty_and_single_token() {
        for seq in [0, 1] {
            let dims = Dims::new(2, seq, 2, 3, 4);
            let c = Case::random(&dims, 7, -1.0);
            let x = c.gdn();
            let r = gated_delta_recurrent(&dims, &x).unwrap();
            let ch = gated_delta_chunked(&dims, &x, 64).unwrap();
            assert_eq!(r.o.len(), dims.check().unwrap().out);
            assert_close("T=0/1", &r.o, &ch.o, 1e-6);
            assert_close("T=0/1 state", &r.state, &ch.state, 1e-6);
            if seq == 0 {
                assert_eq!(r.state, c.h0);
            }
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

        #[test]
        fn recurrent_equals_chunked(dims in arb_dims(), chunk in 1usize..20, seed in 0u64..1000, gmin in -6.0f32..0.0) {
            let c = Case::random(&dims, seed, gmin);
            let x = c.gdn();
            let r = gated_delta_recurrent(&dims, &x).unwrap();
            let ch = gated_delta_chunked(&dims, &x, chunk).unwrap();
            prop_assert!(rel_rms(&ch.o, &r.o) < 2e-5, "o {}", rel_rms(&ch.o, &r.o));
            prop_assert!(rel_rms(&ch.state, &r.state) < 2e-5, "state {}", rel_rms(&ch.state, &r.state));
        }

        #[test]
        fn decode_equals_one_pass(dims in arb_dims(), seed in 0u64..1000) {
            let c = Case::random(&dims, seed, -2.0);
            let x = c.gdn();
            let full = gated_delta_chunked(&dims, &x, 8).unwrap();
            let (o, state) = decode_steps(&dims, &c, |d, s, st| {
                gated_delta_recurrent(d, &GatedDeltaInputs {
                    q: &s.q, k: &s.k, v: &s.v, g: &s.g, beta: &s.beta, scale: x.scale, initial_state: Some(st),
                }).unwrap()
            });
            prop_assert!(rel_rms(&o, &full.o) < 2e-5);
            prop_assert!(rel_rms(&state, &full.state) < 2e-5);
        }

        #[test]
        fn head_mapping_equals_explicit_repetition(dims in arb_dims(), seed in 0u64..1000) {
            let c = Case::random(&dims, seed, -1.0);
            let x = c.gdn();
            let got = gated_delta_recurrent(&dims, &x).unwrap();
            let e = c.expanded(&dims);
            let want = gated_delta_recurrent(&e.dims, &e.case.gdn()).unwrap();
            prop_assert!(rel_rms(&got.o, &want.o) < 1e-6);
            prop_assert!(rel_rms(&got.state, &e.state_of(&want.state)) < 1e-6);
        }
    }
}
