//! ONNX import and export for jetc.
//!
//! The protobuf types ([`proto`]) are prost-derive structs written from `onnx.proto`, so no
//! `protoc` is needed. [`import`] turns a model file into an IR [`jetc_ir::Graph`] that mirrors
//! the ONNX graph (ops, attributes, opsets), with initializers as constants whose bytes stay
//! memory-mapped when stored as external data. [`export`] writes an IR graph back to ONNX.

pub mod error;
pub mod export;
pub mod functions;
pub mod import;
mod import_functions;
pub mod proto;

pub use error::{OnnxError, Result};
pub use export::{export_model, ExportOptions};
pub use import::{import_bytes, import_model};
