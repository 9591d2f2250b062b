//! What the fuzz targets run, shared so that a crashing input can also be replayed from a
//! plain test or binary: the import pipeline of `jetc inspect` on bytes, and the npz reader.
//!
//! Errors are expected and ignored; a panic (or an abort, a hang, an allocation beyond the
//! fuzzer's limits) is a bug.
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use jetc_passes::PassManager;

/// External data of the `llama-dynamo-opset20-sdpa-kv` fixture, so that its seed (and
/// mutations of its offsets and lengths) reach the memory-mapping code.
const EXTERNAL_DATA: &[u8] = include_bytes!("../../tests/fixtures/llama-dynamo-opset20-sdpa-kv/model.onnx.data");

/// A per-process folder holding `model.onnx.data`, the `base_dir` of every import.
pub fn base_dir() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let dir = std::env::temp_dir().join(format!("jetc-fuzz-{}", std::process::id()));
        // Best effort: without the data file, external tensors fail to load, which is fine.
        let _ = std::fs::create_dir_all(&dir);
        let _ = std::fs::write(dir.join("model.onnx.data"), EXTERNAL_DATA);
        dir
    })
}

/// `jetc_onnx::import_bytes`, then the passes of `jetc::pipeline::load_raised`
/// (`check_supported`, canonicalize, raise) and the decoder summary of `jetc inspect`.
/// Returns the first error, for the regression tests to show.
pub fn import_pipeline(data: &[u8]) -> Result<(), String> {
    let mut g = jetc_onnx::import_bytes(data, "fuzz.onnx", base_dir()).map_err(|e| e.to_string())?;
    jetc_runtime::check_supported(&g).map_err(|e| e.to_string())?;
    PassManager::canonicalize().run(&mut g).map_err(|e| e.to_string())?;
    PassManager::new().add(Box::new(jetc_passes::Raise)).run(&mut g).map_err(|e| e.to_string())?;
    jetc_passes::summary::summarize(&g)?;
    Ok(())
}

/// The npz reader of `jetc run --inputs`, on an archive in memory.
pub fn read_npz(data: &[u8]) -> Result<(), String> {
    jetc_runtime::npz::read_npz_bytes(data, Path::new("fuzz.npz")).map(|_| ()).map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    /// Every file under `regressions/<target>/`, sorted.
    fn inputs(target: &str) -> Vec<std::path::PathBuf> {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("regressions").join(target);
        let mut files: Vec<_> = std::fs::read_dir(&dir)
            .map(|d| d.filter_map(|e| e.ok().map(|e| e.path())).filter(|p| p.is_file()).collect())
            .unwrap_or_default();
        files.sort();
        files
    }

    /// Inputs that once crashed the import target run through it without panicking.
    #[test]
    fn import_regressions() {
        let files = inputs("import");
        assert!(!files.is_empty(), "no regression inputs found");
        for f in files {
            let bytes = std::fs::read(&f).unwrap_or_default();
            eprintln!("{}: {:?}", f.display(), super::import_pipeline(&bytes));
        }
    }

    /// Inputs that once crashed the npz target run through it without panicking.
    #[test]
    fn npz_regressions() {
        for f in inputs("npz") {
            let bytes = std::fs::read(&f).unwrap_or_default();
            eprintln!("{}: {:?}", f.display(), super::read_npz(&bytes));
        }
    }
}
