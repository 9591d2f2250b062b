//! The `Pass` trait and the verifying pass manager.
use jetc_ir::verify::verify;
use jetc_ir::Graph;

use crate::error::{PassError, Result};

pub trait Pass {
    fn name(&self) -> &'static str;
    /// Rewrites the graph; returns true when something changed.
    fn run(&self, graph: &mut Graph) -> Result<bool>;
}

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

#[derive(Default)]
pub struct PassManager {
    passes: Vec<Box<dyn Pass>>,
}

impl PassManager {
    pub fn new() -> PassManager {
        PassManager::default()
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
        for p in &self.passes {
            p.run(graph)?;
            verify(graph).map_err(|source| PassError::Ir { pass: p.name().to_string(), source })?;
        }
        Ok(())
    }
}
