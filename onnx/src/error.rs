//! Errors of the ONNX importer and exporter; each names the file, node, op or tensor.
use thiserror::Error;

#[derive(Debug, Error)]
pub enum OnnxError {
    #[error("{path}: {source}")]
    Io { path: String, source: std::io::Error },
    #[error("{path}: not a readable ONNX model ({msg})")]
    Decode { path: String, msg: String },
    #[error("{path}: {msg}")]
    Invalid { path: String, msg: String },
    #[error("{path}: unsupported op {op} (node `{node}`, opset {opset})")]
    Unsupported { path: String, op: String, node: String, opset: i64 },
    #[error("{path}: tensor `{tensor}`: external data {data_path}: {msg}")]
    ExternalData { path: String, tensor: String, data_path: String, msg: String },
    #[error("{path}: {source}")]
    Ir { path: String, source: jetc_ir::IrError },
}

pub type Result<T, E = OnnxError> = std::result::Result<T, E>;
