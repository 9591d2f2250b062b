//! Backward kernels: the vector-Jacobian product (VJP) of every differentiable op, run by the
//! executor for the [`jetc_ir::Op::Backward`] nodes that the autodiff pass emits.
//!
//! A backward node carries its forward op, the forward inputs, and one cotangent per forward
//! output; it returns the gradient of each requested input (`wrt`). Nothing is saved from the
//! forward run: kernels recompute what they need from the inputs (cheap for elementwise ops;
//! the linear-attention backward recomputes its states from checkpoints at chunk boundaries).
//!
//! Families, one module each: [`elementwise`] (unary and binary ONNX math, Softmax),
//! [`movement`] (reshapes, transposes, slices, concatenation, gathers, broadcasts: one rule
//! for all, by tracing element indices through the forward kernel), [`reduce`] (ReduceSum,
//! ReduceMean), [`linalg`] (MatMul, Gemm), [`norms`] (RmsNorm, L2Norm, GatedRmsNorm),
//! [`mlp`] (SwiGlu), [`embedding`], [`dynamic_conv`], [`linear_attention`], [`attention`].
//! [`broadcast::sum_to_shape`] is the one place that sums a gradient back over broadcast axes.
//! The fused math of the decoder families is generic over [`real::Real`] (f32 and f64), so
//! the finite-difference checks run in f64.
//!
//! An op without a rule, or an input that cannot carry a gradient (integer ids, shapes), is an
//! error naming the node and the op: never a silent zero. [`check_rule`] answers the same
//! question ahead of time for the autodiff pass.
pub mod attention;
pub mod broadcast;
pub mod chunked;
pub mod dynamic_conv;
pub mod elementwise;
pub mod embedding;
pub mod linalg;
pub mod linear_attention;
pub mod mlp;
pub mod movement;
pub mod norms;
pub mod real;
pub mod reduce;

use jetc_ir::{BackwardSpec, Op};
use ndarray::ArrayD;

use crate::error::{Result, RuntimeError};
use crate::value::Value;

pub(crate) type R<T> = std::result::Result<T, String>;

/// What a backward kernel sees: the forward inputs and the output cotangents.
pub(crate) struct Bwd<'a> {
    pub spec: &'a BackwardSpec,
    pub inputs: &'a [Option<&'a Value>],
}

impl<'a> Bwd<'a> {
    /// Forward input `i` (`None` when the forward node had none there).
    pub fn x(&self, i: usize) -> Option<&'a Value> {
        if i >= self.spec.forward_inputs {
            return None;
        }
        self.inputs.get(i).copied().flatten()
    }

    pub fn xf(&self, i: usize, what: &str) -> R<&'a ArrayD<f32>> {
        let v = self.x(i).ok_or_else(|| format!("forward input {i} ({what}) is missing"))?;
        v.as_f32().ok_or_else(|| format!("forward input {i} ({what}) must be a float tensor, got {}", v.dtype))
    }

    pub fn opt_xf(&self, i: usize, what: &str) -> R<Option<&'a ArrayD<f32>>> {
        match self.x(i) {
            None => Ok(None),
            Some(_) => self.xf(i, what).map(Some),
        }
    }

    /// The cotangent of forward output `i`, if it reaches the loss.
    pub fn dy(&self, i: usize) -> R<Option<&'a ArrayD<f32>>> {
        match self.inputs.get(self.spec.cotangent_slot(i)).copied().flatten() {
            None => Ok(None),
            Some(v) => v.as_f32().map(Some).ok_or_else(|| format!("cotangent of output {i} must be a float tensor, got {}", v.dtype)),
        }
    }

    /// The cotangent of output `i`, which this op needs.
    pub fn req_dy(&self, i: usize) -> R<&'a ArrayD<f32>> {
        self.dy(i)?.ok_or_else(|| format!("the cotangent of output {i} is missing"))
    }

    pub fn wants(&self, slot: usize) -> bool {
        self.spec.wrt.contains(&slot)
    }
}

/// Runs the backward of `spec.forward`: one gradient per `spec.wrt` slot, in that order.
pub fn eval(spec: &BackwardSpec, node: &str, inputs: &[Option<&Value>]) -> Result<Vec<Value>> {
    let op_name = spec.forward.name();
    let err = |msg: String| RuntimeError::node(node, &format!("Backward[{op_name}]"), msg);
    check_rule(&spec.forward, &spec.wrt).map_err(err)?;
    let ctx = Bwd { spec, inputs };
    let grads: Vec<Option<ArrayD<f32>>> = match spec.forward.as_ref() {
        Op::Onnx(o) => {
            if movement::is_movement(o) {
                movement::vjp(o, &ctx)
            } else if linalg::is_linalg(o) {
                linalg::vjp(o, &ctx)
            } else if reduce::is_reduce(o) {
                reduce::vjp(o, &ctx)
            } else {
                elementwise::vjp(o, &ctx)
            }
        }
        Op::RmsNorm(s) => norms::rms_norm_vjp(&ctx, s.eps),
        Op::L2Norm { heads, eps } => norms::l2_norm_vjp(&ctx, *heads, *eps),
        Op::GatedRmsNorm { heads, eps } => norms::gated_rms_norm_vjp(&ctx, *heads, *eps),
        Op::SwiGlu => mlp::swiglu_vjp(&ctx),
        Op::Embedding => embedding::vjp(&ctx),
        Op::DynamicConv(s) => dynamic_conv::vjp(&ctx, s),
        Op::LinearAttention(s) => linear_attention::vjp(&ctx, s),
        Op::Attention(s) => attention::vjp(&ctx, s),
        other => Err(format!("no backward rule for {}", other.name())),
    }
    .map_err(err)?;
    let mut out = Vec::with_capacity(spec.wrt.len());
    for (k, &slot) in spec.wrt.iter().enumerate() {
        let g = grads.get(slot).cloned().flatten().ok_or_else(|| err(format!("no gradient was computed for input {slot}")))?;
        let want = inputs.get(slot).copied().flatten().map(|v| v.shape().to_vec());
        if let Some(shape) = want {
            if g.shape() != shape.as_slice() {
                return Err(err(format!("gradient {k} of input {slot} has shape {:?}, the input {shape:?}", g.shape())));
            }
        }
        out.push(Value::f32(g));
    }
    Ok(out)
}

/// Whether `op` has a backward rule for the gradients of input slots `wrt`; the message
/// says why not (op without a rule, or an input that is not differentiable).
pub fn check_rule(op: &Op, wrt: &[usize]) -> R<()> {
    let refuse = |slot: usize, why: &str| Err(format!("input {slot} of {} is not differentiable: {why}", op.name()));
    match op {
        Op::Onnx(o) => {
            if movement::is_movement(o) {
                movement::check(o, wrt)
            } else if linalg::is_linalg(o) || reduce::is_reduce(o) {
                Ok(())
            } else {
                elementwise::check(o, wrt)
            }
        }
        Op::RmsNorm(_) | Op::L2Norm { .. } | Op::GatedRmsNorm { .. } | Op::SwiGlu => Ok(()),
        Op::Embedding => match wrt.iter().find(|&&s| s != 0) {
            Some(&s) => refuse(s, "token ids are integers"),
            None => Ok(()),
        },
        Op::DynamicConv(_) => Ok(()),
        Op::LinearAttention(s) => linear_attention::check(s, wrt),
        Op::Attention(s) => attention::check(s, wrt),
        Op::JetBlock(_) => Err("no backward rule for the fused JetBlock op: differentiate the decomposed block (the autodiff pass unfuses it first)".into()),
        Op::Switch { .. } => Err("a supernet Switch cannot be differentiated: resolve the path first (place)".into()),
        Op::Backward(_) => Err("second-order gradients are not supported".into()),
        Op::Input | Op::Const(_) => Ok(()),
    }
}
