//! Tokenizers built from small GGUF images made in memory (no model needed): byte-level BPE
//! with each kind of pre-tokenizer, SentencePiece-style BPE with merges derived from scores,
//! special tokens, BOS/EOS handling, streaming decode, `tokenizer.json` loading, chat
//! templates, and the errors for bad metadata.
use std::path::PathBuf;

use jetc_gguf::{GgufFile, GgufWriter, MetaArray, MetaValue};
use jetc_text::gguf_vocab::bytes_to_unicode;
use jetc_text::{ChatTemplate, Message, TextError, Tokenizer};

mod common;

const CONTROL: i32 = 3;
const NORMAL: i32 = 1;
const BYTE: i32 = 6;

fn strs(v: &[String]) -> MetaValue {
    MetaValue::Array(MetaArray::String(v.to_vec()))
}

/// A byte-level vocabulary: 3 control tokens, the 256 byte characters, then merges.
struct Gpt2 {
    tokens: Vec<String>,
    types: Vec<i32>,
    merges: Vec<String>,
}

impl Gpt2 {
    fn new() -> Gpt2 {
        let mut tokens: Vec<String> = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
            .map(String::from)
            .to_vec();
        let mut types = vec![CONTROL; 3];
        for c in bytes_to_unicode() {
            tokens.push(c.to_string());
            types.push(NORMAL);
        }
        let mut g = Gpt2 {
            tokens,
            types,
            merges: Vec::new(),
        };
        for m in [
            "h e", "l l", "he ll", "hell o", "Ġ w", "o r", "Ġw or", "Ġwor l", "Ġworl d", "1 2",
            "12 3", "Ġ Ġ",
        ] {
            g.merge(m);
        }
        g
    }

    fn merge(&mut self, m: &str) {
        self.merges.push(m.into());
        self.tokens.push(m.replace(' ', ""));
        self.types.push(NORMAL);
    }

    fn id(&self, t: &str) -> u32 {
        self.tokens.iter().position(|x| x == t).unwrap() as u32
    }

    fn writer(&self, pre: Option<&str>) -> GgufWriter {
        let mut w = GgufWriter::new()
            .kv("general.architecture", MetaValue::String("llama".into()))
            .kv("tokenizer.ggml.model", MetaValue::String("gpt2".into()))
            .kv("tokenizer.ggml.tokens", strs(&self.tokens))
            .kv(
                "tokenizer.ggml.token_type",
                MetaValue::Array(MetaArray::I32(self.types.clone())),
            )
            .kv("tokenizer.ggml.merges", strs(&self.merges))
            .kv("tokenizer.ggml.bos_token_id", MetaValue::U32(1))
            .kv("tokenizer.ggml.eos_token_id", MetaValue::U32(2));
        if let Some(p) = pre {
            w = w.kv("tokenizer.ggml.pre", MetaValue::String(p.into()));
        }
        w
    }
}

fn file(w: GgufWriter) -> GgufFile {
    GgufFile::from_bytes("tiny.gguf", &w.to_bytes()).unwrap()
}

fn tok(w: GgufWriter) -> Tokenizer {
    Tokenizer::from_gguf(&file(w)).unwrap()
}

fn err(w: GgufWriter) -> String {
    Tokenizer::from_gguf(&file(w)).unwrap_err().to_string()
}

fn temp_dir(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("jetc-text-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

#[test]
fn byte_level_bpe_encodes_decodes_and_keeps_special_tokens_whole() {
    let g = Gpt2::new();
    let t = tok(g.writer(Some("gpt-2")));
    assert!(t.warnings().is_empty());
    assert_eq!(t.vocab_size(), g.tokens.len());
    let (hello, world) = (g.id("hello"), g.id("Ġworld"));
    assert_eq!(t.encode("hello world", false).unwrap(), vec![hello, world]);
    assert_eq!(
        t.encode("<|im_start|>hello<|im_end|>", false).unwrap(),
        vec![1, hello, 2]
    );
    // No add_bos_token key: gpt2 vocabularies add nothing.
    assert_eq!(t.encode("hello", true).unwrap(), vec![hello]);
    let ids = t
        .encode("<|im_start|>hello world, ÿé😀\n\t  x<|endoftext|>", false)
        .unwrap();
    assert_eq!(
        t.decode(&ids, false).unwrap(),
        "<|im_start|>hello world, ÿé😀\n\t  x<|endoftext|>"
    );
    assert_eq!(t.decode(&ids, true).unwrap(), "hello world, ÿé😀\n\t  x");
    assert_eq!((t.bos_id(), t.eos_id()), (Some(1), Some(2)));
    assert_eq!(t.eos_ids(), vec![2, 0], "eos, then <|endoftext|>");
    assert_eq!(t.token_to_id("Ġworld"), Some(world));
    assert_eq!(t.encode("", true).unwrap(), Vec::<u32>::new());
    let e = t.decode(&[hello, 100_000], false).unwrap_err().to_string();
    assert!(e.contains("tiny.gguf") && e.contains("100000"), "{e}");
}

#[test]
fn add_bos_and_eos_tokens_follow_the_metadata() {
    let g = Gpt2::new();
    let t = tok(g
        .writer(Some("gpt-2"))
        .kv("tokenizer.ggml.add_bos_token", MetaValue::Bool(true))
        .kv("tokenizer.ggml.add_eos_token", MetaValue::Bool(true)));
    assert!(t.adds_bos());
    assert_eq!(t.encode("hello", true).unwrap(), vec![1, g.id("hello"), 2]);
    assert_eq!(t.encode("hello", false).unwrap(), vec![g.id("hello")]);
}

#[test]
fn pre_tokenizer_follows_tokenizer_ggml_pre() {
    let g = Gpt2::new();
    let one = |pre: &str, text: &str| tok(g.writer(Some(pre))).encode(text, false).unwrap();
    let (d1, d2, d3, d4) = (g.id("1"), g.id("2"), g.id("3"), g.id("4"));
    // GPT-2: digit runs are one piece, so the merges apply.
    assert_eq!(one("gpt-2", "1234"), vec![g.id("123"), d4]);
    // SmolLM (llama.cpp: \p{N} first): every digit alone.
    assert_eq!(one("smollm", "1234"), vec![d1, d2, d3, d4]);
    // Llama 3: runs of at most three digits.
    assert_eq!(one("llama-bpe", "12341"), vec![g.id("123"), d4, d1]);
    // Qwen2: single digits.
    assert_eq!(one("qwen2", "123"), vec![d1, d2, d3]);
    // Whitespace before a word: GPT-2 keeps "  " apart from "Ġworld"'s space.
    assert_eq!(one("gpt-2", "   world"), vec![g.id("ĠĠ"), g.id("Ġworld")]);
}

#[test]
fn unknown_or_missing_pre_falls_back_to_gpt2_with_a_warning() {
    let g = Gpt2::new();
    for pre in [Some("no-such-pre"), None] {
        let t = tok(g.writer(pre));
        assert_eq!(t.warnings().len(), 1, "{:?}", t.warnings());
        assert!(
            t.warnings()[0].contains("tokenizer.ggml.pre"),
            "{:?}",
            t.warnings()
        );
        assert_eq!(
            t.encode("1234", false).unwrap(),
            vec![g.id("123"), g.id("4")]
        );
    }
}

#[test]
fn stream_decoder_waits_for_whole_characters() {
    let g = Gpt2::new();
    let t = tok(g.writer(Some("gpt-2")));
    let ids = t.encode("a😀b", false).unwrap();
    assert_eq!(ids.len(), 6, "a, four bytes of the emoji, b");
    let mut s = t.stream_decoder(false);
    let out: Vec<Option<String>> = ids.iter().map(|&i| s.step(i).unwrap()).collect();
    let want = [Some("a"), None, None, None, Some("😀"), Some("b")];
    assert_eq!(out, want.map(|x| x.map(String::from)));
    assert!(t.stream_decoder(false).step(1_000_000).is_err());
}

#[test]
fn control_tokens_outside_the_byte_alphabet_stay_whole() {
    let mut g = Gpt2::new();
    g.tokens.push("<｜end▁of▁sentence｜>".into());
    g.types.push(CONTROL);
    // A normal token written as plain text (a converter slip) is re-spelled byte by byte.
    g.tokens.push("a b".into());
    g.types.push(NORMAL);
    let t = tok(g.writer(Some("gpt-2")));
    let eos = g.tokens.len() as u32 - 2;
    assert_eq!(
        t.encode("x<｜end▁of▁sentence｜>", false).unwrap(),
        vec![g.id("x"), eos]
    );
    assert_eq!(t.decode(&[eos], false).unwrap(), "<｜end▁of▁sentence｜>");
    assert_eq!(t.token_to_id("aĠb"), Some(eos + 1));
}

/// A SentencePiece vocabulary without merges (they come from the scores).
fn spm_writer(with_merges: bool) -> (GgufWriter, Vec<String>) {
    let mut tokens: Vec<String> = ["<unk>", "<s>", "</s>"].map(String::from).to_vec();
    let mut types = vec![2, CONTROL, CONTROL];
    let mut scores = vec![0.0f32; 3];
    for b in 0..=255u8 {
        tokens.push(format!("<0x{b:02X}>"));
        types.push(BYTE);
        scores.push(0.0);
    }
    // Pieces, best (highest score) merges first.
    for (i, p) in [
        "▁", "h", "e", "l", "o", "w", "r", "d", "▁h", "ll", "▁he", "▁hell", "▁hello", "▁w", "or",
        "▁wor", "ld", "▁world",
    ]
    .iter()
    .enumerate()
    {
        tokens.push(p.to_string());
        types.push(NORMAL);
        scores.push(if p.chars().count() == 1 {
            -1000.0 - i as f32
        } else {
            -(i as f32)
        });
    }
    let mut w = GgufWriter::new()
        .kv("tokenizer.ggml.model", MetaValue::String("llama".into()))
        .kv("tokenizer.ggml.tokens", strs(&tokens))
        .kv(
            "tokenizer.ggml.token_type",
            MetaValue::Array(MetaArray::I32(types)),
        )
        .kv(
            "tokenizer.ggml.scores",
            MetaValue::Array(MetaArray::F32(scores)),
        )
        .kv("tokenizer.ggml.bos_token_id", MetaValue::U32(1))
        .kv("tokenizer.ggml.eos_token_id", MetaValue::U32(2))
        .kv("tokenizer.ggml.unknown_token_id", MetaValue::U32(0));
    if with_merges {
        let merges = [
            "▁ h",
            "l l",
            "▁h e",
            "▁he ll",
            "▁hell o",
            "▁ w",
            "o r",
            "▁w or",
            "l d",
            "▁wor ld",
        ];
        w = w.kv("tokenizer.ggml.merges", strs(&merges.map(String::from)));
    }
    (w, tokens)
}

#[test]
fn sentencepiece_bpe_with_byte_fallback() {
    for with_merges in [false, true] {
        let (w, tokens) = spm_writer(with_merges);
        let t = tok(w);
        let id = |s: &str| tokens.iter().position(|x| x == s).unwrap() as u32;
        // add_bos_token defaults to true for SentencePiece vocabularies.
        assert!(t.adds_bos());
        assert_eq!(
            t.encode("hello world", true).unwrap(),
            vec![1, id("▁hello"), id("▁world")]
        );
        let ids = t.encode("hello é", false).unwrap();
        assert_eq!(ids, vec![id("▁hello"), id("▁"), id("<0xC3>"), id("<0xA9>")]);
        assert_eq!(t.decode(&ids, false).unwrap(), "hello é");
        assert_eq!(t.decode(&[1, id("▁hello"), 2], true).unwrap(), "hello");
        assert_eq!(t.eos_ids(), vec![2]);
    }
}

/// tests/golden/tiny_spm.gguf (written by gguf-py) against transformers' tokenizer for it.
#[test]
fn sentencepiece_matches_transformers() {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/golden/tiny_spm.gguf");
    let t = Tokenizer::from_gguf(&GgufFile::open(path).unwrap()).unwrap();
    let g = common::golden("tiny_spm_tokens.json");
    let cases = g["cases"].as_array().unwrap();
    let failures = common::compare_cases(&t, cases);
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn bad_metadata_errors_name_file_and_key() {
    let g = Gpt2::new();
    let with_model = |m: &str| {
        GgufWriter::new()
            .kv("tokenizer.ggml.model", MetaValue::String(m.into()))
            .kv("tokenizer.ggml.tokens", strs(&g.tokens))
    };
    let base = || with_model("gpt2");
    let e = err(GgufWriter::new().kv("tokenizer.ggml.tokens", strs(&g.tokens)));
    assert!(
        e.contains("tiny.gguf") && e.contains("tokenizer.ggml.model"),
        "{e}"
    );
    let e = err(GgufWriter::new().kv("tokenizer.ggml.model", MetaValue::String("gpt2".into())));
    assert!(
        e.contains("tiny.gguf") && e.contains("tokenizer.ggml.tokens"),
        "{e}"
    );
    let e = err(with_model("bert"));
    assert!(
        e.contains("tokenizer.ggml.model") && e.contains("\"bert\""),
        "{e}"
    );
    let e = err(base());
    assert!(
        e.contains("tokenizer.ggml.merges") && e.contains("missing"),
        "{e}"
    );
    let e = err(base().kv("tokenizer.ggml.merges", strs(&["hello".into()])));
    assert!(
        e.contains("tokenizer.ggml.merges") && e.contains("entry 0"),
        "{e}"
    );
    let e = err(base().kv("tokenizer.ggml.merges", strs(&["q zz".into()])));
    assert!(e.contains("tiny.gguf: tokenizer.ggml.merges"), "{e}");
    let short = Gpt2 {
        types: vec![1, 1],
        tokens: g.tokens.clone(),
        merges: g.merges.clone(),
    };
    let e = err(short.writer(None));
    assert!(
        e.contains("tokenizer.ggml.token_type") && e.contains("2 entries"),
        "{e}"
    );
    let e = err(base()
        .kv("tokenizer.ggml.merges", strs(&g.merges))
        .kv("tokenizer.ggml.bos_token_id", MetaValue::U32(1 << 20)));
    assert!(
        e.contains("tokenizer.ggml.bos_token_id") && e.contains("outside"),
        "{e}"
    );
    let e = err(g.writer(None).kv("tokenizer.ggml.pre", MetaValue::U32(3)));
    assert!(
        e.contains("tokenizer.ggml.pre") && e.contains("STRING"),
        "{e}"
    );
    let e = err(with_model("llama"));
    assert!(
        e.contains("tokenizer.ggml.merges") && e.contains("tokenizer.ggml.scores"),
        "{e}"
    );
    // A padding id outside the vocabulary is ignored with a warning, as llama.cpp does.
    let t = tok(g
        .writer(Some("gpt-2"))
        .kv("tokenizer.ggml.padding_token_id", MetaValue::U32(1 << 20)));
    assert_eq!(t.pad_id(), None);
    assert!(t.warnings()[0].contains("tokenizer.ggml.padding_token_id"));
    assert!(matches!(
        Tokenizer::from_gguf(&file(with_model("t5"))),
        Err(TextError::UnsupportedModel { .. })
    ));
}

const CHATML: &str = "{% for message in messages %}{{'<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n'}}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}";

#[test]
fn chat_template_from_gguf() {
    let g = Gpt2::new();
    let w = g.writer(Some("gpt-2"));
    let t = tok(w.clone());
    assert!(ChatTemplate::from_gguf(&file(w.clone()), &t)
        .unwrap()
        .is_none());
    let f = file(w.kv(
        "tokenizer.chat_template",
        MetaValue::String(format!("{{{{ bos_token }}}}{CHATML}")),
    ));
    let chat = ChatTemplate::from_gguf(&f, &t).unwrap().unwrap();
    let out = chat.render(&[Message::new("user", "hello")], true).unwrap();
    assert_eq!(
        out,
        "<|im_start|><|im_start|>user\nhello<|im_end|>\n<|im_start|>assistant\n"
    );
    assert_eq!(t.encode(&out, false).unwrap()[..3], [1, 1, g.id("u")]);
    let bad = file(g.writer(None).kv(
        "tokenizer.chat_template",
        MetaValue::String("{% if %}".into()),
    ));
    let e = ChatTemplate::from_gguf(&bad, &t).unwrap_err().to_string();
    assert!(e.starts_with("tiny.gguf: tokenizer.chat_template:"), "{e}");
}

#[test]
fn tokenizer_json_and_tokenizer_config_beside_it() {
    let g = Gpt2::new();
    let from_gguf = tok(g.writer(Some("smollm")));
    let dir = temp_dir("hf");
    from_gguf
        .inner()
        .save(dir.join("tokenizer.json"), false)
        .unwrap();
    // No config files: end-of-turn tokens are found by their text.
    let t = Tokenizer::from_file(&dir.join("tokenizer.json")).unwrap();
    assert_eq!(t.eos_ids(), vec![2, 0]);
    assert_eq!(t.vocab_size(), g.tokens.len());
    for s in ["hello world 1234", "<|im_start|>x<|im_end|>", "  \n\t😀"] {
        assert_eq!(
            t.encode(s, true).unwrap(),
            from_gguf.encode(s, true).unwrap(),
            "{s:?}"
        );
    }
    assert!(ChatTemplate::from_tokenizer_config(&dir).unwrap().is_none());

    let cfg = serde_json::json!({
        "bos_token": {"content": "<|im_start|>", "special": true},
        "eos_token": "<|im_end|>",
        "chat_template": format!("{{{{ eos_token }}}}{CHATML}"),
    });
    std::fs::write(dir.join("tokenizer_config.json"), cfg.to_string()).unwrap();
    std::fs::write(
        dir.join("generation_config.json"),
        r#"{"eos_token_id": [2, 0], "bos_token_id": 1}"#,
    )
    .unwrap();
    let t = Tokenizer::from_file(&dir).unwrap();
    assert_eq!(
        (t.bos_id(), t.eos_id(), t.eos_ids()),
        (Some(1), Some(2), vec![2, 0])
    );
    let chat = ChatTemplate::from_tokenizer_config(&dir.join("tokenizer_config.json"))
        .unwrap()
        .unwrap();
    assert_eq!(
        chat.render(&[Message::new("user", "x")], false).unwrap(),
        "<|im_end|><|im_start|>user\nx<|im_end|>\n"
    );

    // A list of named templates: "default" wins.
    let cfg = serde_json::json!({
        "chat_template": [{"name": "tool_use", "template": "T"}, {"name": "default", "template": "D"}],
    });
    std::fs::write(dir.join("tokenizer_config.json"), cfg.to_string()).unwrap();
    let chat = ChatTemplate::from_tokenizer_config(&dir).unwrap().unwrap();
    assert_eq!(chat.render(&[], false).unwrap(), "D");

    // transformers 5 keeps the template in chat_template.jinja.
    std::fs::write(dir.join("tokenizer_config.json"), "{}").unwrap();
    std::fs::write(dir.join("chat_template.jinja"), "J{{ messages | length }}").unwrap();
    let chat = ChatTemplate::from_tokenizer_config(&dir).unwrap().unwrap();
    assert_eq!(
        chat.render(&[Message::new("user", "x")], false).unwrap(),
        "J1"
    );

    std::fs::write(dir.join("tokenizer_config.json"), "{not json").unwrap();
    let e = ChatTemplate::from_tokenizer_config(&dir)
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("tokenizer_config.json") && e.contains("invalid JSON"),
        "{e}"
    );
    let e = Tokenizer::from_file(&dir).unwrap_err().to_string();
    assert!(e.contains("tokenizer_config.json"), "{e}");

    std::fs::write(dir.join("tokenizer.json"), "{}").unwrap();
    let e = Tokenizer::from_file(&dir.join("tokenizer.json"))
        .unwrap_err()
        .to_string();
    assert!(e.contains("tokenizer.json"), "{e}");
    let e = Tokenizer::from_file(&dir.join("missing.json"))
        .unwrap_err()
        .to_string();
    assert!(e.contains("missing.json"), "{e}");
    let _ = std::fs::remove_dir_all(&dir);
}
