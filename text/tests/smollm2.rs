//! The tokenizer and chat template of a real model, SmolLM2-135M-Instruct (GGUF, byte-level
//! BPE, pre-tokenizer "smollm", ChatML), against transformers: the goldens in
//! tests/golden/smollm2_tokens.json come from scripts/make_tokenizer_goldens.py
//! (`AutoTokenizer.from_pretrained(dir, gguf_file=...)`). Needs the GGUF file: set
//! JETC_SMOLLM2_GGUF=/path/to/SmolLM2-135M-Instruct.Q4_1.gguf (see scripts/fetch_smollm2.sh);
//! without it the tests print a note and pass.
use jetc_gguf::GgufFile;
use jetc_text::{ChatTemplate, Message, Tokenizer};
use serde_json::Value;

mod common;
use common::ids;

fn open() -> Option<GgufFile> {
    let Ok(path) = std::env::var("JETC_SMOLLM2_GGUF") else {
        eprintln!("JETC_SMOLLM2_GGUF is not set; skipping the SmolLM2 tokenizer test");
        return None;
    };
    Some(GgufFile::open(&path).expect("open the SmolLM2 GGUF"))
}

fn goldens() -> Value {
    common::golden("smollm2_tokens.json")
}

#[test]
fn smollm2_tokenizer_matches_transformers() {
    let Some(file) = open() else { return };
    let tok = Tokenizer::from_gguf(&file).unwrap();
    let g = goldens();
    let meta = &g["meta"];
    assert_eq!(
        tok.vocab_size() as u64,
        meta["vocab_size"].as_u64().unwrap()
    );
    assert_eq!(tok.bos_id().map(u64::from), meta["bos_token_id"].as_u64());
    assert_eq!(tok.eos_id().map(u64::from), meta["eos_token_id"].as_u64());
    assert_eq!(tok.unk_id().map(u64::from), meta["unk_token_id"].as_u64());
    assert_eq!(tok.pad_id().map(u64::from), meta["pad_token_id"].as_u64());
    // eos <|im_end|> first, then <|endoftext|> (an end-of-text token llama.cpp also stops on).
    assert_eq!(tok.eos_ids(), vec![2, 0]);
    assert_eq!(tok.token_to_id("<|im_start|>"), Some(1));
    assert!(tok.warnings().is_empty(), "{:?}", tok.warnings());

    let cases = g["cases"].as_array().unwrap();
    let failures = common::compare_cases(&tok, cases);
    assert!(
        failures.is_empty(),
        "{} of {} strings differ from transformers:\n{}",
        failures.len(),
        cases.len(),
        failures.join("\n")
    );
    eprintln!(
        "{} strings: ids, tokens and decodes identical to transformers",
        cases.len()
    );
}

#[test]
fn smollm2_chat_template_matches_transformers() {
    let Some(file) = open() else { return };
    let tok = Tokenizer::from_gguf(&file).unwrap();
    let chat = ChatTemplate::from_gguf(&file, &tok)
        .unwrap()
        .expect("SmolLM2 has a chat template");
    let g = goldens();
    for c in g["chats"].as_array().unwrap() {
        let messages: Vec<Message> = serde_json::from_value(c["messages"].clone()).unwrap();
        let gen = c["add_generation_prompt"].as_bool().unwrap();
        let rendered = chat.render(&messages, gen).unwrap();
        assert_eq!(
            rendered,
            c["rendered"].as_str().unwrap(),
            "{} (add_generation_prompt={gen})",
            c["name"]
        );
        assert_eq!(
            tok.encode(&rendered, false).unwrap(),
            ids(&c["ids"]),
            "{}",
            c["name"]
        );
    }
}

#[test]
fn smollm2_decode_rejects_ids_outside_the_vocabulary() {
    let Some(file) = open() else { return };
    let tok = Tokenizer::from_gguf(&file).unwrap();
    let e = tok.decode(&[19556, 49152], false).unwrap_err().to_string();
    assert!(
        e.contains("SmolLM2-135M-Instruct.Q4_1.gguf") && e.contains("49152"),
        "{e}"
    );
}

/// The same goldens through the Hugging Face file path: the GGUF-built tokenizer saved as a
/// tokenizer.json, with a tokenizer_config.json holding the GGUF's chat template.
#[test]
fn smollm2_tokenizer_json_round_trip_matches_transformers() {
    let Some(file) = open() else { return };
    let from_gguf = Tokenizer::from_gguf(&file).unwrap();
    let dir = std::env::temp_dir().join(format!("jetc-text-smollm2-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    from_gguf
        .inner()
        .save(dir.join("tokenizer.json"), false)
        .unwrap();
    let cfg = serde_json::json!({
        "bos_token": "<|im_start|>",
        "eos_token": "<|im_end|>",
        "chat_template": file.get_str("tokenizer.chat_template").unwrap(),
    });
    std::fs::write(dir.join("tokenizer_config.json"), cfg.to_string()).unwrap();
    let tok = Tokenizer::from_file(&dir.join("tokenizer.json")).unwrap();
    assert_eq!(
        (tok.bos_id(), tok.eos_id(), tok.vocab_size()),
        (Some(1), Some(2), 49152)
    );
    let g = goldens();
    let failures = common::compare_cases(&tok, g["cases"].as_array().unwrap());
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    let chat = ChatTemplate::from_tokenizer_config(&dir.join("tokenizer_config.json"))
        .unwrap()
        .unwrap();
    for c in g["chats"].as_array().unwrap() {
        let messages: Vec<Message> = serde_json::from_value(c["messages"].clone()).unwrap();
        let gen = c["add_generation_prompt"].as_bool().unwrap();
        assert_eq!(
            chat.render(&messages, gen).unwrap(),
            c["rendered"].as_str().unwrap()
        );
    }
    let _ = std::fs::remove_dir_all(&dir);
}
