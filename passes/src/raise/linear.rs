//! The standard `LinearAttention` op (opset 27, as jetc exports converted models) ->
//! `Op::LinearAttention`, so a converted model read back is summarized and run like one
//! jetc built itself. Nodes whose state is not f32 stay standard ONNX nodes (the executor runs
//! those as the standard defines, state dtype included).
use jetc_ir::{Graph, LinearAttentionSpec, Op, Outlet, Patch, PatchOutlet, Result, JETC_DOMAIN};

pub fn raise(g: &mut Graph) -> Result<bool> {
    let mut changed = false;
    for id in g.topo_order()? {
        let Ok(node) = g.node(id) else { continue };
        let Op::Onnx(op) = &node.op else { continue };
        if op.op_type != "LinearAttention" || !(op.domain.is_empty() || op.domain == JETC_DOMAIN) {
            continue;
        }
        let width = |slot: usize| -> Option<usize> {
            let w = g.fact(node.inputs().get(slot).copied().flatten()?).ok()?.shape.as_ref()?.get(2)?.as_known()?;
            usize::try_from(w).ok()
        };
        let (Some(qw), Some(vw)) = (width(LinearAttentionSpec::Q), width(LinearAttentionSpec::V)) else { continue };
        let Ok(spec) = LinearAttentionSpec::from_onnx(op, qw, vw, width(LinearAttentionSpec::DECAY)) else { continue };
        // `Op::LinearAttention` keeps its state in f32; a node whose present_state is another
        // dtype (the standard casts it to the past state's, or the query's) stays as it is.
        let dtype = |slot: usize| node.inputs().get(slot).copied().flatten().and_then(|o| g.fact(o).ok()).map(|f| f.dtype);
        if dtype(LinearAttentionSpec::STATE).or(dtype(LinearAttentionSpec::Q)) != Some(jetc_ir::DType::F32) {
            continue;
        }
        let mut p = Patch::new();
        let inputs = node.inputs().iter().map(|i| i.map(PatchOutlet::Existing)).collect();
        let outputs = node.outputs.iter().map(|o| jetc_ir::OutputInfo { name: String::new(), fact: o.fact.clone() }).collect();
        let n = p.wire(node.name.clone(), Op::LinearAttention(spec), inputs, outputs);
        for slot in 0..node.outputs.len() {
            p.shunt(Outlet::new(id, slot), PatchOutlet::New { index: n, slot });
        }
        p.apply(g)?;
        changed = true;
    }
    Ok(changed)
}
