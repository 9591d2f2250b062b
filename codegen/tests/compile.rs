//! Every kernel instance that Jet-Nemotron-2B / -4B and the test fixtures' conversions need
//! compiles with NVRTC for sm_90, without register spills (NVRTC's ptxas report and, when
//! found, the external ptxas -v), and the compile caches work. Needs NVRTC (no GPU): without
//! it the tests say so and pass, except under CI=true or JETC_REQUIRE_NVRTC=1 (CI installs
//! NVRTC from PyPI, scripts/install_cuda_tools.sh), where a missing NVRTC is a failure.
use std::path::Path;

use jetc::passes::fuse::Fuse;
use jetc::passes::linearize::{Block, MixerConfig};
use jetc::passes::PassManager;
use jetc_codegen::cache::{cache_key, Compiler, Origin};
use jetc_codegen::kernels::{Arch, DType, Instance, Kernel};
use jetc_codegen::manifest::{emit, Emit};
use jetc_codegen::{lower, nvrtc, ptxas};

fn require_nvrtc() -> bool {
    if nvrtc::nvrtc_available() && !nvrtc::find_include_dirs().is_empty() {
        return true;
    }
    let required = std::env::var("CI").is_ok_and(|v| v == "true") || std::env::var("JETC_REQUIRE_NVRTC").is_ok_and(|v| v == "1");
    assert!(!required, "NVRTC / CUDA headers are required here: {}", nvrtc::nvrtc_help());
    eprintln!("skipping: {}", nvrtc::nvrtc_help());
    false
}

fn fixtures() -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures")
}

/// Kernels of a fixture converted to JetBlock layers, fused (the GPU form) and unfused.
fn fixture_kernels(name: &str) -> Vec<Kernel> {
    let mut g = jetc::pipeline::load_raised(&fixtures().join(name).join("model.onnx")).expect("load fixture");
    let layout = jetc::convert::Layout { full_attn: vec![], swa: vec![], window: None, block: Block::JetBlock, blocks: vec![], config: MixerConfig::default() };
    jetc::convert::convert(&mut g, &layout, 1).expect("convert");
    let mut out = lower::plan(&g, DType::Bf16).expect("plan unfused").kernels;
    PassManager::new().add(Box::new(Fuse)).run(&mut g).expect("fuse");
    let fused = lower::plan(&g, DType::Bf16).expect("plan fused").kernels;
    assert!(fused.iter().any(|k| matches!(k, Kernel::JetDecode(_))), "{name}: fused plan has the decode kernel");
    out.extend(fused);
    out
}

#[test]
fn every_needed_instance_compiles_without_spills() {
    if !require_nvrtc() {
        return;
    }
    let mut kernels: Vec<Kernel> = Vec::new();
    for p in lower::PRESETS {
        kernels.extend(lower::preset(p, DType::Bf16).expect("preset"));
    }
    // An f32-activation decode instance and the fixtures (dk 12 / dv 32: padded tiles).
    kernels.extend(lower::jetblock_kernels(12, 96, 256, 4, DType::F32));
    for f in ["qwen2-dynamo-opset20-sdpa-kv", "llama-dynamo-opset20-sdpa-kv"] {
        kernels.extend(fixture_kernels(f));
    }
    kernels.sort();
    kernels.dedup();
    let instances: Vec<Instance> = kernels.iter().map(Kernel::default_instance).collect();
    let cache = tempfile::tempdir().expect("tempdir");
    let out = tempfile::tempdir().expect("tempdir");
    let compiler = Compiler::new(Arch(90), Some(cache.path().to_path_buf())).expect("compiler");
    let ext = ptxas::find_ptxas();
    if ext.is_none() && std::env::var("CI").is_ok_and(|v| v == "true") {
        panic!("CI: the external ptxas was not found (JETC_PTXAS)");
    }
    let how = Emit { limits: compiler.limits.clone(), compiler: Some(&compiler), ptxas: ext.clone(), on_instance: None };
    let m = emit(&instances, out.path(), &how).expect("every instance compiles");
    assert_eq!(m.kernels.len(), instances.len());
    for k in &m.kernels {
        let info = k.nvrtc_ptxas.as_ref().unwrap_or_else(|| panic!("{}: no ptxas report", k.name));
        eprintln!("{:<76} regs {:>3} smem {:>6}+{:>6} spills {}", k.name, info.registers, info.smem_static, k.resources.dynamic_smem, info.spill_stores + info.spill_loads);
        assert!(info.registers > 0 && info.registers <= 255, "{}", k.name);
        if let Some(e) = &k.ptxas {
            assert_eq!(e.registers, info.registers, "{}: external ptxas agrees", k.name);
        }
        for f in &k.files {
            assert!(out.path().join(f).is_file(), "{f}");
        }
    }
    assert!(m.spilling().is_empty(), "register spills in {:?}", m.spilling());
    let manifest: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.path().join("manifest.json")).expect("manifest")).expect("json");
    assert_eq!(manifest["kernels"].as_array().map(|a| a.len()), Some(instances.len()));
    assert_eq!(manifest["arch"], "sm_90");

    // Caches: the same compiler serves from memory; a new one from disk.
    let (_, _, o1) = compiler.compile(&instances[0]).expect("again");
    assert_eq!(o1, Origin::Memory);
    let fresh = Compiler::new(Arch(90), Some(cache.path().to_path_buf())).expect("compiler");
    let (_, c, o2) = fresh.compile(&instances[0]).expect("disk");
    assert_eq!(o2, Origin::Disk);
    assert!(!c.cubin.is_empty());
}

#[test]
fn compile_errors_name_the_kernel_and_carry_the_log() {
    if !require_nvrtc() {
        return;
    }
    let compiler = Compiler::new(Arch(90), None).expect("compiler");
    let e = compiler.compile_source("broken_kernel", "extern \"C\" __global__ void broken_kernel() { undefined_thing(); }").expect_err("fails");
    let text = e.to_string();
    assert!(text.contains("broken_kernel") && text.contains("undefined_thing"), "{text}");
}

#[test]
fn cache_key_covers_source_options_arch_and_versions() {
    let base = cache_key("src", &["-a".into()], Arch(90), (13, 0), "0.1.0");
    assert_eq!(base.len(), 64);
    assert_eq!(base, cache_key("src", &["-a".into()], Arch(90), (13, 0), "0.1.0"));
    for other in [
        cache_key("src2", &["-a".into()], Arch(90), (13, 0), "0.1.0"),
        cache_key("src", &["-b".into()], Arch(90), (13, 0), "0.1.0"),
        cache_key("src", &["-a".into()], Arch(80), (13, 0), "0.1.0"),
        cache_key("src", &["-a".into()], Arch(90), (13, 1), "0.1.0"),
        cache_key("src", &["-a".into()], Arch(90), (13, 0), "0.2.0"),
        cache_key("src", &[], Arch(90), (13, 0), "0.1.0"),
    ] {
        assert_ne!(base, other);
    }
}
