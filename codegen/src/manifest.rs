//! `jetc codegen`'s output: for every kernel instance a model needs, the rendered `.cu`, the
//! compiled `.ptx` and `.cubin`, and `manifest.json` (kernel, configuration, registers, shared
//! memory, spills). Also used by CI to compile every instance and fail on spills.
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::cache::{write_atomic, Compiler};
use crate::error::{CodegenError, Result};
use crate::kernels::{DeviceLimits, Instance, Kernel, Params, StaticResources};
use crate::nvrtc::PtxasInfo;

/// Schema version of manifest.json.
pub const MANIFEST_SCHEMA: u32 = 1;

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ManifestEntry {
    pub name: String,
    pub family: String,
    pub kernel: Kernel,
    pub params: Params,
    pub template_hash: String,
    pub resources: StaticResources,
    /// NVRTC's built-in ptxas report (None when only rendered).
    pub nvrtc_ptxas: Option<PtxasInfo>,
    /// The external ptxas' report, when one was run.
    pub ptxas: Option<PtxasInfo>,
    pub spills: bool,
    pub files: Vec<String>,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Manifest {
    pub schema: u32,
    pub jetc_version: String,
    pub arch: String,
    pub nvrtc_version: Option<String>,
    pub compile_options: Vec<String>,
    pub kernels: Vec<ManifestEntry>,
}

impl Manifest {
    pub fn spilling(&self) -> Vec<&str> {
        self.kernels.iter().filter(|k| k.spills).map(|k| k.name.as_str()).collect()
    }

    pub fn write(&self, dir: &Path) -> Result<PathBuf> {
        let path = dir.join("manifest.json");
        let text = serde_json::to_vec_pretty(self).map_err(|e| CodegenError::io(&path, e))?;
        write_atomic(&path, &text)?;
        Ok(path)
    }
}

/// How to emit: with a compiler (NVRTC present) or render only.
pub struct Emit<'a> {
    pub limits: DeviceLimits,
    pub compiler: Option<&'a Compiler>,
    /// External ptxas to cross-check the PTX with.
    pub ptxas: Option<PathBuf>,
    /// Called after each instance (progress).
    pub on_instance: Option<&'a dyn Fn(&Instance)>,
}

/// Renders (and compiles, when a compiler is given) `instances` into `dir`.
pub fn emit(instances: &[Instance], dir: &Path, how: &Emit) -> Result<Manifest> {
    std::fs::create_dir_all(dir).map_err(|e| CodegenError::io(dir, e))?;
    let mut entries = Vec::new();
    for inst in instances {
        let name = inst.name();
        let src = inst.render(&how.limits)?;
        let mut files = vec![format!("{name}.cu")];
        write_atomic(&dir.join(&files[0]), src.as_bytes())?;
        let (mut nvrtc_info, mut ext) = (None, None);
        if let Some(c) = how.compiler {
            let (compiled, _) = c.compile_source(&name, &src)?;
            let ptx = dir.join(format!("{name}.ptx"));
            write_atomic(&ptx, compiled.ptx.as_bytes())?;
            write_atomic(&dir.join(format!("{name}.cubin")), &compiled.cubin)?;
            files.push(format!("{name}.ptx"));
            files.push(format!("{name}.cubin"));
            nvrtc_info = compiled.info.clone();
            if let Some(p) = &how.ptxas {
                ext = Some(crate::ptxas::check(p, &ptx, how.limits.arch, &name)?);
            }
        }
        let spills = nvrtc_info.as_ref().is_some_and(|i| i.spills()) || ext.as_ref().is_some_and(|i| i.spills());
        entries.push(ManifestEntry {
            family: inst.kernel.family().to_string(),
            template_hash: crate::templates::template_hash(inst.kernel.template())?,
            resources: inst.resources(),
            kernel: inst.kernel.clone(),
            params: inst.params,
            nvrtc_ptxas: nvrtc_info,
            ptxas: ext,
            spills,
            files,
            name,
        });
        if let Some(f) = how.on_instance {
            f(inst);
        }
    }
    let m = Manifest {
        schema: MANIFEST_SCHEMA,
        jetc_version: crate::JETC_VERSION.to_string(),
        arch: how.limits.arch.name(),
        nvrtc_version: how.compiler.map(|c| format!("{}.{}", c.nvrtc_version.0, c.nvrtc_version.1)),
        compile_options: how.compiler.map(|c| c.options.clone()).unwrap_or_default(),
        kernels: entries,
    };
    m.write(dir)?;
    Ok(m)
}
