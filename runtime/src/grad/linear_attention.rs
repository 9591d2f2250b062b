//! Backward of the `LinearAttention` op for the rules `linear`, `gated` (scalar decay),
//! `gated_vector` (per-key decay), `delta`, `gated_delta` and `gated_delta_vector` (per-key
//! decay), generic over [`Real`].
//!
//! Per state head, with `P = Diag(e) S_{t-1}` (`e = exp(g_t)`, per key row; 1 without a
//! gate), the forward is
//! ```text
//! delta rules:  r = P^T k, u = beta (v - r), S_t = P + k u^T
//! other rules:  S_t = P + k v^T
//! o_t = scale S_t^T q_t             (every query head of the state head's group)
//! ```
//! and the backward walks the tokens in reverse carrying `dS` (the cotangent of `S_t`):
//! ```text
//! dq = scale S_t do;  dS += scale q do^T
//! delta:  du = dS^T k; dk = dS u; dbeta = du . (v - r); dv = beta du; dr = -beta du;
//!         dP = dS + k dr^T; dk += P dr
//! other:  dk = dS v; dv = dS^T k; dP = dS
//! dg = sum_j dP P (per key row for vector gates, summed for scalar ones);  dS = Diag(e) dP
//! ```
//! States are recomputed, not stored: one forward pass keeps a checkpoint of `S` at every
//! chunk boundary (`chunk` tokens, 64 unless the op says otherwise), and the reverse pass
//! recomputes the states inside one chunk at a time from its checkpoint. Memory is
//! `T / chunk + chunk` states per head, the work about three forward passes. The op's VJP
//! uses this per-token form for per-key gates (GLA) and the chunked UT-transform backward of
//! [`super::chunked`] for scalar gates; this form is that one's oracle. Heads run in
//! parallel across batch.
use jetc_ir::{LinearAttentionSpec, UpdateRule};
use ndarray::{ArrayD, IxDyn};
use rayon::prelude::*;

use super::real::Real;
use super::{Bwd, R};

/// Decay of one state head over the sequence.
#[derive(Clone, Copy, Debug)]
pub enum Decay<'a, T> {
    None,
    /// `[T]` log decays.
    Scalar(&'a [T]),
    /// `[T, dk]` log decays.
    Vector(&'a [T]),
}

/// One state head's inputs: `q [G, T, dk]` for the `G` query heads reading it, `k [T, dk]`,
/// `v [T, dv]`, `beta [T]` (delta rules), `h0 [dk, dv]`.
#[derive(Clone, Copy, Debug)]
pub struct HeadInputs<'a, T> {
    pub t: usize,
    pub dk: usize,
    pub dv: usize,
    pub group: usize,
    pub scale: T,
    pub q: &'a [T],
    pub k: &'a [T],
    pub v: &'a [T],
    pub decay: Decay<'a, T>,
    pub beta: Option<&'a [T]>,
    pub h0: Option<&'a [T]>,
}

/// Gradients of one state head (layouts as [`HeadInputs`]; `ddecay` as the decay).
#[derive(Clone, Debug, Default)]
pub struct HeadGrads<T> {
    pub dq: Vec<T>,
    pub dk: Vec<T>,
    pub dv: Vec<T>,
    pub ddecay: Vec<T>,
    pub dbeta: Vec<T>,
    pub dh0: Vec<T>,
}

impl<T: Real> HeadInputs<'_, T> {
    /// exp(g_t) per key row.
    fn rows_decay(&self, t: usize, e: &mut [T]) {
        match self.decay {
            Decay::None => e.iter_mut().for_each(|x| *x = T::one()),
            Decay::Scalar(g) => e.iter_mut().for_each(|x| *x = g[t].exp()),
            Decay::Vector(g) => e.iter_mut().zip(&g[t * self.dk..(t + 1) * self.dk]).for_each(|(x, &gi)| *x = gi.exp()),
        }
    }

    /// S <- the state after token t, from the state before it.
    fn step(&self, t: usize, s: &mut [T], e: &mut [T]) {
        let (dk, dv) = (self.dk, self.dv);
        self.rows_decay(t, e);
        for i in 0..dk {
            for x in &mut s[i * dv..(i + 1) * dv] {
                *x *= e[i];
            }
        }
        let k = &self.k[t * dk..(t + 1) * dk];
        let v = &self.v[t * dv..(t + 1) * dv];
        match self.beta {
            Some(beta) => {
                // r = S^T k, accumulated row by row (contiguous); u = beta (v - r).
                let mut u = vec![T::zero(); dv];
                for i in 0..dk {
                    let ki = k[i];
                    for (r, &sv) in u.iter_mut().zip(&s[i * dv..(i + 1) * dv]) {
                        *r += sv * ki;
                    }
                }
                for (uj, &vj) in u.iter_mut().zip(v) {
                    *uj = beta[t] * (vj - *uj);
                }
                for i in 0..dk {
                    let ki = k[i];
                    for (sv, &uj) in s[i * dv..(i + 1) * dv].iter_mut().zip(&u) {
                        *sv += ki * uj;
                    }
                }
            }
            None => {
                for i in 0..dk {
                    for j in 0..dv {
                        s[i * dv + j] += k[i] * v[j];
                    }
                }
            }
        }
    }

    /// [`Self::step`] for the chunked backward.
    pub(crate) fn step_public(&self, t: usize, s: &mut [T], e: &mut [T]) {
        self.step(t, s, e)
    }

    fn read(&self, s: &[T], t: usize, o: &mut [T]) {
        let (dk, dv) = (self.dk, self.dv);
        for g in 0..self.group {
            let q = &self.q[(g * self.t + t) * dk..(g * self.t + t + 1) * dk];
            let out = &mut o[(g * self.t + t) * dv..(g * self.t + t + 1) * dv];
            out.iter_mut().for_each(|x| *x = T::zero());
            for i in 0..dk {
                let qi = self.scale * q[i];
                for (oj, &sv) in out.iter_mut().zip(&s[i * dv..(i + 1) * dv]) {
                    *oj += sv * qi;
                }
            }
        }
    }
}

/// Forward of one state head: (o [G, T, dv], final state [dk, dv]).
pub fn head_forward<T: Real>(x: &HeadInputs<T>) -> (Vec<T>, Vec<T>) {
    let mut s = x.h0.map_or_else(|| vec![T::zero(); x.dk * x.dv], |h| h.to_vec());
    let mut e = vec![T::zero(); x.dk];
    let mut o = vec![T::zero(); x.group * x.t * x.dv];
    for t in 0..x.t {
        x.step(t, &mut s, &mut e);
        x.read(&s, t, &mut o);
    }
    (o, s)
}

/// Backward of one state head for cotangents `do_ [G, T, dv]` and `ds_final [dk, dv]`.
pub fn head_backward<T: Real>(x: &HeadInputs<T>, do_: Option<&[T]>, ds_final: Option<&[T]>, chunk: usize) -> HeadGrads<T> {
    let (dk, dv, tt, group) = (x.dk, x.dv, x.t, x.group);
    let chunk = chunk.max(1);
    let n = dk * dv;
    // Checkpoints: the state before the first token of every chunk.
    let chunks = tt.div_ceil(chunk);
    let mut checkpoints = Vec::with_capacity(chunks);
    let mut s = x.h0.map_or_else(|| vec![T::zero(); n], |h| h.to_vec());
    let mut e = vec![T::zero(); dk];
    for t in 0..tt {
        if t % chunk == 0 {
            checkpoints.push(s.clone());
        }
        x.step(t, &mut s, &mut e);
    }
    let mut g = HeadGrads {
        dq: vec![T::zero(); group * tt * dk],
        dk: vec![T::zero(); tt * dk],
        dv: vec![T::zero(); tt * dv],
        ddecay: match x.decay {
            Decay::None => Vec::new(),
            Decay::Scalar(_) => vec![T::zero(); tt],
            Decay::Vector(_) => vec![T::zero(); tt * dk],
        },
        dbeta: if x.beta.is_some() { vec![T::zero(); tt] } else { Vec::new() },
        dh0: Vec::new(),
    };
    let mut ds = ds_final.map_or_else(|| vec![T::zero(); n], |d| d.to_vec());
    let mut dp = vec![T::zero(); n];
    let mut p = vec![T::zero(); n];
    let mut u = vec![T::zero(); dv];
    let mut r = vec![T::zero(); dv];
    let mut du = vec![T::zero(); dv];
    for c in (0..chunks).rev() {
        let start = c * chunk;
        let end = (start + chunk).min(tt);
        // states[j] = the state before token start + j; states[L] = after the chunk.
        let mut states = Vec::with_capacity(end - start + 1);
        states.push(checkpoints[c].clone());
        for t in start..end {
            let mut next = states[t - start].clone();
            x.step(t, &mut next, &mut e);
            states.push(next);
        }
        for t in (start..end).rev() {
            let (prev, cur) = (&states[t - start], &states[t - start + 1]);
            let k = &x.k[t * dk..(t + 1) * dk];
            let v = &x.v[t * dv..(t + 1) * dv];
            if let Some(do_) = do_ {
                for gq in 0..group {
                    let q = &x.q[(gq * tt + t) * dk..(gq * tt + t + 1) * dk];
                    let dot = &do_[(gq * tt + t) * dv..(gq * tt + t + 1) * dv];
                    let dq = &mut g.dq[(gq * tt + t) * dk..(gq * tt + t + 1) * dk];
                    for i in 0..dk {
                        dq[i] = x.scale * (0..dv).map(|j| cur[i * dv + j] * dot[j]).sum::<T>();
                        for j in 0..dv {
                            ds[i * dv + j] += x.scale * q[i] * dot[j];
                        }
                    }
                }
            }
            x.rows_decay(t, &mut e);
            for i in 0..dk {
                for j in 0..dv {
                    p[i * dv + j] = e[i] * prev[i * dv + j];
                }
            }
            let dkt = &mut g.dk[t * dk..(t + 1) * dk];
            let dvt = &mut g.dv[t * dv..(t + 1) * dv];
            match x.beta {
                Some(beta) => {
                    let b = beta[t];
                    r.iter_mut().for_each(|x| *x = T::zero());
                    du.iter_mut().for_each(|x| *x = T::zero());
                    for i in 0..dk {
                        let ki = k[i];
                        let (pr, dr) = (&p[i * dv..(i + 1) * dv], &ds[i * dv..(i + 1) * dv]);
                        for j in 0..dv {
                            r[j] += pr[j] * ki;
                            du[j] += dr[j] * ki;
                        }
                    }
                    for j in 0..dv {
                        u[j] = b * (v[j] - r[j]);
                    }
                    g.dbeta[t] = (0..dv).map(|j| du[j] * (v[j] - r[j])).sum();
                    for j in 0..dv {
                        dvt[j] = b * du[j];
                    }
                    for i in 0..dk {
                        let mut acc = T::zero();
                        for j in 0..dv {
                            let dr = -b * du[j];
                            acc += ds[i * dv + j] * u[j] + p[i * dv + j] * dr;
                            dp[i * dv + j] = ds[i * dv + j] + k[i] * dr;
                        }
                        dkt[i] = acc;
                    }
                }
                None => {
                    dvt.iter_mut().for_each(|x| *x = T::zero());
                    for i in 0..dk {
                        let row = &ds[i * dv..(i + 1) * dv];
                        dkt[i] = row.iter().zip(v).map(|(&a, &b)| a * b).sum();
                        let ki = k[i];
                        for (o, &a) in dvt.iter_mut().zip(row) {
                            *o += a * ki;
                        }
                    }
                    dp.copy_from_slice(&ds);
                }
            }
            match x.decay {
                Decay::None => {}
                Decay::Scalar(_) => g.ddecay[t] = dp.iter().zip(&p).map(|(&a, &b)| a * b).sum(),
                Decay::Vector(_) => {
                    for i in 0..dk {
                        g.ddecay[t * dk + i] = (0..dv).map(|j| dp[i * dv + j] * p[i * dv + j]).sum();
                    }
                }
            }
            for i in 0..dk {
                for j in 0..dv {
                    ds[i * dv + j] = e[i] * dp[i * dv + j];
                }
            }
        }
    }
    g.dh0 = ds;
    g
}

pub(crate) fn check(s: &LinearAttentionSpec, wrt: &[usize]) -> R<()> {
    if s.rule == UpdateRule::Dplr {
        return Err("LinearAttention with the dplr rule (RWKV7) is not trainable yet".into());
    }
    if s.kv_heads == 0 || !s.q_heads.is_multiple_of(s.kv_heads) {
        return Err(format!("the backward needs q_heads ({}) to be a multiple of kv_heads ({})", s.q_heads, s.kv_heads));
    }
    let allowed: &[usize] = match s.rule {
        UpdateRule::Linear => &[0, 1, 2, 3],
        UpdateRule::Gated | UpdateRule::GatedVector => &[0, 1, 2, 3, 4],
        UpdateRule::Delta => &[0, 1, 2, 3, 5],
        _ => &[0, 1, 2, 3, 4, 5],
    };
    match wrt.iter().find(|w| !allowed.contains(w)) {
        Some(w) => Err(format!("input {w} of LinearAttention is not read by the {} rule", s.rule.name())),
        None => Ok(()),
    }
}

/// The per-head layout of one op call, and the gather/scatter between it and the op's
/// `[B, T, H*d]` tensors.
struct Layout {
    t: usize,
    hq: usize,
    hkv: usize,
    dk: usize,
    dv: usize,
}

impl Layout {
    fn group(&self) -> usize {
        self.hq / self.hkv
    }
    /// Rows of `width` for head `h` of `heads` over the sequence of batch `b`.
    fn gather(&self, x: &[f32], heads: usize, width: usize, b: usize, h: usize) -> Vec<f32> {
        let mut out = Vec::with_capacity(self.t * width);
        for t in 0..self.t {
            let at = ((b * self.t + t) * heads + h) * width;
            out.extend_from_slice(&x[at..at + width]);
        }
        out
    }
    fn scatter(&self, dst: &mut [f32], src: &[f32], heads: usize, width: usize, b: usize, h: usize) {
        for t in 0..self.t {
            let at = ((b * self.t + t) * heads + h) * width;
            dst[at..at + width].copy_from_slice(&src[t * width..(t + 1) * width]);
        }
    }
}

pub(crate) fn vjp(c: &Bwd, s: &LinearAttentionSpec) -> R<Vec<Option<ArrayD<f32>>>> {
    let q = c.xf(LinearAttentionSpec::Q, "q")?;
    let [b, t, qw] = match q.shape() {
        &[b, t, w] => [b, t, w],
        sh => return Err(format!("q must be [B, T, H*dk], got {sh:?}")),
    };
    let l = Layout { t, hq: s.q_heads, hkv: s.kv_heads, dk: s.dk, dv: s.dv };
    if qw != l.hq * l.dk {
        return Err(format!("q width {qw} is not {} heads x {}", l.hq, l.dk));
    }
    let flat = |a: &ArrayD<f32>| crate::onnx_ops::common::contiguous(a).into_owned();
    let k = flat(c.xf(LinearAttentionSpec::K, "k")?);
    let v = flat(c.xf(LinearAttentionSpec::V, "v")?);
    let qd = flat(q);
    let state = c.opt_xf(LinearAttentionSpec::STATE, "past_state")?.map(flat);
    let decay = match s.rule {
        UpdateRule::Gated | UpdateRule::GatedVector | UpdateRule::GatedDelta | UpdateRule::GatedDeltaVector => {
            Some(flat(c.xf(LinearAttentionSpec::DECAY, "decay")?))
        }
        _ => None,
    };
    let beta = match s.rule {
        UpdateRule::Delta | UpdateRule::GatedDelta | UpdateRule::GatedDeltaVector => Some(flat(c.xf(LinearAttentionSpec::BETA, "beta")?)),
        _ => None,
    };
    let vector = matches!(s.rule, UpdateRule::GatedVector | UpdateRule::GatedDeltaVector);
    let expect = |name: &str, got: usize, want: usize| -> R<()> {
        if got == want { Ok(()) } else { Err(format!("{name} has {got} elements, expected {want}")) }
    };
    expect("k", k.len(), b * t * l.hkv * l.dk)?;
    expect("v", v.len(), b * t * l.hkv * l.dv)?;
    if let Some(st) = &state {
        expect("past_state", st.len(), b * l.hkv * l.dk * l.dv)?;
    }
    if let Some(d) = &decay {
        expect("decay", d.len(), b * t * l.hkv * if vector { l.dk } else { 1 })?;
    }
    if let Some(be) = &beta {
        expect("beta", be.len(), b * t * l.hkv)?;
    }
    let d_o = c.dy(0)?.map(flat);
    let d_state = c.dy(1)?.map(flat);
    let group = l.group();
    let chunk = if s.chunk == 0 { 64 } else { s.chunk };
    let heads: Vec<(usize, usize, HeadGrads<f32>)> = (0..b * l.hkv)
        .into_par_iter()
        .map(|bs| {
            let (bi, h) = (bs / l.hkv, bs % l.hkv);
            let mut qh = Vec::with_capacity(group * t * l.dk);
            let mut doh = Vec::with_capacity(group * t * l.dv);
            for gq in 0..group {
                qh.extend(l.gather(&qd, l.hq, l.dk, bi, h * group + gq));
                if let Some(d) = &d_o {
                    doh.extend(l.gather(d, l.hq, l.dv, bi, h * group + gq));
                }
            }
            let kh = l.gather(&k, l.hkv, l.dk, bi, h);
            let vh = l.gather(&v, l.hkv, l.dv, bi, h);
            let gh = decay.as_ref().map(|d| l.gather(d, l.hkv, if vector { l.dk } else { 1 }, bi, h));
            let bh = beta.as_ref().map(|d| l.gather(d, l.hkv, 1, bi, h));
            let n = l.dk * l.dv;
            let h0 = state.as_ref().map(|st| &st[bs * n..(bs + 1) * n]);
            let dsf = d_state.as_ref().map(|d| &d[bs * n..(bs + 1) * n]);
            let x = HeadInputs {
                t,
                dk: l.dk,
                dv: l.dv,
                group,
                scale: s.scale,
                q: &qh,
                k: &kh,
                v: &vh,
                decay: match (&gh, vector) {
                    (None, _) => Decay::None,
                    (Some(g), false) => Decay::Scalar(g),
                    (Some(g), true) => Decay::Vector(g),
                },
                beta: bh.as_deref(),
                h0,
            };
            let d_out = d_o.as_ref().map(|_| &doh[..]);
            // Scalar-gate rules take the chunked (UT-transform) backward; per-key gates the
            // per-token one (which is also the chunked form's oracle in the tests).
            let grads = super::chunked::head_backward_chunked(&x, d_out, dsf, chunk).unwrap_or_else(|| head_backward(&x, d_out, dsf, chunk));
            (bi, h, grads)
        })
        .collect();
    let mut dq = vec![0f32; qd.len()];
    let mut dk = vec![0f32; k.len()];
    let mut dv = vec![0f32; v.len()];
    let mut dg = decay.as_ref().map(|d| vec![0f32; d.len()]);
    let mut db = beta.as_ref().map(|d| vec![0f32; d.len()]);
    let mut dh0 = vec![0f32; b * l.hkv * l.dk * l.dv];
    let n = l.dk * l.dv;
    for (bi, h, g) in &heads {
        for gq in 0..group {
            l.scatter(&mut dq, &g.dq[gq * t * l.dk..(gq + 1) * t * l.dk], l.hq, l.dk, *bi, h * group + gq);
        }
        l.scatter(&mut dk, &g.dk, l.hkv, l.dk, *bi, *h);
        l.scatter(&mut dv, &g.dv, l.hkv, l.dv, *bi, *h);
        if let Some(dg) = dg.as_mut() {
            l.scatter(dg, &g.ddecay, l.hkv, if vector { l.dk } else { 1 }, *bi, *h);
        }
        if let Some(db) = db.as_mut() {
            l.scatter(db, &g.dbeta, l.hkv, 1, *bi, *h);
        }
        let bs = bi * l.hkv + h;
        dh0[bs * n..(bs + 1) * n].copy_from_slice(&g.dh0);
    }
    let shaped = |slot: usize, data: Vec<f32>| -> R<Option<ArrayD<f32>>> {
        let Some(x) = c.x(slot) else { return Ok(None) };
        ArrayD::from_shape_vec(IxDyn(x.shape()), data).map(Some).map_err(|e| e.to_string())
    };
    let mut out = vec![None; c.spec.forward_inputs.max(6)];
    out[0] = shaped(0, dq)?;
    out[1] = shaped(1, dk)?;
    out[2] = shaped(2, dv)?;
    out[3] = shaped(3, dh0)?;
    if let Some(dg) = dg {
        out[4] = shaped(4, dg)?;
    }
    if let Some(db) = db {
        out[5] = shaped(5, db)?;
    }
    Ok(out)
}
