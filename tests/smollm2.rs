//! A real pretrained model end to end: SmolLM2-135M-Instruct (Q4_1 GGUF, llama architecture,
//! 30 layers, GQA 9/3, tied embeddings) imported from its GGUF file, checked against
//! transformers' own GGUF loader (tests/golden/smollm2, from scripts/make_smollm2_goldens.py):
//! logits of a fixed 31-token prompt, the chat template and its token ids, and the greedy
//! answer to a chat question; decode through the KV cache equals prefill, also after
//! conversion to hybrids (JetBlock with full attention, JetBlock with SWA); the summary
//! reads the architecture back.
//!
//! The model (98 MB) is not in the repository: scripts/fetch_smollm2.sh fetches it and
//! scripts/test.sh exports its path as JETC_SMOLLM2_GGUF. Without the variable these tests
//! print a note and pass.
use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::OnceLock;

use jetc::generate::{GenerateOptions, Generator, Sampling, StopReason};
use jetc::ir::Graph;
use jetc::runtime::npz::read_npz;
use jetc::runtime::Value;
use jetc_gguf::GgufFile;
use jetc_text::{ChatTemplate, Message, Tokenizer};

fn golden_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/golden/smollm2")
}

fn model_path() -> Option<PathBuf> {
    match std::env::var_os("JETC_SMOLLM2_GGUF") {
        Some(p) => Some(PathBuf::from(p)),
        None => {
            eprintln!("skipping: JETC_SMOLLM2_GGUF is not set (scripts/fetch_smollm2.sh prints the path; scripts/test.sh sets it)");
            None
        }
    }
}

/// The raised graph, loaded once for all tests of this binary.
fn model() -> Option<&'static Graph> {
    static GRAPH: OnceLock<Graph> = OnceLock::new();
    let path = model_path()?;
    Some(GRAPH.get_or_init(|| {
        let t = std::time::Instant::now();
        let g = jetc::pipeline::load_raised(&path).unwrap_or_else(|e| panic!("{e}"));
        eprintln!("loaded and raised {} in {:.2} s", path.display(), t.elapsed().as_secs_f64());
        g
    }))
}

fn golden_logits() -> HashMap<String, Value> {
    read_npz(&golden_dir().join("logits.npz")).expect("tests/golden/smollm2/logits.npz").into_iter().collect()
}

fn chat_golden() -> serde_json::Value {
    let text = std::fs::read_to_string(golden_dir().join("chat.json")).expect("chat.json");
    serde_json::from_str(&text).expect("chat.json is JSON")
}

fn ints(v: &Value) -> Vec<i64> {
    v.as_i64().expect("int array").iter().copied().collect()
}

fn floats(v: &Value) -> Vec<f32> {
    v.as_f32().expect("f32 array").iter().copied().collect()
}

fn ids_of(v: &serde_json::Value) -> Vec<u32> {
    v.as_array().expect("ids").iter().map(|x| x.as_u64().expect("id") as u32).collect()
}

/// For each position: max |ours - ref| / max |ref| over every reference logit stored for it
/// (the top 16, a strided sample of 512, and the full row where stored).
fn position_errors(logits: &jetc::generate::Logits, gold: &HashMap<String, Value>) -> Vec<f64> {
    let t = gold["ids"].len();
    let topk_ids = ints(&gold["topk_ids"]);
    let topk_vals = floats(&gold["topk_vals"]);
    let sample_ids = ints(&gold["sample_ids"]);
    let sample = floats(&gold["sample"]);
    let full_pos = ints(&gold["full_pos"]);
    let full = floats(&gold["full"]);
    let (k, s, v) = (topk_ids.len() / t, sample_ids.len(), logits.vocab);
    (0..t)
        .map(|p| {
            let row = logits.row(p);
            let mut pairs: Vec<(f32, f32)> = Vec::new();
            pairs.extend((0..k).map(|j| (row[topk_ids[p * k + j] as usize], topk_vals[p * k + j])));
            pairs.extend((0..s).map(|j| (row[sample_ids[j] as usize], sample[p * s + j])));
            if let Some(i) = full_pos.iter().position(|&q| q as usize == p) {
                pairs.extend(row.iter().copied().zip(full[i * v..(i + 1) * v].iter().copied()));
            }
            let max_ref = pairs.iter().fold(0f64, |m, &(_, r)| m.max(r.abs() as f64));
            pairs.iter().fold(0f64, |m, &(o, r)| m.max((o - r).abs() as f64)) / max_ref
        })
        .collect()
}

#[test]
fn logits_match_transformers() {
    let Some(g) = model() else { return };
    let gold = golden_logits();
    let ids: Vec<u32> = ints(&gold["ids"]).iter().map(|&i| i as u32).collect();
    assert!(ids.len() >= 16);
    let mut gen = Generator::new(g).expect("generator");
    let t = std::time::Instant::now();
    let logits = gen.forward(&ids).expect("prefill");
    eprintln!("prefill of {} tokens: {:.2} s", ids.len(), t.elapsed().as_secs_f64());
    assert_eq!(logits.vocab, 49152);
    let errs = position_errors(&logits, &gold);
    let worst16 = errs[..16].iter().fold(0f64, |a, &b| a.max(b));
    let worst = errs.iter().fold(0f64, |a, &b| a.max(b));
    eprintln!("max relative logit error vs transformers: {worst16:.2e} (first 16 positions), {worst:.2e} (all {})", errs.len());
    assert!(worst16 <= 1e-3, "first 16 positions: max relative error {worst16:e} > 1e-3 ({errs:?})");
    assert!(worst <= 1e-3, "all positions: max relative error {worst:e} > 1e-3");
    // The most likely next token agrees wherever transformers' top two are not a near tie.
    let (topk_ids, topk_vals) = (ints(&gold["topk_ids"]), floats(&gold["topk_vals"]));
    let k = topk_ids.len() / ids.len();
    for p in 0..ids.len() {
        if topk_vals[p * k] - topk_vals[p * k + 1] > 1e-2 {
            assert_eq!(jetc::generate::argmax(logits.row(p)) as i64, topk_ids[p * k], "position {p}: top-1");
        }
    }
}

#[test]
fn decode_token_by_token_equals_prefill() {
    let Some(g) = model() else { return };
    let gold = golden_logits();
    let ids: Vec<u32> = ints(&gold["ids"]).iter().take(16).map(|&i| i as u32).collect();
    let mut gen = Generator::new(g).expect("generator");
    let full = gen.forward(&ids).expect("prefill");
    gen.reset();
    let max_ref = full.data.iter().fold(0f64, |m, &v| m.max(v.abs() as f64));
    for (p, &id) in ids.iter().enumerate() {
        let step = gen.forward(&[id]).expect("decode");
        let diff = step.data.iter().zip(full.row(p)).fold(0f64, |m, (&a, &b)| m.max((a - b).abs() as f64));
        assert!(diff / max_ref < 1e-4, "position {p}: decode vs prefill rel err {:e}", diff / max_ref);
    }
}

#[test]
fn chat_answer_matches_transformers_greedy() {
    let Some(g) = model() else { return };
    let Some(path) = model_path() else { return };
    let gold = chat_golden();
    let file = GgufFile::open(&path).expect("open");
    let tok = Tokenizer::from_gguf(&file).expect("tokenizer");
    let template = ChatTemplate::from_gguf(&file, &tok).expect("template").expect("the model has a chat template");
    // The template adds SmolLM's default system prompt when there is none.
    let rendered = template.render(&[Message::new("user", "What is the capital of France?")], true).expect("render");
    assert_eq!(rendered, gold["rendered"].as_str().expect("rendered"));
    let ids = tok.encode(&rendered, false).expect("encode");
    assert_eq!(ids, ids_of(&gold["ids"]), "chat prompt ids");

    let mut gen = Generator::new(g).expect("generator");
    let opts = GenerateOptions { max_tokens: 32, sampling: Sampling::Greedy, stop_ids: tok.eos_ids() };
    let mut streamed = Vec::new();
    let r = gen.generate(&ids, &opts, &mut |t| { streamed.push(t); true }).expect("generate");
    let text = tok.decode(&r.ids, true).expect("decode");
    eprintln!(
        "answer {text:?}: prefill {:.1} tok/s, decode {:.1} tok/s ({} steps)",
        r.prefill_tokens_per_s(),
        r.decode_tokens_per_s(),
        r.decode_steps
    );
    // transformers' greedy ids end with the EOS that stopped it; ours report it as the reason.
    let mut want = ids_of(&gold["greedy_ids"]);
    let eos = want.pop().expect("ids");
    assert_eq!(r.stop, StopReason::Eos(eos));
    assert_eq!(r.ids, want);
    assert_eq!(streamed, r.ids);
    assert_eq!(text, "The capital of France is Paris.");
    assert_eq!(text, gold["greedy_text"].as_str().expect("text"));
}

#[test]
fn summary_reads_the_architecture_back() {
    let Some(g) = model() else { return };
    let s = jetc::passes::summary::summarize(g).expect("summary");
    assert_eq!((s.layers, s.hidden, s.vocab, s.intermediate, s.tied_embeddings), (30, 576, 49152, Some(1536), true));
    // 134.5 M parameters (the embedding counted once).
    assert!((134_000_000..135_000_000).contains(&s.params), "params {}", s.params);
    for m in &s.mixers {
        assert_eq!((m.kind, m.heads, m.kv_heads, m.head_dim, m.rope, m.window), ("attention", 9, 3, 64, true, None));
        assert_eq!(m.cache_bytes_per_token, 2 * 3 * 64 * 4);
    }
    assert_eq!(s.kv_cache_bytes_per_token, 30 * 2 * 3 * 64 * 4);
}

/// The generation loop on converted SmolLM2s: JetBlock everywhere but layers 0 and 15 (full
/// attention), and JetBlock everywhere but layers 1-3 (SWA, window 4, so the 12-token run
/// truncates their caches). Token-by-token decode through KV, conv and recurrent caches
/// equals the one-pass prefill.
#[test]
fn converted_models_decode_like_they_prefill() {
    use jetc::convert::{convert, Layout};
    use jetc::passes::linearize::{Block, MixerConfig};
    let Some(base) = model() else { return };
    let gold = golden_logits();
    let ids: Vec<u32> = ints(&gold["ids"]).iter().take(12).map(|&i| i as u32).collect();
    for (full_attn, swa, window) in [(vec![0, 15], vec![], None), (vec![], vec![1, 2, 3], Some(4))] {
        let mut g = base.clone();
        let layout = Layout { full_attn, swa, window, block: Block::JetBlock, blocks: vec![], config: MixerConfig::default() };
        convert(&mut g, &layout, 0).expect("convert");
        let mut gen = Generator::new(&g).expect("generator");
        let full = gen.forward(&ids).expect("prefill");
        gen.reset();
        let max_ref = full.data.iter().fold(0f64, |m, &v| m.max(v.abs() as f64));
        for (p, &id) in ids.iter().enumerate() {
            let step = gen.forward(&[id]).unwrap_or_else(|e| panic!("{layout:?}: decode: {e}"));
            let diff = step.data.iter().zip(full.row(p)).fold(0f64, |m, (&a, &b)| m.max((a - b).abs() as f64));
            assert!(diff / max_ref < 1e-4, "{layout:?} position {p}: decode vs prefill rel err {:e}", diff / max_ref);
        }
        let opts = GenerateOptions { max_tokens: 4, sampling: Sampling::Greedy, stop_ids: vec![] };
        let r = gen.generate(&ids, &opts, &mut |_| true).expect("generate");
        assert_eq!((r.ids.len(), r.stop), (4, StopReason::MaxTokens));
    }
}
