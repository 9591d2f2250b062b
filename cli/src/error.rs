//! The CLI's error type: wraps the library errors, whose messages already name the file,
//! node or op concerned.
use thiserror::Error;

#[derive(Debug, Error)]
pub enum CliError {
    #[error(transparent)]
    Onnx(#[from] jetc_onnx::OnnxError),
    #[error(transparent)]
    Load(#[from] jetc::pipeline::LoadError),
    #[error(transparent)]
    Pass(#[from] jetc_passes::PassError),
    #[error(transparent)]
    Runtime(#[from] jetc_runtime::RuntimeError),
    #[error(transparent)]
    Ir(#[from] jetc_ir::IrError),
    #[error(transparent)]
    Search(#[from] jetc_search::SearchError),
    #[error("{0}")]
    Msg(String),
}

pub type Result<T, E = CliError> = std::result::Result<T, E>;
