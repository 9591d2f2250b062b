//! The one error type of codegen. Every message names what it is about (kernel instance,
//! file, option) so that a failure in a batch of hundreds of instances is actionable.
use std::path::PathBuf;

use thiserror::Error;

#[derive(Debug, Error)]
pub enum CodegenError {
    /// A configuration that the template family cannot instantiate (sizes that do not divide,
    /// limits exceeded).
    #[error("kernel {kernel}: invalid configuration: {msg}")]
    Config { kernel: String, msg: String },
    /// minijinja failed to render a template.
    #[error("template {template}: {msg}")]
    Template { template: String, msg: String },
    /// NVRTC (libnvrtc.so) could not be loaded: nothing can be compiled.
    #[error("NVRTC is not available: {0}")]
    NvrtcMissing(String),
    /// NVRTC rejected the source; `log` is NVRTC's program log.
    #[error("kernel {kernel}: NVRTC compile failed ({status}):\n{log}")]
    Compile { kernel: String, status: String, log: String },
    /// ptxas (external) failed or printed something unparseable.
    #[error("kernel {kernel}: ptxas: {msg}")]
    Ptxas { kernel: String, msg: String },
    /// No usable GPU / driver.
    #[error("no usable GPU: {0}")]
    NoGpu(String),
    /// A CUDA driver call failed.
    #[error("CUDA driver ({what}): {msg}")]
    Driver { what: String, msg: String },
    /// A kernel's GPU output disagrees with the CPU reference.
    #[error("kernel {kernel}: wrong result: {msg}")]
    Mismatch { kernel: String, msg: String },
    #[error("{path}: {msg}")]
    Io { path: PathBuf, msg: String },
    /// The tuning database is unreadable (it is then rebuilt; this says why).
    #[error("tuning database {path}: {msg}")]
    Db { path: PathBuf, msg: String },
    /// An IR graph that lowering cannot map to kernels.
    #[error("lowering: {0}")]
    Lower(String),
    #[error("{0}")]
    Other(String),
}

impl CodegenError {
    pub(crate) fn io(path: impl Into<PathBuf>, e: impl std::fmt::Display) -> CodegenError {
        CodegenError::Io { path: path.into(), msg: e.to_string() }
    }

    pub(crate) fn config(kernel: impl Into<String>, msg: impl Into<String>) -> CodegenError {
        CodegenError::Config { kernel: kernel.into(), msg: msg.into() }
    }
}

pub type Result<T> = std::result::Result<T, CodegenError>;
