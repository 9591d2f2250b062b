//! `linearize{block, layers}`: replaces the softmax attention of the chosen layers by a
//! linear-attention mixer, built as a subgraph of IR ops (projections as `MatMul`, gates as
//! standard ONNX ops, the recurrence as `LinearAttention`, convolutions as `DynamicConv`),
//! and gives the layer recurrent caches in place of its KV cache.
//!
//! Blocks (`--block`), all with H heads of sizes d_k / d_v and scale d_k^-0.5:
//! - `jetblock` (jet-nemotron.md §2): q, k = l2norm(silu(x W)); v through the dynamic
//!   convolution; gated delta rule; gated output RMSNorm. Weights `layers.{l}.jet.*`.
//! - `gated-deltanet` (fla `GatedDeltaNet`): q, k, v each through a static causal short
//!   convolution + SiLU, q and k L2-normalized; gated delta rule; gated output RMSNorm.
//!   Weights `layers.{l}.gated_deltanet.*`.
//! - `deltanet` (fla `DeltaNet` with the output gate): the same without the decay (delta
//!   rule; no `a_proj`, `A_log`, `dt_bias`). Weights `layers.{l}.deltanet.*`.
//! - `gla` (fla `GatedLinearAttention`): plain q, k, v; per-key-dimension decay from a
//!   low-rank gate; gated output RMSNorm. Weights `layers.{l}.gla.*`.
//! - `retnet` (fla `MultiScaleRetention` without RoPE): q, k, v plain projections; fixed
//!   per-head decay log(1 - 2^(-5-h)); gated output RMSNorm. Weights `layers.{l}.retnet.*`.
//! - `mamba2` (Mamba2 SSD, one B/C group per head): short convs on x, B, C; scalar decay
//!   A dt per head; D skip; gate-then-norm output. Weights `layers.{l}.mamba2.*`.
//! - `rwkv7` (fla `RWKV7Attention` without the value residual): token shift with lerps,
//!   LoRA decay / in-context rate / gate, the DPLR rule, group norm and bonus term.
//!   Weights `layers.{l}.rwkv7.*`.
//!
//! Weight mapping from the base attention (layer l, base heads Hq/Hkv of size hd, mixer
//! heads H of sizes d_k/d_v):
//! - `Wq`, `Wk`, `Wv` are reused column-block by column-block: mixer head h takes base head
//!   `h * Hbase / H` (the kv head for k and v, as GQA grouped them), its first min(hd, d)
//!   columns; columns beyond hd are drawn from N(0, 0.02). Biases are dropped (none of the
//!   blocks has them).
//! - `Wo` rows are laid out the same way; a base head used by several mixer heads has its
//!   rows divided among them, rows beyond hd are zero.
//! - New weights follow the released JetBlock: kernel generator `W1`, `W2` zero with bias
//!   `b2 ~ N(0, 0.02)` (a static conv at init), `A_log = log U(0,16)`, `dt_bias =
//!   softplus^-1(dt)` with dt log-uniform in [1e-3, 0.1], `Wa`, `Wb`, `Wg` ~ N(0, 0.02),
//!   output-norm weight 1. The static short convolutions of (gated) DeltaNet start as the
//!   identity (last tap 1, others 0: at init the block sees its projections unchanged).
//!   Everything is seeded by (seed, layer, weight name).
//!
//! Caches: a layer that had `past_key_values` inputs gets, instead, inputs `past_{c}.{l}`
//! and outputs `present_{c}.{l}` (in this order, where its present key/value were), with
//! c per block:
//! - `jetblock`: `conv` [B, H*d_v, W] (raw values), `state` [B, H, d_k, d_v];
//! - `gated-deltanet`, `deltanet`: `conv_q`, `conv_k` [B, H*d_k, W], `conv_v` [B, H*d_v, W]
//!   (raw projections of the last W tokens), `state` [B, H, d_k, d_v];
//! - `gla`, `retnet`: `state` [B, H, d_k, d_v];
//! - `mamba2`: `conv_x` [B, H*d_v, W], `conv_b`, `conv_c` [B, H*d_k, W], `state`;
//! - `rwkv7`: `shift` [B, 1, hidden] (the last token's block input), `state`.
mod deltanet;
mod gla;
mod init;
mod jetblock;
mod mamba2;
mod parts;
mod retnet;
mod rwkv7;

pub use jetblock::build as jetblock_build;
pub use parts::{Built, Cache};
pub(crate) use parts::redirect_shape_reads;

use jetc_ir::{Graph, NodeId, Op};

use crate::error::{PassError, Result};
use crate::pass::Pass;

/// The linear mixers `linearize` can build.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Block {
    JetBlock,
    GatedDeltaNet,
    DeltaNet,
    Gla,
    RetNet,
    Mamba2,
    Rwkv7,
}

impl Block {
    pub const ALL: [Block; 7] =
        [Block::JetBlock, Block::GatedDeltaNet, Block::DeltaNet, Block::Gla, Block::RetNet, Block::Mamba2, Block::Rwkv7];

    pub fn parse(name: &str) -> std::result::Result<Block, String> {
        match name {
            "jetblock" => Ok(Block::JetBlock),
            "gated-deltanet" => Ok(Block::GatedDeltaNet),
            "deltanet" => Ok(Block::DeltaNet),
            "gla" => Ok(Block::Gla),
            "retnet" => Ok(Block::RetNet),
            "mamba2" => Ok(Block::Mamba2),
            "rwkv7" => Ok(Block::Rwkv7),
            other => Err(format!(
                "unknown block `{other}` (jetblock, gated-deltanet, gla, retnet, mamba2, deltanet, rwkv7)"
            )),
        }
    }

    /// The `--block` name.
    pub fn name(self) -> &'static str {
        match self {
            Block::JetBlock => "jetblock",
            Block::GatedDeltaNet => "gated-deltanet",
            Block::DeltaNet => "deltanet",
            Block::Gla => "gla",
            Block::RetNet => "retnet",
            Block::Mamba2 => "mamba2",
            Block::Rwkv7 => "rwkv7",
        }
    }

    /// The weights of layer l's block are the constants `layers.{l}.{weight_prefix}.<name>`.
    pub fn weight_prefix(self) -> &'static str {
        match self {
            Block::JetBlock => "jet",
            Block::GatedDeltaNet => "gated_deltanet",
            Block::DeltaNet => "deltanet",
            Block::Gla => "gla",
            Block::RetNet => "retnet",
            Block::Mamba2 => "mamba2",
            Block::Rwkv7 => "rwkv7",
        }
    }
}

/// True for the name of a learned weight of a linear block (`layers.{l}.{prefix}.<name>`),
/// false for fixed constants (the decay floor, RetNet's decay, shapes like `q_conv1d/kernels/width`).
pub fn is_block_weight(name: &str) -> bool {
    let Some((layer, rest)) = name.strip_prefix("layers.").and_then(|r| r.split_once('.')) else { return false };
    let Some((prefix, weight)) = rest.split_once('.') else { return false };
    layer.parse::<usize>().is_ok()
        && Block::ALL.iter().any(|b| b.weight_prefix() == prefix)
        && !weight.contains('/')
        && weight != "log_decay_floor"
        && weight != retnet::DECAY_NAME
}

/// Builds block `block` of attention node `id` (layer `l`) from the same input, without
/// rewiring anything. With `with_caches`, a layer that has a KV cache gets the block's cache
/// inputs (see the module doc).
pub fn build(
    block: Block,
    g: &mut Graph,
    id: NodeId,
    l: usize,
    cfg: &MixerConfig,
    seed: u64,
    with_caches: bool,
) -> std::result::Result<Built, String> {
    match block {
        Block::JetBlock => jetblock::build(g, id, l, cfg, seed, with_caches),
        Block::GatedDeltaNet => deltanet::build(g, id, l, cfg, seed, with_caches, true),
        Block::DeltaNet => deltanet::build(g, id, l, cfg, seed, with_caches, false),
        Block::Gla => gla::build(g, id, l, cfg, seed, with_caches),
        Block::RetNet => retnet::build(g, id, l, cfg, seed, with_caches),
        Block::Mamba2 => mamba2::build(g, id, l, cfg, seed, with_caches),
        Block::Rwkv7 => rwkv7::build(g, id, l, cfg, seed, with_caches),
    }
}

/// Replaces attention node `id` (layer `l`) by block `block`, caches included.
pub fn replace(block: Block, g: &mut Graph, id: NodeId, l: usize, cfg: &MixerConfig, seed: u64) -> std::result::Result<(), String> {
    let b = build(block, g, id, l, cfg, seed, true)?;
    parts::rewire(g, id, l, b)
}

/// Mixer hyper-parameters; `None` takes the Jet-Nemotron-2B design relative to the base
/// attention: H = base heads, d_k = 3/4 of the base head size, d_v = 2x (Jet-2B: 12 / 96 / 256
/// on Qwen2.5-1.5B's 12 heads of 128, the same recurrent-state budget as the paper).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MixerConfig {
    pub heads: Option<usize>,
    pub dk: Option<usize>,
    pub dv: Option<usize>,
    /// Convolution width W: JetBlock's dynamic conv, (gated) DeltaNet's short convs.
    pub conv: usize,
    /// JetBlock's kernel-generator reduction (W1: hidden -> H*d_v / reduction).
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
        let each = LinearizeEach { layers: self.layers.iter().map(|&l| (l, self.block)).collect(), config: self.config, seed: self.seed };
        each.run(g)
    }
}

/// `linearize` with a block per layer (a supernet's mixed subnet): every listed layer's
/// attention is resolved before any is replaced, so the layer indices are the model's.
pub struct LinearizeEach {
    pub layers: Vec<(usize, Block)>,
    pub config: MixerConfig,
    pub seed: u64,
}

impl Pass for LinearizeEach {
    fn name(&self) -> &'static str {
        "linearize"
    }

    fn run(&self, g: &mut Graph) -> Result<bool> {
        let fail = |msg: String| PassError::Other { pass: "linearize".into(), msg };
        let ir = |source| PassError::Ir { pass: "linearize".into(), source };
        let layers = attention_layers(g).map_err(ir)?;
        let mut targets = Vec::with_capacity(self.layers.len());
        for &(l, block) in &self.layers {
            let id = *layers.get(l).ok_or_else(|| {
                fail(format!("layer {l} does not exist (the model has {} attention layers)", layers.len()))
            })?;
            targets.push((l, block, id));
        }
        for (l, block, id) in targets {
            replace(block, g, id, l, &self.config, self.seed).map_err(fail)?;
        }
        g.prune_dead().map_err(ir)?;
        jetc_ir::infer::infer_graph(g).map_err(ir)?;
        Ok(!self.layers.is_empty())
    }
}
