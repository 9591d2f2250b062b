//! Reverse-mode automatic differentiation as a pass over jetc's IR.
//!
//! [`grad`] appends the backward of a scalar loss to the graph that computes it: one
//! [`jetc_ir::Op::Backward`] node per forward op on the path from the parameters to the
//! loss, explicit `Add` nodes where a value fans out to several consumers, and one graph
//! output `grad.<name>` per parameter. Forward and backward are then one graph that the
//! executor runs in one pass (and that later passes and the codegen see whole), keeping each
//! forward value alive only until its last backward use.
//!
//! The rules themselves (one VJP per op family) are the runtime's backward kernels
//! (`jetc_runtime::grad`); this crate decides which ones run and wires them. An op with no
//! rule on the path, or a parameter reached only through a non-differentiable input, is an
//! error naming the node and the op, never a silent zero. Parameters that do not affect the
//! loss get a zero gradient.
pub mod error;
pub mod pass;

pub use error::{AutodiffError, Result};
pub use pass::{grad, Gradient};
