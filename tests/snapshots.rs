//! Snapshot tests of import + canonicalize + raise: the printed IR of one fixture per
//! exporter family (and both model families on the dynamo path). The printer renumbers
//! values topologically, so these are stable across runs and machines; a diff here is a
//! change in what jetc recognises and must be reviewed (`cargo insta review`).
mod common;

use common::fixtures_dir;
use jetc::ir::print::print_graph;
use jetc::pipeline::load_raised;

fn raised(name: &str) -> String {
    let g = load_raised(&fixtures_dir().join(name).join("model.onnx")).unwrap_or_else(|e| panic!("{name}: {e}"));
    print_graph(&g).unwrap_or_else(|e| panic!("{name}: {e}"))
}

macro_rules! snapshot {
    ($test:ident, $fixture:expr) => {
        #[test]
        fn $test() {
            insta::assert_snapshot!($fixture, raised($fixture));
        }
    };
}

snapshot!(dynamo_opset18_eager, "qwen2-dynamo-opset18-eager-kv");
snapshot!(dynamo_opset20_sdpa, "qwen2-dynamo-opset20-sdpa-kv");
snapshot!(dynamo_opset20_sdpa_llama, "llama-dynamo-opset20-sdpa-kv");
snapshot!(dynamo_opset20_nokv, "qwen2-dynamo-opset20-eager-nokv");
snapshot!(dynamo_opset23, "qwen2-dynamo-opset23-sdpa-kv");
snapshot!(dynamo_opset24, "qwen2-dynamo-opset24-sdpa-kv");
snapshot!(dynamo_opset25, "qwen2-dynamo-opset25-eager-kv");
snapshot!(legacy_torchscript, "qwen2-legacy-opset17-kv");
snapshot!(optimum, "qwen2-optimum");
snapshot!(transformers_exporter, "qwen2-transformers-exporter");
snapshot!(transformers_exporter_ortfused, "qwen2-transformers-exporter-ortfused");
snapshot!(transformers_exporter_ortfused_prefill, "llama-transformers-exporter-ortfused-prefill");
snapshot!(genai_builder, "qwen2-genai-builder");

#[test]
fn printing_is_deterministic() {
    let a = raised("qwen2-legacy-opset17-kv");
    let b = raised("qwen2-legacy-opset17-kv");
    assert_eq!(a, b);
}

/// The conversion passes on one fixture: layer 0 JetBlock (linearize), layer 1 SWA, then
/// the same model lowered to standard ONNX ops.
fn converted() -> jetc::ir::Graph {
    use jetc::convert::{convert, Layout};
    use jetc::passes::linearize::{Block, MixerConfig};
    let mut g = load_raised(&fixtures_dir().join("qwen2-dynamo-opset20-sdpa-kv/model.onnx")).expect("load");
    let layout = Layout { full_attn: vec![], swa: vec![1], window: Some(3), block: Block::JetBlock, blocks: vec![], config: MixerConfig::default() };
    convert(&mut g, &layout, 0).expect("convert");
    g
}

#[test]
fn linearize_and_swa() {
    insta::assert_snapshot!("converted-jet-swa", print_graph(&converted()).expect("print"));
}

#[test]
fn lowered_to_onnx_ops() {
    let mut g = converted();
    jetc::passes::PassManager::new().add(Box::new(jetc::passes::lower::Lower)).run(&mut g).expect("lower");
    insta::assert_snapshot!("converted-jet-swa-lowered", print_graph(&g).expect("print"));
}

#[test]
fn supernet_switches() {
    use jetc::passes::linearize::{Block, MixerConfig};
    use jetc::passes::supernet::Supernet;
    let mut g = load_raised(&fixtures_dir().join("qwen2-dynamo-opset20-eager-nokv/model.onnx")).expect("load");
    jetc::passes::PassManager::new()
        .add(Box::new(Supernet { window: Some(2), linear: vec![Block::JetBlock], config: MixerConfig::default(), seed: 0 }))
        .run(&mut g)
        .expect("supernet");
    insta::assert_snapshot!("supernet-attn-swa-jet", print_graph(&g).expect("print"));
}

#[test]
fn fused_jetblock() {
    let mut g = converted();
    jetc::passes::PassManager::new().add(Box::new(jetc::passes::fuse::Fuse)).run(&mut g).expect("fuse");
    insta::assert_snapshot!("converted-jet-swa-fused", print_graph(&g).expect("print"));
}

/// Every linear block as `linearize` builds it (layer 0; layer 1 keeps attention).
#[test]
fn linearized_blocks() {
    use jetc::convert::{convert, Layout};
    use jetc::passes::linearize::{Block, MixerConfig};
    for block in Block::ALL.into_iter().filter(|&b| b != Block::JetBlock) {
        let mut g = load_raised(&fixtures_dir().join("qwen2-dynamo-opset20-sdpa-kv/model.onnx")).expect("load");
        let layout = Layout { full_attn: vec![1], swa: vec![], window: None, block, blocks: vec![], config: MixerConfig::default() };
        convert(&mut g, &layout, 0).expect("convert");
        insta::assert_snapshot!(format!("linearized-{}", block.name()), print_graph(&g).expect("print"));
    }
}
