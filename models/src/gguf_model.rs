//! GGUF model -> IR graph: a llama.cpp model file becomes the same dynamo-style decoder graph
//! that [`crate::synth`] builds (decomposed RMSNorm, `rotate_half` RoPE, explicit causal mask,
//! GQA repeat, KV cache as `Concat`), with the file's weights, so that it canonicalizes and
//! raises exactly like an ONNX export (`pipeline::load_raised` gives Attention / RmsNorm /
//! SwiGlu / Embedding ops) and runs, converts and exports through the same code.
//!
//! What is read:
//! - `general.architecture`: `llama` (Llama, Mistral, SmolLM, ...), `qwen2`, `qwen3` (per-head
//!   q/k RMSNorm, `attn_{q,k}_norm`) or `phi3` (q|k|v packed in `attn_qkv`, gate|up in
//!   `ffn_up`, taken apart by rows); anything else is refused, naming the architecture.
//! - `{arch}.block_count`, `.embedding_length`, `.feed_forward_length`,
//!   `.attention.head_count`, `.attention.head_count_kv` (default: head_count),
//!   `.attention.key_length` (default: embedding_length / head_count),
//!   `.rope.dimension_count` (must be the whole head), `.rope.freq_base` (default 10000),
//!   `.attention.layer_norm_rms_epsilon` (default 1e-5), `.context_length` (reported only);
//!   the vocabulary is the length of `tokenizer.ggml.tokens` (else `{arch}.vocab_size`).
//!   Llama 3's RoPE frequency factors (`rope_freqs.weight`, [rot/2]) divide the frequencies;
//!   other RoPE scaling (`.rope.scaling.type` other than `none`) and mixtures of experts are
//!   refused.
//! - Tensors `token_embd`, `blk.N.{attn_norm, attn_q, attn_k, attn_v, attn_output, ffn_norm,
//!   ffn_gate, ffn_up, ffn_down}`, `output_norm`, and `output` (absent: tied embeddings);
//!   q/k/v biases when the file has them (qwen2). Every tensor must be used: a file with
//!   tensors this graph has no place for is refused rather than run wrong.
//!
//! Layout: a ggml tensor's `ne[0]` is its fastest dimension, so a projection with GGUF dims
//! `[in, out]` is the row-major `[out, in]` matrix of PyTorch; the graph multiplies by its
//! transpose `[in, out]`. With [`Precision::F32`] (training, conversion, search) every tensor
//! is de-quantized to f32 on load ([`jetc_gguf`], bit for bit as gguf-py). With
//! [`Precision::Stored`] (running and generating) the matrices and the embedding table keep
//! the file's blocks ([`jetc_ir::tensor::Stored`], mapped, not copied), so the executor's
//! kernels de-quantize inside the matmuls and no f32 copy of the weights is made; q/k rows
//! move as whole rows of blocks, Phi-3's packed matrices become row ranges of the file, and a
//! tied LM head is the same blocks read transposed. Norms and biases are f32 either way. For
//! `llama` the rows of `attn_q` / `attn_k` (weights and biases) are
//! put back in Hugging Face order: llama.cpp's converter interleaves the two halves of each
//! head for its GPT-J-style RoPE, and the graph uses `rotate_half` RoPE as transformers' GGUF
//! loader does (docs/decisions/0004-gguf-import.md).
use std::collections::HashSet;
use std::path::Path;

use jetc_gguf::{GgufError, GgufFile, TensorInfo};
use jetc_ir::{DType, Graph, IrError, Tensor};
use rayon::prelude::*;
use thiserror::Error;

use crate::synth::{build_with, ArchConfig};

/// How the weights of a GGUF file are held in the graph.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum Precision {
    /// Every weight de-quantized to f32 (what passes, training and export read).
    #[default]
    F32,
    /// Matrices and the embedding table in the file's own format (f16, bf16, ggml blocks),
    /// read by the executor's matmul and embedding kernels; f32 tensors stay f32.
    Stored,
}

/// The architectures [`import`] builds.
pub const ARCHITECTURES: &[&str] = &["llama", "qwen2", "qwen3", "phi3"];

#[derive(Debug, Error)]
pub enum GgufModelError {
    /// Reading the container, a metadata key or a tensor (the message names file and key or
    /// tensor).
    #[error(transparent)]
    Gguf(#[from] GgufError),
    #[error("{file}: architecture `{arch}` is not supported (jetc builds GGUF models of: {})", ARCHITECTURES.join(", "))]
    Architecture { file: String, arch: String },
    /// The file is readable but not a model this importer can build faithfully.
    #[error("{file}: {msg}")]
    Model { file: String, msg: String },
    /// A tensor is missing or has the wrong shape.
    #[error("{file}: tensor `{tensor}`: {msg}")]
    Tensor { file: String, tensor: String, msg: String },
    #[error("{file}: building the graph: {source}")]
    Ir {
        file: String,
        #[source]
        source: IrError,
    },
}

impl From<IrError> for GgufModelError {
    fn from(source: IrError) -> Self {
        // The file is filled in by `build_graph`, which is the only caller of the builder.
        GgufModelError::Ir { file: String::new(), source }
    }
}

/// The hyper-parameters of a GGUF decoder, as read from its metadata.
#[derive(Clone, Debug, PartialEq)]
pub struct GgufArch {
    /// `general.architecture`.
    pub architecture: String,
    /// The graph's shapes (`name` is the architecture).
    pub config: ArchConfig,
    /// `{arch}.context_length`, if given.
    pub context_length: Option<usize>,
}

/// Reads the architecture metadata of `file`.
pub fn arch_of(file: &GgufFile) -> Result<GgufArch, GgufModelError> {
    let arch = file.architecture()?.to_string();
    let name: &'static str = match arch.as_str() {
        "llama" => "llama",
        "qwen2" => "qwen2",
        "qwen3" => "qwen3",
        "phi3" => "phi3",
        _ => return Err(GgufModelError::Architecture { file: file.path.clone(), arch }),
    };
    let model = |msg: String| GgufModelError::Model { file: file.path.clone(), msg };
    let key = |k: &str| format!("{arch}.{k}");
    let usize_of = |k: &str| -> Result<usize, GgufModelError> { Ok(file.get_u32(&key(k))? as usize) };
    let opt_usize = |k: &str| -> Result<Option<usize>, GgufModelError> {
        match file.get(&key(k)) {
            None => Ok(None),
            Some(_) => Ok(Some(file.get_u32(&key(k))? as usize)),
        }
    };
    let opt_f32 = |k: &str, default: f32| -> Result<f32, GgufModelError> {
        match file.get(&key(k)) {
            None => Ok(default),
            Some(_) => Ok(file.get_f32(&key(k))?),
        }
    };
    let layers = usize_of("block_count")?;
    let hidden = usize_of("embedding_length")?;
    let intermediate = usize_of("feed_forward_length")?;
    let heads = usize_of("attention.head_count")?;
    let kv_heads = opt_usize("attention.head_count_kv")?.unwrap_or(heads);
    if layers == 0 || hidden == 0 || intermediate == 0 || heads == 0 || kv_heads == 0 {
        return Err(model(format!(
            "{arch}: block_count {layers}, embedding_length {hidden}, feed_forward_length {intermediate}, \
             head_count {heads} and head_count_kv {kv_heads} must all be positive"
        )));
    }
    if heads % kv_heads != 0 {
        return Err(model(format!("{arch}: head_count {heads} is not a multiple of head_count_kv {kv_heads}")));
    }
    let head_dim = match opt_usize("attention.key_length")? {
        Some(k) => k,
        None if hidden % heads == 0 => hidden / heads,
        None => return Err(model(format!("{arch}: embedding_length {hidden} is not a multiple of head_count {heads}"))),
    };
    if let Some(v) = opt_usize("attention.value_length")? {
        if v != head_dim {
            return Err(model(format!("{arch}: key_length {head_dim} != value_length {v} is not supported")));
        }
    }
    if head_dim == 0 || head_dim % 2 != 0 {
        return Err(model(format!("{arch}: head size {head_dim} must be even and positive (RoPE rotates pairs)")));
    }
    if let Some(rot) = opt_usize("rope.dimension_count")? {
        if rot != head_dim {
            return Err(model(format!(
                "`{}` is {rot} but the head size is {head_dim}: partial rotary embeddings are not supported",
                key("rope.dimension_count")
            )));
        }
    }
    if let Some(v) = file.get(&key("rope.scaling.type")) {
        let t = v.as_str().unwrap_or("?");
        if t != "none" {
            return Err(model(format!("`{}` is `{t}`: RoPE scaling is not supported", key("rope.scaling.type"))));
        }
    }
    // Llama 3 style frequency factors (read and applied to the RoPE table, not a weight).
    let rope_freq_factors = match file.tensor("rope_freqs.weight") {
        Some(info) => {
            let v = file.dequantize(info)?;
            let head_dim_of = |k| opt_usize(k).ok().flatten();
            let rot = head_dim_of("rope.dimension_count").or(head_dim_of("attention.key_length")).unwrap_or(hidden / heads.max(1));
            if v.len() * 2 != rot {
                return Err(model(format!("`rope_freqs.weight` has {} factors for a rotary size of {rot}", v.len())));
            }
            Some(v)
        }
        None => None,
    };
    if opt_usize("expert_count")?.unwrap_or(0) > 0 {
        return Err(model(format!("`{}` > 0: mixtures of experts are not supported", key("expert_count"))));
    }
    let vocab = match file.get("tokenizer.ggml.tokens") {
        Some(_) => file.get_str_array("tokenizer.ggml.tokens")?.len(),
        None => usize_of("vocab_size")?,
    };
    let context_length = opt_usize("context_length")?;
    let config = ArchConfig {
        name,
        layers,
        hidden,
        intermediate,
        heads,
        kv_heads,
        head_dim,
        vocab,
        qkv_bias: file.tensor("blk.0.attn_q.bias").is_some(),
        tied: file.tensor("output.weight").is_none(),
        rope_theta: opt_f32("rope.freq_base", 10000.0)?,
        rms_eps: opt_f32("attention.layer_norm_rms_epsilon", 1e-5)?,
        qk_norm: file.tensor("blk.0.attn_q_norm.weight").is_some(),
        rope_freq_factors,
    };
    Ok(GgufArch { architecture: arch, config, context_length })
}

/// Imports a GGUF model file as an IR decoder graph (before canonicalization), with every
/// weight in f32.
pub fn import(path: &Path) -> Result<Graph, GgufModelError> {
    import_with(path, Precision::F32)
}

/// [`import`] with the weights held in `precision`.
pub fn import_with(path: &Path, precision: Precision) -> Result<Graph, GgufModelError> {
    let file = GgufFile::open(path)?;
    build_graph_with(&file, precision)
}

/// Builds the decoder graph of an opened GGUF model, every weight in f32.
pub fn build_graph(file: &GgufFile) -> Result<Graph, GgufModelError> {
    build_graph_with(file, Precision::F32)
}

/// Builds the decoder graph of an opened GGUF model with its weights held in `precision`.
pub fn build_graph_with(file: &GgufFile, precision: Precision) -> Result<Graph, GgufModelError> {
    let arch = arch_of(file)?;
    let cfg = &arch.config;
    let permute = arch.architecture == "llama";
    // Phi-3 packs q|k|v into `attn_qkv` and gate|up into `ffn_up`.
    let packing = Packing {
        qkv: file.tensor("blk.0.attn_qkv.weight").is_some(),
        gate_up: file.tensor("blk.0.ffn_gate.weight").is_none() && file.tensor("blk.0.ffn_up.weight").is_some(),
        q: cfg.heads * cfg.head_dim,
        kv: cfg.kv_heads * cfg.head_dim,
        ff: cfg.intermediate,
    };
    let mut used: HashSet<String> = HashSet::new();
    let mut provide = |name: &str, shape: &[usize]| -> Result<Tensor, GgufModelError> {
        let (gguf_name, kind) = gguf_name(name, &packing).ok_or_else(|| GgufModelError::Model {
            file: file.path.clone(),
            msg: format!("the graph asked for weight `{name}`, which has no GGUF counterpart"),
        })?;
        used.insert(gguf_name.clone());
        let info = file.tensor(&gguf_name).ok_or_else(|| GgufModelError::Tensor {
            file: file.path.clone(),
            tensor: gguf_name.clone(),
            msg: format!("missing (a {} model of {} layers needs it)", arch.architecture, cfg.layers),
        })?;
        // The tensor's row-major shape in the file: the graph's shape, transposed for matrices.
        let want: Vec<usize> = match kind {
            Kind::Plain => shape.to_vec(),
            Kind::Matrix => shape.iter().rev().copied().collect(),
            Kind::Rows { total, .. } => vec![total, shape.first().copied().unwrap_or(0)],
        };
        if info.shape() != want {
            return Err(GgufModelError::Tensor {
                file: file.path.clone(),
                tensor: gguf_name,
                msg: format!(
                    "GGUF dims {:?} (row-major {:?}), expected row-major {want:?} for this {} model \
                     (hidden {}, heads {}x{}, kv heads {}, intermediate {}, vocab {})",
                    info.dims, info.shape(), arch.architecture, cfg.hidden, cfg.heads, cfg.head_dim,
                    cfg.kv_heads, cfg.intermediate, cfg.vocab
                ),
            });
        }
        // llama's q and k rows (weights and biases) come back to Hugging Face order.
        let heads = match gguf_name.rsplit('.').nth(1) {
            Some("attn_q") if permute => Some(cfg.heads),
            Some("attn_k") if permute => Some(cfg.kv_heads),
            _ => None,
        };
        if precision == Precision::Stored {
            if let Some(t) = stored_weight(file, info, kind, heads, shape)? {
                return Ok(t);
            }
        }
        match (kind, heads) {
            (Kind::Plain, None) => Ok(file.to_ir_tensor(info)?),
            (Kind::Plain, Some(h)) => {
                let v = file.dequantize(info)?;
                let rows = unpermute_rows(v.len(), h);
                let out: Vec<f32> = rows.iter().map(|&r| v[r]).collect();
                Tensor::from_f32(shape.to_vec(), &out).map_err(|e| ir(file, info, e))
            }
            (Kind::Rows { offset, .. }, _) => {
                let v = file.dequantize(info)?;
                let rows = shape.get(1).copied().unwrap_or(0);
                let bytes = transpose_rows(&v, want[1], &(offset..offset + rows).collect::<Vec<_>>());
                Tensor::from_bytes(DType::F32, shape.to_vec(), bytes).map_err(|e| ir(file, info, e))
            }
            (Kind::Matrix, h) => {
                let v = file.dequantize(info)?;
                let (rows, cols) = (want[0], want[1]);
                let order = match h {
                    Some(h) => unpermute_rows(rows, h),
                    None => (0..rows).collect(),
                };
                let bytes = transpose_rows(&v, cols, &order);
                Tensor::from_bytes(DType::F32, shape.to_vec(), bytes).map_err(|e| ir(file, info, e))
            }
        }
    };
    let mut g = build_with(cfg, &mut provide).map_err(|e| match e {
        GgufModelError::Ir { source, .. } => GgufModelError::Ir { file: file.path.clone(), source },
        other => other,
    })?;
    // rope_freqs is read with the metadata (it scales the RoPE table).
    let unused: Vec<&str> =
        file.tensors.iter().map(|t| t.name.as_str()).filter(|n| !used.contains(*n) && *n != "rope_freqs.weight").collect();
    if !unused.is_empty() {
        let shown: Vec<&str> = unused.iter().take(8).copied().collect();
        return Err(GgufModelError::Model {
            file: file.path.clone(),
            msg: format!(
                "{} tensor(s) have no place in the {} graph jetc builds (an unsupported variant?): {}{}",
                unused.len(),
                arch.architecture,
                shown.join(", "),
                if unused.len() > shown.len() { ", ..." } else { "" }
            ),
        });
    }
    g.meta.insert("gguf.architecture".into(), arch.architecture.clone());
    if let Some(n) = arch.context_length {
        // Read by training (a window longer than the model's context is refused).
        g.meta.insert("context_length".into(), n.to_string());
    }
    Ok(g)
}

/// A weight in the file's stored precision, shaped as the graph asks (`shape`); `None` for
/// what stays f32 (f32 tensors, 1-D tensors, types without kernels).
fn stored_weight(file: &GgufFile, info: &TensorInfo, kind: Kind, heads: Option<usize>, shape: &[usize]) -> Result<Option<Tensor>, GgufModelError> {
    let rows = info.shape().first().copied().unwrap_or(0);
    match (kind, heads) {
        // The embedding table, `[vocab, hidden]` as the file has it.
        (Kind::Plain, None) if shape.len() == 2 => Ok(file.to_stored_tensor(info, 0..rows, false)?),
        (Kind::Plain, _) => Ok(None),
        // Phi-3: a row range of the packed matrix.
        (Kind::Rows { offset, .. }, _) => {
            let n = shape.get(1).copied().unwrap_or(0);
            Ok(file.to_stored_tensor(info, offset..offset + n, true)?)
        }
        (Kind::Matrix, None) => Ok(file.to_stored_tensor(info, 0..rows, true)?),
        // llama's q/k: whole rows of blocks back in Hugging Face order.
        (Kind::Matrix, Some(h)) => {
            let Some(t) = file.to_stored_tensor(info, 0..rows, true)? else { return Ok(None) };
            let Some(s) = t.stored() else { return Ok(None) };
            let row_bytes = s.bytes().len() / rows.max(1);
            let mut bytes = Vec::with_capacity(s.bytes().len());
            for r in unpermute_rows(rows, h) {
                bytes.extend_from_slice(&s.bytes()[r * row_bytes..(r + 1) * row_bytes]);
            }
            Tensor::from_stored(s.format(), rows, s.cols(), true, bytes).map(Some).map_err(|e| ir(file, info, e))
        }
    }
}

fn ir(file: &GgufFile, info: &TensorInfo, source: IrError) -> GgufModelError {
    GgufModelError::Tensor { file: file.path.clone(), tensor: info.name.clone(), msg: source.to_string() }
}

#[derive(Clone, Copy, Debug, PartialEq)]
enum Kind {
    /// Stored as the graph uses it (embedding table, norm weights, biases).
    Plain,
    /// A projection: GGUF row-major `[out, in]`, the graph's `[in, out]`.
    Matrix,
    /// Rows `offset..offset + out` of a packed GGUF projection `[total, in]`.
    Rows { offset: usize, total: usize },
}

/// Which projections a file packs together, and the sizes that locate each part.
struct Packing {
    qkv: bool,
    gate_up: bool,
    q: usize,
    kv: usize,
    ff: usize,
}

/// The GGUF tensor for a weight name of the graph builder, and how it is stored.
fn gguf_name(hf: &str, packing: &Packing) -> Option<(String, Kind)> {
    Some(match hf {
        "model.embed_tokens.weight" => ("token_embd.weight".into(), Kind::Plain),
        "model.norm.weight" => ("output_norm.weight".into(), Kind::Plain),
        "lm_head.weight" => ("output.weight".into(), Kind::Matrix),
        _ => {
            let rest = hf.strip_prefix("model.layers.")?;
            let (layer, what) = rest.split_once('.')?;
            let layer: usize = layer.parse().ok()?;
            let (t, kind) = match what {
                "input_layernorm.weight" => ("attn_norm.weight", Kind::Plain),
                "post_attention_layernorm.weight" => ("ffn_norm.weight", Kind::Plain),
                "self_attn.q_proj.weight" if packing.qkv => ("attn_qkv.weight", Kind::Rows { offset: 0, total: packing.q + 2 * packing.kv }),
                "self_attn.k_proj.weight" if packing.qkv => ("attn_qkv.weight", Kind::Rows { offset: packing.q, total: packing.q + 2 * packing.kv }),
                "self_attn.v_proj.weight" if packing.qkv => ("attn_qkv.weight", Kind::Rows { offset: packing.q + packing.kv, total: packing.q + 2 * packing.kv }),
                "mlp.gate_proj.weight" if packing.gate_up => ("ffn_up.weight", Kind::Rows { offset: 0, total: 2 * packing.ff }),
                "mlp.up_proj.weight" if packing.gate_up => ("ffn_up.weight", Kind::Rows { offset: packing.ff, total: 2 * packing.ff }),
                "self_attn.q_proj.weight" => ("attn_q.weight", Kind::Matrix),
                "self_attn.k_proj.weight" => ("attn_k.weight", Kind::Matrix),
                "self_attn.v_proj.weight" => ("attn_v.weight", Kind::Matrix),
                "self_attn.o_proj.weight" => ("attn_output.weight", Kind::Matrix),
                "self_attn.q_proj.bias" => ("attn_q.bias", Kind::Plain),
                "self_attn.k_proj.bias" => ("attn_k.bias", Kind::Plain),
                "self_attn.v_proj.bias" => ("attn_v.bias", Kind::Plain),
                "self_attn.q_norm.weight" => ("attn_q_norm.weight", Kind::Plain),
                "self_attn.k_norm.weight" => ("attn_k_norm.weight", Kind::Plain),
                "mlp.gate_proj.weight" => ("ffn_gate.weight", Kind::Matrix),
                "mlp.up_proj.weight" => ("ffn_up.weight", Kind::Matrix),
                "mlp.down_proj.weight" => ("ffn_down.weight", Kind::Matrix),
                _ => return None,
            };
            (format!("blk.{layer}.{t}"), kind)
        }
    })
}

/// For each Hugging Face row of a q or k projection with `rows` rows in `heads` heads, the
/// GGUF row holding it. llama.cpp's `convert_hf_to_gguf.py` permutes with
/// `w.reshape(heads, 2, hd/2, ...).swapaxes(1, 2)`, so HF row `h*hd + s*hd/2 + i` (half `s`,
/// index `i`) is GGUF row `h*hd + 2*i + s`; transformers' loader undoes it the same way.
fn unpermute_rows(rows: usize, heads: usize) -> Vec<usize> {
    let hd = rows / heads.max(1);
    let half = hd / 2;
    (0..rows)
        .map(|r| {
            let (h, j) = (r / hd.max(1), r % hd.max(1));
            let (s, i) = (j / half.max(1), j % half.max(1));
            h * hd + 2 * i + s
        })
        .collect()
}

/// The `[cols, order.len()]` transpose of the row-major matrix `v` (rows of `cols` values)
/// whose column `j` is source row `order[j]`, as little-endian f32 bytes.
fn transpose_rows(v: &[f32], cols: usize, order: &[usize]) -> Vec<u8> {
    let rows = order.len();
    let mut out = vec![0u8; rows * cols * 4];
    out.par_chunks_mut(rows * 4).enumerate().for_each(|(c, dst)| {
        for (j, &r) in order.iter().enumerate() {
            dst[j * 4..j * 4 + 4].copy_from_slice(&v[r * cols + c].to_le_bytes());
        }
    });
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// convert_hf_to_gguf.py's permute, written the way it is in numpy: reshape to
    /// (heads, 2, hd/2), swap the last two axes; returns for each GGUF row its HF row.
    fn llama_cpp_permute(rows: usize, heads: usize) -> Vec<usize> {
        let hd = rows / heads;
        let mut out = Vec::new();
        for h in 0..heads {
            for i in 0..hd / 2 {
                for s in 0..2 {
                    out.push(h * hd + s * (hd / 2) + i);
                }
            }
        }
        out
    }

    #[test]
    fn unpermute_inverts_llama_cpp_permute() {
        for (rows, heads) in [(64, 4), (192, 3), (576, 9), (8, 1)] {
            let forward = llama_cpp_permute(rows, heads);
            let back = unpermute_rows(rows, heads);
            for (hf, &g) in back.iter().enumerate() {
                assert_eq!(forward[g], hf, "rows {rows} heads {heads}");
            }
        }
    }

    #[test]
    fn transpose_with_order() {
        // [[0,1,2],[3,4,5]] rows reversed then transposed: [[3,0],[4,1],[5,2]].
        let b = transpose_rows(&[0., 1., 2., 3., 4., 5.], 3, &[1, 0]);
        let v: Vec<f32> = b.chunks(4).map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]])).collect();
        assert_eq!(v, [3., 0., 4., 1., 5., 2.]);
    }

    #[test]
    fn names_map_to_gguf() {
        let separate = Packing { qkv: false, gate_up: false, q: 64, kv: 32, ff: 96 };
        assert_eq!(gguf_name("model.layers.12.mlp.down_proj.weight", &separate).map(|x| x.0), Some("blk.12.ffn_down.weight".into()));
        assert_eq!(gguf_name("model.layers.x.mlp.down_proj.weight", &separate), None);
        assert_eq!(gguf_name("model.embed_tokens.weight", &separate).map(|x| x.0), Some("token_embd.weight".into()));
        assert_eq!(gguf_name("model.layers.0.self_attn.k_proj.weight", &separate), Some(("blk.0.attn_k.weight".into(), Kind::Matrix)));
        // Phi-3: k is rows 64..96 of attn_qkv, up the second half of ffn_up.
        let packed = Packing { qkv: true, gate_up: true, ..separate };
        assert_eq!(
            gguf_name("model.layers.0.self_attn.k_proj.weight", &packed),
            Some(("blk.0.attn_qkv.weight".into(), Kind::Rows { offset: 64, total: 128 }))
        );
        assert_eq!(gguf_name("model.layers.0.mlp.up_proj.weight", &packed), Some(("blk.0.ffn_up.weight".into(), Kind::Rows { offset: 96, total: 192 })));
    }
}
