//! NVRTC through cudarc: probing, header discovery, compiling a rendered kernel to PTX and
//! CUBIN, and the resource report (registers, spills, shared memory) that NVRTC's built-in
//! ptxas prints with `--ptxas-options=-v`.
//!
//! cudarc is built with `dynamic-loading`, so every call panics when libnvrtc is absent: the
//! only entry points here first call [`nvrtc_available`] (a bare dlopen probe) and return
//! [`CodegenError::NvrtcMissing`] otherwise. To work without `LD_LIBRARY_PATH`, a library
//! found by path (`JETC_NVRTC_LIB`, the pip layout next to a discovered include dir, CUDA_HOME)
//! is loaded first by absolute path and kept loaded: cudarc's later dlopen by soname then
//! finds that same library.
use std::ffi::{c_char, CString};
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use cudarc::nvrtc::{result, sys};

use crate::error::{CodegenError, Result};
use crate::kernels::Arch;

/// Registers, spills and shared memory of one compiled kernel, from ptxas' verbose report.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct PtxasInfo {
    pub registers: u32,
    pub spill_stores: u32,
    pub spill_loads: u32,
    pub stack_frame: u32,
    pub smem_static: u32,
    pub cmem: u32,
}

impl PtxasInfo {
    pub fn spills(&self) -> bool {
        self.spill_stores > 0 || self.spill_loads > 0
    }

    /// Parses ptxas `-v` output (from NVRTC's log or the ptxas binary) for function `name`;
    /// `None` when the report does not mention it.
    pub fn parse(log: &str, name: &str) -> Option<PtxasInfo> {
        let mut info = PtxasInfo::default();
        let mut inside = false;
        let mut found = false;
        for line in log.lines() {
            if line.contains("Compiling entry function") || line.contains("Function properties for") {
                inside = line.contains(&format!("'{name}'")) || line.ends_with(name);
                continue;
            }
            if !inside {
                continue;
            }
            let num_before = |key: &str| -> Option<u32> {
                let pos = line.find(key)?;
                line[..pos].split(|c: char| !c.is_ascii_digit()).rfind(|s| !s.is_empty())?.parse().ok()
            };
            if line.contains("bytes stack frame") {
                info.stack_frame = num_before("bytes stack frame").unwrap_or(0);
                info.spill_stores = num_before("bytes spill stores").unwrap_or(0);
                info.spill_loads = num_before("bytes spill loads").unwrap_or(0);
                found = true;
            }
            if line.contains("Used") && line.contains("registers") {
                info.registers = num_before("registers").unwrap_or(0);
                info.smem_static = num_before("bytes smem").unwrap_or(0);
                info.cmem = num_before("bytes cmem[0]").unwrap_or(0);
                found = true;
            }
        }
        found.then_some(info)
    }
}

/// Output of one NVRTC compilation.
#[derive(Clone, Debug, PartialEq)]
pub struct Compiled {
    pub name: String,
    pub ptx: String,
    pub cubin: Vec<u8>,
    pub log: String,
    pub info: Option<PtxasInfo>,
}

/// The library found by path and its builtins (NVRTC dlopens `libnvrtc-builtins.so.13.0` by
/// name; loaded first by absolute path, that name resolves to it without LD_LIBRARY_PATH).
type Preloaded = (PathBuf, libloading::Library, Option<libloading::Library>);
static PRELOADED: OnceLock<Option<Preloaded>> = OnceLock::new();

fn pip_roots() -> Vec<PathBuf> {
    let mut roots = Vec::new();
    if let Ok(v) = std::env::var("JETC_CUDA_VENV") {
        roots.push(PathBuf::from(v));
    }
    if let Ok(v) = std::env::var("VIRTUAL_ENV") {
        roots.push(PathBuf::from(v));
    }
    if let Some(home) = std::env::var_os("HOME") {
        roots.push(Path::new(&home).join(".cache/jetc/venv-cuda"));
    }
    roots.push(PathBuf::from(".venv-cuda"));
    let mut out = Vec::new();
    for r in roots {
        let lib = r.join("lib");
        if let Ok(rd) = std::fs::read_dir(&lib) {
            for e in rd.flatten() {
                let p = e.path().join("site-packages/nvidia/cu13");
                if p.is_dir() {
                    out.push(p);
                }
            }
        }
    }
    out
}

/// Candidate CUDA roots with `include/` and `lib/` (or lib64) below: pip layout, CUDA_HOME,
/// /usr/local/cuda.
fn cuda_roots() -> Vec<PathBuf> {
    let mut roots = pip_roots();
    for var in ["CUDA_HOME", "CUDA_PATH"] {
        if let Some(v) = std::env::var_os(var) {
            roots.push(PathBuf::from(&v));
            roots.push(Path::new(&v).join("targets/x86_64-linux"));
        }
    }
    roots.push(PathBuf::from("/usr/local/cuda"));
    roots.push(PathBuf::from("/usr/local/cuda/targets/x86_64-linux"));
    roots
}

/// Directories to pass to NVRTC as `-I` so that `<cuda_bf16.h>` resolves: `JETC_CUDA_INCLUDE`
/// (may list several, `:`-separated) if set, else the first discovered root whose include dir
/// has `cuda_bf16.h`.
pub fn find_include_dirs() -> Vec<PathBuf> {
    if let Ok(v) = std::env::var("JETC_CUDA_INCLUDE") {
        let dirs: Vec<PathBuf> = v.split(':').filter(|s| !s.is_empty()).map(PathBuf::from).collect();
        if !dirs.is_empty() {
            return dirs;
        }
    }
    cuda_roots().into_iter().map(|r| r.join("include")).filter(|d| d.join("cuda_bf16.h").is_file()).take(1).collect()
}

fn nvrtc_lib_candidates() -> Vec<PathBuf> {
    let mut c = Vec::new();
    if let Some(v) = std::env::var_os("JETC_NVRTC_LIB") {
        c.push(PathBuf::from(v));
    }
    for r in cuda_roots() {
        for lib in ["lib", "lib64"] {
            c.push(r.join(lib).join("libnvrtc.so.13"));
        }
    }
    c
}

fn preload() -> Option<&'static PathBuf> {
    PRELOADED
        .get_or_init(|| {
            for p in nvrtc_lib_candidates() {
                if p.is_file() {
                    // SAFETY: loading libnvrtc (and its builtins) runs their initialisers, which
                    // only set up the libraries; they stay loaded for the life of the process.
                    let builtins = p
                        .parent()
                        .map(|d| d.join("libnvrtc-builtins.so.13.0"))
                        .filter(|b| b.is_file())
                        .and_then(|b| unsafe { libloading::Library::new(b) }.ok());
                    if let Ok(lib) = unsafe { libloading::Library::new(&p) } {
                        return Some((p, lib, builtins));
                    }
                }
            }
            None
        })
        .as_ref()
        .map(|(p, _, _)| p)
}

/// True when libnvrtc can be loaded (after trying the discovered locations).
pub fn nvrtc_available() -> bool {
    preload();
    // SAFETY: only tries to dlopen the library by its candidate names.
    unsafe { sys::is_culib_present() }
}

/// A sentence on where NVRTC was looked for, for "not available" messages.
pub fn nvrtc_help() -> String {
    "libnvrtc.so.13 was not found: install it with `eval \"$(bash scripts/install_cuda_tools.sh)\"` \
     (NVRTC 13.0 from PyPI, no GPU needed), or set JETC_NVRTC_LIB to the library's path or \
     LD_LIBRARY_PATH to its directory"
        .to_string()
}

fn require() -> Result<()> {
    if nvrtc_available() {
        Ok(())
    } else {
        Err(CodegenError::NvrtcMissing(nvrtc_help()))
    }
}

/// NVRTC's version as (major, minor).
pub fn nvrtc_version() -> Result<(i32, i32)> {
    require()?;
    let (mut major, mut minor) = (0, 0);
    // SAFETY: the library is present (checked); the two out-pointers are valid.
    unsafe { sys::nvrtcVersion(&mut major, &mut minor) }
        .result()
        .map_err(|e| CodegenError::NvrtcMissing(format!("nvrtcVersion failed: {e}")))?;
    Ok((major, minor))
}

/// The NVRTC options jetc compiles with (part of the cache key).
pub fn compile_options(arch: Arch, include_dirs: &[PathBuf]) -> Vec<String> {
    let mut o = vec![
        format!("--gpu-architecture=sm_{}", arch.0),
        "--std=c++17".to_string(),
        "--ptxas-options=-v".to_string(),
        "--device-as-default-execution-space".to_string(),
    ];
    for d in include_dirs {
        o.push(format!("--include-path={}", d.display()));
    }
    o
}

fn c_text(v: Vec<c_char>) -> String {
    let bytes: Vec<u8> = v.into_iter().map(|c| c as u8).take_while(|&c| c != 0).collect();
    String::from_utf8_lossy(&bytes).into_owned()
}

/// Compiles `src` (entry `name`) for a real architecture: CUBIN for loading without driver
/// JIT, PTX for inspection, and the ptxas report from the log.
pub fn compile(name: &str, src: &str, options: &[String]) -> Result<Compiled> {
    require()?;
    let cerr = |status: String, log: String| CodegenError::Compile { kernel: name.to_string(), status, log };
    let csrc = CString::new(src).map_err(|_| cerr("source has a NUL byte".into(), String::new()))?;
    let cname = CString::new(format!("{name}.cu")).map_err(|_| cerr("name has a NUL byte".into(), String::new()))?;
    if options.iter().any(|o| o.contains('\0')) {
        return Err(cerr("an option has a NUL byte".into(), String::new()));
    }
    let prog = result::create_program(&csrc, Some(&cname)).map_err(|e| cerr(format!("{e}"), String::new()))?;
    // SAFETY: `prog` was created above and is destroyed exactly once below; csrc and cname
    // outlive it.
    let out = unsafe {
        let compiled = result::compile_program(prog, options);
        let log = result::get_program_log(prog).map(c_text).unwrap_or_default();
        let out = match compiled {
            Err(e) => Err(cerr(format!("{e:?}"), log)),
            Ok(()) => {
                let ptx = result::get_ptx(prog).map(c_text).unwrap_or_default();
                let mut size = 0usize;
                let cubin = match sys::nvrtcGetCUBINSize(prog, &mut size).result() {
                    Ok(()) if size > 0 => {
                        let mut buf = vec![0u8; size];
                        sys::nvrtcGetCUBIN(prog, buf.as_mut_ptr() as *mut c_char)
                            .result()
                            .map(|_| buf)
                            .map_err(|e| cerr(format!("nvrtcGetCUBIN: {e:?}"), log.clone()))
                    }
                    Ok(()) => Err(cerr("NVRTC produced no CUBIN (a virtual architecture?)".into(), log.clone())),
                    Err(e) => Err(cerr(format!("nvrtcGetCUBINSize: {e:?}"), log.clone())),
                };
                cubin.map(|cubin| Compiled { name: name.to_string(), info: PtxasInfo::parse(&log, name), ptx, cubin, log })
            }
        };
        let _ = result::destroy_program(prog);
        out
    };
    out
}
