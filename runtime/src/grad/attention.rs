//! Backward of the raised softmax `Attention` op: projections (weights and biases), q/k
//! RMSNorms, RoPE (half-rotate or interleaved, partial rotary), GQA, causal and sliding-window
//! visibility, the exporter's mask, score soft-capping, and the cotangent of the present KV
//! cache (full-attention layers). Past keys and values, RoPE tables and masks are inputs the
//! gradient does not flow into (an error if asked).
//!
//! The forward is recomputed with the executor's own pieces (`decoder_ops`: RoPE tables and
//! rotation, masked softmax, group RMSNorm); per (batch, KV head) the backward is
//! ```text
//! P = softmax(mask(cap(scale Q K^T)));  dV += P^T dO;  dP = dO V^T
//! dS = P * (dP - rowsum(dP * P))  [* (1 - tanh^2(s / c)) with soft-capping];
//! dQ = scale dS K;  dK += scale dS^T Q          (every query head of the group)
//! ```
//! ([`head_backward`], generic over the float type so that the f64 finite-difference checks
//! run the same code), then RoPE's transpose, the q/k norm backward, and three projection
//! backwards.
use jetc_ir::AttentionSpec;
use ndarray::{ArrayD, IxDyn};
use rayon::prelude::*;

use super::norms::rms_norm_backward;
use super::{Bwd, R};
use crate::decoder_ops::{group_rms_norm, masked_softmax, rope_table};
use crate::math::{rope, rope_transpose, softmax_vjp, Real};
use crate::onnx_ops::matmul::{sgemm, Mat};
use crate::value::Data;

pub(crate) fn check(_s: &AttentionSpec, wrt: &[usize]) -> R<()> {
    use AttentionSpec as A;
    for &w in wrt {
        let why = match w {
            A::COS | A::SIN => "the RoPE tables",
            A::PAST_K | A::PAST_V => "the past KV cache",
            A::MASK => "the attention mask",
            _ => continue,
        };
        return Err(format!("input {w} of Attention ({why}) is not differentiable here"));
    }
    Ok(())
}

/// `x [rows, k] @ w [k, n]` (+ bias) with the crate's GEMM.
fn project(x: &[f32], rows: usize, w: &ArrayD<f32>, bias: Option<&ArrayD<f32>>) -> R<Vec<f32>> {
    if w.ndim() != 2 || w.shape()[0] * rows != x.len() {
        return Err(format!("weight {:?} does not fit {rows} rows of {}", w.shape(), x.len() / rows.max(1)));
    }
    let (k, n) = (w.shape()[0], w.shape()[1]);
    let wd: Vec<f32> = w.iter().copied().collect();
    let mut y = vec![0f32; rows * n];
    sgemm(rows, n, k, Mat::rows(x, k), Mat::rows(&wd, n), &mut y, 1.0, false, true)?;
    if let Some(b) = bias {
        let bd: Vec<f32> = b.iter().copied().collect();
        if bd.len() != n {
            return Err(format!("bias of {} elements for width {n}", bd.len()));
        }
        y.chunks_mut(n).for_each(|r| r.iter_mut().zip(&bd).for_each(|(v, b)| *v += b));
    }
    Ok(y)
}

/// Gradients of a projection `y = x w + b` for `dy [rows, n]`: (dw, db); dx is added to
/// `dx_acc` when given.
fn project_backward(x: &[f32], rows: usize, w: &ArrayD<f32>, dy: &[f32], dx_acc: Option<&mut [f32]>) -> R<(Vec<f32>, Vec<f32>)> {
    let (k, n) = (w.shape()[0], w.shape()[1]);
    if let Some(dx) = dx_acc {
        // dx += dy w^T.
        let wd: Vec<f32> = w.iter().copied().collect();
        sgemm(rows, k, n, Mat::rows(dy, n), Mat::transposed(&wd, n), dx, 1.0, true, true)?;
    }
    // dw = x^T dy.
    let mut dw = vec![0f32; k * n];
    sgemm(k, n, rows, Mat::transposed(x, k), Mat::rows(dy, n), &mut dw, 1.0, false, true)?;
    let mut db = vec![0f32; n];
    for r in dy.chunks(n.max(1)) {
        db.iter_mut().zip(r).for_each(|(a, v)| *a += v);
    }
    Ok((dw, db))
}


pub(crate) fn vjp(c: &Bwd, spec: &AttentionSpec) -> R<Vec<Option<ArrayD<f32>>>> {
    use AttentionSpec as A;
    let (h, kvh, d) = (spec.heads, spec.kv_heads, spec.head_dim);
    if kvh == 0 || h % kvh != 0 || d == 0 {
        return Err(format!("heads {h} / kv_heads {kvh} / head_dim {d} are inconsistent"));
    }
    let x = c.xf(A::X, "x")?;
    let [b, t, hidden] = match x.shape() {
        &[b, t, hd] => [b, t, hd],
        s => return Err(format!("x must be [B,T,hidden], got {s:?}")),
    };
    let rows = b * t;
    let xd: Vec<f32> = x.iter().copied().collect();
    let (wq, wk, wv, wo) = (c.xf(A::WQ, "wq")?, c.xf(A::WK, "wk")?, c.xf(A::WV, "wv")?, c.xf(A::WO, "wo")?);
    let (bq, bk, bv, bo) = (c.opt_xf(A::BQ, "bq")?, c.opt_xf(A::BK, "bk")?, c.opt_xf(A::BV, "bv")?, c.opt_xf(A::BO, "bo")?);
    let q0 = project(&xd, rows, wq, bq)?;
    let k0 = project(&xd, rows, wk, bk)?;
    let v = project(&xd, rows, wv, bv)?;
    if q0.len() != rows * h * d || k0.len() != rows * kvh * d || v.len() != rows * kvh * d {
        return Err("projection widths do not match heads x head_dim".into());
    }
    // q/k norms.
    let norms = match spec.qk_norm_eps {
        Some(eps) => (c.opt_xf(A::Q_NORM, "q_norm")?.map(|w| (w, eps)), c.opt_xf(A::K_NORM, "k_norm")?.map(|w| (w, eps))),
        None => (None, None),
    };
    let normed = |buf: &[f32], n: Option<(&ArrayD<f32>, f32)>, what: &str| -> R<Vec<f32>> {
        let mut out = buf.to_vec();
        if let Some((w, eps)) = n {
            group_rms_norm(&mut out, &w.iter().copied().collect::<Vec<_>>(), eps, what)?;
        }
        Ok(out)
    };
    let mut q = normed(&q0, norms.0, "q_norm")?;
    let mut k = normed(&k0, norms.1, "k_norm")?;
    // RoPE.
    let rot = spec.rotary_dim.min(d);
    let tables = match spec.rope {
        Some(_) => {
            let cos = rope_table(c.x(A::COS).ok_or("RoPE needs the cos table")?, t, "cos")?;
            let sin = rope_table(c.x(A::SIN).ok_or("RoPE needs the sin table")?, t, "sin")?;
            if (cos.batch != 1 && cos.batch != b) || (cos.width != rot && cos.width * 2 != rot) {
                return Err(format!("RoPE table [{}, {t}, {}] does not fit batch {b} / rotary_dim {rot}", cos.batch, cos.width));
            }
            Some((cos, sin))
        }
        None => None,
    };
    let table_row = |row: usize| -> usize {
        let (bi, ti) = (row / t, row % t);
        tables.as_ref().map_or(0, |(cos, _)| ((if cos.batch == 1 { 0 } else { bi }) * t + ti) * cos.width)
    };
    if let (Some(style), Some((cos, sin))) = (spec.rope, &tables) {
        for (buf, heads) in [(&mut q, h), (&mut k, kvh)] {
            buf.par_chunks_mut(heads * d).enumerate().for_each(|(row, chunk)| {
                let base = table_row(row);
                for head in chunk.chunks_mut(d) {
                    rope(&mut head[..rot], &cos.data[base..base + cos.width], &sin.data[base..base + sin.width], rot, style);
                }
            });
        }
    }
    // Keys and values over past + new tokens, [B, KV, S, D].
    let (pk, pv) = (c.opt_xf(A::PAST_K, "past_key")?, c.opt_xf(A::PAST_V, "past_value")?);
    let p = pk.map_or(0, |a| a.shape().get(2).copied().unwrap_or(0));
    if pk.is_some_and(|a| a.shape() != [b, kvh, p, d]) || pv.map(|a| a.shape()) != pk.map(|a| a.shape()) {
        return Err(format!("past key/value {:?}/{:?} do not fit [B={b}, KV={kvh}, P, D={d}]", pk.map(|a| a.shape()), pv.map(|a| a.shape())));
    }
    let s_len = p + t;
    let (pkd, pvd): (Vec<f32>, Vec<f32>) = (pk.map(|a| a.iter().copied().collect()).unwrap_or_default(), pv.map(|a| a.iter().copied().collect()).unwrap_or_default());
    let gather_kv = |new: &[f32], past: &[f32], bi: usize, hi: usize| -> Vec<f32> {
        let mut out = Vec::with_capacity(s_len * d);
        if p > 0 {
            let src = (bi * kvh + hi) * p * d;
            out.extend_from_slice(&past[src..src + p * d]);
        }
        for ti in 0..t {
            let src = ((bi * t + ti) * kvh + hi) * d;
            out.extend_from_slice(&new[src..src + d]);
        }
        out
    };
    let mask = c.x(A::MASK);
    let mask_shape = IxDyn(&[b, h, t, s_len]);
    let bad = || format!("mask {:?} does not broadcast to [{b},{h},{t},{s_len}]", mask.map(|m| m.shape().to_vec()));
    let int_keep;
    enum M<'a> {
        None,
        Keep(ndarray::ArrayViewD<'a, bool>),
        Add(ndarray::ArrayViewD<'a, f32>),
    }
    let mask = match mask.map(|m| &m.dense().data) {
        None => M::None,
        Some(Data::B(a)) => M::Keep(a.broadcast(mask_shape).ok_or_else(bad)?),
        Some(Data::F(a)) => M::Add(a.broadcast(mask_shape).ok_or_else(bad)?),
        Some(Data::I(a)) => {
            int_keep = a.mapv(|v| v != 0);
            M::Keep(int_keep.broadcast(mask_shape).ok_or_else(bad)?)
        }
        Some(Data::Q(_)) => return Err(bad()),
    };
    // Forward context (needed for dWo) and the output cotangent.
    let dy = c.req_dy(0)?;
    let dyd: Vec<f32> = dy.iter().copied().collect();
    if dyd.len() != rows * hidden {
        return Err(format!("cotangent {:?} does not fit y [{b},{t},{hidden}]", dy.shape()));
    }
    let wod: Vec<f32> = wo.iter().copied().collect();
    if wo.shape() != [h * d, hidden] {
        return Err(format!("o_proj {:?} does not map {h}x{d} to {hidden}", wo.shape()));
    }
    let mut dctx = vec![0f32; rows * h * d];
    sgemm(rows, h * d, hidden, Mat::rows(&dyd, hidden), Mat::transposed(&wod, hidden), &mut dctx, 1.0, false, true)?;
    let group = h / kvh;
    // Present-cache cotangents (full attention only: a window keeps a suffix).
    let dpresent = (c.dy(1)?, c.dy(2)?);
    if spec.window.is_some() && (dpresent.0.is_some() || dpresent.1.is_some()) {
        return Err("a gradient through the sliding-window present cache is not supported".into());
    }
    let dpk: Option<Vec<f32>> = dpresent.0.map(|a| a.iter().copied().collect());
    let dpv: Option<Vec<f32>> = dpresent.1.map(|a| a.iter().copied().collect());
    type Head = (usize, usize, Vec<Vec<f32>>, Vec<Vec<f32>>, Vec<f32>, Vec<f32>);
    let heads: Vec<R<Head>> = (0..b * kvh)
        .into_par_iter()
        .map(|bk| -> R<Head> {
            let (bi, kh) = (bk / kvh, bk % kvh);
            let ks = gather_kv(&k, &pkd, bi, kh);
            let vs = gather_kv(&v, &pvd, bi, kh);
            let mut dks = vec![0f32; s_len * d];
            let mut dvs = vec![0f32; s_len * d];
            if let Some(g) = &dpk {
                dks.copy_from_slice(&g[bk * s_len * d..(bk + 1) * s_len * d]);
            }
            if let Some(g) = &dpv {
                dvs.copy_from_slice(&g[bk * s_len * d..(bk + 1) * s_len * d]);
            }
            let mut ctxs = Vec::with_capacity(group);
            let mut dqs = Vec::with_capacity(group);
            for gi in 0..group {
                let hi = kh * group + gi;
                let mut qb = Vec::with_capacity(t * d);
                let mut dob = Vec::with_capacity(t * d);
                for ti in 0..t {
                    let o = ((bi * t + ti) * h + hi) * d;
                    qb.extend_from_slice(&q[o..o + d]);
                    dob.extend_from_slice(&dctx[o..o + d]);
                }
                let core = HeadCore { t, s: s_len, d, q: &qb, k: &ks, v: &vs, scale: spec.scale, softcap: spec.softcap };
                let visible = |ti: usize, si: usize| -> Option<f32> {
                    let pos = p + ti;
                    let mut visible = (!spec.causal || si <= pos) && spec.window.is_none_or(|w| si + w > pos);
                    let mut add = 0.0;
                    match &mask {
                        M::None => {}
                        M::Keep(m) => visible &= m[[bi, hi, ti, si]],
                        M::Add(m) => add = m[[bi, hi, ti, si]],
                    }
                    visible.then_some(add)
                };
                let (ctx, dq) = head_backward(&core, &visible, &dob, &mut dks, &mut dvs)?;
                ctxs.push(ctx);
                dqs.push(dq);
            }
            Ok((bi, kh, ctxs, dqs, dks, dvs))
        })
        .collect();
    let mut ctx_all = vec![0f32; rows * h * d];
    let mut dq = vec![0f32; rows * h * d];
    let mut dk = vec![0f32; rows * kvh * d];
    let mut dv = vec![0f32; rows * kvh * d];
    for r in heads {
        let (bi, kh, ctxs, dqs, dks, dvs) = r?;
        for (gi, (cx, g)) in ctxs.iter().zip(&dqs).enumerate() {
            let hi = kh * group + gi;
            for ti in 0..t {
                let o = ((bi * t + ti) * h + hi) * d;
                ctx_all[o..o + d].copy_from_slice(&cx[ti * d..(ti + 1) * d]);
                dq[o..o + d].copy_from_slice(&g[ti * d..(ti + 1) * d]);
            }
        }
        for ti in 0..t {
            let o = ((bi * t + ti) * kvh + kh) * d;
            dk[o..o + d].copy_from_slice(&dks[(p + ti) * d..(p + ti + 1) * d]);
            dv[o..o + d].copy_from_slice(&dvs[(p + ti) * d..(p + ti + 1) * d]);
        }
    }
    // RoPE transpose.
    if let (Some(style), Some((cos, sin))) = (spec.rope, &tables) {
        for (buf, heads) in [(&mut dq, h), (&mut dk, kvh)] {
            buf.par_chunks_mut(heads * d).enumerate().for_each(|(row, chunk)| {
                let base = table_row(row);
                for head in chunk.chunks_mut(d) {
                    rope_transpose(&mut head[..rot], &cos.data[base..base + cos.width], &sin.data[base..base + sin.width], rot, style);
                }
            });
        }
    }
    // q/k norm backward.
    let mut grads: Vec<Option<ArrayD<f32>>> = vec![None; c.spec.forward_inputs.max(A::NUM_INPUTS)];
    let arr = |shape: &[usize], v: Vec<f32>| ArrayD::from_shape_vec(IxDyn(shape), v).map_err(|e| e.to_string());
    for (buf, raw, n, slot) in [(&mut dq, &q0, norms.0, A::Q_NORM), (&mut dk, &k0, norms.1, A::K_NORM)] {
        if let Some((w, eps)) = n {
            let wd: Vec<f32> = w.iter().copied().collect();
            let (dx, dw) = rms_norm_backward(raw, &wd, buf, wd.len(), eps);
            *buf = dx;
            grads[slot] = Some(arr(w.shape(), dw)?);
        }
    }
    // Projections.
    let mut dx = vec![0f32; rows * hidden];
    let (dwo, dbo) = project_backward(&ctx_all, rows, wo, &dyd, None)?;
    for (w, bias, g, ws, bs) in [(wq, bq, &dq, A::WQ, A::BQ), (wk, bk, &dk, A::WK, A::BK), (wv, bv, &dv, A::WV, A::BV)] {
        let (dw, db) = project_backward(&xd, rows, w, g, Some(&mut dx))?;
        grads[ws] = Some(arr(w.shape(), dw)?);
        if let Some(bias) = bias {
            grads[bs] = Some(arr(bias.shape(), db)?);
        }
    }
    grads[A::WO] = Some(arr(wo.shape(), dwo)?);
    if let Some(bias) = bo {
        grads[A::BO] = Some(arr(bias.shape(), dbo)?);
    }
    grads[A::X] = Some(arr(x.shape(), dx)?);
    Ok(grads)
}

/// One query head against its key/value head: `t` queries over `s` keys (past + new), head
/// width `d`, row-major `q` [t, d], `k` and `v` [s, d].
pub struct HeadCore<'a, T> {
    pub t: usize,
    pub s: usize,
    pub d: usize,
    pub q: &'a [T],
    pub k: &'a [T],
    pub v: &'a [T],
    pub scale: T,
    pub softcap: Option<T>,
}

/// The attention mask of one head: `visible(ti, si)` is `None` for a hidden key, else the
/// additive mask value.
pub type Visible<'a, T> = dyn Fn(usize, usize) -> Option<T> + 'a;

/// What one head's forward computes.
pub struct HeadForward<T> {
    /// The scaled scores before soft-capping (only when capped: the backward needs them).
    pub raw: Option<Vec<T>>,
    /// Probabilities [t, s].
    pub prob: Vec<T>,
    /// Context [t, d].
    pub ctx: Vec<T>,
}

/// Forward of one head. Generic, so the finite-difference checks run it in f64.
pub fn head_forward<T: Real>(h: &HeadCore<T>, visible: &Visible<T>) -> R<HeadForward<T>> {
    let (t, s_len, d) = (h.t, h.s, h.d);
    let mut sc = vec![T::zero(); t * s_len];
    sgemm(t, s_len, d, Mat::rows(h.q, d), Mat::transposed(h.k, d), &mut sc, h.scale, false, false)?;
    let raw = h.softcap.map(|_| sc.clone());
    if let Some(cap) = h.softcap {
        sc.iter_mut().for_each(|v| *v = cap * (*v / cap).tanh());
    }
    for (ti, row) in sc.chunks_mut(s_len.max(1)).enumerate() {
        masked_softmax(row, |si| visible(ti, si));
    }
    let mut ctx = vec![T::zero(); t * d];
    sgemm(t, d, s_len, Mat::rows(&sc, s_len), Mat::rows(h.v, d), &mut ctx, T::one(), false, false)?;
    Ok(HeadForward { raw, prob: sc, ctx })
}

/// Backward of one head from the context cotangent `dout` [t, d]: returns (context, dq) and
/// adds dk and dv into `dk`, `dv` [s, d] (a key head sums over its query group).
pub fn head_backward<T: Real>(h: &HeadCore<T>, visible: &Visible<T>, dout: &[T], dk: &mut [T], dv: &mut [T]) -> R<(Vec<T>, Vec<T>)> {
    let (t, s_len, d) = (h.t, h.s, h.d);
    let HeadForward { raw, prob, ctx } = head_forward(h, visible)?;
    // dV += P^T dO; dP = dO V^T.
    sgemm(s_len, d, t, Mat::transposed(&prob, s_len), Mat::rows(dout, d), dv, T::one(), true, false)?;
    let mut dp = vec![T::zero(); t * s_len];
    sgemm(t, s_len, d, Mat::rows(dout, d), Mat::transposed(h.v, d), &mut dp, T::one(), false, false)?;
    let mut ds = vec![T::zero(); s_len];
    for (dr, pr) in dp.chunks_mut(s_len.max(1)).zip(prob.chunks(s_len.max(1))) {
        softmax_vjp(pr, dr, &mut ds[..dr.len()]);
        dr.copy_from_slice(&ds[..dr.len()]);
    }
    if let (Some(cap), Some(raw)) = (h.softcap, &raw) {
        dp.iter_mut().zip(raw).for_each(|(g, &r)| {
            let th = (r / cap).tanh();
            *g *= T::one() - th * th;
        });
    }
    // dQ = scale dS K; dK += scale dS^T Q.
    let mut dq = vec![T::zero(); t * d];
    sgemm(t, d, s_len, Mat::rows(&dp, s_len), Mat::rows(h.k, d), &mut dq, h.scale, false, false)?;
    sgemm(s_len, d, t, Mat::transposed(&dp, s_len), Mat::rows(h.q, d), dk, h.scale, true, false)?;
    Ok((ctx, dq))
}
