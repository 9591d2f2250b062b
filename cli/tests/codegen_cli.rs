//! `jetc codegen`, `jetc tune` and `jetc gpu-bench` from the outside: without a GPU, tune and
//! gpu-bench say so and exit non-zero without a panic; codegen renders without NVRTC
//! (`--render-only`) and, where NVRTC is installed, compiles a preset with a manifest.
use std::path::{Path, PathBuf};
use std::process::Command;

fn jetc() -> Command {
    Command::new(env!("CARGO_BIN_EXE_jetc"))
}

fn tempdir(tag: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("jetc-codegen-cli-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    d
}

fn has_gpu() -> bool {
    Path::new("/dev/nvidia0").exists()
}

#[test]
fn tune_without_gpu_is_a_clear_error() {
    if has_gpu() {
        return;
    }
    for args in [
        vec!["tune", "jet-nemotron-2b"],
        vec!["tune", "--kernel", "jet_decode", "--shape", "heads=12,dk=96,dv=256,width=4"],
        vec!["gpu-bench", "jet-nemotron-2b"],
    ] {
        let out = jetc().args(&args).output().expect("run jetc");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{args:?} must fail without a GPU");
        assert_eq!(out.status.code(), Some(1), "{args:?}: clean exit, not a signal or panic (101): {err}");
        assert!(err.contains("GPU"), "{args:?}: says why: {err}");
        assert!(!err.contains("panicked"), "{args:?}: {err}");
    }
}

#[test]
fn tune_rejects_bad_arguments_before_looking_for_a_gpu() {
    let out = jetc().args(["tune", "--kernel", "no_such_kernel"]).output().expect("run jetc");
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("unknown kernel `no_such_kernel`"));
}

#[test]
fn codegen_render_only_needs_no_cuda() {
    let dir = tempdir("render");
    let out = jetc()
        .args(["codegen", "jet-nemotron-2b", "--render-only", "-o"])
        .arg(&dir)
        .env("JETC_NVRTC_LIB", "/nonexistent")
        .output()
        .expect("run jetc");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let m: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(dir.join("manifest.json")).expect("manifest")).expect("json");
    let kernels = m["kernels"].as_array().expect("kernels");
    assert!(kernels.iter().any(|k| k["family"] == "jet_decode"));
    assert!(dir.join("jetc_jet_decode_h12x12_k96_v256_w4_bf16_bv64_t256.cu").is_file());
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn codegen_compiles_a_preset_when_nvrtc_is_there() {
    let dir = tempdir("compile");
    let out = jetc().args(["codegen", "jet-nemotron-4b", "--arch", "sm_90", "-o"]).arg(&dir).output().expect("run jetc");
    let err = String::from_utf8_lossy(&out.stderr);
    if !out.status.success() {
        assert!(err.contains("NVRTC is not available"), "the only acceptable failure: {err}");
        assert!(std::env::var("CI").map_or(true, |v| v != "true"), "CI installs NVRTC: {err}");
        return;
    }
    let m: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(dir.join("manifest.json")).expect("manifest")).expect("json");
    for k in m["kernels"].as_array().expect("kernels") {
        assert_eq!(k["spills"], false, "{}", k["name"]);
        assert!(k["nvrtc_ptxas"]["registers"].as_u64().unwrap_or(0) > 0, "{}", k["name"]);
    }
    assert!(dir.join("jetc_gdn_chunk_state_h16x16_k128_v256_c64_bf16_silu_l2_rawg_bv64_t256.cubin").is_file());
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn codegen_of_a_missing_model_names_it() {
    let out = jetc().args(["codegen", "/no/such/model.onnx", "-o", "/tmp/x"]).output().expect("run jetc");
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("/no/such/model.onnx"));
}

/// A model converted by `jetc convert` and written as ONNX is read back, fused, and planned
/// into the same fused JetBlock kernels as a preset (decode step at the model's dims).
#[test]
fn codegen_of_a_converted_onnx_model_plans_the_fused_jetblock() {
    let dir = tempdir("converted");
    std::fs::create_dir_all(&dir).expect("tmp");
    let fixture = Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures/qwen2-dynamo-opset20-sdpa-kv/model.onnx");
    let model = dir.join("hybrid.onnx");
    let out = jetc()
        .args(["convert"])
        .arg(&fixture)
        .args(["-o"])
        .arg(&model)
        .args(["--swa", "1", "--window", "3", "--format", "onnx"])
        .output()
        .expect("run jetc convert");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let kernels = dir.join("kernels");
    let out = jetc().args(["codegen"]).arg(&model).args(["--render-only", "-o"]).arg(&kernels).output().expect("run jetc codegen");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let m: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(kernels.join("manifest.json")).expect("manifest")).expect("json");
    let families: Vec<&str> = m["kernels"].as_array().expect("kernels").iter().filter_map(|k| k["family"].as_str()).collect();
    assert!(families.contains(&"jet_decode"), "no fused decode kernel: {families:?}");
    let _ = std::fs::remove_dir_all(&dir);
}
