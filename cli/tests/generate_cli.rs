//! `jetc generate` as a user runs it: an ONNX decoder with a `tokenizer.json` (and a chat
//! template in `tokenizer_config.json`) beside it, streamed and `--json` output, greedy ids
//! equal to the library's generation loop, seeded sampling; SmolLM2's GGUF answering a chat
//! question and streaming Japanese whole characters (when JETC_SMOLLM2_GGUF is set, as
//! scripts/test.sh does); and clear errors for models it cannot generate with.
use std::path::{Path, PathBuf};
use std::process::Output;

use jetc::generate::{GenerateOptions, Generator, Sampling};
use jetc_gguf::{GgufWriter, MetaValue};

mod common;
use common::{fails, jetc, repo, stdout, word_tokenizer, Tmp};

fn tmp(tag: &str) -> Tmp {
    common::tmp("generate-cli", tag)
}

/// A fixture decoder (vocab 128) with a word-level tokenizer: token i is `w{i}`, words are
/// split on whitespace and joined with spaces; the chat template writes the contents and,
/// for a generation prompt, `w9`.
fn onnx_with_tokenizer(dir: &Path) -> PathBuf {
    let fixture = repo().join("tests/fixtures/llama-dynamo-opset20-sdpa-kv");
    for f in ["model.onnx", "model.onnx.data"] {
        std::fs::copy(fixture.join(f), dir.join(f)).expect("copy fixture");
    }
    let config = serde_json::json!({
        "chat_template": "{% for m in messages %}{{ m['content'] }} {% endfor %}{% if add_generation_prompt %}w9{% endif %}"
    });
    word_tokenizer(dir, 128, None, config);
    dir.join("model.onnx")
}

fn json_of(out: &Output) -> serde_json::Value {
    serde_json::from_str(&stdout(out)).expect("--json prints JSON")
}

fn ids(v: &serde_json::Value) -> Vec<u32> {
    v.as_array().expect("ids").iter().map(|x| x.as_u64().expect("id") as u32).collect()
}

#[test]
fn onnx_model_with_tokenizer_json() {
    let dir = tmp("onnx");
    let model = onnx_with_tokenizer(&dir.0);
    let m = model.to_str().expect("utf-8");
    // --json: prompt ids from the tokenizer, generated ids equal to the library's greedy loop.
    let j = json_of(&jetc(&["generate", m, "--prompt", "w1 w2 w3", "--max-tokens", "6", "--json"]));
    assert_eq!(ids(&j["prompt_ids"]), [1, 2, 3]);
    assert_eq!(j["prompt_tokens"], 3);
    let g = jetc::pipeline::load_raised(&model).expect("load");
    let mut gen = Generator::new(&g).expect("generator");
    let opts = GenerateOptions { max_tokens: 6, sampling: Sampling::Greedy, stop_ids: vec![] };
    let want = gen.generate(&[1, 2, 3], &opts, &mut |_| true).expect("generate");
    assert_eq!(ids(&j["ids"]), want.ids);
    assert_eq!(j["stop"], "max_tokens");
    assert_eq!(j["decode_steps"], 5);
    let text: Vec<String> = want.ids.iter().map(|i| format!("w{i}")).collect();
    assert_eq!(j["text"], text.join(" "));
    for k in ["prefill_s", "decode_s", "prefill_tokens_per_s", "decode_tokens_per_s"] {
        assert!(j[k].as_f64().is_some_and(|v| v > 0.0), "{k}: {}", j[k]);
    }
    // Streamed: the same text on stdout, the throughput on stderr.
    let out = jetc(&["generate", m, "--prompt", "w1 w2 w3", "--max-tokens", "6"]);
    assert_eq!(stdout(&out), format!("{}\n", text.join(" ")));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("prefill") && stderr.contains("tok/s"), "{stderr}");
    // --chat renders tokenizer_config.json's template (system message first).
    let j = json_of(&jetc(&["generate", m, "--chat", "w1 w2", "--system", "w7", "--max-tokens", "2", "--json"]));
    assert_eq!(ids(&j["prompt_ids"]), [7, 1, 2, 9]);
    // The transcript is the prompt and the completion decoded together.
    let words: Vec<String> = [7, 1, 2, 9].into_iter().chain(ids(&j["ids"])).map(|i| format!("w{i}")).collect();
    assert_eq!(j["transcript"], words.join(" "));
    // Seeded sampling: the same seed gives the same tokens.
    let sample = |seed: &str| {
        ids(&json_of(&jetc(&["generate", m, "--prompt", "w4", "--max-tokens", "8", "--temperature", "1.5", "--top-p", "0.9", "--seed", seed, "--json"]))["ids"])
    };
    assert_eq!(sample("3"), sample("3"));
}

#[test]
fn models_it_cannot_generate_with() {
    let dir = tmp("bad");
    // An ONNX model without a tokenizer beside it.
    let fixture = repo().join("tests/fixtures/llama-dynamo-opset20-sdpa-kv/model.onnx");
    let f = fixture.to_str().expect("utf-8");
    fails(&jetc(&["generate", f, "--prompt", "hi"]), &["tokenizer.json", "does not exist"]);
    // Neither --prompt nor --chat; --chat without a template; --top-p without --temperature.
    let model = onnx_with_tokenizer(&dir.0);
    let m = model.to_str().expect("utf-8");
    fails(&jetc(&["generate", m]), &["--prompt", "--chat"]);
    std::fs::remove_file(dir.0.join("tokenizer_config.json")).expect("rm");
    fails(&jetc(&["generate", m, "--chat", "w1"]), &["no chat template", "--prompt"]);
    fails(&jetc(&["generate", m, "--prompt", "w1", "--top-p", "0.5"]), &["--temperature"]);
    fails(&jetc(&["generate", m, "--prompt", "w1", "--temperature", "1", "--top-p", "1.5"]), &["top-p"]);
    // A file that is neither GGUF nor ONNX.
    let other = dir.0.join("model.safetensors");
    std::fs::write(&other, b"{}").expect("write");
    fails(&jetc(&["generate", other.to_str().expect("utf-8"), "--prompt", "x"]), &[".gguf", ".onnx"]);
    // A GGUF model of an architecture jetc does not build, for generate and inspect alike.
    let gguf = dir.0.join("gpt2.gguf");
    let bytes = GgufWriter::new().kv("general.architecture", MetaValue::String("gpt2".into())).to_bytes();
    std::fs::write(&gguf, bytes).expect("write");
    let g = gguf.to_str().expect("utf-8");
    fails(&jetc(&["generate", g, "--prompt", "x"]), &[g, "architecture `gpt2` is not supported"]);
    fails(&jetc(&["inspect", g]), &[g, "architecture `gpt2` is not supported"]);
}

/// SmolLM2-135M-Instruct from its GGUF: the chat answer, streamed and as JSON, and the
/// architecture summary.
#[test]
fn smollm2_gguf_answers_a_chat_question() {
    let Some(model) = std::env::var_os("JETC_SMOLLM2_GGUF") else {
        eprintln!("skipping: JETC_SMOLLM2_GGUF is not set (scripts/fetch_smollm2.sh)");
        return;
    };
    let m = model.to_str().expect("utf-8");
    let q = "What is the capital of France?";
    let out = jetc(&["generate", m, "--chat", q, "--max-tokens", "32"]);
    assert_eq!(stdout(&out), "The capital of France is Paris.\n");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("37 prompt tokens") && stderr.contains("tok/s") && stderr.contains("(eos)"), "{stderr}");
    let j = json_of(&jetc(&["generate", m, "--chat", q, "--max-tokens", "32", "--json"]));
    assert_eq!(j["prompt_tokens"], 37);
    assert_eq!(ids(&j["ids"]), [504, 3575, 282, 4649, 314, 7042, 30]);
    assert_eq!((j["text"].as_str(), j["stop"].as_str()), (Some("The capital of France is Paris."), Some("eos")));
    // The transcript: the rendered chat (SmolLM2's default system turn), the answer and the
    // end of turn that stopped it, as training text.
    let t = j["transcript"].as_str().expect("transcript");
    assert!(t.starts_with("<|im_start|>system\n") && t.contains("<|im_start|>user\nWhat is the capital of France?<|im_end|>\n<|im_start|>assistant\n"), "{t}");
    assert!(t.ends_with("The capital of France is Paris.<|im_end|>"), "{t}");

    // Japanese: characters spread over several byte-level tokens are streamed whole.
    let q = "Translate to Japanese: good morning";
    let j = json_of(&jetc(&["generate", m, "--chat", q, "--max-tokens", "24", "--json"]));
    let text = j["text"].as_str().expect("text");
    let streamed = stdout(&jetc(&["generate", m, "--chat", q, "--max-tokens", "24"]));
    assert_eq!(streamed, format!("{text}\n"));
    assert!(!text.is_ascii() && !text.contains('\u{FFFD}'), "{text:?}");
    let file = jetc_gguf::GgufFile::open(m).expect("open");
    let tok = jetc_text::Tokenizer::from_gguf(&file).expect("tokenizer");
    let gen_ids = ids(&j["ids"]);
    let split = (1..gen_ids.len()).any(|n| tok.decode(&gen_ids[..n], true).is_ok_and(|t| t.ends_with('\u{FFFD}')));
    assert!(split, "no character of {text:?} spans two tokens: the check would not see a split");

    let s = json_of(&jetc(&["inspect", m, "--json"]));
    assert_eq!((s["layers"].as_u64(), s["hidden"].as_u64(), s["vocab"].as_u64()), (Some(30), Some(576), Some(49152)));
    assert_eq!(s["tied_embeddings"], true);
    assert_eq!(s["kv_cache_bytes_per_token"], 30 * 2 * 3 * 64 * 4);
    for mixer in s["mixers"].as_array().expect("mixers") {
        assert_eq!((mixer["heads"].as_u64(), mixer["kv_heads"].as_u64(), mixer["head_dim"].as_u64()), (Some(9), Some(3), Some(64)));
    }
}

/// The real model through conversion: `jetc convert` of the GGUF writes the ONNX with the
/// tokenizer and chat template beside it; with every layer kept as full attention (a no-op
/// conversion) `jetc generate` on that ONNX gives the GGUF's answer, and a hybrid (two linear
/// layers, one SWA layer) generates through its recurrent caches. `--tokenizer` takes them
/// from elsewhere.
#[test]
fn smollm2_converted_to_onnx_generates_with_its_tokenizer() {
    let Some(model) = std::env::var_os("JETC_SMOLLM2_GGUF") else {
        eprintln!("skipping: JETC_SMOLLM2_GGUF is not set (scripts/fetch_smollm2.sh)");
        return;
    };
    let m = model.to_str().expect("utf-8");
    let q = "What is the capital of France?";
    let dir = tmp("converted");
    let all: Vec<String> = (0..30).map(|l| l.to_string()).collect();
    let noop = dir.0.join("noop");
    let out = jetc(&["convert", m, "-o", noop.to_str().unwrap_or_default(), "--full-attn", &all.join(",")]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    for f in ["model.onnx", "tokenizer.json", "tokenizer_config.json", "generation_config.json"] {
        assert!(noop.join(f).is_file(), "{f} not written beside the converted model");
    }
    let onnx = noop.join("model.onnx");
    let j = json_of(&jetc(&["generate", onnx.to_str().unwrap_or_default(), "--chat", q, "--max-tokens", "16", "--json"]));
    assert_eq!((j["text"].as_str(), j["stop"].as_str()), (Some("The capital of France is Paris."), Some("eos")), "{j}");

    let hybrid = dir.0.join("hybrid");
    let full: Vec<String> = (2..30).filter(|l| *l != 5).map(|l| l.to_string()).collect();
    let out = jetc(&["convert", m, "-o", hybrid.to_str().unwrap_or_default(), "--full-attn", &full.join(","), "--swa", "5", "--window", "8"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let onnx = hybrid.join("model.onnx");
    let j = json_of(&jetc(&["generate", onnx.to_str().unwrap_or_default(), "--chat", q, "--max-tokens", "12", "--json", "--tokenizer", m]));
    assert_eq!(j["prompt_tokens"], 37, "{j}");
    assert!(!ids(&j["ids"]).is_empty(), "{j}");
}
