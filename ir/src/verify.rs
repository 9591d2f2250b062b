//! The verifier: run after import and after every pass. It checks that the graph is
//! acyclic, that node input lists and petgraph edges agree, that every value is defined once
//! (unique names, inputs are `Op::Input`), and that stored facts agree with re-inferred ones
//! (same dtype and rank, equal known dims).
use std::collections::HashMap;

use crate::error::{IrError, Result};
use crate::graph::{Graph, Outlet};
use crate::infer::{infer_node, node_inputs};
use crate::op::Op;

pub fn verify(g: &Graph) -> Result<()> {
    let order = g.topo_order()?;
    let mut names: HashMap<&str, Outlet> = HashMap::new();
    for &id in &order {
        let node = g.node(id)?;
        let ctx = |msg: String| IrError::Verify(format!("node `{}` ({}): {msg}", node.name, node.op.name()));
        let mut listed: Vec<(Outlet, usize)> =
            node.inputs().iter().enumerate().filter_map(|(s, o)| o.map(|o| (o, s))).collect();
        listed.sort();
        if listed != g.incoming_wires(id) {
            return Err(ctx("input list and graph edges disagree".into()));
        }
        for (o, slot) in &listed {
            g.fact(*o).map_err(|e| ctx(format!("input {slot}: {e}")))?;
        }
        if matches!(node.op, Op::Input) != g.inputs.contains(&id) {
            return Err(ctx("graph inputs and Input nodes disagree".into()));
        }
        for (slot, info) in node.outputs.iter().enumerate() {
            if info.name.is_empty() {
                continue;
            }
            if let Some(prev) = names.insert(&info.name, Outlet::new(id, slot)) {
                let other = g.node(prev.node).map(|n| n.name.clone()).unwrap_or_default();
                return Err(ctx(format!("value `{}` is also defined by node `{other}`", info.name)));
            }
        }
        let inferred = infer_node(&node.op, &node.name, &node_inputs(g, node)).map_err(|e| ctx(e.to_string()))?;
        if let Some(inferred) = inferred {
            for (slot, (info, new)) in node.outputs.iter().zip(&inferred).enumerate() {
                let stored = &info.fact;
                if stored.dtype != new.dtype {
                    return Err(ctx(format!("output {slot} is stored as {} but computes {}", stored.dtype, new.dtype)));
                }
                if let (Some(a), Some(b)) = (&stored.shape, &new.shape) {
                    let clash = a.len() != b.len()
                        || a.iter().zip(b).any(|(x, y)| x.is_known() && y.is_known() && x != y);
                    if clash {
                        return Err(ctx(format!("output {slot} is stored as {stored} but computes {new}")));
                    }
                }
            }
        }
    }
    for go in &g.outputs {
        g.fact(go.outlet).map_err(|e| IrError::Verify(format!("graph output `{}`: {e}", go.name)))?;
    }
    let mut out_names: Vec<&str> = g.outputs.iter().map(|o| o.name.as_str()).collect();
    out_names.sort();
    if let Some(w) = out_names.windows(2).find(|w| w[0] == w[1]) {
        return Err(IrError::Verify(format!("graph output `{}` is listed twice", w[0])));
    }
    Ok(())
}
