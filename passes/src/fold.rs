//! Constant folding: a node whose inputs are all constants is evaluated once with the CPU
//! executor's kernels and replaced by a constant; a node whose integer output is fully known
//! from symbolic value tracking (shape plumbing on static dims) becomes that constant too.
use jetc_ir::{Graph, Op, Outlet, Tensor};
use jetc_runtime::Value;

use crate::error::{PassError, Result};
use crate::pass::Pass;

pub struct Fold {
    /// Results larger than this are left unfolded (they would copy mapped weights).
    pub max_bytes: usize,
}

impl Default for Fold {
    fn default() -> Fold {
        Fold { max_bytes: 64 << 20 }
    }
}

impl Pass for Fold {
    fn name(&self) -> &'static str {
        "fold"
    }

    fn run(&self, g: &mut Graph) -> Result<bool> {
        let err = |source| PassError::Ir { pass: "fold".into(), source };
        let mut changed = false;
        for id in g.topo_order().map_err(err)? {
            let node = g.node(id).map_err(err)?;
            let Op::Onnx(op) = &node.op else { continue };
            let inputs: Vec<Option<&Tensor>> = node
                .inputs()
                .iter()
                .map(|i| i.and_then(|o| g.node(o.node).ok()).and_then(|n| match &n.op {
                    Op::Const(t) => Some(t),
                    _ => None,
                }))
                .collect();
            let all_const = node.inputs().iter().zip(&inputs).all(|(i, t)| i.is_none() || t.is_some());
            let results: Option<Vec<Tensor>> = if all_const && !node.inputs().is_empty() && is_foldable(&op.op_type) {
                let values: Vec<Option<Value>> = inputs.iter().map(|t| t.map(Value::from_tensor)).collect();
                let refs: Vec<Option<&Value>> = values.iter().map(|v| v.as_ref()).collect();
                let outs = jetc_runtime::onnx_ops::eval(op, &node.name, &refs, node.outputs.len())
                    .map_err(|source| PassError::Runtime { pass: "fold".into(), source })?;
                let tensors: Vec<Tensor> = outs
                    .iter()
                    .take(node.outputs.len())
                    .map(|v| v.to_tensor())
                    .collect::<std::result::Result<_, _>>()
                    .map_err(err)?;
                if tensors.iter().map(|t| t.bytes().len()).sum::<usize>() > self.max_bytes {
                    None
                } else {
                    Some(tensors)
                }
            } else {
                known_value_tensors(node)
            };
            let Some(results) = results else { continue };
            let name = node.name.clone();
            let out_names: Vec<String> = node.outputs.iter().map(|o| o.name.clone()).collect();
            for (slot, t) in results.into_iter().enumerate() {
                let old = Outlet::new(id, slot);
                if g.consumers(old).is_empty() && !g.is_graph_output(old) {
                    continue;
                }
                let const_name = if out_names[slot].is_empty() { format!("{name}:{slot}") } else { out_names[slot].clone() };
                // The constant takes over the value's name; the node keeps none.
                g.node_mut(id).map_err(err)?.outputs[slot].name.clear();
                let new = g.add_const(&const_name, t).map_err(err)?;
                g.replace_uses(old, new).map_err(err)?;
                changed = true;
            }
        }
        g.prune_dead().map_err(err)?;
        Ok(changed)
    }
}

/// Ops with side-effect-free, deterministic results.
fn is_foldable(op_type: &str) -> bool {
    !matches!(op_type, "RandomNormal" | "RandomUniform" | "RandomNormalLike" | "RandomUniformLike" | "Multinomial")
}

/// Integer outputs whose content is fully known from symbolic tracking.
fn known_value_tensors(node: &jetc_ir::Node) -> Option<Vec<Tensor>> {
    if node.outputs.len() != 1 {
        return None;
    }
    let f = &node.outputs[0].fact;
    if !f.dtype.is_int() {
        return None;
    }
    let shape = f.concrete_shape()?;
    let vals: Vec<i64> = f.value.as_ref()?.iter().map(|d| d.as_known()).collect::<Option<_>>()?;
    if vals.len() != shape.iter().product::<usize>() {
        return None;
    }
    let t = Tensor::from_i64(shape, &vals).ok()?;
    let t = Value::from_tensor(&t);
    let mut v = t;
    v.dtype = f.dtype;
    v.to_tensor().ok().map(|t| vec![t])
}
