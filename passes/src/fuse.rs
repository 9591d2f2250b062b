//! `fuse`: a decomposed JetBlock (the subgraph `linearize` builds: projections, SiLU, L2 norm,
//! kernel generator, `DynamicConv`, gates, `LinearAttention(gated_delta)`, `GatedRmsNorm`,
//! `o_proj`) becomes one `JetBlock` op with the same numerics, the unit the GPU kernels
//! implement. The match is structural: every piece is checked, and all projections must read
//! the same block input. `Unfuse` is the inverse, used before lowering to ONNX.
use jetc_ir::{
    DynamicConvSpec, Graph, JetBlockSpec, LinearAttentionSpec, Node, NodeId, Op, Outlet, OutputInfo, UpdateRule,
};

use crate::emit::Emit;
use crate::error::{PassError, Result};
use crate::pass::Pass;
use crate::pattern::{const_of, input, onnx_producer, scalar_of};

pub struct Fuse;

impl Pass for Fuse {
    fn name(&self) -> &'static str {
        "fuse"
    }

    fn run(&self, g: &mut Graph) -> Result<bool> {
        let ir = |source| PassError::Ir { pass: "fuse".into(), source };
        let mut changed = false;
        for id in g.topo_order().map_err(ir)? {
            let Ok(node) = g.node(id) else { continue };
            if !matches!(&node.op, Op::LinearAttention(s) if s.rule == UpdateRule::GatedDelta) {
                continue;
            }
            let Some(m) = match_jetblock(g, id) else { continue };
            apply(g, m).map_err(|msg| PassError::Other { pass: "fuse".into(), msg })?;
            changed = true;
        }
        g.prune_dead().map_err(ir)?;
        jetc_ir::infer::infer_graph(g).map_err(ir)?;
        Ok(changed)
    }
}

struct Match {
    spec: JetBlockSpec,
    /// Inputs of the fused op, by `JetBlockSpec` slot.
    inputs: Vec<Option<Outlet>>,
    y: Outlet,
    conv_present: Outlet,
    state_present: Outlet,
    name: String,
    /// `A_log` recovered from a folded `-exp(A_log)` constant (a model read back from ONNX),
    /// added as a constant for slot 9 when the fused op is built.
    a_log_from_folded: Option<jetc_ir::Tensor>,
}

fn node_of(g: &Graph, o: Outlet) -> Option<&Node> {
    g.node(o.node).ok()
}

/// `x` and the weight of `MatMul(x, W)` with W constant.
fn proj(g: &Graph, o: Outlet) -> Option<(Outlet, Outlet)> {
    let (n, _) = onnx_producer(g, o, &["MatMul"])?;
    let w = input(n, 1)?;
    const_of(g, w)?;
    Some((input(n, 0)?, w))
}

/// `a` when `o = Mul(a, Sigmoid(a))`.
fn silu_arg(g: &Graph, o: Outlet) -> Option<Outlet> {
    let (n, _) = onnx_producer(g, o, &["Mul"])?;
    let (a, s) = (input(n, 0)?, input(n, 1)?);
    let (sn, _) = onnx_producer(g, s, &["Sigmoid"])?;
    (input(sn, 0)? == a).then_some(a)
}

/// q or k: `L2Norm(silu(x W))`.
fn qk(g: &Graph, o: Outlet, heads: usize) -> Option<(Outlet, Outlet, f32)> {
    let n = node_of(g, o)?;
    let Op::L2Norm { heads: h, eps } = n.op else { return None };
    if h != heads {
        return None;
    }
    let (x, w) = proj(g, silu_arg(g, input(n, 0)?)?)?;
    Some((x, w, eps))
}

fn match_jetblock(g: &Graph, id: NodeId) -> Option<Match> {
    let la = g.node(id).ok()?;
    let Op::LinearAttention(ls) = &la.op else { return None };
    if ls.q_heads != ls.kv_heads {
        return None;
    }
    let h = ls.q_heads;
    let (xq, wq, l2_eps) = qk(g, input(la, LinearAttentionSpec::Q)?, h)?;
    let (xk, wk, _) = qk(g, input(la, LinearAttentionSpec::K)?, h)?;
    // v: DynamicConv(x Wv, silu(x W1) W2 + b2, past)
    let conv_out = input(la, LinearAttentionSpec::V)?;
    let conv = node_of(g, conv_out)?;
    let Op::DynamicConv(DynamicConvSpec { width }) = conv.op else { return None };
    let (xv, wv) = proj(g, input(conv, 0)?)?;
    let (add, _) = onnx_producer(g, input(conv, 1)?, &["Add"])?;
    let (ker, b2) = (input(add, 0)?, input(add, 1)?);
    const_of(g, b2)?;
    let (hid, w2) = proj(g, ker)?;
    let (x1, w1) = proj(g, silu_arg(g, hid)?)?;
    // beta = Sigmoid(x Wb)
    let (sig, _) = onnx_producer(g, input(la, LinearAttentionSpec::BETA)?, &["Sigmoid"])?;
    let (xb, wb) = proj(g, input(sig, 0)?)?;
    // decay = Max(Mul(Softplus(x Wa + dt_bias), Neg(Exp(A_log))), floor)
    let (max, _) = onnx_producer(g, input(la, LinearAttentionSpec::DECAY)?, &["Max"])?;
    let floor = scalar_of(g, input(max, 1)?)?;
    let (mul, _) = onnx_producer(g, input(max, 0)?, &["Mul"])?;
    let (sp, _) = onnx_producer(g, input(mul, 0)?, &["Softplus"])?;
    // -exp(A_log) as ops, or folded into one constant (then A_log = ln(-c)).
    let (a_log, a_log_from_folded) = match onnx_producer(g, input(mul, 1)?, &["Neg"]) {
        Some((neg, _)) => {
            let (exp, _) = onnx_producer(g, input(neg, 0)?, &["Exp"])?;
            let a_log = input(exp, 0)?;
            const_of(g, a_log)?;
            (Some(a_log), None)
        }
        None => {
            let minus_a = const_of(g, input(mul, 1)?)?;
            let v: Vec<f32> = minus_a.to_f32_vec().iter().map(|&c| (-c).ln()).collect();
            if minus_a.shape() != [h] || v.iter().any(|x| !x.is_finite()) {
                return None;
            }
            (None, Some(jetc_ir::Tensor::from_f32(vec![h], &v).ok()?))
        }
    };
    let (aadd, _) = onnx_producer(g, input(sp, 0)?, &["Add"])?;
    let dt_bias = input(aadd, 1)?;
    const_of(g, dt_bias)?;
    let (xa, wa) = proj(g, input(aadd, 0)?)?;
    // Output: GatedRmsNorm(o, w, x Wg) -> MatMul(., Wo), the only consumer of o.
    let consumers = g.consumers(Outlet::new(id, 0));
    let [(norm_id, 0)] = consumers.as_slice() else { return None };
    let norm = g.node(*norm_id).ok()?;
    let Op::GatedRmsNorm { heads: nh, eps: norm_eps } = norm.op else { return None };
    if nh != h {
        return None;
    }
    let onorm = input(norm, 1)?;
    const_of(g, onorm)?;
    let (xg, wg) = proj(g, input(norm, 2)?)?;
    let oc = g.consumers(Outlet::new(*norm_id, 0));
    let [(o_id, 0)] = oc.as_slice() else { return None };
    let y = Outlet::new(*o_id, 0);
    let (_, wo) = proj(g, y)?;
    let x = xq;
    if [xk, xv, x1, xb, xa, xg].iter().any(|&o| o != x) {
        return None;
    }
    let spec = JetBlockSpec {
        heads: h,
        dk: ls.dk,
        dv: ls.dv,
        width,
        scale: ls.scale,
        l2_eps,
        norm_eps,
        decay_floor: floor,
        chunk: ls.chunk,
        packed: false,
    };
    let mut inputs = vec![
        Some(x), Some(wq), Some(wk), Some(wv), Some(w1), Some(w2), Some(b2), Some(wa), Some(dt_bias), a_log,
        Some(wb), Some(wg), Some(onorm), Some(wo), input(conv, 2), input(la, LinearAttentionSpec::STATE),
    ];
    while inputs.last() == Some(&None) {
        inputs.pop();
    }
    Some(Match {
        spec,
        inputs,
        y,
        conv_present: Outlet::new(conv_out.node, 1),
        state_present: Outlet::new(id, 1),
        name: la.name.replace("gated_delta_rule", "jetblock"),
        a_log_from_folded,
    })
}

fn apply(g: &mut Graph, mut m: Match) -> std::result::Result<(), String> {
    if let Some(t) = m.a_log_from_folded.take() {
        m.inputs[9] = Some(g.add_const(&format!("{}/A_log", m.name), t).map_err(|e| e.to_string())?);
    }
    pack_projections(g, &mut m)?;
    let facts = [m.y, m.conv_present, m.state_present]
        .iter()
        .map(|&o| g.fact(o).map(|f| OutputInfo { name: String::new(), fact: f.clone() }))
        .collect::<jetc_ir::Result<Vec<_>>>()
        .map_err(|e| e.to_string())?;
    let id = g.add_node(m.name, Op::JetBlock(m.spec), m.inputs, facts).map_err(|e| e.to_string())?;
    for (slot, old) in [m.y, m.conv_present, m.state_present].into_iter().enumerate() {
        g.replace_uses(old, Outlet::new(id, slot)).map_err(|e| e.to_string())?;
    }
    Ok(())
}

/// Merges the seven projections of the block input (q, k, v, w1, a, b, g) into one weight
/// `w_in` by columns, when all are 2-D constants of one dtype with the same rows. The packed
/// weight is named after q's (`...q_proj.weight` -> `...in_proj.weight`); unfuse splits it
/// back under the original names.
fn pack_projections(g: &mut Graph, m: &mut Match) -> std::result::Result<(), String> {
    let mut parts = Vec::with_capacity(7);
    for slot in JetBlockSpec::PACKED_SLOTS {
        let Some(o) = m.inputs.get(slot).copied().flatten() else { return Ok(()) };
        let Some(t) = const_of(g, o) else { return Ok(()) };
        parts.push((g.node(o.node).map_err(|e| e.to_string())?.name.clone(), t.clone()));
    }
    let (dtype, rows) = (parts[0].1.dtype(), parts[0].1.shape()[0]);
    if parts.iter().any(|(_, t)| t.shape().len() != 2 || t.shape()[0] != rows || t.dtype() != dtype) {
        return Ok(());
    }
    let Some(prefix) = parts[0].0.strip_suffix("q_proj.weight") else { return Ok(()) };
    let name = format!("{prefix}in_proj.weight");
    let width: usize = parts.iter().map(|(_, t)| t.shape()[1]).sum();
    let size = dtype.size_bytes();
    let mut bytes = Vec::with_capacity(rows * width * size);
    for r in 0..rows {
        for (_, t) in &parts {
            let n = t.shape()[1] * size;
            bytes.extend_from_slice(&t.bytes()[r * n..(r + 1) * n]);
        }
    }
    let packed = jetc_ir::Tensor::from_bytes(dtype, vec![rows, width], bytes).map_err(|e| e.to_string())?;
    let w_in = g.add_const(&name, packed).map_err(|e| e.to_string())?;
    for slot in JetBlockSpec::PACKED_SLOTS {
        m.inputs[slot] = None;
    }
    m.inputs[1] = Some(w_in);
    m.spec.packed = true;
    Ok(())
}

/// The separate projection weights of a packed JetBlock, split from its constant `w_in`
/// under the names they had before packing (slot -> outlet).
fn unpack_projections(g: &mut Graph, node: &Node, s: &JetBlockSpec) -> std::result::Result<Vec<(usize, Outlet)>, String> {
    let w_in = input(node, 1).ok_or("packed JetBlock without w_in")?;
    let t = const_of(g, w_in).ok_or("packed JetBlock: w_in is not a constant")?.clone();
    let w2 = input(node, 5).and_then(|o| const_of(g, o)).ok_or("packed JetBlock: w2 is not a constant")?;
    let widths = s.packed_widths(w2.shape()[0]);
    let (rows, width) = match t.shape() {
        [r, w] => (*r, *w),
        other => return Err(format!("packed w_in must be 2-D, got {other:?}")),
    };
    if widths.iter().sum::<usize>() != width {
        return Err(format!("packed w_in has {width} columns, the block needs {}", widths.iter().sum::<usize>()));
    }
    let name = g.node(w_in.node).map_err(|e| e.to_string())?.name.clone();
    let prefix = name.strip_suffix("in_proj.weight").unwrap_or(&name).to_string();
    let names = ["q_proj", "k_proj", "v_proj", "dynamic_conv1d.kernel_generator.w1", "a_proj", "b_proj", "g_proj"];
    let size = t.dtype().size_bytes();
    let mut out = Vec::with_capacity(7);
    let mut start = 0;
    for ((slot, n), w) in JetBlockSpec::PACKED_SLOTS.into_iter().zip(names).zip(widths) {
        let mut bytes = Vec::with_capacity(rows * w * size);
        for r in 0..rows {
            let row = (r * width + start) * size;
            bytes.extend_from_slice(&t.bytes()[row..row + w * size]);
        }
        let part = jetc_ir::Tensor::from_bytes(t.dtype(), vec![rows, w], bytes).map_err(|e| e.to_string())?;
        out.push((slot, g.add_const(&format!("{prefix}{n}.weight"), part).map_err(|e| e.to_string())?));
        start += w;
    }
    Ok(out)
}

/// `unfuse`: every `JetBlock` op back to the decomposed subgraph (for lowering to ONNX).
pub struct Unfuse;

impl Pass for Unfuse {
    fn name(&self) -> &'static str {
        "unfuse"
    }

    fn run(&self, g: &mut Graph) -> Result<bool> {
        let ir = |source| PassError::Ir { pass: "unfuse".into(), source };
        let mut changed = false;
        for id in g.topo_order().map_err(ir)? {
            let Ok(node) = g.node(id) else { continue };
            let Op::JetBlock(spec) = &node.op else { continue };
            let (node, spec) = (node.clone(), spec.clone());
            let outs = decompose(g, &node, &spec).map_err(|msg| PassError::Other { pass: "unfuse".into(), msg })?;
            for (slot, o) in outs.into_iter().enumerate() {
                g.replace_uses(Outlet::new(id, slot), o).map_err(ir)?;
            }
            changed = true;
        }
        g.prune_dead().map_err(ir)?;
        jetc_ir::infer::infer_graph(g).map_err(ir)?;
        Ok(changed)
    }
}

fn decompose(g: &mut Graph, node: &Node, s: &JetBlockSpec) -> std::result::Result<Vec<Outlet>, String> {
    let mut ins: Vec<Option<Outlet>> = node.inputs().to_vec();
    ins.resize(JetBlockSpec::NUM_INPUTS, None);
    if s.packed {
        for (slot, o) in unpack_projections(g, node, s)? {
            ins[slot] = Some(o);
        }
    }
    let inp = |i: usize| ins[i].ok_or_else(|| format!("JetBlock input {i} is missing"));
    let opset = crate::pattern::default_opset(g);
    let mut e = Emit { g, prefix: format!("{}/", node.name), opset };
    let x = inp(0)?;
    let mm = |e: &mut Emit, n: &str, w: Outlet| e.onnx(n, "MatMul", &[x, w], &[]);
    let q = mm(&mut e, "q_proj", inp(1)?)?;
    let q = e.silu("q", q)?;
    let q = e.node("q_norm", Op::L2Norm { heads: s.heads, eps: s.l2_eps }, &[Some(q)], 1)?[0];
    let k = mm(&mut e, "k_proj", inp(2)?)?;
    let k = e.silu("k", k)?;
    let k = e.node("k_norm", Op::L2Norm { heads: s.heads, eps: s.l2_eps }, &[Some(k)], 1)?[0];
    let u = mm(&mut e, "v_proj", inp(3)?)?;
    let hg = mm(&mut e, "w1", inp(4)?)?;
    let hg = e.silu("generator", hg)?;
    let ker = e.onnx("w2", "MatMul", &[hg, inp(5)?], &[])?;
    let ker = e.onnx("b2", "Add", &[ker, inp(6)?], &[])?;
    let conv = e.node(
        "dynamic_conv",
        Op::DynamicConv(DynamicConvSpec { width: s.width }),
        &[Some(u), Some(ker), ins[JetBlockSpec::PAST_CONV]],
        2,
    )?;
    let bp = mm(&mut e, "b_proj", inp(10)?)?;
    let beta = e.onnx("beta", "Sigmoid", &[bp], &[])?;
    let ap = mm(&mut e, "a_proj", inp(7)?)?;
    let ap = e.onnx("a_plus_dt_bias", "Add", &[ap, inp(8)?], &[])?;
    let sp = e.onnx("softplus", "Softplus", &[ap], &[])?;
    let ea = e.onnx("A", "Exp", &[inp(9)?], &[])?;
    let na = e.onnx("minus_A", "Neg", &[ea], &[])?;
    let gate = e.onnx("log_decay", "Mul", &[sp, na], &[])?;
    let floor = e.scalar("log_decay_floor", s.decay_floor)?;
    let gate = e.onnx("log_decay_floored", "Max", &[gate, floor], &[])?;
    let spec = LinearAttentionSpec {
        rule: UpdateRule::GatedDelta,
        q_heads: s.heads,
        kv_heads: s.heads,
        dk: s.dk,
        dv: s.dv,
        scale: s.scale,
        chunk: s.chunk,
    };
    let la = e.node(
        "gated_delta_rule",
        Op::LinearAttention(spec),
        &[Some(q), Some(k), Some(conv[0]), ins[JetBlockSpec::PAST_STATE], Some(gate), Some(beta)],
        2,
    )?;
    let gp = mm(&mut e, "g_proj", inp(11)?)?;
    let o = e.node("o_norm", Op::GatedRmsNorm { heads: s.heads, eps: s.norm_eps }, &[Some(la[0]), Some(inp(12)?), Some(gp)], 1)?[0];
    let y = e.onnx("o_proj", "MatMul", &[o, inp(13)?], &[])?;
    Ok(vec![y, conv[1], la[1]])
}
