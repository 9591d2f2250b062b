//! Raising: recognises the decoder in an imported graph and replaces the decomposed ops
//! with decoder-level ops that keep the original weights: `Embedding`, `RmsNorm`, `SwiGlu`
//! and `Attention` (projections, RoPE, GQA, KV cache, mask and scale included).
//!
//! Matching is anchored on ops that every spelling shares (ReduceMean / the norm ops for
//! RMSNorm, the down-projection MatMul for SwiGLU, Softmax / `Attention` /
//! `GroupQueryAttention` for attention) and walks through the shape plumbing that exporters
//! insert, never on node or value names. What cannot be recognised stays as ONNX ops, which
//! the executor still runs.
mod attention;
mod cleanup;
mod dynamic_conv;
mod head_norms;
mod embedding;
mod linear;
mod mlp;
mod rmsnorm;

use jetc_ir::Graph;

use crate::error::{PassError, Result};
use crate::manager::{Infer, PassManager};
use crate::pass::{FnPass, Pass};

pub struct Raise;

/// A raising step as a pass: IR errors carry the step's name.
macro_rules! step {
    ($name:literal, $f:expr) => {
        Box::new(FnPass {
            name: $name,
            f: |g: &mut Graph| -> Result<bool> { $f(g).map_err(|source| PassError::Ir { pass: concat!("raise/", $name).into(), source }) },
        })
    };
}

impl Raise {
    /// The raising pipeline; the verifier runs after every step.
    pub fn pipeline() -> PassManager {
        PassManager::named("raise")
            .add(step!("identity-casts", |g: &mut Graph| -> jetc_ir::Result<bool> {
                let changed = cleanup::remove_identity_casts(g)?;
                g.prune_dead()?;
                Ok(changed)
            }))
            .add(Box::new(FnPass {
                name: "shape-of",
                f: |g: &mut Graph| -> Result<bool> {
                    let changed = crate::shape_of::ShapeOf.run(g)?;
                    jetc_ir::infer::infer_graph(g).map_err(|source| PassError::Ir { pass: "raise/shape-of".into(), source })?;
                    Ok(changed)
                },
            }))
            .add(Box::new(crate::fold::Fold::default()))
            .add(Box::new(crate::cse::Cse))
            .add(step!("rmsnorm", rmsnorm::raise))
            .add(step!("embedding", embedding::raise))
            .add(step!("mlp", mlp::raise))
            .add(step!("attention", attention::raise))
            .add(step!("linear-attention", linear::raise))
            .add(step!("dynamic-conv", dynamic_conv::raise))
            .add(step!("causal-conv", dynamic_conv::raise_standard))
            .add(step!("head-norms", head_norms::raise))
            .add(step!("prune", |g: &mut Graph| -> jetc_ir::Result<bool> { Ok(g.prune_dead()? > 0) }))
            // Raising can leave twins (each layer's RoPE gather); merge them.
            .add(Box::new(crate::cse::Cse))
            .add(Box::new(Infer))
    }
}

impl Pass for Raise {
    fn name(&self) -> &'static str {
        "raise"
    }

    fn run(&self, g: &mut Graph) -> Result<bool> {
        Raise::pipeline().run_changed(g)
    }
}
