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

/// Graphs after onnxruntime's transformer optimizer (SkipSimplifiedLayerNormalization fused
/// over the residual adds): every layer and MLP is still raised, and the raised graph still
/// matches the fixture's onnxruntime outputs.
#[test]
fn ort_optimized_graphs_are_fully_raised() {
    let Some(py) = python_with_ort() else { return };
    let tmp = std::env::temp_dir().join(format!("jetc-ortopt-{}", std::process::id()));
    std::fs::create_dir_all(&tmp).expect("tmp dir");
    for name in ["llama-legacy-opset17-kv", "qwen2-legacy-opset17-kv", "llama-optimum", "qwen2-optimum"] {
        let m = meta(name);
        let n = |k: &str| m[k].as_u64().unwrap_or_else(|| panic!("{name}: meta {k}")) as usize;
        let out = tmp.join(format!("{name}.onnx"));
        let st = std::process::Command::new(&py)
            .arg(common::root().join("scripts/ort_optimize.py"))
            .arg(fixtures_dir().join(name).join("model.onnx"))
            .arg(&out)
            .args([n("heads").to_string(), n("hidden").to_string()])
            .status()
            .expect("run scripts/ort_optimize.py");
        assert!(st.success(), "{name}: scripts/ort_optimize.py failed");
        let text = std::fs::read(&out).expect("optimized model");
        assert!(text.windows(32).any(|w| w == b"SkipSimplifiedLayerNormalization"), "{name}: the optimizer fused no norm");
        let g = load_raised(&out).unwrap_or_else(|e| panic!("{name} optimized: {e}"));
        let s = summarize(&g).unwrap_or_else(|e| panic!("{name} optimized: {e}"));
        assert_eq!(s.layers, n("layers"), "{name} optimized: layers");
        assert_eq!(s.intermediate, Some(n("intermediate")), "{name} optimized: intermediate");
        assert!(s.mixers.iter().all(|x| x.kind == "attention"), "{name} optimized: mixers");
        let printed = jetc::ir::print::print_graph(&g).unwrap_or_default();
        assert_eq!(printed.matches("SwiGlu(").count(), n("layers"), "{name} optimized: MLPs raised");
        let session = Session::new(&g).unwrap_or_else(|e| panic!("{name} optimized: {e}"));
        for (case, inputs, want) in cases(name) {
            let got = session.run(inputs).unwrap_or_else(|e| panic!("{name}/{case} optimized: {e}"));
            compare_outputs(&format!("{name}/{case} optimized and raised"), &got, &want, TOL);
        }
    }
    std::fs::remove_dir_all(&tmp).ok();
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
