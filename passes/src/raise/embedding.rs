//! `Gather(table [V, D] constant, ids, axis = 0)` -> `Embedding(table, ids)`.
use jetc_ir::{Graph, Op, OutputInfo, Patch, Result};

use crate::pattern::{const_of, input};

pub fn raise(g: &mut Graph) -> Result<bool> {
    let mut changed = false;
    for id in g.topo_order()? {
        let Ok(node) = g.node(id) else { continue };
        let Op::Onnx(op) = &node.op else { continue };
        if op.op_type != "Gather" || op.int_or("axis", 0) != 0 {
            continue;
        }
        let (Some(table), Some(ids)) = (input(node, 0), input(node, 1)) else { continue };
        let is_table = const_of(g, table).is_some_and(|t| t.shape().len() == 2 && t.dtype().is_float());
        if !is_table || !g.fact(ids)?.dtype.is_int() {
            continue;
        }
        let mut p = Patch::new();
        let outputs = vec![OutputInfo { name: String::new(), fact: node.outputs[0].fact.clone() }];
        let e = p.wire(format!("{}/embedding", node.name), Op::Embedding, vec![Some(p.tap(table)), Some(p.tap(ids))], outputs);
        p.shunt(jetc_ir::Outlet::new(id, 0), jetc_ir::PatchOutlet::New { index: e, slot: 0 });
        p.apply(g)?;
        changed = true;
    }
    Ok(changed)
}
