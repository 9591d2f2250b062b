//! Common-subexpression elimination: nodes with the same op, attributes and inputs compute
//! the same values and are merged; so are constants with identical bytes. Exporters often
//! repeat `Cos`/`Sin` or shape plumbing per layer; merging lets the raising passes see that
//! two layers share one RoPE table.
use std::collections::HashMap;

use jetc_ir::{Attr, Graph, Op, Outlet};

use crate::error::{PassError, Result};
use crate::pass::Pass;

pub struct Cse;

impl Pass for Cse {
    fn name(&self) -> &'static str {
        "cse"
    }

    fn run(&self, g: &mut Graph) -> Result<bool> {
        let err = |source| PassError::Ir { pass: "cse".into(), source };
        let mut seen: HashMap<String, jetc_ir::NodeId> = HashMap::new();
        let mut changed = false;
        for id in g.topo_order().map_err(err)? {
            let node = g.node(id).map_err(err)?;
            let key = match &node.op {
                Op::Const(t) if t.numel() <= 4096 => {
                    format!("const {} {:?} {:016x}", t.dtype(), t.shape(), t.content_hash())
                }
                Op::Onnx(o) if !o.attrs.values().any(|a| matches!(a, Attr::Tensor(_))) && !is_random(&o.op_type) => {
                    format!("{:?} {:?}", o, node.inputs())
                }
                _ => continue,
            };
            let Some(&first) = seen.get(&key) else {
                seen.insert(key, id);
                continue;
            };
            // Constants: compare bytes, not only the hash.
            if let (Op::Const(a), Ok(Op::Const(b))) = (&node.op, g.node(first).map(|n| &n.op)) {
                if a != b {
                    continue;
                }
            }
            let n_out = node.outputs.len();
            let mut merged = true;
            for slot in 0..n_out {
                let (old, new) = (Outlet::new(id, slot), Outlet::new(first, slot));
                if g.is_graph_output(old) && g.is_graph_output(new) {
                    merged = false; // two graph outputs keep their own values
                    continue;
                }
                g.replace_uses(old, new).map_err(err)?;
            }
            changed |= merged;
        }
        g.prune_dead().map_err(err)?;
        Ok(changed)
    }
}

fn is_random(op_type: &str) -> bool {
    op_type.starts_with("Random") || op_type == "Multinomial" || op_type == "Bernoulli"
}
