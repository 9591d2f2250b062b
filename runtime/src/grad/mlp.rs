//! VJP of the SwiGLU MLP `y = (silu(x Wg) * (x Wu)) Wd`: dx always (it flows through frozen
//! MLPs), dWg, dWu, dWd when asked. Six GEMMs over all rows at once (linear, so their
//! transposes are checked by the adjoint identity) around the pointwise gate of
//! [`crate::math::swiglu_gate_vjp`] (checked in f64 against finite differences).
use ndarray::{ArrayD, IxDyn};

use super::linalg::swap_last;
use crate::math::{swiglu_gate, swiglu_gate_vjp};
use super::{Bwd, R};
use crate::onnx_ops::matmul::matmul_f32;

fn rows2(a: &ArrayD<f32>, cols: usize) -> R<ArrayD<f32>> {
    let rows = a.len() / cols.max(1);
    ArrayD::from_shape_vec(IxDyn(&[rows, cols]), a.iter().copied().collect()).map_err(|e| e.to_string())
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
    let n = wd.shape()[1];
    let x2 = rows2(x, d)?;
    let dy2 = rows2(dy, n)?;
    let h = matmul_f32(&x2, wg)?;
    let u = matmul_f32(&x2, wu)?;
    let da = matmul_f32(&dy2, &swap_last(wd))?;
    let mut dh = da.clone();
    let mut du = da;
    ndarray::Zip::from(&mut dh).and(&mut du).and(&h).and(&u).for_each(|gh, gu, &hv, &uv| {
        (*gh, *gu) = swiglu_gate_vjp(*gh, hv, uv);
    });
    let mut out = vec![None, None, None, None];
    if c.wants(0) {
        let mut dx = matmul_f32(&dh, &swap_last(wg))?;
        dx += &matmul_f32(&du, &swap_last(wu))?;
        out[0] = Some(ArrayD::from_shape_vec(IxDyn(x.shape()), dx.iter().copied().collect()).map_err(|e| e.to_string())?);
    }
    let xt = if c.wants(1) || c.wants(2) { Some(swap_last(&x2)) } else { None };
    if let (true, Some(xt)) = (c.wants(1), &xt) {
        out[1] = Some(matmul_f32(xt, &dh)?);
    }
    if let (true, Some(xt)) = (c.wants(2), &xt) {
        out[2] = Some(matmul_f32(xt, &du)?);
    }
    if c.wants(3) {
        let mut a = h;
        ndarray::Zip::from(&mut a).and(&u).for_each(|hv, &uv| *hv = swiglu_gate(*hv, uv));
        out[3] = Some(matmul_f32(&swap_last(&a), &dy2)?);
    }
    Ok(out)
}
