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
use crate::manager::Pass;

pub struct Raise;

impl Pass for Raise {
    fn name(&self) -> &'static str {
        "raise"
    }

    fn run(&self, g: &mut Graph) -> Result<bool> {
        let ir = |source| PassError::Ir { pass: "raise".into(), source };
        let mut changed = cleanup::remove_identity_casts(g).map_err(ir)?;
        g.prune_dead().map_err(ir)?;
        changed |= crate::shape_of::ShapeOf.run(g)?;
        jetc_ir::infer::infer_graph(g).map_err(ir)?;
        changed |= crate::fold::Fold::default().run(g)?;
        changed |= crate::cse::Cse.run(g)?;
        changed |= rmsnorm::raise(g).map_err(ir)?;
        changed |= embedding::raise(g).map_err(ir)?;
        changed |= mlp::raise(g).map_err(ir)?;
        changed |= attention::raise(g).map_err(ir)?;
        changed |= linear::raise(g).map_err(ir)?;
        changed |= dynamic_conv::raise(g).map_err(ir)?;
        changed |= head_norms::raise(g).map_err(ir)?;
        g.prune_dead().map_err(ir)?;
        // Raising can leave twins (each layer's RoPE gather); merge them.
        crate::cse::Cse.run(g)?;
        jetc_ir::infer::infer_graph(g).map_err(ir)?;
        Ok(changed)
    }
}
