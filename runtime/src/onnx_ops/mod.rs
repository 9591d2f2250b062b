//! Kernels for ONNX-level ops (default domain and the onnxruntime contrib ops that exported
//! decoders use), one module per op family. [`eval`] dispatches on (domain, op type);
//! kernels report problems as messages that are wrapped with the node and op name here.
//!
//! Families: `elementwise` (unary/binary math, comparisons, logic, Where, Clip, Gelu
//! variants), `cast`, `matmul` (MatMul, Gemm), `reduce` (Reduce*, ArgMax/ArgMin, CumSum),
//! `nn` (Softmax, LogSoftmax, LayerNormalization, RMSNormalization, Simplified/Skip
//! normalisations), `shape_ops` (reshaping, slicing, concatenation, constants), `gather`
//! (Gather*, Scatter*, NonZero), `rotary` (RotaryEmbedding), `attention` (Attention and the
//! shared attention kernel), `gqa` (com.microsoft GroupQueryAttention).

mod attention;
mod cast;
mod causal_conv;
pub(crate) mod common;
pub mod elementwise;
mod gather;
mod gqa;
pub(crate) mod matmul;
mod nn;
mod reduce;
mod rotary;
mod shape_ops;

use jetc_ir::OnnxOp;

use crate::error::{Result, RuntimeError};
use crate::value::Value;
use common::{Ctx, OpResult};
use elementwise::{Arith, Cmp, Logic, Unary};
use reduce::Reduce;

type Kernel = fn(&Ctx) -> OpResult;

/// Evaluates one ONNX node. `inputs[i]` is `None` for an omitted optional input.
pub fn eval(op: &OnnxOp, node: &str, inputs: &[Option<&Value>], num_outputs: usize) -> Result<Vec<Value>> {
    let Some(kernel) = lookup(op) else {
        return Err(RuntimeError::Unsupported { op: op.qualified_name(), node: node.to_string(), opset: op.opset });
    };
    let ctx = Ctx { op, inputs, num_outputs };
    let outs = kernel(&ctx).map_err(|msg| RuntimeError::node(node, &op.qualified_name(), msg))?;
    if outs.len() < num_outputs {
        return Err(RuntimeError::node(
            node,
            &op.qualified_name(),
            format!("{num_outputs} outputs are used but the op produces {}", outs.len()),
        ));
    }
    Ok(outs)
}

/// Whether a kernel exists for this op.
pub fn is_supported(op: &OnnxOp) -> bool {
    lookup(op).is_some()
}

fn lookup(op: &OnnxOp) -> Option<Kernel> {
    match op.domain.as_str() {
        "" | "ai.onnx" => default_domain(&op.op_type),
        "com.microsoft" => contrib(&op.op_type),
        jetc_ir::JETC_DOMAIN if op.op_type == "LinearAttention" => Some(linear_attention_onnx),
        _ => None,
    }
}

fn default_domain(op_type: &str) -> Option<Kernel> {
    let k: Kernel = match op_type {
        "Swish" => elementwise::swish,
        t if Unary::parse(t).is_some() => elementwise::unary_named,
        // Unary math.
        "Gelu" => elementwise::gelu,
        "LeakyRelu" => elementwise::leaky_relu,
        "Elu" => elementwise::elu,
        "HardSigmoid" => elementwise::hard_sigmoid,
        "HardSwish" => elementwise::hard_swish,
        "IsNaN" => elementwise::is_nan,
        "IsInf" => elementwise::is_inf,
        "Not" => elementwise::not,
        // Binary and variadic arithmetic.
        "Add" => |c| elementwise::arith(c, Arith::Add),
        "Sub" => |c| elementwise::arith(c, Arith::Sub),
        "Mul" => |c| elementwise::arith(c, Arith::Mul),
        "Div" => |c| elementwise::arith(c, Arith::Div),
        "Pow" => elementwise::pow,
        "Mod" => elementwise::modulo,
        "Max" => |c| elementwise::variadic(c, Arith::Max, false),
        "Min" => |c| elementwise::variadic(c, Arith::Min, false),
        "Sum" => |c| elementwise::variadic(c, Arith::Add, false),
        "Mean" => |c| elementwise::variadic(c, Arith::Add, true),
        "Clip" => elementwise::clip,
        // Comparisons and logic.
        "Equal" => |c| elementwise::compare(c, Cmp::Eq),
        "Less" => |c| elementwise::compare(c, Cmp::Lt),
        "Greater" => |c| elementwise::compare(c, Cmp::Gt),
        "LessOrEqual" => |c| elementwise::compare(c, Cmp::Le),
        "GreaterOrEqual" => |c| elementwise::compare(c, Cmp::Ge),
        "And" => |c| elementwise::logic(c, Logic::And),
        "Or" => |c| elementwise::logic(c, Logic::Or),
        "Xor" => |c| elementwise::logic(c, Logic::Xor),
        "Where" => elementwise::where_op,
        // Types.
        "Cast" => cast::cast,
        "CastLike" => cast::cast_like,
        // Linear algebra.
        "MatMul" => matmul::matmul,
        "Gemm" => matmul::gemm_op,
        // Reductions.
        "ReduceMean" => |c| reduce::reduce(c, Reduce::Mean),
        "ReduceSum" => |c| reduce::reduce(c, Reduce::Sum),
        "ReduceMax" => |c| reduce::reduce(c, Reduce::Max),
        "ReduceMin" => |c| reduce::reduce(c, Reduce::Min),
        "ReduceProd" => |c| reduce::reduce(c, Reduce::Prod),
        "ReduceSumSquare" => |c| reduce::reduce(c, Reduce::SumSquare),
        "ReduceL1" => |c| reduce::reduce(c, Reduce::L1),
        "ReduceL2" => |c| reduce::reduce(c, Reduce::L2),
        "ReduceLogSumExp" => |c| reduce::reduce(c, Reduce::LogSumExp),
        "ArgMax" => |c| reduce::arg_extreme(c, true),
        "ArgMin" => |c| reduce::arg_extreme(c, false),
        "CumSum" => reduce::cumsum,
        // Normalisation and softmax.
        "Softmax" => |c| nn::softmax(c, false),
        "LogSoftmax" => |c| nn::softmax(c, true),
        "LayerNormalization" => |c| nn::layer_norm(c, false),
        "RMSNormalization" | "SimplifiedLayerNormalization" => |c| nn::layer_norm(c, true),
        // Shapes and layout.
        "Identity" => shape_ops::identity,
        "Dropout" => shape_ops::dropout,
        "Reshape" => shape_ops::reshape,
        "Flatten" => shape_ops::flatten,
        "Squeeze" => shape_ops::squeeze,
        "Unsqueeze" => shape_ops::unsqueeze,
        "Transpose" => shape_ops::transpose,
        "Concat" => shape_ops::concat,
        "Split" => shape_ops::split,
        "Slice" => shape_ops::slice,
        "Expand" => shape_ops::expand,
        "Tile" => shape_ops::tile,
        "Pad" => shape_ops::pad,
        "Shape" => shape_ops::shape,
        "Size" => shape_ops::size,
        "Range" => shape_ops::range,
        "ConstantOfShape" => shape_ops::constant_of_shape,
        "Constant" => shape_ops::constant,
        "Trilu" => shape_ops::trilu,
        // Indexing.
        "Gather" => gather::gather,
        "GatherElements" => gather::gather_elements,
        "GatherND" => gather::gather_nd,
        "ScatterND" => gather::scatter_nd,
        "ScatterElements" | "Scatter" => gather::scatter_elements,
        "NonZero" => gather::non_zero,
        // Decoder building blocks (opset 23+).
        "RotaryEmbedding" => rotary::rotary_onnx,
        "Attention" => attention::attention_onnx,
        "LinearAttention" => linear_attention_onnx,
        "CausalConvWithState" => causal_conv::causal_conv_with_state,
        "SwiGLU" => elementwise::swiglu,
        _ => return None,
    };
    Some(k)
}

fn contrib(op_type: &str) -> Option<Kernel> {
    let k: Kernel = match op_type {
        "SimplifiedLayerNormalization" => |c| nn::layer_norm(c, true),
        "SkipSimplifiedLayerNormalization" => |c| nn::skip_layer_norm(c, true),
        "SkipLayerNormalization" => |c| nn::skip_layer_norm(c, false),
        "RotaryEmbedding" => rotary::rotary_contrib,
        "GroupQueryAttention" => gqa::group_query_attention,
        "Gelu" => elementwise::gelu,
        "FastGelu" => |c| elementwise::gelu_with_bias(c, true),
        "BiasGelu" => |c| elementwise::gelu_with_bias(c, false),
        "QuickGelu" => elementwise::quick_gelu,
        "Range" => shape_ops::range,
        "Trilu" => shape_ops::trilu,
        _ => return None,
    };
    Some(k)
}

/// The ONNX opset-27 `LinearAttention` op (3-D inputs [B, T, H*d]), and jetc's extension of it
/// (`ai.jetc`, rule `dplr`), through jetc's own kernel.
/// The ONNX `LinearAttention` node: computed in f32, then, as the standard says, `output` in
/// the query's dtype and `present_state` in the past state's (the query's without one).
fn linear_attention_onnx(ctx: &Ctx) -> OpResult {
    let spec = crate::mixer_ops::spec_from_onnx(ctx.op, ctx.inputs)?;
    let mut out = crate::mixer_ops::linear_attention(&spec, ctx.inputs)?;
    let q = ctx.input(jetc_ir::LinearAttentionSpec::Q)?.dtype;
    let state = ctx.inputs.get(jetc_ir::LinearAttentionSpec::STATE).copied().flatten().map_or(q, |s| s.dtype);
    for (v, to) in out.iter_mut().zip([q, state]) {
        if v.dtype.is_float() && to.is_float() {
            *v = cast::cast_value(v, to);
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::common::test_util::*;
    use super::*;

    #[test]
    fn dispatch_and_errors_carry_node_context() {
        assert!(is_supported(&op("Add", 14, &[])));
        assert!(is_supported(&ms_op("GroupQueryAttention", &[])));
        assert!(!is_supported(&op("GroupQueryAttention", 14, &[])));
        assert!(!is_supported(&op("Conv", 14, &[])));
        let mut other = op("Add", 1, &[]);
        other.domain = "com.example".into();
        assert!(!is_supported(&other));
        let e = eval(&op("Conv", 14, &[]), "conv1", &[], 1).unwrap_err();
        assert!(matches!(e, RuntimeError::Unsupported { .. }), "{e}");
        let e = eval(&op("Add", 14, &[]), "add7", &[Some(&f(&[1], &[1.0]))], 1).unwrap_err();
        let msg = e.to_string();
        assert!(msg.contains("add7") && msg.contains("Add") && msg.contains("input 1"), "{msg}");
        // More outputs requested than the op has.
        let e = eval(&op("Add", 14, &[]), "a", &[Some(&f(&[1], &[1.0])), Some(&f(&[1], &[1.0]))], 2).unwrap_err();
        assert!(e.to_string().contains("2 outputs"), "{e}");
    }
}
