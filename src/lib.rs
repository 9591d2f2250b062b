//! jetc facade: re-exports the workspace crates so that the top-level `tests/` and
//! `examples/` can use the whole toolchain through one dependency.
pub use jetc_ir as ir;
pub use jetc_onnx as onnx;
pub use jetc_passes as passes;
pub use jetc_runtime as runtime;
