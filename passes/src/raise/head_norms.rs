//! The per-head norms of the linear blocks, as `lower` writes them in standard ONNX ops, back
//! to `L2Norm` and `GatedRmsNorm`, so that a converted model read back from ONNX fuses into
//! `JetBlock` ops (and codegen finds the fused kernels) like one converted in memory:
//! - `L2Norm{H, eps}`: `Reshape(Div(xh, Sqrt(Add(ReduceSum(Mul(xh, xh), [-1], keepdims),
//!   eps))), [0,0,-1])` with `xh = Reshape(x, [0,0,H,-1])`;
//! - `GatedRmsNorm{H, eps}`: `Mul(Reshape(RmsNorm(Reshape(o, [0,0,H,-1]), w), [0,0,-1]),
//!   Mul(g, Sigmoid(g)))` (the `RMSNormalization` already raised to `RmsNorm`).
use jetc_ir::{Graph, NodeId, Op, Outlet, OutputInfo, Patch, PatchOutlet, Result};

use crate::pattern::{const_of, input, onnx_producer, other_input, scalar_of, single_consumer};

/// `x` and H when `o` is `Reshape(x, [0, 0, H, -1])`.
fn split_heads(g: &Graph, o: Outlet) -> Option<(Outlet, usize)> {
    let (n, _) = onnx_producer(g, o, &["Reshape"])?;
    let shape = const_of(g, input(n, 1)?)?.to_i64_vec();
    match shape.as_slice() {
        [0, 0, h, -1] if *h > 0 => Some((input(n, 0)?, *h as usize)),
        _ => None,
    }
}

/// The Reshape(·, [0, 0, -1]) that is the only consumer of `o`.
fn merged(g: &Graph, o: Outlet) -> Option<Outlet> {
    let (c, 0) = single_consumer(g, o)? else { return None };
    let n = g.node(c).ok()?;
    let ok = n.op.is("Reshape") && const_of(g, input(n, 1)?).is_some_and(|t| t.to_i64_vec() == [0, 0, -1]);
    ok.then_some(Outlet::new(c, 0))
}

/// (x, heads, eps, output to replace) of an L2 norm ending at Div node `id`.
fn find_l2(g: &Graph, id: NodeId) -> Option<(Outlet, usize, f32, Outlet)> {
    let div = g.node(id).ok()?;
    if !div.op.is("Div") {
        return None;
    }
    let xh = input(div, 0)?;
    let (x, heads) = split_heads(g, xh)?;
    let (sqrt, _) = onnx_producer(g, input(div, 1)?, &["Sqrt"])?;
    let (add, _) = onnx_producer(g, input(sqrt, 0)?, &["Add"])?;
    let (sum_out, sum, sum_op) =
        [input(add, 0)?, input(add, 1)?].into_iter().find_map(|o| onnx_producer(g, o, &["ReduceSum"]).map(|(n, op)| (o, n, op)))?;
    let eps = scalar_of(g, other_input(add, sum_out)?)?;
    if sum_op.int_or("keepdims", 1) != 1 || const_of(g, input(sum, 1)?)?.to_i64_vec() != [-1] {
        return None;
    }
    let (sq, _) = onnx_producer(g, input(sum, 0)?, &["Mul"])?;
    if input(sq, 0)? != xh || input(sq, 1)? != xh {
        return None;
    }
    Some((x, heads, eps, merged(g, Outlet::new(id, 0))?))
}

/// (o, weight, gate, heads, eps, output to replace) of a gated norm whose `RmsNorm` is `id`.
fn find_gated(g: &Graph, id: NodeId) -> Option<(Outlet, Outlet, Outlet, usize, f32, Outlet)> {
    let n = g.node(id).ok()?;
    let Op::RmsNorm(spec) = &n.op else { return None };
    let (o, heads) = split_heads(g, input(n, 0)?)?;
    let w = input(n, 1)?;
    let m = merged(g, Outlet::new(id, 0))?;
    let (c, _) = single_consumer(g, m)?;
    let mul = g.node(c).ok()?;
    if !mul.op.is("Mul") {
        return None;
    }
    let (silu, _) = onnx_producer(g, other_input(mul, m)?, &["Mul"])?;
    let (a, b) = (input(silu, 0)?, input(silu, 1)?);
    let sigmoid_of = |s: Outlet, x: Outlet| onnx_producer(g, s, &["Sigmoid"]).is_some_and(|(n, _)| input(n, 0) == Some(x));
    let gate = if sigmoid_of(b, a) {
        a
    } else if sigmoid_of(a, b) {
        b
    } else {
        return None;
    };
    Some((o, w, gate, heads, spec.eps, Outlet::new(c, 0)))
}

fn replace(g: &mut Graph, name: String, op: Op, inputs: Vec<Outlet>, old: Outlet) -> Result<()> {
    let fact = g.fact(old)?.clone();
    let mut p = Patch::new();
    let n = p.wire(name, op, inputs.into_iter().map(|o| Some(PatchOutlet::Existing(o))).collect(), vec![OutputInfo { name: String::new(), fact }]);
    p.shunt(old, PatchOutlet::New { index: n, slot: 0 });
    p.apply(g)
}

pub fn raise(g: &mut Graph) -> Result<bool> {
    let mut changed = false;
    for id in g.topo_order()? {
        if !g.contains(id) {
            continue;
        }
        let name = g.node(id)?.name.clone();
        if let Some((x, heads, eps, out)) = find_l2(g, id) {
            replace(g, format!("{name}/l2norm"), Op::L2Norm { heads, eps }, vec![x], out)?;
            changed = true;
        } else if let Some((o, w, gate, heads, eps, out)) = find_gated(g, id) {
            replace(g, format!("{name}/gated_rmsnorm"), Op::GatedRmsNorm { heads, eps }, vec![o, w, gate], out)?;
            changed = true;
        }
    }
    Ok(changed)
}
