//! Scaled dot-product attention: the shared kernel (per batch × head on rayon, scores with
//! `gemm`, f32 softmax with the max subtracted, fully masked rows give zeros) and the ONNX
//! `Attention` op (opsets 23, 24 and the 25 window attributes).
//!
//! ONNX Attention: Q, K, V are 4-D [B, heads, S, head] or 3-D [B, S, heads·head] (then
//! `q_num_heads` and `kv_num_heads` are required). K/V heads are shared by groups of
//! q_num_heads / kv_num_heads consecutive query heads. past_key/past_value [B, kv_heads, P,
//! head] are concatenated in front of K/V and returned as present_key/present_value.
//! `attn_mask` is bool (true = attend) or float (added), broadcast to [B, q_heads, S_q, T];
//! a mask shorter than T is padded with false / -inf. `is_causal` uses the bottom-right
//! alignment of the current spec: query i sees key j iff j <= i + offset, offset = P with a
//! past, nonpad_kv_seqlen[b] − S_q with `nonpad_kv_seqlen` (opset 24), else 0. Keys at or
//! beyond nonpad_kv_seqlen[b] are masked. `softcap` applies before the mask.
//! `qk_matmul_output_mode` 0/1/2/3 returns the scaled scores, after softcap, after the bias,
//! or the probabilities. `softmax_precision` is accepted and ignored (softmax runs in f32).
use rayon::prelude::*;

use super::common::{array, contiguous, to_vec, Ctx, OpResult};
use super::matmul::{sgemm, Mat};
use crate::math::softmax;
use crate::value::{Data, Value};

/// Sizes of one attention problem; Q is [B, Hq, Sq, D], K [B, Hkv, T, D], V [B, Hkv, T, Dv].
#[derive(Clone, Copy, Debug)]
pub(crate) struct AttnDims {
    pub batch: usize,
    pub q_heads: usize,
    pub kv_heads: usize,
    pub q_len: usize,
    pub kv_len: usize,
    pub head_dim: usize,
    pub v_head_dim: usize,
}

/// Which intermediate score matrix to return.
#[derive(Clone, Copy, Debug, PartialEq)]
pub(crate) enum QkStage {
    Raw,
    Softcapped,
    Biased,
    Probs,
}

pub(crate) struct AttnParams<'a> {
    pub scale: f32,
    /// `c · tanh(s / c)` when > 0.
    pub softcap: f32,
    pub capture: Option<QkStage>,
    /// Per query head, an extra logit that only enlarges the softmax denominator (attention
    /// sinks / smooth softmax).
    pub sinks: Option<&'a [f32]>,
}

/// Adds the mask for query `i` of (batch, q head) to a score row of length T (−inf masks).
pub(crate) type BiasFn<'a> = dyn Fn(usize, usize, usize, &mut [f32]) + Sync + 'a;


/// Computes attention; returns Y [B, Hq, Sq, Dv] and, when asked, the captured scores
/// [B, Hq, Sq, T] (else an empty vector).
pub(crate) fn attention_core(
    d: &AttnDims,
    q: &[f32],
    k: &[f32],
    v: &[f32],
    p: &AttnParams,
    bias: &BiasFn,
) -> OpResult<(Vec<f32>, Vec<f32>)> {
    let AttnDims { batch, q_heads: hq, kv_heads: hkv, q_len: sq, kv_len: t, head_dim: dh, v_head_dim: dv } = *d;
    if hkv == 0 || hq % hkv != 0 {
        return Err(format!("q_num_heads {hq} must be a multiple of kv_num_heads {hkv}"));
    }
    if q.len() != batch * hq * sq * dh || k.len() != batch * hkv * t * dh || v.len() != batch * hkv * t * dv {
        return Err(format!("internal error: attention buffers do not match {d:?}"));
    }
    if let Some(s) = p.sinks {
        if s.len() != hq {
            return Err(format!("head sinks have {} entries, expected one per query head ({hq})", s.len()));
        }
    }
    let tasks = batch * hq;
    let mut y = vec![0f32; tasks * sq * dv];
    let mut qk = if p.capture.is_some() { vec![0f32; tasks * sq * t] } else { Vec::new() };
    if tasks * sq == 0 {
        return Ok((y, qk));
    }
    let group = hq / hkv;
    let threads = tasks < 2;
    let one = |task: usize, yc: &mut [f32], mut qc: Option<&mut [f32]>| -> OpResult<()> {
        let (b, h) = (task / hq, task % hq);
        let kvh = b * hkv + h / group;
        let qs = &q[task * sq * dh..(task + 1) * sq * dh];
        let ks = &k[kvh * t * dh..(kvh + 1) * t * dh];
        let vs = &v[kvh * t * dv..(kvh + 1) * t * dv];
        let mut sc = vec![0f32; sq * t];
        let mut keep = |stage: QkStage, sc: &[f32]| {
            if let (Some(c), true) = (qc.as_deref_mut(), p.capture == Some(stage)) {
                c.copy_from_slice(sc);
            }
        };
        sgemm(sq, t, dh, Mat::rows(qs, dh), Mat::transposed(ks, dh), &mut sc, p.scale, false, threads)?;
        keep(QkStage::Raw, &sc);
        if p.softcap > 0.0 {
            let c = p.softcap;
            sc.iter_mut().for_each(|s| *s = c * (*s / c).tanh());
        }
        keep(QkStage::Softcapped, &sc);
        if t > 0 {
            for (i, row) in sc.chunks_mut(t).enumerate() {
                bias(b, h, i, row);
            }
        }
        keep(QkStage::Biased, &sc);
        if t > 0 {
            let sink = p.sinks.map(|s| s[h]);
            sc.chunks_mut(t).for_each(|row| softmax(row, sink));
        }
        keep(QkStage::Probs, &sc);
        sgemm(sq, dv, t, Mat::rows(&sc, t), Mat::rows(vs, dv), yc, 1.0, false, threads)
    };
    if dv == 0 || t == 0 {
        // No key or an empty value head: every output row is zeros.
        return Ok((y, qk));
    }
    if p.capture.is_some() {
        y.par_chunks_mut(sq * dv)
            .zip(qk.par_chunks_mut(sq * t))
            .enumerate()
            .try_for_each(|(i, (yc, qc))| one(i, yc, Some(qc)))?;
    } else {
        y.par_chunks_mut(sq * dv).enumerate().try_for_each(|(i, yc)| one(i, yc, None))?;
    }
    Ok((y, qk))
}

/// [B, S, N, H] → [B, N, S, H] (and back with the roles of S and N swapped).
pub(crate) fn swap_middle(x: &[f32], b: usize, s: usize, n: usize, h: usize) -> Vec<f32> {
    let mut out = vec![0f32; x.len()];
    for bi in 0..b {
        for si in 0..s {
            for ni in 0..n {
                let src = ((bi * s + si) * n + ni) * h;
                let dst = ((bi * n + ni) * s + si) * h;
                out[dst..dst + h].copy_from_slice(&x[src..src + h]);
            }
        }
    }
    out
}

/// Concatenates past [B, N, P, H] and new [B, N, S, H] along the sequence.
pub(crate) fn concat_seq(past: &[f32], new: &[f32], b: usize, n: usize, p: usize, s: usize, h: usize) -> Vec<f32> {
    let mut out = Vec::with_capacity(b * n * (p + s) * h);
    for bn in 0..b * n {
        out.extend_from_slice(&past[bn * p * h..(bn + 1) * p * h]);
        out.extend_from_slice(&new[bn * s * h..(bn + 1) * s * h]);
    }
    out
}

/// A 4-D input as (dims, BNSH data) from 3-D [B, S, heads·head] or 4-D [B, heads, S, head].
fn to_bnsh(a: &ndarray::ArrayD<f32>, heads: Option<usize>, name: &str) -> OpResult<([usize; 4], Vec<f32>)> {
    match (a.shape(), heads) {
        (&[b, n, s, h], _) => Ok(([b, n, s, h], to_vec(a))),
        (&[b, s, hid], Some(n)) => {
            if n == 0 || hid % n != 0 {
                return Err(format!("{name} hidden size {hid} is not divisible by its head count {n}"));
            }
            Ok(([b, n, s, hid / n], swap_middle(&contiguous(a), b, s, n, hid / n)))
        }
        (&[_, _, _], None) => Err("3-D inputs need the q_num_heads and kv_num_heads attributes".into()),
        (sh, _) => Err(format!("{name} must be 3-D or 4-D, got shape {sh:?}")),
    }
}

/// The attention mask as an additive bias of shape [mb, mh, Sq, T] (mb ∈ {1, B},
/// mh ∈ {1, Hq}).
struct MaskBias {
    data: Vec<f32>,
    mb: usize,
    mh: usize,
}

fn mask_bias(m: &Value, b: usize, hq: usize, sq: usize, t: usize) -> OpResult<MaskBias> {
    let shape = m.shape();
    if shape.is_empty() || shape.len() > 4 {
        return Err(format!("attn_mask must have rank 1 to 4, got shape {shape:?}"));
    }
    let mut s4 = vec![1usize; 4 - shape.len()];
    s4.extend_from_slice(shape);
    let (m0, m1, m2, m3) = (s4[0], s4[1], s4[2], s4[3]);
    if (m0 != 1 && m0 != b) || (m1 != 1 && m1 != hq) || (m2 != 1 && m2 != sq) || m3 > t {
        return Err(format!("attn_mask of shape {shape:?} does not broadcast to [{b}, {hq}, {sq}, {t}]"));
    }
    let vals: Vec<f32> = match &m.dense().data {
        Data::B(a) => a.iter().map(|&v| if v { 0.0 } else { f32::NEG_INFINITY }).collect(),
        Data::F(a) => to_vec(a),
        Data::I(_) => return Err(format!("attn_mask must be bool or float, got {}", m.dtype)),
        Data::Q(_) => return Err(crate::value::NOT_DENSE.into()),
    };
    let mut data = vec![f32::NEG_INFINITY; m0 * m1 * sq * t];
    for a in 0..m0 * m1 {
        for i in 0..sq {
            let src = (a * m2 + if m2 == 1 { 0 } else { i }) * m3;
            let dst = (a * sq + i) * t;
            data[dst..dst + m3].copy_from_slice(&vals[src..src + m3]);
        }
    }
    Ok(MaskBias { data, mb: m0, mh: m1 })
}

/// ONNX Attention (opset 23+).
pub(crate) fn attention_onnx(ctx: &Ctx) -> OpResult {
    let qv = ctx.input(0)?;
    let (q, k, v) = (ctx.f32(0)?, ctx.f32(1)?, ctx.f32(2)?);
    if q.ndim() != k.ndim() || q.ndim() != v.ndim() {
        return Err(format!("Q {:?}, K {:?} and V {:?} must have one rank", q.shape(), k.shape(), v.shape()));
    }
    let three_d = q.ndim() == 3;
    let heads = |name: &str| -> OpResult<Option<usize>> {
        match ctx.attr_int(name)? {
            Some(n) if n > 0 => Ok(Some(n as usize)),
            Some(n) => Err(format!("attribute `{name}` must be positive, got {n}")),
            None => Ok(None),
        }
    };
    let (qh, kvh) = if three_d { (heads("q_num_heads")?, heads("kv_num_heads")?) } else { (None, None) };
    if three_d && (qh.is_none() || kvh.is_none()) {
        return Err("3-D inputs need the q_num_heads and kv_num_heads attributes".into());
    }
    let ([b, hq, sq, dh], qd) = to_bnsh(q, qh, "Q")?;
    let ([bk, hkv, skv, dk], kd) = to_bnsh(k, kvh, "K")?;
    let ([bv, hv, sv, dv], vd) = to_bnsh(v, kvh, "V")?;
    if bk != b || bv != b || dk != dh || hv != hkv || sv != skv {
        return Err(format!(
            "inconsistent shapes: Q {:?}, K {:?}, V {:?} (batch, heads, kv length and Q/K head size must agree)",
            q.shape(),
            k.shape(),
            v.shape()
        ));
    }
    let (pk, pv) = (ctx.opt_f32(4)?, ctx.opt_f32(5)?);
    let (kd, vd, past) = match (pk, pv) {
        (None, None) => (kd, vd, 0),
        (Some(pk), Some(pv)) => {
            let p = pk.shape().get(2).copied().unwrap_or(0);
            if pk.shape() != [b, hkv, p, dh] || pv.shape() != [b, hkv, p, dv] {
                return Err(format!(
                    "past_key {:?} / past_value {:?} must be [{b}, {hkv}, P, {dh}] / [{b}, {hkv}, P, {dv}]",
                    pk.shape(),
                    pv.shape()
                ));
            }
            (
                concat_seq(&contiguous(pk), &kd, b, hkv, p, skv, dh),
                concat_seq(&contiguous(pv), &vd, b, hkv, p, skv, dv),
                p,
            )
        }
        _ => return Err("past_key and past_value must be given together".into()),
    };
    let t = past + skv;
    let nonpad: Option<Vec<i64>> = match ctx.opt_ints(6)? {
        None => None,
        Some(_) if past > 0 || pk.is_some() => {
            return Err("nonpad_kv_seqlen cannot be combined with past_key/past_value".into())
        }
        Some(n) if n.len() != b => return Err(format!("nonpad_kv_seqlen must have {b} entries, got {}", n.len())),
        Some(n) => {
            if let Some(x) = n.iter().find(|&&x| x < 0 || x > t as i64) {
                return Err(format!("nonpad_kv_seqlen value {x} is outside 0..={t}"));
            }
            Some(n)
        }
    };
    let mask = ctx.opt(3).map(|m| mask_bias(m, b, hq, sq, t)).transpose()?;
    let causal = ctx.flag("is_causal", false)?;
    let left = ctx.int_or("left_window_size", -1)?;
    let right = ctx.int_or("right_window_size", -1)?;
    let offsets: Vec<i64> = (0..b)
        .map(|bi| match &nonpad {
            Some(n) if past == 0 => n[bi] - sq as i64,
            _ => past as i64,
        })
        .collect();
    let bias = |bi: usize, h: usize, i: usize, row: &mut [f32]| {
        if let Some(m) = &mask {
            let a = (if m.mb == 1 { 0 } else { bi }) * m.mh + if m.mh == 1 { 0 } else { h };
            let src = &m.data[(a * sq + i) * t..(a * sq + i + 1) * t];
            row.iter_mut().zip(src).for_each(|(r, &s)| *r += s);
        }
        let pos = i as i64 + offsets[bi];
        for (j, r) in row.iter_mut().enumerate() {
            let j = j as i64;
            let hidden = (causal && j > pos)
                || (left >= 0 && j < pos - left)
                || (right >= 0 && j > pos + right)
                || nonpad.as_ref().is_some_and(|n| j >= n[bi]);
            if hidden {
                *r = f32::NEG_INFINITY;
            }
        }
    };
    let mode = ctx.int_or("qk_matmul_output_mode", 0)?;
    let stage = match mode {
        0 => QkStage::Raw,
        1 => QkStage::Softcapped,
        2 => QkStage::Biased,
        3 => QkStage::Probs,
        m => return Err(format!("qk_matmul_output_mode must be 0, 1, 2 or 3, got {m}")),
    };
    let scale = match ctx.attr_float("scale")? {
        Some(s) => s,
        None => 1.0 / (dh as f32).sqrt(),
    };
    let params = AttnParams {
        scale,
        softcap: ctx.float_or("softcap", 0.0)?,
        capture: if ctx.num_outputs >= 4 { Some(stage) } else { None },
        sinks: None,
    };
    let dims = AttnDims { batch: b, q_heads: hq, kv_heads: hkv, q_len: sq, kv_len: t, head_dim: dh, v_head_dim: dv };
    let (y, qk) = attention_core(&dims, &qd, &kd, &vd, &params, &bias)?;
    let f = |shape: &[usize], d: Vec<f32>| -> OpResult<Value> {
        Ok(Value { dtype: qv.dtype, data: Data::F(array(shape, d)?) })
    };
    let y = if three_d { f(&[b, sq, hq * dv], swap_middle(&y, b, hq, sq, dv))? } else { f(&[b, hq, sq, dv], y)? };
    let mut outs = vec![y, f(&[b, hkv, t, dh], kd)?, f(&[b, hkv, t, dv], vd)?];
    if params.capture.is_some() {
        outs.push(f(&[b, hq, sq, t], qk)?);
    }
    Ok(outs)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::super::common::test_util::*;
    use super::swap_middle;
    use jetc_ir::Attr;

    /// f64 oracle: Q [B,Hq,Sq,D], K/V [B,Hkv,T,*], additive bias per (b, h, i, j) (−inf masks),
    /// optional softcap; fully masked rows give zeros. Returns Y [B,Hq,Sq,Dv] and the
    /// probabilities.
    #[allow(clippy::too_many_arguments)]
    pub fn oracle(
        q: &[f32],
        k: &[f32],
        v: &[f32],
        (b, hq, hkv, sq, t, d, dv): (usize, usize, usize, usize, usize, usize, usize),
        scale: f64,
        softcap: f64,
        bias: &dyn Fn(usize, usize, usize, usize) -> f64,
    ) -> (Vec<f64>, Vec<f64>) {
        let mut y = vec![0f64; b * hq * sq * dv];
        let mut probs = vec![0f64; b * hq * sq * t];
        for bi in 0..b {
            for h in 0..hq {
                let kh = h / (hq / hkv);
                for i in 0..sq {
                    let mut s: Vec<f64> = (0..t)
                        .map(|j| {
                            let dot: f64 = (0..d)
                                .map(|c| {
                                    q[((bi * hq + h) * sq + i) * d + c] as f64
                                        * k[((bi * hkv + kh) * t + j) * d + c] as f64
                                })
                                .sum();
                            let mut x = dot * scale;
                            if softcap > 0.0 {
                                x = softcap * (x / softcap).tanh();
                            }
                            x + bias(bi, h, i, j)
                        })
                        .collect();
                    let m = s.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
                    if m == f64::NEG_INFINITY {
                        continue;
                    }
                    let z: f64 = s.iter().map(|x| (x - m).exp()).sum();
                    s.iter_mut().for_each(|x| *x = (*x - m).exp() / z);
                    for j in 0..t {
                        probs[((bi * hq + h) * sq + i) * t + j] = s[j];
                        for c in 0..dv {
                            y[((bi * hq + h) * sq + i) * dv + c] += s[j] * v[((bi * hkv + kh) * t + j) * dv + c] as f64;
                        }
                    }
                }
            }
        }
        (y, probs)
    }

    #[test]
    fn gqa_4d_with_past_causal_and_bool_mask() {
        let (b, hq, hkv, sq, p, d, dv) = (2, 4, 2, 3, 2, 8, 6);
        let t = p + sq;
        let mut rng = Rng::new(31);
        let (q, k, v) = (rng.vec(b * hq * sq * d), rng.vec(b * hkv * sq * d), rng.vec(b * hkv * sq * dv));
        let (pk, pv) = (rng.vec(b * hkv * p * d), rng.vec(b * hkv * p * dv));
        // Batch 1 hides key 0 through a [B, 1, 1, T] bool mask.
        let mut m = vec![true; b * t];
        m[t] = false;
        let o = op("Attention", 23, &[("is_causal", Attr::Int(1))]);
        let outs = run_opt(
            &o,
            &[
                Some(&f(&[b, hq, sq, d], &q)),
                Some(&f(&[b, hkv, sq, d], &k)),
                Some(&f(&[b, hkv, sq, dv], &v)),
                Some(&crate::onnx_ops::common::test_util::b(&[b, 1, 1, t], &m)),
                Some(&f(&[b, hkv, p, d], &pk)),
                Some(&f(&[b, hkv, p, dv], &pv)),
            ],
            4,
        )
        .unwrap();
        let kk = super::concat_seq(&pk, &k, b, hkv, p, sq, d);
        let vv = super::concat_seq(&pv, &v, b, hkv, p, sq, dv);
        let bias = |bi: usize, _h: usize, i: usize, j: usize| {
            if j > i + p || (bi == 1 && j == 0) {
                f64::NEG_INFINITY
            } else {
                0.0
            }
        };
        let (want, _) = oracle(&q, &kk, &vv, (b, hq, hkv, sq, t, d, dv), 1.0 / (d as f64).sqrt(), 0.0, &bias);
        assert_close(&fvec(&outs[0]), &want, 1e-5);
        assert_eq!(outs[1].shape(), &[b, hkv, t, d]);
        assert_eq!(fvec(&outs[1]), kk);
        assert_eq!(fvec(&outs[2]), vv);
        // Mode 0: raw scaled scores, unmasked.
        let raw = fvec(&outs[3]);
        let dot: f64 = (0..d).map(|c| q[c] as f64 * kk[(t - 1) * d + c] as f64).sum();
        assert_close(&raw[t - 1..t], &[dot / (d as f64).sqrt()], 1e-5);
    }

    #[test]
    fn three_d_float_mask_softcap_scale_and_probs() {
        let (b, hq, hkv, sq, t, d) = (1, 2, 1, 2, 3, 4);
        let mut rng = Rng::new(32);
        let (q, k, v) = (rng.vec(b * sq * hq * d), rng.vec(b * t * hkv * d), rng.vec(b * t * hkv * d));
        let maskv: Vec<f32> = rng.vec(sq * t);
        let o = op(
            "Attention",
            23,
            &[
                ("q_num_heads", Attr::Int(hq as i64)),
                ("kv_num_heads", Attr::Int(hkv as i64)),
                ("scale", Attr::Float(0.7)),
                ("softcap", Attr::Float(0.5)),
                ("qk_matmul_output_mode", Attr::Int(3)),
            ],
        );
        let outs = run_opt(
            &o,
            &[
                Some(&f(&[b, sq, hq * d], &q)),
                Some(&f(&[b, t, d], &k)),
                Some(&f(&[b, t, d], &v)),
                Some(&f(&[sq, t], &maskv)),
            ],
            4,
        )
        .unwrap();
        let qb = swap_middle(&q, b, sq, hq, d);
        let bias = |_b: usize, _h: usize, i: usize, j: usize| maskv[i * t + j] as f64;
        let (want, probs) = oracle(&qb, &k, &v, (b, hq, hkv, sq, t, d, d), 0.7, 0.5, &bias);
        let want_bsh: Vec<f64> = swap_middle(&want.iter().map(|&x| x as f32).collect::<Vec<_>>(), b, hq, sq, d)
            .iter()
            .map(|&x| x as f64)
            .collect();
        assert_eq!(outs[0].shape(), &[b, sq, hq * d]);
        assert_close(&fvec(&outs[0]), &want_bsh, 1e-5);
        assert_close(&fvec(&outs[3]), &probs, 1e-5);
    }

    #[test]
    fn short_mask_padding_nonpad_and_fully_masked_rows() {
        let (b, h, sq, t, d) = (2, 1, 2, 4, 4);
        let mut rng = Rng::new(33);
        let (q, k, v) = (rng.vec(b * h * sq * d), rng.vec(b * h * t * d), rng.vec(b * h * t * d));
        // Opset 24: external cache with nonpad lengths 3 and 1, causal (offset = nonpad − Sq).
        let o = op("Attention", 24, &[("is_causal", Attr::Int(1))]);
        let outs = run_opt(
            &o,
            &[
                Some(&f(&[b, h, sq, d], &q)),
                Some(&f(&[b, h, t, d], &k)),
                Some(&f(&[b, h, t, d], &v)),
                None,
                None,
                None,
                Some(&i(&[b], &[3, 1])),
            ],
            1,
        )
        .unwrap();
        let n = [3i64, 1];
        let bias = |bi: usize, _h: usize, i: usize, j: usize| {
            let off = n[bi] - sq as i64;
            if j as i64 > i as i64 + off || j as i64 >= n[bi] {
                f64::NEG_INFINITY
            } else {
                0.0
            }
        };
        let (want, _) = oracle(&q, &k, &v, (b, h, h, sq, t, d, d), 0.5, 0.0, &bias);
        let got = fvec(&outs[0]);
        assert_close(&got, &want, 1e-5);
        // Batch 1, query 0 sees no key (offset −1): its output row is zeros, not NaN.
        assert!(got[sq * d..sq * d + d].iter().all(|&x| x == 0.0));
        // A bool mask with only 2 of 4 key columns is padded with false.
        let m = crate::onnx_ops::common::test_util::b(&[sq, 2], &[true, false, true, true]);
        let outs = run_opt(
            &op("Attention", 23, &[]),
            &[Some(&f(&[b, h, sq, d], &q)), Some(&f(&[b, h, t, d], &k)), Some(&f(&[b, h, t, d], &v)), Some(&m)],
            1,
        )
        .unwrap();
        let bias = |_b: usize, _h: usize, i: usize, j: usize| {
            if j >= 2 || (i == 0 && j == 1) {
                f64::NEG_INFINITY
            } else {
                0.0
            }
        };
        let (want, _) = oracle(&q, &k, &v, (b, h, h, sq, t, d, d), 0.5, 0.0, &bias);
        assert_close(&fvec(&outs[0]), &want, 1e-5);
    }

    #[test]
    fn opset25_sliding_window() {
        let (b, h, sq, t, d) = (1, 2, 4, 6, 4);
        let p = t - sq;
        let mut rng = Rng::new(34);
        let (q, k, v) = (rng.vec(b * h * sq * d), rng.vec(b * h * sq * d), rng.vec(b * h * sq * d));
        let (pk, pv) = (rng.vec(b * h * p * d), rng.vec(b * h * p * d));
        let o = op("Attention", 25, &[("is_causal", Attr::Int(1)), ("left_window_size", Attr::Int(2))]);
        let outs = run_opt(
            &o,
            &[
                Some(&f(&[b, h, sq, d], &q)),
                Some(&f(&[b, h, sq, d], &k)),
                Some(&f(&[b, h, sq, d], &v)),
                None,
                Some(&f(&[b, h, p, d], &pk)),
                Some(&f(&[b, h, p, d], &pv)),
            ],
            1,
        )
        .unwrap();
        let kk = super::concat_seq(&pk, &k, b, h, p, sq, d);
        let vv = super::concat_seq(&pv, &v, b, h, p, sq, d);
        // Query i sits at absolute position p + i and sees keys p + i − 2 ..= p + i.
        let bias = |_b: usize, _h: usize, i: usize, j: usize| {
            let pos = (p + i) as i64;
            if (j as i64) > pos || (j as i64) < pos - 2 {
                f64::NEG_INFINITY
            } else {
                0.0
            }
        };
        let (want, _) = oracle(&q, &kk, &vv, (b, h, h, sq, t, d, d), 0.5, 0.0, &bias);
        assert_close(&fvec(&outs[0]), &want, 1e-5);
    }

    #[test]
    fn attention_errors() {
        let q = f(&[1, 2, 1, 4], &[0.; 8]);
        let k = f(&[1, 3, 1, 4], &[0.; 12]);
        let e = run(&op("Attention", 23, &[]), &[&q, &k, &k]).unwrap_err();
        assert!(e.to_string().contains("multiple of kv_num_heads"), "{e}");
        let e = run(
            &op("Attention", 23, &[]),
            &[&f(&[1, 2, 8], &[0.; 16]), &f(&[1, 2, 8], &[0.; 16]), &f(&[1, 2, 8], &[0.; 16])],
        )
        .unwrap_err();
        assert!(e.to_string().contains("q_num_heads"), "{e}");
        let e = run(&op("Attention", 23, &[]), &[&q, &f(&[1, 2, 1, 3], &[0.; 6]), &q]).unwrap_err();
        assert!(e.to_string().contains("inconsistent shapes"), "{e}");
    }
}
