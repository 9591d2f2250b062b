//! The parts every linear block is built from: the base attention's weights re-laid out for
//! the mixer's heads, new weights seeded by (seed, layer, name), the gates (beta, the
//! Mamba-style log decay), per-head L2 norm, static short convolutions, the recurrence, the
//! gated output norm with `o_proj`, and the cache plumbing (cache inputs in place of the KV
//! cache, rewiring of the graph outputs).
use jetc_ir::{
    AttentionSpec, Attr, DType, Dim, DynamicConvSpec, Fact, Graph, GraphOutput, LinearAttentionSpec, Node, NodeId, Op, Outlet,
    Tensor, UpdateRule,
};

use super::init::{a_log, dt_bias, filled, normal, resize_columns, resize_rows, Rng};
use super::MixerConfig;
use crate::emit::Emit;
use crate::pattern::{const_of, default_opset};

/// Log decays below this are clamped (an overflowing softplus would make -inf - -inf later).
pub const LOG_DECAY_FLOOR: f32 = -88.0;
pub const INIT_STD: f64 = 0.02;
/// eps of the per-head L2 norm of q and k (fla's `l2norm`).
const L2_EPS: f32 = 1e-6;
/// eps of the gated output RMSNorm (fla's `norm_eps`).
const NORM_EPS: f32 = 1e-5;

/// Resolved mixer sizes.
#[derive(Clone, Copy, Debug)]
pub struct Dims {
    pub hidden: usize,
    pub heads: usize,
    pub dk: usize,
    pub dv: usize,
    pub conv: usize,
}

fn weight_of(g: &Graph, node: &Node, slot: usize, what: &str) -> Result<Tensor, String> {
    let o = node.input(slot).map_err(|e| e.to_string())?;
    let t = const_of(g, o).ok_or_else(|| format!("attention `{}`: {what} is not a constant weight", node.name))?;
    if t.shape().len() != 2 {
        return Err(format!("attention `{}`: {what} is not 2-D", node.name));
    }
    Ok(t.clone())
}

/// What a mixer is built from, read off a base attention node without changing the graph.
pub struct Base {
    node: Node,
    spec: AttentionSpec,
    wq: Tensor,
    wk: Tensor,
    wv: Tensor,
    wo: Tensor,
    pub dims: Dims,
}

impl Base {
    /// Reads attention node `id` and resolves the mixer sizes: `None` in `cfg` takes H = base
    /// heads, d_k = 3/4 of the base head size, d_v = 2x.
    pub fn read(g: &Graph, id: NodeId, cfg: &MixerConfig) -> Result<Base, String> {
        let node = g.node(id).map_err(|e| e.to_string())?.clone();
        let Op::Attention(spec) = node.op.clone() else { return Err(format!("node `{}` is not attention", node.name)) };
        let wq = weight_of(g, &node, AttentionSpec::WQ, "Wq")?;
        let wk = weight_of(g, &node, AttentionSpec::WK, "Wk")?;
        let wv = weight_of(g, &node, AttentionSpec::WV, "Wv")?;
        let wo = weight_of(g, &node, AttentionSpec::WO, "Wo")?;
        let heads = cfg.heads.unwrap_or(spec.heads);
        let dk = cfg.dk.unwrap_or((spec.head_dim * 3 / 4).max(1));
        let dv = cfg.dv.unwrap_or(spec.head_dim * 2);
        if heads == 0 || dk == 0 || dv == 0 || cfg.conv == 0 || cfg.reduction == 0 {
            return Err(format!(
                "heads {heads}, d_k {dk}, d_v {dv}, conv {} and reduction {} must all be positive",
                cfg.conv, cfg.reduction
            ));
        }
        let dims = Dims { hidden: wq.shape()[0], heads, dk, dv, conv: cfg.conv };
        Ok(Base { node, spec, wq, wk, wv, wo, dims })
    }

    /// Starts the mixer of layer `l`: emits the re-laid-out base projections as
    /// `{prefix}{q,k,v,o}_proj.weight` and, with `with_caches`, notes the KV cache inputs
    /// that the mixer's caches will replace (only when both are graph inputs).
    pub fn start<'g>(self, g: &'g mut Graph, l: usize, prefix: &str, seed: u64, with_caches: bool) -> Result<Mixer<'g>, String> {
        let d = self.dims;
        let (hd, hq, hkv) = (self.spec.head_dim, self.spec.heads, self.spec.kv_heads);
        let layer_seed = seed ^ ((l as u64 + 1) << 32);
        let mut fill_rng = Rng::new(layer_seed, "resize");
        let mut fill = || fill_rng.normal(INIT_STD);
        let t = |r: jetc_ir::Result<Tensor>| r.map_err(|e| e.to_string());
        let q_w = t(resize_columns(&self.wq, hq, hd, d.heads, d.dk, &mut fill))?;
        let k_w = t(resize_columns(&self.wk, hkv, hd, d.heads, d.dk, &mut fill))?;
        let v_w = t(resize_columns(&self.wv, hkv, hd, d.heads, d.dv, &mut fill))?;
        let o_w = t(resize_rows(&self.wo, hq, hd, d.heads, d.dv))?;

        let x = self.node.input(AttentionSpec::X).map_err(|e| e.to_string())?;
        let input = |slot: usize| self.node.inputs().get(slot).copied().flatten();
        let is_input = |o: Outlet| matches!(g.node(o.node).map(|n| &n.op), Ok(Op::Input));
        let kv = match (input(AttentionSpec::PAST_K), input(AttentionSpec::PAST_V)) {
            (Some(pk), Some(pv)) if with_caches && is_input(pk) && is_input(pv) => Some((pk, pv)),
            _ => None,
        };
        let batch = g.fact(x).ok().and_then(|f| f.shape.as_ref().map(|s| s[0].clone())).unwrap_or_else(|| Dim::sym("batch"));
        let opset = default_opset(g);
        let mut e = Emit { g, prefix: prefix.to_string(), opset };
        let wq = e.weight("q_proj.weight", q_w)?;
        let wk = e.weight("k_proj.weight", k_w)?;
        let wv = e.weight("v_proj.weight", v_w)?;
        let wo = e.weight("o_proj.weight", o_w)?;
        let rope = match (self.spec.rope, input(AttentionSpec::COS), input(AttentionSpec::SIN)) {
            (Some(_), Some(cos), Some(sin)) => Some((cos, sin, self.spec.rotary_dim)),
            _ => None,
        };
        Ok(Mixer { e, l, x, d, wq, wk, wv, wo, layer_seed, kv, batch, caches: Vec::new(), bt: None, rope })
    }
}

/// The gate and output weights a block asks [`Mixer::shared_weights`] for.
pub struct Gates {
    /// `b_proj.weight` [hidden, H] (delta rules).
    pub wb: Option<Outlet>,
    pub decay: Option<Decay>,
    /// `g_proj.weight` [hidden, H*d_v] and `o_norm.weight` [d_v] of the gated output norm.
    pub wg: Outlet,
    pub onorm: Outlet,
}

/// Weights of the data-dependent log decay g = -exp(A_log) softplus(x Wa + dt_bias).
pub struct Decay {
    wa: Outlet,
    alog: Outlet,
    dtb: Outlet,
    floor: Outlet,
}

/// A mixer under construction beside the base attention of layer `l`.
pub struct Mixer<'g> {
    pub e: Emit<'g>,
    pub l: usize,
    /// The block input (the base attention's normalized input).
    pub x: Outlet,
    pub d: Dims,
    pub wq: Outlet,
    pub wk: Outlet,
    pub wv: Outlet,
    pub wo: Outlet,
    layer_seed: u64,
    kv: Option<(Outlet, Outlet)>,
    batch: Dim,
    /// Cache names and past inputs, in the order the presents are given to `finish`.
    caches: Vec<(String, Outlet)>,
    /// `Shape(x)[0..2]`, built on first use.
    bt: Option<Outlet>,
    /// The base attention's RoPE tables (cos, sin) [B, T, R] or [B, T, R/2] and its rotary
    /// width R, when it has RoPE.
    rope: Option<(Outlet, Outlet, usize)>,
}

/// One recurrent cache of a built mixer: graph input `past_{name}.{l}`, output
/// `present_{name}.{l}`.
pub struct Cache {
    pub name: String,
    pub past: Outlet,
    pub present: Outlet,
}

/// A mixer built beside an attention layer: its output and, when the layer had a KV cache,
/// its caches with the KV cache inputs they replace.
pub struct Built {
    pub y: Outlet,
    pub caches: Vec<Cache>,
    kv: Option<(Outlet, Outlet)>,
}

impl Mixer<'_> {
    pub fn rng(&self, name: &str) -> Rng {
        Rng::new(self.layer_seed, name)
    }

    /// A new weight drawn from N(0, 0.02), seeded by (seed, layer, `rng_name`).
    pub fn normal(&mut self, name: &str, rng_name: &str, shape: Vec<usize>) -> Result<Outlet, String> {
        let t = normal(shape, INIT_STD, &mut self.rng(rng_name)).map_err(|e| e.to_string())?;
        self.e.weight(name, t)
    }

    pub fn filled(&mut self, name: &str, shape: Vec<usize>, v: f32) -> Result<Outlet, String> {
        let t = filled(shape, v).map_err(|e| e.to_string())?;
        self.e.weight(name, t)
    }

    /// The gate and output-norm weights, in this order: `a_proj.weight` (decay), `b_proj.weight`
    /// (beta), `A_log`, `dt_bias` (decay), `g_proj.weight`, `o_norm.weight`, `log_decay_floor`
    /// (decay). Released-JetBlock init: A_log = log U(0,16), dt_bias = softplus^-1(dt),
    /// projections N(0, 0.02), norm weight 1.
    pub fn shared_weights(&mut self, beta: bool, decay: bool) -> Result<Gates, String> {
        let (hidden, h, dv) = (self.d.hidden, self.d.heads, self.d.dv);
        let wa = if decay { Some(self.normal("a_proj.weight", "a_proj", vec![hidden, h])?) } else { None };
        let wb = if beta { Some(self.normal("b_proj.weight", "b_proj", vec![hidden, h])?) } else { None };
        let mut params = None;
        if let Some(wa) = wa {
            let alog = a_log(h, &mut self.rng("A_log")).map_err(|e| e.to_string())?;
            let alog = self.e.weight("A_log", alog)?;
            let dtb = dt_bias(h, &mut self.rng("dt_bias")).map_err(|e| e.to_string())?;
            let dtb = self.e.weight("dt_bias", dtb)?;
            params = Some((wa, alog, dtb));
        }
        let wg = self.normal("g_proj.weight", "g_proj", vec![hidden, h * dv])?;
        let onorm = self.filled("o_norm.weight", vec![dv], 1.0)?;
        let decay = match params {
            Some((wa, alog, dtb)) => {
                let floor = self.e.weight("log_decay_floor", Tensor::scalar_f32(LOG_DECAY_FLOOR))?;
                Some(Decay { wa, alog, dtb, floor })
            }
            None => None,
        };
        Ok(Gates { wb, decay, wg, onorm })
    }

    /// Adds the cache inputs `past_{name}.{l}` [B, dims..] (f32) when the base layer had a
    /// KV cache; returns them in order, or `None`s.
    pub fn cache_inputs(&mut self, caches: &[(&str, Vec<usize>)]) -> Result<Vec<Option<Outlet>>, String> {
        if self.kv.is_none() {
            return Ok(vec![None; caches.len()]);
        }
        let mut out = Vec::with_capacity(caches.len());
        for (name, dims) in caches {
            let mut shape = vec![self.batch.clone()];
            shape.extend(dims.iter().map(|&v| Dim::known(v as i64)));
            let id = self.e.g.add_input(&format!("past_{name}.{}", self.l), Fact::new(DType::F32, shape)).map_err(|e| e.to_string())?;
            let past = Outlet::new(id, 0);
            self.caches.push((name.to_string(), past));
            out.push(Some(past));
        }
        Ok(out)
    }

    /// `x W` (a projection of the block input).
    pub fn proj(&mut self, name: &str, w: Outlet) -> Result<Outlet, String> {
        let x = self.x;
        self.e.onnx(name, "MatMul", &[x, w], &[])
    }

    /// Per-head L2 norm of q or k: x / sqrt(sum x^2 + 1e-6).
    pub fn l2norm(&mut self, name: &str, x: Outlet) -> Result<Outlet, String> {
        Ok(self.e.node(name, Op::L2Norm { heads: self.d.heads, eps: L2_EPS }, &[Some(x)], 1)?[0])
    }

    /// A [width] constant broadcast over [B, T] (built as `Expand` to `Shape(x)[0..2] ++
    /// [width]`, so any batch and length take it).
    pub fn broadcast_bt(&mut self, name: &str, c: Outlet, width: usize) -> Result<Outlet, String> {
        let bt = match self.bt {
            Some(bt) => bt,
            None => {
                let x = self.x;
                let bt = self.e.onnx("batch_and_length", "Shape", &[x], &[("start", Attr::Int(0)), ("end", Attr::Int(2))])?;
                self.bt = Some(bt);
                bt
            }
        };
        let w = self.e.ints(&format!("{name}/width"), &[width as i64])?;
        let shape = self.e.onnx(&format!("{name}/shape"), "Concat", &[bt, w], &[("axis", Attr::Int(0))])?;
        self.e.onnx(&format!("{name}/expand"), "Expand", &[c, shape], &[])
    }

    /// A static causal depthwise short convolution + SiLU over `u` [B, T, channels] (fla's
    /// `ShortConvolution`, no bias): weight `{name}.weight` [channels*W] (fla's [C, 1, W]
    /// flattened, index c*W + w, tap W-1 on the current token), initialized to the identity
    /// (last tap 1, others 0). Expressed as `DynamicConv` with the kernel broadcast over
    /// [B, T]. Returns (y, present raw-value cache [B, channels, W]).
    pub fn short_conv(&mut self, name: &str, u: Outlet, channels: usize, past: Option<Outlet>) -> Result<(Outlet, Outlet), String> {
        let w = self.d.conv;
        let mut k = vec![0f32; channels * w];
        for c in 0..channels {
            k[c * w + w - 1] = 1.0;
        }
        let k = Tensor::from_f32(vec![channels * w], &k).map_err(|e| e.to_string())?;
        let k = self.e.weight(&format!("{name}.weight"), k)?;
        let ker = self.broadcast_bt(&format!("{name}/kernels"), k, channels * w)?;
        let conv = self.e.node(name, Op::DynamicConv(DynamicConvSpec { width: w }), &[Some(u), Some(ker), past], 2)?;
        Ok((conv[0], conv[1]))
    }

    /// beta = sigmoid(x Wb) [B, T, H].
    pub fn beta(&mut self, wb: Outlet) -> Result<Outlet, String> {
        let bp = self.proj("b_proj", wb)?;
        self.e.onnx("beta", "Sigmoid", &[bp], &[])
    }

    /// g = max(-exp(A_log) softplus(x Wa + dt_bias), floor) [B, T, H].
    pub fn log_decay(&mut self, d: &Decay) -> Result<Outlet, String> {
        let ap = self.proj("a_proj", d.wa)?;
        let ap = self.e.onnx("a_plus_dt_bias", "Add", &[ap, d.dtb], &[])?;
        let sp = self.e.onnx("softplus", "Softplus", &[ap], &[])?;
        let ea = self.e.onnx("A", "Exp", &[d.alog], &[])?;
        let na = self.e.onnx("minus_A", "Neg", &[ea], &[])?;
        let gate = self.e.onnx("log_decay", "Mul", &[sp, na], &[])?;
        self.e.onnx("log_decay_floored", "Max", &[gate, d.floor], &[])
    }

    /// The recurrence (H heads, scale d_k^-0.5): returns (o [B, T, H*d_v], present state).
    #[allow(clippy::too_many_arguments)]
    pub fn recurrence(
        &mut self,
        name: &str,
        rule: UpdateRule,
        q: Outlet,
        k: Outlet,
        v: Outlet,
        state: Option<Outlet>,
        decay: Option<Outlet>,
        beta: Option<Outlet>,
    ) -> Result<(Outlet, Outlet), String> {
        let scale = 1.0 / (self.d.dk as f32).sqrt();
        self.recurrence_with(name, rule, scale, &[Some(q), Some(k), Some(v), state, decay, beta])
    }

    /// The recurrence with an explicit scale and the op's inputs by slot
    /// ([`LinearAttentionSpec`]: q, k, v, state, decay, beta, a, b).
    pub fn recurrence_with(&mut self, name: &str, rule: UpdateRule, scale: f32, inputs: &[Option<Outlet>]) -> Result<(Outlet, Outlet), String> {
        let (h, dk, dv) = (self.d.heads, self.d.dk, self.d.dv);
        let spec = LinearAttentionSpec { rule, q_heads: h, kv_heads: h, dk, dv, scale, chunk: 64 };
        let la = self.e.node(name, Op::LinearAttention(spec), inputs, 2)?;
        Ok((la[0], la[1]))
    }

    /// RoPE on each head of `x` [B, T, H*d] (q or k of the mixer), with the base attention's
    /// position tables: the first r = 2 min(R/2, d/2) dims of each head are rotated
    /// `rotate_half` style with the base's first r/2 frequencies, the rest pass through.
    /// `x` unchanged when the base attention has no RoPE.
    pub fn rope(&mut self, name: &str, x: Outlet, d: usize) -> Result<Outlet, String> {
        let Some((cos, sin, rotary)) = self.rope else { return Ok(x) };
        // Either table form starts with the R/2 distinct frequencies.
        let half = (rotary / 2).min(d / 2);
        if half == 0 {
            return Ok(x);
        }
        let r = 2 * half;
        let last = self.e.ints(&format!("{name}/axis"), &[-1])?;
        let zero = self.e.ints(&format!("{name}/zero"), &[0])?;
        let h_end = self.e.ints(&format!("{name}/half"), &[half as i64])?;
        // Tables come as [B, 1, T, R] (head axis 1), [B, T, R] or [T, R]: put a unit head
        // axis just before the last so they broadcast over [B, T, H, d].
        let rank = self.e.g.fact(cos).ok().and_then(|f| f.shape.as_ref().map(|s| s.len())).ok_or("RoPE table of unknown rank")?;
        let unsq = self.e.ints(&format!("{name}/head_axis"), &[-2])?;
        let mut tables = Vec::new();
        for (which, t) in [("cos", cos), ("sin", sin)] {
            let t = self.e.onnx(&format!("{name}/{which}_freqs"), "Slice", &[t, zero, h_end, last], &[])?;
            let t = self.e.onnx(&format!("{name}/{which}_full"), "Concat", &[t, t], &[("axis", Attr::Int(-1))])?;
            tables.push(match rank {
                4 => self.e.onnx(&format!("{name}/{which}_heads"), "Transpose", &[t], &[("perm", Attr::Ints(vec![0, 2, 1, 3]))])?,
                2 | 3 => self.e.onnx(&format!("{name}/{which}_heads"), "Unsqueeze", &[t, unsq], &[])?,
                r => return Err(format!("RoPE table of rank {r}")),
            });
        }
        let xh = self.split_heads(&format!("{name}/heads"), x)?;
        let r_end = self.e.ints(&format!("{name}/rot_end"), &[r as i64])?;
        let max = self.e.ints(&format!("{name}/max"), &[i64::MAX])?;
        let rot_part = self.e.onnx(&format!("{name}/rotated_part"), "Slice", &[xh, zero, r_end, last], &[])?;
        let lo = self.e.onnx(&format!("{name}/lo"), "Slice", &[rot_part, zero, h_end, last], &[])?;
        let hi = self.e.onnx(&format!("{name}/hi"), "Slice", &[rot_part, h_end, max, last], &[])?;
        let neg = self.e.onnx(&format!("{name}/neg"), "Neg", &[hi], &[])?;
        let turned = self.e.onnx(&format!("{name}/rotate_half"), "Concat", &[neg, lo], &[("axis", Attr::Int(-1))])?;
        let a = self.e.onnx(&format!("{name}/times_cos"), "Mul", &[rot_part, tables[0]], &[])?;
        let b = self.e.onnx(&format!("{name}/times_sin"), "Mul", &[turned, tables[1]], &[])?;
        let mut y = self.e.onnx(&format!("{name}/rotated"), "Add", &[a, b], &[])?;
        if r < d {
            let pass = self.e.onnx(&format!("{name}/pass"), "Slice", &[xh, r_end, max, last], &[])?;
            y = self.e.onnx(&format!("{name}/joined"), "Concat", &[y, pass], &[("axis", Attr::Int(-1))])?;
        }
        self.merge_heads(&format!("{name}/merged"), y)
    }

    /// [B, T, H*d] -> [B, T, H, d].
    pub fn split_heads(&mut self, name: &str, x: Outlet) -> Result<Outlet, String> {
        let shape = self.e.ints(&format!("{name}/head_shape"), &[0, 0, self.d.heads as i64, -1])?;
        self.e.onnx(name, "Reshape", &[x, shape], &[])
    }

    /// [B, T, H, d] -> [B, T, H*d].
    pub fn merge_heads(&mut self, name: &str, x: Outlet) -> Result<Outlet, String> {
        let shape = self.e.ints(&format!("{name}/merged_shape"), &[0, 0, -1])?;
        self.e.onnx(name, "Reshape", &[x, shape], &[])
    }

    /// A weight from explicit values.
    pub fn values(&mut self, name: &str, shape: Vec<usize>, v: &[f32]) -> Result<Outlet, String> {
        let t = Tensor::from_f32(shape, v).map_err(|e| e.to_string())?;
        self.e.weight(name, t)
    }

    /// y = (rmsnorm_per_head(o) * w_onorm * silu(x Wg)) Wo.
    pub fn output(&mut self, o: Outlet, gates: &Gates) -> Result<Outlet, String> {
        let gp = self.proj("g_proj", gates.wg)?;
        let eps = NORM_EPS;
        let o = self.e.node("o_norm", Op::GatedRmsNorm { heads: self.d.heads, eps }, &[Some(o), Some(gates.onorm), Some(gp)], 1)?[0];
        let wo = self.wo;
        self.e.onnx("o_proj", "MatMul", &[o, wo], &[])
    }

    /// The built mixer: `presents` in the order of the cache inputs (ignored when the layer
    /// has no caches).
    pub fn finish(self, y: Outlet, presents: &[Outlet]) -> Result<Built, String> {
        if !self.caches.is_empty() && presents.len() != self.caches.len() {
            return Err(format!("{} caches but {} presents", self.caches.len(), presents.len()));
        }
        let caches = self.caches.into_iter().zip(presents).map(|((name, past), &present)| Cache { name, past, present }).collect();
        Ok(Built { y, caches, kv: self.kv })
    }
}

/// Puts a built mixer in place of attention node `id`: its output, then its caches in place
/// of the KV cache (the present outputs where `present_key` was, in cache order).
pub fn rewire(g: &mut Graph, id: NodeId, l: usize, b: Built) -> Result<(), String> {
    g.replace_uses(Outlet::new(id, 0), b.y).map_err(|e| e.to_string())?;
    let mut outputs = Vec::with_capacity(g.outputs.len());
    for go in std::mem::take(&mut g.outputs) {
        if go.outlet == Outlet::new(id, 1) {
            if b.kv.is_some() {
                outputs.extend(b.caches.iter().map(|c| GraphOutput { name: format!("present_{}.{l}", c.name), outlet: c.present }));
            }
        } else if go.outlet != Outlet::new(id, 2) {
            outputs.push(go);
        }
    }
    g.outputs = outputs;
    g.prune_dead().map_err(|e| e.to_string())?;
    if let Some((pk, pv)) = b.kv {
        for o in [pk, pv] {
            if g.contains(o.node) {
                redirect_shape_reads(g, o)?;
            }
            if g.contains(o.node) && g.consumers(o).is_empty() {
                g.remove_node(o.node).map_err(|e| e.to_string())?;
            }
        }
    }
    Ok(())
}

/// The removed KV-cache input may still be read for its shape (the causal mask of the other
/// layers needs the past length): point those `Shape` reads at the KV input of a layer that
/// keeps full attention (its cache holds the whole past, whatever its symbolic name), with the
/// same dtype, rank and sizes except the length axis, so the converted model does not ask for
/// a cache it no longer has. With no full-attention layer left the input stays.
pub(crate) fn redirect_shape_reads(g: &mut Graph, old: Outlet) -> Result<(), String> {
    let fact = g.fact(old).map_err(|e| e.to_string())?.clone();
    let same_layout = |f: &Fact| {
        f.dtype == fact.dtype
            && match (&f.shape, &fact.shape) {
                (Some(a), Some(b)) => {
                    a.len() == b.len()
                        && a.iter().zip(b).enumerate().all(|(i, (x, y))| i == 2 || x.as_known().is_none() || y.as_known().is_none() || x == y)
                }
                _ => false,
            }
    };
    let mut other = None;
    for id in g.node_ids() {
        let Ok(n) = g.node(id) else { continue };
        let Op::Attention(spec) = &n.op else { continue };
        if spec.window.is_some() {
            continue;
        }
        for slot in [AttentionSpec::PAST_K, AttentionSpec::PAST_V] {
            let Some(o) = n.inputs().get(slot).copied().flatten() else { continue };
            let is_input = matches!(g.node(o.node).map(|m| &m.op), Ok(Op::Input));
            if o != old && is_input && g.fact(o).is_ok_and(&same_layout) {
                other = other.or(Some(o));
            }
        }
    }
    let Some(other) = other else { return Ok(()) };
    for (consumer, slot) in g.consumers(old) {
        if g.node(consumer).is_ok_and(|n| n.op.is("Shape")) {
            g.set_input(consumer, slot, Some(other)).map_err(|e| e.to_string())?;
        }
    }
    Ok(())
}
