//! `jetc_models::bench` on a real export and its hybrid: the caches are filled to the asked
//! context, the bytes a step must move are counted from the graph's own cache shapes, a KV
//! cache grows with the context while a JetBlock state and a sliding window do not, and the
//! weights a step reads leave out the embedding table it only gathers from.
mod common;

use common::*;
use jetc::bench::Bench;
use jetc::convert::{convert, Layout};
use jetc::ir::{Op, Outlet};
use jetc::passes::linearize::{Block, MixerConfig};
use jetc::pipeline::load_raised;
#[allow(unused_imports)]
use ndarray as _;

const FIXTURE: &str = "qwen2-dynamo-opset20-sdpa-kv/model.onnx";

/// Bytes of one cached token over every KV cache input ([B, kv heads, past, head dim]; f32).
fn kv_bytes_per_token(g: &jetc::ir::Graph) -> u64 {
    g.inputs
        .iter()
        .filter_map(|&id| {
            let o = Outlet::new(id, 0);
            let name = g.value_name(o).to_string();
            let fact = g.fact(o).ok()?;
            let shape = fact.shape.as_ref()?;
            // A growing axis 2 (the past length, symbolic) tells a KV cache from a linear state.
            let grows = shape.len() == 4 && shape[2].as_known().is_none();
            (name.starts_with("past") && grows).then(|| Some(4 * (shape[1].as_known()? * shape[3].as_known()?) as u64)).flatten()
        })
        .sum()
}

/// f32 bytes of every float constant but the embedding table (a step gathers only its rows).
fn weights_read_whole(g: &jetc::ir::Graph) -> u64 {
    let table = g.node_ids().find_map(|id| match &g.node(id).ok()?.op {
        Op::Embedding => g.node(id).ok()?.inputs()[0].map(|o| o.node),
        _ => None,
    });
    g.node_ids()
        .filter(|&id| Some(id) != table)
        .filter_map(|id| match &g.node(id).ok()?.op {
            Op::Const(t) if t.dtype().is_float() => Some(4 * t.numel() as u64),
            _ => None,
        })
        .sum()
}

#[test]
fn decode_bytes_follow_the_caches_the_graph_declares() {
    let g = load_raised(&fixtures_dir().join(FIXTURE)).expect("load");
    let per_token = kv_bytes_per_token(&g);
    assert!(per_token > 0, "the fixture has KV caches");
    let mut bench = Bench::new(&g).expect("bench");
    let (batch, steps) = (2, 3);
    let d10 = bench.decode(batch, 10, steps, 1).expect("decode at 10");
    let d40 = bench.decode(batch, 40, steps, 1).expect("decode at 40");
    // After the untimed step the caches hold context + 1 tokens of every sequence.
    assert_eq!(d10.cache_bytes, batch as u64 * 11 * per_token);
    assert_eq!(d40.cache_bytes, batch as u64 * 41 * per_token);
    assert_eq!(d10.weight_bytes, weights_read_whole(&g));
    // Step i reads context + 1 + i tokens and writes one: the mean over 3 steps is
    // context + 3 tokens per sequence.
    assert_eq!(d10.bytes_per_step, d10.weight_bytes + batch as u64 * 13 * per_token);
    assert_eq!(d40.bytes_per_step - d10.bytes_per_step, batch as u64 * 30 * per_token);
    for d in [&d10, &d40] {
        assert_eq!((d.batch, d.steps), (batch, steps));
        assert!(d.tokens_per_s > 0.0 && d.median_step_s > 0.0 && d.effective_gb_per_s > 0.0, "{d:?}");
        assert!(d.peak_value_bytes >= d.cache_bytes, "the caches are live during a step: {d:?}");
    }
    let p = bench.prefill(batch, 7, 0).expect("prefill");
    assert_eq!((p.batch, p.tokens), (batch, 7));
    assert!(p.tokens_per_s > 0.0);
}

#[test]
fn a_hybrid_moves_the_same_bytes_at_every_context() {
    // Layer 0 a JetBlock (fixed state and conv cache), layer 1 sliding-window attention over 3
    // tokens: nothing grows with the context once the window is full.
    let mut g = load_raised(&fixtures_dir().join(FIXTURE)).expect("load");
    let layout = Layout { full_attn: vec![], swa: vec![1], window: Some(3), block: Block::JetBlock, blocks: vec![], config: MixerConfig::default() };
    convert(&mut g, &layout, 0).expect("convert");
    let mut bench = Bench::new(&g).expect("bench");
    let d10 = bench.decode(2, 10, 2, 0).expect("decode at 10");
    let d50 = bench.decode(2, 50, 2, 0).expect("decode at 50");
    assert_eq!(d10.cache_bytes, d50.cache_bytes);
    assert_eq!(d10.bytes_per_step, d50.bytes_per_step);
    // The window's cache (3 tokens of the SWA layer) and the JetBlock's state and conv cache,
    // read once and the fixed-size ones written once.
    let window = 2 * 3 * kv_bytes_per_token(&g);
    assert!(d10.cache_bytes > window, "the JetBlock's state is cached too: {d10:?}");
    assert!(d10.bytes_per_step > d10.weight_bytes + d10.cache_bytes, "fixed states are written back: {d10:?}");
}

#[test]
fn a_model_without_caches_is_refused_by_name() {
    let g = load_raised(&fixtures_dir().join("qwen2-dynamo-opset20-eager-nokv/model.onnx")).expect("load");
    let e = Bench::new(&g).err().expect("no caches");
    assert!(e.to_string().contains("no caches"), "{e}");
}
