//! RmsNorm, per-head L2Norm and GatedRmsNorm: forward and backward math, generic over
//! [`Real`] so that the forward kernels of the executor (f32) and the finite-difference
//! checks (f64) run the same code.
//!
//! With `n = x * r` and `r = 1 / sqrt(mean(x^2) + eps)` per row (RMS) or
//! `r = 1 / sqrt(sum(x^2) + eps)` per head (L2), the backward of `n` is
//! `dx = r (dn - n mean(dn n))` (RMS) and `dx = r (dn - n sum(dn n))` (L2).
//!
//! Weight gradients sum over rows in fixed blocks of [`ROW_BLOCK`] rows, added in order, so
//! the result is the same bits whatever the thread count or work stealing (resumed training
//! reproduces an uninterrupted run exactly).
use ndarray::{ArrayD, IxDyn};
use rayon::prelude::*;

use super::real::{silu, silu_grad, Real};
use super::{Bwd, R};

/// Rows per block of the weight-gradient partial sums.
pub const ROW_BLOCK: usize = 64;

/// Sums per-block partial vectors in block order.
fn sum_blocks<T: Real>(parts: Vec<Vec<T>>, d: usize) -> Vec<T> {
    let mut out = vec![T::zero(); d];
    for p in parts {
        for (a, b) in out.iter_mut().zip(p) {
            *a += b;
        }
    }
    out
}

/// 1 / sqrt(sum(x^2) / div + eps).
fn inv_norm<T: Real>(x: &[T], div: T, eps: T) -> T {
    let s: T = x.iter().map(|&v| v * v).sum();
    T::one() / (s / div + eps).sqrt()
}

/// Backward of n = x r for one row: dx = r (dn - n * sum(dn n) / div).
fn norm_row_vjp<T: Real>(x: &[T], dn: &[T], r: T, div: T, dx: &mut [T]) {
    let s: T = x.iter().zip(dn).map(|(&v, &g)| v * r * g).sum();
    for ((o, &v), &g) in dx.iter_mut().zip(x).zip(dn) {
        *o = r * (g - v * r * s / div);
    }
}

/// RMSNorm over rows of length `d`: y = x r w.
pub fn rms_norm<T: Real>(x: &[T], w: &[T], d: usize, eps: T) -> Vec<T> {
    let mut y = vec![T::zero(); x.len()];
    let div = T::of(d as f64);
    y.par_chunks_mut(d.max(1)).zip(x.par_chunks(d.max(1))).for_each(|(yr, xr)| {
        let r = inv_norm(xr, div, eps);
        for ((o, &v), &g) in yr.iter_mut().zip(xr).zip(w) {
            *o = v * r * g;
        }
    });
    y
}

/// Backward of [`rms_norm`]: (dx, dw).
pub fn rms_norm_backward<T: Real>(x: &[T], w: &[T], dy: &[T], d: usize, eps: T) -> (Vec<T>, Vec<T>) {
    let div = T::of(d as f64);
    let d1 = d.max(1);
    let mut dx = vec![T::zero(); x.len()];
    let parts: Vec<Vec<T>> = dx
        .par_chunks_mut(d1 * ROW_BLOCK)
        .zip(x.par_chunks(d1 * ROW_BLOCK).zip(dy.par_chunks(d1 * ROW_BLOCK)))
        .map(|(dxb, (xb, gb))| {
            let mut dw = vec![T::zero(); d];
            for (dxr, (xr, gr)) in dxb.chunks_mut(d1).zip(xb.chunks(d1).zip(gb.chunks(d1))) {
                let r = inv_norm(xr, div, eps);
                let dn: Vec<T> = gr.iter().zip(w).map(|(&g, &wi)| g * wi).collect();
                norm_row_vjp(xr, &dn, r, div, dxr);
                for ((acc, &v), &g) in dw.iter_mut().zip(xr).zip(gr) {
                    *acc += g * v * r;
                }
            }
            dw
        })
        .collect();
    (dx, sum_blocks(parts, d))
}

/// Per-head L2 normalisation of rows of `d`: y = x / sqrt(sum(x^2) + eps).
pub fn l2_norm<T: Real>(x: &[T], d: usize, eps: T) -> Vec<T> {
    let mut y = x.to_vec();
    y.par_chunks_mut(d.max(1)).for_each(|h| {
        let r = inv_norm(h, T::one(), eps);
        h.iter_mut().for_each(|v| *v *= r);
    });
    y
}

pub fn l2_norm_backward<T: Real>(x: &[T], dy: &[T], d: usize, eps: T) -> Vec<T> {
    let mut dx = vec![T::zero(); x.len()];
    dx.par_chunks_mut(d.max(1)).zip(x.par_chunks(d.max(1)).zip(dy.par_chunks(d.max(1)))).for_each(|(o, (xr, gr))| {
        let r = inv_norm(xr, T::one(), eps);
        norm_row_vjp(xr, gr, r, T::one(), o);
    });
    dx
}

/// Gated RMSNorm per head of `d`: y = rmsnorm(o) w silu(gate).
pub fn gated_rms_norm<T: Real>(o: &[T], w: &[T], gate: &[T], d: usize, eps: T) -> Vec<T> {
    let div = T::of(d as f64);
    let mut y = o.to_vec();
    y.par_chunks_mut(d.max(1)).zip(gate.par_chunks(d.max(1))).for_each(|(h, g)| {
        let r = inv_norm(h, div, eps);
        for ((v, &wi), &gi) in h.iter_mut().zip(w).zip(g) {
            *v = *v * r * wi * silu(gi);
        }
    });
    y
}

/// Backward of [`gated_rms_norm`]: (do, dw, dgate).
pub fn gated_rms_norm_backward<T: Real>(o: &[T], w: &[T], gate: &[T], dy: &[T], d: usize, eps: T) -> (Vec<T>, Vec<T>, Vec<T>) {
    let div = T::of(d as f64);
    let d1 = d.max(1);
    let blk = d1 * ROW_BLOCK;
    let mut dox = vec![T::zero(); o.len()];
    let mut dg = vec![T::zero(); o.len()];
    let parts: Vec<Vec<T>> = dox
        .par_chunks_mut(blk)
        .zip(dg.par_chunks_mut(blk))
        .zip(o.par_chunks(blk).zip(gate.par_chunks(blk)).zip(dy.par_chunks(blk)))
        .map(|((dob, dgb), ((ob, gb), yb))| {
            let mut dw = vec![T::zero(); d];
            for ((dor, dgr), ((or, gr), yr)) in dob.chunks_mut(d1).zip(dgb.chunks_mut(d1)).zip(ob.chunks(d1).zip(gb.chunks(d1)).zip(yb.chunks(d1))) {
                let r = inv_norm(or, div, eps);
                let mut dn = vec![T::zero(); d];
                for i in 0..d {
                    let n = or[i] * r;
                    let s = silu(gr[i]);
                    dn[i] = yr[i] * w[i] * s;
                    dw[i] += yr[i] * n * s;
                    dgr[i] = yr[i] * n * w[i] * silu_grad(gr[i]);
                }
                norm_row_vjp(or, &dn, r, div, dor);
            }
            dw
        })
        .collect();
    (dox, sum_blocks(parts, d), dg)
}

fn data(a: &ArrayD<f32>) -> Vec<f32> {
    a.iter().copied().collect()
}

fn arr(shape: &[usize], v: Vec<f32>) -> R<ArrayD<f32>> {
    ArrayD::from_shape_vec(IxDyn(shape), v).map_err(|e| e.to_string())
}

fn head_width(x: &ArrayD<f32>, heads: usize) -> R<usize> {
    let last = *x.shape().last().ok_or("x is a scalar")?;
    if heads == 0 || last % heads != 0 {
        return Err(format!("last axis {last} does not split into {heads} heads"));
    }
    Ok(last / heads)
}

pub(crate) fn rms_norm_vjp(c: &Bwd, eps: f32) -> R<Vec<Option<ArrayD<f32>>>> {
    let x = c.xf(0, "x")?;
    let w = c.xf(1, "weight")?;
    let dy = c.req_dy(0)?;
    let d = *x.shape().last().ok_or("x is a scalar")?;
    if w.len() != d || dy.shape() != x.shape() {
        return Err(format!("weight {:?} / cotangent {:?} do not fit x {:?}", w.shape(), dy.shape(), x.shape()));
    }
    let (dx, dw) = rms_norm_backward(&data(x), &data(w), &data(dy), d, eps);
    Ok(vec![Some(arr(x.shape(), dx)?), Some(arr(w.shape(), dw)?)])
}

pub(crate) fn l2_norm_vjp(c: &Bwd, heads: usize, eps: f32) -> R<Vec<Option<ArrayD<f32>>>> {
    let x = c.xf(0, "x")?;
    let dy = c.req_dy(0)?;
    let d = head_width(x, heads)?;
    if dy.shape() != x.shape() {
        return Err(format!("cotangent {:?} does not fit x {:?}", dy.shape(), x.shape()));
    }
    Ok(vec![Some(arr(x.shape(), l2_norm_backward(&data(x), &data(dy), d, eps))?)])
}

pub(crate) fn gated_rms_norm_vjp(c: &Bwd, heads: usize, eps: f32) -> R<Vec<Option<ArrayD<f32>>>> {
    let o = c.xf(0, "o")?;
    let w = c.xf(1, "weight")?;
    let g = c.xf(2, "gate")?;
    let dy = c.req_dy(0)?;
    let d = head_width(o, heads)?;
    if w.len() != d || g.shape() != o.shape() || dy.shape() != o.shape() {
        return Err(format!("weight {:?} / gate {:?} / cotangent {:?} do not fit o {:?}", w.shape(), g.shape(), dy.shape(), o.shape()));
    }
    let (dox, dw, dg) = gated_rms_norm_backward(&data(o), &data(w), &data(g), &data(dy), d, eps);
    Ok(vec![Some(arr(o.shape(), dox)?), Some(arr(w.shape(), dw)?), Some(arr(g.shape(), dg)?)])
}
