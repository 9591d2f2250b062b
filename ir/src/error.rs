//! The IR's error type. Messages name the node, op or value concerned.
use thiserror::Error;

#[derive(Debug, Error)]
pub enum IrError {
    #[error("node `{node}` ({op}): {msg}")]
    Node { node: String, op: String, msg: String },
    #[error("graph is not acyclic: a cycle goes through node `{0}`")]
    Cycle(String),
    #[error("verifier: {0}")]
    Verify(String),
    #[error("tensor `{name}`: {msg}")]
    Tensor { name: String, msg: String },
    #[error("{0}")]
    Other(String),
}

impl IrError {
    pub fn node(node: impl Into<String>, op: impl Into<String>, msg: impl Into<String>) -> Self {
        IrError::Node { node: node.into(), op: op.into(), msg: msg.into() }
    }
    pub fn tensor(name: impl Into<String>, msg: impl Into<String>) -> Self {
        IrError::Tensor { name: name.into(), msg: msg.into() }
    }
}

pub type Result<T, E = IrError> = std::result::Result<T, E>;
