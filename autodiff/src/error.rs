//! The autodiff error type: every message names the node and op concerned.
use thiserror::Error;

#[derive(Debug, Error)]
pub enum AutodiffError {
    #[error("node `{node}` ({op}): {msg}")]
    Node { node: String, op: String, msg: String },
    #[error("the loss `{name}` must be a float scalar, it is {fact}")]
    Loss { name: String, fact: String },
    #[error("parameter `{name}`: {msg}")]
    Param { name: String, msg: String },
    #[error(transparent)]
    Ir(#[from] jetc_ir::IrError),
    #[error(transparent)]
    Pass(#[from] jetc_passes::PassError),
}

pub type Result<T, E = AutodiffError> = std::result::Result<T, E>;
