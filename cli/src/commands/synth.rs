//! `jetc synth`: decoders with random weights at real shapes (being written).
use std::path::Path;

use crate::error::{CliError, Result};

pub fn run(arch: &str, output: &Path, seed: u64) -> Result<()> {
    let _ = (output, seed);
    Err(CliError::Msg(format!("unknown architecture `{arch}`")))
}
