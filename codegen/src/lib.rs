//! Codegen: lowers IR ops to specialised CUDA kernel instances rendered from the templates in
//! `kernels-templates/`, compiled by NVRTC through cudarc, cached and autotuned.
//!
//! - [`kernels`]: kernel families (JetBlock decode step, chunked gated delta rule in two
//!   passes, dynamic conv prefill, row norms, elementwise), their sizes, tunable parameters,
//!   validation by device limits and launch geometry;
//! - [`templates`]: the embedded minijinja templates and rendering;
//! - [`lower`]: IR graph -> the kernel problems a model needs (plus Jet-Nemotron presets);
//! - [`nvrtc`], [`ptxas`]: compiling (CUBIN + PTX for sm_XX) and resource reports;
//! - [`cache`]: in-memory and on-disk compile caches under a content hash;
//! - [`tune`]: config spaces, pruning, the tuning database and the tuner loop;
//! - [`reference`]: CPU references of every kernel's contract (checked against jetc-runtime);
//! - [`gpu`]: probing the driver, launching instances, CUDA-event timing, the GPU checks.
//!
//! Nothing here panics when CUDA is absent: NVRTC and the driver are probed before any
//! cudarc call, and their absence is an error value that says so.
pub mod cache;
pub mod error;
pub mod gpu;
pub mod kernels;
pub mod lower;
pub mod manifest;
pub mod nvrtc;
pub mod ptxas;
pub mod reference;
pub mod templates;
pub mod tune;

pub use error::{CodegenError, Result};
pub use indicatif;
pub use kernels::{Arch, DType, DeviceLimits, Instance, Kernel, Params, RunSize};

/// jetc's version, part of every cache and database key.
pub const JETC_VERSION: &str = env!("CARGO_PKG_VERSION");
