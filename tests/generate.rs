//! The generation engine (`jetc::generate`) on every exporter's fixture and on converted
//! hybrids: its prefill logits equal onnxruntime's reference outputs of the fixture,
//! token-by-token decode through the fed-back caches equals the one-pass prefill (KV caches,
//! SWA's truncated caches, JetBlock/DeltaNet conv and recurrent states, and graphs without
//! caches, which re-run the sequence), and stopping (eos, token budget, callback) is exact.
mod common;

use common::*;
use jetc::convert::{convert, Layout};
use jetc::generate::{argmax, GenerateOptions, Generator, Logits, Sampling, StopReason};
use jetc::passes::linearize::{Block, MixerConfig};
use jetc::pipeline::load_raised;
use jetc::runtime::Value;

/// Max |a - b| / max |b| over all rows.
fn rel(a: &Logits, b: &Logits) -> f64 {
    assert_eq!((a.vocab, a.data.len()), (b.vocab, b.data.len()), "logits shape");
    let max_ref = b.data.iter().fold(0f64, |m, &v| m.max(v.abs() as f64));
    let diff = a.data.iter().zip(&b.data).fold(0f64, |m, (&x, &y)| m.max((x - y).abs() as f64));
    diff / max_ref.max(1e-30)
}

/// Prefill of `ids` in one pass vs one token at a time (fresh state each).
fn decode_vs_prefill(gen: &mut Generator, ids: &[u32]) -> (Logits, f64) {
    gen.reset();
    let full = gen.forward(ids).expect("prefill");
    gen.reset();
    let mut data = Vec::new();
    for &id in ids {
        data.extend(gen.forward(&[id]).expect("decode").data);
    }
    assert_eq!(gen.position(), ids.len());
    let steps = Logits { vocab: full.vocab, data };
    let e = rel(&steps, &full);
    (full, e)
}

/// Batch row 0 of the fixture's `past0` case (no padding, positions 0..T) and its logits.
fn row0(fixture: &str) -> (Vec<u32>, Logits) {
    let (_, inputs, outputs) = cases(fixture).into_iter().find(|c| c.0 == "past0").expect("past0");
    let ids = inputs["input_ids"].as_i64().expect("ids");
    if let Some(m) = inputs.get("attention_mask") {
        assert!(m.as_i64().expect("mask").row(0).iter().all(|&v| v == 1), "{fixture}: row 0 is padded");
    }
    let ids: Vec<u32> = ids.row(0).iter().map(|&v| v as u32).collect();
    let logits: &Value = &outputs.iter().find(|(n, _)| n == "logits").expect("logits").1;
    let a = logits.as_f32().expect("f32");
    let vocab = a.shape()[2];
    let data: Vec<f32> = a.index_axis(ndarray::Axis(0), 0).iter().copied().collect();
    (ids, Logits { vocab, data })
}

trait Row0 {
    fn row(&self, i: usize) -> ndarray::ArrayView1<'_, i64>;
}
impl Row0 for ndarray::ArrayD<i64> {
    fn row(&self, i: usize) -> ndarray::ArrayView1<'_, i64> {
        self.index_axis(ndarray::Axis(0), i).into_dimensionality().expect("2-d ids")
    }
}

#[test]
fn every_fixture_prefills_like_onnxruntime_and_decodes_like_it_prefills() {
    for fixture in fixture_names() {
        let g = load_raised(&fixtures_dir().join(&fixture).join("model.onnx")).expect("load");
        let mut gen = Generator::new(&g).unwrap_or_else(|e| panic!("{fixture}: {e}"));
        let (ids, want) = row0(&fixture);
        let (full, e) = decode_vs_prefill(&mut gen, &ids);
        let r = rel(&full, &want);
        assert!(r < 1e-4, "{fixture}: prefill vs onnxruntime rel err {r:e}");
        assert!(e < 1e-4, "{fixture}: decode vs prefill rel err {e:e} (caches: {})", gen.has_caches());
    }
}

#[test]
fn converted_hybrids_decode_like_they_prefill() {
    let ids = [5u32, 17, 99, 3, 42, 64, 7, 120, 31];
    for fixture in ["qwen2-dynamo-opset20-sdpa-kv", "llama-genai-builder"] {
        for block in Block::ALL {
            // The genai builder's RoPE positions come from the KV cache length of the
            // first attention layer, which an SWA layer truncates: SWA only on dynamo.
            let layouts = if fixture == "llama-genai-builder" { vec![(vec![1], vec![])] } else { vec![(vec![1], vec![]), (vec![], vec![1])] };
            for (full, swa) in layouts {
                let mut g = load_raised(&fixtures_dir().join(fixture).join("model.onnx")).expect("load");
                let window = (!swa.is_empty()).then_some(3);
                let layout = Layout { full_attn: full, swa, window, block, blocks: vec![], config: MixerConfig::default() };
                convert(&mut g, &layout, 0).expect("convert");
                // Identity short convs would hide a wrong conv cache.
                perturb_short_convs(&mut g, 11);
                let mut gen = Generator::new(&g).unwrap_or_else(|e| panic!("{fixture} {block:?}: {e}"));
                assert!(gen.has_caches());
                let (_, e) = decode_vs_prefill(&mut gen, &ids);
                assert!(e < 1e-4, "{fixture} {block:?} window {window:?}: decode vs prefill rel err {e:e}");
                // Greedy generation is deterministic and follows the argmax of the logits.
                let opts = GenerateOptions { max_tokens: 6, sampling: Sampling::Greedy, stop_ids: vec![] };
                let a = gen.generate(&ids, &opts, &mut |_| true).expect("generate");
                let b = gen.generate(&ids, &opts, &mut |_| true).expect("generate");
                assert_eq!(a.ids, b.ids);
                gen.reset();
                let first = argmax(gen.forward(&ids).expect("forward").last());
                assert_eq!(a.ids[0], first);
            }
        }
    }
}

#[test]
fn generation_stops_where_it_should() {
    let fixture = "llama-dynamo-opset20-sdpa-kv";
    let g = load_raised(&fixtures_dir().join(fixture).join("model.onnx")).expect("load");
    let mut gen = Generator::new(&g).expect("generator");
    let prompt = [1u32, 2, 3, 4];
    let greedy = |max_tokens, stop_ids| GenerateOptions { max_tokens, sampling: Sampling::Greedy, stop_ids };
    let r = gen.generate(&prompt, &greedy(5, vec![]), &mut |_| true).expect("generate");
    assert_eq!((r.ids.len(), r.stop, r.decode_steps, r.prompt_tokens), (5, StopReason::MaxTokens, 4, 4));
    // Decoding greedily step by step by hand gives the same tokens.
    gen.reset();
    let mut next = argmax(gen.forward(&prompt).expect("forward").last());
    let mut manual = vec![];
    for _ in 0..5 {
        manual.push(next);
        next = argmax(gen.forward(&[next]).expect("forward").last());
    }
    assert_eq!(r.ids, manual);
    // The third token as end-of-sequence: two tokens, and it is not among them.
    let eos = r.ids[2];
    let first_eos = r.ids.iter().position(|&t| t == eos).expect("present");
    let s = gen.generate(&prompt, &greedy(5, vec![eos]), &mut |_| true).expect("generate");
    assert_eq!((s.ids.as_slice(), s.stop), (&r.ids[..first_eos], StopReason::Eos(eos)));
    // The callback sees every token and can stop early.
    let mut seen = vec![];
    let c = gen.generate(&prompt, &greedy(5, vec![]), &mut |t| { seen.push(t); seen.len() < 2 }).expect("generate");
    assert_eq!((c.ids.as_slice(), c.stop), (&r.ids[..2], StopReason::Callback));
    assert_eq!(seen, c.ids);
    // No token budget: no token, no decode step.
    let z = gen.generate(&prompt, &greedy(0, vec![]), &mut |_| true).expect("generate");
    assert_eq!((z.ids.len(), z.decode_steps), (0, 0));
    // Seeded sampling is reproducible and differs across seeds somewhere.
    let sample = |seed| GenerateOptions { max_tokens: 12, sampling: Sampling::TopP { temperature: 1.5, top_p: 0.95, seed }, stop_ids: vec![] };
    let a = gen.generate(&prompt, &sample(1), &mut |_| true).expect("sample");
    assert_eq!(a.ids, gen.generate(&prompt, &sample(1), &mut |_| true).expect("sample").ids);
    let others: Vec<Vec<u32>> = (2..6).map(|s| gen.generate(&prompt, &sample(s), &mut |_| true).expect("sample").ids).collect();
    assert!(others.iter().any(|o| *o != a.ids), "sampling ignores the seed");
    // An empty prompt is an error, not a panic.
    assert!(gen.generate(&[], &greedy(3, vec![]), &mut |_| true).is_err());
}
