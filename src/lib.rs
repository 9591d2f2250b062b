//! jetc facade: re-exports the workspace crates under one name for the CLI, the tests and
//! the examples. The engine itself lives in `jetc-models` (loading, synth, GGUF models,
//! conversion, generation, export); training and search live in their own crates above it.
pub use jetc_ir as ir;
pub use jetc_models as models;
pub use jetc_onnx as onnx;
pub use jetc_passes as passes;
pub use jetc_runtime as runtime;

pub use jetc_models::{bench, convert, generate, gguf_model, jet_hf, pipeline, safetensors_out, synth};
