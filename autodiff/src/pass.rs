//! The grad pass: reachability, reverse topological walk, fan-out accumulation.
use std::collections::{HashMap, HashSet};

use jetc_ir::{BackwardSpec, DType, Fact, Graph, NodeId, OnnxOp, Op, Outlet, OutputInfo, Tensor};
use jetc_passes::manager::{Infer, Pass};

use crate::error::{AutodiffError, Result};

/// One parameter's gradient: the parameter node, and the graph output that carries its
/// gradient (`grad.<name>`).
#[derive(Clone, Debug, PartialEq)]
pub struct Gradient {
    pub param: NodeId,
    pub name: String,
    pub output: String,
    pub outlet: Outlet,
}

fn placeholder() -> OutputInfo {
    OutputInfo { name: String::new(), fact: Fact::unknown_rank(DType::F32) }
}

/// Appends the gradients of `loss` with respect to `wrt` (constant or input nodes) to the
/// graph, as outputs named `grad.<node name>`. Fused `JetBlock` ops are differentiated
/// through their decomposed form (`jetc_passes::fuse::Unfuse` runs first when the graph has
/// one). Returns one [`Gradient`] per parameter, in the order of `wrt`.
pub fn grad(g: &mut Graph, loss: Outlet, wrt: &[NodeId]) -> Result<Vec<Gradient>> {
    if !wrt.is_empty() && g.node_ids().any(|id| matches!(g.node(id).map(|n| &n.op), Ok(Op::JetBlock(_)))) {
        // Unfusing splits a packed projection weight into new nodes: parameters must then be
        // named on the unfused graph (checked below).
        jetc_passes::fuse::Unfuse.run(g)?;
    }
    check_loss(g, loss)?;
    for &p in wrt {
        if !g.contains(p) {
            return Err(AutodiffError::Param {
                name: format!("{p:?}"),
                msg: "is not in the graph (a fused JetBlock's packed weight is split by unfusing: take the parameters from the unfused graph)".into(),
            });
        }
        let node = g.node(p)?;
        if !matches!(node.op, Op::Const(_) | Op::Input) {
            return Err(AutodiffError::Param { name: node.name.clone(), msg: format!("is a {} node, not a weight or input", node.op.name()) });
        }
        let fact = g.fact(Outlet::new(p, 0))?;
        if !fact.dtype.is_float() {
            return Err(AutodiffError::Param { name: node.name.clone(), msg: format!("is {}, only float values have gradients", fact.dtype) });
        }
    }
    let order = g.topo_order()?;
    let params: HashSet<NodeId> = wrt.iter().copied().collect();
    // Nodes that depend on a parameter (forward reach) ...
    let mut depends: HashSet<NodeId> = HashSet::new();
    for &id in &order {
        let node = g.node(id)?;
        if params.contains(&id) || node.inputs().iter().flatten().any(|o| depends.contains(&o.node)) {
            depends.insert(id);
        }
    }
    // ... and that the loss depends on (backward reach).
    let mut feeds: HashSet<NodeId> = HashSet::new();
    let mut stack = vec![loss.node];
    while let Some(id) = stack.pop() {
        if feeds.insert(id) {
            stack.extend(g.node(id)?.inputs().iter().flatten().map(|o| o.node));
        }
    }
    let active: HashSet<NodeId> = depends.intersection(&feeds).copied().collect();

    let mut cot: HashMap<Outlet, Outlet> = HashMap::new();
    let seed_shape: Vec<usize> = g.fact(loss)?.concrete_shape().unwrap_or_default();
    let one = Tensor::from_f32(seed_shape.clone(), &vec![1.0; seed_shape.iter().product()])?;
    let seed = g.add_const("grad.seed", one)?;
    cot.insert(loss, seed);

    for &id in order.iter().rev() {
        if !active.contains(&id) || params.contains(&id) {
            continue;
        }
        let node = g.node(id)?.clone();
        let outs: Vec<Option<Outlet>> = (0..node.outputs.len()).map(|s| cot.get(&Outlet::new(id, s)).copied()).collect();
        if outs.iter().all(Option::is_none) {
            continue;
        }
        let wrt_slots: Vec<usize> = node
            .inputs()
            .iter()
            .enumerate()
            .filter_map(|(slot, o)| {
                let o = (*o)?;
                active_float(g, &active, o).then_some(slot)
            })
            .collect();
        if wrt_slots.is_empty() {
            continue;
        }
        let err = |msg: String| AutodiffError::Node { node: node.name.clone(), op: node.op.name(), msg };
        if let Op::Onnx(o) = &node.op {
            if o.op_type == "Identity" && (o.domain.is_empty() || o.domain == "ai.onnx") {
                accumulate(g, &mut cot, node.inputs()[0].ok_or_else(|| err("Identity without input".into()))?, outs[0].ok_or_else(|| err("no cotangent".into()))?)?;
                continue;
            }
        }
        jetc_runtime::grad::check_rule(&node.op, &wrt_slots).map_err(err)?;
        let spec = BackwardSpec {
            forward: Box::new(node.op.clone()),
            forward_inputs: node.inputs().len(),
            forward_outputs: node.outputs.len(),
            wrt: wrt_slots.clone(),
        };
        let mut inputs: Vec<Option<Outlet>> = node.inputs().to_vec();
        inputs.extend(outs.iter().copied());
        let bwd = g.add_node(
            format!("{}/grad", node.name),
            Op::Backward(spec),
            inputs,
            wrt_slots.iter().map(|_| placeholder()).collect(),
        )?;
        for (k, &slot) in wrt_slots.iter().enumerate() {
            let src = node.inputs()[slot].ok_or_else(|| err(format!("input {slot} vanished")))?;
            accumulate(g, &mut cot, src, Outlet::new(bwd, k))?;
        }
    }

    let mut grads = Vec::with_capacity(wrt.len());
    for &p in wrt {
        let name = g.node(p)?.name.clone();
        let po = Outlet::new(p, 0);
        let outlet = match cot.get(&po) {
            Some(&o) => o,
            None => {
                // The loss does not depend on this parameter: its gradient is zero.
                let shape = g.fact(po)?.concrete_shape().ok_or_else(|| AutodiffError::Param {
                    name: name.clone(),
                    msg: "does not reach the loss and has no static shape for a zero gradient".into(),
                })?;
                let zeros = Tensor::from_f32(shape.clone(), &vec![0.0; shape.iter().product()])?;
                g.add_const(&format!("grad.zero.{name}"), zeros)?
            }
        };
        let output = format!("grad.{name}");
        g.add_output(&output, outlet)?;
        grads.push(Gradient { param: p, name, output, outlet });
    }
    Infer.run(g)?;
    jetc_ir::verify::verify(g)?;
    Ok(grads)
}

/// A float value on the active path.
fn active_float(g: &Graph, active: &HashSet<NodeId>, o: Outlet) -> bool {
    active.contains(&o.node) && g.fact(o).map(|f| f.dtype.is_float()).unwrap_or(false)
}

/// Adds `c` to the cotangent of `v`, with an explicit `Add` where `v` fans out.
fn accumulate(g: &mut Graph, cot: &mut HashMap<Outlet, Outlet>, v: Outlet, c: Outlet) -> Result<()> {
    let sum = match cot.get(&v) {
        None => c,
        Some(&prev) => {
            let name = format!("{}/grad_sum", g.node(v.node)?.name);
            let id = g.add_node(name, Op::Onnx(OnnxOp::new("Add", 14)), vec![Some(prev), Some(c)], vec![placeholder()])?;
            Outlet::new(id, 0)
        }
    };
    cot.insert(v, sum);
    Ok(())
}

fn check_loss(g: &Graph, loss: Outlet) -> Result<()> {
    let fact = g.fact(loss)?;
    let scalar = fact.concrete_shape().is_some_and(|s| s.iter().product::<usize>() == 1);
    if !fact.dtype.is_float() || !scalar {
        let name = match g.value_name(loss) {
            "" => g.node(loss.node)?.name.clone(),
            n => n.to_string(),
        };
        return Err(AutodiffError::Loss { name, fact: fact.to_string() });
    }
    Ok(())
}
