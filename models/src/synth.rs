//! Synthetic decoders: Llama/Qwen2-architecture graphs with random weights at the real shapes
//! of known models, written the way torch's dynamo exporter writes them (decomposed RMSNorm,
//! `rotate_half` RoPE, explicit causal mask, GQA repeat, KV cache as `Concat`), so that
//! benchmarks and tests exercise the same import and raising paths as real exports.
use std::collections::HashMap;

use jetc_ir::{Attr, DType, Dim, Fact, Graph, OnnxOp, Op, Outlet, OutputInfo, Tensor};
use rayon::prelude::*;

/// Shapes of a decoder architecture.
#[derive(Clone, Debug, PartialEq)]
pub struct ArchConfig {
    pub name: &'static str,
    pub layers: usize,
    pub hidden: usize,
    pub intermediate: usize,
    pub heads: usize,
    pub kv_heads: usize,
    pub head_dim: usize,
    pub vocab: usize,
    pub qkv_bias: bool,
    pub tied: bool,
    pub rope_theta: f32,
    pub rms_eps: f32,
    /// Per-head RMSNorm of q and k before RoPE (Qwen3): weights `self_attn.{q,k}_norm.weight`
    /// [head_dim].
    pub qk_norm: bool,
    /// Llama 3 RoPE frequency factors [head_dim / 2]: frequency i is theta^(-2i/d) / factor[i]
    /// (llama.cpp's `rope_freqs`, what transformers' `llama3` rope scaling computes).
    pub rope_freq_factors: Option<Vec<f32>>,
}

/// The architectures `jetc synth --arch` knows (public configs of the Hugging Face models).
pub fn arch(name: &str) -> Option<ArchConfig> {
    let qwen = |name, layers, hidden, intermediate, heads, head_dim| ArchConfig {
        name,
        layers,
        hidden,
        intermediate,
        heads,
        kv_heads: 2,
        head_dim,
        vocab: 151936,
        qkv_bias: true,
        tied: true,
        rope_theta: 1e6,
        rms_eps: 1e-6,
        qk_norm: false,
        rope_freq_factors: None,
    };
    Some(match name {
        "qwen2.5-0.5b" => qwen("qwen2.5-0.5b", 24, 896, 4864, 14, 64),
        "qwen2.5-1.5b" => qwen("qwen2.5-1.5b", 28, 1536, 8960, 12, 128),
        "qwen2.5-3b" => qwen("qwen2.5-3b", 36, 2048, 11008, 16, 128),
        "qwen3-0.6b" => ArchConfig { head_dim: 128, kv_heads: 8, qkv_bias: false, qk_norm: true, ..qwen("qwen3-0.6b", 28, 1024, 3072, 16, 128) },
        "llama-tiny" => ArchConfig {
            name: "llama-tiny",
            layers: 2,
            hidden: 64,
            intermediate: 96,
            heads: 4,
            kv_heads: 2,
            head_dim: 16,
            vocab: 128,
            qkv_bias: false,
            tied: false,
            rope_theta: 1e4,
            rms_eps: 1e-6,
            qk_norm: false,
            rope_freq_factors: None,
        },
        _ => return None,
    })
}

pub const ARCH_NAMES: &[&str] = &["qwen2.5-0.5b", "qwen2.5-1.5b", "qwen2.5-3b", "qwen3-0.6b", "llama-tiny"];

const OPSET: i64 = 20;

struct Builder {
    g: Graph,
    consts: HashMap<String, Outlet>,
}

impl Builder {
    fn op(&mut self, name: &str, op_type: &str, inputs: &[Outlet], attrs: &[(&str, Attr)]) -> jetc_ir::Result<Outlet> {
        let mut op = OnnxOp::new(op_type, OPSET);
        for (k, v) in attrs {
            op = op.with_attr(k, v.clone());
        }
        let id = self.g.add_node(
            name,
            Op::Onnx(op),
            inputs.iter().map(|&o| Some(o)).collect(),
            vec![OutputInfo { name: String::new(), fact: Fact::unknown_rank(DType::F32) }],
        )?;
        Ok(Outlet::new(id, 0))
    }

    fn ints(&mut self, values: &[i64]) -> jetc_ir::Result<Outlet> {
        let key = format!("ints{values:?}");
        if let Some(&o) = self.consts.get(&key) {
            return Ok(o);
        }
        let name = format!("const_{}", self.consts.len());
        let o = self.g.add_const(&name, Tensor::from_i64(vec![values.len()], values)?)?;
        self.consts.insert(key, o);
        Ok(o)
    }

    fn scalar(&mut self, v: f32) -> jetc_ir::Result<Outlet> {
        let key = format!("f32 {v:?}");
        if let Some(&o) = self.consts.get(&key) {
            return Ok(o);
        }
        let name = format!("const_{}", self.consts.len());
        let o = self.g.add_const(&name, Tensor::scalar_f32(v))?;
        self.consts.insert(key, o);
        Ok(o)
    }

    /// Adds a weight supplied by the provider, checking its shape; a weight stored at a
    /// narrower float type is cast to f32 (computation stays in f32, as exported fp16
    /// checkpoints upcast at load).
    fn weight<E: From<jetc_ir::IrError>>(&mut self, weights: &mut WeightFn<'_, E>, name: &str, shape: Vec<usize>) -> Result<Outlet, E> {
        let t = weights(name, &shape)?;
        if t.shape() != shape.as_slice() {
            return Err(jetc_ir::IrError::Other(format!(
                "weight `{name}`: shape {:?} was supplied where {shape:?} is needed",
                t.shape()
            ))
            .into());
        }
        let dtype = t.dtype();
        let o = self.g.add_const(name, t)?;
        if dtype != DType::F32 {
            return Ok(self.op(&format!("{name}/cast"), "Cast", &[o], &[("to", Attr::Int(1))])?);
        }
        Ok(o)
    }
}

/// Supplies one weight of the graph: called with its Hugging Face name
/// (`model.layers.3.self_attn.q_proj.weight`, ...) and the shape the graph stores it at, which
/// for projection matrices is `[in, out]` (the right operand of `MatMul`, the transpose of
/// PyTorch's `[out, in]`). Float tensors of any width are accepted (non-f32 ones are cast).
pub type WeightFn<'a, E> = dyn FnMut(&str, &[usize]) -> Result<Tensor, E> + 'a;

/// A random weight with values uniform in `center ± spread` (norm weights around 1, the rest
/// around 0 with the std of a 0.02 normal), deterministic per seed and name.
fn random_weight(seed: u64, dtype: DType, name: &str, shape: &[usize]) -> jetc_ir::Result<Tensor> {
    let (center, spread) = if name.ends_with("norm.weight") { (1.0, 0.1) } else { (0.0, 0.02 * 3f32.sqrt()) };
    let n: usize = shape.iter().product();
    let seed = fnv(seed, name);
    let mut data = vec![0f32; n];
    data.par_chunks_mut(1 << 16).enumerate().for_each(|(chunk, out)| {
        let mut s = seed ^ (chunk as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
        for v in out {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            let u = (s >> 40) as f32 / (1u64 << 24) as f32; // [0, 1)
            *v = center + spread * (2.0 * u - 1.0);
        }
    });
    let shape = shape.to_vec();
    match dtype {
        DType::F32 => Tensor::from_f32(shape, &data),
        DType::F16 => Tensor::from_bytes(DType::F16, shape, data.iter().flat_map(|&v| half::f16::from_f32(v).to_le_bytes()).collect()),
        _ => Tensor::from_bytes(DType::BF16, shape, data.iter().flat_map(|&v| half::bf16::from_f32(v).to_le_bytes()).collect()),
    }
}

fn fnv(seed: u64, name: &str) -> u64 {
    let mut h = 0xcbf29ce484222325u64 ^ seed;
    for b in name.bytes() {
        h ^= b as u64;
        h = h.wrapping_mul(0x100000001b3);
    }
    h
}

/// Builds the decoder graph of `cfg` with random weights (`dtype` f32, f16 or bf16 storage).
pub fn build(cfg: &ArchConfig, seed: u64, dtype: DType) -> jetc_ir::Result<Graph> {
    build_with(cfg, &mut |name: &str, shape: &[usize]| random_weight(seed, dtype, name, shape))
}

/// Builds the decoder graph of `cfg` with the weights `weights` supplies (see [`WeightFn`]),
/// asked for in graph order: the embedding, then per layer the input norm, q/k/v (and their
/// biases), o, the post-attention norm, gate/up/down, then the final norm and, unless the
/// embeddings are tied, `lm_head.weight` ([hidden, vocab]). A tied head is the embedding
/// table transposed.
pub fn build_with<E: From<jetc_ir::IrError>>(cfg: &ArchConfig, weights: &mut WeightFn<'_, E>) -> Result<Graph, E> {
    let mut b = Builder { g: Graph::new(), consts: HashMap::new() };
    b.g.meta.insert("opset.ai.onnx".into(), OPSET.to_string());
    b.g.meta.insert("ir_version".into(), "10".into());
    let (h, kv, hd, d) = (cfg.heads, cfg.kv_heads, cfg.head_dim, cfg.hidden);
    let batch = Dim::sym("batch");
    let seq = Dim::sym("sequence_length");
    let past = Dim::sym("past_sequence_length");
    let ids = Outlet::new(b.g.add_input("input_ids", Fact::new(DType::I64, vec![batch.clone(), seq.clone()]))?, 0);
    let pos = Outlet::new(b.g.add_input("position_ids", Fact::new(DType::I64, vec![batch.clone(), seq.clone()]))?, 0);
    let mut pasts = Vec::new();
    for l in 0..cfg.layers {
        let f = Fact::new(DType::F32, vec![batch.clone(), Dim::known(kv as i64), past.clone(), Dim::known(hd as i64)]);
        let k = b.g.add_input(&format!("past_key_values.{l}.key"), f.clone())?;
        let v = b.g.add_input(&format!("past_key_values.{l}.value"), f)?;
        pasts.push((Outlet::new(k, 0), Outlet::new(v, 0)));
    }
    let embed = b.weight(weights, "model.embed_tokens.weight", vec![cfg.vocab, d])?;
    let mut x = b.op("embed", "Gather", &[embed, ids], &[("axis", Attr::Int(0))])?;

    // RoPE tables [B, 1, T, hd] from position ids.
    let mut inv_freq: Vec<f32> = (0..hd / 2).map(|i| cfg.rope_theta.powf(-((2 * i) as f32) / hd as f32)).collect();
    if let Some(factors) = &cfg.rope_freq_factors {
        if factors.len() != inv_freq.len() || factors.iter().any(|f| !(f.is_finite() && *f > 0.0)) {
            return Err(jetc_ir::IrError::Other(format!(
                "{} RoPE frequency factors for {} frequencies (need positive, finite ones)",
                factors.len(),
                inv_freq.len()
            ))
            .into());
        }
        for (f, s) in inv_freq.iter_mut().zip(factors) {
            *f /= s;
        }
    }
    let inv = b.g.add_const("model.rotary_emb.inv_freq", Tensor::from_f32(vec![hd / 2], &inv_freq)?)?;
    let axes_last = b.ints(&[-1])?;
    let p = b.op("rope/pos", "Unsqueeze", &[pos, axes_last], &[])?;
    let p = b.op("rope/pos_f", "Cast", &[p], &[("to", Attr::Int(1))])?;
    let freqs = b.op("rope/freqs", "Mul", &[p, inv], &[])?;
    let emb = b.op("rope/emb", "Concat", &[freqs, freqs], &[("axis", Attr::Int(-1))])?;
    let axes1 = b.ints(&[1])?;
    let cos = b.op("rope/cos", "Cos", &[emb], &[])?;
    let cos = b.op("rope/cos4", "Unsqueeze", &[cos, axes1], &[])?;
    let sin = b.op("rope/sin", "Sin", &[emb], &[])?;
    let sin = b.op("rope/sin4", "Unsqueeze", &[sin, axes1], &[])?;

    // Causal mask [T, P+T]: key j is visible from query i when j <= i + P.
    let t_len = b.op("mask/t", "Shape", &[ids], &[("start", Attr::Int(1)), ("end", Attr::Int(2))])?;
    let p_len = b.op("mask/p", "Shape", &[pasts[0].0], &[("start", Attr::Int(2)), ("end", Attr::Int(3))])?;
    let s_len = b.op("mask/s", "Add", &[t_len, p_len], &[])?;
    let scalar = b.g.add_const("mask/scalar_shape", Tensor::from_i64(vec![0], &[])?)?;
    let zero = b.g.add_const("mask/zero", Tensor::scalar_i64(0))?;
    let one = b.g.add_const("mask/one", Tensor::scalar_i64(1))?;
    let t_s = b.op("mask/t_s", "Reshape", &[t_len, scalar], &[])?;
    let s_s = b.op("mask/s_s", "Reshape", &[s_len, scalar], &[])?;
    let rows = b.op("mask/rows", "Range", &[zero, t_s, one], &[])?;
    let p_s = b.op("mask/p_s", "Reshape", &[p_len, scalar], &[])?;
    let rows = b.op("mask/rows_p", "Add", &[rows, p_s], &[])?;
    let rows = b.op("mask/rows_col", "Unsqueeze", &[rows, axes_last], &[])?;
    let cols = b.op("mask/cols", "Range", &[zero, s_s, one], &[])?;
    let visible = b.op("mask/visible", "LessOrEqual", &[cols, rows], &[])?;
    let fzero = b.scalar(0.0)?;
    let ninf = b.scalar(f32::NEG_INFINITY)?;
    let mask = b.op("mask/additive", "Where", &[visible, fzero, ninf], &[])?;

    let two = b.scalar(2.0)?;
    let eps = b.scalar(cfg.rms_eps)?;
    let half_lo = (b.ints(&[0])?, b.ints(&[(hd / 2) as i64])?);
    let half_hi = (b.ints(&[(hd / 2) as i64])?, b.ints(&[i64::MAX])?);
    let heads_shape = b.ints(&[0, 0, h as i64, hd as i64])?;
    let kv_shape = b.ints(&[0, 0, kv as i64, hd as i64])?;
    let merged_shape = b.ints(&[0, 0, (h * hd) as i64])?;
    let rep_shape = b.ints(&[1, 1, (h / kv) as i64, 1, 1])?;
    let rep_back = b.ints(&[0, h as i64, -1, hd as i64])?;
    let axes2 = b.ints(&[2])?;
    let scale = b.scalar(1.0 / (hd as f32).sqrt())?;
    let mut presents = Vec::new();

    let rms = |b: &mut Builder, weights: &mut WeightFn<'_, E>, name: &str, x: Outlet| -> Result<Outlet, E> {
        let w = b.weight(weights, &format!("{name}.weight"), vec![d])?;
        let sq = b.op(&format!("{name}/pow"), "Pow", &[x, two], &[])?;
        let m = b.op(&format!("{name}/mean"), "ReduceMean", &[sq, axes_last], &[])?;
        let a = b.op(&format!("{name}/add"), "Add", &[m, eps], &[])?;
        let s = b.op(&format!("{name}/sqrt"), "Sqrt", &[a], &[])?;
        let r = b.op(&format!("{name}/rcp"), "Reciprocal", &[s], &[])?;
        let n = b.op(&format!("{name}/mul"), "Mul", &[x, r], &[])?;
        Ok(b.op(&format!("{name}/scale"), "Mul", &[w, n], &[])?)
    };
    let rope = |b: &mut Builder, name: &str, x: Outlet| -> jetc_ir::Result<Outlet> {
        let one_axis = b.ints(&[-1])?;
        let lo = b.op(&format!("{name}/lo"), "Slice", &[x, half_lo.0, half_lo.1, one_axis], &[])?;
        let hi = b.op(&format!("{name}/hi"), "Slice", &[x, half_hi.0, half_hi.1, one_axis], &[])?;
        let neg = b.op(&format!("{name}/neg"), "Neg", &[hi], &[])?;
        let rot = b.op(&format!("{name}/rot"), "Concat", &[neg, lo], &[("axis", Attr::Int(-1))])?;
        let a = b.op(&format!("{name}/cos"), "Mul", &[x, cos], &[])?;
        let s = b.op(&format!("{name}/sin"), "Mul", &[rot, sin], &[])?;
        b.op(&format!("{name}/add"), "Add", &[a, s], &[])
    };
    let perm = Attr::Ints(vec![0, 2, 1, 3]);
    for l in 0..cfg.layers {
        let pre = format!("model.layers.{l}");
        let xn = rms(&mut b, weights, &format!("{pre}.input_layernorm"), x)?;
        let proj = |b: &mut Builder, weights: &mut WeightFn<'_, E>, which: &str, out: usize, shape: Outlet| -> Result<Outlet, E> {
            let w = b.weight(weights, &format!("{pre}.self_attn.{which}_proj.weight"), vec![d, out])?;
            let mut y = b.op(&format!("{pre}/attn/{which}"), "MatMul", &[xn, w], &[])?;
            if cfg.qkv_bias {
                let bias = b.weight(weights, &format!("{pre}.self_attn.{which}_proj.bias"), vec![out])?;
                y = b.op(&format!("{pre}/attn/{which}_bias"), "Add", &[y, bias], &[])?;
            }
            let mut y = b.op(&format!("{pre}/attn/{which}_heads"), "Reshape", &[y, shape], &[])?;
            if cfg.qk_norm && which != "v" {
                // Qwen3: RMSNorm over each head of q and k ([B, T, heads, hd]), weight [hd].
                let name = format!("{pre}.self_attn.{which}_norm");
                let w = b.weight(weights, &format!("{name}.weight"), vec![hd])?;
                let sq = b.op(&format!("{name}/pow"), "Pow", &[y, two], &[])?;
                let m = b.op(&format!("{name}/mean"), "ReduceMean", &[sq, axes_last], &[])?;
                let a = b.op(&format!("{name}/add"), "Add", &[m, eps], &[])?;
                let s = b.op(&format!("{name}/sqrt"), "Sqrt", &[a], &[])?;
                let r = b.op(&format!("{name}/rcp"), "Reciprocal", &[s], &[])?;
                let n = b.op(&format!("{name}/mul"), "Mul", &[y, r], &[])?;
                y = b.op(&format!("{name}/scale"), "Mul", &[w, n], &[])?;
            }
            Ok(b.op(&format!("{pre}/attn/{which}_t"), "Transpose", &[y], &[("perm", perm.clone())])?)
        };
        let q = proj(&mut b, weights, "q", h * hd, heads_shape)?;
        let k = proj(&mut b, weights, "k", kv * hd, kv_shape)?;
        let v = proj(&mut b, weights, "v", kv * hd, kv_shape)?;
        let q = rope(&mut b, &format!("{pre}/attn/q_rope"), q)?;
        let k = rope(&mut b, &format!("{pre}/attn/k_rope"), k)?;
        let k = b.op(&format!("{pre}/attn/k_cache"), "Concat", &[pasts[l].0, k], &[("axis", Attr::Int(2))])?;
        let v = b.op(&format!("{pre}/attn/v_cache"), "Concat", &[pasts[l].1, v], &[("axis", Attr::Int(2))])?;
        presents.push((k, v));
        let repeat = |b: &mut Builder, name: &str, x: Outlet| -> jetc_ir::Result<Outlet> {
            let u = b.op(&format!("{name}/unsqueeze"), "Unsqueeze", &[x, axes2], &[])?;
            let e = b.op(&format!("{name}/expand"), "Expand", &[u, rep_shape], &[])?;
            b.op(&format!("{name}/reshape"), "Reshape", &[e, rep_back], &[])
        };
        let kr = repeat(&mut b, &format!("{pre}/attn/k_repeat"), k)?;
        let vr = repeat(&mut b, &format!("{pre}/attn/v_repeat"), v)?;
        let kt = b.op(&format!("{pre}/attn/k_rep_t"), "Transpose", &[kr], &[("perm", Attr::Ints(vec![0, 1, 3, 2]))])?;
        let s = b.op(&format!("{pre}/attn/scores"), "MatMul", &[q, kt], &[])?;
        let s = b.op(&format!("{pre}/attn/scaled"), "Mul", &[s, scale], &[])?;
        let s = b.op(&format!("{pre}/attn/masked"), "Add", &[s, mask], &[])?;
        let pr = b.op(&format!("{pre}/attn/softmax"), "Softmax", &[s], &[("axis", Attr::Int(-1))])?;
        let o = b.op(&format!("{pre}/attn/context"), "MatMul", &[pr, vr], &[])?;
        let o = b.op(&format!("{pre}/attn/context_t"), "Transpose", &[o], &[("perm", perm.clone())])?;
        let o = b.op(&format!("{pre}/attn/merge"), "Reshape", &[o, merged_shape], &[])?;
        let wo = b.weight(weights, &format!("{pre}.self_attn.o_proj.weight"), vec![h * hd, d])?;
        let o = b.op(&format!("{pre}/attn/o"), "MatMul", &[o, wo], &[])?;
        x = b.op(&format!("{pre}/attn/residual"), "Add", &[x, o], &[])?;
        let xn = rms(&mut b, weights, &format!("{pre}.post_attention_layernorm"), x)?;
        let f = cfg.intermediate;
        let wg = b.weight(weights, &format!("{pre}.mlp.gate_proj.weight"), vec![d, f])?;
        let wu = b.weight(weights, &format!("{pre}.mlp.up_proj.weight"), vec![d, f])?;
        let wd = b.weight(weights, &format!("{pre}.mlp.down_proj.weight"), vec![f, d])?;
        let gate = b.op(&format!("{pre}/mlp/gate"), "MatMul", &[xn, wg], &[])?;
        let sg = b.op(&format!("{pre}/mlp/sigmoid"), "Sigmoid", &[gate], &[])?;
        let act = b.op(&format!("{pre}/mlp/silu"), "Mul", &[gate, sg], &[])?;
        let up = b.op(&format!("{pre}/mlp/up"), "MatMul", &[xn, wu], &[])?;
        let hmid = b.op(&format!("{pre}/mlp/mul"), "Mul", &[act, up], &[])?;
        let down = b.op(&format!("{pre}/mlp/down"), "MatMul", &[hmid, wd], &[])?;
        x = b.op(&format!("{pre}/mlp/residual"), "Add", &[x, down], &[])?;
    }
    let xn = rms(&mut b, weights, "model.norm", x)?;
    let head = if cfg.tied {
        // Tied: the head is the embedding table, stored transposed as exporters fold it
        // (a narrower float table is stored as such behind its Cast).
        let table = match &b.g.node(embed.node)?.op {
            Op::Const(_) => embed.node,
            _ => b.g.node(embed.node)?.input(0)?.node,
        };
        let Op::Const(t) = &b.g.node(table)?.op else {
            return Err(jetc_ir::IrError::Other("embedding is not a constant".into()).into());
        };
        if let Some(head) = t.stored_transpose() {
            // A table in its stored precision: the same blocks, read transposed.
            let o = b.g.add_const("lm_head.weight", head)?;
            let logits = b.op("lm_head", "MatMul", &[xn, o], &[])?;
            return finish(b, logits, presents);
        }
        let (rows, cols) = (cfg.vocab, d);
        let width = t.dtype().size_bytes();
        let src = t.bytes();
        let mut out = vec![0u8; src.len()];
        out.par_chunks_mut(rows * width).enumerate().for_each(|(c, dst)| {
            for r in 0..rows {
                let s = (r * cols + c) * width;
                dst[r * width..(r + 1) * width].copy_from_slice(&src[s..s + width]);
            }
        });
        let dtype = t.dtype();
        let head = Tensor::from_bytes(dtype, vec![d, cfg.vocab], out)?;
        let o = b.g.add_const("lm_head.weight", head)?;
        if dtype != DType::F32 { b.op("lm_head/cast", "Cast", &[o], &[("to", Attr::Int(1))])? } else { o }
    } else {
        b.weight(weights, "lm_head.weight", vec![d, cfg.vocab])?
    };
    let logits = b.op("lm_head", "MatMul", &[xn, head], &[])?;
    finish(b, logits, presents)
}

/// Adds the outputs (logits, then each layer's present key and value), infers and verifies.
fn finish<E: From<jetc_ir::IrError>>(b: Builder, logits: Outlet, presents: Vec<(Outlet, Outlet)>) -> Result<Graph, E> {
    let mut g = b.g;
    g.add_output("logits", logits)?;
    for (l, (k, v)) in presents.into_iter().enumerate() {
        g.add_output(&format!("present.{l}.key"), k)?;
        g.add_output(&format!("present.{l}.value"), v)?;
    }
    jetc_ir::infer::infer_graph(&mut g)?;
    jetc_ir::verify::verify(&g)?;
    Ok(g)
}
