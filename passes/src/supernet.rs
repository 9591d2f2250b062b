//! `supernet{candidates}` and `place{layout}`: PostNAS's once-for-all network.
//!
//! `Supernet` gives every attention layer a `Switch` whose alternatives share the layer's
//! input: the original full attention (`attn`), a sliding-window copy with the same weights
//! (`swa`, when a window is given), and linear candidates built by `linearize` (`jet` for
//! JetBlock, the `--block` name for the others: `gated-deltanet`, `gla`, `mamba2`, ...). One
//! executor pass runs any sub-network (`Session::run_with_choices`), which is what supernet
//! distillation and the placement search need. The supernet is a prefill graph: the SWA and
//! linear alternatives start from empty caches and their caches are not outputs.
//!
//! `Place` resolves every switch to a named choice and removes the alternatives not taken.
use jetc_ir::{AttentionSpec, Graph, Op, Outlet, OutputInfo};

use crate::error::{PassError, Result};
use crate::linearize::{attention_layers, Block, MixerConfig};
use crate::pass::Pass;

pub struct Supernet {
    /// SWA alternative window (None: no SWA alternative).
    pub window: Option<usize>,
    /// Linear candidates, in switch order, all with the same hyper-parameters `config`.
    pub linear: Vec<Block>,
    pub config: MixerConfig,
    pub seed: u64,
}

/// The switch choice name of a linear block: `jet` for JetBlock, else its `--block` name.
pub fn choice_name(block: Block) -> &'static str {
    match block {
        Block::JetBlock => "jet",
        other => other.name(),
    }
}

impl Pass for Supernet {
    fn name(&self) -> &'static str {
        "supernet"
    }

    fn run(&self, g: &mut Graph) -> Result<bool> {
        let fail = |msg: String| PassError::Other { pass: "supernet".into(), msg };
        let ir = |source| PassError::Ir { pass: "supernet".into(), source };
        if self.window == Some(0) {
            return Err(fail("the SWA window must be at least 1 token".into()));
        }
        let layers = attention_layers(g).map_err(ir)?;
        if layers.is_empty() {
            return Err(fail("the model has no attention layer".into()));
        }
        for (l, &id) in layers.iter().enumerate() {
            let node = g.node(id).map_err(ir)?.clone();
            let Op::Attention(spec) = &node.op else { continue };
            let y = Outlet::new(id, 0);
            let y_fact = g.fact(y).map_err(ir)?.clone();
            let mut names = vec!["attn".to_string()];
            let mut alternatives = vec![y];
            if let Some(w) = self.window {
                let mut inputs = node.inputs().to_vec();
                inputs.resize(AttentionSpec::NUM_INPUTS, None);
                inputs[AttentionSpec::PAST_K] = None;
                inputs[AttentionSpec::PAST_V] = None;
                inputs[AttentionSpec::MASK] = None;
                while inputs.last() == Some(&None) {
                    inputs.pop();
                }
                let swa = AttentionSpec { window: Some(w), causal: true, ..spec.clone() };
                let outputs = node.outputs.iter().map(|o| OutputInfo { name: String::new(), fact: o.fact.clone() }).collect();
                let sid = g.add_node(format!("{}/swa", node.name), Op::Attention(swa), inputs, outputs).map_err(ir)?;
                names.push("swa".into());
                alternatives.push(Outlet::new(sid, 0));
            }
            for &block in &self.linear {
                let built = crate::linearize::build(block, g, id, l, &self.config, self.seed, false).map_err(fail)?;
                names.push(choice_name(block).into());
                alternatives.push(built.y);
            }
            let consumers = g.consumers(y);
            let sw = g
                .add_node(
                    format!("{}/switch", node.name),
                    Op::Switch { choices: names },
                    alternatives.iter().map(|&o| Some(o)).collect(),
                    vec![OutputInfo { name: String::new(), fact: y_fact }],
                )
                .map_err(ir)?;
            for (c, slot) in consumers {
                g.set_input(c, slot, Some(Outlet::new(sw, 0))).map_err(ir)?;
            }
        }
        g.prune_dead().map_err(ir)?;
        jetc_ir::infer::infer_graph(g).map_err(ir)?;
        Ok(true)
    }
}

pub struct Place {
    /// One choice name per layer (`attn`, `swa`, `jet`, or a linear block's name).
    pub layout: Vec<String>,
}

impl Pass for Place {
    fn name(&self) -> &'static str {
        "place"
    }

    fn run(&self, g: &mut Graph) -> Result<bool> {
        let fail = |msg: String| PassError::Other { pass: "place".into(), msg };
        let ir = |source| PassError::Ir { pass: "place".into(), source };
        let switches: Vec<_> = g
            .topo_order()
            .map_err(ir)?
            .into_iter()
            .filter(|&id| matches!(g.node(id).map(|n| &n.op), Ok(Op::Switch { .. })))
            .collect();
        if switches.len() != self.layout.len() {
            return Err(fail(format!("the layout names {} layers, the supernet has {}", self.layout.len(), switches.len())));
        }
        for (l, (&id, want)) in switches.iter().zip(&self.layout).enumerate() {
            let node = g.node(id).map_err(ir)?;
            let Op::Switch { choices } = &node.op else { continue };
            let pick = choices
                .iter()
                .position(|c| c == want)
                .ok_or_else(|| fail(format!("layer {l}: no alternative `{want}` (has {})", choices.join(", "))))?;
            let chosen = node.input(pick).map_err(ir)?;
            g.replace_uses(Outlet::new(id, 0), chosen).map_err(ir)?;
        }
        g.prune_dead().map_err(ir)?;
        jetc_ir::infer::infer_graph(g).map_err(ir)?;
        Ok(true)
    }
}
