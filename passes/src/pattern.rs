//! Small helpers for matching subgraphs: producers, consumers, constants.
use jetc_ir::{Graph, Node, NodeId, OnnxOp, Op, Outlet, Tensor};

/// The node that produces `o`.
pub fn producer(g: &Graph, o: Outlet) -> Option<&Node> {
    g.node(o.node).ok()
}

/// The ONNX op producing `o`, when it is one of `types`.
pub fn onnx_producer<'g>(g: &'g Graph, o: Outlet, types: &[&str]) -> Option<(&'g Node, &'g OnnxOp)> {
    let n = producer(g, o)?;
    match &n.op {
        Op::Onnx(op) if types.contains(&op.op_type.as_str()) => Some((n, op)),
        _ => None,
    }
}

pub fn const_of(g: &Graph, o: Outlet) -> Option<&Tensor> {
    match &producer(g, o)?.op {
        Op::Const(t) => Some(t),
        _ => None,
    }
}

/// A one-element constant as f32.
pub fn scalar_of(g: &Graph, o: Outlet) -> Option<f32> {
    let t = const_of(g, o)?;
    if t.numel() != 1 {
        return None;
    }
    t.to_f32_vec().first().copied()
}

pub fn input(node: &Node, slot: usize) -> Option<Outlet> {
    node.inputs().get(slot).copied().flatten()
}

/// The single consumer of `o` (None if it has several or it is a graph output).
pub fn single_consumer(g: &Graph, o: Outlet) -> Option<(NodeId, usize)> {
    let c = g.consumers(o);
    if c.len() == 1 && !g.is_graph_output(o) {
        Some(c[0])
    } else {
        None
    }
}

/// Consumers of `o` that are ONNX ops of one of `types`.
pub fn consumers_of_type(g: &Graph, o: Outlet, types: &[&str]) -> Vec<(NodeId, usize)> {
    g.consumers(o)
        .into_iter()
        .filter(|(id, _)| matches!(g.node(*id).map(|n| &n.op), Ok(Op::Onnx(op)) if types.contains(&op.op_type.as_str())))
        .collect()
}

/// The other input of a binary node, given one of them.
pub fn other_input(node: &Node, one: Outlet) -> Option<Outlet> {
    match (input(node, 0), input(node, 1)) {
        (Some(a), Some(b)) if a == one => Some(b),
        (Some(a), Some(b)) if b == one => Some(a),
        _ => None,
    }
}

/// The graph's float dtype width for weights (bytes), from the largest float constant.
pub fn is_graph_input(g: &Graph, o: Outlet) -> bool {
    matches!(producer(g, o).map(|n| &n.op), Some(Op::Input))
}

/// The default-domain opset the model imports (for ONNX nodes that passes create).
pub fn default_opset(g: &Graph) -> i64 {
    g.meta.get("opset.ai.onnx").and_then(|v| v.parse().ok()).unwrap_or(17)
}

/// A MatMul whose B operand is a 2-D float constant: (x, weight, [in, out] dims).
pub fn linear(g: &Graph, o: Outlet) -> Option<(Outlet, Outlet, usize, usize)> {
    let (n, _) = onnx_producer(g, o, &["MatMul"])?;
    let (x, w) = (input(n, 0)?, input(n, 1)?);
    let t = const_of(g, w)?;
    if t.shape().len() != 2 || !t.dtype().is_float() || o.slot != 0 {
        return None;
    }
    Some((x, w, t.shape()[0], t.shape()[1]))
}
