//! Compile caches. The key is SHA-256 over (cache format, rendered source, NVRTC options,
//! target arch, NVRTC version, jetc version): any change to a template, an option, the
//! compiler or jetc gives a new key, so entries never go stale; they are only ever added.
//! In memory: a map from key to the compiled kernel. On disk (`JETC_KERNEL_CACHE`, default
//! `~/.cache/jetc/kernels`): `<key>.cubin`, `<key>.ptx` and `<key>.json` (name, log, ptxas
//! report), each written to a temporary file and renamed, so a crash leaves no half entry;
//! an unreadable entry is a miss and is rewritten.
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use sha2::{Digest, Sha256};

use crate::error::{CodegenError, Result};
use crate::kernels::{Arch, DeviceLimits, Instance};
use crate::nvrtc::{self, Compiled, PtxasInfo};
use crate::templates::hex;

/// The cache key of one compilation (hex SHA-256).
pub fn cache_key(source: &str, options: &[String], arch: Arch, nvrtc_version: (i32, i32), jetc_version: &str) -> String {
    let mut h = Sha256::new();
    let mut field = |s: &str| {
        h.update((s.len() as u64).to_le_bytes());
        h.update(s.as_bytes());
    };
    field("jetc-kernel-cache/1");
    field(source);
    field(&options.len().to_string());
    for o in options {
        field(o);
    }
    field(&arch.name());
    field(&format!("nvrtc {}.{}", nvrtc_version.0, nvrtc_version.1));
    field(jetc_version);
    hex(&h.finalize())
}

/// Default on-disk cache directory.
pub fn default_cache_dir() -> Option<PathBuf> {
    if let Some(d) = std::env::var_os("JETC_KERNEL_CACHE") {
        return Some(PathBuf::from(d));
    }
    std::env::var_os("HOME").map(|h| Path::new(&h).join(".cache/jetc/kernels"))
}

/// Writes `bytes` to `path` atomically (temporary file in the same directory, then rename).
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir).map_err(|e| CodegenError::io(dir, e))?;
    let tmp = dir.join(format!(
        ".{}.{}.tmp",
        path.file_name().and_then(|n| n.to_str()).unwrap_or("entry"),
        std::process::id()
    ));
    std::fs::write(&tmp, bytes).map_err(|e| CodegenError::io(&tmp, e))?;
    std::fs::rename(&tmp, path).map_err(|e| CodegenError::io(path, e))
}

#[derive(serde::Serialize, serde::Deserialize)]
struct Meta {
    name: String,
    log: String,
    info: Option<PtxasInfo>,
}

/// Where a compiled kernel came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Origin {
    Memory,
    Disk,
    Compiled,
}

/// Renders and compiles instances through both caches.
pub struct Compiler {
    pub arch: Arch,
    pub limits: DeviceLimits,
    pub options: Vec<String>,
    pub nvrtc_version: (i32, i32),
    disk: Option<PathBuf>,
    memory: Mutex<HashMap<String, Arc<Compiled>>>,
}

impl Compiler {
    /// Probes NVRTC (an error if it is missing) and finds the CUDA headers.
    pub fn new(arch: Arch, disk: Option<PathBuf>) -> Result<Compiler> {
        let nvrtc_version = nvrtc::nvrtc_version()?;
        let includes = nvrtc::find_include_dirs();
        if includes.is_empty() {
            return Err(CodegenError::NvrtcMissing(
                "CUDA headers (cuda_bf16.h) not found: set JETC_CUDA_INCLUDE, CUDA_HOME, or run \
                 scripts/install_cuda_tools.sh"
                    .into(),
            ));
        }
        Ok(Compiler {
            arch,
            limits: DeviceLimits::for_arch(arch),
            options: nvrtc::compile_options(arch, &includes),
            nvrtc_version,
            disk,
            memory: Mutex::new(HashMap::new()),
        })
    }

    pub fn key(&self, source: &str) -> String {
        cache_key(source, &self.options, self.arch, self.nvrtc_version, crate::JETC_VERSION)
    }

    /// Rendered source and compiled kernel of `inst`, from a cache when possible.
    pub fn compile(&self, inst: &Instance) -> Result<(String, Arc<Compiled>, Origin)> {
        let src = inst.render(&self.limits)?;
        let (c, origin) = self.compile_source(&inst.name(), &src)?;
        Ok((src, c, origin))
    }

    pub fn compile_source(&self, name: &str, src: &str) -> Result<(Arc<Compiled>, Origin)> {
        let key = self.key(src);
        if let Ok(m) = self.memory.lock() {
            if let Some(c) = m.get(&key) {
                return Ok((c.clone(), Origin::Memory));
            }
        }
        if let Some(c) = self.disk.as_ref().and_then(|d| load_disk(d, &key)) {
            let c = Arc::new(c);
            if let Ok(mut m) = self.memory.lock() {
                m.insert(key, c.clone());
            }
            return Ok((c, Origin::Disk));
        }
        let c = Arc::new(nvrtc::compile(name, src, &self.options)?);
        if let Some(d) = &self.disk {
            // A cache that cannot be written is not an error: the kernel is compiled.
            let _ = store_disk(d, &key, &c);
        }
        if let Ok(mut m) = self.memory.lock() {
            m.insert(key, c.clone());
        }
        Ok((c, Origin::Compiled))
    }
}

fn load_disk(dir: &Path, key: &str) -> Option<Compiled> {
    let meta: Meta = serde_json::from_slice(&std::fs::read(dir.join(format!("{key}.json"))).ok()?).ok()?;
    let cubin = std::fs::read(dir.join(format!("{key}.cubin"))).ok()?;
    let ptx = std::fs::read_to_string(dir.join(format!("{key}.ptx"))).ok()?;
    if cubin.is_empty() {
        return None;
    }
    Some(Compiled { name: meta.name, ptx, cubin, log: meta.log, info: meta.info })
}

fn store_disk(dir: &Path, key: &str, c: &Compiled) -> Result<()> {
    write_atomic(&dir.join(format!("{key}.cubin")), &c.cubin)?;
    write_atomic(&dir.join(format!("{key}.ptx")), c.ptx.as_bytes())?;
    let meta = Meta { name: c.name.clone(), log: c.log.clone(), info: c.info.clone() };
    let json = serde_json::to_vec_pretty(&meta).map_err(|e| CodegenError::io(dir, e))?;
    // The .json goes last: its presence marks a complete entry.
    write_atomic(&dir.join(format!("{key}.json")), &json)
}
