//! `fuse`: the decomposed JetBlock becomes one `JetBlock` op with the same outputs and caches
//! (prefill and decode with random initial caches), summarized the same way; `lower`
//! expands it again so the fused model still exports to ONNX that onnxruntime runs.
mod common;

use std::collections::HashMap;

use common::*;
use jetc::convert::{convert, Layout};
use jetc::passes::fuse::Fuse;
use jetc::passes::linearize::{Block, MixerConfig};
use jetc::passes::summary::summarize;
use jetc::passes::PassManager;
use jetc::pipeline::load_raised;
use jetc::runtime::{Session, Value};
use ndarray::{ArrayD, IxDyn};

fn random_caches(g: &jetc::ir::Graph, inputs: &mut HashMap<String, Value>, b: usize) {
    let mut seed = 7u64;
    for &id in &g.inputs {
        let n = g.value_name(jetc::ir::Outlet::new(id, 0)).to_string();
        if n.starts_with("past_conv") || n.starts_with("past_state") {
            let f = g.fact(jetc::ir::Outlet::new(id, 0)).expect("fact");
            let dims: Vec<usize> = f.shape.as_ref().expect("shape").iter().map(|d| d.as_known().map_or(b, |v| v as usize)).collect();
            let data: Vec<f32> = (0..dims.iter().product::<usize>())
                .map(|_| {
                    seed ^= seed << 13;
                    seed ^= seed >> 7;
                    seed ^= seed << 17;
                    (seed >> 40) as f32 / (1u64 << 24) as f32 - 0.5
                })
                .collect();
            inputs.insert(n, Value::f32(ArrayD::from_shape_vec(IxDyn(&dims), data).expect("shape")));
        }
    }
}

#[test]
fn fused_jetblock_equals_decomposed() {
    let fixture = "qwen2-dynamo-opset20-sdpa-kv";
    let mut g = load_raised(&fixtures_dir().join(fixture).join("model.onnx")).expect("load");
    let layout = Layout { full_attn: vec![], swa: vec![], window: None, block: Block::JetBlock, blocks: vec![], config: MixerConfig::default() };
    convert(&mut g, &layout, 5).expect("convert");
    // The kernel generator starts at zero: give it weights so that its path is exercised.
    let ids: Vec<_> = g.node_ids().collect();
    let mut seed = 3u64;
    for id in ids {
        let node = g.node_mut(id).expect("node");
        if let jetc::ir::Op::Const(t) = &node.op {
            if node.name.contains("kernel_generator.w") && node.name.ends_with(".weight") {
                let data: Vec<f32> = (0..t.numel())
                    .map(|_| {
                        seed ^= seed << 13;
                        seed ^= seed >> 7;
                        seed ^= seed << 17;
                        ((seed >> 40) as f32 / (1u64 << 24) as f32 - 0.5) * 0.2
                    })
                    .collect();
                node.op = jetc::ir::Op::Const(jetc::ir::Tensor::from_f32(t.shape().to_vec(), &data).expect("tensor"));
            }
        }
    }
    let mut fused = g.clone();
    PassManager::new().add(Box::new(Fuse)).run(&mut fused).expect("fuse");
    let text = jetc::ir::print::print_graph(&fused).expect("print");
    assert_eq!(text.matches("JetBlock(").count(), 2, "both layers fused");
    assert!(!text.contains("LinearAttention(") && !text.contains("DynamicConv("));
    // The seven projections of the block input are one packed weight (one GEMM).
    assert_eq!(text.matches(", packed}").count(), 2, "projections merged");
    assert!(text.contains("jet.in_proj.weight") && !text.contains("jet.q_proj.weight"));
    // Unfusing splits it back into the original weights, byte for byte, under their names.
    let mut unfused = fused.clone();
    PassManager::new().add(Box::new(jetc::passes::fuse::Unfuse)).run(&mut unfused).expect("unfuse");
    let consts = |g: &jetc::ir::Graph| -> std::collections::BTreeMap<String, Vec<u8>> {
        g.node_ids()
            .filter_map(|id| g.node(id).ok())
            .filter_map(|n| match &n.op {
                jetc::ir::Op::Const(t) if n.name.contains(".jet.") && n.name.ends_with(".weight") => Some((n.name.clone(), t.bytes().to_vec())),
                _ => None,
            })
            .collect()
    };
    assert_eq!(consts(&unfused), consts(&g), "unfuse restores the projection weights");
    let (a, b) = (summarize(&g).expect("summary"), summarize(&fused).expect("summary"));
    assert_eq!((a.params, &a.mixers), (b.params, &b.mixers), "same summary fused or not");
    let (s1, s2) = (Session::new(&g).expect("session"), Session::new(&fused).expect("session"));
    for (case, mut inputs, _) in cases(fixture) {
        let batch = inputs["input_ids"].shape()[0];
        inputs.retain(|k, _| !k.starts_with("past_key_values"));
        random_caches(&g, &mut inputs, batch);
        let (x, y) = (s1.run(inputs.clone()).expect("decomposed"), s2.run(inputs).expect("fused"));
        compare_outputs(&format!("fused {case}"), &y, &x, 1e-5);
    }
    // Lowering expands the fused op: the export runs in onnxruntime.
    let Some(py) = python_with_ort() else { return };
    let mut lowered = fused.clone();
    PassManager::new().add(Box::new(jetc::passes::lower::Lower)).run(&mut lowered).expect("lower");
    let dir = std::env::temp_dir().join(format!("jetc-fuse-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("tmp");
    let model = dir.join("fused.onnx");
    jetc::onnx::export_model(&lowered, &model, &Default::default()).expect("export");
    let (case, mut inputs, _) = cases(fixture).remove(1);
    let batch = inputs["input_ids"].shape()[0];
    inputs.retain(|k, _| !k.starts_with("past_key_values"));
    random_caches(&g, &mut inputs, batch);
    let ours = s2.run(inputs.clone()).expect("fused run");
    let arrays: Vec<(String, Value)> = inputs.into_iter().collect();
    jetc::runtime::npz::write_npz(&dir.join("in.npz"), &arrays).expect("npz");
    run_ort(&py, &model, &dir.join("in.npz"), &dir.join("out.npz"));
    let theirs = jetc::runtime::npz::read_npz(&dir.join("out.npz")).expect("read");
    compare_outputs(&format!("fused lowered {case}"), &ours, &theirs, 1e-4);
    std::fs::remove_dir_all(&dir).ok();
}
