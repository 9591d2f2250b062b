//! The supernet: every layer's switch set to X gives the same outputs as the model `place`
//! builds with layout X, and placing full attention everywhere gives back the original model.
mod common;

use common::*;
use jetc::passes::linearize::{Block, MixerConfig};
use jetc::passes::supernet::{Place, Supernet};
use jetc::passes::PassManager;
use jetc::pipeline::load_raised;
use jetc::runtime::Session;

const FIXTURE: &str = "qwen2-dynamo-opset20-eager-nokv";

#[test]
fn switch_choices_equal_placed_models() {
    let base = load_raised(&fixtures_dir().join(FIXTURE).join("model.onnx")).expect("load");
    let mut sup = base.clone();
    PassManager::new()
        .add(Box::new(Supernet { window: Some(2), linear: Block::ALL.to_vec(), config: MixerConfig::default(), seed: 3 }))
        .run(&mut sup)
        .expect("supernet");
    let text = jetc::ir::print::print_graph(&sup).expect("print");
    assert_eq!(text.matches("Switch(").count(), 2, "one switch per layer");
    let session = Session::new(&sup).expect("session");
    let (_, inputs, want) = cases(FIXTURE).remove(0);
    let mut names = vec!["attn", "swa"];
    names.extend(Block::ALL.iter().map(|&b| jetc::passes::supernet::choice_name(b)));
    let mut distinct = Vec::new();
    // Every choice on each layer at least once, mixed with the others.
    let n = names.len();
    for (a, b) in (0..n).map(|i| (i, (i + 1) % n)).chain([(0, 0), (1, 1), (2, 2)]) {
        let from_supernet = session.run_with_choices(inputs.clone(), &[a, b]).expect("supernet run");
        let mut placed = sup.clone();
        PassManager::new()
            .add(Box::new(Place { layout: vec![names[a].into(), names[b].into()] }))
            .run(&mut placed)
            .expect("place");
        assert!(!jetc::ir::print::print_graph(&placed).expect("print").contains("Switch("));
        let from_placed = Session::new(&placed).expect("session").run(inputs.clone()).expect("placed run");
        compare_outputs(&format!("layout {}/{}", names[a], names[b]), &from_supernet, &from_placed, 1e-6);
        distinct.push(from_placed[0].1.clone());
        if (a, b) == (0, 0) {
            compare_outputs("all attention", &from_placed, &want, 1e-4);
        }
    }
    // The choices matter: different layouts give different logits.
    assert!(distinct.windows(2).all(|w| rel_err("layouts", &w[0], &w[1]) > 1e-6));
}

#[test]
fn bad_placements_are_refused() {
    let mut sup = load_raised(&fixtures_dir().join(FIXTURE).join("model.onnx")).expect("load");
    PassManager::new().add(Box::new(Supernet { window: None, linear: vec![Block::JetBlock], config: MixerConfig::default(), seed: 0 })).run(&mut sup).expect("supernet");
    let r = PassManager::new().add(Box::new(Place { layout: vec!["jet".into()] })).run(&mut sup.clone());
    assert!(r.is_err_and(|e| e.to_string().contains("names 1 layers")));
    let r = PassManager::new().add(Box::new(Place { layout: vec!["swa".into(), "jet".into()] })).run(&mut sup);
    assert!(r.is_err_and(|e| e.to_string().contains("no alternative `swa`")));
}
