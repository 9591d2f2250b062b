//! Rotary position embeddings: the opset-23 `RotaryEmbedding` (inputs X, cos_cache,
//! sin_cache, position_ids?; attributes interleaved, num_heads, rotary_embedding_dim), the
//! com.microsoft `RotaryEmbedding` (inputs input, position_ids, cos_cache, sin_cache; a
//! one-element position_ids is the start position of every sequence), and the helper that
//! GroupQueryAttention uses.
//!
//! X is [B, S, hidden] (num_heads needed) or [B, N, S, H]. The first `rotary_dim` elements of
//! each head rotate; the rest pass through. Half-rotation pairs element i with i + rot/2,
//! interleaved pairs 2i with 2i+1; both use cos/sin entry i:
//! `x1' = x1·cos − x2·sin`, `x2' = x1·sin + x2·cos`.
use super::common::{array, contiguous, to_vec, Ctx, OpResult};
use crate::math::rope;
use crate::value::{Data, Value};
use jetc_ir::RopeStyle;

/// Where the heads of a [B, S, N, H] or [B, N, S, H] buffer are.
#[derive(Clone, Copy, Debug)]
pub(crate) struct HeadLayout {
    pub batch: usize,
    pub seq: usize,
    pub heads: usize,
    pub head_size: usize,
    /// [B, N, S, H] when true, [B, S, N, H] when false.
    pub bnsh: bool,
}

impl HeadLayout {
    fn offset(&self, b: usize, s: usize, n: usize) -> usize {
        let (bb, ss, nn, hh) = (self.batch, self.seq, self.heads, self.head_size);
        debug_assert!(b < bb);
        if self.bnsh {
            ((b * nn + n) * ss + s) * hh
        } else {
            ((b * ss + s) * nn + n) * hh
        }
    }
}


/// A cos/sin cache: `rows` rows of `half` entries each.
pub(crate) struct Cache<'a> {
    pub cos: &'a [f32],
    pub sin: &'a [f32],
    pub half: usize,
}

/// Rotates every head of `x`; `rows[b · seq + s]` is the cache row of token (b, s), already
/// checked to be in range.
pub(crate) fn apply_rope(x: &mut [f32], l: &HeadLayout, cache: &Cache, rows: &[usize], interleaved: bool) {
    let h = cache.half;
    let style = if interleaved { RopeStyle::Interleaved } else { RopeStyle::HalfRotate };
    for b in 0..l.batch {
        for s in 0..l.seq {
            let r = rows[b * l.seq + s];
            let (c, sn) = (&cache.cos[r * h..(r + 1) * h], &cache.sin[r * h..(r + 1) * h]);
            for n in 0..l.heads {
                let o = l.offset(b, s, n);
                rope(&mut x[o..o + l.head_size], c, sn, 2 * h, style);
            }
        }
    }
}

/// Checks cache rows against the cache height.
pub(crate) fn check_rows(rows: &[usize], height: usize) -> OpResult<()> {
    match rows.iter().find(|&&r| r >= height) {
        Some(r) => Err(format!("position {r} is beyond the cos/sin cache of {height} positions")),
        None => Ok(()),
    }
}

/// Positions as cache rows, rejecting negatives.
fn rows_of(pos: &[i64]) -> OpResult<Vec<usize>> {
    pos.iter().map(|&p| usize::try_from(p).map_err(|_| format!("position id {p} is negative"))).collect()
}

/// Layout of X and the rotary dim, shared by both variants.
fn layout(shape: &[usize], num_heads: usize, head_size_hint: Option<usize>) -> OpResult<HeadLayout> {
    match *shape {
        [b, n, s, h] => Ok(HeadLayout { batch: b, seq: s, heads: n, head_size: h, bnsh: true }),
        [b, s, hidden] => {
            let (heads, head_size) = match (num_heads, head_size_hint) {
                (n, _) if n > 0 => (n, hidden / n),
                (_, Some(h)) if h > 0 => (hidden / h, h),
                _ => return Err(format!("3-D input {shape:?} needs the num_heads attribute")),
            };
            if heads * head_size != hidden {
                return Err(format!(
                    "hidden size {hidden} of input {shape:?} is not num_heads {heads} × head size {head_size}"
                ));
            }
            Ok(HeadLayout { batch: b, seq: s, heads, head_size, bnsh: false })
        }
        _ => Err(format!("input must be 3-D or 4-D, got shape {shape:?}")),
    }
}

fn rotary_dim(attr: i64, head_size: usize) -> OpResult<usize> {
    let rot = if attr == 0 {
        head_size
    } else {
        usize::try_from(attr).map_err(|_| format!("rotary_embedding_dim {attr} is negative"))?
    };
    if rot % 2 != 0 || rot > head_size {
        return Err(format!("rotary_embedding_dim {rot} must be even and at most the head size {head_size}"));
    }
    Ok(rot)
}

fn finish(xv: &Value, shape: &[usize], data: Vec<f32>) -> OpResult {
    Ok(vec![Value { dtype: xv.dtype, data: Data::F(array(shape, data)?) }])
}

/// ONNX RotaryEmbedding (opset 23).
pub(crate) fn rotary_onnx(ctx: &Ctx) -> OpResult {
    let xv = ctx.input(0)?;
    let (x, cos, sin) = (ctx.f32(0)?, ctx.f32(1)?, ctx.f32(2)?);
    let interleaved = ctx.flag("interleaved", false)?;
    let num_heads = usize::try_from(ctx.int_or("num_heads", 0)?).map_err(|_| "num_heads must be >= 0".to_string())?;
    let l = layout(x.shape(), num_heads, None)?;
    let rot = rotary_dim(ctx.int_or("rotary_embedding_dim", 0)?, l.head_size)?;
    let half = rot / 2;
    if cos.shape() != sin.shape() {
        return Err(format!("cos_cache {:?} and sin_cache {:?} must have one shape", cos.shape(), sin.shape()));
    }
    let rows: Vec<usize> = match ctx.opt_ints(3)? {
        Some(pos) => {
            let ps = ctx.input(3)?.shape();
            if ps != [l.batch, l.seq] {
                return Err(format!("position_ids must have shape [{}, {}], got {ps:?}", l.batch, l.seq));
            }
            if cos.ndim() != 2 || cos.shape()[1] != half {
                return Err(format!(
                    "with position_ids the caches must be [max_position, {half}], got {:?}",
                    cos.shape()
                ));
            }
            let rows = rows_of(&pos)?;
            check_rows(&rows, cos.shape()[0])?;
            rows
        }
        None => {
            let cs = cos.shape();
            if cs.len() != 3 || (cs[0] != l.batch && cs[0] != 1) || cs[1] != l.seq || cs[2] != half {
                return Err(format!(
                    "without position_ids the caches must be [{}, {}, {half}], got {cs:?}",
                    l.batch, l.seq
                ));
            }
            let per_batch = cs[0] != 1;
            (0..l.batch * l.seq).map(|t| if per_batch { t } else { t % l.seq }).collect()
        }
    };
    let (cv, sv) = (contiguous(cos), contiguous(sin));
    let mut data = to_vec(x);
    apply_rope(&mut data, &l, &Cache { cos: &cv, sin: &sv, half }, &rows, interleaved);
    finish(xv, x.shape(), data)
}

/// com.microsoft RotaryEmbedding.
pub(crate) fn rotary_contrib(ctx: &Ctx) -> OpResult {
    let xv = ctx.input(0)?;
    let x = ctx.f32(0)?;
    let (cos, sin) = (ctx.f32(2)?, ctx.f32(3)?);
    if ctx.flag("is_packed_batching", false)? {
        return Err("is_packed_batching = 1 is not supported".into());
    }
    let interleaved = ctx.flag("interleaved", false)?;
    let num_heads = usize::try_from(ctx.int_or("num_heads", 0)?).map_err(|_| "num_heads must be >= 0".to_string())?;
    let rot_attr = ctx.int_or("rotary_embedding_dim", 0)?;
    if cos.ndim() != 2 || cos.shape() != sin.shape() {
        return Err(format!("cos_cache {:?} and sin_cache {:?} must be one 2-D shape", cos.shape(), sin.shape()));
    }
    if rot_attr > 0 && num_heads == 0 && x.ndim() == 3 {
        return Err("num_heads must be given with rotary_embedding_dim".into());
    }
    // Like onnxruntime: without rotary_embedding_dim the head size is twice the cache width.
    let hint = if rot_attr == 0 { Some(2 * cos.shape()[1]) } else { None };
    let l = layout(x.shape(), num_heads, hint)?;
    let rot = rotary_dim(rot_attr, l.head_size)?;
    if cos.shape()[1] != rot / 2 {
        return Err(format!("cache width {} must be rotary_dim / 2 = {}", cos.shape()[1], rot / 2));
    }
    let pos = ctx.ints(1)?;
    let pshape = ctx.input(1)?.shape();
    let rows: Vec<usize> = if pos.len() == 1 && pshape.len() <= 1 {
        let start = rows_of(&pos)?[0];
        (0..l.batch * l.seq).map(|t| start + t % l.seq).collect()
    } else if pshape == [l.batch, l.seq] {
        rows_of(&pos)?
    } else {
        return Err(format!("position_ids must have one element or shape [{}, {}], got {pshape:?}", l.batch, l.seq));
    };
    check_rows(&rows, cos.shape()[0])?;
    let (cv, sv) = (contiguous(cos), contiguous(sin));
    let mut data = to_vec(x);
    apply_rope(&mut data, &l, &Cache { cos: &cv, sin: &sv, half: rot / 2 }, &rows, interleaved);
    finish(xv, x.shape(), data)
}

#[cfg(test)]
mod tests {
    use super::super::common::test_util::*;
    use jetc_ir::Attr;

    /// f64 oracle on a [B, S, N, H] tensor, with angle θ(pos, i) = pos · base^(-2i/rot).
    fn oracle(
        x: &[f32],
        (b, s, n, h): (usize, usize, usize, usize),
        pos: &[usize],
        rot: usize,
        interleaved: bool,
    ) -> Vec<f64> {
        let mut out: Vec<f64> = x.iter().map(|&v| v as f64).collect();
        let half = rot / 2;
        for bi in 0..b {
            for si in 0..s {
                let p = pos[bi * s + si] as f64;
                for ni in 0..n {
                    let o = ((bi * s + si) * n + ni) * h;
                    for i in 0..half {
                        let th = p * 10000f64.powf(-(2.0 * i as f64) / rot as f64);
                        let (pi, qi) = if interleaved { (2 * i, 2 * i + 1) } else { (i, i + half) };
                        let (x1, x2) = (x[o + pi] as f64, x[o + qi] as f64);
                        out[o + pi] = x1 * th.cos() - x2 * th.sin();
                        out[o + qi] = x1 * th.sin() + x2 * th.cos();
                    }
                }
            }
        }
        out
    }

    fn caches(max_pos: usize, rot: usize) -> (Vec<f32>, Vec<f32>) {
        let half = rot / 2;
        let mut c = Vec::new();
        let mut s = Vec::new();
        for p in 0..max_pos {
            for i in 0..half {
                let th = p as f64 * 10000f64.powf(-(2.0 * i as f64) / rot as f64);
                c.push(th.cos() as f32);
                s.push(th.sin() as f32);
            }
        }
        (c, s)
    }

    /// [B, S, N, H] -> [B, N, S, H]
    fn to_bnsh(x: &[f32], (b, s, n, h): (usize, usize, usize, usize)) -> Vec<f32> {
        let mut out = vec![0.0; x.len()];
        for bi in 0..b {
            for si in 0..s {
                for ni in 0..n {
                    for k in 0..h {
                        out[((bi * n + ni) * s + si) * h + k] = x[((bi * s + si) * n + ni) * h + k];
                    }
                }
            }
        }
        out
    }

    #[test]
    fn onnx_rotary_3d_4d_partial_interleaved() {
        let (b, s, n, h) = (2, 3, 2, 8);
        let mut rng = Rng::new(21);
        let x = rng.vec(b * s * n * h);
        let pos: Vec<usize> = vec![0, 1, 2, 5, 6, 7];
        let pos_i: Vec<i64> = pos.iter().map(|&p| p as i64).collect();
        for (rot, interleaved) in [(8, false), (8, true), (4, false), (4, true)] {
            let (c, sn) = caches(10, rot);
            let want = oracle(&x, (b, s, n, h), &pos, rot, interleaved);
            let attrs = [
                ("interleaved", Attr::Int(interleaved as i64)),
                ("num_heads", Attr::Int(n as i64)),
                ("rotary_embedding_dim", Attr::Int(if rot == h { 0 } else { rot as i64 })),
            ];
            let o = op("RotaryEmbedding", 23, &attrs);
            let cv = f(&[10, rot / 2], &c);
            let sv = f(&[10, rot / 2], &sn);
            let y = run1(&o, &[&f(&[b, s, n * h], &x), &cv, &sv, &i(&[b, s], &pos_i)]);
            assert_close(&fvec(&y), &want, 1e-5);
            // 4-D input [B, N, S, H] (num_heads is implied).
            let o4 = op("RotaryEmbedding", 23, &[attrs[0].clone(), attrs[2].clone()]);
            let y = run1(&o4, &[&f(&[b, n, s, h], &to_bnsh(&x, (b, s, n, h))), &cv, &sv, &i(&[b, s], &pos_i)]);
            let want4: Vec<f64> = to_bnsh(&want.iter().map(|&v| v as f32).collect::<Vec<_>>(), (b, s, n, h))
                .iter()
                .map(|&v| v as f64)
                .collect();
            assert_close(&fvec(&y), &want4, 1e-5);
        }
    }

    #[test]
    fn onnx_rotary_without_position_ids() {
        let (b, s, n, h) = (2, 2, 1, 4);
        let mut rng = Rng::new(22);
        let x = rng.vec(b * s * n * h);
        let (c, sn) = caches(8, h);
        // Gathered caches [B, S, H/2] for positions 3,4 and 0,1.
        let pos = [3usize, 4, 0, 1];
        let gather = |t: &[f32]| pos.iter().flat_map(|&p| t[p * 2..p * 2 + 2].to_vec()).collect::<Vec<f32>>();
        let y = run1(
            &op("RotaryEmbedding", 23, &[("num_heads", Attr::Int(1))]),
            &[&f(&[b, s, h], &x), &f(&[b, s, 2], &gather(&c)), &f(&[b, s, 2], &gather(&sn))],
        );
        assert_close(&fvec(&y), &oracle(&x, (b, s, n, h), &pos, h, false), 1e-5);
        let e = run(
            &op("RotaryEmbedding", 23, &[]),
            &[&f(&[b, s, h], &x), &f(&[b, s, 2], &gather(&c)), &f(&[b, s, 2], &gather(&sn))],
        )
        .unwrap_err();
        assert!(e.to_string().contains("num_heads"), "{e}");
    }

    #[test]
    fn contrib_rotary_scalar_and_2d_positions() {
        let (b, s, n, h) = (2, 3, 2, 4);
        let mut rng = Rng::new(23);
        let x = rng.vec(b * s * n * h);
        let (c, sn) = caches(16, h);
        let (cv, sv) = (f(&[16, 2], &c), f(&[16, 2], &sn));
        let o = ms_op("RotaryEmbedding", &[]);
        // One start position: tokens at 4, 5, 6 in every batch.
        let y = run1(&o, &[&f(&[b, s, n * h], &x), &i(&[1], &[4]), &cv, &sv]);
        assert_close(&fvec(&y), &oracle(&x, (b, s, n, h), &[4, 5, 6, 4, 5, 6], h, false), 1e-5);
        let pos = [0usize, 2, 4, 1, 3, 5];
        let pos_i: Vec<i64> = pos.iter().map(|&p| p as i64).collect();
        let oi = ms_op("RotaryEmbedding", &[("interleaved", Attr::Int(1))]);
        let y = run1(&oi, &[&f(&[b, s, n * h], &x), &i(&[b, s], &pos_i), &cv, &sv]);
        assert_close(&fvec(&y), &oracle(&x, (b, s, n, h), &pos, h, true), 1e-5);
        let e = run(&o, &[&f(&[b, s, n * h], &x), &i(&[1], &[15]), &cv, &sv]).unwrap_err();
        assert!(e.to_string().contains("beyond the cos/sin cache"), "{e}");
    }
}
