//! Loading a model file into IR: import by file type (ONNX, or a GGUF model built into the
//! same dynamo-style graph by [`crate::gguf_model`]), then the standard passes (inference,
//! constant folding, CSE, pruning) and optionally raising, each verified.
use std::path::Path;

use jetc_ir::Graph;
use jetc_passes::PassManager;
use thiserror::Error;

pub use crate::gguf_model::Precision;

#[derive(Debug, Error)]
pub enum LoadError {
    #[error(transparent)]
    Onnx(#[from] jetc_onnx::OnnxError),
    #[error(transparent)]
    Pass(#[from] jetc_passes::PassError),
    #[error("{0}: {1}")]
    Runtime(String, jetc_runtime::RuntimeError),
    #[error(transparent)]
    Gguf(#[from] crate::gguf_model::GgufModelError),
}

/// Whether `path` is a GGUF model: by its extension (`.gguf`, `.onnx`), else by its first
/// bytes (the GGUF magic; anything else is taken for ONNX).
pub fn is_gguf(path: &Path) -> bool {
    match path.extension().and_then(|e| e.to_str()) {
        Some("gguf") => true,
        Some("onnx") => false,
        _ => {
            let mut magic = [0u8; 4];
            std::fs::File::open(path)
                .and_then(|mut f| std::io::Read::read_exact(&mut f, &mut magic))
                .is_ok_and(|_| &magic == b"GGUF")
        }
    }
}

/// Imports without any pass, as GGUF or ONNX ([`is_gguf`]), every weight in f32.
pub fn import(path: &Path) -> Result<Graph, LoadError> {
    import_with(path, Precision::F32)
}

/// [`import`] with a GGUF file's weights held in `precision` (ONNX weights are as the file
/// has them).
pub fn import_with(path: &Path, precision: Precision) -> Result<Graph, LoadError> {
    if is_gguf(path) {
        return Ok(crate::gguf_model::import_with(path, precision)?);
    }
    Ok(jetc_onnx::import_model(path)?)
}

/// Imports and canonicalizes (infer, fold, cse, prune) with verification. Fails on the first
/// op the executor has no kernel for, naming its type, node and opset.
pub fn load(path: &Path) -> Result<Graph, LoadError> {
    load_with(path, Precision::F32)
}

/// [`load`] with a GGUF file's weights held in `precision`.
pub fn load_with(path: &Path, precision: Precision) -> Result<Graph, LoadError> {
    let mut g = import_with(path, precision)?;
    jetc_runtime::check_supported(&g).map_err(|e| LoadError::Runtime(path.display().to_string(), e))?;
    PassManager::canonicalize().run(&mut g)?;
    Ok(g)
}

/// Loads and raises to decoder ops (attention, RMSNorm, SwiGLU, embedding).
pub fn load_raised(path: &Path) -> Result<Graph, LoadError> {
    load_raised_with(path, Precision::F32)
}

/// [`load_raised`] with a GGUF file's weights held in `precision`: [`Precision::Stored`] for
/// running and generating (no f32 copy of the weights), f32 for everything that rewrites or
/// trains them.
pub fn load_raised_with(path: &Path, precision: Precision) -> Result<Graph, LoadError> {
    let mut g = load_with(path, precision)?;
    PassManager::new().add(Box::new(jetc_passes::Raise)).run(&mut g)?;
    Ok(g)
}
