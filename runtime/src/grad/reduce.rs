//! VJPs of ReduceSum and ReduceMean: the cotangent broadcast back over the reduced axes
//! (divided by the count for the mean). Axes come from the attribute or the input exactly as
//! the forward reads them.
use jetc_ir::OnnxOp;
use ndarray::{ArrayD, IxDyn};

use super::broadcast::expand;
use super::{Bwd, R};

pub(crate) fn is_reduce(o: &OnnxOp) -> bool {
    (o.domain.is_empty() || o.domain == "ai.onnx") && matches!(o.op_type.as_str(), "ReduceSum" | "ReduceMean")
}

pub(crate) fn vjp(o: &OnnxOp, c: &Bwd) -> R<Vec<Option<ArrayD<f32>>>> {
    let x = c.xf(0, "x")?;
    let dy = c.req_dy(0)?;
    let mean = o.op_type == "ReduceMean";
    let from = if mean { 18 } else { 13 };
    let axes: Vec<i64> = if o.opset < from {
        o.ints("axes").map(|a| a.to_vec()).unwrap_or_default()
    } else {
        match c.x(1) {
            None => Vec::new(),
            Some(v) => v.as_i64().ok_or("axes must be integers")?.iter().copied().collect(),
        }
    };
    let keepdims = o.int_or("keepdims", 1) != 0;
    let noop = o.int_or("noop_with_empty_axes", 0) != 0;
    let rank = x.ndim();
    if axes.is_empty() && noop {
        return Ok(vec![Some(dy.clone()), None]);
    }
    let mut axes: Vec<usize> = if axes.is_empty() {
        (0..rank).collect()
    } else {
        axes.iter()
            .map(|&a| {
                let r = if a < 0 { a + rank as i64 } else { a };
                if r < 0 || r >= rank as i64 { Err(format!("axis {a} is out of range for rank {rank}")) } else { Ok(r as usize) }
            })
            .collect::<R<_>>()?
    };
    axes.sort_unstable();
    axes.dedup();
    let kept: Vec<usize> = x.shape().iter().enumerate().map(|(d, &n)| if axes.contains(&d) { 1 } else { n }).collect();
    let count: usize = axes.iter().map(|&d| x.shape()[d]).product();
    // With or without the kept axes of size 1, the cotangent has the kept shape's elements.
    let _ = keepdims;
    let g = ArrayD::from_shape_vec(IxDyn(&kept), dy.iter().copied().collect())
        .map_err(|e| format!("cotangent {:?} does not fit {kept:?}: {e}", dy.shape()))?;
    let mut dx = expand(&g, x.shape())?;
    if mean && count > 0 {
        let inv = 1.0 / count as f32;
        dx.mapv_inplace(|v| v * inv);
    }
    Ok(vec![Some(dx), None])
}
