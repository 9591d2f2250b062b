//! The `linearize` pass (JetBlock) on real fixtures: the converted model runs, decoding
//! token by token with the recurrent caches fed back equals one prefill pass, and bad
//! requests are refused with the reason.
mod common;

use std::collections::HashMap;

use common::*;
use jetc::passes::linearize::{Block, Linearize, MixerConfig};
use jetc::passes::PassManager;
use jetc::pipeline::load_raised;
use jetc::runtime::{Session, Value};
use ndarray::{s, ArrayD, Axis, IxDyn};

fn converted(fixture: &str, layers: Vec<usize>, config: MixerConfig) -> jetc::ir::Graph {
    let mut g = load_raised(&fixtures_dir().join(fixture).join("model.onnx")).expect("load");
    PassManager::new()
        .add(Box::new(Linearize { block: Block::JetBlock, layers, config, seed: 0 }))
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

#[test]
fn jetblock_decode_equals_prefill() {
    for fixture in ["qwen2-dynamo-opset20-sdpa-kv", "llama-legacy-opset17-kv"] {
        // Layer 0 JetBlock, layer 1 full attention: both kinds of cache at once.
        let g = converted(fixture, vec![0], MixerConfig::default());
        let text = jetc::ir::print::print_graph(&g).expect("print");
        assert!(text.contains("LinearAttention(") && text.contains("DynamicConv(") && text.contains("Attention("));
        let session = Session::new(&g).expect("session");
        let (_, mut inputs, _) = cases(fixture).into_iter().find(|c| c.0 == "past0").expect("past0");
        let b = inputs["input_ids"].shape()[0];
        for name in ["past_conv.0", "past_state.0"] {
            inputs.insert(name.into(), zeros_for(&g, name, b));
        }
        inputs.remove("past_key_values.0.key");
        inputs.remove("past_key_values.0.value");
        let full: HashMap<String, Value> = session.run(inputs.clone()).expect("prefill").into_iter().collect();
        let logits = full["logits"].as_f32().expect("logits").clone();
        let t = logits.shape()[1];
        let mut caches: HashMap<String, Value> =
            inputs.iter().filter(|(k, _)| k.starts_with("past")).map(|(k, v)| (k.clone(), v.clone())).collect();
        for step in 0..t {
            let mut feed = caches.clone();
            for name in ["input_ids", "position_ids"] {
                let a = inputs[name].as_i64().expect("ids").slice(s![.., step..step + 1]).to_owned().into_dyn();
                feed.insert(name.into(), Value::i64(a));
            }
            feed.insert("attention_mask".into(), Value::i64(ArrayD::ones(IxDyn(&[b, step + 1]))));
            let out: HashMap<String, Value> = session.run(feed).expect("decode").into_iter().collect();
            let want = logits.index_axis(Axis(1), step).to_owned().insert_axis(Axis(1)).into_dyn();
            let e = rel_err(&format!("{fixture} step {step}"), &out["logits"], &Value::f32(want));
            assert!(e < 1e-4, "{fixture} step {step}: rel err {e}");
            for (k, v) in out {
                if let Some(rest) = k.strip_prefix("present") {
                    let past = if rest.starts_with('.') { format!("past_key_values{rest}") } else { format!("past{rest}") };
                    caches.insert(past, v);
                }
            }
        }
        // The final recurrent state of the one-pass prefill equals the decoded one.
        let e = rel_err("state", &caches["past_state.0"], &full["present_state.0"]);
        assert!(e < 1e-4, "{fixture}: state rel err {e}");
    }
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
