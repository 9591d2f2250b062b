//! Small helpers for matching subgraphs: producers, consumers, constants.
use jetc_ir::{Graph, Node, NodeId, OnnxOp, Op, Outlet, Result, Tensor};

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

/// Column range `[a, b)` that output `slot` of a last-axis `Slice`/`Split` node takes from
/// a tensor whose last axis has `total` elements.
pub fn last_axis_cols(g: &Graph, n: &jetc_ir::Node, op: &OnnxOp, slot: usize, total: usize) -> Option<(usize, usize)> {
    let rank = g.fact(input(n, 0)?).ok()?.rank()? as i64;
    let is_last = |a: i64| a == -1 || a == rank - 1;
    match op.op_type.as_str() {
        "Slice" => {
            let starts = const_of(g, input(n, 1)?)?.to_i64_vec();
            let ends = const_of(g, input(n, 2)?)?.to_i64_vec();
            let axes = match input(n, 3) {
                Some(a) => const_of(g, a)?.to_i64_vec(),
                None => vec![rank - 1],
            };
            if let Some(s) = input(n, 4) {
                if const_of(g, s)?.to_i64_vec().iter().any(|&v| v != 1) {
                    return None;
                }
            }
            if starts.len() != 1 || !is_last(axes[0]) {
                return None;
            }
            let t = total as i64;
            let fix = |v: i64| (if v < 0 { v + t } else { v }).clamp(0, t) as usize;
            Some((fix(starts[0]), fix(ends[0])))
        }
        "Split" => {
            if !is_last(op.int_or("axis", 0)) {
                return None;
            }
            let sizes: Vec<usize> = match (input(n, 1), op.ints("split")) {
                (Some(s), _) => const_of(g, s)?.to_i64_vec().iter().map(|&v| v as usize).collect(),
                (None, Some(s)) => s.iter().map(|&v| v as usize).collect(),
                (None, None) => {
                    let parts = n.outputs.len();
                    vec![total / parts; parts]
                }
            };
            let start: usize = sizes[..slot].iter().sum();
            Some((start, start + *sizes.get(slot)?))
        }
        _ => None,
    }
}


/// Columns `[a, b)` of a 2-D weight (or elements of a 1-D bias) as a new constant.
pub fn slice_cols(g: &mut Graph, w: Outlet, cols: Option<(usize, usize)>, name: &str) -> Result<Outlet> {
    let Some((a, b)) = cols else { return Ok(w) };
    let t = const_of(g, w).ok_or_else(|| jetc_ir::IrError::Other(format!("{name}: weight is not a constant")))?;
    let shape = t.shape().to_vec();
    let data = t.to_f32_vec();
    let (rows, n) = if shape.len() == 2 { (shape[0], shape[1]) } else { (1, shape[0]) };
    let mut out = Vec::with_capacity(rows * (b - a));
    for r in 0..rows {
        out.extend_from_slice(&data[r * n + a..r * n + b]);
    }
    let new_shape = if shape.len() == 2 { vec![rows, b - a] } else { vec![b - a] };
    g.add_const(name, Tensor::from_f32(new_shape, &out)?)
}


/// A projection output, possibly one part of a packed projection split on its last axis:
/// (x, weight, column range when packed, output width).
pub fn linear_part(g: &Graph, o: Outlet) -> Option<(Outlet, Outlet, Option<(usize, usize)>, usize)> {
    if let Some((x, w, _, n)) = linear(g, o) {
        return Some((x, w, None, n));
    }
    let (node, op) = onnx_producer(g, o, &["Split", "Slice"])?;
    let packed = input(node, 0)?;
    let (x, w, _, total) = linear(g, packed)?;
    let (a, b) = last_axis_cols(g, node, op, o.slot, total)?;
    Some((x, w, Some((a, b)), b - a))
}
