//! Errors of the passes: each names the pass and the node concerned.
use thiserror::Error;

#[derive(Debug, Error)]
pub enum PassError {
    #[error("pass `{pass}`: {source}")]
    Ir { pass: String, source: jetc_ir::IrError },
    #[error("pass `{pass}`: {source}")]
    Runtime { pass: String, source: jetc_runtime::RuntimeError },
    #[error("pass `{pass}`: {msg}")]
    Other { pass: String, msg: String },
    #[error("unknown pass `{0}` (known: {1})")]
    Unknown(String, String),
}

pub type Result<T, E = PassError> = std::result::Result<T, E>;
