//! Removes no-op casts (legacy exporters cast f32 to f32 around norms; torch dynamo without
//! its optimizer writes `CastLike` to the dtype the value already has), Identity nodes and
//! single-input Concat/Max/Min/Sum/Mean, so that the matchers see the computation itself.
use jetc_ir::{Graph, Op, Outlet, Result};

pub fn remove_identity_casts(g: &mut Graph) -> Result<bool> {
    let mut changed = false;
    for id in g.topo_order()? {
        let Ok(node) = g.node(id) else { continue };
        let Op::Onnx(op) = &node.op else { continue };
        let Some(src) = node.inputs().first().copied().flatten() else { continue };
        let is_noop = match op.op_type.as_str() {
            "Identity" | "Dropout" => node.outputs.len() == 1 || g.consumers(Outlet::new(id, 1)).is_empty(),
            "Cast" | "CastLike" => g.fact(src)?.dtype == node.outputs[0].fact.dtype,
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

#[cfg(test)]
mod tests {
    use jetc_ir::{DType, Fact, OnnxOp, OutputInfo, Tensor};

    use super::*;

    /// x -> CastLike(x, like) -> Sigmoid -> y, `like` of dtype `to`.
    fn graph(to: DType) -> Graph {
        let mut g = Graph::new();
        let x = g.add_input("x", Fact::known(DType::F32, &[2])).unwrap_or_else(|e| panic!("{e}"));
        let like = match to {
            DType::F32 => Tensor::scalar_f32(0.0),
            _ => Tensor::from_i64(vec![1], &[0]).unwrap_or_else(|e| panic!("{e}")),
        };
        let like = g.add_const("like", like).unwrap_or_else(|e| panic!("{e}"));
        let out = |d| vec![OutputInfo { name: String::new(), fact: Fact::known(d, &[2]) }];
        let c = g.add_node("cast_like", Op::Onnx(OnnxOp::new("CastLike", 21)), vec![Some(Outlet::new(x, 0)), Some(like)], out(to)).unwrap_or_else(|e| panic!("{e}"));
        let s = g.add_node("sig", Op::Onnx(OnnxOp::new("Sigmoid", 13)), vec![Some(Outlet::new(c, 0))], out(to)).unwrap_or_else(|e| panic!("{e}"));
        g.add_output("y", Outlet::new(s, 0)).unwrap_or_else(|e| panic!("{e}"));
        g
    }

    fn ops(g: &Graph) -> Vec<String> {
        g.topo_order().unwrap_or_default().into_iter().filter_map(|id| g.node(id).ok()).filter_map(|n| match &n.op {
            Op::Onnx(o) => Some(o.op_type.clone()),
            _ => None,
        }).collect()
    }

    #[test]
    fn a_cast_like_to_the_same_dtype_goes_and_a_real_one_stays() {
        let mut same = graph(DType::F32);
        assert!(remove_identity_casts(&mut same).unwrap_or_else(|e| panic!("{e}")));
        same.prune_dead().unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(ops(&same), ["Sigmoid"]);
        let mut real = graph(DType::I64);
        assert!(!remove_identity_casts(&mut real).unwrap_or_else(|e| panic!("{e}")));
        assert_eq!(ops(&real), ["CastLike", "Sigmoid"]);
    }
}
