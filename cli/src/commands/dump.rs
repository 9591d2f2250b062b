//! `jetc dump`: the IR text after import (and after the named passes).
use std::path::Path;

use jetc_passes::{pass_by_name, PassManager};

use crate::error::Result;
use crate::load;

pub fn run(model: &Path, passes: &[String], raw: bool) -> Result<()> {
    let mut g = if raw { load::import(model)? } else { load::load(model)? };
    let mut pm = PassManager::new();
    for p in passes {
        pm = pm.add(pass_by_name(p)?);
    }
    pm.run(&mut g)?;
    print!("{}", jetc_ir::print::print_graph(&g)?);
    Ok(())
}
