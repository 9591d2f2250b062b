//! The verifying pass manager. A pipeline is a value: `PassManager` is itself a [`Pass`], so
//! pipelines nest (`Raise` and `Lower` are pipelines of sub-passes), and the verifier runs
//! after every sub-pass, naming it in any error.
use jetc_ir::verify::verify;
use jetc_ir::Graph;

use crate::error::{PassError, Result};
pub use crate::pass::{FnPass, Pass};

/// Shape and type inference over the whole graph.
pub struct Infer;

impl Pass for Infer {
    fn name(&self) -> &'static str {
        "infer"
    }
    fn run(&self, graph: &mut Graph) -> Result<bool> {
        jetc_ir::infer::infer_graph(graph).map_err(|source| PassError::Ir { pass: "infer".into(), source })?;
        Ok(true)
    }
}

/// Removes nodes that no output depends on.
pub struct Dce;

impl Pass for Dce {
    fn name(&self) -> &'static str {
        "dce"
    }
    fn run(&self, graph: &mut Graph) -> Result<bool> {
        let n = graph.prune_dead().map_err(|source| PassError::Ir { pass: "dce".into(), source })?;
        Ok(n > 0)
    }
}

/// Names accepted by `jetc dump --passes`.
pub const PASS_NAMES: &[&str] = &["infer", "fold", "cse", "dce", "raise", "fuse", "unfuse", "lower"];

pub fn pass_by_name(name: &str) -> Result<Box<dyn Pass>> {
    Ok(match name {
        "infer" => Box::new(Infer),
        "fold" => Box::new(crate::fold::Fold::default()),
        "dce" => Box::new(Dce),
        "cse" => Box::new(crate::cse::Cse),
        "raise" => Box::new(crate::raise::Raise),
        "lower" => Box::new(crate::lower::Lower),
        "fuse" => Box::new(crate::fuse::Fuse),
        "unfuse" => Box::new(crate::fuse::Unfuse),
        other => return Err(PassError::Unknown(other.to_string(), PASS_NAMES.join(", "))),
    })
}

pub struct PassManager {
    name: &'static str,
    passes: Vec<Box<dyn Pass>>,
}

impl Default for PassManager {
    fn default() -> Self {
        PassManager { name: "pipeline", passes: Vec::new() }
    }
}

impl PassManager {
    pub fn new() -> PassManager {
        PassManager::default()
    }

    /// An empty pipeline that reports itself as `name` when nested in another.
    pub fn named(name: &'static str) -> PassManager {
        PassManager { name, passes: Vec::new() }
    }

    pub fn add(mut self, pass: Box<dyn Pass>) -> PassManager {
        self.passes.push(pass);
        self
    }

    /// The standard pipeline after import: infer, fold constants, infer again, prune.
    pub fn canonicalize() -> PassManager {
        PassManager::new()
            .add(Box::new(Infer))
            .add(Box::new(crate::fold::Fold::default()))
            .add(Box::new(crate::cse::Cse))
            .add(Box::new(Infer))
            .add(Box::new(Dce))
    }

    /// Runs every pass, verifying the graph after each.
    pub fn run(&self, graph: &mut Graph) -> Result<()> {
        self.run_changed(graph).map(|_| ())
    }

    /// Runs every pass, verifying after each; true when one of them changed the graph.
    pub fn run_changed(&self, graph: &mut Graph) -> Result<bool> {
        let mut changed = false;
        for p in &self.passes {
            changed |= p.run(graph)?;
            verify(graph).map_err(|source| PassError::Ir { pass: format!("{}/{}", self.name, p.name()), source })?;
        }
        Ok(changed)
    }
}

impl Pass for PassManager {
    fn name(&self) -> &'static str {
        self.name
    }
    fn run(&self, graph: &mut Graph) -> Result<bool> {
        self.run_changed(graph)
    }
}
