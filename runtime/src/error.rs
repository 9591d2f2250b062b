//! The executor's error type: every message names the node and op concerned.
use thiserror::Error;

#[derive(Debug, Error)]
pub enum RuntimeError {
    #[error("node `{node}` ({op}): {msg}")]
    Node { node: String, op: String, msg: String },
    #[error("unsupported op {op} (node `{node}`, opset {opset}): jetc's CPU executor has no kernel for it")]
    Unsupported { op: String, node: String, opset: i64 },
    #[error("input `{name}`: {msg}")]
    Input { name: String, msg: String },
    #[error("npz file {path}: {msg}")]
    Npz { path: String, msg: String },
    #[error(transparent)]
    Ir(#[from] jetc_ir::IrError),
}

impl RuntimeError {
    pub fn node(node: &str, op: &str, msg: impl Into<String>) -> Self {
        RuntimeError::Node { node: node.to_string(), op: op.to_string(), msg: msg.into() }
    }
}

pub type Result<T, E = RuntimeError> = std::result::Result<T, E>;
