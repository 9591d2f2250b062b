//! Decoder summary of a raised graph: what `jetc inspect` reports. Layers are the
//! attention (mixer) ops in topological order; sizes come from the weights they keep.
use std::collections::BTreeSet;

use jetc_ir::{DType, Graph, NodeId, Op};

#[derive(Clone, Debug, PartialEq)]
pub struct MixerInfo {
    pub layer: usize,
    /// "attention", "swa", or the linear mixer: "jet" (JetBlock) or the update rule's name
    /// ("gated_delta" for Gated DeltaNet, "delta" for DeltaNet, "gated" for RetNet).
    pub kind: &'static str,
    pub heads: usize,
    pub kv_heads: usize,
    pub head_dim: usize,
    pub rope: bool,
    pub window: Option<usize>,
    /// Linear mixers: key and value head sizes.
    pub dk: Option<usize>,
    pub dv: Option<usize>,
    /// Bytes of KV cache one token adds to this layer (attention), at `cache_dtype`.
    pub cache_bytes_per_token: usize,
    /// Bytes of cache that do not grow with the context (recurrent state in f32, conv cache).
    pub state_bytes: usize,
}

impl MixerInfo {
    /// Cache bytes of one sequence of `context` tokens.
    pub fn cache_bytes(&self, context: usize) -> usize {
        self.state_bytes + self.cache_bytes_per_token * self.window.map_or(context, |w| w.min(context))
    }
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

/// A linear mixer's entry: fixed cache = f32 recurrent state per state head + conv caches.
fn linear_mixer(layer: usize, kind: &'static str, heads: usize, state_heads: usize, dk: usize, dv: usize, conv_bytes: usize) -> MixerInfo {
    MixerInfo {
        layer,
        kind,
        heads,
        kv_heads: state_heads,
        head_dim: dk,
        rope: false,
        window: None,
        dk: Some(dk),
        dv: Some(dv),
        cache_bytes_per_token: 0,
        state_bytes: state_heads * dk * dv * 4 + conv_bytes,
    }
}

/// Fails with a message saying what is missing when the graph is not a recognised decoder.
/// KV and conv caches are counted at the model's activation dtype, or at `kv_dtype` when
/// given (deployments keep them in bf16); recurrent state is always f32.
pub fn summarize(g: &Graph) -> Result<DecoderSummary, String> {
    summarize_with(g, None)
}

pub fn summarize_with(g: &Graph, kv_dtype: Option<DType>) -> Result<DecoderSummary, String> {
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
                    dk: None,
                    dv: None,
                    cache_bytes_per_token: 2 * spec.kv_heads * spec.head_dim * kv_dtype.unwrap_or(dtype).size_bytes(),
                    state_bytes: 0,
                });
                weights.extend(weight_inputs(1));
                let x = node.input(0).map_err(|e| e.to_string())?;
                hidden = hidden.or(g.fact(x).ok().and_then(|f| f.shape.as_ref()?.last()?.as_known()));
            }
            Op::LinearAttention(spec) => {
                let layer = mixers.len();
                // Convolution caches count too (JetBlock's dynamic conv on v; the short convs
                // of (gated) DeltaNet and Mamba2; RWKV7's one-token shift), found by walking back
                // from q, k and v. A conv on q is what tells (gated) DeltaNet from JetBlock.
                let input = |slot: usize| node.inputs().get(slot).copied().flatten();
                let act = g.fact(node.input(0).map_err(|e| e.to_string())?).map(|f| f.dtype).unwrap_or(DType::F32);
                let slots = [jetc_ir::LinearAttentionSpec::Q, jetc_ir::LinearAttentionSpec::K, jetc_ir::LinearAttentionSpec::V];
                let found: Vec<Vec<(jetc_ir::NodeId, usize, i64)>> =
                    slots.iter().map(|&slot| input(slot).map(|o| caches_feeding(g, o)).unwrap_or_default()).collect();
                let mut seen = std::collections::HashSet::new();
                let conv_bytes: usize = found
                    .iter()
                    .flatten()
                    .filter(|(id, _, _)| seen.insert(*id))
                    .map(|&(_, w, c)| w * c as usize * kv_dtype.unwrap_or(act).size_bytes())
                    .sum();
                let jet = found[0].is_empty() && !found[2].is_empty() && spec.rule == jetc_ir::UpdateRule::GatedDelta;
                let kind = if jet { "jet" } else { spec.rule.name() };
                mixers.push(linear_mixer(layer, kind, spec.q_heads, spec.kv_heads, spec.dk, spec.dv, conv_bytes));
            }
            Op::JetBlock(spec) => {
                let layer = mixers.len();
                let act = g.fact(node.input(0).map_err(|e| e.to_string())?).map(|f| f.dtype).unwrap_or(DType::F32);
                let conv_bytes = spec.heads * spec.dv * spec.width * kv_dtype.unwrap_or(act).size_bytes();
                mixers.push(linear_mixer(layer, "jet", spec.heads, spec.heads, spec.dk, spec.dv, conv_bytes));
                weights.extend(weight_inputs(1).into_iter().filter(|id| {
                    matches!(g.node(*id).map(|n| &n.op), Ok(Op::Const(t)) if t.numel() > 1)
                }));
            }
            Op::DynamicConv(_) | Op::L2Norm { .. } | Op::GatedRmsNorm { .. } => weights.extend(weight_inputs(1)),
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
    // Projection weights of the linear mixers (MatMuls fed by the block input) are counted
    // through the MatMul arm below; constants such as A_log feed elementwise ops,
    // and the short-conv kernels of (gated) DeltaNet feed `Expand`.
    for &id in &order {
        if let Ok(n) = g.node(id) {
            if matches!(&n.op, Op::Onnx(o) if o.op_type != "MatMul" && o.op_type != "Gemm") {
                for o in n.inputs().iter().flatten() {
                    if let Ok(Op::Const(t)) = g.node(o.node).map(|x| &x.op) {
                        if t.dtype().is_float() && t.numel() > 1 && !weights.contains(&o.node) && g.node(o.node).is_ok_and(|c| crate::linearize::is_block_weight(&c.name)) {
                            weights.insert(o.node);
                        }
                    }
                }
            }
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
            weight_bytes += t.held_bytes();
        }
    }
    // Vocabulary from the LM head when there is no recognised embedding.
    if vocab.is_none() {
        if let Some(go) = g.outputs.first() {
            vocab = g.fact(go.outlet).ok().and_then(|f| f.shape.as_ref()?.last()?.as_known());
        }
    }
    let kv = mixers.iter().map(|m| m.cache_bytes_per_token).sum();
    let cache_dtype = kv_dtype.or(cache_dtype);
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

/// The fixed-size caches that `o` is computed from within a few ops (through norms,
/// activations, reshapes and the data input of projections): each `DynamicConv` as (node,
/// width, channels) and each token shift (a `Concat` along time of one past token and the
/// block input) as (node, 1, channels).
fn caches_feeding(g: &Graph, o: jetc_ir::Outlet) -> Vec<(jetc_ir::NodeId, usize, i64)> {
    let mut out = Vec::new();
    let mut stack = vec![(o, 0usize)];
    let mut visited = std::collections::HashSet::new();
    while let Some((o, depth)) = stack.pop() {
        if depth > 8 || !visited.insert(o.node) {
            continue;
        }
        let Ok(n) = g.node(o.node) else { continue };
        let width = |slot: usize| g.fact(n.input(slot).ok()?).ok()?.shape.as_ref()?.last()?.as_known();
        match &n.op {
            Op::DynamicConv(c) => {
                if let Some(ch) = width(0) {
                    out.push((o.node, c.width, ch));
                }
            }
            Op::Onnx(x) if x.op_type == "Concat" && x.int_or("axis", 0) == 1 && n.inputs().len() == 2 => {
                let first_len = n.input(0).ok().and_then(|i| g.fact(i).ok()?.shape.as_ref()?.get(1)?.as_known());
                if let (Some(1), Some(ch)) = (first_len, width(1)) {
                    out.push((o.node, 1, ch));
                }
            }
            Op::L2Norm { .. } => stack.push((n.inputs()[0].unwrap_or(o), depth + 1)),
            Op::Onnx(x) => {
                let data_inputs = match x.op_type.as_str() {
                    "MatMul" | "Reshape" | "Unsqueeze" | "Slice" => 1,
                    "Mul" | "Add" | "Sub" | "Div" | "Sigmoid" | "Neg" => n.inputs().len(),
                    _ => 0,
                };
                for i in n.inputs().iter().take(data_inputs).flatten() {
                    if !matches!(g.node(i.node).map(|m| &m.op), Ok(Op::Const(_)) | Ok(Op::Input)) {
                        stack.push((*i, depth + 1));
                    }
                }
            }
            _ => {}
        }
    }
    out
}

/// Equal lengths, equal first and last 4 KB, and equal bytes at 4096 strided positions.
fn sampled_equal(a: &[u8], b: &[u8]) -> bool {
    let n = a.len();
    let edge = n.min(4096);
    let step = (n / 4096).max(1);
    n == b.len() && a[..edge] == b[..edge] && a[n - edge..] == b[n - edge..] && (0..n).step_by(step).all(|i| a[i] == b[i])
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
    // Stored-precision tables: the same blocks, read the other way round.
    match (a.stored(), b.stored()) {
        (Some(x), Some(y)) => {
            let shape = (x.format(), x.rows(), x.cols()) == (y.format(), y.rows(), y.cols());
            return shape && x.transposed() != y.transposed() && sampled_equal(x.bytes(), y.bytes());
        }
        (None, None) => {}
        _ => return false,
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
