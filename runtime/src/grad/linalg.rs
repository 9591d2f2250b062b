//! VJPs of MatMul (numpy batch broadcasting, 1-D operands) and Gemm:
//! dA = dY B^T, dB = A^T dY, each summed back over broadcast batch axes. A weight shared by
//! every row of a batched activation (`[B, T, D] @ [D, N]`) gets its gradient from one GEMM
//! over all rows.
use jetc_ir::OnnxOp;
use ndarray::{ArrayD, IxDyn};

use super::broadcast::sum_to_shape;
use super::{Bwd, R};
use crate::onnx_ops::common::contiguous;
use crate::onnx_ops::matmul::{matmul_f32, sgemm, Mat};

pub(crate) fn is_linalg(o: &OnnxOp) -> bool {
    (o.domain.is_empty() || o.domain == "ai.onnx") && matches!(o.op_type.as_str(), "MatMul" | "Gemm")
}

fn reshape(a: &ArrayD<f32>, shape: &[usize]) -> R<ArrayD<f32>> {
    ArrayD::from_shape_vec(IxDyn(shape), a.iter().copied().collect()).map_err(|e| e.to_string())
}

/// `a` with its last two axes swapped, in standard layout.
pub(crate) fn swap_last(a: &ArrayD<f32>) -> ArrayD<f32> {
    let r = a.ndim();
    let mut perm: Vec<usize> = (0..r).collect();
    perm.swap(r - 2, r - 1);
    a.view().permuted_axes(perm).as_standard_layout().to_owned()
}

pub(crate) fn vjp(o: &OnnxOp, c: &Bwd) -> R<Vec<Option<ArrayD<f32>>>> {
    match o.op_type.as_str() {
        "MatMul" => matmul_vjp(c),
        _ => gemm_vjp(o, c),
    }
}

fn matmul_vjp(c: &Bwd) -> R<Vec<Option<ArrayD<f32>>>> {
    let a = c.xf(0, "A")?;
    let b = c.xf(1, "B")?;
    let dy = c.req_dy(0)?;
    if a.ndim() == 0 || b.ndim() == 0 {
        return Err("MatMul operands must have rank >= 1".into());
    }
    if a.ndim() >= 2 && b.ndim() == 2 {
        return shared_weight_vjp(c, a, b, dy);
    }
    let a2 = if a.ndim() == 1 { reshape(a, &[1, a.len()])? } else { a.clone() };
    let b2 = if b.ndim() == 1 { reshape(b, &[b.len(), 1])? } else { b.clone() };
    // The cotangent with the axes that 1-D operands removed put back.
    let mut out_shape: Vec<usize> = dy.shape().to_vec();
    if a.ndim() == 1 {
        out_shape.insert(out_shape.len() - usize::from(b.ndim() != 1), 1);
    }
    if b.ndim() == 1 {
        out_shape.push(1);
    }
    let dy2 = reshape(dy, &out_shape)?;
    let (k, n) = (b2.shape()[b2.ndim() - 2], b2.shape()[b2.ndim() - 1]);
    let da = if c.wants(0) {
        let g = matmul_f32(&dy2, &swap_last(&b2))?;
        Some(reshape(&sum_to_shape(g, a2.shape())?, a.shape())?)
    } else {
        None
    };
    let db = if c.wants(1) {
        let g = if b2.ndim() == 2 {
            // One GEMM over all rows: A_flat^T [k, rows] @ dY_flat [rows, n].
            let rows = a2.len() / k.max(1);
            let af = reshape(&a2, &[rows, k])?;
            let gf = reshape(&dy2, &[rows, n])?;
            matmul_f32(&swap_last(&af), &gf)?
        } else {
            sum_to_shape(matmul_f32(&swap_last(&a2), &dy2)?, b2.shape())?
        };
        Some(reshape(&g, b.shape())?)
    } else {
        None
    };
    Ok(vec![da, db])
}

/// `[.., m, k] @ [k, n]`, the projection of every layer: both products as strided GEMMs on
/// the operands' own buffers (no transposed or reshaped copies), all rows at once.
fn shared_weight_vjp(c: &Bwd, a: &ArrayD<f32>, b: &ArrayD<f32>, dy: &ArrayD<f32>) -> R<Vec<Option<ArrayD<f32>>>> {
    let (k, n) = (b.shape()[0], b.shape()[1]);
    let rows = a.len() / k.max(1);
    if a.shape()[a.ndim() - 1] != k || dy.len() != rows * n {
        return Err(format!("MatMul shapes {:?} @ {:?} do not match the cotangent {:?}", a.shape(), b.shape(), dy.shape()));
    }
    let (ad, bd, gd) = (contiguous(a), contiguous(b), contiguous(dy));
    let da = if c.wants(0) {
        // dA [rows, k] = dY [rows, n] · B^T [n, k]
        let mut out = vec![0f32; rows * k];
        sgemm(rows, k, n, Mat::rows(&gd, n), Mat::transposed(&bd, n), &mut out, 1.0, false, true)?;
        Some(ArrayD::from_shape_vec(IxDyn(a.shape()), out).map_err(|e| e.to_string())?)
    } else {
        None
    };
    let db = if c.wants(1) {
        // dB [k, n] = A^T [k, rows] · dY [rows, n]
        let mut out = vec![0f32; k * n];
        sgemm(k, n, rows, Mat::transposed(&ad, k), Mat::rows(&gd, n), &mut out, 1.0, false, true)?;
        Some(ArrayD::from_shape_vec(IxDyn(b.shape()), out).map_err(|e| e.to_string())?)
    } else {
        None
    };
    Ok(vec![da, db])
}

fn gemm_vjp(o: &OnnxOp, c: &Bwd) -> R<Vec<Option<ArrayD<f32>>>> {
    let a = c.xf(0, "A")?;
    let b = c.xf(1, "B")?;
    let dy = c.req_dy(0)?;
    if a.ndim() != 2 || b.ndim() != 2 {
        return Err("Gemm operands must be 2-D".into());
    }
    let alpha = o.float("alpha").unwrap_or(1.0);
    let beta = o.float("beta").unwrap_or(1.0);
    let (ta, tb) = (o.int_or("transA", 0) != 0, o.int_or("transB", 0) != 0);
    let ap = if ta { swap_last(a) } else { a.clone() };
    let bp = if tb { swap_last(b) } else { b.clone() };
    let scale = |mut g: ArrayD<f32>, s: f32| {
        g.mapv_inplace(|v| v * s);
        g
    };
    let da = if c.wants(0) {
        let g = scale(matmul_f32(dy, &swap_last(&bp))?, alpha);
        Some(if ta { swap_last(&g) } else { g })
    } else {
        None
    };
    let db = if c.wants(1) {
        let g = scale(matmul_f32(&swap_last(&ap), dy)?, alpha);
        Some(if tb { swap_last(&g) } else { g })
    } else {
        None
    };
    let dc = match (c.wants(2), c.xf(2, "C")) {
        (true, Ok(cc)) => Some(sum_to_shape(scale(dy.clone(), beta), cc.shape())?),
        _ => None,
    };
    Ok(vec![da, db, dc])
}
