//! The kernel table: the one place that maps an op to the kernel that runs it, forward or
//! backward. ONNX ops go to [`crate::onnx_ops`] (its own (domain, op type) table), the raised
//! decoder ops and the fused mixers to their kernels, `Backward` nodes to [`crate::grad`].
//! The math those kernels share (SiLU, softmax, RoPE, ...) is defined once, in
//! [`crate::math`].
use jetc_ir::Op;

use crate::error::{Result, RuntimeError};
use crate::value::Value;
use crate::{decoder_ops, grad, jetblock, mixer_ops, onnx_ops};

/// Runs one node's op on its inputs (`None` for an omitted optional input); `num_outputs` is
/// how many outputs the graph uses.
pub fn eval(op: &Op, node: &str, inputs: &[Option<&Value>], num_outputs: usize) -> Result<Vec<Value>> {
    let err = |msg: String| RuntimeError::node(node, &op.name(), msg);
    match op {
        Op::Onnx(o) => onnx_ops::eval(o, node, inputs, num_outputs),
        Op::Backward(b) => grad::eval(b, node, inputs),
        Op::Embedding => decoder_ops::embedding(inputs).map_err(err),
        Op::RmsNorm(s) => decoder_ops::rms_norm(inputs, s.eps).map_err(err),
        Op::L2Norm { heads, eps } => decoder_ops::l2_norm(inputs, *heads, *eps).map_err(err),
        Op::GatedRmsNorm { heads, eps } => decoder_ops::gated_rms_norm(inputs, *heads, *eps).map_err(err),
        Op::SwiGlu => decoder_ops::swiglu(inputs).map_err(err),
        Op::Attention(spec) => decoder_ops::attention(spec, inputs).map_err(err),
        Op::LinearAttention(spec) => mixer_ops::linear_attention(spec, inputs).map_err(err),
        Op::DynamicConv(spec) => mixer_ops::dynamic_conv_op(spec, inputs).map_err(err),
        Op::JetBlock(spec) => jetblock::jetblock(spec, inputs).map_err(err),
        Op::Switch { .. } => Err(err("a supernet Switch is resolved by the executor (choices), not run as a kernel".into())),
        Op::Input | Op::Const(_) => Err(err("inputs and constants are bound, not run".into())),
    }
}
