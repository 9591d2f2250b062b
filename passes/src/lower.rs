//! `lower`: rewrites the IR's own ops into standard ONNX ops so that a raised or converted
//! model can be exported and run by onnxruntime. Target: default-domain opset 27.
//!
//! - `Embedding` -> `Gather`; `RmsNorm` -> `RMSNormalization`; `SwiGlu` -> MatMul/Sigmoid/Mul.
//! - `Attention` -> projections, `Reshape`/`Transpose` to heads, RoPE as `rotate_half`
//!   (Slice/Neg/Concat/Mul/Add), the KV cache as `Concat` (then the last W tokens for SWA),
//!   GQA as `Unsqueeze/Expand/Reshape`, and the standard `Attention` op with an explicit
//!   boolean or additive mask (causal and window built from Range, combined with the
//!   model's own mask).
//! - `LinearAttention` -> the standard `LinearAttention` op (rules linear, gated, delta,
//!   gated_delta; GLA's `GatedVector` is `gated` with a [B, T, H*d_k] decay). RWKV7's `Dplr`
//!   has no standard op: it becomes `ai.jetc::LinearAttention` (`update_rule = "dplr"`,
//!   inputs 6 `a`, 7 `b`), which the exporter defines as an ONNX function over standard ops
//!   (a `Scan` of the per-token update), so onnxruntime runs it and jetc reads it back.
//! - `DynamicConv` -> Concat of the cached values, one Slice per tap, Mul/Add, SiLU; the new
//!   cache is the last W raw values. A static one (one weight broadcast over [B, T]: GDN's,
//!   DeltaNet's and Mamba2's short convolutions) -> the standard `CausalConvWithState` with
//!   SiLU, between two Transposes; the cache is the same.
//! - `L2Norm`, `GatedRmsNorm` -> per-head Reshape and elementwise ops / `RMSNormalization`.
//!
//! Older ops kept from the source model are upgraded to opset 27 where their signature
//! changed (Reduce* `axes` attribute -> input).
use jetc_ir::{Attr, AttentionSpec, DType, Graph, LinearAttentionSpec, OnnxOp, Op, Outlet, RopeStyle, Tensor, UpdateRule, JETC_DOMAIN};

use crate::emit::Emit;
use crate::error::{PassError, Result};
use crate::pass::Pass;

pub const TARGET_OPSET: i64 = 27;

pub struct Lower;

impl Pass for Lower {
    fn name(&self) -> &'static str {
        "lower"
    }

    /// A pipeline: a fused JetBlock has no ONNX form of its own, so `unfuse` runs first.
    fn run(&self, g: &mut Graph) -> Result<bool> {
        crate::manager::PassManager::named("lower").add(Box::new(crate::fuse::Unfuse)).add(Box::new(LowerOps)).run_changed(g)
    }
}

/// The IR ops (decoder ops, mixers) to standard ONNX ops; `Lower` runs it after `unfuse`.
pub struct LowerOps;

impl Pass for LowerOps {
    fn name(&self) -> &'static str {
        "ops"
    }

    fn run(&self, g: &mut Graph) -> Result<bool> {
        let fail = |msg: String| PassError::Other { pass: "lower".into(), msg };
        let ir = |source| PassError::Ir { pass: "lower".into(), source };
        upgrade_reduce_axes(g).map_err(fail)?;
        let mut changed = false;
        for id in g.topo_order().map_err(ir)? {
            let Ok(node) = g.node(id) else { continue };
            if matches!(node.op, Op::Input | Op::Const(_) | Op::Onnx(_)) {
                continue;
            }
            let node = node.clone();
            let mut e = Emit { g, prefix: format!("{}/lowered/", node.name), opset: TARGET_OPSET };
            let outs = lower_node(&mut e, &node).map_err(|m| fail(format!("node `{}` ({}): {m}", node.name, node.op.name())))?;
            for (slot, new) in outs.into_iter().enumerate() {
                if let Some(new) = new {
                    g.replace_uses(Outlet::new(id, slot), new).map_err(ir)?;
                }
            }
            changed = true;
        }
        g.prune_dead().map_err(ir)?;
        g.meta.insert("opset.ai.onnx".into(), TARGET_OPSET.to_string());
        for id in g.node_ids().collect::<Vec<_>>() {
            if let Ok(Op::Onnx(o)) = g.node_mut(id).map(|n| &mut n.op) {
                if o.domain.is_empty() {
                    o.opset = TARGET_OPSET;
                }
            }
        }
        if g.meta.get("ir_version").and_then(|v| v.parse::<i64>().ok()).unwrap_or(0) < 11 {
            g.meta.insert("ir_version".into(), "11".into());
        }
        jetc_ir::infer::infer_graph(g).map_err(ir)?;
        Ok(changed)
    }
}

/// Reduce* ops below opset 18 carry `axes` as an attribute; from 18 it is an input.
fn upgrade_reduce_axes(g: &mut Graph) -> std::result::Result<(), String> {
    for id in g.topo_order().map_err(|e| e.to_string())? {
        let node = g.node(id).map_err(|e| e.to_string())?;
        let Op::Onnx(o) = &node.op else { continue };
        let reduce = o.op_type.starts_with("Reduce") && o.domain.is_empty() && !(o.op_type == "ReduceSum" && o.opset >= 13);
        if !reduce || o.opset >= 18 {
            continue;
        }
        let Some(axes) = o.ints("axes").map(|a| a.to_vec()) else { continue };
        let name = format!("{}/axes", node.name);
        let c = g.add_const(&name, Tensor::from_i64(vec![axes.len()], &axes).map_err(|e| e.to_string())?).map_err(|e| e.to_string())?;
        if let Ok(Op::Onnx(o)) = g.node_mut(id).map(|n| &mut n.op) {
            o.attrs.remove("axes");
        }
        g.set_input(id, 1, Some(c)).map_err(|e| e.to_string())?;
    }
    Ok(())
}

type Outs = Vec<Option<Outlet>>;

fn input(node: &jetc_ir::Node, slot: usize) -> Option<Outlet> {
    node.inputs().get(slot).copied().flatten()
}

fn req(node: &jetc_ir::Node, slot: usize, what: &str) -> std::result::Result<Outlet, String> {
    input(node, slot).ok_or_else(|| format!("input {slot} ({what}) is missing"))
}

fn lower_node(e: &mut Emit, node: &jetc_ir::Node) -> std::result::Result<Outs, String> {
    match &node.op {
        Op::Embedding => {
            let y = e.onnx("gather", "Gather", &[req(node, 0, "table")?, req(node, 1, "ids")?], &[("axis", Attr::Int(0))])?;
            Ok(vec![Some(y)])
        }
        Op::RmsNorm(s) => {
            let y = e.onnx(
                "rmsnorm",
                "RMSNormalization",
                &[req(node, 0, "x")?, req(node, 1, "weight")?],
                &[("epsilon", Attr::Float(s.eps)), ("axis", Attr::Int(-1))],
            )?;
            Ok(vec![Some(y)])
        }
        Op::SwiGlu => {
            let x = req(node, 0, "x")?;
            let gate = e.onnx("gate", "MatMul", &[x, req(node, 1, "w_gate")?], &[])?;
            let act = e.silu("gate", gate)?;
            let up = e.onnx("up", "MatMul", &[x, req(node, 2, "w_up")?], &[])?;
            let h = e.onnx("mul", "Mul", &[act, up], &[])?;
            Ok(vec![Some(e.onnx("down", "MatMul", &[h, req(node, 3, "w_down")?], &[])?)])
        }
        Op::L2Norm { heads, eps } => Ok(vec![Some(l2_norm(e, req(node, 0, "x")?, *heads, *eps)?)]),
        Op::GatedRmsNorm { heads, eps } => {
            let (x, w, gate) = (req(node, 0, "o")?, req(node, 1, "weight")?, req(node, 2, "gate")?);
            let split = e.ints("head_shape", &[0, 0, *heads as i64, -1])?;
            let merged = e.ints("merged_shape", &[0, 0, -1])?;
            let xh = e.onnx("heads", "Reshape", &[x, split], &[])?;
            let n = e.onnx("rmsnorm", "RMSNormalization", &[xh, w], &[("epsilon", Attr::Float(*eps)), ("axis", Attr::Int(-1))])?;
            let n = e.onnx("merge", "Reshape", &[n, merged], &[])?;
            let act = e.silu("gate", gate)?;
            Ok(vec![Some(e.onnx("gated", "Mul", &[n, act], &[])?)])
        }
        Op::LinearAttention(s) => linear_attention(e, node, s),
        Op::DynamicConv(s) => dynamic_conv(e, node, s.width),
        Op::Attention(s) => attention(e, node, s),
        other => Err(format!("no ONNX lowering for {}", other.name())),
    }
}

fn l2_norm(e: &mut Emit, x: Outlet, heads: usize, eps: f32) -> std::result::Result<Outlet, String> {
    let split = e.ints("head_shape", &[0, 0, heads as i64, -1])?;
    let merged = e.ints("merged_shape", &[0, 0, -1])?;
    let last = e.ints("last_axis", &[-1])?;
    let eps = e.scalar("eps", eps)?;
    let xh = e.onnx("heads", "Reshape", &[x, split], &[])?;
    let sq = e.onnx("square", "Mul", &[xh, xh], &[])?;
    let ss = e.onnx("sum", "ReduceSum", &[sq, last], &[("keepdims", Attr::Int(1))])?;
    let ss = e.onnx("plus_eps", "Add", &[ss, eps], &[])?;
    let n = e.onnx("norm", "Sqrt", &[ss], &[])?;
    let y = e.onnx("divide", "Div", &[xh, n], &[])?;
    e.onnx("merge", "Reshape", &[y, merged], &[])
}

fn linear_attention(e: &mut Emit, node: &jetc_ir::Node, s: &LinearAttentionSpec) -> std::result::Result<Outs, String> {
    // GLA is the standard `gated` rule with a per-key-dimension decay; RWKV7's DPLR rule is
    // jetc's function op (standard-op body, see jetc_onnx::functions).
    let (rule, domain, opset) = match s.rule {
        UpdateRule::Linear => ("linear", "", TARGET_OPSET),
        UpdateRule::Gated | UpdateRule::GatedVector => ("gated", "", TARGET_OPSET),
        UpdateRule::Delta => ("delta", "", TARGET_OPSET),
        UpdateRule::GatedDelta | UpdateRule::GatedDeltaVector => ("gated_delta", "", TARGET_OPSET),
        UpdateRule::Dplr => ("dplr", JETC_DOMAIN, 1),
    };
    let mut op = OnnxOp::new("LinearAttention", opset)
        .with_attr("q_num_heads", Attr::Int(s.q_heads as i64))
        .with_attr("kv_num_heads", Attr::Int(s.kv_heads as i64))
        .with_attr("update_rule", Attr::String(rule.into()))
        .with_attr("scale", Attr::Float(s.scale));
    op.domain = domain.into();
    if s.chunk > 0 {
        op = op.with_attr("chunk_size", Attr::Int(s.chunk as i64));
    }
    // Inputs a rule does not use are omitted (trailing) or left empty (middle).
    let mut ins: Vec<Option<Outlet>> = (0..8).map(|i| input(node, i)).collect();
    if matches!(s.rule, UpdateRule::Linear | UpdateRule::Delta) {
        ins[LinearAttentionSpec::DECAY] = None;
    }
    if !matches!(s.rule, UpdateRule::Delta | UpdateRule::GatedDelta) {
        ins[LinearAttentionSpec::BETA] = None;
    }
    if s.rule != UpdateRule::Dplr {
        ins.truncate(6);
    } else if ins[LinearAttentionSpec::STATE].is_none() {
        // The function body scans from a state: start from zeros [B, H, d_k, d_v].
        let q = req(node, LinearAttentionSpec::Q, "q")?;
        let b = e.onnx("batch", "Shape", &[q], &[("start", Attr::Int(0)), ("end", Attr::Int(1))])?;
        let rest = e.ints("state_dims", &[s.kv_heads as i64, s.dk as i64, s.dv as i64])?;
        let shape = e.onnx("state_shape", "Concat", &[b, rest], &[("axis", Attr::Int(0))])?;
        let zero = e.weight("state_zero", Tensor::from_f32(vec![1], &[0.0]).map_err(|e| e.to_string())?)?;
        ins[LinearAttentionSpec::STATE] = Some(e.onnx("initial_state", "Expand", &[zero, shape], &[])?);
    }
    while ins.last() == Some(&None) {
        ins.pop();
    }
    let outs = e.node("linear_attention", Op::Onnx(op), &ins, 2)?;
    // `present_state` is not an optional output of the standard op: it must be named even
    // when nothing reads it (models without caches).
    let name = format!("{}present_state", e.prefix);
    if let Ok(n) = e.g.node_mut(outs[1].node) {
        n.outputs[1].name = name;
    }
    Ok(vec![Some(outs[0]), Some(outs[1])])
}

/// The `[channels * W]` weight of a static short convolution: kernels that are one constant
/// broadcast over [B, T] (`Expand(weight, ..)`, as linearize builds GDN's and Mamba2's).
fn static_kernel(g: &Graph, ker: Outlet, w: usize) -> Option<Outlet> {
    let (n, _) = crate::pattern::onnx_producer(g, ker, &["Expand"])?;
    let c = crate::pattern::input(n, 0)?;
    let t = crate::pattern::const_of(g, c)?;
    (t.shape().len() == 1 && w > 1 && t.shape()[0] % w == 0).then_some(c)
}

fn dynamic_conv(e: &mut Emit, node: &jetc_ir::Node, w: usize) -> std::result::Result<Outs, String> {
    let (u, ker) = (req(node, 0, "u")?, req(node, 1, "kernels")?);
    if let Some(weight) = static_kernel(e.g, ker, w) {
        return static_conv(e, node, u, weight, w);
    }
    let w64 = w as i64;
    let axis1 = e.ints("axis1", &[1])?;
    // [B, W + T, C]: the cached raw values (or zeros) followed by the new ones.
    let full = match input(node, 2) {
        Some(past) => {
            let p = e.onnx("past_btc", "Transpose", &[past], &[("perm", Attr::Ints(vec![0, 2, 1]))])?;
            e.onnx("full", "Concat", &[p, u], &[("axis", Attr::Int(1))])?
        }
        None => {
            let pads = e.ints("pads", &[0, w64, 0, 0, 0, 0])?;
            e.onnx("full", "Pad", &[u, pads], &[])?
        }
    };
    let ker_shape = e.ints("ker_shape", &[0, 0, -1, w64])?;
    let ker4 = e.onnx("kernels", "Reshape", &[ker, ker_shape], &[])?;
    let last = e.ints("last_axis", &[-1])?;
    let mut acc: Option<Outlet> = None;
    for tap in 0..w64 {
        // Tap `tap` of token t reads full[t + 1 + tap].
        let start = e.ints(&format!("start{tap}"), &[1 + tap])?;
        let end_v = if tap == w64 - 1 { i64::MAX } else { -(w64 - 1 - tap) };
        let end = e.ints(&format!("end{tap}"), &[end_v])?;
        let xs = e.onnx(&format!("tap{tap}"), "Slice", &[full, start, end, axis1], &[])?;
        let ks = e.ints(&format!("kstart{tap}"), &[tap])?;
        let ke = e.ints(&format!("kend{tap}"), &[tap + 1])?;
        let k = e.onnx(&format!("ker{tap}"), "Slice", &[ker4, ks, ke, last], &[])?;
        let k = e.onnx(&format!("ker{tap}_squeeze"), "Squeeze", &[k, last], &[])?;
        let p = e.onnx(&format!("prod{tap}"), "Mul", &[xs, k], &[])?;
        acc = Some(match acc {
            None => p,
            Some(a) => e.onnx(&format!("sum{tap}"), "Add", &[a, p], &[])?,
        });
    }
    let acc = acc.ok_or("convolution width 0")?;
    let y = e.silu("act", acc)?;
    let ls = e.ints("last_w_start", &[-w64])?;
    let le = e.ints("last_w_end", &[i64::MAX])?;
    let tail = e.onnx("last_w", "Slice", &[full, ls, le, axis1], &[])?;
    let present = e.onnx("present", "Transpose", &[tail], &[("perm", Attr::Ints(vec![0, 2, 1]))])?;
    Ok(vec![Some(y), Some(present)])
}

/// A static short convolution + SiLU as the standard `CausalConvWithState` (opset 27,
/// [B, C, T] layout, weight [C, 1, W], state the last W - 1 inputs). jetc's cache keeps the
/// last W raw values ([B, C, W], of which the op reads the newest W - 1), so the model's
/// cache inputs and outputs are the same as for the dynamic form.
fn static_conv(e: &mut Emit, node: &jetc_ir::Node, u: Outlet, weight: Outlet, w: usize) -> std::result::Result<Outs, String> {
    let w64 = w as i64;
    let perm = || ("perm", Attr::Ints(vec![0, 2, 1]));
    let axis1 = e.ints("axis1", &[1])?;
    let u_bct = e.onnx("u_bct", "Transpose", &[u], &[perm()])?;
    let weight_shape = e.ints("weight_shape", &[-1, 1, w64])?;
    let weight = e.onnx("weight_c1w", "Reshape", &[weight, weight_shape], &[])?;
    let (state, full) = match input(node, 2) {
        Some(past) => {
            let (start, end, axis2) = (e.ints("state_start", &[1])?, e.ints("state_end", &[i64::MAX])?, e.ints("axis2", &[2])?);
            let state = e.onnx("past_state", "Slice", &[past, start, end, axis2], &[])?;
            let p = e.onnx("past_btc", "Transpose", &[past], &[perm()])?;
            (Some(state), e.onnx("full", "Concat", &[p, u], &[("axis", Attr::Int(1))])?)
        }
        None => {
            let pads = e.ints("pads", &[0, w64, 0, 0, 0, 0])?;
            (None, e.onnx("full", "Pad", &[u, pads], &[])?)
        }
    };
    let op = OnnxOp::new("CausalConvWithState", TARGET_OPSET).with_attr("activation", Attr::String("silu".into()));
    let conv = e.node("conv", Op::Onnx(op), &[Some(u_bct), Some(weight), None, state], 2)?;
    // The op's own state output is not the model's cache (see above); it is named so that
    // the exported graph stays valid.
    let name = format!("{}conv_state_unused", e.prefix);
    if let Ok(n) = e.g.node_mut(conv[0].node) {
        n.outputs[1].name = name;
    }
    let y = e.onnx("y", "Transpose", &[conv[0]], &[perm()])?;
    let (ls, le) = (e.ints("last_w_start", &[-w64])?, e.ints("last_w_end", &[i64::MAX])?);
    let tail = e.onnx("last_w", "Slice", &[full, ls, le, axis1], &[])?;
    let present = e.onnx("present", "Transpose", &[tail], &[perm()])?;
    Ok(vec![Some(y), Some(present)])
}

fn rope_table(e: &mut Emit, t: Outlet, rank: usize, half: bool, name: &str) -> std::result::Result<Outlet, String> {
    let t = match rank {
        4 => t,
        3 => {
            let ax = e.ints(&format!("{name}_ax"), &[1])?;
            e.onnx(&format!("{name}_4d"), "Unsqueeze", &[t, ax], &[])?
        }
        2 => {
            let ax = e.ints(&format!("{name}_ax"), &[0, 1])?;
            e.onnx(&format!("{name}_4d"), "Unsqueeze", &[t, ax], &[])?
        }
        r => return Err(format!("RoPE table of rank {r}")),
    };
    if half {
        return e.onnx(&format!("{name}_full"), "Concat", &[t, t], &[("axis", Attr::Int(-1))]);
    }
    Ok(t)
}

fn rotate(e: &mut Emit, x: Outlet, cos: Outlet, sin: Outlet, d: usize, name: &str) -> std::result::Result<Outlet, String> {
    let h = (d / 2) as i64;
    let last = e.ints(&format!("{name}_axis"), &[-1])?;
    let (z, m, end) = (e.ints(&format!("{name}_0"), &[0])?, e.ints(&format!("{name}_h"), &[h])?, e.ints(&format!("{name}_end"), &[i64::MAX])?);
    let lo = e.onnx(&format!("{name}_lo"), "Slice", &[x, z, m, last], &[])?;
    let hi = e.onnx(&format!("{name}_hi"), "Slice", &[x, m, end, last], &[])?;
    let neg = e.onnx(&format!("{name}_neg"), "Neg", &[hi], &[])?;
    let rot = e.onnx(&format!("{name}_rot"), "Concat", &[neg, lo], &[("axis", Attr::Int(-1))])?;
    let a = e.onnx(&format!("{name}_cos"), "Mul", &[x, cos], &[])?;
    let b = e.onnx(&format!("{name}_sin"), "Mul", &[rot, sin], &[])?;
    e.onnx(&format!("{name}_rope"), "Add", &[a, b], &[])
}

/// RoPE on the first `rot` of `d` elements of each head; the rest pass through.
fn rotate_partial(e: &mut Emit, x: Outlet, cos: Outlet, sin: Outlet, rot: usize, d: usize, name: &str) -> std::result::Result<Outlet, String> {
    if rot >= d {
        return rotate(e, x, cos, sin, d, name);
    }
    let last = e.ints(&format!("{name}_part_axis"), &[-1])?;
    let (z, r, end) = (e.ints(&format!("{name}_part_0"), &[0])?, e.ints(&format!("{name}_part_r"), &[rot as i64])?, e.ints(&format!("{name}_part_end"), &[i64::MAX])?);
    let head = e.onnx(&format!("{name}_rotated_part"), "Slice", &[x, z, r, last], &[])?;
    let tail = e.onnx(&format!("{name}_pass_part"), "Slice", &[x, r, end, last], &[])?;
    let head = rotate(e, head, cos, sin, rot, name)?;
    e.onnx(&format!("{name}_partial_rope"), "Concat", &[head, tail], &[("axis", Attr::Int(-1))])
}

fn attention(e: &mut Emit, node: &jetc_ir::Node, s: &AttentionSpec) -> std::result::Result<Outs, String> {
    let x = req(node, AttentionSpec::X, "x")?;
    let (h, kv, d) = (s.heads as i64, s.kv_heads as i64, s.head_dim);
    let proj = |e: &mut Emit, w: usize, b: usize, heads: i64, name: &str| -> std::result::Result<Outlet, String> {
        let mut y = e.onnx(&format!("{name}_proj"), "MatMul", &[x, req(node, w, name)?], &[])?;
        if let Some(bias) = input(node, b) {
            y = e.onnx(&format!("{name}_bias"), "Add", &[y, bias], &[])?;
        }
        // qk-norm: RMSNormalization over groups of the weight's length.
        let norm_slot = match w {
            AttentionSpec::WQ => Some(AttentionSpec::Q_NORM),
            AttentionSpec::WK => Some(AttentionSpec::K_NORM),
            _ => None,
        };
        if let (Some(eps), Some(nw)) = (s.qk_norm_eps, norm_slot.and_then(|slot| input(node, slot))) {
            let group = e.g.fact(nw).ok().and_then(|f| f.shape.as_ref()?.last()?.as_known()).ok_or("qk-norm weight of unknown size")?;
            let groups = e.ints(&format!("{name}_norm_groups"), &[0, 0, -1, group])?;
            let flat = e.ints(&format!("{name}_norm_flat"), &[0, 0, -1])?;
            let yg = e.onnx(&format!("{name}_norm_in"), "Reshape", &[y, groups], &[])?;
            let yn = e.onnx(&format!("{name}_norm"), "RMSNormalization", &[yg, nw], &[("epsilon", Attr::Float(eps)), ("axis", Attr::Int(-1))])?;
            y = e.onnx(&format!("{name}_norm_out"), "Reshape", &[yn, flat], &[])?;
        }
        let shape = e.ints(&format!("{name}_shape"), &[0, 0, heads, d as i64])?;
        let y = e.onnx(&format!("{name}_heads"), "Reshape", &[y, shape], &[])?;
        e.onnx(&format!("{name}_bhtd"), "Transpose", &[y], &[("perm", Attr::Ints(vec![0, 2, 1, 3]))])
    };
    let mut q = proj(e, AttentionSpec::WQ, AttentionSpec::BQ, h, "q")?;
    let mut k = proj(e, AttentionSpec::WK, AttentionSpec::BK, kv, "k")?;
    let v = proj(e, AttentionSpec::WV, AttentionSpec::BV, kv, "v")?;
    if let Some(style) = s.rope {
        let rot = s.rotary_dim.min(d);
        if style != RopeStyle::HalfRotate || rot == 0 || rot % 2 != 0 {
            return Err("only rotate_half RoPE (full or partial) is exported so far".into());
        }
        let (cos, sin) = (req(node, AttentionSpec::COS, "cos")?, req(node, AttentionSpec::SIN, "sin")?);
        let fact = e.g.fact(cos).map_err(|er| er.to_string())?.clone();
        let shape = fact.shape.ok_or("RoPE table of unknown rank")?;
        let half = shape.last().and_then(|w| w.as_known()) == Some((rot / 2) as i64);
        let cos = rope_table(e, cos, shape.len(), half, "cos")?;
        let sin = rope_table(e, sin, shape.len(), half, "sin")?;
        q = rotate_partial(e, q, cos, sin, rot, d, "q")?;
        k = rotate_partial(e, k, cos, sin, rot, d, "k")?;
    }
    let axis2 = e.ints("axis2", &[2])?;
    let (mut k_all, mut v_all) = (k, v);
    let past = input(node, AttentionSpec::PAST_K).zip(input(node, AttentionSpec::PAST_V));
    if let Some((pk, pv)) = past {
        k_all = e.onnx("k_cache", "Concat", &[pk, k], &[("axis", Attr::Int(2))])?;
        v_all = e.onnx("v_cache", "Concat", &[pv, v], &[("axis", Attr::Int(2))])?;
    }
    // Visibility: key j (0..P+T) from query i (0..T) when j <= i + P and j > i + P - W.
    let t_len = e.onnx("t_len", "Shape", &[x], &[("start", Attr::Int(1)), ("end", Attr::Int(2))])?;
    let s_len = e.onnx("s_len", "Shape", &[k_all], &[("start", Attr::Int(2)), ("end", Attr::Int(3))])?;
    let p_len = e.onnx("p_len", "Sub", &[s_len, t_len], &[])?;
    let scalar = e.weight("scalar_shape", Tensor::from_i64(vec![0], &[]).map_err(|er| er.to_string())?)?;
    let (zero, one) = (
        e.weight("zero", Tensor::scalar_i64(0))?,
        e.weight("one", Tensor::scalar_i64(1))?,
    );
    let ts = e.onnx("t_scalar", "Reshape", &[t_len, scalar], &[])?;
    let ss = e.onnx("s_scalar", "Reshape", &[s_len, scalar], &[])?;
    let ps = e.onnx("p_scalar", "Reshape", &[p_len, scalar], &[])?;
    let rows = e.onnx("rows", "Range", &[zero, ts, one], &[])?;
    let rows = e.onnx("rows_abs", "Add", &[rows, ps], &[])?;
    let last = e.ints("last_axis", &[-1])?;
    let rows = e.onnx("rows_col", "Unsqueeze", &[rows, last], &[])?;
    let cols = e.onnx("cols", "Range", &[zero, ss, one], &[])?;
    let mut keep = e.onnx("causal", "LessOrEqual", &[cols, rows], &[])?;
    if !s.causal {
        // Not causal: every key is visible (the model's own mask, if any, decides).
        let t = e.weight("true", Tensor::from_bool(vec![], &[true]).map_err(|er| er.to_string())?)?;
        keep = e.onnx("all_visible", "Or", &[keep, t], &[])?;
    }
    if let Some(w) = s.window {
        let wc = e.weight("window", Tensor::scalar_i64(w as i64))?;
        let lo = e.onnx("window_start", "Sub", &[rows, wc], &[])?;
        let inside = e.onnx("in_window", "Greater", &[cols, lo], &[])?;
        keep = e.onnx("causal_window", "And", &[keep, inside], &[])?;
    }
    let mask = match input(node, AttentionSpec::MASK) {
        None => keep,
        Some(m) => match e.g.fact(m).map_err(|er| er.to_string())?.dtype {
            DType::Bool => e.onnx("mask", "And", &[keep, m], &[])?,
            dt if dt.is_float() => {
                let (z, ninf) = (e.scalar("mask_zero", 0.0)?, e.scalar("mask_ninf", f32::NEG_INFINITY)?);
                let add = e.onnx("causal_additive", "Where", &[keep, z, ninf], &[])?;
                e.onnx("mask", "Add", &[m, add], &[])?
            }
            _ => {
                let mb = e.onnx("mask_bool", "Cast", &[m], &[("to", Attr::Int(DType::Bool.to_onnx() as i64))])?;
                e.onnx("mask", "And", &[keep, mb], &[])?
            }
        },
    };
    // GQA: repeat each kv head for its query group.
    let repeat = |e: &mut Emit, t: Outlet, name: &str| -> std::result::Result<Outlet, String> {
        if h == kv {
            return Ok(t);
        }
        let u = e.onnx(&format!("{name}_unsq"), "Unsqueeze", &[t, axis2], &[])?;
        let rep = e.ints(&format!("{name}_rep"), &[1, 1, h / kv, 1, 1])?;
        let x5 = e.onnx(&format!("{name}_expand"), "Expand", &[u, rep], &[])?;
        let back = e.ints(&format!("{name}_back"), &[0, h, -1, d as i64])?;
        e.onnx(&format!("{name}_repeat"), "Reshape", &[x5, back], &[])
    };
    let kr = repeat(e, k_all, "k")?;
    let vr = repeat(e, v_all, "v")?;
    let mut att = OnnxOp::new("Attention", TARGET_OPSET).with_attr("scale", Attr::Float(s.scale));
    if let Some(c) = s.softcap {
        // The standard op caps the scores before adding the mask, as Gemma 2 does.
        att = att.with_attr("softcap", Attr::Float(c));
    }
    let y = e.node("attention", Op::Onnx(att), &[Some(q), Some(kr), Some(vr), Some(mask)], 1)?[0];
    let y = e.onnx("y_bthd", "Transpose", &[y], &[("perm", Attr::Ints(vec![0, 2, 1, 3]))])?;
    let merged = e.ints("merged", &[0, 0, h * d as i64])?;
    let y = e.onnx("y_merge", "Reshape", &[y, merged], &[])?;
    let mut y = e.onnx("o_proj", "MatMul", &[y, req(node, AttentionSpec::WO, "wo")?], &[])?;
    if let Some(b) = input(node, AttentionSpec::BO) {
        y = e.onnx("o_bias", "Add", &[y, b], &[])?;
    }
    let (mut pk, mut pv) = (k_all, v_all);
    if let Some(w) = s.window {
        let st = e.ints("keep_start", &[-(w as i64)])?;
        let en = e.ints("keep_end", &[i64::MAX])?;
        pk = e.onnx("k_window", "Slice", &[k_all, st, en, axis2], &[])?;
        pv = e.onnx("v_window", "Slice", &[v_all, st, en, axis2], &[])?;
    }
    Ok(vec![Some(y), Some(pk), Some(pv)])
}
