//! JetBlock's dynamic causal convolution: forward and backward math generic over [`Real`].
//!
//! With `u_ext = concat(past [W tokens], u)` per channel and `z[t] = sum_i ker[t, i] *
//! u_ext[W + t - W + 1 + i]`, the output is `y = silu(z)` and the new cache the last `W`
//! values of `u_ext` (the layouts of [`crate::linear::dynamic_conv`]). The backward
//! scatters `dz = dy silu'(z)` back through the taps into `u_ext`, adds the cache's
//! cotangent to its last `W` slots, and splits `u_ext`'s gradient into `du` and `dpast`.
use jetc_ir::DynamicConvSpec;
use ndarray::{ArrayD, IxDyn};

use super::real::{silu, silu_grad, Real};
use super::{Bwd, R};

/// Sizes: batch, seq, channels, width.
#[derive(Clone, Copy, Debug)]
pub struct Conv {
    pub b: usize,
    pub t: usize,
    pub c: usize,
    pub w: usize,
}

impl Conv {
    /// u_ext of (batch, channel) with `W` past slots first.
    fn ext<T: Real>(&self, u: &[T], past: Option<&[T]>, b: usize, ch: usize) -> Vec<T> {
        let mut e = vec![T::zero(); self.w + self.t];
        if let Some(p) = past {
            e[..self.w].copy_from_slice(&p[(b * self.c + ch) * self.w..(b * self.c + ch + 1) * self.w]);
        }
        for t in 0..self.t {
            e[self.w + t] = u[(b * self.t + t) * self.c + ch];
        }
        e
    }
}

/// Forward: (y [B,T,C], present [B,C,W]).
pub fn forward<T: Real>(s: &Conv, u: &[T], ker: &[T], past: Option<&[T]>) -> (Vec<T>, Vec<T>) {
    let mut y = vec![T::zero(); s.b * s.t * s.c];
    let mut present = vec![T::zero(); s.b * s.c * s.w];
    for b in 0..s.b {
        for ch in 0..s.c {
            let e = s.ext(u, past, b, ch);
            for t in 0..s.t {
                let row = (b * s.t + t) * s.c + ch;
                let mut z = T::zero();
                for i in 0..s.w {
                    z += ker[row * s.w + i] * e[t + 1 + i];
                }
                y[row] = silu(z);
            }
            for p in 0..s.w {
                present[(b * s.c + ch) * s.w + p] = e[s.t + p];
            }
        }
    }
    (y, present)
}

/// Backward: (du, dker, dpast) for cotangents of y and (optionally) of the new cache.
///
/// Token-major (rows of `C` contiguous channels), batches in parallel: token `t` reads
/// `x(t - W + 1 + i)` for tap `i`, where a negative position is a slot of `past`.
pub fn backward<T: Real>(s: &Conv, u: &[T], ker: &[T], past: Option<&[T]>, dy: Option<&[T]>, dpresent: Option<&[T]>) -> (Vec<T>, Vec<T>, Vec<T>) {
    use rayon::prelude::*;
    let (tt, c, w) = (s.t, s.c, s.w);
    let mut du = vec![T::zero(); u.len()];
    let mut dker = vec![T::zero(); ker.len()];
    let mut dpast = vec![T::zero(); s.b * c * w];
    du.par_chunks_mut(tt * c.max(1))
        .zip(dker.par_chunks_mut((tt * c * w).max(1)))
        .zip(dpast.par_chunks_mut((c * w).max(1)))
        .enumerate()
        .for_each(|(b, ((du, dker), dpast))| {
            // The cache's cotangent: its slot p is position T - W + p of u_ext.
            let mut dx_past = vec![T::zero(); c * w]; // [C, W], u_ext slots before the sequence
            if let Some(dp) = dpresent {
                for ch in 0..c {
                    for p in 0..w {
                        let pos = tt as isize - w as isize + p as isize;
                        let g = dp[(b * c + ch) * w + p];
                        if pos >= 0 {
                            du[pos as usize * c + ch] += g;
                        } else {
                            dx_past[ch * w + (w as isize + pos) as usize] += g;
                        }
                    }
                }
            }
            if let Some(dy) = dy {
                let mut z = vec![T::zero(); c];
                for t in 0..tt {
                    let krow = &ker[(b * tt + t) * c * w..(b * tt + t + 1) * c * w];
                    z.iter_mut().for_each(|v| *v = T::zero());
                    for i in 0..w {
                        let pos = t as isize - w as isize + 1 + i as isize;
                        for ch in 0..c {
                            let x = if pos >= 0 {
                                u[(b * tt + pos as usize) * c + ch]
                            } else {
                                past.map_or(T::zero(), |p| p[(b * c + ch) * w + (w as isize + pos) as usize])
                            };
                            z[ch] += krow[ch * w + i] * x;
                        }
                    }
                    let dyr = &dy[(b * tt + t) * c..(b * tt + t + 1) * c];
                    for ch in 0..c {
                        let dz = dyr[ch] * silu_grad(z[ch]);
                        for i in 0..w {
                            let pos = t as isize - w as isize + 1 + i as isize;
                            let k = krow[ch * w + i];
                            if pos >= 0 {
                                let x = u[(b * tt + pos as usize) * c + ch];
                                dker[t * c * w + ch * w + i] = dz * x;
                                du[pos as usize * c + ch] += dz * k;
                            } else {
                                let slot = (w as isize + pos) as usize;
                                let x = past.map_or(T::zero(), |p| p[(b * c + ch) * w + slot]);
                                dker[t * c * w + ch * w + i] = dz * x;
                                dx_past[ch * w + slot] += dz * k;
                            }
                        }
                    }
                }
            }
            dpast.copy_from_slice(&dx_past);
        });
    (du, dker, dpast)
}

pub(crate) fn vjp(c: &Bwd, spec: &DynamicConvSpec) -> R<Vec<Option<ArrayD<f32>>>> {
    let u = c.xf(0, "u")?;
    let ker = c.xf(1, "kernels")?;
    let past = c.opt_xf(2, "past")?;
    let [b, t, ch] = match u.shape() {
        &[b, t, ch] => [b, t, ch],
        s => return Err(format!("u must be [B, T, C], got {s:?}")),
    };
    let s = Conv { b, t, c: ch, w: spec.width };
    if ker.len() != b * t * ch * s.w || past.is_some_and(|p| p.len() != b * ch * s.w) {
        return Err(format!("kernels {:?} / past {:?} do not fit u {:?} with width {}", ker.shape(), past.map(|p| p.shape()), u.shape(), s.w));
    }
    let v = |a: &ArrayD<f32>| crate::onnx_ops::common::contiguous(a).into_owned();
    let pd = past.map(v);
    let dy = c.dy(0)?.map(v);
    let dp = c.dy(1)?.map(v);
    let (du, dk, dpast) = backward(&s, &v(u), &v(ker), pd.as_deref(), dy.as_deref(), dp.as_deref());
    let arr = |shape: &[usize], d: Vec<f32>| ArrayD::from_shape_vec(IxDyn(shape), d).map_err(|e| e.to_string());
    Ok(vec![
        Some(arr(u.shape(), du)?),
        Some(arr(ker.shape(), dk)?),
        match past {
            Some(p) => Some(arr(p.shape(), dpast)?),
            None => None,
        },
    ])
}
