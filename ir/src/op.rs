//! Operations. ONNX nodes are mirrored faithfully as [`OnnxOp`] (domain, type, opset and raw
//! attributes kept, unknown attributes tolerated); raising passes replace recognised
//! subgraphs with the decoder-level ops below, which keep the original weights as inputs.
use std::collections::BTreeMap;
use std::fmt;

use crate::tensor::Tensor;

#[derive(Clone, Debug, PartialEq)]
pub enum Attr {
    Int(i64),
    Float(f32),
    String(String),
    Ints(Vec<i64>),
    Floats(Vec<f32>),
    Strings(Vec<String>),
    Tensor(Tensor),
}

/// One ONNX node as exported.
#[derive(Clone, Debug, PartialEq)]
pub struct OnnxOp {
    /// "" for the default domain, "com.microsoft" for onnxruntime contrib ops.
    pub domain: String,
    pub op_type: String,
    /// The opset version of `domain` that the model imports.
    pub opset: i64,
    pub attrs: BTreeMap<String, Attr>,
}

impl OnnxOp {
    pub fn new(op_type: &str, opset: i64) -> OnnxOp {
        OnnxOp { domain: String::new(), op_type: op_type.to_string(), opset, attrs: BTreeMap::new() }
    }

    pub fn with_attr(mut self, name: &str, attr: Attr) -> OnnxOp {
        self.attrs.insert(name.to_string(), attr);
        self
    }

    pub fn int(&self, name: &str) -> Option<i64> {
        match self.attrs.get(name)? {
            Attr::Int(v) => Some(*v),
            _ => None,
        }
    }

    pub fn int_or(&self, name: &str, default: i64) -> i64 {
        self.int(name).unwrap_or(default)
    }

    pub fn float(&self, name: &str) -> Option<f32> {
        match self.attrs.get(name)? {
            Attr::Float(v) => Some(*v),
            Attr::Int(v) => Some(*v as f32),
            _ => None,
        }
    }

    pub fn ints(&self, name: &str) -> Option<&[i64]> {
        match self.attrs.get(name)? {
            Attr::Ints(v) => Some(v),
            _ => None,
        }
    }

    pub fn string(&self, name: &str) -> Option<&str> {
        match self.attrs.get(name)? {
            Attr::String(v) => Some(v),
            _ => None,
        }
    }

    pub fn tensor(&self, name: &str) -> Option<&Tensor> {
        match self.attrs.get(name)? {
            Attr::Tensor(t) => Some(t),
            _ => None,
        }
    }

    /// "Add" or "com.microsoft::GroupQueryAttention".
    pub fn qualified_name(&self) -> String {
        if self.domain.is_empty() || self.domain == "ai.onnx" {
            self.op_type.clone()
        } else {
            format!("{}::{}", self.domain, self.op_type)
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq)]
pub struct RmsNormSpec {
    pub eps: f32,
}

/// How RoPE pairs the elements of a head.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RopeStyle {
    /// Llama/HF `rotate_half`: element i pairs with i + rot/2.
    HalfRotate,
    /// GPT-J style: element 2i pairs with 2i + 1.
    Interleaved,
}

/// A decoder's softmax attention mixer, projections included.
///
/// Inputs, by slot (absent optional inputs are `None`):
/// 0 `x` [B,T,hidden]; 1 `wq` [hidden,H*D]; 2 `bq`; 3 `wk` [hidden,KV*D]; 4 `bk`;
/// 5 `wv` [hidden,KV*D]; 6 `bv`; 7 `wo` [H*D,hidden]; 8 `bo`; 9 `cos` [B,T,R]; 10 `sin`;
/// 11 `past_key` [B,KV,P,D]; 12 `past_value`; 13 `mask`, numpy-broadcastable to [B,H,T,P+T]:
/// boolean (or integer) true keeps a key, float is added to the scores. `causal` and `window`
/// apply on top of the mask; a query that sees no key outputs zeros.
/// 14 `q_norm`, 15 `k_norm` [G]: RMSNorm (eps `qk_norm_eps`) of the projected q / k (after
/// the bias, before RoPE) over groups of G consecutive elements: G = D normalizes each head
/// (Qwen3, Gemma3), G = the projection width all heads together (OLMo2).
/// Outputs: 0 `y` [B,T,hidden]; 1 `present_key` [B,KV,P+T,D]; 2 `present_value`.
/// Weights are stored [in, out] as ONNX MatMul takes them.
#[derive(Clone, Debug, PartialEq)]
pub struct AttentionSpec {
    pub heads: usize,
    pub kv_heads: usize,
    pub head_dim: usize,
    pub scale: f32,
    pub rope: Option<RopeStyle>,
    /// Leading elements of each head that RoPE rotates (= head_dim unless partial rotary).
    pub rotary_dim: usize,
    pub causal: bool,
    /// Sliding window: each query sees itself and the previous `window - 1` keys.
    pub window: Option<usize>,
    /// eps of the q/k RMSNorms (inputs 14, 15), when the model has them.
    pub qk_norm_eps: Option<f32>,
    /// Score soft-capping (Gemma 2): scores = c * tanh(scores / c), after the scale, before
    /// the mask.
    pub softcap: Option<f32>,
}

impl AttentionSpec {
    pub const X: usize = 0;
    pub const WQ: usize = 1;
    pub const BQ: usize = 2;
    pub const WK: usize = 3;
    pub const BK: usize = 4;
    pub const WV: usize = 5;
    pub const BV: usize = 6;
    pub const WO: usize = 7;
    pub const BO: usize = 8;
    pub const COS: usize = 9;
    pub const SIN: usize = 10;
    pub const PAST_K: usize = 11;
    pub const PAST_V: usize = 12;
    pub const MASK: usize = 13;
    pub const Q_NORM: usize = 14;
    pub const K_NORM: usize = 15;
    pub const NUM_INPUTS: usize = 16;
}

/// State update rules of [`LinearAttentionSpec`]; the first four are the ONNX opset-27
/// `LinearAttention` op's `update_rule` values. Per head, with state S [d_k, d_v]:
/// - `Linear`: S = S + k v^T
/// - `Gated`: S = exp(g) S + k v^T, g a scalar log decay per head (simple GLA, RetNet, Mamba2)
/// - `GatedVector`: S = Diag(exp(g)) S + k v^T, g [d_k] per head (GLA)
/// - `Delta`: S = S + beta k (v - S^T k)^T (DeltaNet)
/// - `GatedDelta`: S = exp(g) S; S = S + beta k (v - S^T k)^T (Gated DeltaNet, JetBlock)
/// - `GatedDeltaVector`: the same with S = Diag(exp(g)) S, g [d_k] per head (the ONNX op's
///   `gated_delta` with a per-key decay; Kimi Delta Attention's gate)
/// - `Dplr`: S = Diag(exp(w)) S + b (a^T S) + k v^T (RWKV7)
///
/// and o = scale * S^T q after the update.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum UpdateRule {
    Linear,
    Gated,
    GatedVector,
    Delta,
    GatedDelta,
    GatedDeltaVector,
    Dplr,
}

impl UpdateRule {
    /// The rule of an ONNX `LinearAttention` node's `update_rule` attribute (default
    /// `linear`); `None` for names the standard does not define.
    pub fn from_onnx(name: &str) -> Option<UpdateRule> {
        Some(match name {
            "linear" => UpdateRule::Linear,
            "gated" => UpdateRule::Gated,
            "delta" => UpdateRule::Delta,
            "gated_delta" => UpdateRule::GatedDelta,
            _ => return None,
        })
    }

    pub fn name(self) -> &'static str {
        match self {
            UpdateRule::Linear => "linear",
            UpdateRule::Gated => "gated",
            UpdateRule::GatedVector => "gated_vector",
            UpdateRule::Delta => "delta",
            UpdateRule::GatedDelta => "gated_delta",
            UpdateRule::GatedDeltaVector => "gated_delta_vector",
            UpdateRule::Dplr => "dplr",
        }
    }
}

/// The recurrent core of a linear-attention mixer.
///
/// Inputs by slot: 0 `q` [B,T,Hq*dk]; 1 `k` [B,T,Hkv*dk]; 2 `v` [B,T,Hkv*dv];
/// 3 `past_state` [B,Hkv,dk,dv] (zeros when absent); 4 `decay` (log space, <= 0):
/// [B,T,Hkv] for `Gated`/`GatedDelta`, [B,T,Hkv*dk] for `GatedVector`/`GatedDeltaVector`/`Dplr`; 5 `beta`
/// [B,T,Hkv] (delta rules); 6 `a`, 7 `b` [B,T,Hkv*dk] (`Dplr`).
/// Outputs: 0 `o` [B,T,Hq*dv]; 1 `present_state` [B,Hkv,dk,dv] (f32 whatever the
/// activations). Query head i reads state head i / (Hq / Hkv).
#[derive(Clone, Debug, PartialEq)]
pub struct LinearAttentionSpec {
    pub rule: UpdateRule,
    pub q_heads: usize,
    pub kv_heads: usize,
    pub dk: usize,
    pub dv: usize,
    pub scale: f32,
    /// Chunk length of the chunked form; 0 runs the recurrent form.
    pub chunk: usize,
}

/// Domain of jetc's extension of the standard `LinearAttention` op: the same inputs and
/// attributes plus `update_rule = "dplr"` with inputs 6 `a`, 7 `b` (RWKV7). Exported as an
/// ONNX function whose body is standard ops, so other runtimes run it too.
pub const JETC_DOMAIN: &str = "ai.jetc";

impl LinearAttentionSpec {
    /// The spec of an ONNX `LinearAttention` node (standard, or jetc's extension in
    /// [`JETC_DOMAIN`]) from its attributes and the widths of its 3-D `query`, `value` and
    /// `decay` inputs. A `gated` node whose decay has one value per key dimension is GLA
    /// ([`UpdateRule::GatedVector`]), a `gated_delta` one [`UpdateRule::GatedDeltaVector`]. The
    /// standard's default rule is `gated_delta`.
    pub fn from_onnx(op: &OnnxOp, q_width: usize, v_width: usize, decay_width: Option<usize>) -> Result<LinearAttentionSpec, String> {
        let name = op.string("update_rule").unwrap_or("gated_delta");
        let rule = match (UpdateRule::from_onnx(name), op.domain.as_str(), name) {
            (Some(r), _, _) => r,
            (None, JETC_DOMAIN, "dplr") => UpdateRule::Dplr,
            _ => return Err(format!("unknown update_rule `{name}`")),
        };
        let (hq, hkv) = (op.int_or("q_num_heads", 0), op.int_or("kv_num_heads", 0));
        if hq <= 0 || hkv <= 0 {
            return Err("q_num_heads and kv_num_heads must be positive".into());
        }
        let (hq, hkv) = (hq as usize, hkv as usize);
        if !q_width.is_multiple_of(hq) || !v_width.is_multiple_of(hkv) {
            return Err(format!("query width {q_width} / value width {v_width} do not split into {hq} / {hkv} heads"));
        }
        let (dk, dv) = (q_width / hq, v_width / hkv);
        let rule = match (rule, decay_width) {
            (UpdateRule::Gated, Some(w)) if dk > 1 && w == hkv * dk => UpdateRule::GatedVector,
            (UpdateRule::GatedDelta, Some(w)) if dk > 1 && w == hkv * dk => UpdateRule::GatedDeltaVector,
            (r, _) => r,
        };
        Ok(LinearAttentionSpec {
            rule,
            q_heads: hq,
            kv_heads: hkv,
            dk,
            dv,
            scale: op.float("scale").filter(|s| *s != 0.0).unwrap_or(1.0 / (dk.max(1) as f32).sqrt()),
            chunk: op.int_or("chunk_size", 64).max(0) as usize,
        })
    }

    pub const Q: usize = 0;
    pub const K: usize = 1;
    pub const V: usize = 2;
    pub const STATE: usize = 3;
    pub const DECAY: usize = 4;
    pub const BETA: usize = 5;
    pub const A: usize = 6;
    pub const B: usize = 7;
}

/// JetBlock's dynamic causal depthwise convolution with per-token kernels.
///
/// Inputs: 0 `u` [B,T,C] (raw values); 1 `kernels` [B,T,C*W] (flat index c*W + w);
/// 2 `past` [B,C,W] raw values of the last W tokens (zeros when absent).
/// Outputs: 0 `y` [B,T,C], y[t,c] = silu(sum_w ker[t,c,w] * u[t-W+1+w, c]); 1 `present`
/// [B,C,W].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DynamicConvSpec {
    pub width: usize,
}

/// A whole JetBlock (jet-nemotron.md §2) as one op, as `fuse` makes it for kernels that run
/// the block in one launch. Same numerics as the decomposed subgraph.
///
/// Inputs: 0 `x` [B,T,hidden]; 1 `wq`, 2 `wk` [hidden,H*dk]; 3 `wv` [hidden,H*dv];
/// 4 `w1` [hidden,G], 5 `w2` [G,H*dv*W], 6 `b2` [H*dv*W] (kernel generator); 7 `wa`
/// [hidden,H], 8 `dt_bias` [H], 9 `a_log` [H]; 10 `wb` [hidden,H]; 11 `wg` [hidden,H*dv];
/// 12 `o_norm` [dv]; 13 `wo` [H*dv,hidden]; 14 `past_conv` [B,H*dv,W]; 15 `past_state`
/// [B,H,dk,dv]. Outputs: 0 `y`; 1 `present_conv`; 2 `present_state`.
///
/// With `packed`, the seven projections of the block input are one weight in slot 1,
/// `w_in` = [wq | wk | wv | w1 | wa | wb | wg] by columns ([`JetBlockSpec::packed_widths`]),
/// so the block reads x once in one GEMM; slots 2, 3, 4, 7, 10, 11 are empty.
#[derive(Clone, Debug, PartialEq)]
pub struct JetBlockSpec {
    pub heads: usize,
    pub dk: usize,
    pub dv: usize,
    pub width: usize,
    pub scale: f32,
    pub l2_eps: f32,
    pub norm_eps: f32,
    pub decay_floor: f32,
    pub chunk: usize,
    /// The input projections are packed into slot 1 (see the type's doc).
    pub packed: bool,
}

impl JetBlockSpec {
    /// Slots of the projections that `packed` merges, in packing order.
    pub const PACKED_SLOTS: [usize; 7] = [1, 2, 3, 4, 7, 10, 11];

    /// Column widths of q, k, v, w1, a, b, g in the packed weight, for a generator width G.
    pub fn packed_widths(&self, generator: usize) -> [usize; 7] {
        let (h, dk, dv) = (self.heads, self.dk, self.dv);
        [h * dk, h * dk, h * dv, generator, h, h, h * dv]
    }

    pub const NUM_INPUTS: usize = 16;
    pub const PAST_CONV: usize = 14;
    pub const PAST_STATE: usize = 15;
}

#[derive(Clone, Debug, PartialEq)]
pub enum Op {
    /// A graph input; the node's output 0 carries its name and fact.
    Input,
    /// A constant or weight; the node name is the weight's name.
    Const(Tensor),
    /// An ONNX node as imported.
    Onnx(OnnxOp),
    /// Token embedding: inputs [table [V,D], ids [..]] -> [.., D].
    Embedding,
    /// RMSNorm over the last axis: inputs [x, weight] -> x / sqrt(mean(x^2) + eps) * weight.
    RmsNorm(RmsNormSpec),
    /// SwiGLU MLP: inputs [x, w_gate [D,F], w_up [D,F], w_down [F,D]] -> (silu(x Wg) * x Wu) Wd.
    SwiGlu,
    Attention(AttentionSpec),
    /// Sliding-window or full attention is `Attention`; the linear mixers' core is this.
    LinearAttention(LinearAttentionSpec),
    DynamicConv(DynamicConvSpec),
    /// Per-head L2 normalization of [.., H*d]: x / sqrt(sum x^2 + eps) within each head.
    L2Norm { heads: usize, eps: f32 },
    /// Gated RMSNorm: inputs [o [..,H*d], weight [d], gate [..,H*d]] ->
    /// rmsnorm_per_head(o) * weight * silu(gate).
    GatedRmsNorm { heads: usize, eps: f32 },
    /// Supernet switch: one input per alternative mixer of a layer (all computed from the same
    /// layer input); the run picks one by index, and only that alternative is evaluated.
    Switch { choices: Vec<String> },
    JetBlock(JetBlockSpec),
    /// The vector-Jacobian product of another op, as the autodiff pass emits it (see
    /// [`BackwardSpec`]): forward and backward live in one graph, so the executor (and later
    /// the codegen) runs both.
    Backward(BackwardSpec),
}

/// The backward of one forward op.
///
/// Inputs: the forward node's inputs by slot (`forward_inputs` slots, absent ones `None`),
/// then one cotangent per forward output (`forward_outputs` slots; `None` where that output
/// does not reach the loss). Outputs: the gradient of the forward input in each slot of
/// `wrt`, in that order, with that input's fact (f32 whatever the forward dtype).
/// Backward kernels recompute what they need from the forward inputs (nothing saved but the
/// inputs, which the executor keeps alive until their last backward use).
#[derive(Clone, Debug, PartialEq)]
pub struct BackwardSpec {
    pub forward: Box<Op>,
    pub forward_inputs: usize,
    pub forward_outputs: usize,
    pub wrt: Vec<usize>,
}

impl BackwardSpec {
    /// Slot of the cotangent of forward output `i` among the node's inputs.
    pub fn cotangent_slot(&self, i: usize) -> usize {
        self.forward_inputs + i
    }
}

impl Op {
    /// Short name used in messages and in the printer.
    pub fn name(&self) -> String {
        match self {
            Op::Input => "Input".into(),
            Op::Const(_) => "Const".into(),
            Op::Onnx(o) => o.qualified_name(),
            Op::Embedding => "Embedding".into(),
            Op::RmsNorm(_) => "RmsNorm".into(),
            Op::SwiGlu => "SwiGlu".into(),
            Op::Attention(_) => "Attention".into(),
            Op::LinearAttention(_) => "LinearAttention".into(),
            Op::DynamicConv(_) => "DynamicConv".into(),
            Op::L2Norm { .. } => "L2Norm".into(),
            Op::GatedRmsNorm { .. } => "GatedRmsNorm".into(),
            Op::Switch { .. } => "Switch".into(),
            Op::JetBlock(_) => "JetBlock".into(),
            Op::Backward(b) => format!("Backward[{}]", b.forward.name()),
        }
    }

    pub fn as_onnx(&self) -> Option<&OnnxOp> {
        match self {
            Op::Onnx(o) => Some(o),
            _ => None,
        }
    }

    /// True for an ONNX node of this (default-domain or contrib) type.
    pub fn is(&self, op_type: &str) -> bool {
        matches!(self, Op::Onnx(o) if o.op_type == op_type)
    }
}

impl fmt::Display for Attr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fn list<T: fmt::Display>(f: &mut fmt::Formatter<'_>, v: &[T]) -> fmt::Result {
            let items: Vec<String> = v.iter().map(|x| x.to_string()).collect();
            write!(f, "[{}]", items.join(","))
        }
        match self {
            Attr::Int(v) => write!(f, "{v}"),
            Attr::Float(v) => write!(f, "{v:?}"),
            Attr::String(v) => write!(f, "{v:?}"),
            Attr::Ints(v) => list(f, v),
            Attr::Floats(v) => {
                let items: Vec<String> = v.iter().map(|x| format!("{x:?}")).collect();
                write!(f, "[{}]", items.join(","))
            }
            Attr::Strings(v) => {
                let items: Vec<String> = v.iter().map(|x| format!("{x:?}")).collect();
                write!(f, "[{}]", items.join(","))
            }
            Attr::Tensor(t) => write!(f, "tensor<{}{:?}>", t.dtype(), t.shape()),
        }
    }
}
