//! `jetc codegen MODEL --arch sm_90 -o DIR`: the CUDA kernels a converted model needs.
//! MODEL is an ONNX model (converted: opset 27 with LinearAttention; it is loaded, raised and
//! fused so JetBlocks become one op) or a preset name (`jet-nemotron-2b`, `jet-nemotron-4b`).
//! Writes the rendered `.cu`, the compiled `.ptx` / `.cubin` of every instance and
//! `manifest.json` (kernel, configuration, registers, shared memory, spills). Needs NVRTC
//! (no GPU); without it, says how to get it and exits non-zero (`--render-only` still
//! writes the sources). Spilling kernels make it fail unless `--allow-spills`.
use std::path::{Path, PathBuf};

use jetc_codegen::cache::{default_cache_dir, Compiler};
use jetc_codegen::kernels::{Arch, DType, DeviceLimits, Instance, Kernel};
use jetc_codegen::lower;
use jetc_codegen::manifest::{emit, Emit};
use jetc_passes::PassManager;

use crate::error::{CliError, Result};
use crate::load;

pub struct CodegenArgs {
    pub model: String,
    pub arch: String,
    pub output: PathBuf,
    pub dtype: String,
    pub render_only: bool,
    pub ptxas: bool,
    pub allow_spills: bool,
    /// Print nothing on stdout (a stage of `jetc postnas`).
    pub quiet: bool,
}

fn msg(e: impl std::fmt::Display) -> CliError {
    CliError::Msg(e.to_string())
}

/// The kernels of a preset or of a model file (loaded, raised and fused).
pub(crate) fn model_kernels(model: &str, dtype: DType) -> Result<Vec<Kernel>> {
    if let Some(k) = lower::preset(model, dtype) {
        return Ok(k);
    }
    let path = Path::new(model);
    if !path.exists() {
        return Err(CliError::Msg(format!(
            "{model}: no such file, and not a preset ({})",
            lower::PRESETS.join(", ")
        )));
    }
    let mut g = load::load_raised(path)?;
    PassManager::new().add(Box::new(jetc_passes::fuse::Fuse)).run(&mut g)?;
    let plan = lower::plan(&g, dtype).map_err(|e| CliError::Msg(format!("{model}: {e}")))?;
    if plan.kernels.is_empty() {
        return Err(CliError::Msg(format!(
            "{model}: no op needs a generated kernel (is it a converted model? see `jetc convert`)"
        )));
    }
    Ok(plan.kernels)
}

pub fn run(a: &CodegenArgs) -> Result<()> {
    let arch = Arch::parse(&a.arch).map_err(msg)?;
    let dtype = DType::parse(&a.dtype).map_err(msg)?;
    let kernels = model_kernels(&a.model, dtype)?;
    let instances: Vec<Instance> = kernels.iter().map(Kernel::default_instance).collect();
    let compiler = if a.render_only {
        None
    } else {
        match Compiler::new(arch, default_cache_dir()) {
            Ok(c) => Some(c),
            Err(e) => {
                return Err(CliError::Msg(format!(
                    "{e}\n(`jetc codegen --render-only` writes the CUDA sources without compiling)"
                )))
            }
        }
    };
    let ptxas = if a.ptxas {
        Some(jetc_codegen::ptxas::find_ptxas().ok_or_else(|| {
            CliError::Msg("--ptxas: no ptxas found (set JETC_PTXAS or run scripts/install_cuda_tools.sh)".into())
        })?)
    } else {
        None
    };
    let how = Emit { limits: DeviceLimits::for_arch(arch), compiler: compiler.as_ref(), ptxas, on_instance: None };
    let m = emit(&instances, &a.output, &how).map_err(msg)?;
    let spilling = m.spilling();
    let spill_check = || if !spilling.is_empty() && !a.allow_spills { Err(CliError::Msg(format!("register spills in: {}", spilling.join(", ")))) } else { Ok(()) };
    if a.quiet {
        return spill_check();
    }
    println!("{:<72} {:>5} {:>8} {:>8} {:>6}", "kernel", "regs", "smem", "dyn smem", "spills");
    for k in &m.kernels {
        let info = k.ptxas.as_ref().or(k.nvrtc_ptxas.as_ref());
        let regs = info.map_or("-".to_string(), |i| i.registers.to_string());
        let smem = info.map_or(k.resources.static_smem, |i| i.smem_static as usize);
        let spills = info.map_or("-".to_string(), |i| format!("{}", i.spill_stores + i.spill_loads));
        println!("{:<72} {:>5} {:>8} {:>8} {:>6}", k.name, regs, smem, k.resources.dynamic_smem, spills);
    }
    println!(
        "{} kernel instance(s) for {} written to {} ({})",
        m.kernels.len(),
        arch.name(),
        a.output.display(),
        if compiler.is_some() { "rendered + compiled" } else { "rendered only" }
    );
    spill_check()
}
