//! `convert` to the Jet-Nemotron Hugging Face layout: config.json follows the reference's
//! schema, model.safetensors holds exactly the reference's parameter names with PyTorch
//! [out, in] shapes, and bad layouts are refused before anything is written.
mod common;

use common::*;
use jetc::convert::{convert, Layout};
use jetc::jet_hf::{export_jet_hf, HfOptions};
use jetc::passes::linearize::{Block, MixerConfig};
use jetc::pipeline::load_raised;
#[allow(unused_imports)]
use ndarray as _;

fn layout(full: Vec<usize>, swa: Vec<usize>, window: Option<usize>) -> Layout {
    layout_of(Block::JetBlock, full, swa, window)
}

fn layout_of(block: Block, full: Vec<usize>, swa: Vec<usize>, window: Option<usize>) -> Layout {
    Layout { full_attn: full, swa, window, block, blocks: vec![], config: MixerConfig::default() }
}

#[test]
fn jet_hf_layout_has_the_reference_names_and_shapes() {
    let mut g = load_raised(&fixtures_dir().join("qwen2-dynamo-opset20-sdpa-kv/model.onnx")).expect("load");
    // 2 layers: layer 0 JetBlock, layer 1 SWA.
    convert(&mut g, &layout(vec![], vec![1], Some(3)), 0).expect("convert");
    let dir = std::env::temp_dir().join(format!("jetc-jethf-{}", std::process::id()));
    export_jet_hf(&g, &dir, &HfOptions::default()).expect("export");
    let config: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("config.json")).expect("config")).expect("json");
    assert_eq!(config["model_type"], "jet_nemotron");
    assert_eq!(config["layer_types"], serde_json::json!(["jet", "swa"]));
    assert_eq!(config["efficient_attention_config"]["swa"]["window_size"], 3);
    let jet = &config["efficient_attention_config"]["jet"];
    assert_eq!((jet["num_heads"].as_u64(), jet["head_dim"].as_u64(), jet["conv_size"].as_u64()), (Some(4), Some(12), Some(4)));
    assert_eq!(jet["norm_eps"], "1e-5");
    assert_eq!(config["rope_theta"].as_f64(), Some(1e6));
    assert_eq!(config["tie_word_embeddings"], true);

    let bytes = std::fs::read(dir.join("model.safetensors")).expect("safetensors");
    let st = safetensors::SafeTensors::deserialize(&bytes).expect("parse");
    let shape = |n: &str| st.tensor(n).unwrap_or_else(|_| panic!("missing {n}")).shape().to_vec();
    let (hid, h, dk, dv, w) = (64, 4, 12, 32, 4);
    let jet = "model.layers.0.self_attn.";
    for (name, want) in [
        ("q_proj.weight", vec![h * dk, hid]),
        ("k_proj.weight", vec![h * dk, hid]),
        ("v_proj.weight", vec![h * dv, hid]),
        ("b_proj.weight", vec![h, hid]),
        ("a_proj.weight", vec![h, hid]),
        ("A_log", vec![h]),
        ("dt_bias", vec![h]),
        ("dynamic_conv1d.kernel_generator.w1.weight", vec![h * dv / 8, hid]),
        ("dynamic_conv1d.kernel_generator.w2.weight", vec![h * dv * w, h * dv / 8]),
        ("dynamic_conv1d.kernel_generator.w2.bias", vec![h * dv * w]),
        ("g_proj.weight", vec![h * dv, hid]),
        ("o_norm.weight", vec![dv]),
        ("o_proj.weight", vec![hid, h * dv]),
    ] {
        assert_eq!(shape(&format!("{jet}{name}")), want, "{name}");
    }
    for name in ["q_proj.weight", "q_proj.bias", "k_proj.bias", "o_proj.weight"] {
        assert!(st.tensor(&format!("model.layers.1.self_attn.{name}")).is_ok(), "swa {name}");
    }
    for l in 0..2 {
        for name in ["input_layernorm.weight", "post_attention_layernorm.weight", "mlp.gate_proj.weight", "mlp.up_proj.weight"] {
            assert!(st.tensor(&format!("model.layers.{l}.{name}")).is_ok(), "layer {l} {name}");
        }
        assert_eq!(shape(&format!("model.layers.{l}.mlp.down_proj.weight")), vec![hid, 96]);
    }
    assert_eq!(shape("model.embed_tokens.weight"), vec![128, hid]);
    assert!(st.tensor("lm_head.weight").is_err(), "tied model writes no lm_head");
    assert_eq!(st.names().len(), 2 /*embed, norm*/ + 2 * 5 /*norms + mlp*/ + 13 /*jet*/ + 7 /*swa q,k,v,o + biases*/);
    std::fs::remove_dir_all(&dir).ok();
}

/// The reference layout has only attn, swa and jet layers: a model with another linear block
/// is refused with the reason, and nothing is written.
#[test]
fn jet_hf_refuses_other_linear_blocks() {
    for block in Block::ALL.into_iter().filter(|&b| b != Block::JetBlock) {
        let mut g = load_raised(&fixtures_dir().join("qwen2-dynamo-opset20-sdpa-kv/model.onnx")).expect("load");
        convert(&mut g, &layout_of(block, vec![], vec![1], Some(3)), 0).expect("convert");
        let dir = std::env::temp_dir().join(format!("jetc-jethf-refused-{}-{}", block.name(), std::process::id()));
        let e = export_jet_hf(&g, &dir, &HfOptions::default()).expect_err("must refuse").to_string();
        assert!(e.contains("layer 0") && e.contains("not a JetBlock"), "{block:?}: {e}");
        assert!(!dir.exists(), "{block:?}: wrote {}", dir.display());
    }
}

#[test]
fn bad_layouts_are_refused_without_touching_the_graph() {
    let mut g = load_raised(&fixtures_dir().join("llama-dynamo-opset20-sdpa-kv/model.onnx")).expect("load");
    let before = jetc::ir::print::print_graph(&g).expect("print");
    for (l, msg) in [
        (layout(vec![2], vec![], None), "out of range"),
        (layout(vec![0], vec![0], Some(4)), "both"),
        (layout(vec![], vec![1], None), "--window"),
        (layout(vec![], vec![1], Some(0)), "at least 1"),
    ] {
        let e = convert(&mut g, &l, 0).expect_err("must fail");
        assert!(e.contains(msg), "{e}");
    }
    assert_eq!(before, jetc::ir::print::print_graph(&g).expect("print"), "graph changed by a refused layout");
    // Every layer full attention: nothing changes at all.
    convert(&mut g, &layout(vec![0, 1], vec![], None), 0).expect("no-op");
    assert_eq!(before, jetc::ir::print::print_graph(&g).expect("print"));
}

/// Converted models (every linear block) lowered to standard ONNX (opset 27:
/// `LinearAttention`, `Attention`, `RMSNormalization`) run in onnxruntime and match jetc's
/// executor on the same converted graph, with empty and with non-empty initial caches. The
/// short-conv kernels are randomized first, so that the conv caches matter.
#[test]
fn converted_onnx_runs_in_onnxruntime() {
    use jetc::runtime::{Session, Value};
    use ndarray::{ArrayD, IxDyn};
    use std::collections::HashMap;
    let Some(py) = python_with_ort() else { return };
    let tmp = std::env::temp_dir().join(format!("jetc-conv-onnx-{}", std::process::id()));
    std::fs::create_dir_all(&tmp).expect("tmp");
    let layouts = Block::ALL.into_iter().flat_map(|b| {
        [
            (format!("{}+swa", b.name()), layout_of(b, vec![], vec![1], Some(2))),
            (format!("{}+attn", b.name()), layout_of(b, vec![1], vec![], None)),
        ]
    });
    let layouts: Vec<(String, Layout)> = layouts.collect();
    // Every fixture (every exporter) with every block, after SWA and after full attention.
    for fixture in fixture_names() {
        let fixture = fixture.as_str();
        for (name, lay) in &layouts {
            let mut g = load_raised(&fixtures_dir().join(fixture).join("model.onnx")).expect("load");
            convert(&mut g, lay, 0).expect("convert");
            perturb_short_convs(&mut g, 3);
            let session = Session::new(&g).expect("session");
            let mut lowered = g.clone();
            jetc::passes::PassManager::new().add(Box::new(jetc::passes::lower::Lower)).run(&mut lowered).unwrap_or_else(|e| panic!("{fixture} {name}: {e}"));
            let model = tmp.join(format!("{fixture}-{name}.onnx"));
            jetc::onnx::export_model(&lowered, &model, &Default::default()).expect("export");
            for (case, mut inputs, _) in cases(fixture) {
                let b = inputs["input_ids"].shape()[0];
                // Caches the conversion introduced: random, so a wrong layout shows.
                let mut seed = 1u64;
                for &id in &g.inputs {
                    let n = g.value_name(jetc::ir::Outlet::new(id, 0)).to_string();
                    if n.starts_with("past_conv") || n.starts_with("past_state") || n.starts_with("past_shift") {
                        let f = g.fact(jetc::ir::Outlet::new(id, 0)).expect("fact");
                        let dims: Vec<usize> = f.shape.as_ref().expect("shape").iter().map(|d| d.as_known().map_or(b, |v| v as usize)).collect();
                        let count: usize = dims.iter().product();
                        let data: Vec<f32> = (0..count).map(|_| { seed ^= seed << 13; seed ^= seed >> 7; seed ^= seed << 17; ((seed >> 40) as f32 / (1u64 << 24) as f32 - 0.5) * if case == "past0" { 0.0 } else { 1.0 } }).collect();
                        inputs.insert(n, Value::f32(ArrayD::from_shape_vec(IxDyn(&dims), data).expect("shape")));
                    }
                }
                let wanted: Vec<String> = g.inputs.iter().map(|&id| g.value_name(jetc::ir::Outlet::new(id, 0)).to_string()).collect();
                inputs.retain(|k, _| wanted.contains(k));
                let ours = session.run(inputs.clone()).unwrap_or_else(|e| panic!("{fixture} {name} {case}: {e}"));
                let in_path = tmp.join("in.npz");
                let arrays: Vec<(String, Value)> = inputs.into_iter().collect();
                jetc::runtime::npz::write_npz(&in_path, &arrays).expect("write");
                let out_path = tmp.join("out.npz");
                run_ort(&py, &model, &in_path, &out_path);
                let theirs = jetc::runtime::npz::read_npz(&out_path).expect("read");
                let ours_map: HashMap<_, _> = ours.into_iter().collect();
                let ours_vec: Vec<(String, Value)> = theirs.iter().map(|(n, _)| (n.clone(), ours_map[n].clone())).collect();
                compare_outputs(&format!("{fixture} {name} {case}"), &ours_vec, &theirs, 1e-4);
            }
        }
    }
    std::fs::remove_dir_all(&tmp).ok();
}

/// A converted model written as ONNX and read back is recognised as the same hybrid: the
/// same mixers (JetBlock with its conv cache, SWA with its window, attention), parameters and
/// cache sizes as the in-memory conversion; and for every block, jetc runs the written model
/// (RWKV7's DPLR as jetc's function op included) with the same outputs as the in-memory one.
#[test]
fn converted_onnx_reads_back_with_the_same_summary() {
    use jetc::passes::summary::summarize;
    use jetc::runtime::Session;
    let dir = std::env::temp_dir().join(format!("jetc-readback-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("tmp");
    for fixture in ["qwen2-dynamo-opset20-sdpa-kv", "llama-legacy-opset17-kv"] {
        for block in Block::ALL {
            let mut g = load_raised(&fixtures_dir().join(fixture).join("model.onnx")).expect("load");
            convert(&mut g, &layout_of(block, vec![], vec![1], Some(3)), 0).expect("convert");
            let mut lowered = g.clone();
            jetc::passes::PassManager::new().add(Box::new(jetc::passes::lower::Lower)).run(&mut lowered).expect("lower");
            let path = dir.join(format!("{fixture}-{}.onnx", block.name()));
            jetc::onnx::export_model(&lowered, &path, &Default::default()).expect("export");
            let back = load_raised(&path).expect("read back");
            let (a, b) = (summarize(&g).expect("summary"), summarize(&back).expect("summary"));
            assert_eq!(a.mixers, b.mixers, "{fixture} {block:?}: mixers");
            assert_eq!((a.layers, a.hidden, a.vocab), (b.layers, b.hidden, b.vocab), "{fixture} {block:?}");
            // Reading back folds constants such as -exp(A_log) into unnamed ones, which the
            // parameter count does not attribute to the block: a few elements per layer (RWKV7's
            // per-channel lerp, norm and bonus vectors: 1.7% of this tiny model).
            let diff = a.params.abs_diff(b.params) as f64 / a.params as f64;
            assert!(diff < 2e-2, "{fixture} {block:?}: params {} vs {}", a.params, b.params);
            if block == Block::JetBlock {
                assert_eq!(b.mixers.iter().map(|m| m.kind).collect::<Vec<_>>(), ["jet", "swa"]);
            }
            let (_, mut inputs, _) = cases(fixture).into_iter().find(|c| c.0 == "past0").expect("past0");
            let wanted: Vec<String> = g.inputs.iter().map(|&id| g.value_name(jetc::ir::Outlet::new(id, 0)).to_string()).collect();
            let bsz = inputs["input_ids"].shape()[0];
            for name in &wanted {
                if name.starts_with("past_") && !name.contains("key_values") {
                    let f = g.fact(jetc::ir::Outlet::new(g.input_by_name(name).expect("input"), 0)).expect("fact");
                    let dims: Vec<usize> = f.shape.as_ref().expect("shape").iter().map(|d| d.as_known().map_or(bsz, |v| v as usize)).collect();
                    inputs.insert(name.clone(), jetc::runtime::Value::f32(ndarray::ArrayD::zeros(ndarray::IxDyn(&dims))));
                }
            }
            inputs.retain(|k, _| wanted.contains(k));
            let ours = Session::new(&g).expect("session").run(inputs.clone()).expect("run");
            let read = Session::new(&back).expect("session").run(inputs.clone()).expect("run read back");
            let read: std::collections::HashMap<_, _> = read.into_iter().collect();
            let read_vec: Vec<_> = ours.iter().map(|(n, _)| (n.clone(), read[n].clone())).collect();
            compare_outputs(&format!("{fixture} {block:?} read back"), &read_vec, &ours, 1e-5);
            // The per-head norms are raised back, so the read-back JetBlock fuses into one op.
            let text = jetc::ir::print::print_graph(&back).expect("print");
            if matches!(block, Block::JetBlock | Block::GatedDeltaNet | Block::DeltaNet | Block::Gla | Block::RetNet) {
                assert!(text.contains("GatedRmsNorm("), "{fixture} {block:?}: gated norm not raised back");
            }
            if block == Block::JetBlock {
                assert!(text.contains("L2Norm("), "{fixture}: L2 norm not raised back");
                let mut fused = back.clone();
                jetc::passes::PassManager::new().add(Box::new(jetc::passes::fuse::Fuse)).run(&mut fused).expect("fuse");
                assert!(jetc::ir::print::print_graph(&fused).expect("print").contains("JetBlock("), "{fixture}: read back does not fuse");
                let out = Session::new(&fused).expect("session").run(inputs).expect("run fused");
                compare_outputs(&format!("{fixture} read back and fused"), &out, &ours, 1e-5);
            }
        }
    }
    std::fs::remove_dir_all(&dir).ok();
}
