//! The training error type: messages name the step, parameter or node concerned.
use thiserror::Error;

#[derive(Debug, Error)]
pub enum TrainError {
    #[error("step {step}: {what} is not finite ({value}); training stopped")]
    NonFinite { step: u64, what: String, value: f32 },
    #[error("parameter `{name}`: {msg}")]
    Param { name: String, msg: String },
    #[error("{0}")]
    Other(String),
    #[error(transparent)]
    Autodiff(#[from] jetc_autodiff::AutodiffError),
    #[error(transparent)]
    Runtime(#[from] jetc_runtime::RuntimeError),
    #[error(transparent)]
    Ir(#[from] jetc_ir::IrError),
}

pub type Result<T, E = TrainError> = std::result::Result<T, E>;
