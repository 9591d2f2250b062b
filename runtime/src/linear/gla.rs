//! Gated linear attention: `linear-attention.md` table rows "GLA" and "Simple GLA".
//!
//! GLA, per-key-dimension decay `gk_t in R^dk` (log space, `<= 0`):
//! ```text
//! S_t = Diag(exp(gk_t)) S_{t-1} + k_t v_t^T;   o_t = S_t^T (scale q_t)
//! ```
//! Simple GLA, one scalar decay `g_t` per head: `S_t = exp(g_t) S_{t-1} + k_t v_t^T`.
//! (The fla layer's `gk = logsigmoid(low-rank proj) / 16` and output gate are the caller's.)
//!
//! Chunked forms, chunk `C`, `G_i` = chunk-local cumulative log decay (a vector for GLA):
//! ```text
//! O_i = (q_i * exp(G_i))^T S + sum_{j <= i} (sum_d q_i[d] k_j[d] exp(G_i[d] - G_j[d])) v_j
//! S  <- Diag(exp(G_last)) S + sum_j (k_j * exp(G_last - G_j)) v_j^T
//! ```
//! GLA forms the intra-chunk scores per key dimension in log space (`exp(G_i[d] - G_j[d])`,
//! an O(C^2 dk) pass per chunk): nothing is ever divided by a cumulative product, every
//! exponent is `<= 0` when `gk <= 0` (checked), so no overflow or `0 * inf` can occur
//! however strong the decay. Simple GLA shares Gated DeltaNet's chunk kernel without the
//! delta steps ([`super::gated_delta`]).
//!
//! Layouts: q `[B,T,Hq,dk]`, k `[B,T,Hk,dk]`, v `[B,T,Hv,dv]`, gk `[B,T,Hs,dk]`, g
//! `[B,T,Hs]`, state `[B,Hs,dk,dv]`, output `[B,T,Ho,dv]`; heads as [`super::heads`].
use super::gated_delta::{add_outer, chunked_head, read_state, Head};
use super::heads::{gather, gather_queries, run_heads};
use super::{check_chunk, check_len, check_log_decay, check_state, decayed_dot, dexp, Dims, LinearOutput};
use crate::error::Result;

/// Inputs of a GLA call.
#[derive(Clone, Copy, Debug)]
pub struct GlaInputs<'a> {
    pub q: &'a [f32],
    pub k: &'a [f32],
    pub v: &'a [f32],
    /// Per-key log decay `[B, T, Hs, dk]`, `<= 0`.
    pub gk: &'a [f32],
    pub scale: f32,
    /// `[B, Hs, dk, dv]`; zeros when absent.
    pub initial_state: Option<&'a [f32]>,
}

/// Inputs of a simple-GLA call.
#[derive(Clone, Copy, Debug)]
pub struct SimpleGlaInputs<'a> {
    pub q: &'a [f32],
    pub k: &'a [f32],
    pub v: &'a [f32],
    /// Log decay per state head `[B, T, Hs]`, `<= 0`.
    pub g: &'a [f32],
    pub scale: f32,
    /// `[B, Hs, dk, dv]`; zeros when absent.
    pub initial_state: Option<&'a [f32]>,
}

/// Token-by-token GLA.
pub fn gla_recurrent(dims: &Dims, x: &GlaInputs) -> Result<LinearOutput> {
    gla(dims, x, None)
}

/// Chunked GLA (log-space intra-chunk scores).
pub fn gla_chunked(dims: &Dims, x: &GlaInputs, chunk: usize) -> Result<LinearOutput> {
    gla(dims, x, Some(chunk))
}

/// Token-by-token simple GLA.
pub fn simple_gla_recurrent(dims: &Dims, x: &SimpleGlaInputs) -> Result<LinearOutput> {
    simple_gla(dims, x, None)
}

/// Chunked simple GLA.
pub fn simple_gla_chunked(dims: &Dims, x: &SimpleGlaInputs, chunk: usize) -> Result<LinearOutput> {
    simple_gla(dims, x, Some(chunk))
}

fn gla(dims: &Dims, x: &GlaInputs, chunk: Option<usize>) -> Result<LinearOutput> {
    let sz = dims.check()?;
    check_len("q", x.q, sz.q)?;
    check_len("k", x.k, sz.k)?;
    check_len("v", x.v, sz.v)?;
    check_len("gk", x.gk, sz.key_gate)?;
    check_state(x.initial_state, sz.state)?;
    if let Some(c) = chunk {
        check_chunk(c)?;
        check_log_decay("gk", x.gk)?;
    }
    let map = sz.map;
    let head = Head { seq: dims.seq, dk: dims.dk, dv: dims.dv, group: map.group(), scale: x.scale };
    Ok(run_heads(dims, &map, x.initial_state, |b, s, st| {
        let qh = gather_queries(x.q, dims, &map, b, s);
        let kh = gather(x.k, dims.seq, map.hk, dims.dk, b, map.k_head(s));
        let vh = gather(x.v, dims.seq, map.hv, dims.dv, b, map.v_head(s));
        let gh = gather(x.gk, dims.seq, map.hs, dims.dk, b, s);
        match chunk {
            None => gla_recurrent_head(&head, &qh, &kh, &vh, &gh, st),
            Some(c) => gla_chunked_head(&head, &qh, &kh, &vh, &gh, c, st),
        }
    }))
}

fn simple_gla(dims: &Dims, x: &SimpleGlaInputs, chunk: Option<usize>) -> Result<LinearOutput> {
    let sz = dims.check()?;
    check_len("q", x.q, sz.q)?;
    check_len("k", x.k, sz.k)?;
    check_len("v", x.v, sz.v)?;
    check_len("g", x.g, sz.gate)?;
    check_state(x.initial_state, sz.state)?;
    if let Some(c) = chunk {
        check_chunk(c)?;
        check_log_decay("g", x.g)?;
    }
    let map = sz.map;
    let head = Head { seq: dims.seq, dk: dims.dk, dv: dims.dv, group: map.group(), scale: x.scale };
    Ok(run_heads(dims, &map, x.initial_state, |b, s, st| {
        let qh = gather_queries(x.q, dims, &map, b, s);
        let kh = gather(x.k, dims.seq, map.hk, dims.dk, b, map.k_head(s));
        let vh = gather(x.v, dims.seq, map.hv, dims.dv, b, map.v_head(s));
        let gh = gather(x.g, dims.seq, map.hs, 1, b, s);
        match chunk {
            None => simple_gla_recurrent_head(&head, &qh, &kh, &vh, &gh, st),
            Some(c) => chunked_head(&head, &qh, &kh, &vh, Some(&gh), None, c, st),
        }
    }))
}

/// One head of simple GLA, token by token: q `[R,T,dk]`, k `[T,dk]`, v `[T,dv]`, g `[T]`.
fn simple_gla_recurrent_head(h: &Head, q: &[f32], k: &[f32], v: &[f32], g: &[f32], s: &mut [f32]) -> Vec<f32> {
    let (seq, dk, dv) = (h.seq, h.dk, h.dv);
    let qs: Vec<f32> = q.iter().map(|x| x * h.scale).collect();
    let mut out = vec![0.0f32; h.group * seq * dv];
    for t in 0..seq {
        let d = g[t].exp();
        s.iter_mut().for_each(|x| *x *= d);
        add_outer(s, &k[t * dk..(t + 1) * dk], &v[t * dv..(t + 1) * dv]);
        for r in 0..h.group {
            let at = r * seq + t;
            read_state(s, &qs[at * dk..(at + 1) * dk], dv, &mut out[at * dv..(at + 1) * dv]);
        }
    }
    out
}

/// One head of GLA, token by token; gk `[T, dk]`.
fn gla_recurrent_head(h: &Head, q: &[f32], k: &[f32], v: &[f32], gk: &[f32], s: &mut [f32]) -> Vec<f32> {
    let (seq, dk, dv) = (h.seq, h.dk, h.dv);
    let qs: Vec<f32> = q.iter().map(|x| x * h.scale).collect();
    let mut out = vec![0.0f32; h.group * seq * dv];
    for t in 0..seq {
        for (row, gd) in s.chunks_exact_mut(dv).zip(&gk[t * dk..(t + 1) * dk]) {
            let d = gd.exp();
            row.iter_mut().for_each(|x| *x *= d);
        }
        add_outer(s, &k[t * dk..(t + 1) * dk], &v[t * dv..(t + 1) * dv]);
        for r in 0..h.group {
            let at = r * seq + t;
            read_state(s, &qs[at * dk..(at + 1) * dk], dv, &mut out[at * dv..(at + 1) * dv]);
        }
    }
    out
}

/// One head of GLA, chunked (see the module header).
fn gla_chunked_head(h: &Head, q: &[f32], k: &[f32], v: &[f32], gk: &[f32], chunk: usize, s: &mut [f32]) -> Vec<f32> {
    let (seq, dk, dv) = (h.seq, h.dk, h.dv);
    let qs: Vec<f32> = q.iter().map(|x| x * h.scale).collect();
    let mut out = vec![0.0f32; h.group * seq * dv];
    let c = chunk.min(seq.max(1));
    let mut gc = vec![0.0f64; c * dk];
    let mut qg = vec![0.0f32; dk];
    let mut kd = vec![0.0f32; dk];
    let mut start = 0;
    while start < seq {
        let l = c.min(seq - start);
        // G_i[d]: chunk-local cumulative log decay, rows < l only.
        for i in 0..l {
            for d in 0..dk {
                let prev = if i == 0 { 0.0 } else { gc[(i - 1) * dk + d] };
                gc[i * dk + d] = prev + gk[(start + i) * dk + d] as f64;
            }
        }
        let grow = |i: usize| &gc[i * dk..(i + 1) * dk];
        let krow = |i: usize| &k[(start + i) * dk..(start + i + 1) * dk];
        let vrow = |i: usize| &v[(start + i) * dv..(start + i + 1) * dv];
        for r in 0..h.group {
            for i in 0..l {
                let at = r * seq + start + i;
                let qi = &qs[at * dk..(at + 1) * dk];
                for ((x, qd), gd) in qg.iter_mut().zip(qi).zip(grow(i)) {
                    *x = qd * dexp(*gd);
                }
                let oi = &mut out[at * dv..(at + 1) * dv];
                read_state(s, &qg, dv, oi);
                for j in 0..=i {
                    let f = decayed_dot(qi, krow(j), grow(i), grow(j));
                    for (x, vj) in oi.iter_mut().zip(vrow(j)) {
                        *x += f * vj;
                    }
                }
            }
        }
        let gl = grow(l - 1);
        for (row, gd) in s.chunks_exact_mut(dv).zip(gl) {
            let e = dexp(*gd);
            row.iter_mut().for_each(|x| *x *= e);
        }
        for j in 0..l {
            for (d, x) in kd.iter_mut().enumerate() {
                *x = krow(j)[d] * dexp(gl[d] - grow(j)[d]);
            }
            add_outer(s, &kd, vrow(j));
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

    fn gla_of(c: &Case) -> GlaInputs<'_> {
        GlaInputs { q: &c.q, k: &c.k, v: &c.v, gk: &c.gk, scale: c.scale, initial_state: Some(&c.h0) }
    }

    fn sgla_of(c: &Case) -> SimpleGlaInputs<'_> {
        SimpleGlaInputs { q: &c.q, k: &c.k, v: &c.v, g: &c.g, scale: c.scale, initial_state: Some(&c.h0) }
    }

    #[test]
    fn gla_goldens() {
        for name in golden_names("gla_") {
            let gd = Golden::load(&name);
            let dims = gd.dims();
            let x = GlaInputs {
                q: gd.get("q"),
                k: gd.get("k"),
                v: gd.get("v"),
                gk: gd.get("gk"),
                scale: gd.scalar("scale"),
                initial_state: gd.opt("h0"),
            };
            gd.check(&format!("gla recurrent {name}"), &gla_recurrent(&dims, &x).unwrap());
            for chunk in [64, 16, 5] {
                gd.check(&format!("gla chunked({chunk}) {name}"), &gla_chunked(&dims, &x, chunk).unwrap());
            }
            let shifted = shift_tokens(x.gk, dims.batch, dims.seq);
            if shifted != x.gk {
                gd.check_differs(
                    &format!("gla shifted gate {name}"),
                    &gla_chunked(&dims, &GlaInputs { gk: &shifted, ..x }, 64).unwrap(),
                );
            }
        }
    }

    #[test]
    fn simple_gla_goldens() {
        for name in golden_names("sgla_") {
            let gd = Golden::load(&name);
            let dims = gd.dims();
            let x = SimpleGlaInputs {
                q: gd.get("q"),
                k: gd.get("k"),
                v: gd.get("v"),
                g: gd.get("g"),
                scale: gd.scalar("scale"),
                initial_state: gd.opt("h0"),
            };
            gd.check(&format!("simple gla recurrent {name}"), &simple_gla_recurrent(&dims, &x).unwrap());
            for chunk in [64, 16, 5] {
                gd.check(
                    &format!("simple gla chunked({chunk}) {name}"),
                    &simple_gla_chunked(&dims, &x, chunk).unwrap(),
                );
            }
            let shifted = shift_tokens(x.g, dims.batch, dims.seq);
            if shifted != x.g {
                gd.check_differs(
                    &format!("simple gla shifted gate {name}"),
                    &simple_gla_chunked(&dims, &SimpleGlaInputs { g: &shifted, ..x }, 64).unwrap(),
                );
            }
        }
    }

    #[test]
    fn chunked_gla_survives_extreme_decay() {
        // A decay of -80 per token for 64 tokens puts cumulative products far below f32's
        // range; a formulation dividing by them would produce NaN or inf.
        let dims = Dims::new(1, 70, 2, 4, 3);
        let mut c = Case::random(&dims, 3, -1.0);
        c.gk.iter_mut().enumerate().for_each(|(i, x)| *x = if i % 3 == 0 { -80.0 } else { *x });
        let r = gla_recurrent(&dims, &gla_of(&c)).unwrap();
        let ch = gla_chunked(&dims, &gla_of(&c), 64).unwrap();
        assert_close("extreme decay o", &ch.o, &r.o, 2e-5);
        assert_close("extreme decay state", &ch.state, &r.state, 2e-5);
        let mut bad = c.clone();
        bad.gk[5] = 0.5;
        assert!(gla_chunked(&dims, &gla_of(&bad), 64).is_err());
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 40, ..ProptestConfig::default() })]

        #[test]
        fn gla_recurrent_equals_chunked(dims in arb_dims(), chunk in 1usize..20, seed in 0u64..1000, gmin in -6.0f32..0.0) {
            let c = Case::random(&dims, seed, gmin);
            let r = gla_recurrent(&dims, &gla_of(&c)).unwrap();
            let ch = gla_chunked(&dims, &gla_of(&c), chunk).unwrap();
            prop_assert!(rel_rms(&ch.o, &r.o) < 2e-5 && rel_rms(&ch.state, &r.state) < 2e-5);
        }

        #[test]
        fn simple_gla_recurrent_equals_chunked(dims in arb_dims(), chunk in 1usize..20, seed in 0u64..1000, gmin in -6.0f32..0.0) {
            let c = Case::random(&dims, seed, gmin);
            let r = simple_gla_recurrent(&dims, &sgla_of(&c)).unwrap();
            let ch = simple_gla_chunked(&dims, &sgla_of(&c), chunk).unwrap();
            prop_assert!(rel_rms(&ch.o, &r.o) < 2e-5 && rel_rms(&ch.state, &r.state) < 2e-5);
        }

        #[test]
        fn gla_with_equal_key_gates_is_simple_gla(dims in arb_dims(), seed in 0u64..1000) {
            let c = Case::random(&dims, seed, -2.0);
            let mut c2 = c.clone();
            for (i, x) in c2.gk.iter_mut().enumerate() {
                *x = c.g[i / dims.dk];
            }
            let a = gla_chunked(&dims, &gla_of(&c2), 8).unwrap();
            let b = simple_gla_recurrent(&dims, &sgla_of(&c)).unwrap();
            prop_assert!(rel_rms(&a.o, &b.o) < 2e-5 && rel_rms(&a.state, &b.state) < 2e-5);
        }

        #[test]
        fn decode_equals_one_pass(dims in arb_dims(), seed in 0u64..1000) {
            let c = Case::random(&dims, seed, -2.0);
            let full = gla_chunked(&dims, &gla_of(&c), 8).unwrap();
            let (o, state) = decode_steps(&dims, &c, |d, s, st| {
                gla_recurrent(d, &GlaInputs { initial_state: Some(st), ..gla_of(s) }).unwrap()
            });
            prop_assert!(rel_rms(&o, &full.o) < 2e-5 && rel_rms(&state, &full.state) < 2e-5);
            let full = simple_gla_chunked(&dims, &sgla_of(&c), 8).unwrap();
            let (o, state) = decode_steps(&dims, &c, |d, s, st| {
                simple_gla_recurrent(d, &SimpleGlaInputs { initial_state: Some(st), ..sgla_of(s) }).unwrap()
            });
            prop_assert!(rel_rms(&o, &full.o) < 2e-5 && rel_rms(&state, &full.state) < 2e-5);
        }

        #[test]
        fn head_mapping_equals_explicit_repetition(dims in arb_dims(), seed in 0u64..1000) {
            let c = Case::random(&dims, seed, -1.0);
            let e = c.expanded(&dims);
            let got = gla_chunked(&dims, &gla_of(&c), 8).unwrap();
            let want = gla_chunked(&e.dims, &gla_of(&e.case), 8).unwrap();
            prop_assert!(rel_rms(&got.o, &want.o) < 1e-6 && rel_rms(&got.state, &e.state_of(&want.state)) < 1e-6);
            let got = simple_gla_chunked(&dims, &sgla_of(&c), 8).unwrap();
            let want = simple_gla_chunked(&e.dims, &sgla_of(&e.case), 8).unwrap();
            prop_assert!(rel_rms(&got.o, &want.o) < 1e-6 && rel_rms(&got.state, &e.state_of(&want.state)) < 1e-6);
        }
    }
}
