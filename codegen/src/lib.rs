//! Codegen: lowers IR ops to specialised CUDA kernel instances rendered from the templates in
//! `kernels-templates/`, compiled by NVRTC through cudarc, cached and autotuned.
//!
//! Not built yet: the codegen issue fills this crate. It exists now so that the workspace has
//! the layout of docs/architecture.md from the start.
