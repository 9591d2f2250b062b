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
    pub const NUM_INPUTS: usize = 14;
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
