//! `swa{layers, window}`: turns the full attention of the chosen layers into sliding-window
//! attention. Each query sees itself and the previous `window - 1` keys; the layer's KV cache
//! keeps the last `window` tokens (Jet-Nemotron's convention, which its cache figures use).
//! The exporter's mask input is dropped: visibility becomes causal + window, so padding
//! masks no longer apply to these layers. A layer's KV cache inputs get their own length
//! symbol (`swa_past_length.{l}`: it holds min(past, W) tokens, not the shared past length),
//! and what read the past length off them (the other layers' masks, RoPE positions) reads it
//! off a full-attention layer's cache instead.
use jetc_ir::{AttentionSpec, Graph, Op};

use crate::error::{PassError, Result};
use crate::pass::Pass;

pub struct Swa {
    pub layers: Vec<usize>,
    pub window: usize,
}

/// Attention (mixer) nodes in layer order.
pub fn attention_layers(g: &Graph) -> jetc_ir::Result<Vec<jetc_ir::NodeId>> {
    let mut out = Vec::new();
    for id in g.topo_order()? {
        if matches!(g.node(id)?.op, Op::Attention(_)) {
            out.push(id);
        }
    }
    Ok(out)
}

impl Pass for Swa {
    fn name(&self) -> &'static str {
        "swa"
    }

    fn run(&self, g: &mut Graph) -> Result<bool> {
        let fail = |msg: String| PassError::Other { pass: "swa".into(), msg };
        if self.window == 0 {
            return Err(fail("the window must be at least 1 token".into()));
        }
        let layers = attention_layers(g).map_err(|source| PassError::Ir { pass: "swa".into(), source })?;
        for &l in &self.layers {
            let Some(&id) = layers.get(l) else {
                return Err(fail(format!("layer {l} does not exist (the model has {} attention layers)", layers.len())));
            };
            let node = g.node_mut(id).map_err(|source| PassError::Ir { pass: "swa".into(), source })?;
            if let Op::Attention(spec) = &mut node.op {
                spec.window = Some(self.window);
                spec.causal = true;
            }
            g.set_input(id, AttentionSpec::MASK, None).map_err(|source| PassError::Ir { pass: "swa".into(), source })?;
            own_cache_length(g, id, l).map_err(fail)?;
        }
        g.prune_dead().map_err(|source| PassError::Ir { pass: "swa".into(), source })?;
        jetc_ir::infer::infer_graph(g).map_err(|source| PassError::Ir { pass: "swa".into(), source })?;
        Ok(!self.layers.is_empty())
    }
}

/// Gives the KV cache inputs of SWA layer `l` (node `id`) their own length symbol, after
/// pointing the `Shape` reads of the shared past length at a full-attention cache.
fn own_cache_length(g: &mut Graph, id: jetc_ir::NodeId, l: usize) -> std::result::Result<(), String> {
    let node = g.node(id).map_err(|e| e.to_string())?.clone();
    for slot in [AttentionSpec::PAST_K, AttentionSpec::PAST_V] {
        let Some(o) = node.inputs().get(slot).copied().flatten() else { continue };
        if !matches!(g.node(o.node).map(|n| &n.op), Ok(Op::Input)) {
            continue;
        }
        crate::linearize::redirect_shape_reads(g, o)?;
        let n = g.node_mut(o.node).map_err(|e| e.to_string())?;
        if let Some(shape) = n.outputs[0].fact.shape.as_mut() {
            if shape.len() == 4 && shape[2].as_known().is_none() {
                shape[2] = jetc_ir::Dim::sym(&format!("swa_past_length.{l}"));
            }
        }
    }
    Ok(())
}
