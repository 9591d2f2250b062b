//! `jetc convert` end to end through the binary: writes model.onnx, config.json and
//! model.safetensors, prints the converted summary, and `jetc inspect --json` on the written
//! ONNX reports the same hybrid; a bad layout writes nothing.
use std::path::PathBuf;
use std::process::Command;

fn fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures").join(name).join("model.onnx")
}

fn jetc(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_jetc")).args(args).output().expect("run jetc")
}

#[test]
fn convert_writes_both_formats_and_inspect_reads_them_back() {
    let out = std::env::temp_dir().join(format!("jetc-cli-convert-{}", std::process::id()));
    let model = fixture("qwen2-dynamo-opset20-sdpa-kv");
    let o = jetc(&["convert", model.to_str().unwrap_or_default(), "-o", out.to_str().unwrap_or_default(), "--swa", "1", "--window", "3", "--json"]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let summary: serde_json::Value = serde_json::from_slice(&o.stdout).expect("json summary");
    let kinds: Vec<&str> = summary["mixers"].as_array().expect("mixers").iter().filter_map(|m| m["kind"].as_str()).collect();
    assert_eq!(kinds, ["jet", "swa"]);
    for f in ["model.onnx", "config.json", "model.safetensors"] {
        assert!(out.join(f).exists(), "{f} missing");
    }
    let o = jetc(&["inspect", "--json", out.join("model.onnx").to_str().unwrap_or_default()]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let back: serde_json::Value = serde_json::from_slice(&o.stdout).expect("json");
    assert_eq!(back["mixers"], summary["mixers"]);
    assert_eq!(back["cache_bytes_per_sequence"], summary["cache_bytes_per_sequence"]);
    std::fs::remove_dir_all(&out).ok();
}

#[test]
fn a_bad_layout_writes_nothing() {
    let out = std::env::temp_dir().join(format!("jetc-cli-bad-layout-{}", std::process::id()));
    let model = fixture("llama-dynamo-opset20-sdpa-kv");
    for args in [
        vec!["--full-attn", "9"],
        vec!["--swa", "1", "--window", "0"],
        vec!["--block", "transformer-xl"],
        vec!["--dv", "3"],
    ] {
        let mut all = vec!["convert", model.to_str().unwrap_or_default(), "-o", out.to_str().unwrap_or_default()];
        all.extend(args.iter().copied());
        let o = jetc(&all);
        assert!(!o.status.success(), "{args:?} should fail");
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(err.starts_with("error: ") && !err.contains("panicked"), "{args:?}: {err}");
        assert!(!out.exists(), "{args:?} wrote {}", out.display());
    }
}

/// The default format writes the Jet-Nemotron layout only where the hybrid fits it: a Qwen3
/// model (q/k norms) or another linear block gets ONNX only, with a note saying why; asking for
/// jet-hf explicitly is an error that names the reason, and writes nothing.
#[test]
fn auto_format_falls_back_to_onnx_with_a_reason() {
    for (fixture_name, extra, reason) in [
        ("qwen3-dynamo-opset20-sdpa-kv", vec!["--swa", "1", "--window", "3"], "q/k norms"),
        ("qwen2-dynamo-opset20-sdpa-kv", vec!["--block", "gla"], "not a JetBlock"),
    ] {
        let out = std::env::temp_dir().join(format!("jetc-cli-auto-{fixture_name}-{}", std::process::id()));
        let model = fixture(fixture_name);
        let mut args = vec!["convert", model.to_str().unwrap_or_default(), "-o", out.to_str().unwrap_or_default()];
        args.extend(extra.iter().copied());
        let o = jetc(&args);
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(o.status.success(), "{fixture_name}: {err}");
        assert!(err.contains("note:") && err.contains(reason), "{fixture_name}: {err}");
        assert!(out.join("model.onnx").exists() && !out.join("config.json").exists(), "{fixture_name}");
        std::fs::remove_dir_all(&out).ok();

        args.extend(["--format", "jet-hf"]);
        let o = jetc(&args);
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(!o.status.success() && err.contains(reason), "{fixture_name}: {err}");
        assert!(!out.join("config.json").exists(), "{fixture_name}: wrote a jet-hf config");
        std::fs::remove_dir_all(&out).ok();
    }
}

/// `-o` names a directory (model.onnx inside it, existing or not) whatever the format; with
/// `--format onnx` a path ending in `.onnx` names the file itself.
#[test]
fn output_is_a_directory_unless_it_names_an_onnx_file() {
    let base = std::env::temp_dir().join(format!("jetc-cli-convert-out-{}", std::process::id()));
    let model = fixture("llama-dynamo-opset20-sdpa-kv");
    let m = model.to_str().unwrap_or_default();
    let existing = base.join("existing");
    std::fs::create_dir_all(&existing).expect("mkdir");
    for (out, file) in [(existing.clone(), existing.join("model.onnx")), (base.join("new"), base.join("new/model.onnx")), (base.join("x/hybrid.onnx"), base.join("x/hybrid.onnx"))] {
        let o = jetc(&["convert", m, "-o", out.to_str().unwrap_or_default(), "--full-attn", "0", "--format", "onnx"]);
        assert!(o.status.success(), "-o {}: {}", out.display(), String::from_utf8_lossy(&o.stderr));
        assert!(file.is_file(), "-o {}: no {}", out.display(), file.display());
        let o = jetc(&["inspect", "--json", file.to_str().unwrap_or_default()]);
        assert!(o.status.success(), "inspect {}: {}", file.display(), String::from_utf8_lossy(&o.stderr));
    }
    std::fs::remove_dir_all(&base).ok();
}
