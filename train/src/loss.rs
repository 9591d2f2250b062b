//! Losses built as graph ops, so the autodiff pass differentiates them like any other op.
//!
//! **Normalized MSE** (feature distillation): `sum((y_s - y_t)^2) / (sum(y_t^2) + eps)` over
//! all tokens and features of a layer. It is scale-free (predicting zeros scores 1.0,
//! whatever the layer's activation scale), so layers with large and small outputs weigh the
//! same when their losses are averaged. The teacher's `y_t` is an input: no gradient flows
//! into it.
//!
//! **Per-token normalized MSE** (hidden states): the mean over tokens of
//! `|h_s - h_t|^2 / (|h_t|^2 + eps)`, each token's error relative to its own norm. A decoder's
//! residual stream holds a few tokens with activations hundreds of times larger than the rest
//! (attention sinks); summed over the whole tensor those few tokens are the loss, and every
//! other token's error is invisible to it.
use jetc_ir::{Attr, DType, Fact, Graph, OnnxOp, Op, Outlet, OutputInfo, Tensor};

use crate::error::Result;

fn onnx(g: &mut Graph, name: &str, op: &str, opset: i64, inputs: &[Outlet], attrs: &[(&str, Attr)]) -> Result<Outlet> {
    let mut o = OnnxOp::new(op, opset);
    for (k, v) in attrs {
        o = o.with_attr(k, v.clone());
    }
    let info = OutputInfo { name: String::new(), fact: Fact::unknown_rank(DType::F32) };
    let id = g.add_node(name, Op::Onnx(o), inputs.iter().map(|&i| Some(i)).collect(), vec![info])?;
    Ok(Outlet::new(id, 0))
}

/// Appends `sum((student - teacher)^2) / (sum(teacher^2) + 1e-12)` (a scalar) to the graph.
/// Facts are left for inference to fill in.
pub fn normalized_mse(g: &mut Graph, prefix: &str, student: Outlet, teacher: Outlet) -> Result<Outlet> {
    let diff = onnx(g, &format!("{prefix}/diff"), "Sub", 14, &[student, teacher], &[])?;
    let sq = onnx(g, &format!("{prefix}/sq"), "Mul", 14, &[diff, diff], &[])?;
    let num = onnx(g, &format!("{prefix}/num"), "ReduceSum", 13, &[sq], &[("keepdims", Attr::Int(0))])?;
    let tsq = onnx(g, &format!("{prefix}/tsq"), "Mul", 14, &[teacher, teacher], &[])?;
    let den = onnx(g, &format!("{prefix}/den"), "ReduceSum", 13, &[tsq], &[("keepdims", Attr::Int(0))])?;
    let eps = g.add_const(&format!("{prefix}/eps"), Tensor::scalar_f32(1e-12))?;
    let den = onnx(g, &format!("{prefix}/den_eps"), "Add", 14, &[den, eps], &[])?;
    onnx(g, &format!("{prefix}/loss"), "Div", 14, &[num, den], &[])
}

/// Appends the per-token normalized MSE of `[.., T, D]` hidden states (mean over every token
/// of `|s - t|^2 / (|t|^2 + 1e-6)`) to the graph.
pub fn token_normalized_mse(g: &mut Graph, prefix: &str, student: Outlet, teacher: Outlet) -> Result<Outlet> {
    let axes = g.add_const(&format!("{prefix}/axes"), Tensor::from_i64(vec![1], &[-1])?)?;
    let diff = onnx(g, &format!("{prefix}/diff"), "Sub", 14, &[student, teacher], &[])?;
    let sq = onnx(g, &format!("{prefix}/sq"), "Mul", 14, &[diff, diff], &[])?;
    let num = onnx(g, &format!("{prefix}/num"), "ReduceSum", 13, &[sq, axes], &[("keepdims", Attr::Int(0))])?;
    let tsq = onnx(g, &format!("{prefix}/tsq"), "Mul", 14, &[teacher, teacher], &[])?;
    let den = onnx(g, &format!("{prefix}/den"), "ReduceSum", 13, &[tsq, axes], &[("keepdims", Attr::Int(0))])?;
    let eps = g.add_const(&format!("{prefix}/eps"), Tensor::scalar_f32(1e-6))?;
    let den = onnx(g, &format!("{prefix}/den_eps"), "Add", 14, &[den, eps], &[])?;
    let ratio = onnx(g, &format!("{prefix}/ratio"), "Div", 14, &[num, den], &[])?;
    onnx(g, &format!("{prefix}/loss"), "ReduceMean", 13, &[ratio], &[("keepdims", Attr::Int(0))])
}
