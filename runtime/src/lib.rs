//! jetc's CPU executor: an f32 reference for every op of the IR (the raw ONNX-level ops
//! that exported decoders contain and the raised decoder ops), with KV caches, any batch
//! and sequence length. It is the oracle GPU kernels and passes are checked against.

pub mod alloc_policy;
pub mod decoder_ops;
pub mod error;
pub mod exec;
pub mod fastmath;
pub mod gemm_f32;
pub mod grad;
pub mod jetblock;
pub mod kernels;
pub mod linear;
pub mod math;
pub mod mixer_ops;
pub mod npz;
pub mod onnx_ops;
pub mod quant;
pub mod value;

pub use error::{Result, RuntimeError};
pub use exec::{check_inputs, check_supported, Params, Session};
pub use value::{Data, Value};
