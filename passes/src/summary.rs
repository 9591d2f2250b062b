//! Decoder summary of a raised graph: what `jetc inspect` reports. Layers are the
//! attention (mixer) ops in topological order; sizes come from the weights they keep.
use std::collections::BTreeSet;

use jetc_ir::{DType, Graph, NodeId, Op};

#[derive(Clone, Debug, PartialEq)]
pub struct MixerInfo {
    pub layer: usize,
    pub kind: &'static str,
    pub heads: usize,
    pub kv_heads: usize,
    pub head_dim: usize,
    pub rope: bool,
    pub window: Option<usize>,
    /// Bytes of cache one token adds to this layer.
    pub cache_bytes_per_token: usize,
}

#[derive(Clone, Debug, PartialEq)]
pub struct DecoderSummary {
    pub layers: usize,
    pub hidden: usize,
    pub vocab: usize,
    pub intermediate: Option<usize>,
    pub params: usize,
    pub weight_bytes: usize,
    pub mixers: Vec<MixerInfo>,
    /// The LM head reuses the embedding table (possibly stored transposed).
    pub tied_embeddings: bool,
    pub cache_dtype: DType,
    pub kv_cache_bytes_per_token: usize,
}

/// Fails with a message saying what is missing when the graph is not a recognised decoder.
pub fn summarize(g: &Graph) -> Result<DecoderSummary, String> {
    let order = g.topo_order().map_err(|e| e.to_string())?;
    let mut mixers = Vec::new();
    let mut weights: BTreeSet<NodeId> = BTreeSet::new();
    let mut hidden = None;
    let mut vocab = None;
    let mut intermediate = None;
    let mut cache_dtype = None;
    let mut embedding_table: Option<NodeId> = None;
    let mut lm_head: Option<NodeId> = None;
    for &id in &order {
        let node = g.node(id).map_err(|e| e.to_string())?;
        let weight_inputs = |from: usize| -> Vec<NodeId> {
            node.inputs()
                .iter()
                .skip(from)
                .flatten()
                .filter(|o| matches!(g.node(o.node).map(|n| &n.op), Ok(Op::Const(t)) if t.dtype().is_float() && !t.shape().is_empty()))
                .map(|o| o.node)
                .collect()
        };
        match &node.op {
            Op::Attention(spec) => {
                let layer = mixers.len();
                // Present key dtype, else the activation dtype.
                let dtype = node.outputs.get(1).map(|o| o.fact.dtype).unwrap_or(DType::F32);
                cache_dtype.get_or_insert(dtype);
                let w = spec.window;
                mixers.push(MixerInfo {
                    layer,
                    kind: if w.is_some() { "swa" } else { "attention" },
                    heads: spec.heads,
                    kv_heads: spec.kv_heads,
                    head_dim: spec.head_dim,
                    rope: spec.rope.is_some(),
                    window: w,
                    cache_bytes_per_token: 2 * spec.kv_heads * spec.head_dim * dtype.size_bytes(),
                });
                weights.extend(weight_inputs(1));
                let x = node.input(0).map_err(|e| e.to_string())?;
                hidden = hidden.or(g.fact(x).ok().and_then(|f| f.shape.as_ref()?.last()?.as_known()));
            }
            Op::Embedding => {
                weights.extend(weight_inputs(0));
                embedding_table = embedding_table.or(weight_inputs(0).first().copied());
                if let Some(Op::Const(t)) = node.inputs().first().copied().flatten().and_then(|o| g.node(o.node).ok()).map(|n| &n.op) {
                    vocab = vocab.or(Some(t.shape()[0] as i64));
                    hidden = hidden.or(Some(t.shape()[1] as i64));
                }
            }
            Op::SwiGlu => {
                weights.extend(weight_inputs(1));
                if let Some(Op::Const(t)) = node.inputs().get(1).copied().flatten().and_then(|o| g.node(o.node).ok()).map(|n| &n.op) {
                    intermediate = intermediate.or(t.shape().get(1).map(|&v| v as i64));
                }
            }
            Op::RmsNorm(_) => weights.extend(weight_inputs(1)),
            Op::Onnx(o) if o.op_type == "MatMul" || o.op_type == "Gemm" => {
                let w = weight_inputs(1);
                lm_head = w.first().copied().or(lm_head);
                weights.extend(w);
            }
            _ => {}
        }
    }
    if mixers.is_empty() {
        return Err("not a decoder: no attention layer was recognised (jetc looks for softmax attention, \
                    the ONNX Attention op or GroupQueryAttention between q/k/v and output projections)"
            .into());
    }
    let tied = match (embedding_table, lm_head) {
        (Some(e), Some(h)) if e == h => true,
        (Some(e), Some(h)) => {
            let t = |id| match g.node(id).map(|n| &n.op) {
                Ok(Op::Const(t)) => Some(t),
                _ => None,
            };
            let same = match (t(e), t(h)) {
                (Some(a), Some(b)) => is_transpose_of(a, b),
                _ => false,
            };
            if same {
                weights.remove(&h);
            }
            same
        }
        _ => false,
    };
    let (mut params, mut weight_bytes) = (0usize, 0usize);
    for id in &weights {
        if let Ok(Op::Const(t)) = g.node(*id).map(|n| &n.op) {
            params += t.numel();
            weight_bytes += t.bytes().len();
        }
    }
    // Vocabulary from the LM head when there is no recognised embedding.
    if vocab.is_none() {
        if let Some(go) = g.outputs.first() {
            vocab = g.fact(go.outlet).ok().and_then(|f| f.shape.as_ref()?.last()?.as_known());
        }
    }
    let kv = mixers.iter().map(|m| m.cache_bytes_per_token).sum();
    Ok(DecoderSummary {
        layers: mixers.len(),
        hidden: hidden.ok_or("hidden size not found")? as usize,
        vocab: vocab.ok_or("vocabulary size not found")? as usize,
        intermediate: intermediate.map(|v| v as usize),
        params,
        weight_bytes,
        mixers,
        tied_embeddings: tied,
        cache_dtype: cache_dtype.unwrap_or(DType::F32),
        kv_cache_bytes_per_token: kv,
    })
}

/// True when `b` ([D, V]) holds the transpose of `a` ([V, D]), judged on the first and last
/// rows and a strided sample of 4096 elements: untied trained (or random) weights differ
/// almost everywhere, and reading both tables whole would page in gigabytes of mapped weights
/// just to print a summary.
fn is_transpose_of(a: &jetc_ir::Tensor, b: &jetc_ir::Tensor) -> bool {
    let (sa, sb) = (a.shape(), b.shape());
    if sa.len() != 2 || sb.len() != 2 || sa[0] != sb[1] || sa[1] != sb[0] || a.dtype() != b.dtype() {
        return false;
    }
    let (v, d) = (sa[0], sa[1]);
    let size = a.dtype().size_bytes();
    let (ab, bb) = (a.bytes(), b.bytes());
    let same = |r: usize, c: usize| {
        let (i, j) = ((r * d + c) * size, (c * v + r) * size);
        ab[i..i + size] == bb[j..j + size]
    };
    let step = (v * d / 4096).max(1);
    let rows_match = |r: usize| (0..d).all(|c| same(r, c));
    rows_match(0) && rows_match(v - 1) && (0..v * d).step_by(step).all(|i| same(i / d, i % d))
}
