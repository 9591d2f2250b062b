//! `jetc export`: writes the imported (canonicalized) model back to ONNX.
use std::path::Path;

use jetc_onnx::{export_model, ExportOptions};

use crate::error::Result;
use crate::load;

pub fn run(model: &Path, output: &Path, external_data: bool) -> Result<()> {
    let g = load::load(model)?;
    export_model(&g, output, &ExportOptions { external_data, ..Default::default() })?;
    Ok(())
}
