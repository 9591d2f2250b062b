//! `jetc run`: evaluates a model on the CPU executor, npz in, npz out.
use std::collections::HashMap;
use std::path::Path;

use jetc_runtime::npz::{read_npz, write_npz};
use jetc_runtime::Session;

use crate::error::Result;
use crate::load;

pub fn run(model: &Path, inputs: &Path, out: &Path, raise: bool) -> Result<()> {
    let p = load::Precision::Stored;
    let g = if raise { load::load_raised_with(model, p)? } else { load::load_with(model, p)? };
    let given: HashMap<String, jetc_runtime::Value> = read_npz(inputs)?.into_iter().collect();
    jetc_runtime::check_inputs(&g, &given).map_err(|e| crate::error::CliError::Msg(format!("{}: {e}", inputs.display())))?;
    let session = Session::new(&g)?;
    let outputs = session.run(given)?;
    write_npz(out, &outputs)?;
    Ok(())
}
