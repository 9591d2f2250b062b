//! `swa{layers, window}`: turns the full attention of the chosen layers into sliding-window
//! attention. Each query sees itself and the previous `window - 1` keys; the layer's KV cache
//! keeps the last `window` tokens (Jet-Nemotron's convention, which its cache figures use).
//! The exporter's mask input is dropped: visibility becomes causal + window, so padding
//! masks no longer apply to these layers.
use jetc_ir::{AttentionSpec, Graph, Op};

use crate::error::{PassError, Result};
use crate::manager::Pass;

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
        }
        g.prune_dead().map_err(|source| PassError::Ir { pass: "swa".into(), source })?;
        jetc_ir::infer::infer_graph(g).map_err(|source| PassError::Ir { pass: "swa".into(), source })?;
        Ok(!self.layers.is_empty())
    }
}
