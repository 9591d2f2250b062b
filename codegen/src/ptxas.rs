//! The external `ptxas` (from the pip `nvidia-cuda-nvcc` wheel or a CUDA install): an
//! independent resource check of generated PTX (`ptxas -arch=sm_90 -v`), used by CI and
//! `jetc codegen --ptxas` next to the report NVRTC's built-in ptxas gives.
use std::path::{Path, PathBuf};
use std::process::Command;

use crate::error::{CodegenError, Result};
use crate::kernels::Arch;
use crate::nvrtc::PtxasInfo;

/// `JETC_PTXAS`, else `ptxas` next to a discovered CUDA include dir, else on PATH.
pub fn find_ptxas() -> Option<PathBuf> {
    if let Some(p) = std::env::var_os("JETC_PTXAS") {
        let p = PathBuf::from(p);
        if p.is_file() {
            return Some(p);
        }
    }
    for inc in crate::nvrtc::find_include_dirs() {
        if let Some(root) = inc.parent() {
            let p = root.join("bin/ptxas");
            if p.is_file() {
                return Some(p);
            }
        }
    }
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path).map(|d| d.join("ptxas")).find(|p| p.is_file())
}

/// Assembles `ptx_file` for `arch` and parses the report for `name`.
pub fn check(ptxas: &Path, ptx_file: &Path, arch: Arch, name: &str) -> Result<PtxasInfo> {
    let err = |msg: String| CodegenError::Ptxas { kernel: name.to_string(), msg };
    let out = Command::new(ptxas)
        .arg(format!("-arch=sm_{}", arch.0))
        .arg("-v")
        .arg(ptx_file)
        .arg("-o")
        .arg("/dev/null")
        .output()
        .map_err(|e| err(format!("cannot run {}: {e}", ptxas.display())))?;
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    if !out.status.success() {
        return Err(err(format!("{} failed on {}:\n{text}", ptxas.display(), ptx_file.display())));
    }
    PtxasInfo::parse(&text, name).ok_or_else(|| err(format!("no resource report for {name} in:\n{text}")))
}
