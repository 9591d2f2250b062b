//! Export of a (converted) decoder in the Jet-Nemotron Hugging Face layout: `config.json`
//! in the reference's schema and `model.safetensors` with the reference's parameter names
//! (jet-nemotron.md §5), so PyTorch, SGLang and multi-GPU trainers can take over.
//!
//! The decoder structure is read from the raised IR, never from value names of the source
//! model: layer l's mixer is the l-th `Attention`/`LinearAttention` node; its input norm is the
//! `RmsNorm` producing the mixer's input; the post-attention norm is the `RmsNorm` feeding the
//! `SwiGlu` of the same layer; the final norm feeds the LM head `MatMul`. JetBlock weights are
//! the constants `linearize` created (named `layers.{l}.jet.<reference name>`). Linear weights
//! are stored [out, in] as PyTorch does (the IR keeps [in, out]). The reference has no other
//! linear layer type, so a model with another linear block (Gated DeltaNet, DeltaNet, RetNet)
//! is refused before anything is written.
use std::collections::BTreeMap;
use std::path::Path;

use jetc_ir::{AttentionSpec, Graph, NodeId, Op, Outlet, Tensor};
use jetc_passes::summary::summarize;
use serde_json::json;

use crate::safetensors_out::Entry;

#[derive(Debug, thiserror::Error)]
#[error("jet-hf export: {0}")]
pub struct JetHfError(pub String);

type R<T> = std::result::Result<T, JetHfError>;

fn err(msg: impl Into<String>) -> JetHfError {
    JetHfError(msg.into())
}

/// Values `config.json` needs that the graph does not carry.
#[derive(Clone, Debug)]
pub struct HfOptions {
    pub max_position_embeddings: usize,
    pub bos_token_id: Option<i64>,
    pub eos_token_id: Option<i64>,
    /// Used when the RoPE base cannot be read off the graph's inv_freq constant.
    pub rope_theta: Option<f64>,
}

impl Default for HfOptions {
    fn default() -> HfOptions {
        HfOptions { max_position_embeddings: 32768, bos_token_id: None, eos_token_id: None, rope_theta: None }
    }
}

fn konst(g: &Graph, o: Outlet) -> Option<&Tensor> {
    match &g.node(o.node).ok()?.op {
        Op::Const(t) => Some(t),
        _ => None,
    }
}

/// The safetensors entries, by reference name: weights are written (as f32, linear ones
/// transposed to [out, in]) only when the file is streamed out.
struct Params(BTreeMap<String, Entry>);

impl Params {
    fn put(&mut self, name: String, t: &Tensor, transpose: bool) -> R<()> {
        if transpose && t.shape().len() != 2 {
            return Err(err(format!("{name}: expected a 2-D weight, got {:?}", t.shape())));
        }
        self.0.insert(name, Entry { source: t.clone(), transpose });
        Ok(())
    }
    fn linear(&mut self, name: String, g: &Graph, o: Option<Outlet>) -> R<()> {
        let t = o.and_then(|o| konst(g, o)).ok_or_else(|| err(format!("{name}: weight is not a constant")))?;
        self.put(name, t, true)
    }
    fn vector(&mut self, name: String, g: &Graph, o: Option<Outlet>) -> R<()> {
        let t = o.and_then(|o| konst(g, o)).ok_or_else(|| err(format!("{name}: not a constant")))?;
        self.put(name, t, false)
    }
}

/// The RmsNorm producing `o` (its weight and eps).
fn norm_of(g: &Graph, o: Outlet) -> Option<(Outlet, f32)> {
    let n = g.node(o.node).ok()?;
    match &n.op {
        Op::RmsNorm(s) => Some((n.inputs().get(1).copied().flatten()?, s.eps)),
        _ => None,
    }
}

/// RoPE base from an inv_freq constant upstream of the cos table: inv_freq[1] = theta^(-2/d).
fn rope_theta(g: &Graph, cos: Outlet, rotary_dim: usize) -> Option<f64> {
    let mut stack = vec![cos.node];
    let mut seen = std::collections::HashSet::new();
    while let Some(id) = stack.pop() {
        if !seen.insert(id) || seen.len() > 64 {
            continue;
        }
        let n = g.node(id).ok()?;
        if let Op::Const(t) = &n.op {
            let v = t.to_f32_vec();
            if t.dtype().is_float() && v.len() == rotary_dim / 2 && v.len() > 1 && (v[0] - 1.0).abs() < 1e-6 {
                // ln(theta) = -d / (2i) * ln(inv_freq[i]); the last element is the least
                // sensitive to the constant's f32 rounding.
                let i = v.len() - 1;
                return Some(((v[i] as f64).ln() * -(rotary_dim as f64) / (2.0 * i as f64)).exp());
            }
            continue;
        }
        stack.extend(n.inputs().iter().flatten().map(|o| o.node));
    }
    None
}

/// Writes `config.json` and `model.safetensors` into `dir`.
pub fn export_jet_hf(g: &Graph, dir: &Path, opts: &HfOptions) -> R<()> {
    let summary = summarize(g).map_err(err)?;
    let order = g.topo_order().map_err(|e| err(e.to_string()))?;
    let mixers: Vec<NodeId> = order
        .iter()
        .copied()
        .filter(|&id| matches!(g.node(id).map(|n| &n.op), Ok(Op::Attention(_) | Op::LinearAttention(_))))
        .collect();
    let mut p = Params(BTreeMap::new());
    let mut layer_types = Vec::new();
    let (mut eps, mut theta, mut swa_window, mut jet_cfg) = (None, opts.rope_theta, None, None);
    // Embedding and LM head.
    let mut embed = None;
    for &id in &order {
        if let Ok(n) = g.node(id) {
            if matches!(n.op, Op::Embedding) {
                embed = n.inputs().first().copied().flatten();
            }
        }
    }
    let embed = embed.ok_or_else(|| err("no token embedding found"))?;
    p.vector("model.embed_tokens.weight".into(), g, Some(embed))?;
    let swiglus: Vec<NodeId> = order.iter().copied().filter(|&id| matches!(g.node(id).map(|n| &n.op), Ok(Op::SwiGlu))).collect();
    if swiglus.len() != mixers.len() {
        return Err(err(format!("{} mixers but {} SwiGLU MLPs: not a Llama/Qwen-style decoder", mixers.len(), swiglus.len())));
    }
    for (l, (&mid, &mlp)) in mixers.iter().zip(&swiglus).enumerate() {
        let pre = format!("model.layers.{l}.");
        let node = g.node(mid).map_err(|e| err(e.to_string()))?;
        let x = node.input(0).map_err(|e| err(e.to_string()))?;
        if matches!(node.op, Op::LinearAttention(_)) {
            let kind = summary.mixers.get(l).map_or("unknown", |m| m.kind);
            if kind != "jet" {
                return Err(err(format!(
                    "layer {l} is a `{kind}` linear mixer, not a JetBlock: the Jet-Nemotron layout has only attn, swa \
                     and jet layers (export this model as ONNX instead)"
                )));
            }
        }
        let (in_norm, e1) = match &node.op {
            // JetBlock: x feeds the projections, trace back from q's MatMul.
            Op::LinearAttention(_) => jet_input_norm(g, node).ok_or_else(|| err(format!("layer {l}: JetBlock input norm not found")))?,
            _ => norm_of(g, x).ok_or_else(|| err(format!("layer {l}: input RMSNorm not found")))?,
        };
        eps.get_or_insert(e1);
        p.vector(format!("{pre}input_layernorm.weight"), g, Some(in_norm))?;
        let mlp_node = g.node(mlp).map_err(|e| err(e.to_string()))?;
        let (post_norm, _) = norm_of(g, mlp_node.input(0).map_err(|e| err(e.to_string()))?)
            .ok_or_else(|| err(format!("layer {l}: post-attention RMSNorm not found")))?;
        p.vector(format!("{pre}post_attention_layernorm.weight"), g, Some(post_norm))?;
        for (name, slot) in [("gate_proj", 1), ("up_proj", 2), ("down_proj", 3)] {
            p.linear(format!("{pre}mlp.{name}.weight"), g, mlp_node.inputs().get(slot).copied().flatten())?;
        }
        match &node.op {
            Op::Attention(spec) => {
                if spec.qk_norm_eps.is_some() {
                    return Err(err(format!(
                        "layer {l}: attention with q/k norms (Qwen3/OLMo2 style) has no place in the Jet-Nemotron \
                         layout (Qwen2.5's); export ONNX (--format onnx)"
                    )));
                }
                layer_types.push(if spec.window.is_some() { "swa" } else { "attn" });
                if let Some(w) = spec.window {
                    swa_window.get_or_insert(w);
                }
                let input = |s: usize| node.inputs().get(s).copied().flatten();
                for (name, w, b) in [
                    ("q_proj", AttentionSpec::WQ, AttentionSpec::BQ),
                    ("k_proj", AttentionSpec::WK, AttentionSpec::BK),
                    ("v_proj", AttentionSpec::WV, AttentionSpec::BV),
                    ("o_proj", AttentionSpec::WO, AttentionSpec::BO),
                ] {
                    p.linear(format!("{pre}self_attn.{name}.weight"), g, input(w))?;
                    if input(b).is_some() {
                        p.vector(format!("{pre}self_attn.{name}.bias"), g, input(b))?;
                    }
                }
                if theta.is_none() {
                    theta = input(AttentionSpec::COS).and_then(|c| rope_theta(g, c, spec.rotary_dim));
                }
            }
            Op::LinearAttention(spec) => {
                layer_types.push("jet");
                let prefix = format!("layers.{l}.jet.");
                let mut found = 0;
                for &id in &order {
                    let Ok(n) = g.node(id) else { continue };
                    let (Op::Const(t), Some(rest)) = (&n.op, n.name.strip_prefix(&prefix)) else { continue };
                    if rest == "log_decay_floor" {
                        continue;
                    }
                    let name = format!("{pre}self_attn.{rest}");
                    let is_linear = t.shape().len() == 2 && rest.ends_with(".weight");
                    p.put(name, t, is_linear)?;
                    found += 1;
                }
                if found < 13 {
                    return Err(err(format!("layer {l}: JetBlock weights incomplete ({found} of 13 found)")));
                }
                let w = conv_width(g, node).unwrap_or(4);
                let gen = p.0.get(&format!("{pre}self_attn.dynamic_conv1d.kernel_generator.w1.weight")).map(|e| e.source.shape()[1]).unwrap_or(1);
                jet_cfg.get_or_insert(json!({
                    "num_heads": spec.q_heads,
                    "head_dim": spec.dk,
                    "expand_v": spec.dv as f64 / spec.dk as f64,
                    "conv_size": w,
                    "dconv_generator_reduction": (spec.q_heads * spec.dv) / gen.max(1),
                    "norm_eps": "1e-5",
                    "mode": "chunk",
                    "dconv_implementation": "triton",
                }));
            }
            _ => {}
        }
    }
    // Final norm and LM head.
    let head = order.iter().rev().find_map(|&id| {
        let n = g.node(id).ok()?;
        (n.op.is("MatMul") && g.is_graph_output(Outlet::new(id, 0))).then_some(n)
    });
    let head = head.ok_or_else(|| err("no LM head (a MatMul producing a graph output) found"))?;
    let (final_norm, _) = norm_of(g, head.input(0).map_err(|e| err(e.to_string()))?).ok_or_else(|| err("final RMSNorm not found"))?;
    p.vector("model.norm.weight".into(), g, Some(final_norm))?;
    if !summary.tied_embeddings {
        p.linear("lm_head.weight".into(), g, head.inputs().get(1).copied().flatten())?;
    }
    let mut efficient = serde_json::Map::new();
    if let Some(j) = jet_cfg {
        efficient.insert("jet".into(), j);
    }
    if let Some(w) = swa_window {
        efficient.insert("swa".into(), json!({ "window_size": w }));
    }
    let attn = summary.mixers.iter().find(|m| m.kind == "attention" || m.kind == "swa");
    // f32 values shown as the decimals they were written from (1e-6, not 9.99e-7).
    let clean = |v: f64| format!("{:.5e}", v).parse::<f64>().unwrap_or(v);
    let eps = eps.map(|e| format!("{e}").parse::<f64>().unwrap_or(e as f64));
    let theta = theta.map(clean);
    let config = json!({
        "architectures": ["JetNemotronForCausalLM"],
        "model_type": "jet_nemotron",
        "hidden_size": summary.hidden,
        "intermediate_size": summary.intermediate,
        "num_hidden_layers": summary.layers,
        "num_attention_heads": attn.map(|m| m.heads),
        "num_key_value_heads": attn.map(|m| m.kv_heads),
        "head_dim": attn.map(|m| m.head_dim),
        "rms_norm_eps": eps,
        "rope_theta": theta,
        "rope_scaling": null,
        "max_position_embeddings": opts.max_position_embeddings,
        "tie_word_embeddings": summary.tied_embeddings,
        "vocab_size": summary.vocab,
        "bos_token_id": opts.bos_token_id,
        "eos_token_id": opts.eos_token_id,
        "hidden_act": "silu",
        "torch_dtype": "float32",
        "layer_types": layer_types,
        "efficient_attention_config": efficient,
    });
    std::fs::create_dir_all(dir).map_err(|e| err(format!("{}: {e}", dir.display())))?;
    let text = serde_json::to_string_pretty(&config).map_err(|e| err(e.to_string()))?;
    std::fs::write(dir.join("config.json"), text).map_err(|e| err(format!("{}: {e}", dir.display())))?;
    crate::safetensors_out::write(&dir.join("model.safetensors"), &p.0).map_err(err)?;
    Ok(())
}

/// A JetBlock's input RMSNorm: the norm feeding the MatMul that produces its q.
fn jet_input_norm(g: &Graph, la: &jetc_ir::Node) -> Option<(Outlet, f32)> {
    let mut cur = la.inputs().first().copied().flatten()?;
    for _ in 0..8 {
        let n = g.node(cur.node).ok()?;
        if n.op.is("MatMul") {
            return norm_of(g, n.inputs().first().copied().flatten()?);
        }
        cur = n.inputs().first().copied().flatten()?;
    }
    None
}

fn conv_width(g: &Graph, la: &jetc_ir::Node) -> Option<usize> {
    let v = la.inputs().get(2).copied().flatten()?;
    match &g.node(v.node).ok()?.op {
        Op::DynamicConv(c) => Some(c.width),
        _ => None,
    }
}
