//! Softmax / LogSoftmax and the normalisations.
//!
//! Softmax opset notes: from opset 13 it works along one `axis` (default -1); before 13 the
//! input is coerced to 2-D at `axis` (default 1) and each row of the trailing dims is
//! normalised jointly. Rows are normalised in f32 with the max subtracted.
//!
//! Normalisations (statistics accumulated in f64):
//! - LayerNormalization (opset 17; outputs Y, Mean, InvStdDev over dims `axis..`),
//! - RMSNormalization (opset 23; `axis`, `epsilon`),
//! - SimplifiedLayerNormalization (onnxruntime, default or com.microsoft domain; outputs Y
//!   and optional inv_std_var),
//! - com.microsoft SkipSimplifiedLayerNormalization (input, skip, gamma, bias?) and
//!   SkipLayerNormalization (input, skip, gamma, beta?, bias?) over the last axis, outputs
//!   output, mean, inv_std_var, input_skip_bias_sum. For the simplified form `mean` is the
//!   plain mean of the sum (it plays no part in the result).
use ndarray::ArrayD;
use rayon::prelude::*;

use super::common::{array, broadcast_to, contiguous, norm_axis, owned, to_vec, zip2, Ctx, OpResult};
use crate::math;
use crate::value::{Data, Value};

/// Rows longer than this many total elements are processed in parallel.
const PARALLEL_ELEMS: usize = 1 << 15;

/// Normalises each row of length `n` in place: softmax, or log-softmax. A row whose every
/// logit is -inf gives NaN, as onnxruntime and the ONNX reference give.
pub(crate) fn softmax_rows(data: &mut [f32], n: usize, log: bool) {
    if n == 0 {
        return;
    }
    let row = |r: &mut [f32]| {
        if log {
            math::log_softmax(r);
        } else if r.iter().all(|&v| v == f32::NEG_INFINITY) {
            r.fill(f32::NAN);
        } else {
            math::softmax(r, None);
        }
    };
    if data.len() >= PARALLEL_ELEMS {
        data.par_chunks_mut(n).for_each(row);
    } else {
        data.chunks_mut(n).for_each(row);
    }
}

pub(crate) fn softmax(ctx: &Ctx, log: bool) -> OpResult {
    let xv = ctx.input(0)?;
    let x = ctx.f32(0)?;
    let rank = x.ndim();
    let out = if ctx.opset() < 13 {
        let axis = if rank == 0 { 0 } else { norm_axis(ctx.int_or("axis", 1)?, rank)? };
        let n: usize = x.shape()[axis..].iter().product();
        let mut d = to_vec(x);
        softmax_rows(&mut d, n, log);
        array(x.shape(), d)?
    } else if rank == 0 {
        x.mapv(|_| if log { 0.0 } else { 1.0 })
    } else {
        let axis = norm_axis(ctx.int_or("axis", -1)?, rank)?;
        let mut perm: Vec<usize> = (0..rank).filter(|&d| d != axis).collect();
        perm.push(axis);
        let moved = owned(x.view().permuted_axes(perm.clone()));
        let n = x.shape()[axis];
        let mut d = to_vec(&moved);
        softmax_rows(&mut d, n, log);
        let y = array(moved.shape(), d)?;
        let mut inv = vec![0; rank];
        for (k, &p) in perm.iter().enumerate() {
            inv[p] = k;
        }
        owned(y.view().permuted_axes(inv))
    };
    Ok(vec![Value { dtype: xv.dtype, data: Data::F(out) }])
}

/// A per-element parameter (scale or bias) of a row normalisation: either one row shared by
/// every row, or one value per element of the input.
enum RowParam {
    Shared(Vec<f32>),
    Full(Vec<f32>),
}

impl RowParam {
    fn new(p: &ArrayD<f32>, shape: &[usize], axis: usize, what: &str) -> OpResult<RowParam> {
        if let Ok(v) = broadcast_to(p, &shape[axis..]) {
            return Ok(RowParam::Shared(to_vec(&owned(v))));
        }
        let v = broadcast_to(p, shape)
            .map_err(|_| format!("{what} of shape {:?} does not broadcast to the input shape {shape:?}", p.shape()))?;
        Ok(RowParam::Full(to_vec(&owned(v))))
    }

    fn get(&self, row: usize, n: usize, j: usize) -> f32 {
        match self {
            RowParam::Shared(v) => v[j],
            RowParam::Full(v) => v[row * n + j],
        }
    }
}

/// Row statistics and the normalised rows.
struct Normed {
    y: Vec<f32>,
    mean: Vec<f32>,
    inv_std: Vec<f32>,
}

/// Normalises rows of length `n`: `(x - mean) · inv_std · scale + bias` (mean 0 when
/// `rms`, where inv_std = 1/sqrt(mean(x²) + eps)).
fn normalize_rows(x: &[f32], n: usize, eps: f32, rms: bool, scale: &RowParam, bias: Option<&RowParam>) -> Normed {
    let rows = x.len().checked_div(n).unwrap_or(0);
    let mut y = vec![0f32; x.len()];
    let mut mean = vec![0f32; rows];
    let mut inv_std = vec![0f32; rows];
    let one = |(r, ((yr, m), s)): (usize, ((&mut [f32], &mut f32), &mut f32))| {
        let xr = &x[r * n..(r + 1) * n];
        let mu = xr.iter().map(|&v| v as f64).sum::<f64>() / n as f64;
        let center = if rms { 0.0 } else { mu };
        let var = xr.iter().map(|&v| (v as f64 - center).powi(2)).sum::<f64>() / n as f64;
        let inv = 1.0 / (var + eps as f64).sqrt();
        for (j, (o, &v)) in yr.iter_mut().zip(xr).enumerate() {
            let mut t = ((v as f64 - center) * inv) as f32 * scale.get(r, n, j);
            if let Some(b) = bias {
                t += b.get(r, n, j);
            }
            *o = t;
        }
        *m = mu as f32;
        *s = inv as f32;
    };
    if n > 0 {
        if x.len() >= PARALLEL_ELEMS {
            y.par_chunks_mut(n).zip(mean.par_iter_mut()).zip(inv_std.par_iter_mut()).enumerate().for_each(one);
        } else {
            y.chunks_mut(n).zip(mean.iter_mut()).zip(inv_std.iter_mut()).enumerate().for_each(one);
        }
    }
    Normed { y, mean, inv_std }
}

/// Shape of per-row statistics: the input shape with dims `axis..` set to 1.
fn stat_shape(shape: &[usize], axis: usize) -> Vec<usize> {
    shape.iter().enumerate().map(|(d, &n)| if d < axis { n } else { 1 }).collect()
}

/// LayerNormalization / RMSNormalization / SimplifiedLayerNormalization over dims `axis..`.
pub(crate) fn layer_norm(ctx: &Ctx, rms: bool) -> OpResult {
    let xv = ctx.input(0)?;
    let x = ctx.f32(0)?;
    let shape = x.shape().to_vec();
    let axis = norm_axis(ctx.int_or("axis", -1)?, shape.len())?;
    let eps = ctx.float_or("epsilon", 1e-5)?;
    let scale = RowParam::new(ctx.f32(1)?, &shape, axis, "scale")?;
    let bias = match (rms, ctx.opt_f32(2)?) {
        (false, Some(b)) => Some(RowParam::new(b, &shape, axis, "bias")?),
        _ => None,
    };
    let n: usize = shape[axis..].iter().product();
    let r = normalize_rows(&contiguous(x), n, eps, rms, &scale, bias.as_ref());
    let st = stat_shape(&shape, axis);
    let f = |a: ArrayD<f32>| Value { dtype: xv.dtype, data: Data::F(a) };
    let mut outs = vec![f(array(&shape, r.y)?)];
    if rms {
        // SimplifiedLayerNormalization's optional second output.
        outs.push(f(array(&st, r.inv_std)?));
    } else {
        outs.push(f(array(&st, r.mean)?));
        outs.push(f(array(&st, r.inv_std)?));
    }
    Ok(outs)
}

/// com.microsoft SkipLayerNormalization (`simplified` = false) and
/// SkipSimplifiedLayerNormalization (true).
pub(crate) fn skip_layer_norm(ctx: &Ctx, simplified: bool) -> OpResult {
    let xv = ctx.input(0)?;
    let (x, skip, gamma) = (ctx.f32(0)?, ctx.f32(1)?, ctx.f32(2)?);
    let (beta, bias) = if simplified { (None, ctx.opt_f32(3)?) } else { (ctx.opt_f32(3)?, ctx.opt_f32(4)?) };
    let eps = ctx.attr_float("epsilon")?.ok_or("required attribute `epsilon` is missing")?;
    let shape = x.shape().to_vec();
    if shape.is_empty() {
        return Err("input must have rank >= 1".into());
    }
    if broadcast_to(skip, &shape).is_err() {
        return Err(format!("skip of shape {:?} does not broadcast to the input shape {shape:?}", skip.shape()));
    }
    let mut sum = zip2(x, skip, |a, b| a + b)?;
    if let Some(b) = bias {
        sum = zip2(&sum, b, |a, c| a + c)?;
        if sum.shape() != &shape[..] {
            return Err(format!("bias of shape {:?} does not broadcast to the input shape {shape:?}", b.shape()));
        }
    }
    let axis = shape.len() - 1;
    let gamma = RowParam::new(gamma, &shape, axis, "gamma")?;
    let beta = beta.map(|b| RowParam::new(b, &shape, axis, "beta")).transpose()?;
    let sum = to_vec(&sum);
    let r = normalize_rows(&sum, shape[axis], eps, simplified, &gamma, beta.as_ref());
    let st = stat_shape(&shape, axis);
    let f = |a: ArrayD<f32>| Value { dtype: xv.dtype, data: Data::F(a) };
    Ok(vec![f(array(&shape, r.y)?), f(array(&st, r.mean)?), f(array(&st, r.inv_std)?), f(array(&shape, sum)?)])
}

#[cfg(test)]
mod tests {
    use super::super::common::test_util::*;
    use jetc_ir::Attr;

    fn softmax64(x: &[f64]) -> Vec<f64> {
        let m = x.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
        let s: f64 = x.iter().map(|v| (v - m).exp()).sum();
        x.iter().map(|v| (v - m).exp() / s).collect()
    }

    #[test]
    fn softmax_axes_and_opsets() {
        let mut rng = Rng::new(3);
        let d = rng.vec(24).iter().map(|v| v * 5.0).collect::<Vec<_>>();
        let x = f(&[2, 3, 4], &d);
        // opset 13, axis 1 (not last): each (i, :, k) column.
        let y = fvec(&run1(&op("Softmax", 13, &[("axis", Attr::Int(1))]), &[&x]));
        let mut want = vec![0f64; 24];
        for a in 0..2 {
            for c in 0..4 {
                let col: Vec<f64> = (0..3).map(|b| d[a * 12 + b * 4 + c] as f64).collect();
                for (b, p) in softmax64(&col).into_iter().enumerate() {
                    want[a * 12 + b * 4 + c] = p;
                }
            }
        }
        assert_close(&y, &want, 1e-6);
        // opset 11, default axis 1: rows of 12 elements normalised jointly.
        let y = fvec(&run1(&op("Softmax", 11, &[]), &[&x]));
        let want: Vec<f64> = (0..2)
            .flat_map(|a| softmax64(&d[a * 12..a * 12 + 12].iter().map(|&v| v as f64).collect::<Vec<_>>()))
            .collect();
        assert_close(&y, &want, 1e-6);
        // LogSoftmax default axis -1.
        let y = fvec(&run1(&op("LogSoftmax", 13, &[]), &[&x]));
        let want: Vec<f64> = (0..6)
            .flat_map(|r| softmax64(&d[r * 4..r * 4 + 4].iter().map(|&v| v as f64).collect::<Vec<_>>()))
            .map(f64::ln)
            .collect();
        assert_close(&y, &want, 1e-5);
        // Large values do not overflow thanks to the max subtraction.
        let y = fvec(&run1(&op("Softmax", 13, &[]), &[&f(&[2], &[1000.0, 1000.0])]));
        assert_eq!(y, vec![0.5, 0.5]);
    }

    #[test]
    fn layer_norm_outputs() {
        let x = f(&[2, 2], &[1., 3., -1., 1.]);
        let o = op("LayerNormalization", 17, &[("epsilon", Attr::Float(0.0))]);
        let outs = run_opt(&o, &[Some(&x), Some(&f(&[2], &[2., 1.])), Some(&f(&[2], &[0.5, 0.]))], 3).unwrap();
        assert_eq!(fvec(&outs[0]), vec![-1.5, 1., -1.5, 1.]);
        assert_eq!(outs[1].shape(), &[2, 1]);
        assert_eq!(fvec(&outs[1]), vec![2., 0.]);
        assert_eq!(fvec(&outs[2]), vec![1., 1.]);
        // axis 0 normalises everything; Scale broadcast over the normalised shape.
        let o = op("LayerNormalization", 17, &[("axis", Attr::Int(0)), ("epsilon", Attr::Float(0.0))]);
        let outs = run_opt(&o, &[Some(&x), Some(&f(&[1], &[1.])), None], 1).unwrap();
        // mean 1, variance (0 + 4 + 4 + 0) / 4 = 2.
        let sd = 2f64.sqrt();
        assert_close(&fvec(&outs[0]), &[0.0, 2.0 / sd, -2.0 / sd, 0.0], 1e-6);
        assert!(run(&op("LayerNormalization", 17, &[]), &[&x, &f(&[3], &[1., 1., 1.])]).is_err());
    }

    #[test]
    fn rms_norm_matches_f64_oracle() {
        let mut rng = Rng::new(5);
        let (rows, n) = (3, 16);
        let xd = rng.vec(rows * n);
        let w = rng.vec(n);
        let eps = 1e-6;
        let mut want = Vec::new();
        for r in 0..rows {
            let xr = &xd[r * n..(r + 1) * n];
            let ms: f64 = xr.iter().map(|&v| (v as f64).powi(2)).sum::<f64>() / n as f64;
            let inv = 1.0 / (ms + eps).sqrt();
            want.extend(xr.iter().zip(&w).map(|(&v, &g)| v as f64 * inv * g as f64));
        }
        let x = f(&[rows, n], &xd);
        let wt = f(&[n], &w);
        let o = op("RMSNormalization", 23, &[("epsilon", Attr::Float(eps as f32))]);
        assert_close(&fvec(&run1(&o, &[&x, &wt])), &want, 1e-5);
        let o = op("SimplifiedLayerNormalization", 1, &[("epsilon", Attr::Float(eps as f32))]);
        let outs = run_opt(&o, &[Some(&x), Some(&wt)], 2).unwrap();
        assert_close(&fvec(&outs[0]), &want, 1e-5);
        assert_eq!(outs[1].shape(), &[rows, 1]);
        let o = ms_op("SimplifiedLayerNormalization", &[("epsilon", Attr::Float(eps as f32))]);
        assert_close(&fvec(&run1(&o, &[&x, &wt])), &want, 1e-5);
    }

    #[test]
    fn skip_norms() {
        let x = f(&[1, 2, 2], &[1., 2., 3., 4.]);
        let skip = f(&[1, 2, 2], &[1., 0., -1., 0.]);
        let gamma = f(&[2], &[1., 2.]);
        let bias = f(&[2], &[0., 1.]);
        let o = ms_op("SkipSimplifiedLayerNormalization", &[("epsilon", Attr::Float(0.0))]);
        let outs = run_opt(&o, &[Some(&x), Some(&skip), Some(&gamma), Some(&bias)], 4).unwrap();
        // sums: [2, 3], [2, 5]
        assert_eq!(fvec(&outs[3]), vec![2., 3., 2., 5.]);
        let r1 = ((4.0f64 + 9.0) / 2.0).sqrt();
        let r2 = ((4.0f64 + 25.0) / 2.0).sqrt();
        assert_close(&fvec(&outs[0]), &[2.0 / r1, 6.0 / r1, 2.0 / r2, 10.0 / r2], 1e-6);
        assert_eq!(outs[2].shape(), &[1, 2, 1]);
        assert_close(&fvec(&outs[2]), &[1.0 / r1, 1.0 / r2], 1e-6);
        // Skip broadcast from (S, H), no bias.
        let skip2 = f(&[2, 2], &[1., 0., -1., 0.]);
        let outs2 = run_opt(&o, &[Some(&x), Some(&skip2), Some(&gamma)], 1).unwrap();
        let s = [2.0f64, 2.0, 2.0, 4.0];
        let (q1, q2) = (((4.0 + 4.0) / 2.0f64).sqrt(), ((4.0 + 16.0) / 2.0f64).sqrt());
        assert_close(&fvec(&outs2[0]), &[s[0] / q1, 2.0 * s[1] / q1, s[2] / q2, 2.0 * s[3] / q2], 1e-6);
        // The full SkipLayerNormalization with beta.
        let o = ms_op("SkipLayerNormalization", &[("epsilon", Attr::Float(0.0))]);
        let outs =
            run_opt(&o, &[Some(&x), Some(&skip), Some(&gamma), Some(&f(&[2], &[10., 20.])), Some(&bias)], 1).unwrap();
        assert_close(&fvec(&outs[0]), &[9.0, 22.0, 9.0, 22.0], 1e-6);
        assert!(run(&ms_op("SkipSimplifiedLayerNormalization", &[]), &[&x, &skip, &gamma]).is_err());
    }
}
