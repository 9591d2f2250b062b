//! RMSNorm in its spellings:
//! - decomposed: `Pow(x, 2) | Mul(x, x) -> ReduceMean(last axis) -> Add(eps) -> Sqrt ->
//!   Reciprocal | Div(1, .) -> Mul(x, .)`, or `-> Sqrt -> Div(x, .)`, then `Mul(weight)`
//!   (either operand order; the weight is optional);
//! - standard `RMSNormalization` (opset 23), `SimplifiedLayerNormalization`;
//! - contrib `SkipSimplifiedLayerNormalization` (residual add + norm): split into an `Add`
//!   and an `RmsNorm`.
use jetc_ir::{Fact, Graph, NodeId, OnnxOp, Op, Outlet, OutputInfo, Patch, PatchOutlet, Result, RmsNormSpec, Tensor};

use crate::pattern::{const_of, input, onnx_producer, other_input, scalar_of, single_consumer};

pub fn raise(g: &mut Graph) -> Result<bool> {
    let mut changed = false;
    for id in g.topo_order()? {
        let Ok(node) = g.node(id) else { continue };
        let Op::Onnx(op) = &node.op else { continue };
        let done = match op.op_type.as_str() {
            "ReduceMean" => decomposed(g, id)?,
            "RMSNormalization" | "SimplifiedLayerNormalization" => fused(g, id)?,
            "SkipSimplifiedLayerNormalization" => skip_fused(g, id)?,
            _ => false,
        };
        changed |= done;
    }
    Ok(changed)
}

fn last_axis_only(g: &Graph, node: &jetc_ir::Node, op: &OnnxOp, rank: usize) -> bool {
    let axes: Option<Vec<i64>> = match op.ints("axes") {
        Some(a) => Some(a.to_vec()),
        None => input(node, 1).and_then(|a| const_of(g, a)).map(|t| t.to_i64_vec()),
    };
    matches!(axes.as_deref(), Some([a]) if *a == -1 || *a == rank as i64 - 1)
}

fn decomposed(g: &mut Graph, mean_id: NodeId) -> Result<bool> {
    let mean = g.node(mean_id)?;
    let Op::Onnx(mean_op) = &mean.op else { return Ok(false) };
    let Some(sq) = input(mean, 0) else { return Ok(false) };
    // x^2 as Pow(x, 2) or Mul(x, x)
    let x = match onnx_producer(g, sq, &["Pow", "Mul"]) {
        Some((n, o)) if o.op_type == "Pow" && input(n, 1).and_then(|e| scalar_of(g, e)) == Some(2.0) => input(n, 0),
        Some((n, o)) if o.op_type == "Mul" && input(n, 0) == input(n, 1) => input(n, 0),
        _ => None,
    };
    let Some(x) = x else { return Ok(false) };
    let Some(rank) = g.fact(x)?.rank() else { return Ok(false) };
    if mean_op.int_or("keepdims", 1) == 0 || !last_axis_only(g, mean, mean_op, rank) {
        return Ok(false);
    }
    // + eps
    let Some((add_id, _)) = single_consumer(g, Outlet::new(mean_id, 0)) else { return Ok(false) };
    let add = g.node(add_id)?;
    if !add.op.is("Add") {
        return Ok(false);
    }
    let Some(eps) = other_input(add, Outlet::new(mean_id, 0)).and_then(|e| scalar_of(g, e)) else { return Ok(false) };
    // sqrt
    let Some((sqrt_id, _)) = single_consumer(g, Outlet::new(add_id, 0)) else { return Ok(false) };
    if !g.node(sqrt_id)?.op.is("Sqrt") {
        return Ok(false);
    }
    let sqrt_out = Outlet::new(sqrt_id, 0);
    let Some((next_id, next_slot)) = single_consumer(g, sqrt_out) else { return Ok(false) };
    let next = g.node(next_id)?;
    // normalized = x * (1 / sqrt) or x / sqrt
    let normalized = if next.op.is("Div") && next_slot == 1 && input(next, 0) == Some(x) {
        Outlet::new(next_id, 0)
    } else {
        let inv = if next.op.is("Reciprocal") {
            Outlet::new(next_id, 0)
        } else if next.op.is("Div") && next_slot == 1 && input(next, 0).and_then(|o| scalar_of(g, o)) == Some(1.0) {
            Outlet::new(next_id, 0)
        } else {
            return Ok(false);
        };
        let Some((mul_id, _)) = single_consumer(g, inv) else { return Ok(false) };
        let mul = g.node(mul_id)?;
        if !mul.op.is("Mul") || other_input(mul, inv) != Some(x) {
            return Ok(false);
        }
        Outlet::new(mul_id, 0)
    };
    // * weight (optional)
    let dim = g.fact(x)?.shape.as_ref().and_then(|s| s.last()).and_then(|d| d.as_known());
    let mut out = normalized;
    let mut weight = None;
    if let Some((wmul_id, _)) = single_consumer(g, normalized) {
        let wmul = g.node(wmul_id)?;
        if wmul.op.is("Mul") {
            if let Some(w) = other_input(wmul, normalized) {
                if const_of(g, w).is_some_and(|t| t.shape().len() == 1 && Some(t.shape()[0] as i64) == dim) {
                    weight = Some(w);
                    out = Outlet::new(wmul_id, 0);
                }
            }
        }
    }
    let name = format!("{}/rmsnorm", g.node(mean_id)?.name);
    let weight = match weight {
        Some(w) => w,
        None => {
            let Some(d) = dim else { return Ok(false) };
            g.add_const(&format!("{name}.weight"), Tensor::from_f32(vec![d as usize], &vec![1.0; d as usize])?)?
        }
    };
    replace(g, &name, x, weight, eps, out)?;
    Ok(true)
}

fn replace(g: &mut Graph, name: &str, x: Outlet, weight: Outlet, eps: f32, out: Outlet) -> Result<()> {
    let fact: Fact = g.fact(out)?.clone();
    let mut p = Patch::new();
    let n = p.wire(
        name,
        Op::RmsNorm(RmsNormSpec { eps }),
        vec![Some(p.tap(x)), Some(p.tap(weight))],
        vec![OutputInfo { name: String::new(), fact }],
    );
    p.shunt(out, PatchOutlet::New { index: n, slot: 0 });
    p.apply(g)
}

fn last_axis(op: &OnnxOp, rank: Option<usize>) -> bool {
    let axis = op.int_or("axis", -1);
    axis == -1 || rank.is_some_and(|r| axis == r as i64 - 1)
}

fn fused(g: &mut Graph, id: NodeId) -> Result<bool> {
    let node = g.node(id)?;
    let Op::Onnx(op) = &node.op else { return Ok(false) };
    let (Some(x), Some(w)) = (input(node, 0), input(node, 1)) else { return Ok(false) };
    if !last_axis(op, g.fact(x)?.rank()) || node.outputs.len() > 1 && !g.consumers(Outlet::new(id, 1)).is_empty() {
        return Ok(false);
    }
    let eps = op.float("epsilon").unwrap_or(1e-5);
    let name = node.name.clone();
    replace(g, &name, x, w, eps, Outlet::new(id, 0))?;
    Ok(true)
}

fn skip_fused(g: &mut Graph, id: NodeId) -> Result<bool> {
    let node = g.node(id)?;
    let Op::Onnx(op) = &node.op else { return Ok(false) };
    let (Some(a), Some(b), Some(w)) = (input(node, 0), input(node, 1), input(node, 2)) else { return Ok(false) };
    let bias = input(node, 3);
    for slot in [1, 2] {
        if !g.consumers(Outlet::new(id, slot)).is_empty() {
            return Ok(false); // mean / inv_std_var are used: keep the fused op
        }
    }
    let eps = op.float("epsilon").unwrap_or(1e-5);
    let name = node.name.clone();
    let sum_fact = g.fact(a)?.clone();
    let mut p = Patch::new();
    let add = OnnxOp::new("Add", crate::pattern::default_opset(g));
    let s1 = p.wire(
        format!("{name}/skip_add"),
        Op::Onnx(add.clone()),
        vec![Some(p.tap(a)), Some(p.tap(b))],
        vec![OutputInfo { name: String::new(), fact: sum_fact.clone() }],
    );
    let mut sum = PatchOutlet::New { index: s1, slot: 0 };
    if let Some(bias) = bias {
        let s2 = p.wire(
            format!("{name}/bias_add"),
            Op::Onnx(add),
            vec![Some(sum), Some(p.tap(bias))],
            vec![OutputInfo { name: String::new(), fact: sum_fact.clone() }],
        );
        sum = PatchOutlet::New { index: s2, slot: 0 };
    }
    let n = p.wire(
        format!("{name}/rmsnorm"),
        Op::RmsNorm(RmsNormSpec { eps }),
        vec![Some(sum), Some(p.tap(w))],
        vec![OutputInfo { name: String::new(), fact: sum_fact }],
    );
    p.shunt(Outlet::new(id, 0), PatchOutlet::New { index: n, slot: 0 });
    if g.node(id)?.outputs.len() > 3 {
        p.shunt(Outlet::new(id, 3), sum);
    }
    p.apply(g)?;
    Ok(true)
}
