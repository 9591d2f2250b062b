//! Local distillation on a fixture: the composed graph's gradients against finite
//! differences of the same graph, and a JetBlock trained toward the teacher attention.
use std::path::PathBuf;

use jetc_models::convert::Layout;
use jetc_models::pipeline::load_raised;
use jetc_passes::linearize::{Block, MixerConfig};
use jetc_runtime::Session;
use jetc_train::feed::prefill_inputs;
use jetc_train::local::{build_local, initial_values, run_step};
use jetc_train::optim::{AdamW, AdamWConfig};
use ndarray::ArrayD;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

fn fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures").join(name).join("model.onnx")
}

fn layout(block: Block, full_attn: Vec<usize>) -> Layout {
    Layout { full_attn, swa: vec![], window: None, block, blocks: vec![], config: MixerConfig::default() }
}

fn ids(rng: &mut StdRng, n: usize, vocab: i64) -> Vec<i64> {
    (0..n).map(|_| rng.random_range(0..vocab)).collect()
}

/// <grad, d> against (L(w + h d) - L(w - h d)) / 2h along a random direction, per block.
#[test]
fn composed_gradients_match_finite_differences() {
    for (name, block) in [("llama-dynamo-opset20-eager-nokv", Block::JetBlock), ("qwen2-dynamo-opset20-sdpa-kv", Block::GatedDeltaNet), ("llama-dynamo-opset20-eager-nokv", Block::Gla)] {
        let teacher = load_raised(&fixture(name)).unwrap_or_else(|e| panic!("{e}"));
        let lg = build_local(&teacher, &layout(block, vec![0]), 7).unwrap_or_else(|e| panic!("{e}"));
        let session = Session::new(&lg.graph).unwrap_or_else(|e| panic!("{e}"));
        let mut rng = StdRng::seed_from_u64(3);
        let (b, t) = (2, 9);
        let tokens = ids(&mut rng, b * t, 100);
        let feed = || prefill_inputs(&lg.graph, &tokens, b, t).unwrap_or_else(|e| panic!("{e}"));
        let w: Vec<ArrayD<f32>> = initial_values(&lg).unwrap_or_else(|e| panic!("{e}")).into_iter().map(|p| p.1).collect();
        let out = run_step(&lg, &session, feed(), &w).unwrap_or_else(|e| panic!("{e}"));
        assert!(out.loss.is_finite() && out.loss > 0.0);
        // A random unit direction over all parameters.
        let dirs: Vec<ArrayD<f32>> = w.iter().map(|a| a.mapv(|_| rng.random_range(-1.0f32..1.0))).collect();
        let norm: f32 = dirs.iter().map(|d| d.iter().map(|v| v * v).sum::<f32>()).sum::<f32>().sqrt();
        let along = |s: f32| -> f64 {
            let moved: Vec<ArrayD<f32>> = w.iter().zip(&dirs).map(|(a, d)| a + &d.mapv(|v| v * s / norm)).collect();
            run_step(&lg, &session, feed(), &moved).unwrap_or_else(|e| panic!("{e}")).loss as f64
        };
        let h = 1e-2f32;
        let numeric = (along(h) - along(-h)) / (2.0 * h as f64);
        let analytic: f64 = out.grads.iter().zip(&dirs).map(|(g, d)| g.iter().zip(d.iter()).map(|(&a, &b)| (a * b / norm) as f64).sum::<f64>()).sum();
        let err = (numeric - analytic).abs() / analytic.abs().max(1e-4);
        eprintln!("{name} {block:?}: numeric {numeric:.6e} analytic {analytic:.6e} rel {err:.1e}");
        assert!(err < 5e-3, "{name} {block:?}: directional derivative {numeric:.6e} vs <grad, d> {analytic:.6e} (rel {err:.2e})");
    }
}

/// A tiny JetBlock in place of layer 1 of a fixture, trained toward that layer's attention
/// output, falls to at most 10% of its initial loss.
#[test]
fn jetblock_distills_toward_the_teacher_attention() {
    let teacher = load_raised(&fixture("llama-dynamo-opset20-eager-nokv")).unwrap_or_else(|e| panic!("{e}"));
    let lg = build_local(&teacher, &layout(Block::JetBlock, vec![0]), 11).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(lg.layers, vec![1]);
    let session = Session::new(&lg.graph).unwrap_or_else(|e| panic!("{e}"));
    let mut rng = StdRng::seed_from_u64(5);
    let (b, t) = (2, 16);
    let tokens = ids(&mut rng, b * t, 100);
    let mut opt = AdamW::new(AdamWConfig { weight_decay: 0.0, ..Default::default() }, initial_values(&lg).unwrap_or_else(|e| panic!("{e}")));
    let mut first = None;
    let mut last = f32::NAN;
    for _ in 0..150 {
        let feed = prefill_inputs(&lg.graph, &tokens, b, t).unwrap_or_else(|e| panic!("{e}"));
        let w: Vec<ArrayD<f32>> = opt.slots.iter().map(|s| s.value.clone()).collect();
        let out = run_step(&lg, &session, feed, &w).unwrap_or_else(|e| panic!("{e}"));
        first.get_or_insert(out.loss);
        last = out.loss;
        opt.step(&out.grads, 1e-2).unwrap_or_else(|e| panic!("{e}"));
    }
    let first = first.unwrap_or(f32::NAN);
    eprintln!("local distillation: loss {first:.4} -> {last:.4}");
    assert!(last <= 0.1 * first, "loss {first} -> {last}: did not fall to 10%");
}

/// The student on its own path: a converted model (layer 0 a linear block, layer 1 frozen
/// attention) scored on its logits; the gradient of layer 0's block flows back through the
/// frozen attention, SwiGLU MLPs, RMSNorms and the LM head. Directional derivative check.
#[test]
fn gradients_flow_through_frozen_attention_and_mlps() {
    use jetc_ir::{Fact, Op, Outlet};
    for (name, block) in [("llama-dynamo-opset20-eager-nokv", Block::JetBlock), ("qwen3-dynamo-opset20-eager-nokv", Block::GatedDeltaNet)] {
        let mut g = load_raised(&fixture(name)).unwrap_or_else(|e| panic!("{e}"));
        jetc_models::convert::convert(&mut g, &layout(block, vec![1]), 3).unwrap_or_else(|e| panic!("{e}"));
        let logits = g.outputs.iter().find(|o| o.name == "logits").map(|o| o.outlet).expect("logits");
        let fact: Fact = g.fact(logits).expect("fact").clone();
        let target = Outlet::new(g.add_input("target", fact).expect("input"), 0);
        let loss = jetc_train::loss::normalized_mse(&mut g, "path", logits, target).expect("loss");
        g.outputs.clear();
        g.add_output("loss", loss).expect("output");
        jetc_ir::infer::infer_graph(&mut g).expect("infer");
        let params: Vec<_> = g
            .node_ids()
            .filter(|&id| {
                let n = g.node(id).expect("node");
                matches!(n.op, Op::Const(_)) && jetc_passes::linearize::is_block_weight(&n.name) && n.name.starts_with("layers.0.")
            })
            .collect();
        assert!(!params.is_empty());
        let grads = jetc_autodiff::grad(&mut g, loss, &params).unwrap_or_else(|e| panic!("{e}"));
        let session = Session::new(&g).unwrap_or_else(|e| panic!("{e}"));
        let mut rng = StdRng::seed_from_u64(9);
        let (b, t) = (2, 7);
        let tokens = ids(&mut rng, b * t, 100);
        // prefill_inputs refuses unknown inputs (the target): feed it separately.
        let mut inputs = std::collections::HashMap::new();
        for (k, v) in jetc_train::feed::prefill_inputs(&without_target(&g), &tokens, b, t).unwrap_or_else(|e| panic!("{e}")) {
            inputs.insert(k, v);
        }
        let vocab = fact_vocab(&g);
        let tgt = jetc_runtime::Value::f32(ArrayD::from_shape_fn(ndarray::IxDyn(&[b, t, vocab]), |i| ((i[0] * 31 + i[1] * 7 + i[2]) % 13) as f32 * 0.1 - 0.6));
        inputs.insert("target".to_string(), tgt);
        let w: Vec<ArrayD<f32>> = params
            .iter()
            .map(|&id| match &g.node(id).expect("node").op {
                Op::Const(t) => jetc_runtime::Value::from_tensor(t).as_f32().expect("f32").clone(),
                _ => unreachable!(),
            })
            .collect();
        let run = |w: &[ArrayD<f32>]| -> (f64, Vec<ArrayD<f32>>) {
            let mut p = jetc_runtime::Params::new();
            for (&id, a) in params.iter().zip(w) {
                p.insert(id, jetc_runtime::Value::f32(a.clone()));
            }
            let outs: std::collections::HashMap<String, jetc_runtime::Value> = session.run_with(inputs.clone(), &p, &[]).expect("run").into_iter().collect();
            let l = outs["loss"].as_f32().expect("loss").iter().next().copied().expect("scalar") as f64;
            (l, grads.iter().map(|gr| outs[&gr.output].as_f32().expect("grad").clone()).collect())
        };
        let (_, gs) = run(&w);
        let dirs: Vec<ArrayD<f32>> = w.iter().map(|a| a.mapv(|_| rng.random_range(-1.0f32..1.0))).collect();
        let norm: f32 = dirs.iter().map(|d| d.iter().map(|v| v * v).sum::<f32>()).sum::<f32>().sqrt();
        let moved = |s: f32| -> Vec<ArrayD<f32>> { w.iter().zip(&dirs).map(|(a, d)| a + &d.mapv(|v| v * s / norm)).collect() };
        let h = 1e-2f32;
        let numeric = (run(&moved(h)).0 - run(&moved(-h)).0) / (2.0 * h as f64);
        let analytic: f64 = gs.iter().zip(&dirs).map(|(g, d)| g.iter().zip(d.iter()).map(|(&a, &b)| (a * b / norm) as f64).sum::<f64>()).sum();
        let err = (numeric - analytic).abs() / analytic.abs().max(1e-5);
        eprintln!("{name} {block:?} path: numeric {numeric:.6e} analytic {analytic:.6e} rel {err:.1e}");
        assert!(err < 5e-3, "{name} {block:?}: directional derivative {numeric:.6e} vs <grad, d> {analytic:.6e} (rel {err:.2e})");
    }
}

/// The graph without its `target` input (for `prefill_inputs`).
fn without_target(g: &jetc_ir::Graph) -> jetc_ir::Graph {
    let mut c = g.clone();
    let keep: Vec<_> = g.inputs.iter().copied().filter(|&id| g.value_name(jetc_ir::Outlet::new(id, 0)) != "target").collect();
    c.inputs = keep;
    c
}

fn fact_vocab(g: &jetc_ir::Graph) -> usize {
    let id = g.inputs.iter().copied().find(|&id| g.value_name(jetc_ir::Outlet::new(id, 0)) == "target").expect("target");
    let f = g.fact(jetc_ir::Outlet::new(id, 0)).expect("fact");
    f.shape.as_ref().and_then(|s| s.last()).and_then(|d| d.as_known()).expect("vocab") as usize
}
