//! The standard `LinearAttention` op (opset 27, as jetc exports converted models) ->
//! `Op::LinearAttention`, so a converted model read back is summarized and run like one
//! jetc built itself.
use jetc_ir::{Graph, LinearAttentionSpec, Op, Outlet, Patch, PatchOutlet, Result, UpdateRule};

pub fn raise(g: &mut Graph) -> Result<bool> {
    let mut changed = false;
    for id in g.topo_order()? {
        let Ok(node) = g.node(id) else { continue };
        let Op::Onnx(op) = &node.op else { continue };
        if op.op_type != "LinearAttention" || !op.domain.is_empty() {
            continue;
        }
        let Some(rule) = UpdateRule::from_onnx(op.string("update_rule").unwrap_or("linear")) else { continue };
        let width = |slot: usize| -> Option<i64> {
            g.fact(node.inputs().get(slot).copied().flatten()?).ok()?.shape.as_ref()?.get(2)?.as_known()
        };
        let (hq, hkv) = (op.int_or("q_num_heads", 0), op.int_or("kv_num_heads", 0));
        let (Some(qw), Some(vw)) = (width(0), width(2)) else { continue };
        if hq <= 0 || hkv <= 0 || qw % hq != 0 || vw % hkv != 0 {
            continue;
        }
        let dk = (qw / hq) as usize;
        let spec = LinearAttentionSpec {
            rule,
            q_heads: hq as usize,
            kv_heads: hkv as usize,
            dk,
            dv: (vw / hkv) as usize,
            scale: op.float("scale").filter(|s| *s != 0.0).unwrap_or(1.0 / (dk as f32).sqrt()),
            chunk: op.int_or("chunk_size", 64).max(0) as usize,
        };
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
