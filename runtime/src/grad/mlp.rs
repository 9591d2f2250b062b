//! VJP of the SwiGLU MLP `y = (silu(x Wg) * (x Wu)) Wd`: dx always (it flows through frozen
//! MLPs), dWg, dWu, dWd when asked. GEMMs over all rows at once on the operands' own
//! buffers, transposes as strides (linear, so they are checked by the adjoint identity) around the pointwise gate of
//! [`crate::math::swiglu_gate_vjp`] (checked in f64 against finite differences).
use ndarray::{ArrayD, IxDyn};

use super::{Bwd, R};
use crate::math::{swiglu_gate, swiglu_gate_vjp};
use crate::onnx_ops::common::contiguous;
use crate::onnx_ops::matmul::{sgemm, Mat};

/// The `rows x n` product of two strided operands, in a new row-major buffer.
fn gemm(rows: usize, n: usize, k: usize, a: Mat<'_>, b: Mat<'_>) -> R<Vec<f32>> {
    let mut c = vec![0f32; rows * n];
    sgemm(rows, n, k, a, b, &mut c, 1.0, false, true)?;
    Ok(c)
}

pub(crate) fn swiglu_vjp(c: &Bwd) -> R<Vec<Option<ArrayD<f32>>>> {
    let x = c.xf(0, "x")?;
    let wg = c.xf(1, "w_gate")?;
    let wu = c.xf(2, "w_up")?;
    let wd = c.xf(3, "w_down")?;
    let dy = c.req_dy(0)?;
    let d = *x.shape().last().ok_or("x is a scalar")?;
    if wg.ndim() != 2 || wu.shape() != wg.shape() || wd.ndim() != 2 || wg.shape()[0] != d || wd.shape()[0] != wg.shape()[1] {
        return Err(format!("weights gate {:?} up {:?} down {:?} do not fit x {:?}", wg.shape(), wu.shape(), wd.shape(), x.shape()));
    }
    let (f, n) = (wg.shape()[1], wd.shape()[1]);
    let rows = x.len() / d.max(1);
    if dy.len() != rows * n {
        return Err(format!("the cotangent {:?} does not fit x {:?} and w_down {:?}", dy.shape(), x.shape(), wd.shape()));
    }
    let (xd, gd, ud, dd, yd) = (contiguous(x), contiguous(wg), contiguous(wu), contiguous(wd), contiguous(dy));
    // Recomputed forward pre-activations, and the cotangent of the gate's output.
    let h = gemm(rows, f, d, Mat::rows(&xd, d), Mat::rows(&gd, f))?;
    let u = gemm(rows, f, d, Mat::rows(&xd, d), Mat::rows(&ud, f))?;
    let da = gemm(rows, f, n, Mat::rows(&yd, n), Mat::transposed(&dd, n))?;
    let mut dh = da.clone();
    let mut du = da;
    for (((gh, gu), &hv), &uv) in dh.iter_mut().zip(du.iter_mut()).zip(&h).zip(&u) {
        (*gh, *gu) = swiglu_gate_vjp(*gh, hv, uv);
    }
    let shaped = |shape: &[usize], v: Vec<f32>| ArrayD::from_shape_vec(IxDyn(shape), v).map_err(|e| e.to_string());
    let mut out = vec![None, None, None, None];
    if c.wants(0) {
        let mut dx = gemm(rows, d, f, Mat::rows(&dh, f), Mat::transposed(&gd, f))?;
        sgemm(rows, d, f, Mat::rows(&du, f), Mat::transposed(&ud, f), &mut dx, 1.0, true, true)?;
        out[0] = Some(shaped(x.shape(), dx)?);
    }
    if c.wants(1) {
        out[1] = Some(shaped(wg.shape(), gemm(d, f, rows, Mat::transposed(&xd, d), Mat::rows(&dh, f))?)?);
    }
    if c.wants(2) {
        out[2] = Some(shaped(wu.shape(), gemm(d, f, rows, Mat::transposed(&xd, d), Mat::rows(&du, f))?)?);
    }
    if c.wants(3) {
        let a: Vec<f32> = h.iter().zip(&u).map(|(&hv, &uv)| swiglu_gate(hv, uv)).collect();
        out[3] = Some(shaped(wd.shape(), gemm(f, n, rows, Mat::transposed(&a, f), Mat::rows(&yd, n))?)?);
    }
    Ok(out)
}
