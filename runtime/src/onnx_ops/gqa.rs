//! com.microsoft GroupQueryAttention, following onnxruntime's CPU kernel.
//!
//! Inputs: query [B, S, N·H] (or packed QKV [B, S, (N + 2·KVN)·H] with key/value absent),
//! key/value [B, S, KVN·H], past_key/past_value [B, KVN, P, H] (BNSH), seqlens_k [B]
//! (= total length − 1 per batch), total_sequence_length (scalar), cos_cache/sin_cache
//! [max_pos, R/2], position_ids [B, S]?, attention_bias [B|1, N|1, S, T]?, head_sink [N]?.
//! Attributes: num_heads, kv_num_heads, scale (0 → 1/√H), softcap, do_rotary,
//! rotary_interleaved, local_window_size, smooth_softmax.
//!
//! Semantics (as onnxruntime): the first prompt is S == total_sequence_length; there every
//! batch starts at position 0 and keys beyond its own length (seqlens_k + 1) are ignored.
//! Otherwise (token generation, or a subsequent prompt with B = 1) the S new tokens of batch
//! b sit at positions past_b .. past_b + S with past_b = seqlens_k[b] + 1 − S: the first
//! past_b rows of past_key/value are kept and the new K/V written after them into
//! present_key/value of length max(total_sequence_length, P) (other rows are zero). With
//! do_rotary the new Q and K rotate at those positions (or at position_ids when given).
//! Query i attends keys j < min(past_b + i + 1, total_b); a local window keeps only the last
//! `local_window_size` of them. Softcap applies before attention_bias; head_sink (or
//! smooth_softmax, with sink 0) adds exp(sink) to the softmax denominator.
//!
//! Rejected: quantized KV caches (k_scale/v_scale, k_quant_type ≠ NONE), q/k norm weights,
//! sliding_window_cache = 1, qk_output ≠ 0, causal = 0.
use super::attention::{attention_core, swap_middle, AttnDims, AttnParams};
use super::common::{array, contiguous, to_vec, Ctx, OpResult};
use super::rotary::{apply_rope, check_rows, Cache, HeadLayout};
use crate::value::{Data, Value};

fn positive(ctx: &Ctx, name: &str) -> OpResult<usize> {
    match ctx.req_int(name)? {
        n if n > 0 => Ok(n as usize),
        n => Err(format!("attribute `{name}` must be positive, got {n}")),
    }
}

fn reject_unsupported(ctx: &Ctx) -> OpResult<()> {
    for (i, name) in [(12, "k_scale"), (13, "v_scale"), (14, "q_norm_weight"), (15, "k_norm_weight")] {
        if ctx.opt(i).is_some() {
            return Err(format!("input {i} ({name}) is not supported"));
        }
    }
    for name in ["k_quant_type", "v_quant_type"] {
        if let Some(q) = ctx.attr_string(name)? {
            if q != "NONE" {
                return Err(format!("quantized KV cache ({name} = {q:?}) is not supported"));
            }
        }
    }
    if ctx.int_or("sliding_window_cache", 0)? != 0 {
        return Err("sliding_window_cache = 1 is not supported".into());
    }
    if ctx.int_or("qk_output", 0)? != 0 {
        return Err("qk_output is not supported".into());
    }
    if ctx.int_or("causal", 1)? != 1 {
        return Err("causal = 0 (bidirectional GroupQueryAttention) is not supported".into());
    }
    Ok(())
}

/// Splits [B, S, (a + b + c)·H] rows into three [B, S, ·] buffers.
fn split_packed(x: &[f32], rows: usize, widths: [usize; 3]) -> [Vec<f32>; 3] {
    let w: usize = widths.iter().sum();
    let mut out = widths.map(|n| Vec::with_capacity(rows * n));
    for r in 0..rows {
        let mut o = r * w;
        for (dst, &n) in out.iter_mut().zip(&widths) {
            dst.extend_from_slice(&x[o..o + n]);
            o += n;
        }
    }
    out
}

/// Per-batch bookkeeping.
struct BatchPos {
    /// Valid keys (past + new) = seqlens_k[b] + 1.
    total: usize,
    /// Rows of the past kept, and the row where the new tokens go.
    past: usize,
    /// Rotary position of the first new token.
    rope_start: usize,
}

pub(crate) fn group_query_attention(ctx: &Ctx) -> OpResult {
    reject_unsupported(ctx)?;
    let qv = ctx.input(0)?;
    let q = ctx.f32(0)?;
    let (n, kvn) = (positive(ctx, "num_heads")?, positive(ctx, "kv_num_heads")?);
    if n % kvn != 0 {
        return Err(format!("num_heads {n} must be a multiple of kv_num_heads {kvn}"));
    }
    let &[b, s, width] = q.shape() else {
        return Err(format!("query must be 3-D [B, S, hidden], got {:?}", q.shape()));
    };
    let (h, qd, kd, vd) = match (ctx.opt_f32(1)?, ctx.opt_f32(2)?) {
        (None, None) => {
            let h = width / (n + 2 * kvn);
            if h * (n + 2 * kvn) != width {
                return Err(format!("packed QKV width {width} is not (num_heads + 2·kv_num_heads)·head_size"));
            }
            let [a, c, d] = split_packed(&to_vec(q), b * s, [n * h, kvn * h, kvn * h]);
            (h, a, c, d)
        }
        (Some(k), Some(v)) => {
            let h = width / n;
            if h * n != width {
                return Err(format!("query width {width} is not divisible by num_heads {n}"));
            }
            if k.shape() != [b, s, kvn * h] || v.shape() != [b, s, kvn * h] {
                return Err(format!("key {:?} and value {:?} must be [{b}, {s}, {}]", k.shape(), v.shape(), kvn * h));
            }
            (h, to_vec(q), to_vec(k), to_vec(v))
        }
        _ => return Err("key and value must be both present or both absent (packed QKV)".into()),
    };
    let seqlens = ctx.ints(5)?;
    if seqlens.len() != b {
        return Err(format!("seqlens_k must have {b} entries, got {}", seqlens.len()));
    }
    let total = ctx.scalar_int(6)?;
    let (pk, pv) = (ctx.opt_f32(3)?, ctx.opt_f32(4)?);
    let p = match (pk, pv) {
        (None, None) => 0,
        (Some(pk), Some(pv)) => {
            let p = pk.shape().get(2).copied().unwrap_or(0);
            if pk.shape() != [b, kvn, p, h] || pv.shape() != [b, kvn, p, h] {
                return Err(format!(
                    "past_key {:?} / past_value {:?} must both be [{b}, {kvn}, P, {h}]",
                    pk.shape(),
                    pv.shape()
                ));
            }
            p
        }
        _ => return Err("past_key and past_value must be both present or both absent".into()),
    };
    if total < 1 {
        return Err(format!("total_sequence_length must be >= 1, got {total}"));
    }
    let subsequent = s > 1 && s as i64 != total;
    if subsequent && b != 1 {
        return Err("batch_size must be 1 when sequence_length > 1 and past context is given".into());
    }
    let first = !subsequent && s as i64 == total;
    if !subsequent && !first && s != 1 {
        return Err(format!("sequence_length {s} must be 1 outside the prompt (total_sequence_length {total})"));
    }
    let present_len = (total as usize).max(p);
    let pos: Vec<BatchPos> = seqlens
        .iter()
        .map(|&sl| {
            let tot = sl + 1;
            if tot < 1 || tot as usize > present_len {
                return Err(format!("seqlens_k value {sl} is outside 0..{present_len}"));
            }
            let tot = tot as usize;
            if !first && tot < s {
                return Err(format!("seqlens_k value {sl} is shorter than the {s} new tokens"));
            }
            let rope_start = if first { 0 } else { tot - s };
            let past = if first || pk.is_none() { 0 } else { tot - s };
            if past > p {
                return Err(format!("seqlens_k value {sl} needs {past} past rows but past_key holds {p}"));
            }
            if past + s > present_len {
                return Err(format!("{past} past + {s} new tokens exceed the present length {present_len}"));
            }
            Ok(BatchPos { total: tot, past, rope_start })
        })
        .collect::<OpResult<_>>()?;

    let (mut qd, mut kd) = (qd, kd);
    if ctx.flag("do_rotary", false)? {
        let (cos, sin) = (ctx.f32(7)?, ctx.f32(8)?);
        if cos.ndim() != 2 || cos.shape() != sin.shape() || 2 * cos.shape()[1] > h {
            return Err(format!(
                "cos_cache {:?} / sin_cache {:?} must be one [max_pos, R/2] shape with R <= head size {h}",
                cos.shape(),
                sin.shape()
            ));
        }
        let rows: Vec<usize> = match ctx.opt_ints(9)? {
            Some(ids) => {
                if ctx.input(9)?.shape() != [b, s] {
                    return Err(format!("position_ids must be [{b}, {s}], got {:?}", ctx.input(9)?.shape()));
                }
                ids.iter()
                    .map(|&x| usize::try_from(x).map_err(|_| format!("position id {x} is negative")))
                    .collect::<OpResult<_>>()?
            }
            None => (0..b * s).map(|t| pos[t / s].rope_start + t % s).collect(),
        };
        check_rows(&rows, cos.shape()[0])?;
        let (cv, sv) = (contiguous(cos), contiguous(sin));
        let cache = Cache { cos: &cv, sin: &sv, half: cos.shape()[1] };
        let inter = ctx.flag("rotary_interleaved", false)?;
        let lay = |heads| HeadLayout { batch: b, seq: s, heads, head_size: h, bnsh: false };
        apply_rope(&mut qd, &lay(n), &cache, &rows, inter);
        apply_rope(&mut kd, &lay(kvn), &cache, &rows, inter);
    }

    // Present K/V [B, KVN, L, H]: kept past rows, then the new tokens.
    let (knew, vnew) = (swap_middle(&kd, b, s, kvn, h), swap_middle(&vd, b, s, kvn, h));
    let (pkd, pvd) = (pk.map(contiguous).unwrap_or_default(), pv.map(contiguous).unwrap_or_default());
    let mut present_k = vec![0f32; b * kvn * present_len * h];
    let mut present_v = present_k.clone();
    for (bi, bp) in pos.iter().enumerate() {
        let keep = bp.past;
        for kh in 0..kvn {
            let bh = bi * kvn + kh;
            let dst = bh * present_len * h;
            present_k[dst..dst + keep * h].copy_from_slice(&pkd[bh * p * h..(bh * p + keep) * h]);
            present_v[dst..dst + keep * h].copy_from_slice(&pvd[bh * p * h..(bh * p + keep) * h]);
            let (at, src) = (dst + keep * h, bh * s * h);
            present_k[at..at + s * h].copy_from_slice(&knew[src..src + s * h]);
            present_v[at..at + s * h].copy_from_slice(&vnew[src..src + s * h]);
        }
    }

    let ab = match ctx.opt_f32(10)? {
        None => None,
        Some(a) => {
            let sh = a.shape();
            let need = pos.iter().map(|x| x.total).max().unwrap_or(0);
            if sh.len() != 4 || (sh[0] != 1 && sh[0] != b) || (sh[1] != 1 && sh[1] != n) || sh[2] != s || sh[3] < need {
                return Err(format!("attention_bias {sh:?} must be [{b} or 1, {n} or 1, {s}, >= {need}]"));
            }
            Some((to_vec(a), sh[0], sh[1], sh[3]))
        }
    };
    let sinks: Option<Vec<f32>> = match ctx.opt_f32(11)? {
        Some(hs) if hs.len() == n => Some(to_vec(hs)),
        Some(hs) => return Err(format!("head_sink must have {n} entries, got shape {:?}", hs.shape())),
        None if ctx.flag("smooth_softmax", false)? => Some(vec![0.0; n]),
        None => None,
    };
    let window = ctx.int_or("local_window_size", -1)?;
    let bias = |bi: usize, hh: usize, i: usize, row: &mut [f32]| {
        let bp = &pos[bi];
        let end = (bp.past + i + 1).min(bp.total);
        let start = if window >= 0 && end as i64 > window { end - window as usize } else { 0 };
        for (j, r) in row.iter_mut().enumerate() {
            if j < start || j >= end {
                *r = f32::NEG_INFINITY;
            } else if let Some((a, ab0, ab1, cols)) = &ab {
                let m = (if *ab0 == 1 { 0 } else { bi }) * ab1 + if *ab1 == 1 { 0 } else { hh };
                *r += a[(m * s + i) * cols + j];
            }
        }
    };
    let scale = ctx.float_or("scale", 0.0)?;
    let scale = if scale == 0.0 { 1.0 / (h as f32).sqrt() } else { scale };
    let params = AttnParams { scale, softcap: ctx.float_or("softcap", 0.0)?, capture: None, sinks: sinks.as_deref() };
    let dims =
        AttnDims { batch: b, q_heads: n, kv_heads: kvn, q_len: s, kv_len: present_len, head_dim: h, v_head_dim: h };
    let qb = swap_middle(&qd, b, s, n, h);
    let (y, _) = attention_core(&dims, &qb, &present_k, &present_v, &params, &bias)?;
    let f = |shape: &[usize], d: Vec<f32>| -> OpResult<Value> {
        Ok(Value { dtype: qv.dtype, data: Data::F(array(shape, d)?) })
    };
    Ok(vec![
        f(&[b, s, n * h], swap_middle(&y, b, n, s, h))?,
        f(&[b, kvn, present_len, h], present_k)?,
        f(&[b, kvn, present_len, h], present_v)?,
    ])
}

#[cfg(test)]
mod tests {
    use super::super::common::test_util::*;
    use jetc_ir::Attr;

    struct Case {
        b: usize,
        s: usize,
        n: usize,
        kvn: usize,
        h: usize,
        /// Rows in past_key (0 = no past inputs).
        p: usize,
        seqlens: Vec<i64>,
        total: i64,
        rotary: Option<(usize, bool)>,
        window: i64,
        softcap: f32,
        packed: bool,
        sink: Option<Vec<f32>>,
    }

    /// Rotates one head vector in f64 at `pos` with angles pos · 10000^(-2i/rot).
    fn rope64(x: &mut [f64], pos: usize, rot: usize, interleaved: bool) {
        let half = rot / 2;
        for i in 0..half {
            let th = pos as f64 * 10000f64.powf(-(2.0 * i as f64) / rot as f64);
            let (p, q) = if interleaved { (2 * i, 2 * i + 1) } else { (i, i + half) };
            let (a, b) = (x[p], x[q]);
            x[p] = a * th.cos() - b * th.sin();
            x[q] = a * th.sin() + b * th.cos();
        }
    }

    /// Independent f64 model: builds each batch's key sequence (past rows then new rows),
    /// rotates new tokens at their absolute positions, then does causal (windowed) GQA.
    fn run_case(c: &Case, seed: u64) {
        let Case { b, s, n, kvn, h, p, .. } = *c;
        let mut rng = Rng::new(seed);
        let q = rng.vec(b * s * n * h);
        let k = rng.vec(b * s * kvn * h);
        let v = rng.vec(b * s * kvn * h);
        let pk = rng.vec(b * kvn * p * h);
        let pv = rng.vec(b * kvn * p * h);
        let first = s as i64 == c.total;
        let present_len = (c.total as usize).max(p);
        let mut want_y = vec![0f64; b * s * n * h];
        let mut want_pk = vec![0f64; b * kvn * present_len * h];
        let mut want_pv = want_pk.clone();
        for bi in 0..b {
            let tot = c.seqlens[bi] as usize + 1;
            let past = if first { 0 } else { tot - s };
            // Keys and values per kv head: [present_len][h].
            for kh in 0..kvn {
                for j in 0..past {
                    for d in 0..h {
                        want_pk[((bi * kvn + kh) * present_len + j) * h + d] =
                            pk[((bi * kvn + kh) * p + j) * h + d] as f64;
                        want_pv[((bi * kvn + kh) * present_len + j) * h + d] =
                            pv[((bi * kvn + kh) * p + j) * h + d] as f64;
                    }
                }
                for t in 0..s {
                    let mut kr: Vec<f64> = (0..h).map(|d| k[((bi * s + t) * kvn + kh) * h + d] as f64).collect();
                    if let Some((rot, il)) = c.rotary {
                        rope64(&mut kr, past + t, rot, il);
                    }
                    for d in 0..h {
                        want_pk[((bi * kvn + kh) * present_len + past + t) * h + d] = kr[d];
                        want_pv[((bi * kvn + kh) * present_len + past + t) * h + d] =
                            v[((bi * s + t) * kvn + kh) * h + d] as f64;
                    }
                }
            }
            for hh in 0..n {
                let kh = hh / (n / kvn);
                for t in 0..s {
                    let mut qr: Vec<f64> = (0..h).map(|d| q[((bi * s + t) * n + hh) * h + d] as f64).collect();
                    if let Some((rot, il)) = c.rotary {
                        rope64(&mut qr, past + t, rot, il);
                    }
                    let end = (past + t + 1).min(tot);
                    let start = if c.window >= 0 && end as i64 > c.window { end - c.window as usize } else { 0 };
                    let scores: Vec<f64> = (start..end)
                        .map(|j| {
                            let dot: f64 =
                                (0..h).map(|d| qr[d] * want_pk[((bi * kvn + kh) * present_len + j) * h + d]).sum();
                            let x = dot / (h as f64).sqrt();
                            if c.softcap > 0.0 {
                                c.softcap as f64 * (x / c.softcap as f64).tanh()
                            } else {
                                x
                            }
                        })
                        .collect();
                    let sink = c.sink.as_ref().map(|sv| sv[hh] as f64);
                    let m = scores.iter().cloned().chain(sink).fold(f64::NEG_INFINITY, f64::max);
                    let z: f64 =
                        scores.iter().map(|x| (x - m).exp()).sum::<f64>() + sink.map_or(0.0, |sk| (sk - m).exp());
                    for (jj, sc) in scores.iter().enumerate() {
                        let w = (sc - m).exp() / z;
                        for d in 0..h {
                            want_y[((bi * s + t) * n + hh) * h + d] +=
                                w * want_pv[((bi * kvn + kh) * present_len + start + jj) * h + d];
                        }
                    }
                }
            }
        }
        let mut attrs = vec![
            ("num_heads", Attr::Int(n as i64)),
            ("kv_num_heads", Attr::Int(kvn as i64)),
            ("local_window_size", Attr::Int(c.window)),
            ("softcap", Attr::Float(c.softcap)),
        ];
        let (mut cos, mut sin) = (Vec::new(), Vec::new());
        let max_pos = 32;
        if let Some((rot, il)) = c.rotary {
            attrs.push(("do_rotary", Attr::Int(1)));
            attrs.push(("rotary_interleaved", Attr::Int(il as i64)));
            for pp in 0..max_pos {
                for i in 0..rot / 2 {
                    let th = pp as f64 * 10000f64.powf(-(2.0 * i as f64) / rot as f64);
                    cos.push(th.cos() as f32);
                    sin.push(th.sin() as f32);
                }
            }
        }
        let o = ms_op("GroupQueryAttention", &attrs);
        let rot_half = c.rotary.map_or(0, |(r, _)| r / 2);
        let (qv, kv, vv) = if c.packed {
            let mut packed = Vec::new();
            for r in 0..b * s {
                packed.extend_from_slice(&q[r * n * h..(r + 1) * n * h]);
                packed.extend_from_slice(&k[r * kvn * h..(r + 1) * kvn * h]);
                packed.extend_from_slice(&v[r * kvn * h..(r + 1) * kvn * h]);
            }
            (f(&[b, s, (n + 2 * kvn) * h], &packed), None, None)
        } else {
            (f(&[b, s, n * h], &q), Some(f(&[b, s, kvn * h], &k)), Some(f(&[b, s, kvn * h], &v)))
        };
        let (pkv, pvv) =
            if p > 0 { (Some(f(&[b, kvn, p, h], &pk)), Some(f(&[b, kvn, p, h], &pv))) } else { (None, None) };
        let (cv, sv) = (f(&[max_pos, rot_half], &cos), f(&[max_pos, rot_half], &sin));
        let sinkv = c.sink.as_ref().map(|x| f(&[n], x));
        let seq = i(&[b], &c.seqlens);
        let tot = i(&[], &[c.total]);
        let rot = c.rotary.is_some();
        let ins = [
            Some(&qv),
            kv.as_ref(),
            vv.as_ref(),
            pkv.as_ref(),
            pvv.as_ref(),
            Some(&seq),
            Some(&tot),
            rot.then_some(&cv),
            rot.then_some(&sv),
            None,
            None,
            sinkv.as_ref(),
        ];
        let outs = run_opt(&o, &ins, 3).unwrap();
        assert_eq!(outs[0].shape(), &[b, s, n * h]);
        assert_eq!(outs[1].shape(), &[b, kvn, present_len, h]);
        // Padded query rows of a first prompt are not compared (onnxruntime leaves them
        // unspecified); every valid row is.
        let y = fvec(&outs[0]);
        for bi in 0..b {
            let valid = if first { c.seqlens[bi] as usize + 1 } else { s };
            let r = bi * s * n * h..(bi * s + valid) * n * h;
            assert_close(&y[r.clone()], &want_y[r], 1e-5);
        }
        assert_close(&fvec(&outs[1]), &want_pk, 1e-5);
        assert_close(&fvec(&outs[2]), &want_pv, 1e-6);
    }

    fn base() -> Case {
        Case {
            b: 2,
            s: 4,
            n: 4,
            kvn: 2,
            h: 8,
            p: 0,
            seqlens: vec![3, 1],
            total: 4,
            rotary: None,
            window: -1,
            softcap: 0.0,
            packed: false,
            sink: None,
        }
    }

    #[test]
    fn prompt_with_padding_and_rotary() {
        run_case(&base(), 41);
        run_case(&Case { rotary: Some((8, false)), ..base() }, 42);
        run_case(&Case { rotary: Some((4, true)), ..base() }, 43);
    }

    #[test]
    fn decode_with_past_buffer_and_ragged_lengths() {
        // Past buffer of 5 rows; batch 0 has 3 valid past tokens, batch 1 has 5.
        let c = Case { s: 1, p: 5, seqlens: vec![3, 5], total: 6, rotary: Some((8, false)), ..base() };
        run_case(&c, 44);
        // Shared-buffer style: past buffer longer than the total.
        let c = Case { s: 1, p: 8, seqlens: vec![2, 4], total: 5, ..base() };
        run_case(&c, 45);
    }

    #[test]
    fn subsequent_prompt_packed_window_softcap_sink() {
        let c = Case {
            b: 1,
            s: 3,
            p: 4,
            seqlens: vec![6],
            total: 7,
            packed: true,
            window: 4,
            softcap: 2.0,
            rotary: Some((8, true)),
            ..base()
        };
        run_case(&c, 46);
        let c = Case { window: 2, sink: Some(vec![0.5, -1.0, 0.0, 2.0]), ..base() };
        run_case(&c, 47);
        let c = Case { n: 2, kvn: 2, packed: true, s: 1, p: 3, seqlens: vec![3, 2], total: 4, ..base() };
        run_case(&c, 48);
    }

    /// GroupQueryAttention with past, attention_bias and explicit position_ids matches the
    /// ONNX Attention op (itself checked against an f64 oracle) on the same problem.
    #[test]
    fn matches_onnx_attention_with_bias_and_positions() {
        let (n, kvn, h, s, p) = (4, 2, 8, 2, 3);
        let t = p + s;
        let mut rng = Rng::new(49);
        let (q, k, v) = (rng.vec(s * n * h), rng.vec(s * kvn * h), rng.vec(s * kvn * h));
        let (pk, pv) = (rng.vec(kvn * p * h), rng.vec(kvn * p * h));
        let bias = rng.vec(n * s * t);
        let (qv, kv, vv) = (f(&[1, s, n * h], &q), f(&[1, s, kvn * h], &k), f(&[1, s, kvn * h], &v));
        let (pkv, pvv) = (f(&[1, kvn, p, h], &pk), f(&[1, kvn, p, h], &pv));
        let bv = f(&[1, n, s, t], &bias);
        let attrs = [("num_heads", Attr::Int(n as i64)), ("kv_num_heads", Attr::Int(kvn as i64))];
        let seq = i(&[1], &[t as i64 - 1]);
        let tot = i(&[], &[t as i64]);
        let g = run_opt(
            &ms_op("GroupQueryAttention", &attrs),
            &[
                Some(&qv),
                Some(&kv),
                Some(&vv),
                Some(&pkv),
                Some(&pvv),
                Some(&seq),
                Some(&tot),
                None,
                None,
                None,
                Some(&bv),
            ],
            3,
        )
        .unwrap();
        let a = run_opt(
            &op(
                "Attention",
                23,
                &[
                    ("q_num_heads", Attr::Int(n as i64)),
                    ("kv_num_heads", Attr::Int(kvn as i64)),
                    ("is_causal", Attr::Int(1)),
                ],
            ),
            &[Some(&qv), Some(&kv), Some(&vv), Some(&bv), Some(&pkv), Some(&pvv)],
            3,
        )
        .unwrap();
        let want: Vec<f64> = fvec(&a[0]).iter().map(|&x| x as f64).collect();
        assert_close(&fvec(&g[0]), &want, 1e-5);
        assert_eq!(fvec(&g[1]), fvec(&a[1]));
        // Explicit position_ids equal to the implied ones give the same rotary result;
        // shifted ones do not.
        let (mut cos, mut sin) = (Vec::new(), Vec::new());
        for pp in 0..8 {
            for r in 0..h / 2 {
                let th = pp as f64 * 10000f64.powf(-(2.0 * r as f64) / h as f64);
                cos.push(th.cos() as f32);
                sin.push(th.sin() as f32);
            }
        }
        let (cv, sv) = (f(&[8, h / 2], &cos), f(&[8, h / 2], &sin));
        let ro = ms_op("GroupQueryAttention", &[attrs[0].clone(), attrs[1].clone(), ("do_rotary", Attr::Int(1))]);
        let with = |ids: Option<&crate::Value>| {
            let ins = [
                Some(&qv),
                Some(&kv),
                Some(&vv),
                Some(&pkv),
                Some(&pvv),
                Some(&seq),
                Some(&tot),
                Some(&cv),
                Some(&sv),
                ids,
            ];
            fvec(&run_opt(&ro, &ins, 1).unwrap()[0])
        };
        let implied = with(None);
        assert_eq!(with(Some(&i(&[1, s], &[p as i64, p as i64 + 1]))), implied);
        assert_ne!(with(Some(&i(&[1, s], &[p as i64 + 1, p as i64 + 2]))), implied);
        assert!(run_opt(
            &ro,
            &[
                Some(&qv),
                Some(&kv),
                Some(&vv),
                Some(&pkv),
                Some(&pvv),
                Some(&seq),
                Some(&tot),
                Some(&cv),
                Some(&sv),
                Some(&i(&[2], &[0, 1]))
            ],
            1
        )
        .is_err());
    }

    #[test]
    fn gqa_errors() {
        let o = ms_op("GroupQueryAttention", &[("num_heads", Attr::Int(2)), ("kv_num_heads", Attr::Int(1))]);
        let q = f(&[1, 2, 8], &[0.; 16]);
        let kv = f(&[1, 2, 4], &[0.; 8]);
        let e =
            run_opt(&o, &[Some(&q), Some(&kv), Some(&kv), None, None, Some(&i(&[1], &[5])), Some(&i(&[], &[2]))], 1)
                .unwrap_err();
        assert!(e.to_string().contains("seqlens_k value 5"), "{e}");
        let e = run_opt(&o, &[Some(&q), Some(&kv), None, None, None, Some(&i(&[1], &[1])), Some(&i(&[], &[2]))], 1)
            .unwrap_err();
        assert!(e.to_string().contains("both present"), "{e}");
        let o2 = ms_op(
            "GroupQueryAttention",
            &[("num_heads", Attr::Int(2)), ("kv_num_heads", Attr::Int(1)), ("qk_output", Attr::Int(1))],
        );
        assert!(run_opt(
            &o2,
            &[Some(&q), Some(&kv), Some(&kv), None, None, Some(&i(&[1], &[1])), Some(&i(&[], &[2]))],
            1
        )
        .is_err());
        let o3 = ms_op("GroupQueryAttention", &[("num_heads", Attr::Int(3)), ("kv_num_heads", Attr::Int(2))]);
        assert!(run_opt(
            &o3,
            &[Some(&f(&[1, 1, 6], &[0.; 6])), None, None, None, None, Some(&i(&[1], &[0])), Some(&i(&[], &[1]))],
            1
        )
        .is_err());
    }
}
