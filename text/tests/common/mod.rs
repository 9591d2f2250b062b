//! Shared by the golden tests: reading the JSON written by scripts/make_tokenizer_goldens.py
//! and comparing a tokenizer with transformers on its cases.
use jetc_text::Tokenizer;
use serde_json::Value;

pub fn golden(name: &str) -> Value {
    let path = format!("{}/tests/golden/{name}", env!("CARGO_MANIFEST_DIR"));
    serde_json::from_str(&std::fs::read_to_string(&path).expect("read goldens"))
        .expect("parse goldens")
}

pub fn ids(v: &Value) -> Vec<u32> {
    v.as_array()
        .expect("id list")
        .iter()
        .map(|x| x.as_u64().expect("id") as u32)
        .collect()
}

/// Every difference from transformers on `cases`: ids with and without special tokens,
/// vocabulary spellings, decode with and without skip_special_tokens, streamed decode.
pub fn compare_cases(tok: &Tokenizer, cases: &[Value]) -> Vec<String> {
    let mut failures = Vec::new();
    for c in cases {
        let text = c["text"].as_str().unwrap();
        let want = ids(&c["ids"]);
        let got = tok.encode(text, false).unwrap();
        if got != want {
            failures.push(format!(
                "encode({text:?}): got {got:?}, transformers {want:?}"
            ));
        }
        let got = tok.encode(text, true).unwrap();
        let want_special = ids(&c["ids_with_special"]);
        if got != want_special {
            failures.push(format!(
                "encode({text:?}, special): got {got:?}, transformers {want_special:?}"
            ));
        }
        for (skip, key) in [(false, "decoded"), (true, "decoded_skip_special")] {
            let got = tok.decode(&want, skip).unwrap();
            if got != c[key].as_str().unwrap() {
                failures.push(format!(
                    "decode({want:?}, skip={skip}): got {got:?}, transformers {:?}",
                    c[key]
                ));
            }
        }
        let spelled: Vec<String> = want.iter().map(|&i| tok.id_to_token(i).unwrap()).collect();
        let want_tokens: Vec<&str> = c["tokens"]
            .as_array()
            .unwrap()
            .iter()
            .map(|t| t.as_str().unwrap())
            .collect();
        if spelled != want_tokens {
            failures.push(format!(
                "tokens of {text:?}: got {spelled:?}, transformers {want_tokens:?}"
            ));
        }
        let mut stream = tok.stream_decoder(false);
        let mut streamed = String::new();
        for &id in &want {
            if let Some(piece) = stream.step(id).unwrap() {
                streamed.push_str(&piece);
            }
        }
        if streamed != c["decoded"].as_str().unwrap() {
            failures.push(format!(
                "stream decode of {text:?}: got {streamed:?}, transformers {:?}",
                c["decoded"]
            ));
        }
    }
    failures
}
