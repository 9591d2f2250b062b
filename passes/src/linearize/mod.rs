//! `linearize{block, layers}`: replaces the softmax attention of the chosen layers by a
//! linear-attention mixer, built as a subgraph of IR ops (projections as `MatMul`, gates as
//! standard ONNX ops, the recurrence as `LinearAttention`, JetBlock's value convolution as
//! `DynamicConv`), and gives the layer recurrent caches in place of its KV cache.
//!
//! Weight mapping from the base attention (layer l, base heads Hq/Hkv of size hd, mixer
//! heads H of sizes d_k/d_v):
//! - `Wq`, `Wk`, `Wv` are reused column-block by column-block: mixer head h takes base head
//!   `h * Hbase / H` (the kv head for k and v, as GQA grouped them), its first min(hd, d)
//!   columns; columns beyond hd are drawn from N(0, 0.02). Biases are dropped (JetBlock has
//!   none).
//! - `Wo` rows are laid out the same way; a base head used by several mixer heads has its
//!   rows divided among them, rows beyond hd are zero.
//! - New weights follow the released JetBlock: kernel generator `W1`, `W2` zero with bias
//!   `b2 ~ N(0, 0.02)` (a static conv at init), `A_log = log U(0,16)`, `dt_bias =
//!   softplus^-1(dt)` with dt log-uniform in [1e-3, 0.1], `Wa`, `Wb`, `Wg` ~ N(0, 0.02),
//!   output-norm weight 1. Everything is seeded by (seed, layer, weight name).
//!
//! Caches: a layer that had `past_key_values` inputs gets `past_conv.{l}` [B, Dv, W] and
//! `past_state.{l}` [B, H, d_k, d_v] inputs and `present_conv.{l}` / `present_state.{l}`
//! outputs instead.
mod init;
mod jetblock;

pub use jetblock::build as jetblock_build;

use jetc_ir::{Graph, NodeId, Op};

use crate::error::{PassError, Result};
use crate::manager::Pass;

/// The linear mixers `linearize` can build.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Block {
    JetBlock,
}

impl Block {
    pub fn parse(name: &str) -> std::result::Result<Block, String> {
        match name {
            "jetblock" => Ok(Block::JetBlock),
            "gated-deltanet" | "gla" | "retnet" | "mamba2" | "deltanet" | "rwkv7" => {
                Err(format!("block `{name}` is not built yet (available: jetblock)"))
            }
            other => Err(format!(
                "unknown block `{other}` (jetblock, gated-deltanet, gla, retnet, mamba2, deltanet, rwkv7)"
            )),
        }
    }
}

/// Mixer hyper-parameters; `None` takes the Jet-Nemotron-2B design relative to the base
/// attention: H = base heads, d_k = 3/4 of the base head size, d_v = 2x (Jet-2B: 12 / 96 / 256
/// on Qwen2.5-1.5B's 12 heads of 128, the same recurrent-state budget as the paper).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MixerConfig {
    pub heads: Option<usize>,
    pub dk: Option<usize>,
    pub dv: Option<usize>,
    pub conv: usize,
    pub reduction: usize,
}

impl Default for MixerConfig {
    fn default() -> MixerConfig {
        MixerConfig { heads: None, dk: None, dv: None, conv: 4, reduction: 8 }
    }
}

pub struct Linearize {
    pub block: Block,
    pub layers: Vec<usize>,
    pub config: MixerConfig,
    pub seed: u64,
}

/// Attention (mixer) nodes in layer order.
pub fn attention_layers(g: &Graph) -> jetc_ir::Result<Vec<NodeId>> {
    let mut out = Vec::new();
    for id in g.topo_order()? {
        if matches!(g.node(id)?.op, Op::Attention(_)) {
            out.push(id);
        }
    }
    Ok(out)
}

impl Pass for Linearize {
    fn name(&self) -> &'static str {
        "linearize"
    }

    fn run(&self, g: &mut Graph) -> Result<bool> {
        let fail = |msg: String| PassError::Other { pass: "linearize".into(), msg };
        let ir = |source| PassError::Ir { pass: "linearize".into(), source };
        let layers = attention_layers(g).map_err(ir)?;
        for &l in &self.layers {
            let id = *layers.get(l).ok_or_else(|| {
                fail(format!("layer {l} does not exist (the model has {} attention layers)", layers.len()))
            })?;
            match self.block {
                Block::JetBlock => jetblock::replace(g, id, l, &self.config, self.seed).map_err(fail)?,
            }
        }
        g.prune_dead().map_err(ir)?;
        jetc_ir::infer::infer_graph(g).map_err(ir)?;
        Ok(!self.layers.is_empty())
    }
}
