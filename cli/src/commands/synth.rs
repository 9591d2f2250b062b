//! `jetc synth`: decoders with random weights at real shapes (see `jetc::synth`), written as
//! ONNX with external data.
use std::path::Path;

use jetc::synth::{arch, build, ARCH_NAMES};
use jetc_ir::DType;
use jetc_onnx::{export_model, ExportOptions};

use crate::error::{CliError, Result};

pub fn run(arch_name: &str, output: &Path, seed: u64, dtype: &str) -> Result<()> {
    let cfg = arch(arch_name).ok_or_else(|| {
        CliError::Msg(format!("unknown architecture `{arch_name}` (known: {})", ARCH_NAMES.join(", ")))
    })?;
    let dtype = match dtype {
        "f32" => DType::F32,
        "f16" => DType::F16,
        "bf16" => DType::BF16,
        other => return Err(CliError::Msg(format!("unknown weight dtype `{other}` (f32, f16 or bf16)"))),
    };
    let g = build(&cfg, seed, dtype)?;
    if let Some(dir) = output.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).map_err(|e| CliError::Msg(format!("{}: {e}", dir.display())))?;
    }
    export_model(&g, output, &ExportOptions { external_data: true, ..Default::default() })?;
    eprintln!("wrote {} ({} layers, hidden {}) with weights in {}.data", output.display(), cfg.layers, cfg.hidden, output.display());
    Ok(())
}
