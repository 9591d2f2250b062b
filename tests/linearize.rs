//! The `linearize` pass (JetBlock, Gated DeltaNet, DeltaNet, RetNet) on real fixtures: the
//! converted model runs, decoding token by token with the recurrent caches fed back equals
//! one prefill pass, and bad requests are refused with the reason.
mod common;

use std::collections::HashMap;

use common::*;
use jetc::passes::linearize::{Block, Linearize, MixerConfig};
use jetc::passes::PassManager;
use jetc::pipeline::load_raised;
use jetc::runtime::{Session, Value};
use ndarray::{s, ArrayD, Axis, IxDyn};

fn converted(fixture: &str, layers: Vec<usize>, config: MixerConfig) -> jetc::ir::Graph {
    converted_to(fixture, Block::JetBlock, layers, config)
}

fn converted_to(fixture: &str, block: Block, layers: Vec<usize>, config: MixerConfig) -> jetc::ir::Graph {
    let mut g = load_raised(&fixtures_dir().join(fixture).join("model.onnx")).expect("load");
    PassManager::new()
        .add(Box::new(Linearize { block, layers, config, seed: 0 }))
        .run(&mut g)
        .expect("linearize");
    g
}

fn zeros_for(g: &jetc::ir::Graph, name: &str, batch: usize) -> Value {
    let id = g.input_by_name(name).expect("input");
    let f = g.fact(jetc::ir::Outlet::new(id, 0)).expect("fact");
    let dims: Vec<usize> = f.shape.as_ref().expect("shape").iter().map(|d| d.as_known().map_or(batch, |v| v as usize)).collect();
    Value::f32(ArrayD::zeros(IxDyn(&dims)))
}

/// Layer 0 converted to `block`, layer 1 full attention (both kinds of cache at once): the
/// cache inputs are exactly `past_{c}.0` for the block's caches `c` (and outputs
/// `present_{c}.0`), the graph holds `ops`, and decoding token by token with every cache fed
/// back equals one prefill pass, final recurrent state included. Short-conv kernels are
/// randomized first (the identity at init would hide a wrong conv cache).
fn decode_equals_prefill(block: Block, caches: &[&str], ops: &[&str]) {
    // Every fixture with a KV cache (every exporter family).
    let fixtures: Vec<String> = fixture_names()
        .into_iter()
        .filter(|f| cases(f).iter().any(|c| c.0 == "past0" && c.1.keys().any(|k| k.contains("past"))))
        .collect();
    assert!(fixtures.len() >= 15, "{fixtures:?}");
    for fixture in &fixtures {
        let fixture = fixture.as_str();
        let mut g = converted_to(fixture, block, vec![0], MixerConfig::default());
        let convs = perturb_short_convs(&mut g, 7);
        assert_eq!(convs, caches.iter().filter(|c| c.starts_with("conv_")).count(), "{block:?}: short convs");
        let text = jetc::ir::print::print_graph(&g).expect("print");
        for op in ops.iter().chain(&["LinearAttention(", "Attention("]) {
            assert!(text.contains(op), "{block:?} {fixture}: no {op}");
        }
        let names = |v: Vec<String>, prefix: &str| -> Vec<String> {
            let mut v: Vec<String> = v.into_iter().filter(|n| n.starts_with(prefix) && !n.contains("key_values")).collect();
            v.sort();
            v
        };
        let mut want: Vec<String> = caches.iter().map(|c| format!("{c}.0")).collect();
        want.sort();
        let inputs_named = names(g.inputs.iter().map(|&id| g.value_name(jetc::ir::Outlet::new(id, 0)).to_string()).collect(), "past_");
        let outputs_named = names(g.outputs.iter().map(|o| o.name.clone()).collect(), "present_");
        assert_eq!(inputs_named, want.iter().map(|c| format!("past_{c}")).collect::<Vec<_>>(), "{block:?} cache inputs");
        assert_eq!(outputs_named, want.iter().map(|c| format!("present_{c}")).collect::<Vec<_>>(), "{block:?} cache outputs");

        let session = Session::new(&g).expect("session");
        let (_, mut inputs, _) = cases(fixture).into_iter().find(|c| c.0 == "past0").expect("past0");
        let b = inputs["input_ids"].shape()[0];
        for name in &inputs_named {
            inputs.insert(name.clone(), zeros_for(&g, name, b));
        }
        let graph_inputs: Vec<String> = g.inputs.iter().map(|&id| g.value_name(jetc::ir::Outlet::new(id, 0)).to_string()).collect();
        inputs.retain(|k, _| graph_inputs.contains(k));
        let full: HashMap<String, Value> = session.run(inputs.clone()).expect("prefill").into_iter().collect();
        let logits = full["logits"].as_f32().expect("logits").clone();
        let caches = decode_token_by_token(&format!("{block:?} {fixture}"), &session, &g, &inputs, &logits);
        // The final caches of the one-pass prefill equal the decoded ones.
        for c in caches_of(&inputs_named) {
            let e = rel_err(&c, &caches[&format!("past_{c}")], &full[&format!("present_{c}")]);
            assert!(e < 1e-4, "{block:?} {fixture}: {c} rel err {e}");
        }
    }
}

/// Decodes `inputs` token by token with every cache fed back (KV caches by [`kv_pairs`],
/// recurrent ones `present_{c}` -> `past_{c}`) and checks each step's logits against the
/// one-pass prefill's `logits` (rel err < 1e-4); returns the final caches.
fn decode_token_by_token(label: &str, session: &Session, g: &jetc::ir::Graph, inputs: &HashMap<String, Value>, logits: &ArrayD<f32>) -> HashMap<String, Value> {
    let graph_inputs: Vec<String> = g.inputs.iter().map(|&id| g.value_name(jetc::ir::Outlet::new(id, 0)).to_string()).collect();
    let kv = kv_pairs(g);
    let b = inputs["input_ids"].shape()[0];
    let mut caches: HashMap<String, Value> = inputs
        .iter()
        .filter(|(k, _)| !["input_ids", "position_ids", "attention_mask"].contains(&k.as_str()))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    for step in 0..logits.shape()[1] {
        let mut feed = caches.clone();
        for name in ["input_ids", "position_ids"] {
            if let Some(v) = inputs.get(name) {
                feed.insert(name.into(), Value::i64(v.as_i64().expect("ids").slice(s![.., step..step + 1]).to_owned().into_dyn()));
            }
        }
        if graph_inputs.iter().any(|n| n == "attention_mask") {
            feed.insert("attention_mask".into(), Value::i64(ArrayD::ones(IxDyn(&[b, step + 1]))));
        }
        let out: HashMap<String, Value> = session.run(feed).unwrap_or_else(|e| panic!("{label} step {step}: {e}")).into_iter().collect();
        let want = logits.index_axis(Axis(1), step).to_owned().insert_axis(Axis(1)).into_dyn();
        let e = rel_err(&format!("{label} step {step}"), &out["logits"], &Value::f32(want));
        assert!(e < 1e-4, "{label} step {step}: rel err {e}");
        for (k, v) in out {
            if let Some(past) = kv.get(&k) {
                caches.insert(past.clone(), v);
            } else if let Some(rest) = k.strip_prefix("present_") {
                caches.insert(format!("past_{rest}"), v);
            }
        }
    }
    caches
}

/// Present KV output name -> past KV input name, for every attention layer (exporters name
/// them differently).
fn kv_pairs(g: &jetc::ir::Graph) -> HashMap<String, String> {
    let mut out = HashMap::new();
    for id in g.node_ids() {
        let Ok(n) = g.node(id) else { continue };
        if !matches!(n.op, jetc::ir::Op::Attention(_)) {
            continue;
        }
        for (slot, past_slot) in [(1, jetc::ir::AttentionSpec::PAST_K), (2, jetc::ir::AttentionSpec::PAST_V)] {
            let Some(past) = n.inputs().get(past_slot).copied().flatten() else { continue };
            let present = jetc::ir::Outlet::new(id, slot);
            if let Some(o) = g.outputs.iter().find(|o| o.outlet == present) {
                out.insert(o.name.clone(), g.value_name(past).to_string());
            }
        }
    }
    out
}

fn caches_of(inputs: &[String]) -> Vec<String> {
    inputs.iter().filter_map(|n| n.strip_prefix("past_").map(String::from)).collect()
}

#[test]
fn jetblock_decode_equals_prefill() {
    decode_equals_prefill(Block::JetBlock, &["conv", "state"], &["DynamicConv("]);
}

#[test]
fn gated_deltanet_decode_equals_prefill() {
    decode_equals_prefill(Block::GatedDeltaNet, &["conv_q", "conv_k", "conv_v", "state"], &["DynamicConv(", "L2Norm(", "Softplus"]);
}

#[test]
fn deltanet_decode_equals_prefill() {
    decode_equals_prefill(Block::DeltaNet, &["conv_q", "conv_k", "conv_v", "state"], &["DynamicConv(", "L2Norm("]);
}

#[test]
fn retnet_decode_equals_prefill() {
    decode_equals_prefill(Block::RetNet, &["state"], &["GatedRmsNorm("]);
}

#[test]
fn gla_decode_equals_prefill() {
    decode_equals_prefill(Block::Gla, &["state"], &["gated_vector", "Softplus"]);
}

#[test]
fn mamba2_decode_equals_prefill() {
    decode_equals_prefill(Block::Mamba2, &["conv_x", "conv_b", "conv_c", "state"], &["DynamicConv(", "RmsNorm("]);
}

#[test]
fn rwkv7_decode_equals_prefill() {
    decode_equals_prefill(Block::Rwkv7, &["shift", "state"], &["dplr", "LayerNormalization", "L2Norm("]);
}

#[test]
fn custom_dims_and_bad_requests() {
    let g = converted("qwen2-dynamo-opset20-eager-nokv", vec![0, 1], MixerConfig { heads: Some(2), dk: Some(8), dv: Some(24), ..Default::default() });
    let session = Session::new(&g).expect("session");
    let (_, inputs, _) = cases("qwen2-dynamo-opset20-eager-nokv").remove(0);
    let out = session.run(inputs).expect("run");
    assert!(out[0].1.as_f32().expect("logits").iter().all(|v| v.is_finite()));

    let mut g = load_raised(&fixtures_dir().join("qwen2-dynamo-opset20-sdpa-kv/model.onnx")).expect("load");
    let bad = |layers: Vec<usize>, config: MixerConfig| Linearize { block: Block::JetBlock, layers, config, seed: 0 };
    let r = PassManager::new().add(Box::new(bad(vec![2], MixerConfig::default()))).run(&mut g);
    assert!(r.is_err_and(|e| e.to_string().contains("layer 2 does not exist")));
    let r = PassManager::new().add(Box::new(bad(vec![0], MixerConfig { dv: Some(3), reduction: 8, ..Default::default() }))).run(&mut g);
    assert!(r.is_err_and(|e| e.to_string().contains("reduction")));
    assert!(Block::parse("mamba3").is_err_and(|e| e.contains("unknown block")));
}

#[test]
fn block_names_dims_and_summary() {
    for block in Block::ALL {
        assert_eq!(Block::parse(block.name()), Ok(block));
    }
    // (block, summary kind, conv cache channels per layer): H = 2, d_k = 8, d_v = 24, W = 4.
    let config = MixerConfig { heads: Some(2), dk: Some(8), dv: Some(24), ..Default::default() };
    for (block, kind, conv_channels) in [
        (Block::JetBlock, "jet", 2 * 24),
        (Block::GatedDeltaNet, "gated_delta", 2 * 8 + 2 * 8 + 2 * 24),
        (Block::DeltaNet, "delta", 2 * 8 + 2 * 8 + 2 * 24),
        (Block::RetNet, "gated", 0),
        (Block::Gla, "gated_vector", 0),
        (Block::Mamba2, "gated", 2 * 24 + 2 * 8 + 2 * 8),
    ] {
        let g = converted_to("qwen2-dynamo-opset20-eager-nokv", block, vec![0, 1], config);
        let session = Session::new(&g).expect("session");
        let (_, inputs, _) = cases("qwen2-dynamo-opset20-eager-nokv").remove(0);
        let out = session.run(inputs).expect("run");
        assert!(out[0].1.as_f32().expect("logits").iter().all(|v| v.is_finite()), "{block:?}");
        let summary = jetc::passes::summary::summarize(&g).expect("summary");
        for m in &summary.mixers {
            assert_eq!(m.kind, kind, "{block:?}");
            assert_eq!(m.state_bytes, 2 * 8 * 24 * 4 + conv_channels * 4 * 4, "{block:?} state bytes");
        }
        // Every learned weight of the block is counted: A_log, dt_bias, the norm and the
        // short-conv kernels too, RetNet's fixed decay not.
        let names: Vec<String> = g
            .node_ids()
            .filter_map(|id| g.node(id).ok())
            .filter(|n| matches!(n.op, jetc::ir::Op::Const(_)) && n.name.starts_with(&format!("layers.0.{}.", block.weight_prefix())))
            .map(|n| n.name.clone())
            .collect();
        let learned: Vec<&String> = names.iter().filter(|n| jetc::passes::linearize::is_block_weight(n)).collect();
        let expected = match block {
            Block::JetBlock => 13,
            Block::GatedDeltaNet => 13,
            Block::DeltaNet => 10,
            Block::RetNet => 6,
            // q, k, v, o, g projections, the norm, the 2-factor low-rank gate and its bias.
            Block::Gla => 9,
            // C, B, x, out, z, dt projections, A_log, dt_bias, D, the norm, three conv kernels.
            Block::Mamba2 => 13,
            other => unreachable!("{other:?}"),
        };
        assert_eq!(learned.len(), expected, "{block:?}: {learned:?}");
    }
    // The generator reduction only constrains JetBlock.
    let config = MixerConfig { dv: Some(3), reduction: 8, ..Default::default() };
    let g = converted_to("qwen2-dynamo-opset20-eager-nokv", Block::GatedDeltaNet, vec![0], config);
    assert!(Session::new(&g).is_ok());
}

/// SWA next to full attention (the Jet-Nemotron layout's mix) decodes past the window
/// exactly as it prefills, on every fixture with a KV cache: the SWA caches hold only the
/// window (their own length symbol), the full-attention cache the whole past.
#[test]
fn swa_beside_full_attention_decodes_past_the_window() {
    use jetc::convert::{convert, Layout};
    let window = 2;
    for fixture in fixture_names() {
        let fixture = fixture.as_str();
        let Some((_, mut inputs, _)) = cases(fixture).into_iter().find(|c| c.0 == "past0" && c.1.keys().any(|k| k.contains("past"))) else {
            continue;
        };
        let mut g = load_raised(&fixtures_dir().join(fixture).join("model.onnx")).expect("load");
        let layout = Layout { full_attn: vec![1], swa: vec![0], window: Some(window), block: Block::JetBlock, blocks: vec![], config: MixerConfig::default() };
        convert(&mut g, &layout, 0).expect("convert");
        let session = Session::new(&g).expect("session");
        let graph_inputs: Vec<String> = g.inputs.iter().map(|&id| g.value_name(jetc::ir::Outlet::new(id, 0)).to_string()).collect();
        inputs.retain(|k, _| graph_inputs.contains(k));
        let full: HashMap<String, Value> = session.run(inputs.clone()).expect("prefill").into_iter().collect();
        let logits = full["logits"].as_f32().expect("logits").clone();
        let t = logits.shape()[1];
        if t <= window {
            continue;
        }
        decode_token_by_token(fixture, &session, &g, &inputs, &logits);
    }
}

/// RetNet's RoPE uses the base model's positions: shifting every position by the same amount
/// leaves the outputs unchanged (retention sees only relative positions), while other
/// positions change them (so RoPE is really applied).
#[test]
fn retnet_rope_is_relative() {
    let fixture = "qwen2-dynamo-opset20-sdpa-kv";
    let g = converted_to(fixture, Block::RetNet, vec![0, 1], MixerConfig::default());
    assert!(g.node_ids().filter_map(|id| g.node(id).ok()).any(|n| n.name.contains("retnet.q_rope")), "no RoPE in the RetNet block");
    let session = Session::new(&g).expect("session");
    let (_, mut inputs, _) = cases(fixture).into_iter().find(|c| c.0 == "past0").expect("past0");
    let b = inputs["input_ids"].shape()[0];
    let names: Vec<String> = g.inputs.iter().map(|&id| g.value_name(jetc::ir::Outlet::new(id, 0)).to_string()).collect();
    for n in names.iter().filter(|n| n.starts_with("past_state")) {
        inputs.insert(n.clone(), zeros_for(&g, n, b));
    }
    inputs.retain(|k, _| names.contains(k));
    let run = |shift: i64, reverse: bool| -> Value {
        let mut feed = inputs.clone();
        let mut pos = inputs["position_ids"].as_i64().expect("positions").clone();
        let t = pos.shape()[1] as i64;
        pos.mapv_inplace(|p| if reverse { t - 1 - p } else { p + shift });
        feed.insert("position_ids".into(), Value::i64(pos));
        session.run(feed).expect("run").into_iter().find(|(n, _)| n == "logits").expect("logits").1
    };
    let base = run(0, false);
    assert!(rel_err("shifted", &run(7, false), &base) < 1e-4, "a global position shift changed the outputs");
    assert!(rel_err("reversed", &run(0, true), &base) > 1e-3, "positions have no effect");
}
