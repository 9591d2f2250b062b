//! The search error type: messages name the run, the layer, the layout or the file concerned.
use thiserror::Error;

#[derive(Debug, Error)]
pub enum SearchError {
    #[error("{0}")]
    Msg(String),
    #[error(transparent)]
    Eval(#[from] jetc_eval::EvalError),
    #[error(transparent)]
    Train(#[from] jetc_train::TrainError),
    #[error(transparent)]
    Ir(#[from] jetc_ir::IrError),
}

pub type Result<T, E = SearchError> = std::result::Result<T, E>;

pub(crate) fn err(msg: impl std::fmt::Display) -> SearchError {
    SearchError::Msg(msg.to_string())
}
