//! The `swa` pass on real fixtures: a window at least as long as the sequence changes
//! nothing; a short window decoded token by token (with the truncated KV cache fed back)
//! equals one prefill pass with the same window; and bad layouts are refused.
mod common;

use std::collections::HashMap;

use common::*;
use jetc::passes::swa::Swa;
use jetc::passes::PassManager;
use jetc::pipeline::load_raised;
use jetc::runtime::{Session, Value};
use ndarray::{s, ArrayD, Axis, IxDyn};

const FIXTURE: &str = "qwen2-dynamo-opset20-sdpa-kv";

fn windowed(window: usize) -> jetc::ir::Graph {
    let mut g = load_raised(&fixtures_dir().join(FIXTURE).join("model.onnx")).expect("load");
    PassManager::new().add(Box::new(Swa { layers: vec![0, 1], window })).run(&mut g).expect("swa");
    g
}

fn ids(v: &Value) -> &ArrayD<i64> {
    v.as_i64().expect("int input")
}

#[test]
fn long_window_changes_nothing() {
    let g = windowed(64);
    let session = Session::new(&g).expect("session");
    for (case, inputs, want) in cases(FIXTURE) {
        let got = session.run(inputs).expect("run");
        compare_outputs(&format!("swa(64) {case}"), &got, &want, 1e-4);
    }
}

#[test]
fn decode_with_truncated_cache_equals_prefill() {
    let window = 3;
    let g = windowed(window);
    let session = Session::new(&g).expect("session");
    let (_, inputs, _) = cases(FIXTURE).into_iter().find(|c| c.0 == "past0").expect("past0 case");
    let full = session.run(inputs.clone()).expect("prefill");
    let full: HashMap<String, Value> = full.into_iter().collect();
    let logits = full["logits"].as_f32().expect("logits").clone();
    let (b, t) = (logits.shape()[0], logits.shape()[1]);
    let mut caches: HashMap<String, Value> = inputs
        .iter()
        .filter(|(k, _)| k.starts_with("past_key_values"))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    let mut past = 0usize;
    for step in 0..t {
        let mut feed = caches.clone();
        let slice = |name: &str| -> Value {
            let a = ids(&inputs[name]).slice(s![.., step..step + 1]).to_owned().into_dyn();
            Value::i64(a)
        };
        feed.insert("input_ids".into(), slice("input_ids"));
        feed.insert("position_ids".into(), slice("position_ids"));
        feed.insert("attention_mask".into(), Value::i64(ArrayD::ones(IxDyn(&[b, past + 1]))));
        let out: HashMap<String, Value> = session.run(feed).expect("decode step").into_iter().collect();
        let got = out["logits"].as_f32().expect("logits");
        let want = logits.index_axis(Axis(1), step).to_owned().insert_axis(Axis(1)).into_dyn();
        let e = rel_err(&format!("step {step}"), &Value::f32(got.clone()), &Value::f32(want));
        assert!(e < 1e-4, "step {step}: rel err {e}");
        for (k, v) in out.into_iter().filter(|(k, _)| k.starts_with("present")) {
            assert!(v.shape()[2] <= window, "{k}: cache of {} tokens > window {window}", v.shape()[2]);
            caches.insert(k.replace("present", "past_key_values"), v);
        }
        past = caches["past_key_values.0.key"].shape()[2];
    }
}

#[test]
fn bad_layouts_are_refused() {
    let mut g = load_raised(&fixtures_dir().join(FIXTURE).join("model.onnx")).expect("load");
    let zero = PassManager::new().add(Box::new(Swa { layers: vec![0], window: 0 })).run(&mut g);
    assert!(zero.is_err_and(|e| e.to_string().contains("window")));
    let out_of_range = PassManager::new().add(Box::new(Swa { layers: vec![7], window: 4 })).run(&mut g);
    assert!(out_of_range.is_err_and(|e| e.to_string().contains("layer 7")));
}
