//! `jetc synth` writes into a directory that does not exist yet, and the model imports.
use std::process::Command;

#[test]
fn synth_creates_the_output_directory() {
    let dir = std::env::temp_dir().join(format!("jetc-synth-cli-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let out = dir.join("a/b/model.onnx");
    let o = Command::new(env!("CARGO_BIN_EXE_jetc")).args(["synth", "--arch", "llama-tiny", "-o", out.to_str().unwrap()]).output().expect("start jetc");
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert!(out.is_file() && dir.join("a/b/model.onnx.data").is_file());
    jetc_models::pipeline::load_raised(&out).expect("the written model loads");
    let _ = std::fs::remove_dir_all(&dir);
}
