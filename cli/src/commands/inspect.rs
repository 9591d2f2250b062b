//! `jetc inspect`: architecture summary (filled by the raising passes).
use std::path::Path;

use crate::error::Result;
use crate::load;

pub fn run(model: &Path, json: bool) -> Result<()> {
    let g = load::load(model)?;
    let _ = json;
    println!("{} nodes", g.node_count());
    Ok(())
}
