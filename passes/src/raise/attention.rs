//! Attention raising.
//!
//! Anchors: `Softmax` (eager and sdpa decompositions), the standard `Attention` op (opset
//! 23/24) and the contrib `GroupQueryAttention`. From the anchor we find the attention core's
//! q, k and v operands, then trace each one up to its projection (`MatMul` with a constant
//! weight, optional bias `Add`) through the plumbing exporters put in between: reshapes,
//! transposes, GQA repeats (`Unsqueeze/Expand/Reshape`), scalar scales, the KV-cache
//! `Concat` with a past input, RoPE (`rotate_half` spelled with Slice/Neg/Concat, or the
//! `RotaryEmbedding` op) and slices or splits of a packed QKV projection. From the core's
//! output we walk down to the output projection. The result is one `Attention` op that keeps
//! the original weights (packed weights are split into q/k/v constants).
use jetc_ir::{
    AttentionSpec, DType, Fact, Graph, NodeId, OnnxOp, Op, Outlet, OutputInfo, Patch, PatchOutlet, Result, RopeStyle,
    Tensor,
};

use crate::pattern::{const_of, default_opset, input, is_graph_input, last_axis_cols, linear, onnx_producer, scalar_of, slice_cols};

pub fn raise(g: &mut Graph) -> Result<bool> {
    let mut changed = false;
    for id in g.topo_order()? {
        let Ok(node) = g.node(id) else { continue };
        let Op::Onnx(op) = &node.op else { continue };
        let core = match (op.domain.as_str(), op.op_type.as_str()) {
            ("", "Softmax") => core_from_softmax(g, id),
            ("", "Attention") => core_from_attention_op(g, id),
            ("com.microsoft", "GroupQueryAttention") => core_from_gqa(g, id),
            _ => continue,
        };
        let Some(core) = core else { continue };
        let Some(plan) = plan(g, &core) else { continue };
        build(g, plan)?;
        changed = true;
    }
    Ok(changed)
}

/// A matcher gave up. With `JETC_DEBUG_RAISE` set, says where (for whoever extends the
/// matcher to a new exporter's spelling).
fn fail<T>(line: u32) -> Option<T> {
    if std::env::var_os("JETC_DEBUG_RAISE").is_some() {
        eprintln!("raise/attention.rs:{line}: no match");
    }
    None
}

#[derive(Clone, Copy, Debug, PartialEq)]
enum MaskKind {
    /// Float, added to the scores.
    Additive,
    /// Boolean, true where a key may be attended.
    Keep,
    /// Boolean, true where a key must not be attended.
    Drop,
}

#[derive(Clone, Debug)]
struct Rope {
    cos: Outlet,
    sin: Outlet,
    /// Gather the tables by these position ids first (`RotaryEmbedding` with position_ids).
    positions: Option<Outlet>,
    /// Positions are `past_len + arange(T)` (GroupQueryAttention `do_rotary`).
    offset_positions: bool,
    style: RopeStyle,
    rotary_dim: Option<usize>,
}

/// The attention core found at an anchor.
struct Core {
    q: Outlet,
    k: Option<Outlet>,
    v: Option<Outlet>,
    out: Outlet,
    mask: Option<(Outlet, MaskKind)>,
    /// Scale found on the scores path, and the op's own (for fused ops).
    path_scale: f32,
    op_scale: Option<f32>,
    /// The op's default scale is 1/sqrt(head_dim) (fused ops), or there is none (Softmax).
    default_scale: bool,
    causal: bool,
    /// Sliding window found in the mask (jetc's own lowering of SWA).
    window: Option<usize>,
    /// Score soft-capping (c * tanh(s / c)) between the scale and the mask.
    softcap: Option<f32>,
    heads: Option<usize>,
    kv_heads: Option<usize>,
    past: Option<(Outlet, Outlet)>,
    present: Option<(Outlet, Outlet)>,
    rope: Option<Rope>,
    anchor: String,
}

struct Proj {
    x: Outlet,
    w: Outlet,
    /// The bias, and whether it is on the packed output (then sliced like the weight).
    bias: Option<(Outlet, bool)>,
    /// Column range of a packed projection.
    cols: Option<(usize, usize)>,
    out_dim: usize,
}

struct Trace {
    proj: Proj,
    /// An RMSNorm of the projection (qk-norm): its weight and eps.
    norm: Option<(Outlet, f32)>,
    rope: Option<Rope>,
    past: Option<Outlet>,
    present: Option<Outlet>,
    scale: f32,
}

fn onnx(g: &Graph, o: Outlet) -> Option<(&jetc_ir::Node, &OnnxOp)> {
    let n = g.node(o.node).ok()?;
    match &n.op {
        Op::Onnx(op) => Some((n, op)),
        _ => None,
    }
}

/// `(s, c)` when `mul` = `Mul(Tanh(s / c), c)` (or `Tanh(s * (1/c))`, operands either way):
/// Gemma 2's soft-capping of attention scores.
fn soft_capped(g: &Graph, mul: &jetc_ir::Node) -> Option<(Outlet, f32)> {
    let (a, b) = (input(mul, 0)?, input(mul, 1)?);
    let (t, c) = match (scalar_of(g, a), scalar_of(g, b)) {
        (None, Some(c)) => (a, c),
        (Some(c), None) => (b, c),
        _ => return None,
    };
    let (tanh, _) = onnx_producer(g, t, &["Tanh"])?;
    let (inner, iop) = onnx_producer(g, input(tanh, 0)?, &["Div", "Mul"])?;
    let (x, y) = (input(inner, 0)?, input(inner, 1)?);
    let (s, k) = match (scalar_of(g, x), scalar_of(g, y)) {
        (None, Some(k)) => (x, k),
        (Some(k), None) if iop.op_type == "Mul" => (y, k),
        _ => return None,
    };
    let divisor = if iop.op_type == "Div" { k } else { 1.0 / k };
    (c != 0.0 && ((divisor - c) / c).abs() < 1e-5).then_some((s, c))
}

/// True when `o` is the raw q·k product or a scaled/cast form of it.
fn is_scores(g: &Graph, o: Outlet, depth: usize) -> bool {
    if depth > 6 {
        return false;
    }
    let Some((n, op)) = onnx(g, o) else { return false };
    match op.op_type.as_str() {
        "MatMul" => input(n, 1).is_some_and(|b| const_of(g, b).is_none()) && input(n, 0).is_some_and(|a| const_of(g, a).is_none()),
        "Mul" | "Div" | "Cast" | "Add" | "Where" | "Tanh" => {
            n.inputs().iter().flatten().any(|&i| is_scores(g, i, depth + 1))
        }
        _ => false,
    }
}

fn core_from_softmax(g: &Graph, sm: NodeId) -> Option<Core> {
    let node = g.node(sm).ok()?;
    let Op::Onnx(op) = &node.op else { return None };
    let rank = g.fact(input(node, 0)?).ok()?.rank()?;
    let axis = op.int_or("axis", -1);
    if axis != -1 && axis != rank as i64 - 1 {
        return fail(line!());
    }
    let mut cur = input(node, 0)?;
    let mut mask = None;
    let mut scale = 1.0f32;
    let mut softcap = None;
    let qk = loop {
        let (n, op) = onnx(g, cur)?;
        if op.op_type == "Mul" && softcap.is_none() && scale == 1.0 {
            if let Some((x, c)) = soft_capped(g, n) {
                softcap = Some(c);
                cur = x;
                continue;
            }
        }
        match op.op_type.as_str() {
            "MatMul" => break n,
            "Cast" => cur = input(n, 0)?,
            "Mul" | "Div" => {
                let (a, b) = (input(n, 0)?, input(n, 1)?);
                if let Some(s) = scalar_of(g, b) {
                    scale *= if op.op_type == "Mul" { s } else { 1.0 / s };
                    cur = a;
                } else if let (Some(s), "Mul") = (scalar_of(g, a), op.op_type.as_str()) {
                    scale *= s;
                    cur = b;
                } else {
                    return fail(line!());
                }
            }
            "Add" => {
                let (a, b) = (input(n, 0)?, input(n, 1)?);
                let (scores, m) = if is_scores(g, a, 0) { (a, b) } else if is_scores(g, b, 0) { (b, a) } else { return None };
                if mask.is_some() {
                    return fail(line!());
                }
                mask = Some((m, MaskKind::Additive));
                cur = scores;
            }
            "Where" => {
                let (c, a, b) = (input(n, 0)?, input(n, 1)?, input(n, 2)?);
                if mask.is_some() {
                    return fail(line!());
                }
                if is_scores(g, a, 0) {
                    mask = Some((c, MaskKind::Keep));
                    cur = a;
                } else if is_scores(g, b, 0) {
                    mask = Some((c, MaskKind::Drop));
                    cur = b;
                } else {
                    return fail(line!());
                }
            }
            _ => return None,
        }
    };
    let (q, k) = (input(qk, 0)?, input(qk, 1)?);
    // Down to probs @ V.
    let mut cur = Outlet::new(sm, 0);
    let pv = 'down: {
        for _ in 0..4 {
            let consumers = g.consumers(cur);
            for &(c, slot) in &consumers {
                let n = g.node(c).ok()?;
                if n.op.is("MatMul") && slot == 0 {
                    break 'down c;
                }
            }
            // Where(IsNaN(p), 0, p) (sdpa), Cast, Dropout: follow the value onwards.
            let next = consumers.iter().find_map(|&(c, slot)| {
                let n = g.node(c).ok()?;
                let through = (n.op.is("Where") && slot == 2) || n.op.is("Cast") || n.op.is("Dropout");
                through.then_some(Outlet::new(c, 0))
            })?;
            cur = next;
        }
        return fail(line!());
    };
    let pv_node = g.node(pv).ok()?;
    let causal = mask.is_none();
    Some(Core {
        q,
        k: Some(k),
        v: Some(input(pv_node, 1)?),
        out: Outlet::new(pv, 0),
        mask,
        path_scale: scale,
        op_scale: None,
        default_scale: false,
        causal,
        window: None,
        softcap,
        heads: None,
        kv_heads: None,
        past: None,
        present: None,
        rope: None,
        anchor: node.name.clone(),
    })
}

fn present_pair(g: &Graph, id: NodeId) -> Option<(Outlet, Outlet)> {
    let n = g.node(id).ok()?;
    if n.outputs.len() < 3 {
        return None;
    }
    let (k, v) = (Outlet::new(id, 1), Outlet::new(id, 2));
    let used = |o| !g.consumers(o).is_empty() || g.is_graph_output(o);
    (used(k) || used(v)).then_some((k, v))
}

fn core_from_attention_op(g: &Graph, id: NodeId) -> Option<Core> {
    let node = g.node(id).ok()?;
    let Op::Onnx(op) = &node.op else { return None };
    if node.outputs.len() > 3 && !g.consumers(Outlet::new(id, 3)).is_empty() {
        return fail(line!());
    }
    let mut mask = input(node, 3).and_then(|m| {
        let kind = if g.fact(m).ok()?.dtype == DType::Bool { MaskKind::Keep } else { MaskKind::Additive };
        Some((m, kind))
    });
    // jetc's own lowering of sliding-window attention: And(causal, key > query - W).
    let window = mask.and_then(|(m, _)| sliding_window_of(g, m));
    if window.is_some() {
        mask = None;
    }
    let past = match (input(node, 4), input(node, 5)) {
        (Some(k), Some(v)) => Some((k, v)),
        _ => None,
    };
    if input(node, 6).is_some() {
        return fail(line!()); // nonpad_kv_seqlen
    }
    Some(Core {
        q: input(node, 0)?,
        k: input(node, 1),
        v: input(node, 2),
        out: Outlet::new(id, 0),
        causal: op.int_or("is_causal", 0) != 0 || window.is_some(),
        window,
        softcap: op.float("softcap").filter(|c| *c != 0.0),
        mask,
        path_scale: 1.0,
        op_scale: op.float("scale"),
        default_scale: true,
        heads: op.int("q_num_heads").map(|v| v as usize),
        kv_heads: op.int("kv_num_heads").map(|v| v as usize),
        past,
        present: present_pair(g, id),
        rope: None,
        anchor: node.name.clone(),
    })
}

fn core_from_gqa(g: &Graph, id: NodeId) -> Option<Core> {
    let node = g.node(id).ok()?;
    let Op::Onnx(op) = &node.op else { return None };
    if op.int_or("local_window_size", -1) != -1 {
        return fail(line!());
    }
    let rope = if op.int_or("do_rotary", 0) != 0 {
        Some(Rope {
            cos: input(node, 7)?,
            sin: input(node, 8)?,
            positions: input(node, 9),
            offset_positions: input(node, 9).is_none(),
            style: if op.int_or("rotary_interleaved", 0) != 0 { RopeStyle::Interleaved } else { RopeStyle::HalfRotate },
            rotary_dim: None,
        })
    } else {
        None
    };
    let past = match (input(node, 3), input(node, 4)) {
        (Some(k), Some(v)) => Some((k, v)),
        _ => None,
    };
    let scale = op.float("scale").filter(|s| *s != 0.0);
    Some(Core {
        q: input(node, 0)?,
        k: input(node, 1),
        v: input(node, 2),
        out: Outlet::new(id, 0),
        mask: input(node, 10).map(|b| (b, MaskKind::Additive)),
        path_scale: 1.0,
        op_scale: scale,
        default_scale: true,
        causal: true,
        window: None,
        softcap: op.float("softcap").filter(|c| *c != 0.0),
        heads: op.int("num_heads").map(|v| v as usize),
        kv_heads: op.int("kv_num_heads").map(|v| v as usize),
        past,
        present: present_pair(g, id),
        rope,
        anchor: node.name.clone(),
    })
}

/// W when `m = And(LessOrEqual(cols, rows), Greater(cols, Sub(rows, W)))` (either order),
/// the mask `lower` writes for sliding-window attention.
fn sliding_window_of(g: &Graph, m: Outlet) -> Option<usize> {
    let (and, _) = onnx_producer(g, m, &["And"])?;
    let (a, b) = (input(and, 0)?, input(and, 1)?);
    for (causal, inside) in [(a, b), (b, a)] {
        let (le, _) = onnx_producer(g, causal, &["LessOrEqual"])?;
        let Some((gt, _)) = onnx_producer(g, inside, &["Greater"]) else { continue };
        let (sub, _) = onnx_producer(g, input(gt, 1)?, &["Sub"])?;
        // Same key and query index vectors on both sides.
        if input(le, 0)? != input(gt, 0)? || input(le, 1)? != input(sub, 0)? {
            continue;
        }
        let w = const_of(g, input(sub, 1)?)?.to_i64_vec();
        if let [w] = w.as_slice() {
            return usize::try_from(*w).ok().filter(|&w| w > 0);
        }
    }
    None
}

/// `x` when `r = rotate_half(x)` = `Concat(Neg(Slice(x, h..)), Slice(x, ..h), axis=-1)`.
fn rotate_half_source(g: &Graph, r: Outlet) -> Option<Outlet> {
    let (cat, op) = onnx(g, r)?;
    if op.op_type != "Concat" || cat.inputs().len() != 2 {
        return fail(line!());
    }
    let (neg, _) = onnx_producer(g, input(cat, 0)?, &["Neg"])?;
    let (hi, _) = onnx_producer(g, input(neg, 0)?, &["Slice"])?;
    let (lo, _) = onnx_producer(g, input(cat, 1)?, &["Slice"])?;
    let x = input(hi, 0)?;
    (input(lo, 0)? == x).then_some(x)
}

/// Partial rotary (GPT-NeoX, Phi, StableLM): `Concat(rope(Slice(x, ..R)), Slice(x, R..),
/// axis=-1)`, rope decomposed or the opset-23 `RotaryEmbedding`; returns x and the RoPE with
/// `rotary_dim` R.
fn partial_rope(g: &Graph, cat: &jetc_ir::Node) -> Option<(Outlet, Rope)> {
    let Op::Onnx(op) = &cat.op else { return None };
    let rank = g.fact(input(cat, 0)?).ok()?.rank()? as i64;
    let axis = op.int_or("axis", 0);
    if cat.inputs().len() != 2 || (axis != -1 && axis != rank - 1) {
        return None;
    }
    // (source, start, end) of a unit-step Slice on the last axis.
    let last_slice = |o: Outlet| -> Option<(Outlet, i64, i64)> {
        let (n, _) = onnx_producer(g, o, &["Slice"])?;
        let v = |i: usize| const_of(g, input(n, i)?).map(|t| t.to_i64_vec());
        let (st, en, ax) = (v(1)?, v(2)?, v(3)?);
        let unit = input(n, 4).is_none() || v(4).is_some_and(|s| s == [1]);
        (unit && st.len() == 1 && en.len() == 1 && (ax == [-1] || ax == [rank - 1])).then(|| (input(n, 0), st[0], en[0])).and_then(|(x, a, b)| Some((x?, a, b)))
    };
    let (x, r, end) = last_slice(input(cat, 1)?)?;
    let (rotated, rop) = onnx_producer(g, input(cat, 0)?, &["Add", "RotaryEmbedding"])?;
    let (src, mut rope) = if rop.op_type == "Add" {
        rope_add(g, rotated)?
    } else if rop.domain.is_empty() && rop.int_or("rotary_embedding_dim", 0) == 0 {
        // The opset-23 op rotating the whole slice it is given.
        let rope = Rope {
            cos: input(rotated, 1)?,
            sin: input(rotated, 2)?,
            positions: input(rotated, 3),
            offset_positions: false,
            style: if rop.int_or("interleaved", 0) != 0 { RopeStyle::Interleaved } else { RopeStyle::HalfRotate },
            rotary_dim: None,
        };
        (input(rotated, 0)?, rope)
    } else {
        return None;
    };
    let (x2, s0, r2) = last_slice(src)?;
    if x2 != x || s0 != 0 || r2 != r || r <= 0 || end < r {
        return None;
    }
    rope.rotary_dim = Some(r as usize);
    Some((x, rope))
}

/// RoPE as `Add(Mul(x, cos), Mul(rotate_half(x), sin))`, any operand order.
fn rope_add(g: &Graph, add: &jetc_ir::Node) -> Option<(Outlet, Rope)> {
    let (m1, _) = onnx_producer(g, input(add, 0)?, &["Mul"])?;
    let (m2, _) = onnx_producer(g, input(add, 1)?, &["Mul"])?;
    for (cm, sm) in [(m1, m2), (m2, m1)] {
        for (x, cos) in [(input(cm, 0)?, input(cm, 1)?), (input(cm, 1)?, input(cm, 0)?)] {
            for (r, sin) in [(input(sm, 0)?, input(sm, 1)?), (input(sm, 1)?, input(sm, 0)?)] {
                if rotate_half_source(g, r) == Some(x) {
                    let rope = Rope {
                        cos,
                        sin,
                        positions: None,
                        offset_positions: false,
                        style: RopeStyle::HalfRotate,
                        rotary_dim: None,
                    };
                    return Some((x, rope));
                }
            }
        }
    }
    None
}

fn trace(g: &Graph, start: Outlet) -> Option<Trace> {
    let mut cur = start;
    let mut t = Trace {
        proj: Proj { x: start, w: start, bias: None, cols: None, out_dim: 0 },
        norm: None,
        rope: None,
        past: None,
        present: None,
        scale: 1.0,
    };
    let mut slice: Option<(NodeId, usize)> = None;
    for _ in 0..64 {
        if let Some((x, w, _, out)) = linear(g, cur) {
            t.proj.x = x;
            t.proj.w = w;
            t.proj.out_dim = out;
            if let Some((sid, slot)) = slice {
                let n = g.node(sid).ok()?;
                let Op::Onnx(op) = &n.op else { return None };
                t.proj.cols = Some(last_axis_cols(g, n, op, slot, out)?);
            }
            return Some(t);
        }
        // qk-norm: an RMSNorm between the projection (and its bias) and RoPE / the cache.
        if let Ok(n) = g.node(cur.node) {
            if let Op::RmsNorm(s) = &n.op {
                if t.norm.is_some() || t.proj.bias.is_some() || slice.is_some() {
                    return fail(line!());
                }
                let w = input(n, 1)?;
                const_of(g, w)?;
                t.norm = Some((w, s.eps));
                cur = input(n, 0)?;
                continue;
            }
        }
        let (n, op) = onnx(g, cur)?;
        if op.op_type == "Concat" && t.rope.is_none() {
            if let Some((x, rope)) = partial_rope(g, n) {
                t.rope = Some(rope);
                cur = x;
                continue;
            }
        }
        match op.op_type.as_str() {
            "Transpose" | "Reshape" | "Unsqueeze" | "Squeeze" | "Expand" | "Cast" | "Identity" | "Tile" => {
                let src = input(n, 0)?;
                if slice.is_some() {
                    // A slice of packed q/k/v columns maps to projection columns only while the
                    // last axis is the projection's own (GPT-NeoX packs per head: [B,T,H,3*hd]).
                    let last = |o: Outlet| g.fact(o).ok().and_then(|f| f.shape.as_ref()?.last()?.as_known());
                    if last(src).is_none() || last(src) != last(cur) {
                        return fail(line!());
                    }
                }
                cur = src
            }
            "Mul" | "Div" => {
                if t.norm.is_some() {
                    // A scale before the norm is normalized away: not the scores' scale.
                    return fail(line!());
                }
                let (a, b) = (input(n, 0)?, input(n, 1)?);
                if let Some(s) = scalar_of(g, b) {
                    t.scale *= if op.op_type == "Mul" { s } else { 1.0 / s };
                    cur = a;
                } else if let (Some(s), "Mul") = (scalar_of(g, a), op.op_type.as_str()) {
                    t.scale *= s;
                    cur = b;
                } else {
                    return fail(line!());
                }
            }
            "Add" => {
                if let Some((x, rope)) = rope_add(g, n) {
                    if t.rope.is_some() {
                        return fail(line!());
                    }
                    t.rope = Some(rope);
                    cur = x;
                    continue;
                }
                let (a, b) = (input(n, 0)?, input(n, 1)?);
                let (main, bias) = if const_of(g, b).is_some() { (a, b) } else { (b, a) };
                let feeds_projection = linear(g, main).is_some()
                    || onnx_producer(g, main, &["Split", "Slice"]).and_then(|(s, _)| linear(g, input(s, 0)?)).is_some();
                if t.proj.bias.is_some() || const_of(g, bias).is_none_or(|c| c.shape().len() != 1) || !feeds_projection {
                    return fail(line!());
                }
                // Walking up, a slice seen before the bias means the bias is on the packed
                // output and must be sliced like the weight.
                t.proj.bias = Some((bias, slice.is_some()));
                cur = main;
            }
            "Concat" => {
                if n.inputs().len() != 2 || t.past.is_some() || t.norm.is_some() {
                    return fail(line!());
                }
                let (a, b) = (input(n, 0)?, input(n, 1)?);
                if !is_graph_input(g, a) {
                    return fail(line!());
                }
                t.past = Some(a);
                t.present = Some(cur);
                cur = b;
            }
            "Slice" | "Split" => {
                if slice.is_some() {
                    return fail(line!());
                }
                slice = Some((cur.node, cur.slot));
                cur = input(n, 0)?;
            }
            "RotaryEmbedding" if op.domain.is_empty() => {
                if t.rope.is_some() {
                    return fail(line!());
                }
                let rot = op.int_or("rotary_embedding_dim", 0);
                t.rope = Some(Rope {
                    cos: input(n, 1)?,
                    sin: input(n, 2)?,
                    positions: input(n, 3),
                    offset_positions: false,
                    style: if op.int_or("interleaved", 0) != 0 { RopeStyle::Interleaved } else { RopeStyle::HalfRotate },
                    rotary_dim: (rot > 0).then_some(rot as usize),
                });
                cur = input(n, 0)?;
            }
            "RotaryEmbedding" if op.domain == "com.microsoft" => {
                // contrib: (input, position_ids, cos_cache, sin_cache); position_ids [B,T]
                // index the caches ([1] offsets are not supported).
                let pos = input(n, 1)?;
                if t.rope.is_some() || g.fact(pos).ok()?.rank() != Some(2) {
                    return fail(line!());
                }
                let rot = op.int_or("rotary_embedding_dim", 0);
                t.rope = Some(Rope {
                    cos: input(n, 2)?,
                    sin: input(n, 3)?,
                    positions: Some(pos),
                    offset_positions: false,
                    style: if op.int_or("interleaved", 0) != 0 { RopeStyle::Interleaved } else { RopeStyle::HalfRotate },
                    rotary_dim: (rot > 0).then_some(rot as usize),
                });
                cur = input(n, 0)?;
            }
            _ => return fail(line!()),
        }
    }
    None
}

/// Everything needed to build the Attention node.
struct Plan {
    name: String,
    spec: AttentionSpec,
    x: Outlet,
    weights: [(Outlet, Option<(usize, usize)>); 3],
    biases: [Option<(Outlet, Option<(usize, usize)>)>; 3],
    wo: Outlet,
    bo: Option<Outlet>,
    rope: Option<Rope>,
    /// q-norm and k-norm weights (qk-norm models).
    qk_norm: [Option<Outlet>; 2],
    past: Option<(Outlet, Outlet)>,
    present: Option<(Outlet, Outlet)>,
    mask: Option<(Outlet, MaskKind)>,
    y: Outlet,
    x_fact: Fact,
}

fn plan(g: &Graph, core: &Core) -> Option<Plan> {
    let tq = trace(g, core.q)?;
    let (tk, tv) = match (core.k, core.v) {
        (Some(k), Some(v)) => (Some(trace(g, k)?), Some(trace(g, v)?)),
        (None, None) => (None, None),
        _ => return None,
    };
    let x = tq.proj.x;
    if tk.as_ref().is_some_and(|t| t.proj.x != x) || tv.as_ref().is_some_and(|t| t.proj.x != x) {
        return fail(line!());
    }
    // Heads and head_dim.
    let out_fact = g.fact(core.out).ok()?;
    let out_shape: Vec<Option<i64>> = out_fact.shape.as_ref()?.iter().map(|d| d.as_known()).collect();
    let (heads, head_dim) = match (core.heads, out_shape.as_slice()) {
        (_, [_, Some(h), _, Some(d)]) => (*h as usize, *d as usize),
        (Some(h), [_, _, Some(hd)]) => (h, *hd as usize / h),
        _ => return None,
    };
    let q_cols = match (&tk, tq.proj.cols) {
        (None, _) => heads * head_dim,
        (_, Some((a, b))) => b - a,
        (_, None) => tq.proj.out_dim,
    };
    if head_dim == 0 || q_cols != heads * head_dim {
        return fail(line!());
    }
    let cols = |t: &Trace| t.proj.cols.map(|(a, b)| b - a).unwrap_or(t.proj.out_dim);
    let (weights, biases, kv_heads, rope, past, present, k_scale) = match (&tk, &tv) {
        (Some(tk), Some(tv)) => {
            let kv = cols(tk) / head_dim;
            if cols(tk) != kv * head_dim || cols(tv) != cols(tk) || core.kv_heads.is_some_and(|h| h != kv) {
                return fail(line!());
            }
            let rope = match (&tq.rope, &tk.rope, &core.rope) {
                (Some(a), Some(b), None) if a.cos == b.cos && a.sin == b.sin && a.style == b.style => Some(a.clone()),
                (None, None, r) => r.clone(),
                _ => return None,
            };
            let past = match (core.past, tk.past, tv.past) {
                (Some(p), None, None) => Some(p),
                (None, Some(k), Some(v)) => Some((k, v)),
                (None, None, None) => None,
                _ => return None,
            };
            let present = match (core.present, tk.present, tv.present) {
                (Some(p), None, None) => Some(p),
                (None, Some(k), Some(v)) => Some((k, v)),
                (None, None, None) => None,
                _ => return None,
            };
            let w = [(tq.proj.w, tq.proj.cols), (tk.proj.w, tk.proj.cols), (tv.proj.w, tv.proj.cols)];
            let bias = |t: &Trace| t.proj.bias.map(|(b, packed)| (b, if packed { t.proj.cols } else { None }));
            let b = [bias(&tq), bias(tk), bias(tv)];
            (w, b, kv, rope, past, present, tk.scale)
        }
        _ => {
            // Packed QKV into GroupQueryAttention: split the projection's columns.
            let kv = core.kv_heads?;
            let (qd, kd) = (heads * head_dim, kv * head_dim);
            if tq.proj.out_dim != qd + 2 * kd || tq.proj.cols.is_some() {
                return fail(line!());
            }
            let ranges = [(0, qd), (qd, qd + kd), (qd + kd, qd + 2 * kd)];
            if tq.norm.is_some() {
                return fail(line!());
            }
            let w = ranges.map(|r| (tq.proj.w, Some(r)));
            let b = ranges.map(|r| tq.proj.bias.map(|(b, _)| (b, Some(r))));
            (w, b, kv, core.rope.clone(), core.past, core.present, 1.0)
        }
    };
    if heads % kv_heads != 0 {
        return fail(line!());
    }
    let base = match (core.op_scale, core.default_scale) {
        (Some(s), _) => s,
        (None, true) => 1.0 / (head_dim as f32).sqrt(),
        (None, false) => 1.0,
    };
    let scale = base * core.path_scale * tq.scale * k_scale;
    // Down to the output projection.
    let mut cur = core.out;
    let (wo, y_mm) = 'down: {
        for _ in 0..6 {
            // Shape nodes only read the shape; the rewrite leaves them dead.
            let consumers: Vec<_> = g
                .consumers(cur)
                .into_iter()
                .filter(|(c, _)| !g.node(*c).is_ok_and(|n| n.op.is("Shape")))
                .collect();
            if consumers.len() != 1 || g.is_graph_output(cur) {
                return fail(line!());
            }
            let (c, slot) = consumers[0];
            let n = g.node(c).ok()?;
            if n.op.is("MatMul") && slot == 0 {
                let (_, wo, inn, _) = linear(g, Outlet::new(c, 0))?;
                if inn != heads * head_dim {
                    return fail(line!());
                }
                break 'down (wo, Outlet::new(c, 0));
            }
            // Where(row_fully_masked, 0, out): zero rows that see no key, as the kernel does.
            let zero_fill = n.op.is("Where") && slot == 2 && input(n, 1).and_then(|z| scalar_of(g, z)) == Some(0.0);
            if !(n.op.is("Transpose") || n.op.is("Reshape") || zero_fill) {
                return fail(line!());
            }
            cur = Outlet::new(c, 0);
        }
        return fail(line!());
    };
    let mut y = y_mm;
    let mut bo = None;
    if let [(c, _)] = g.consumers(y_mm).as_slice() {
        let n = g.node(*c).ok()?;
        if n.op.is("Add") {
            let other = if input(n, 0) == Some(y_mm) { input(n, 1) } else { input(n, 0) };
            if let Some(b) = other.filter(|b| const_of(g, *b).is_some_and(|t| t.shape().len() == 1)) {
                bo = Some(b);
                y = Outlet::new(*c, 0);
            }
        }
    }
    let rotary_dim = rope.as_ref().and_then(|r| r.rotary_dim).unwrap_or(head_dim);
    let (qn, kn) = (tq.norm, tk.as_ref().and_then(|t| t.norm));
    let qk_norm_eps = match (qn, kn) {
        (Some((_, a)), Some((_, b))) if a != b => return fail(line!()),
        (Some((_, e)), _) | (None, Some((_, e))) => Some(e),
        (None, None) => None,
    };
    if tv.as_ref().is_some_and(|t| t.norm.is_some()) {
        return fail(line!());
    }
    Some(Plan {
        name: format!("{}/attention", core.anchor),
        spec: AttentionSpec {
            heads,
            kv_heads,
            head_dim,
            scale,
            rope: rope.as_ref().map(|r| r.style),
            rotary_dim,
            causal: core.causal,
            window: core.window,
            qk_norm_eps,
            softcap: core.softcap,
        },
        x,
        weights,
        biases,
        wo,
        bo,
        rope,
        qk_norm: [qn.map(|n| n.0), kn.map(|n| n.0)],
        past,
        present,
        mask: core.mask,
        y,
        x_fact: g.fact(x).ok()?.clone(),
    })
}

fn build(g: &mut Graph, plan: Plan) -> Result<()> {
    let opset = default_opset(g);
    let roles = ["q", "k", "v"];
    let mut w = Vec::new();
    let mut b = Vec::new();
    for i in 0..3 {
        let (wo, cols) = plan.weights[i];
        w.push(slice_cols(g, wo, cols, &format!("{}.w{}", plan.name, roles[i]))?);
        b.push(match plan.biases[i] {
            Some((bo, cols)) => Some(slice_cols(g, bo, cols, &format!("{}.b{}", plan.name, roles[i]))?),
            None => None,
        });
    }
    let mut p = Patch::new();
    let i64_fact = |n: usize| Fact::known(DType::I64, &[n]);
    let node = |p: &mut Patch, suffix: &str, op: OnnxOp, ins: Vec<PatchOutlet>, fact: Fact| -> PatchOutlet {
        let idx = p.wire(
            format!("{}/{suffix}", plan.name),
            Op::Onnx(op),
            ins.into_iter().map(Some).collect(),
            vec![OutputInfo { name: String::new(), fact }],
        );
        PatchOutlet::New { index: idx, slot: 0 }
    };
    // RoPE tables per position.
    let (mut cos, mut sin) = (None, None);
    if let Some(r) = &plan.rope {
        let positions = if let Some(pos) = r.positions {
            Some(PatchOutlet::Existing(pos))
        } else if r.offset_positions {
            let fact_any = Fact::unknown_rank(DType::I64);
            let seq = node(&mut p, "seq_len", OnnxOp::new("Shape", opset).with_attr("start", jetc_ir::Attr::Int(1)).with_attr("end", jetc_ir::Attr::Int(2)), vec![PatchOutlet::Existing(plan.x)], i64_fact(1));
            let start = match plan.past {
                Some((pk, _)) => node(&mut p, "past_len", OnnxOp::new("Shape", opset).with_attr("start", jetc_ir::Attr::Int(2)).with_attr("end", jetc_ir::Attr::Int(3)), vec![PatchOutlet::Existing(pk)], i64_fact(1)),
                None => {
                    let z = g.add_const(&format!("{}/zero", plan.name), Tensor::from_i64(vec![1], &[0])?)?;
                    PatchOutlet::Existing(z)
                }
            };
            let end = node(&mut p, "end", OnnxOp::new("Add", opset), vec![start, seq], i64_fact(1));
            let scalar_shape = g.add_const(&format!("{}/scalar_shape", plan.name), Tensor::from_i64(vec![0], &[])?)?;
            let one = g.add_const(&format!("{}/one", plan.name), Tensor::scalar_i64(1))?;
            let s0 = node(&mut p, "start_scalar", OnnxOp::new("Reshape", opset), vec![start, PatchOutlet::Existing(scalar_shape)], Fact::known(DType::I64, &[]));
            let s1 = node(&mut p, "end_scalar", OnnxOp::new("Reshape", opset), vec![end, PatchOutlet::Existing(scalar_shape)], Fact::known(DType::I64, &[]));
            Some(node(&mut p, "positions", OnnxOp::new("Range", opset), vec![s0, s1, PatchOutlet::Existing(one)], fact_any))
        } else {
            None
        };
        match positions {
            Some(pos) => {
                let gather = OnnxOp::new("Gather", opset).with_attr("axis", jetc_ir::Attr::Int(0));
                let f = g.fact(r.cos)?.clone();
                cos = Some(node(&mut p, "cos", gather.clone(), vec![PatchOutlet::Existing(r.cos), pos], Fact::unknown_rank(f.dtype)));
                sin = Some(node(&mut p, "sin", gather, vec![PatchOutlet::Existing(r.sin), pos], Fact::unknown_rank(f.dtype)));
            }
            None => {
                cos = Some(PatchOutlet::Existing(r.cos));
                sin = Some(PatchOutlet::Existing(r.sin));
            }
        }
    }
    let mask = match plan.mask {
        Some((m, MaskKind::Drop)) => {
            Some(node(&mut p, "keep_mask", OnnxOp::new("Not", opset), vec![PatchOutlet::Existing(m)], g.fact(m)?.clone()))
        }
        Some((m, MaskKind::Keep | MaskKind::Additive)) => Some(PatchOutlet::Existing(m)),
        None => None,
    };
    let mut inputs: Vec<Option<PatchOutlet>> = vec![None; AttentionSpec::NUM_INPUTS];
    inputs[AttentionSpec::X] = Some(PatchOutlet::Existing(plan.x));
    inputs[AttentionSpec::WQ] = Some(PatchOutlet::Existing(w[0]));
    inputs[AttentionSpec::BQ] = b[0].map(PatchOutlet::Existing);
    inputs[AttentionSpec::WK] = Some(PatchOutlet::Existing(w[1]));
    inputs[AttentionSpec::BK] = b[1].map(PatchOutlet::Existing);
    inputs[AttentionSpec::WV] = Some(PatchOutlet::Existing(w[2]));
    inputs[AttentionSpec::BV] = b[2].map(PatchOutlet::Existing);
    inputs[AttentionSpec::WO] = Some(PatchOutlet::Existing(plan.wo));
    inputs[AttentionSpec::BO] = plan.bo.map(PatchOutlet::Existing);
    inputs[AttentionSpec::COS] = cos;
    inputs[AttentionSpec::SIN] = sin;
    if let Some((pk, pv)) = plan.past {
        inputs[AttentionSpec::PAST_K] = Some(PatchOutlet::Existing(pk));
        inputs[AttentionSpec::PAST_V] = Some(PatchOutlet::Existing(pv));
    }
    inputs[AttentionSpec::MASK] = mask;
    inputs[AttentionSpec::Q_NORM] = plan.qk_norm[0].map(PatchOutlet::Existing);
    inputs[AttentionSpec::K_NORM] = plan.qk_norm[1].map(PatchOutlet::Existing);
    while inputs.last() == Some(&None) {
        inputs.pop();
    }
    let kv_fact = Fact::unknown_rank(plan.x_fact.dtype);
    let outputs = vec![
        OutputInfo { name: String::new(), fact: g.fact(plan.y)?.clone() },
        OutputInfo { name: String::new(), fact: kv_fact.clone() },
        OutputInfo { name: String::new(), fact: kv_fact },
    ];
    let a = p.wire(plan.name.clone(), Op::Attention(plan.spec), inputs, outputs);
    p.shunt(plan.y, PatchOutlet::New { index: a, slot: 0 });
    if let Some((pk, pv)) = plan.present {
        p.shunt(pk, PatchOutlet::New { index: a, slot: 1 });
        p.shunt(pv, PatchOutlet::New { index: a, slot: 2 });
    }
    p.apply(g)
}
