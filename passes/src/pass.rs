//! The `Pass` trait, on its own so that passes and the pass manager do not import each
//! other, and [`FnPass`], which makes a named function a pass (for the sub-steps of a
//! pipeline).
use jetc_ir::Graph;

use crate::error::Result;

pub trait Pass {
    fn name(&self) -> &'static str;
    /// Rewrites the graph; returns true when something changed.
    fn run(&self, graph: &mut Graph) -> Result<bool>;
}

/// A named function as a pass.
pub struct FnPass {
    pub name: &'static str,
    pub f: fn(&mut Graph) -> Result<bool>,
}

impl Pass for FnPass {
    fn name(&self) -> &'static str {
        self.name
    }
    fn run(&self, graph: &mut Graph) -> Result<bool> {
        (self.f)(graph)
    }
}
