//! Deterministic text form of a graph, for `jetc dump` and snapshot tests.
//!
//! Values are renumbered `%0, %1, ...` in topological order, so graph-index reuse never
//! shows in a diff. Weights print as name, dtype and shape; small integer constants print
//! their content inline. Node names are not printed (they are exporter noise); op, attributes
//! and facts are.
use std::collections::HashMap;
use std::fmt::Write;

use crate::error::Result;
use crate::graph::{Graph, Outlet};
use crate::op::Op;
use crate::tensor::Tensor;

const INLINE_CONST_MAX: usize = 8;

pub fn print_graph(g: &Graph) -> Result<String> {
    let order = g.topo_order()?;
    let mut num: HashMap<Outlet, usize> = HashMap::new();
    let mut next = 0usize;
    let mut out = String::from("graph {\n");
    for &id in &order {
        let node = g.node(id)?;
        let mut results = Vec::new();
        for (slot, info) in node.outputs.iter().enumerate() {
            let o = Outlet::new(id, slot);
            let used = !g.consumers(o).is_empty() || g.is_graph_output(o);
            if used || slot == 0 {
                num.insert(o, next);
                results.push(format!("%{next}: {}", info.fact));
                next += 1;
            } else {
                results.push("_".to_string());
            }
        }
        let args: Vec<String> = node
            .inputs()
            .iter()
            .map(|i| match i {
                Some(o) => num.get(o).map(|n| format!("%{n}")).unwrap_or_else(|| "%?".into()),
                None => "none".into(),
            })
            .collect();
        let line = match &node.op {
            Op::Input => format!("input {} \"{}\"", results.join(", "), node.outputs[0].name),
            Op::Const(t) if is_inline(t) => format!("const {} = {}", results.join(", "), inline_values(t)),
            Op::Const(_) => format!("weight {} \"{}\"", results.join(", "), node.name),
            Op::Onnx(o) => {
                let attrs: Vec<String> = o.attrs.iter().map(|(k, v)| format!("{k}={v}")).collect();
                let attrs = if attrs.is_empty() { String::new() } else { format!(" {{{}}}", attrs.join(", ")) };
                format!("{} = {}({}){attrs}", results.join(", "), o.qualified_name(), args.join(", "))
            }
            Op::RmsNorm(s) => format!("{} = RmsNorm({}) {{eps={:?}}}", results.join(", "), args.join(", "), s.eps),
            Op::Attention(s) => format!(
                "{} = Attention({}) {{heads={}, kv_heads={}, head_dim={}, scale={:?}, rope={}, rotary_dim={}, causal={}, window={}{}{}}}",
                results.join(", "),
                args.join(", "),
                s.heads,
                s.kv_heads,
                s.head_dim,
                s.scale,
                s.rope.map(|r| format!("{r:?}")).unwrap_or_else(|| "none".into()),
                s.rotary_dim,
                s.causal,
                s.window.map(|w| w.to_string()).unwrap_or_else(|| "none".into()),
                s.qk_norm_eps.map(|e| format!(", qk_norm_eps={e:?}")).unwrap_or_default(),
                s.softcap.map(|c| format!(", softcap={c:?}")).unwrap_or_default(),
            ),
            Op::LinearAttention(s) => format!(
                "{} = LinearAttention({}) {{rule={}, q_heads={}, kv_heads={}, dk={}, dv={}, scale={:?}, chunk={}}}",
                results.join(", "), args.join(", "), s.rule.name(), s.q_heads, s.kv_heads, s.dk, s.dv, s.scale, s.chunk
            ),
            Op::DynamicConv(s) => format!("{} = DynamicConv({}) {{width={}}}", results.join(", "), args.join(", "), s.width),
            Op::L2Norm { heads, eps } => format!("{} = L2Norm({}) {{heads={heads}, eps={eps:?}}}", results.join(", "), args.join(", ")),
            Op::GatedRmsNorm { heads, eps } => format!("{} = GatedRmsNorm({}) {{heads={heads}, eps={eps:?}}}", results.join(", "), args.join(", ")),
            Op::JetBlock(s) => format!(
                "{} = JetBlock({}) {{heads={}, dk={}, dv={}, width={}, scale={:?}, chunk={}{}}}",
                results.join(", "), args.join(", "), s.heads, s.dk, s.dv, s.width, s.scale, s.chunk,
                if s.packed { ", packed" } else { "" }
            ),
            Op::Switch { choices } => format!("{} = Switch({}) {{choices=[{}]}}", results.join(", "), args.join(", "), choices.join(",")),
            Op::Backward(b) => format!(
                "{} = {}({}) {{wrt=[{}]}}",
                results.join(", "),
                node.op.name(),
                args.join(", "),
                b.wrt.iter().map(|w| w.to_string()).collect::<Vec<_>>().join(",")
            ),
            other => format!("{} = {}({})", results.join(", "), other.name(), args.join(", ")),
        };
        let _ = writeln!(out, "  {line}");
    }
    for go in &g.outputs {
        let n = num.get(&go.outlet).map(|n| format!("%{n}")).unwrap_or_else(|| "%?".into());
        let _ = writeln!(out, "  output \"{}\" = {n}", go.name);
    }
    out.push_str("}\n");
    Ok(out)
}

fn is_inline(t: &Tensor) -> bool {
    t.numel() <= INLINE_CONST_MAX && !t.is_mapped()
}

fn inline_values(t: &Tensor) -> String {
    let items: Vec<String> = if t.dtype().is_float() {
        t.to_f32_vec().iter().map(|v| format!("{v:?}")).collect()
    } else {
        t.to_i64_vec().iter().map(|v| v.to_string()).collect()
    };
    format!("{}{:?} [{}]", t.dtype(), t.shape(), items.join(", "))
}
