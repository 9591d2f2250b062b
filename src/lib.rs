//! jetc facade: re-exports the workspace crates and holds the model-loading pipeline shared
//! by the CLI, the tests and the examples.
pub use jetc_ir as ir;
pub use jetc_onnx as onnx;
pub use jetc_passes as passes;
pub use jetc_runtime as runtime;

pub mod convert;
pub mod generate;
pub mod gguf_model;
pub mod jet_hf;
pub mod pipeline;
pub mod safetensors_out;
pub mod synth;
