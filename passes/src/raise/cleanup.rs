//! Removes no-op casts (legacy exporters cast f32 to f32 around norms), Identity nodes and
//! single-input Concat/Max/Min/Sum/Mean,
//! so that the matchers see the computation itself.
use jetc_ir::{Graph, Op, Outlet, Result};

pub fn remove_identity_casts(g: &mut Graph) -> Result<bool> {
    let mut changed = false;
    for id in g.topo_order()? {
        let Ok(node) = g.node(id) else { continue };
        let Op::Onnx(op) = &node.op else { continue };
        let Some(src) = node.inputs().first().copied().flatten() else { continue };
        let is_noop = match op.op_type.as_str() {
            "Identity" | "Dropout" => node.outputs.len() == 1 || g.consumers(Outlet::new(id, 1)).is_empty(),
            "Cast" => g.fact(src)?.dtype == node.outputs[0].fact.dtype,
            "Concat" | "Max" | "Min" | "Sum" | "Mean" => node.inputs().len() == 1,
            _ => false,
        };
        if !is_noop {
            continue;
        }
        let out = Outlet::new(id, 0);
        if g.is_graph_output(out) && g.node(src.node).map(|n| matches!(n.op, Op::Input)).unwrap_or(false) {
            continue; // an input passed straight to an output keeps its node
        }
        g.replace_uses(out, src)?;
        changed = true;
    }
    Ok(changed)
}
