//! Every fixture (tiny Llama and Qwen2 decoders exported by every exporter we support, see
//! scripts/make_fixtures.py) against onnxruntime's reference outputs, at batch 2 with past
//! length 0 and > 0: run as imported, run after raising, inspected, and exported back to
//! ONNX and run by onnxruntime.
mod common;

use common::*;
use jetc::pipeline::{load, load_raised};
use jetc::runtime::Session;
use jetc::passes::summary::summarize;

const TOL: f64 = 1e-4;

fn check_runs(raise: bool) {
    for name in fixture_names() {
        let model = fixtures_dir().join(&name).join("model.onnx");
        let g = if raise { load_raised(&model) } else { load(&model) }.unwrap_or_else(|e| panic!("{name}: {e}"));
        let session = Session::new(&g).unwrap_or_else(|e| panic!("{name}: {e}"));
        for (case, inputs, want) in cases(&name) {
            let got = session.run(inputs).unwrap_or_else(|e| panic!("{name}/{case}: {e}"));
            compare_outputs(&format!("{name}/{case} raise={raise}"), &got, &want, TOL);
        }
    }
}

#[test]
fn imported_graphs_match_onnxruntime() {
    check_runs(false);
}

#[test]
fn raised_graphs_match_onnxruntime() {
    check_runs(true);
}

#[test]
fn every_fixture_is_fully_raised() {
    for name in fixture_names() {
        let g = load_raised(&fixtures_dir().join(&name).join("model.onnx")).unwrap_or_else(|e| panic!("{name}: {e}"));
        let m = meta(&name);
        let s = summarize(&g).unwrap_or_else(|e| panic!("{name}: {e}"));
        let n = |k: &str| m[k].as_u64().unwrap_or_else(|| panic!("{name}: meta {k}")) as usize;
        assert_eq!(s.layers, n("layers"), "{name}: layers");
        assert_eq!(s.hidden, n("hidden"), "{name}: hidden");
        assert_eq!(s.vocab, n("vocab"), "{name}: vocab");
        if m["mlp"].as_str() != Some("gelu") {
            assert_eq!(s.intermediate, Some(n("intermediate")), "{name}: intermediate");
        }
        assert_eq!(s.tied_embeddings, m["tied"].as_bool().unwrap_or(false), "{name}: tied");
        for mixer in &s.mixers {
            assert_eq!(mixer.kind, "attention");
            assert_eq!((mixer.heads, mixer.kv_heads, mixer.head_dim), (n("heads"), n("kv_heads"), n("head_dim")), "{name}: layer {}", mixer.layer);
            assert!(mixer.rope, "{name}: layer {} rope", mixer.layer);
        }
        // Every decoder op was recognised: no softmax or fused attention op is left over.
        let text = jetc::ir::print::print_graph(&g).unwrap_or_default();
        for leftover in ["Softmax(", "GroupQueryAttention(", "ReduceMean(", "Sigmoid(", "RotaryEmbedding("] {
            assert!(!text.contains(leftover), "{name}: `{leftover}` left after raising");
        }
    }
}

#[test]
fn exported_graphs_run_in_onnxruntime() {
    let Some(py) = python_with_ort() else { return };
    let tmp = std::env::temp_dir().join(format!("jetc-export-{}", std::process::id()));
    std::fs::create_dir_all(&tmp).expect("tmp dir");
    for name in fixture_names() {
        let model = fixtures_dir().join(&name).join("model.onnx");
        let g = load(&model).unwrap_or_else(|e| panic!("{name}: {e}"));
        let out_model = tmp.join(format!("{name}.onnx"));
        let external = meta(&name)["external_data"].as_bool().unwrap_or(false);
        let opts = jetc::onnx::ExportOptions { external_data: external, ..Default::default() };
        jetc::onnx::export_model(&g, &out_model, &opts).unwrap_or_else(|e| panic!("{name}: {e}"));
        for case in meta(&name)["cases"].as_array().expect("cases").iter().filter_map(|c| c.as_str()) {
            let dir = fixtures_dir().join(&name);
            let out = tmp.join(format!("{name}.{case}.npz"));
            run_ort(&py, &out_model, &dir.join(format!("{case}.inputs.npz")), &out);
            let got = jetc::runtime::npz::read_npz(&out).expect("ort outputs");
            let want = jetc::runtime::npz::read_npz(&dir.join(format!("{case}.outputs.npz"))).expect("refs");
            compare_outputs(&format!("{name}/{case} exported"), &got, &want, TOL);
        }
    }
    std::fs::remove_dir_all(&tmp).ok();
}
