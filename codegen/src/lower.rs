//! Lowering: which kernel instances a (converted, ideally fused) IR graph needs. Each mixer
//! op maps to the kernels that run it on the GPU:
//! - `JetBlock` -> the fused decode step, both chunked gated-delta-rule passes (raw q/k and
//!   raw gates: SiLU, L2 norm and the gate math run in the kernels' loaders), the dynamic
//!   conv prefill and the gated RMSNorm of the prefill output;
//! - `LinearAttention(gated_delta)` (unfused) -> the chunked passes with normalized q/k and
//!   given g/beta; `DynamicConv` -> conv prefill; `RmsNorm`, `GatedRmsNorm`, `L2Norm` -> row
//!   norms; `SwiGlu` -> the SwiGLU gate, and the residual add.
//!
//! What has no kernel here (softmax attention, GEMMs: cuBLAS' job) is listed in
//! [`Plan::skipped`], not an error. Sizes come from the ops' specs and the inferred facts;
//! a size that is not a known constant is an error naming the node.
use std::collections::BTreeSet;

use jetc_ir::{Graph, Node, Op, UpdateRule};

use crate::error::{CodegenError, Result};
use crate::kernels::{ChunkDims, DType, EwOp, Kernel, MixerDims, NormKind};

/// Chunk length of the chunked prefill kernels (fla's BT).
pub const CHUNK: usize = 64;

/// The kernels a graph needs, deduplicated and in a stable order.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Plan {
    pub kernels: Vec<Kernel>,
    /// (op name, count) of ops that need no generated kernel or have none yet.
    pub skipped: Vec<(String, usize)>,
}

fn last_dim(g: &Graph, node: &Node, slot: usize) -> Result<usize> {
    let o = node.input(slot).map_err(|e| CodegenError::Lower(e.to_string()))?;
    let f = g.fact(o).map_err(|e| CodegenError::Lower(e.to_string()))?;
    f.shape
        .as_ref()
        .and_then(|s| s.last())
        .and_then(|d| d.as_known())
        .and_then(|d| usize::try_from(d).ok())
        .ok_or_else(|| CodegenError::Lower(format!("node {} ({}): last dimension of input {slot} is not a known constant", node.name, node.op.name())))
}

/// The JetBlock kernels for one mixer size (used by [`plan`] and the presets).
pub fn jetblock_kernels(heads: usize, dk: usize, dv: usize, width: usize, dtype: DType) -> Vec<Kernel> {
    let chunk = ChunkDims { qk_heads: heads, v_heads: heads, dk, dv, chunk: CHUNK, dtype, qk_silu: true, qk_l2norm: true, raw_gates: true };
    vec![
        Kernel::JetDecode(MixerDims { qk_heads: heads, v_heads: heads, dk, dv, width, dtype }),
        Kernel::GdnChunkPrep(chunk.clone()),
        Kernel::GdnChunkState(chunk),
        Kernel::DynConvPrefill { channels: heads * dv, width, dtype },
        Kernel::RowNorm { kind: NormKind::GatedRmsNorm, heads, dim: dv, silu: false, dtype },
    ]
}

/// Decoder-level kernels around the mixers: RMSNorm at `hidden`, SwiGLU gate, residual add.
pub fn decoder_kernels(hidden: usize, dtype: DType) -> Vec<Kernel> {
    vec![
        Kernel::RowNorm { kind: NormKind::RmsNorm, heads: 1, dim: hidden, silu: false, dtype },
        Kernel::Elementwise { op: EwOp::SiluMul, dtype },
        Kernel::Elementwise { op: EwOp::Add, dtype },
    ]
}

/// Maps every op of `g` to kernels (activations in `dtype`).
pub fn plan(g: &Graph, dtype: DType) -> Result<Plan> {
    let mut kernels: BTreeSet<Kernel> = BTreeSet::new();
    let mut skipped: std::collections::BTreeMap<String, usize> = Default::default();
    let order = g.topo_order().map_err(|e| CodegenError::Lower(e.to_string()))?;
    for id in order {
        let node = g.node(id).map_err(|e| CodegenError::Lower(e.to_string()))?;
        match &node.op {
            Op::Input | Op::Const(_) => {}
            Op::JetBlock(s) => kernels.extend(jetblock_kernels(s.heads, s.dk, s.dv, s.width, dtype)),
            Op::LinearAttention(s) if s.rule == UpdateRule::GatedDelta => {
                if s.q_heads != s.kv_heads {
                    return Err(CodegenError::Lower(format!(
                        "node {}: LinearAttention with {} query heads over {} state heads (GQA) has no kernel yet",
                        node.name, s.q_heads, s.kv_heads
                    )));
                }
                let c = ChunkDims {
                    qk_heads: s.q_heads,
                    v_heads: s.kv_heads,
                    dk: s.dk,
                    dv: s.dv,
                    chunk: CHUNK,
                    dtype,
                    qk_silu: false,
                    qk_l2norm: false,
                    raw_gates: false,
                };
                kernels.insert(Kernel::GdnChunkPrep(c.clone()));
                kernels.insert(Kernel::GdnChunkState(c));
            }
            Op::DynamicConv(s) => {
                let channels = last_dim(g, node, 0)?;
                kernels.insert(Kernel::DynConvPrefill { channels, width: s.width, dtype });
            }
            Op::RmsNorm(_) => {
                let dim = last_dim(g, node, 0)?;
                kernels.insert(Kernel::RowNorm { kind: NormKind::RmsNorm, heads: 1, dim, silu: false, dtype });
            }
            Op::GatedRmsNorm { heads, .. } | Op::L2Norm { heads, .. } => {
                let total = last_dim(g, node, 0)?;
                if *heads == 0 || total % heads != 0 {
                    return Err(CodegenError::Lower(format!("node {}: {total} channels do not split into {heads} heads", node.name)));
                }
                let kind = if matches!(node.op, Op::L2Norm { .. }) { NormKind::L2Norm } else { NormKind::GatedRmsNorm };
                kernels.insert(Kernel::RowNorm { kind, heads: *heads, dim: total / heads, silu: false, dtype });
            }
            Op::SwiGlu => {
                kernels.insert(Kernel::Elementwise { op: EwOp::SiluMul, dtype });
                kernels.insert(Kernel::Elementwise { op: EwOp::Add, dtype });
            }
            other => *skipped.entry(other.name()).or_insert(0) += 1,
        }
    }
    Ok(Plan { kernels: kernels.into_iter().collect(), skipped: skipped.into_iter().collect() })
}

/// A named model preset: the kernels of Jet-Nemotron-2B / -4B (jet-nemotron.md §1).
pub fn preset(name: &str, dtype: DType) -> Option<Vec<Kernel>> {
    let (heads, dk, dv, hidden) = match name {
        "jet-nemotron-2b" => (12, 96, 256, 1536),
        "jet-nemotron-4b" => (16, 128, 256, 2048),
        _ => return None,
    };
    let mut k = jetblock_kernels(heads, dk, dv, 4, dtype);
    k.extend(decoder_kernels(hidden, dtype));
    Some(k)
}

pub const PRESETS: &[&str] = &["jet-nemotron-2b", "jet-nemotron-4b"];
