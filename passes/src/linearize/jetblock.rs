//! The JetBlock subgraph (jet-nemotron.md §2), built from a base attention layer.
use jetc_ir::{
    AttentionSpec, DType, Dim, DynamicConvSpec, Fact, Graph, GraphOutput, LinearAttentionSpec, NodeId, Op, Outlet, Tensor,
    UpdateRule,
};

use super::init::{a_log, dt_bias, filled, normal, resize_columns, resize_rows, Rng};
use super::MixerConfig;
use crate::emit::Emit;
use crate::pattern::{const_of, default_opset};

/// Log decays below this are clamped (an overflowing softplus would make -inf - -inf later).
const LOG_DECAY_FLOOR: f32 = -88.0;
const INIT_STD: f64 = 0.02;

/// Resolved JetBlock sizes.
#[derive(Clone, Copy, Debug)]
pub struct JetDims {
    pub hidden: usize,
    pub heads: usize,
    pub dk: usize,
    pub dv: usize,
    pub conv: usize,
    pub generator: usize,
}

pub fn resolve(cfg: &MixerConfig, base: &AttentionSpec, hidden: usize) -> Result<JetDims, String> {
    let heads = cfg.heads.unwrap_or(base.heads);
    let dk = cfg.dk.unwrap_or((base.head_dim * 3 / 4).max(1));
    let dv = cfg.dv.unwrap_or(base.head_dim * 2);
    if heads == 0 || dk == 0 || dv == 0 || cfg.conv == 0 || cfg.reduction == 0 {
        return Err(format!("heads {heads}, d_k {dk}, d_v {dv}, conv {} and reduction {} must all be positive", cfg.conv, cfg.reduction));
    }
    if (heads * dv) % cfg.reduction != 0 {
        return Err(format!("heads x d_v = {} is not divisible by the generator reduction {}", heads * dv, cfg.reduction));
    }
    Ok(JetDims { hidden, heads, dk, dv, conv: cfg.conv, generator: heads * dv / cfg.reduction })
}

fn weight_of(g: &Graph, node: &jetc_ir::Node, slot: usize, what: &str) -> Result<Tensor, String> {
    let o = node.input(slot).map_err(|e| e.to_string())?;
    let t = const_of(g, o).ok_or_else(|| format!("attention `{}`: {what} is not a constant weight", node.name))?;
    if t.shape().len() != 2 {
        return Err(format!("attention `{}`: {what} is not 2-D", node.name));
    }
    Ok(t.clone())
}

/// A JetBlock built beside an attention layer: its output, its new caches, and (when the
/// layer had a KV cache) the cache inputs it replaces.
pub struct Built {
    pub y: Outlet,
    pub conv_present: Outlet,
    pub state_present: Outlet,
    pub caches: Option<(Outlet, Outlet, Outlet, Outlet)>,
}

/// Replaces attention node `id` (layer `l`) by a JetBlock.
pub fn replace(g: &mut Graph, id: NodeId, l: usize, cfg: &MixerConfig, seed: u64) -> Result<(), String> {
    let b = build(g, id, l, cfg, seed, true)?;
    rewire(g, id, l, b)
}

/// Builds the JetBlock of attention node `id` from the same input, without rewiring
/// anything. With `with_caches`, a layer that has a KV cache gets conv/state cache inputs.
pub fn build(g: &mut Graph, id: NodeId, l: usize, cfg: &MixerConfig, seed: u64, with_caches: bool) -> Result<Built, String> {
    let node = g.node(id).map_err(|e| e.to_string())?.clone();
    let Op::Attention(base) = &node.op else { return Err(format!("node `{}` is not attention", node.name)) };
    let (wq, wk, wv, wo) = (
        weight_of(g, &node, AttentionSpec::WQ, "Wq")?,
        weight_of(g, &node, AttentionSpec::WK, "Wk")?,
        weight_of(g, &node, AttentionSpec::WV, "Wv")?,
        weight_of(g, &node, AttentionSpec::WO, "Wo")?,
    );
    let x = node.input(AttentionSpec::X).map_err(|e| e.to_string())?;
    let d = resolve(cfg, base, wq.shape()[0])?;
    let (h, dk, dv, w) = (d.heads, d.dk, d.dv, d.conv);
    let (hd, hq, hkv) = (base.head_dim, base.heads, base.kv_heads);
    let layer_seed = seed ^ ((l as u64 + 1) << 32);
    let rng = |name: &str| Rng::new(layer_seed, name);
    let mut fill_rng = rng("resize");
    let mut fill = || fill_rng.normal(INIT_STD);

    let t = |r: jetc_ir::Result<Tensor>| r.map_err(|e| e.to_string());
    let q_w = t(resize_columns(&wq, hq, hd, h, dk, &mut fill))?;
    let k_w = t(resize_columns(&wk, hkv, hd, h, dk, &mut fill))?;
    let v_w = t(resize_columns(&wv, hkv, hd, h, dv, &mut fill))?;
    let o_w = t(resize_rows(&wo, hq, hd, h, dv))?;

    let opset = default_opset(g);
    let mut e = Emit { g, prefix: format!("layers.{l}.jet."), opset };
    let hidden = d.hidden;
    let q_w = e.weight("q_proj.weight", q_w)?;
    let k_w = e.weight("k_proj.weight", k_w)?;
    let v_w = e.weight("v_proj.weight", v_w)?;
    let o_w = e.weight("o_proj.weight", o_w)?;
    let w1 = e.weight("dynamic_conv1d.kernel_generator.w1.weight", t(filled(vec![hidden, d.generator], 0.0))?)?;
    let w2 = e.weight("dynamic_conv1d.kernel_generator.w2.weight", t(filled(vec![d.generator, h * dv * w], 0.0))?)?;
    let b2 = e.weight("dynamic_conv1d.kernel_generator.w2.bias", t(normal(vec![h * dv * w], INIT_STD, &mut rng("b2")))?)?;
    let wa = e.weight("a_proj.weight", t(normal(vec![hidden, h], INIT_STD, &mut rng("a_proj")))?)?;
    let wb = e.weight("b_proj.weight", t(normal(vec![hidden, h], INIT_STD, &mut rng("b_proj")))?)?;
    let alog = e.weight("A_log", t(a_log(h, &mut rng("A_log")))?)?;
    let dtb = e.weight("dt_bias", t(dt_bias(h, &mut rng("dt_bias")))?)?;
    let wg = e.weight("g_proj.weight", t(normal(vec![hidden, h * dv], INIT_STD, &mut rng("g_proj")))?)?;
    let onorm = e.weight("o_norm.weight", t(filled(vec![dv], 1.0))?)?;
    let floor = e.weight("log_decay_floor", Tensor::scalar_f32(LOG_DECAY_FLOOR))?;

    // Caches: only when the base layer had a KV cache as graph inputs.
    let past_k = node.inputs().get(AttentionSpec::PAST_K).copied().flatten();
    let past_v = node.inputs().get(AttentionSpec::PAST_V).copied().flatten();
    let batch = e.g.fact(x).ok().and_then(|f| f.shape.as_ref().map(|s| s[0].clone())).unwrap_or_else(|| Dim::sym("batch"));
    let caches = match (past_k, past_v) {
        (Some(pk), Some(pv)) if with_caches && [pk, pv].iter().all(|o| matches!(e.g.node(o.node).map(|n| &n.op), Ok(Op::Input))) => {
            let known = |v: usize| Dim::known(v as i64);
            let conv = e.g.add_input(&format!("past_conv.{l}"), Fact::new(DType::F32, vec![batch.clone(), known(h * dv), known(w)]));
            let state = e.g.add_input(&format!("past_state.{l}"), Fact::new(DType::F32, vec![batch, known(h), known(dk), known(dv)]));
            Some((Outlet::new(conv.map_err(|e| e.to_string())?, 0), Outlet::new(state.map_err(|e| e.to_string())?, 0), pk, pv))
        }
        _ => None,
    };

    let q = e.onnx("q_proj", "MatMul", &[x, q_w], &[])?;
    let q = e.silu("q", q)?;
    let q = e.node("q_norm", Op::L2Norm { heads: h, eps: 1e-6 }, &[Some(q)], 1)?[0];
    let k = e.onnx("k_proj", "MatMul", &[x, k_w], &[])?;
    let k = e.silu("k", k)?;
    let k = e.node("k_norm", Op::L2Norm { heads: h, eps: 1e-6 }, &[Some(k)], 1)?[0];
    let u = e.onnx("v_proj", "MatMul", &[x, v_w], &[])?;
    let hg = e.onnx("kernel_generator/w1", "MatMul", &[x, w1], &[])?;
    let hg = e.silu("kernel_generator", hg)?;
    let ker = e.onnx("kernel_generator/w2", "MatMul", &[hg, w2], &[])?;
    let ker = e.onnx("kernel_generator/b2", "Add", &[ker, b2], &[])?;
    let conv = e.node("dynamic_conv", Op::DynamicConv(DynamicConvSpec { width: w }), &[Some(u), Some(ker), caches.map(|c| c.0)], 2)?;
    let bp = e.onnx("b_proj", "MatMul", &[x, wb], &[])?;
    let beta = e.onnx("beta", "Sigmoid", &[bp], &[])?;
    let ap = e.onnx("a_proj", "MatMul", &[x, wa], &[])?;
    let ap = e.onnx("a_plus_dt_bias", "Add", &[ap, dtb], &[])?;
    let sp = e.onnx("softplus", "Softplus", &[ap], &[])?;
    let ea = e.onnx("A", "Exp", &[alog], &[])?;
    let na = e.onnx("minus_A", "Neg", &[ea], &[])?;
    let gate = e.onnx("log_decay", "Mul", &[sp, na], &[])?;
    let gate = e.onnx("log_decay_floored", "Max", &[gate, floor], &[])?;
    let spec = LinearAttentionSpec {
        rule: UpdateRule::GatedDelta,
        q_heads: h,
        kv_heads: h,
        dk,
        dv,
        scale: 1.0 / (dk as f32).sqrt(),
        chunk: 64,
    };
    let la = e.node(
        "gated_delta_rule",
        Op::LinearAttention(spec),
        &[Some(q), Some(k), Some(conv[0]), caches.map(|c| c.1), Some(gate), Some(beta)],
        2,
    )?;
    let gp = e.onnx("g_proj", "MatMul", &[x, wg], &[])?;
    let o = e.node("o_norm", Op::GatedRmsNorm { heads: h, eps: 1e-5 }, &[Some(la[0]), Some(onorm), Some(gp)], 1)?[0];
    let y = e.onnx("o_proj", "MatMul", &[o, o_w], &[])?;

    Ok(Built { y, conv_present: conv[1], state_present: la[1], caches })
}

/// Puts a built JetBlock in place of attention node `id`: its output, then its caches in
/// place of the KV cache.
fn rewire(g: &mut Graph, id: NodeId, l: usize, b: Built) -> Result<(), String> {
    let (y, caches, conv_present, state_present) = (b.y, b.caches, b.conv_present, b.state_present);
    g.replace_uses(Outlet::new(id, 0), y).map_err(|e| e.to_string())?;
    let mut outputs = Vec::with_capacity(g.outputs.len());
    for go in std::mem::take(&mut g.outputs) {
        match (go.outlet == Outlet::new(id, 1), go.outlet == Outlet::new(id, 2), &caches) {
            (true, _, Some(_)) => outputs.push(GraphOutput { name: format!("present_conv.{l}"), outlet: conv_present }),
            (_, true, Some(_)) => outputs.push(GraphOutput { name: format!("present_state.{l}"), outlet: state_present }),
            (true, _, None) | (_, true, None) => {}
            _ => outputs.push(go),
        }
    }
    g.outputs = outputs;
    g.prune_dead().map_err(|e| e.to_string())?;
    if let Some((_, _, pk, pv)) = caches {
        for o in [pk, pv] {
            if g.contains(o.node) {
                redirect_shape_reads(g, o)?;
            }
            if g.contains(o.node) && g.consumers(o).is_empty() {
                g.remove_node(o.node).map_err(|e| e.to_string())?;
            }
        }
    }
    Ok(())
}

/// The removed KV-cache input may still be read for its shape (the causal mask of the other
/// layers needs the past length): point those `Shape` reads at another input with the same
/// shape, so the converted model does not ask for a cache it no longer has.
fn redirect_shape_reads(g: &mut Graph, old: Outlet) -> Result<(), String> {
    let fact = g.fact(old).map_err(|e| e.to_string())?.clone();
    let Some(other) = g
        .inputs
        .iter()
        .map(|&i| Outlet::new(i, 0))
        .find(|&o| o != old && g.fact(o).is_ok_and(|f| *f == fact) && g.value_name(o).starts_with("past_key_values"))
    else {
        return Ok(());
    };
    for (consumer, slot) in g.consumers(old) {
        if g.node(consumer).is_ok_and(|n| n.op.is("Shape")) {
            g.set_input(consumer, slot, Some(other)).map_err(|e| e.to_string())?;
        }
    }
    Ok(())
}
