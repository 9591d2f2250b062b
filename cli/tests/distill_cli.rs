//! `jetc distill` as a user runs it on a fixture decoder with a word-level tokenizer: the
//! loss falls, metrics and summary are written, the distilled model runs in onnxruntime and
//! matches jetc; and bad input is refused with a clear error, nothing overwritten.
use std::path::{Path, PathBuf};
use std::process::Command;

use jetc_runtime::npz::{read_npz, write_npz};
use jetc_runtime::Session;

mod common;
use common::{fails, jetc, python_with_ort, repo, word_text, word_tokenizer, Tmp};

fn tmp(tag: &str) -> Tmp {
    common::tmp("distill-cli", tag)
}

/// The llama fixture (vocab 128) with a word-level tokenizer (token i is `w{i}`) and a text
/// of pseudo-random words.
fn setup(dir: &Path) -> (PathBuf, PathBuf) {
    let model = dir.join("model.onnx");
    std::fs::copy(repo().join("tests/fixtures/llama-dynamo-opset20-eager-nokv/model.onnx"), &model).expect("copy fixture");
    word_tokenizer(dir, 128, Some(2), serde_json::json!({"eos_token": "w2"}));
    let words = word_text(1200, 12345);
    let data = dir.join("data.txt");
    std::fs::write(&data, words).expect("write data");
    (model, data)
}

#[test]
fn distills_a_fixture_and_the_result_runs_in_onnxruntime() {
    let dir = tmp("ok");
    let (model, data) = setup(&dir.0);
    let out = dir.0.join("run");
    let o = jetc(&[
        "distill", model.to_str().unwrap(), "-o", out.to_str().unwrap(), "--data", data.to_str().unwrap(),
        "--full-attn", "0", "--seq-len", "16", "--batch", "2", "--steps", "120", "--lr", "2e-2", "--warmup", "2", "--json",
        "--token-cache", dir.0.join("cache").to_str().unwrap(),
    ]);
    assert!(o.status.success(), "distill failed:\n{}", String::from_utf8_lossy(&o.stderr));
    let s: serde_json::Value = serde_json::from_slice(&o.stdout).expect("--json summary");
    let (first, last) = (s["loss_first"].as_f64().unwrap(), s["loss_last"].as_f64().unwrap());
    assert!(last < 0.75 * first, "loss {first} -> {last}");
    assert_eq!(s["layers"], serde_json::json!([1]));
    let before = s["heldout_loss_before"].as_f64().expect("held-out windows");
    let after = s["heldout_loss_after"].as_f64().unwrap();
    assert!(after < before, "held-out {before} -> {after}");
    let lines = std::fs::read_to_string(out.join("metrics.jsonl")).expect("metrics");
    assert_eq!(lines.lines().count(), 120);
    assert!(out.join("distill.json").is_file());
    let png = std::fs::read(out.join("loss.png")).expect("loss.png");
    assert_eq!(&png[..4], b"\x89PNG");
    assert!(out.join("loss.svg").is_file());
    // A second run reads the tokens from the cache.
    let o2 = jetc(&[
        "distill", model.to_str().unwrap(), "-o", dir.0.join("run2").to_str().unwrap(), "--data", data.to_str().unwrap(),
        "--full-attn", "0", "--seq-len", "16", "--batch", "2", "--steps", "2", "--token-cache", dir.0.join("cache").to_str().unwrap(),
    ]);
    assert!(o2.status.success() && String::from_utf8_lossy(&o2.stderr).contains("tokens from the cache"), "{}", String::from_utf8_lossy(&o2.stderr));
    let onnx = out.join("model/model.onnx");
    assert!(onnx.is_file() && out.join("model/tokenizer.json").is_file());

    // The distilled model: onnxruntime == jetc on the written file.
    let g = jetc_models::pipeline::load_raised(&onnx).expect("load distilled");
    let ids: Vec<i64> = (0..2 * 7).map(|i| (i * 11 % 120) as i64).collect();
    let feed = jetc_train::feed::prefill_inputs(&g, &ids, 2, 7).expect("feed");
    let session = Session::new(&g).expect("session");
    let ours = session.run(feed.clone()).expect("run");
    let Some(py) = python_with_ort() else { return };
    let inputs: Vec<(String, jetc_runtime::Value)> = feed.into_iter().collect();
    write_npz(&dir.0.join("in.npz"), &inputs).expect("npz");
    let r = Command::new(&py).arg(repo().join("scripts/ort_run.py")).args([&onnx, &dir.0.join("in.npz"), &dir.0.join("out.npz")]).output().expect("python");
    assert!(r.status.success(), "onnxruntime: {}", String::from_utf8_lossy(&r.stderr));
    let theirs = read_npz(&dir.0.join("out.npz")).expect("ort outputs");
    let (name, mine) = &ours[0];
    let other = theirs.iter().find(|(n, _)| n == name).map(|(_, v)| v).expect("same output");
    let (a, b) = (mine.as_f32().unwrap(), other.as_f32().unwrap());
    let scale = b.iter().fold(1e-6f32, |m, v| m.max(v.abs()));
    let err = a.iter().zip(b.iter()).fold(0f32, |m, (x, y)| m.max((x - y).abs())) / scale;
    assert!(err < 1e-4, "{name}: jetc vs onnxruntime {err:.2e}");
}

#[test]
fn distills_from_parquet_with_a_named_text_column() {
    let dir = tmp("parquet");
    let (model, _) = setup(&dir.0);
    let out = dir.0.join("out");
    let data = repo().join("train/tests/fixtures/data/content-column.parquet");
    let o = jetc(&[
        "distill", model.to_str().unwrap(), "-o", out.to_str().unwrap(), "--data", data.to_str().unwrap(), "--text-field", "content",
        "--full-attn", "0", "--seq-len", "8", "--batch", "2", "--steps", "2", "--token-cache", "none", "--json",
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let summary: serde_json::Value = serde_json::from_slice(&std::fs::read(out.join("distill.json")).unwrap()).unwrap();
    assert_eq!(summary["data"]["documents"], 7, "{summary}");
    assert_eq!(summary["data"]["text_field"], "content");
}

#[test]
fn bad_input_is_refused_and_nothing_is_overwritten() {
    let dir = tmp("bad");
    let (model, data) = setup(&dir.0);
    let m = model.to_str().unwrap();
    let d = data.to_str().unwrap();
    let out = dir.0.join("out");
    let o = out.to_str().unwrap();
    // Missing, empty and binary data.
    fails(&jetc(&["distill", m, "-o", o, "--data", "/nonexistent/x.txt", "--full-attn", "0"]), &["/nonexistent/x.txt", "no such file"]);
    let empty = dir.0.join("empty.txt");
    std::fs::write(&empty, "").unwrap();
    fails(&jetc(&["distill", m, "-o", o, "--data", empty.to_str().unwrap(), "--full-attn", "0"]), &["empty.txt", "empty"]);
    let bin = dir.0.join("bin.txt");
    std::fs::write(&bin, [0x41u8, 0xff, 0xfe, 0x00, 0x80]).unwrap();
    fails(&jetc(&["distill", m, "-o", o, "--data", bin.to_str().unwrap(), "--full-attn", "0"]), &["bin.txt", "not UTF-8"]);
    // Parquet: a null text, and a text column that is not there.
    let parquet = |name: &str| repo().join("train/tests/fixtures/data").join(name).to_str().unwrap().to_string();
    fails(&jetc(&["distill", m, "-o", o, "--data", &parquet("null-text.parquet"), "--full-attn", "0"]), &["null-text.parquet", "row 2", "null"]);
    fails(
        &jetc(&["distill", m, "-o", o, "--data", &parquet("content-column.parquet"), "--text-field", "body", "--full-attn", "0"]),
        &["content-column.parquet", "no column `body`", "content"],
    );
    // A layout naming a layer that does not exist.
    fails(&jetc(&["distill", m, "-o", o, "--data", d, "--full-attn", "7"]), &["layer 7", "out of range"]);
    // Not one window of the asked length.
    fails(&jetc(&["distill", m, "-o", o, "--data", d, "--full-attn", "0", "--seq-len", "100000"]), &["--seq-len 100000"]);
    assert!(!out.exists(), "nothing is written on bad input");
    // An output directory holding another run.
    std::fs::create_dir_all(&out).unwrap();
    std::fs::write(out.join("distill.json"), "{}").unwrap();
    fails(&jetc(&["distill", m, "-o", o, "--data", d, "--full-attn", "0"]), &["already holds files"]);
    assert_eq!(std::fs::read_to_string(out.join("distill.json")).unwrap(), "{}");
}

fn checkpoint_bytes(run: &Path, step: u64) -> Vec<u8> {
    let p = run.join(format!("checkpoints/step-{step:08}/state.safetensors"));
    std::fs::read(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

fn losses(run: &Path) -> Vec<String> {
    std::fs::read_to_string(run.join("metrics.jsonl"))
        .expect("metrics")
        .lines()
        .map(|l| {
            let v: serde_json::Value = serde_json::from_str(l).expect("json line");
            format!("{}:{}", v["step"], v["loss"])
        })
        .collect()
}

/// A real `jetc distill` killed with SIGKILL mid-run and resumed ends with the same weights
/// and Adam moments, bit for bit, and the same loss sequence, as an uninterrupted run.
#[test]
fn resume_after_sigkill_is_bit_exact() {
    let dir = tmp("resume");
    let (model, data) = setup(&dir.0);
    let (m, d) = (model.to_str().unwrap(), data.to_str().unwrap());
    let steps = "300";
    let run_args = |out: &Path| -> Vec<String> {
        ["distill", m, "-o", out.to_str().unwrap(), "--data", d, "--full-attn", "0", "--seq-len", "32", "--batch", "4", "--steps", steps, "--checkpoint-every", "50", "--lr", "5e-3", "--token-cache", "none"]
            .iter()
            .map(|s| s.to_string())
            .collect()
    };
    let a = dir.0.join("a");
    let o = jetc(&run_args(&a).iter().map(String::as_str).collect::<Vec<_>>());
    assert!(o.status.success(), "uninterrupted run failed:\n{}", String::from_utf8_lossy(&o.stderr));

    let b = dir.0.join("b");
    let mut child = Command::new(env!("CARGO_BIN_EXE_jetc")).args(run_args(&b)).stderr(std::process::Stdio::null()).spawn().expect("start jetc");
    let marker = b.join("checkpoints/step-00000050/state.json");
    let started = std::time::Instant::now();
    while !marker.exists() {
        assert!(started.elapsed().as_secs() < 120, "no checkpoint after 120 s");
        if let Some(status) = child.try_wait().expect("wait") {
            panic!("the run ended ({status}) before it could be killed");
        }
        std::thread::sleep(std::time::Duration::from_millis(2));
    }
    child.kill().expect("SIGKILL");
    let status = child.wait().expect("wait");
    assert!(!status.success(), "the run was killed, not finished");
    // Without --resume the directory is refused; with it the run continues.
    fails(&jetc(&run_args(&b).iter().map(String::as_str).collect::<Vec<_>>()), &["already holds files"]);
    let mut args = run_args(&b);
    args.push("--resume".into());
    let o = jetc(&args.iter().map(String::as_str).collect::<Vec<_>>());
    assert!(o.status.success(), "resume failed:\n{}", String::from_utf8_lossy(&o.stderr));
    assert!(String::from_utf8_lossy(&o.stderr).contains("resuming at step"), "{}", String::from_utf8_lossy(&o.stderr));
    assert!(checkpoint_bytes(&a, 300) == checkpoint_bytes(&b, 300), "weights and moments differ after resume");
    assert_eq!(losses(&a), losses(&b), "loss sequences differ");
    // A resume with other settings is refused.
    let mut other = run_args(&b);
    let lr = other.iter().position(|s| s == "--lr").unwrap() + 1;
    other[lr] = "1e-3".into();
    other.push("--resume".into());
    fails(&jetc(&other.iter().map(String::as_str).collect::<Vec<_>>()), &["another model, layout, data or settings"]);
    // A truncated newest checkpoint is reported and the older one used.
    let newest = b.join("checkpoints/step-00000300/state.safetensors");
    let bytes = std::fs::read(&newest).unwrap();
    std::fs::write(&newest, &bytes[..bytes.len() / 3]).unwrap();
    let o = jetc(&args.iter().map(String::as_str).collect::<Vec<_>>());
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(o.status.success() && err.contains("truncated or corrupted") && err.contains("resuming at step 250"), "{err}");
}

/// A window longer than the model's context (GGUF `context_length`) is refused before any
/// data is read. Needs SmolLM2's GGUF (JETC_SMOLLM2_GGUF, which scripts/test.sh sets).
#[test]
fn seq_len_longer_than_the_context_is_refused() {
    let Some(gguf) = std::env::var_os("JETC_SMOLLM2_GGUF") else {
        assert!(std::env::var_os("CI").is_none(), "CI: JETC_SMOLLM2_GGUF is not set");
        eprintln!("skipping: JETC_SMOLLM2_GGUF not set");
        return;
    };
    let dir = tmp("ctx");
    let out = dir.0.join("out");
    let o = jetc(&["distill", gguf.to_str().unwrap(), "-o", out.to_str().unwrap(), "--data", "/nonexistent", "--full-attn", "3,12,20", "--seq-len", "100000"]);
    fails(&o, &["--seq-len 100000", "context of 8192 tokens"]);
    assert!(!out.exists());
    // A tokenizer that is not the model's: ids past its vocabulary are named.
    let (model, data) = setup(&dir.0);
    let o = jetc(&["distill", model.to_str().unwrap(), "-o", out.to_str().unwrap(), "--data", data.to_str().unwrap(), "--full-attn", "0", "--tokenizer", gguf.to_str().unwrap()]);
    let _ = data;
    fails(&o, &["vocabulary has 128 tokens", "--tokenizer"]);
    assert!(!out.exists());
}
