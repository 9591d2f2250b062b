//! Helpers shared by the CLI tests: the `jetc` binary, temp directories, error checks, the
//! word-level tokenizer that turns a fixture decoder into a model with text, and the Python
//! with onnxruntime that serves as the reference.
#![allow(dead_code)]
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

pub fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

pub fn jetc(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_jetc")).args(args).output().expect("start jetc")
}

/// The stdout of a run that must succeed.
pub fn stdout(out: &Output) -> String {
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "jetc failed:\n{stderr}");
    String::from_utf8(out.stdout.clone()).expect("UTF-8 stdout")
}

/// A run that must fail, without a panic, naming every one of `words`.
pub fn fails(out: &Output, words: &[&str]) {
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "jetc should have failed:\n{stderr}");
    assert!(!stderr.contains("panicked"), "jetc panicked:\n{stderr}");
    for w in words {
        assert!(stderr.contains(w), "stderr should mention `{w}`:\n{stderr}");
    }
}

/// A temp directory removed on drop.
pub struct Tmp(pub PathBuf);
impl Drop for Tmp {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A fresh temp directory named after the test file (`suite`) and the test (`tag`).
pub fn tmp(suite: &str, tag: &str) -> Tmp {
    let d = std::env::temp_dir().join(format!("jetc-{suite}-{}-{tag}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).expect("tmp");
    Tmp(d)
}

/// Writes a word-level `tokenizer.json` into `dir` for a vocabulary of `vocab`: token i is
/// `w{i}`, words split on whitespace, unknown words are `w0`; `eos` (if any) is a special
/// token. `config` is written as `tokenizer_config.json`.
pub fn word_tokenizer(dir: &Path, vocab: usize, eos: Option<usize>, config: serde_json::Value) {
    let words: serde_json::Map<String, serde_json::Value> = (0..vocab).map(|i| (format!("w{i}"), serde_json::json!(i))).collect();
    let added: Vec<serde_json::Value> = eos
        .iter()
        .map(|&e| serde_json::json!({"id": e, "content": format!("w{e}"), "single_word": false, "lstrip": false, "rstrip": false, "normalized": false, "special": true}))
        .collect();
    let tokenizer = serde_json::json!({
        "version": "1.0", "truncation": null, "padding": null, "added_tokens": added,
        "normalizer": null, "pre_tokenizer": {"type": "WhitespaceSplit"}, "post_processor": null,
        "decoder": null,
        "model": {"type": "WordLevel", "vocab": words, "unk_token": "w0"}
    });
    std::fs::write(dir.join("tokenizer.json"), tokenizer.to_string()).expect("write tokenizer.json");
    std::fs::write(dir.join("tokenizer_config.json"), config.to_string()).expect("write tokenizer_config.json");
}

/// `n` pseudo-random words `w3..w122` (seeded), joined by spaces.
pub fn word_text(n: usize, seed: u64) -> String {
    let mut x = seed;
    let words: Vec<String> = (0..n)
        .map(|_| {
            x = x.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            format!("w{}", 3 + (x >> 33) % 120)
        })
        .collect();
    words.join(" ")
}

/// A Python with onnxruntime (JETC_PYTHON or the repo's .venv); under CI its absence fails.
pub fn python_with_ort() -> Option<PathBuf> {
    let candidates: Vec<PathBuf> =
        std::env::var_os("JETC_PYTHON").map(PathBuf::from).into_iter().chain([repo().join(".venv/bin/python")]).collect();
    for py in candidates {
        let ok = Command::new(&py).args(["-c", "import onnxruntime, numpy"]).output().map(|o| o.status.success()).unwrap_or(false);
        if ok {
            return Some(py);
        }
    }
    if std::env::var_os("CI").is_some() {
        panic!("CI: no Python with onnxruntime found (set JETC_PYTHON or run .ci/run)");
    }
    eprintln!("skipping the onnxruntime check: no Python with onnxruntime (set JETC_PYTHON)");
    None
}

/// An exported model: onnxruntime and jetc give the same first output on a 2 x 7 prefill
/// (the onnxruntime half skips without a Python with onnxruntime, except under CI).
pub fn onnxruntime_agrees(dir: &Path, onnx: &Path) {
    use jetc_runtime::npz::{read_npz, write_npz};
    let g = jetc_models::pipeline::load_raised(onnx).expect("load the exported model");
    let ids: Vec<i64> = (0..2 * 7).map(|i| (i * 11 % 120) as i64).collect();
    let feed = jetc_train::feed::prefill_inputs(&g, &ids, 2, 7).expect("feed");
    let ours = jetc_runtime::Session::new(&g).expect("session").run(feed.clone()).expect("run");
    let Some(py) = python_with_ort() else { return };
    let inputs: Vec<(String, jetc_runtime::Value)> = feed.into_iter().collect();
    write_npz(&dir.join("in.npz"), &inputs).expect("npz");
    let r = Command::new(&py).arg(repo().join("scripts/ort_run.py")).args([onnx, &dir.join("in.npz"), &dir.join("out.npz")]).output().expect("python");
    assert!(r.status.success(), "onnxruntime: {}", String::from_utf8_lossy(&r.stderr));
    let theirs = read_npz(&dir.join("out.npz")).expect("ort outputs");
    let (name, mine) = &ours[0];
    let other = theirs.iter().find(|(n, _)| n == name).map(|(_, v)| v).expect("same output");
    let (a, b) = (mine.as_f32().unwrap(), other.as_f32().unwrap());
    let scale = b.iter().fold(1e-6f32, |m, v| m.max(v.abs()));
    let err = a.iter().zip(b.iter()).fold(0f32, |m, (x, y)| m.max((x - y).abs())) / scale;
    assert!(err < 1e-4, "{name}: jetc vs onnxruntime {err:.2e}");
}
