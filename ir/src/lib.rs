//! jetc's graph IR.
//!
//! A model is a [`Graph`]: a petgraph `StableGraph` whose nodes are operations ([`Op`]) and
//! whose edges carry values from an output slot of one node to an input slot of another.
//! Every value has a [`Fact`]: a dtype and a symbolic shape ([`Dim`] is a polynomial over
//! named symbols such as `batch`, `seq`, `past`). Weights are [`Tensor`]s whose bytes may be
//! memory-mapped from the model file rather than copied.
//!
//! The IR mirrors ONNX faithfully at first (one [`OnnxOp`] per ONNX node, attributes and
//! opset kept) and is then raised by passes to decoder-level ops (attention, RMSNorm, ...).

pub mod blocks;
pub mod dtype;
pub mod error;
pub mod graph;
pub mod infer;
pub mod op;
pub mod patch;
pub mod print;
pub mod shape;
pub mod tensor;
pub mod verify;

pub use dtype::DType;
pub use error::{IrError, Result};
pub use graph::{Graph, GraphOutput, Node, NodeId, Outlet, OutputInfo};

pub use patch::{Patch, PatchOutlet};
pub use op::{
    AttentionSpec, Attr, BackwardSpec, DynamicConvSpec, JetBlockSpec, LinearAttentionSpec, OnnxOp, Op, RmsNormSpec, RopeStyle, UpdateRule,
    JETC_DOMAIN,
};

pub use shape::{Dim, Fact};
pub use tensor::Tensor;
