//! Kernels for the linear-mixer ops of the IR (`LinearAttention`, `DynamicConv`), on top of
//! the reference math in [`crate::linear`].
use jetc_ir::{DynamicConvSpec, LinearAttentionSpec, OnnxOp, UpdateRule};
use ndarray::{ArrayD, IxDyn};

use crate::linear::dynamic_conv::{dynamic_conv, ConvDims};
use crate::linear::{self, Dims};
use crate::value::Value;

type R<T> = std::result::Result<T, String>;

fn floats<'a>(inputs: &[Option<&'a Value>], i: usize, what: &str) -> R<Option<std::borrow::Cow<'a, [f32]>>> {
    let Some(v) = inputs.get(i).copied().flatten() else { return Ok(None) };
    let a = v.as_f32().ok_or_else(|| format!("{what} must be a float tensor, got {}", v.dtype))?;
    Ok(Some(match a.as_slice() {
        Some(s) => std::borrow::Cow::Borrowed(s),
        None => std::borrow::Cow::Owned(a.iter().copied().collect()),
    }))
}

fn required<'a>(inputs: &[Option<&'a Value>], i: usize, what: &str) -> R<std::borrow::Cow<'a, [f32]>> {
    floats(inputs, i, what)?.ok_or_else(|| format!("input {i} ({what}) is missing"))
}

fn value(shape: &[usize], data: Vec<f32>) -> R<Value> {
    ArrayD::from_shape_vec(IxDyn(shape), data).map(Value::f32).map_err(|e| e.to_string())
}

pub fn linear_attention(spec: &LinearAttentionSpec, inputs: &[Option<&Value>]) -> R<Vec<Value>> {
    let qv = inputs.first().copied().flatten().ok_or("input 0 (q) is missing")?;
    let shape = qv.shape();
    if shape.len() != 3 || shape[2] != spec.q_heads * spec.dk {
        return Err(format!("q {shape:?} does not fit [B, T, {}x{}]", spec.q_heads, spec.dk));
    }
    let (b, t) = (shape[0], shape[1]);
    let dims = Dims::new(b, t, spec.kv_heads, spec.dk, spec.dv).with_heads(spec.q_heads, spec.kv_heads, spec.kv_heads);
    let q = required(inputs, LinearAttentionSpec::Q, "q")?;
    let k = required(inputs, LinearAttentionSpec::K, "k")?;
    let v = required(inputs, LinearAttentionSpec::V, "v")?;
    let state = floats(inputs, LinearAttentionSpec::STATE, "past_state")?;
    let decay = floats(inputs, LinearAttentionSpec::DECAY, "decay")?;
    let beta = floats(inputs, LinearAttentionSpec::BETA, "beta")?;
    let need = |x: &Option<std::borrow::Cow<'_, [f32]>>, what: &str| -> R<Vec<f32>> {
        x.as_deref().map(|s| s.to_vec()).ok_or_else(|| format!("the {} rule needs `{what}`", spec.rule.name()))
    };
    let (scale, init, chunk) = (spec.scale, state.as_deref(), spec.chunk);
    let zeros = vec![0.0f32; b * t * spec.kv_heads];
    let out = match spec.rule {
        UpdateRule::Linear | UpdateRule::Gated => {
            let g = if spec.rule == UpdateRule::Gated { need(&decay, "decay")? } else { zeros };
            let x = linear::gla::SimpleGlaInputs { q: &q, k: &k, v: &v, g: &g, scale, initial_state: init };
            if chunk == 0 { linear::gla::simple_gla_recurrent(&dims, &x) } else { linear::gla::simple_gla_chunked(&dims, &x, chunk) }
        }
        UpdateRule::GatedVector => {
            let gk = need(&decay, "decay")?;
            let x = linear::gla::GlaInputs { q: &q, k: &k, v: &v, gk: &gk, scale, initial_state: init };
            if chunk == 0 { linear::gla::gla_recurrent(&dims, &x) } else { linear::gla::gla_chunked(&dims, &x, chunk) }
        }
        UpdateRule::Delta => {
            let beta = need(&beta, "beta")?;
            let x = linear::delta::DeltaInputs { q: &q, k: &k, v: &v, beta: &beta, scale, initial_state: init };
            if chunk == 0 { linear::delta::delta_rule_recurrent(&dims, &x) } else { linear::delta::delta_rule_chunked(&dims, &x, chunk) }
        }
        UpdateRule::GatedDelta => {
            let (g, beta) = (need(&decay, "decay")?, need(&beta, "beta")?);
            let x = linear::gated_delta::GatedDeltaInputs { q: &q, k: &k, v: &v, g: &g, beta: &beta, scale, initial_state: init };
            if chunk == 0 {
                linear::gated_delta::gated_delta_recurrent(&dims, &x)
            } else {
                linear::gated_delta::gated_delta_chunked(&dims, &x, chunk)
            }
        }
        UpdateRule::Dplr => {
            let w = need(&decay, "decay")?;
            let a = required(inputs, LinearAttentionSpec::A, "a")?;
            let bb = required(inputs, LinearAttentionSpec::B, "b")?;
            let x = linear::rwkv7::Rwkv7Inputs { r: &q, w: &w, k: &k, v: &v, a: &a, b: &bb, scale, initial_state: init };
            if chunk == 0 { linear::rwkv7::rwkv7_recurrent(&dims, &x) } else { linear::rwkv7::rwkv7_chunked(&dims, &x, chunk) }
        }
    }
    .map_err(|e| e.to_string())?;
    let heads_out = spec.q_heads.max(spec.kv_heads);
    let mut o = value(&[b, t, heads_out * spec.dv], out.o)?;
    o.dtype = qv.dtype;
    Ok(vec![o, value(&[b, spec.kv_heads, spec.dk, spec.dv], out.state)?])
}

pub fn dynamic_conv_op(spec: &DynamicConvSpec, inputs: &[Option<&Value>]) -> R<Vec<Value>> {
    let uv = inputs.first().copied().flatten().ok_or("input 0 (u) is missing")?;
    let shape = uv.shape();
    if shape.len() != 3 {
        return Err(format!("u must be [B, T, C], got {shape:?}"));
    }
    let dims = ConvDims { batch: shape[0], seq: shape[1], channels: shape[2], width: spec.width };
    let u = required(inputs, 0, "u")?;
    let ker = required(inputs, 1, "kernels")?;
    let past = floats(inputs, 2, "past")?;
    let out = dynamic_conv(&dims, &u, &ker, past.as_deref()).map_err(|e| e.to_string())?;
    let mut v = value(shape, out.v)?;
    v.dtype = uv.dtype;
    Ok(vec![v, value(&[dims.batch, dims.channels, dims.width], out.cache)?])
}

/// The spec of an ONNX `LinearAttention` node from the widths of its 3-D inputs.
pub fn spec_from_onnx(op: &OnnxOp, inputs: &[Option<&Value>]) -> R<LinearAttentionSpec> {
    let width = |i: usize| -> R<Option<usize>> {
        let Some(v) = inputs.get(i).copied().flatten() else { return Ok(None) };
        match v.shape() {
            [_, _, w] => Ok(Some(*w)),
            s => Err(format!("input {i} must be 3-D [B, T, H*d], got {s:?}")),
        }
    };
    let q = width(LinearAttentionSpec::Q)?.ok_or("input 0 (query) is missing")?;
    let v = width(LinearAttentionSpec::V)?.ok_or("input 2 (value) is missing")?;
    LinearAttentionSpec::from_onnx(op, q, v, width(LinearAttentionSpec::DECAY)?)
}
