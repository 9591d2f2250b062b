//! Loading a model file into canonical IR: import by file type, then the standard passes
//! (inference, constant folding, pruning), each verified.
use std::path::Path;

use jetc_ir::Graph;
use jetc_passes::PassManager;

use crate::error::{CliError, Result};

/// Imports without any pass.
pub fn import(path: &Path) -> Result<Graph> {
    match path.extension().and_then(|e| e.to_str()) {
        Some("onnx") => Ok(jetc_onnx::import_model(path)?),
        _ => Err(CliError::Msg(format!(
            "{}: unknown model format (expected a .onnx file)",
            path.display()
        ))),
    }
}

/// Imports, then canonicalizes (infer, fold, prune) with verification.
pub fn load(path: &Path) -> Result<Graph> {
    let mut g = import(path)?;
    jetc_runtime::check_supported(&g)?;
    PassManager::canonicalize().run(&mut g)?;
    Ok(g)
}

/// Loads and raises to decoder ops (attention, RMSNorm, SwiGLU, embedding).
pub fn load_raised(path: &Path) -> Result<Graph> {
    let mut g = load(path)?;
    PassManager::new().add(Box::new(jetc_passes::Raise)).run(&mut g)?;
    Ok(g)
}
