//! VJPs of the movement ops (reshapes, transposes, slices, concatenation, splits, gathers,
//! broadcasts, `Where`'s data inputs): one rule for all of them.
//!
//! A movement op only copies elements, so its transpose is a scatter-add along the same
//! element map. The map comes from the forward kernel itself: the differentiated input is
//! replaced by its element indices (an i64 iota), the other data inputs by -1, the forward
//! op runs on that, and each output element names the input element it came from (or -1).
//! There is then no second implementation of any movement op to keep in step with the
//! forward, and repeated indices (a gather, a broadcast) accumulate as they must.
use jetc_ir::OnnxOp;
use ndarray::{ArrayD, IxDyn};

use super::{Bwd, R};
use crate::value::{Data, Value};

const OPS: &[&str] = &[
    "Identity", "Reshape", "Transpose", "Squeeze", "Unsqueeze", "Flatten", "Slice", "Concat", "Split", "Gather",
    "GatherElements", "GatherND", "Expand", "Tile", "Where",
];

pub(crate) fn is_movement(o: &OnnxOp) -> bool {
    (o.domain.is_empty() || o.domain == "ai.onnx") && OPS.contains(&o.op_type.as_str())
}

/// Data inputs of each op (the others are shapes, indices, axes or conditions).
fn data_slots(o: &OnnxOp, n: usize) -> Vec<usize> {
    match o.op_type.as_str() {
        "Concat" => (0..n).collect(),
        "Where" => vec![1, 2],
        _ => vec![0],
    }
}

pub(crate) fn check(o: &OnnxOp, wrt: &[usize]) -> R<()> {
    if o.op_type == "Concat" {
        return Ok(());
    }
    let slots = data_slots(o, 0);
    match wrt.iter().find(|s| !slots.contains(s)) {
        Some(s) => Err(format!("input {s} of {} is not differentiable (shape, index, axis or condition input)", o.op_type)),
        None => Ok(()),
    }
}

pub(crate) fn vjp(o: &OnnxOp, c: &Bwd) -> R<Vec<Option<ArrayD<f32>>>> {
    let n_in = c.spec.forward_inputs;
    let n_out = c.spec.forward_outputs;
    let data = data_slots(o, n_in);
    let mut grads: Vec<Option<ArrayD<f32>>> = vec![None; n_in];
    for &slot in &c.spec.wrt {
        let x = c.xf(slot, "data")?;
        let iota = Value::i64(ArrayD::from_shape_vec(IxDyn(x.shape()), (0..x.len() as i64).collect()).map_err(|e| e.to_string())?);
        let mut subs: Vec<Option<Value>> = Vec::with_capacity(n_in);
        for j in 0..n_in {
            subs.push(match c.x(j) {
                None => None,
                Some(_) if j == slot => Some(iota.clone()),
                Some(v) if data.contains(&j) => Some(Value::i64(ArrayD::from_elem(IxDyn(v.shape()), -1))),
                Some(v) => Some(v.clone()),
            });
        }
        let args: Vec<Option<&Value>> = subs.iter().map(|v| v.as_ref()).collect();
        let traced = crate::onnx_ops::eval(o, "trace", &args, n_out).map_err(|e| format!("tracing the element map: {e}"))?;
        let mut g = vec![0f32; x.len()];
        for (k, out) in traced.iter().enumerate().take(n_out) {
            let Some(dy) = c.dy(k)? else { continue };
            let Data::I(idx) = &out.data else {
                return Err("the traced element map is not an integer tensor".into());
            };
            if idx.shape() != dy.shape() {
                return Err(format!("cotangent of output {k} is {:?}, the output {:?}", dy.shape(), idx.shape()));
            }
            for (&i, &d) in idx.iter().zip(dy.iter()) {
                if i >= 0 {
                    g[i as usize] += d;
                }
            }
        }
        grads[slot] = Some(ArrayD::from_shape_vec(IxDyn(x.shape()), g).map_err(|e| e.to_string())?);
    }
    Ok(grads)
}
