//! The path graph's optional terms and weights on a fixture: the data cross-entropy equals
//! the converted model's own next-token NLL (scored in f64 from its logits, outside the graph),
//! and with `train_attn` the gradients of the attention projections, together with the
//! blocks', match finite differences of the same loss.
use std::path::PathBuf;

use jetc_models::convert::{convert, Layout};
use jetc_models::pipeline::load_raised;
use jetc_passes::linearize::{Block, MixerConfig};
use jetc_runtime::Session;
use jetc_train::feed::{prefill_inputs, prefill_inputs_except};
use jetc_train::path::{build_path, initial_values, labels_of, run_path, teacher_graph, teacher_targets, PathOptions, Targets, LABELS};
use ndarray::ArrayD;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

fn fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures").join(name).join("model.onnx")
}

fn layout() -> Layout {
    Layout { full_attn: vec![0], swa: vec![], window: None, block: Block::JetBlock, blocks: vec![], config: MixerConfig::default() }
}

fn is_input(n: &str) -> bool {
    n.starts_with("target.") || n == LABELS || n == jetc_train::path::TEACHER_PROBS
}

#[test]
fn data_cross_entropy_is_the_converted_models_next_token_nll() {
    let teacher = load_raised(&fixture("llama-dynamo-opset20-eager-nokv")).unwrap_or_else(|e| panic!("{e}"));
    let opts = PathOptions { features: false, kl_weight: 0.0, ce_weight: 1.0, ..PathOptions::default() };
    let pg = build_path(&teacher, &layout(), 5, opts).unwrap_or_else(|e| panic!("{e}"));
    let session = Session::new(&pg.graph).unwrap_or_else(|e| panic!("{e}"));
    let (b, t) = (2, 9);
    let mut rng = StdRng::seed_from_u64(11);
    let ids: Vec<i64> = (0..b * t).map(|_| rng.random_range(0..120)).collect();
    let feed = prefill_inputs_except(&pg.graph, &ids, b, t, &is_input).unwrap_or_else(|e| panic!("{e}"));
    let targets = Targets { hidden: vec![], probs: None, entropy: None, labels: Some(labels_of(&ids, b, t).unwrap_or_else(|e| panic!("{e}"))) };
    let w: Vec<ArrayD<f32>> = initial_values(&pg).unwrap_or_else(|e| panic!("{e}")).into_iter().map(|p| p.1).collect();
    let out = run_path(&pg, &session, feed, &targets, &w).unwrap_or_else(|e| panic!("{e}"));
    let ce = out.data_cross_entropy.expect("data cross-entropy");
    assert_eq!(out.loss, ce, "the data term is the whole loss here");

    // The same hybrid built by `convert`, its logits scored here in f64.
    let mut g = teacher.clone();
    convert(&mut g, &layout(), 5).unwrap_or_else(|e| panic!("{e}"));
    let s = Session::new(&g).unwrap_or_else(|e| panic!("{e}"));
    let outs = s.run(prefill_inputs(&g, &ids, b, t).unwrap_or_else(|e| panic!("{e}"))).unwrap_or_else(|e| panic!("{e}"));
    let logits = outs.into_iter().find(|(n, _)| n == "logits").and_then(|(_, v)| v.as_f32().cloned()).expect("logits");
    let vocab = *logits.shape().last().expect("vocab axis");
    let flat: Vec<f32> = logits.iter().copied().collect();
    let mut nll = 0.0f64;
    for (i, window) in ids.chunks(t).enumerate() {
        for p in 0..t - 1 {
            let row = &flat[(i * t + p) * vocab..(i * t + p + 1) * vocab];
            let max = row.iter().fold(f64::NEG_INFINITY, |m, &v| m.max(v as f64));
            let lse = max + row.iter().map(|&v| (v as f64 - max).exp()).sum::<f64>().ln();
            nll += lse - row[window[p + 1] as usize] as f64;
        }
    }
    let want = nll / (b * (t - 1)) as f64;
    assert!((ce as f64 - want).abs() < 1e-4 * want.abs().max(1.0), "data cross-entropy {ce} vs the logits' NLL {want}");
    assert!(labels_of(&ids, b, 1).is_err(), "one-token windows have no next token");
}

#[test]
fn attention_and_block_gradients_match_finite_differences() {
    let teacher = load_raised(&fixture("llama-dynamo-opset20-eager-nokv")).unwrap_or_else(|e| panic!("{e}"));
    let opts = PathOptions { features: true, kl_weight: 0.5, ce_weight: 1.0, train_attn: true, ..PathOptions::default() };
    let pg = build_path(&teacher, &layout(), 5, opts).unwrap_or_else(|e| panic!("{e}"));
    let attn_weights = jetc_train::path::attention_weights(&teacher).unwrap_or_else(|e| panic!("{e}"));
    let layer0: Vec<&String> = attn_weights.iter().map(|w| &w.1).collect();
    assert!(layer0.len() >= 4, "the fixture's attention has q, k, v, o projections: {layer0:?}");
    let trained: Vec<&str> = pg.params.iter().map(|p| p.1.as_str()).collect();
    // Layer 0 stays attention: its projections train; layer 1 is a JetBlock.
    let attn_trained = trained.iter().filter(|n| !n.starts_with("layers.")).count();
    assert!(attn_trained >= 4, "attention weights among the trained: {trained:?}");
    assert!(trained.iter().any(|n| n.starts_with("layers.1.jet.")), "{trained:?}");

    let (b, t) = (2, 8);
    let mut rng = StdRng::seed_from_u64(4);
    let ids: Vec<i64> = (0..b * t).map(|_| rng.random_range(0..120)).collect();
    let tg = teacher_graph(&teacher, true, true).unwrap_or_else(|e| panic!("{e}"));
    let ts = Session::new(&tg).unwrap_or_else(|e| panic!("{e}"));
    let mut targets = teacher_targets(&ts, prefill_inputs(&tg, &ids, b, t).unwrap_or_else(|e| panic!("{e}")), pg.layers, true).unwrap_or_else(|e| panic!("{e}"));
    targets.labels = Some(labels_of(&ids, b, t).unwrap_or_else(|e| panic!("{e}")));
    let session = Session::new(&pg.graph).unwrap_or_else(|e| panic!("{e}"));
    let feed = || prefill_inputs_except(&pg.graph, &ids, b, t, &is_input).unwrap_or_else(|e| panic!("{e}"));
    let w: Vec<ArrayD<f32>> = initial_values(&pg).unwrap_or_else(|e| panic!("{e}")).into_iter().map(|p| p.1).collect();
    let out = run_path(&pg, &session, feed(), &targets, &w).unwrap_or_else(|e| panic!("{e}"));
    // One direction over the attention weights, one over everything.
    for attn_only in [true, false] {
        let dirs: Vec<ArrayD<f32>> = w
            .iter()
            .zip(&pg.params)
            .map(|(a, (_, n))| if attn_only && n.starts_with("layers.") { a.mapv(|_| 0.0) } else { a.mapv(|_| rng.random_range(-1.0f32..1.0)) })
            .collect();
        let norm: f32 = dirs.iter().map(|d| d.iter().map(|v| v * v).sum::<f32>()).sum::<f32>().sqrt();
        let along = |s: f32| -> f64 {
            let moved: Vec<ArrayD<f32>> = w.iter().zip(&dirs).map(|(a, d)| a + &d.mapv(|v| v * s / norm)).collect();
            run_path(&pg, &session, feed(), &targets, &moved).unwrap_or_else(|e| panic!("{e}")).loss as f64
        };
        let h = 1e-2f32;
        let numeric = (along(h) - along(-h)) / (2.0 * h as f64);
        let analytic: f64 = out.grads.iter().zip(&dirs).map(|(g, d)| g.iter().zip(d.iter()).map(|(&a, &b)| (a * b / norm) as f64).sum::<f64>()).sum();
        let err = (numeric - analytic).abs() / analytic.abs().max(1e-4);
        eprintln!("attention only {attn_only}: numeric {numeric:.6e} analytic {analytic:.6e} rel {err:.1e}");
        assert!(err < 1e-2, "attention only {attn_only}: directional derivative {numeric:.6e} vs <grad, d> {analytic:.6e} (rel {err:.2e})");
    }
}
