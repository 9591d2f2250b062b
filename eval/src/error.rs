//! The evaluation error type: messages name the task, the example and the file concerned.
use thiserror::Error;

#[derive(Debug, Error)]
pub enum EvalError {
    #[error("{task}: {msg}")]
    Task { task: String, msg: String },
    #[error(transparent)]
    Model(#[from] jetc_models::generate::GenerateError),
    #[error(transparent)]
    Data(#[from] jetc_train::TrainError),
}

pub type Result<T, E = EvalError> = std::result::Result<T, E>;

pub(crate) fn task_err(task: &str, msg: impl std::fmt::Display) -> EvalError {
    EvalError::Task { task: task.to_string(), msg: msg.to_string() }
}
