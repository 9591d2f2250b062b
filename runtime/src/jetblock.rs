//! The fused `JetBlock` op's CPU kernel: the whole block (jet-nemotron.md §2) in one call,
//! built from the same pieces as the decomposed ops so the two agree to rounding.
use jetc_ir::JetBlockSpec;
use ndarray::{ArrayD, IxDyn};
use rayon::prelude::*;

use crate::decoder_ops::linear_f32 as linear;
use crate::linear::dynamic_conv::{dynamic_conv, ConvDims};
use crate::linear::gated_delta::{gated_delta_chunked, gated_delta_recurrent, GatedDeltaInputs};
use crate::linear::Dims;
use crate::value::Value;

type R<T> = std::result::Result<T, String>;

fn silu(v: f32) -> f32 {
    v / (1.0 + (-v).exp())
}

fn softplus(v: f32) -> f32 {
    if v > 20.0 { v } else { v.exp().ln_1p() }
}

fn arg<'a>(inputs: &[Option<&'a Value>], i: usize, what: &str) -> R<&'a ArrayD<f32>> {
    let v = inputs.get(i).copied().flatten().ok_or_else(|| format!("input {i} ({what}) is missing"))?;
    v.as_f32().ok_or_else(|| format!("{what} must be a float tensor"))
}

fn flat(a: &ArrayD<f32>) -> std::borrow::Cow<'_, [f32]> {
    match a.as_slice() {
        Some(s) => std::borrow::Cow::Borrowed(s),
        None => std::borrow::Cow::Owned(a.iter().copied().collect()),
    }
}

/// In place per-head L2 norm: x / sqrt(sum x^2 + eps).
fn l2norm(x: &mut [f32], d: usize, eps: f32) {
    x.par_chunks_mut(d).for_each(|h| {
        let inv = 1.0 / (h.iter().map(|v| v * v).sum::<f32>() + eps).sqrt();
        h.iter_mut().for_each(|v| *v *= inv);
    });
}

pub fn jetblock(s: &JetBlockSpec, inputs: &[Option<&Value>]) -> R<Vec<Value>> {
    let xa = arg(inputs, 0, "x")?;
    let shape = xa.shape().to_vec();
    if shape.len() != 3 {
        return Err(format!("x must be [B, T, hidden], got {shape:?}"));
    }
    let (b, t) = (shape[0], shape[1]);
    let rows = b * t;
    let (h, dk, dv, w) = (s.heads, s.dk, s.dv, s.width);
    let x = flat(xa);
    let w_ = |i: usize, what: &str| arg(inputs, i, what);
    let mut q = linear(&x, rows, w_(1, "wq")?, None, "q")?;
    q.par_iter_mut().for_each(|v| *v = silu(*v));
    l2norm(&mut q, dk, s.l2_eps);
    let mut k = linear(&x, rows, w_(2, "wk")?, None, "k")?;
    k.par_iter_mut().for_each(|v| *v = silu(*v));
    l2norm(&mut k, dk, s.l2_eps);
    let u = linear(&x, rows, w_(3, "wv")?, None, "v")?;
    let mut hg = linear(&x, rows, w_(4, "w1")?, None, "w1")?;
    hg.par_iter_mut().for_each(|v| *v = silu(*v));
    let b2 = w_(6, "b2")?;
    let ker = linear(&hg, rows, w_(5, "w2")?, Some(b2), "w2")?;
    let past_conv = inputs.get(JetBlockSpec::PAST_CONV).copied().flatten().and_then(|v| v.as_f32()).map(flat);
    let conv = dynamic_conv(&ConvDims { batch: b, seq: t, channels: h * dv, width: w }, &u, &ker, past_conv.as_deref())
        .map_err(|e| e.to_string())?;
    let mut beta = linear(&x, rows, w_(10, "wb")?, None, "b")?;
    beta.par_iter_mut().for_each(|v| *v = 1.0 / (1.0 + (-*v).exp()));
    let dt_bias = w_(8, "dt_bias")?;
    let a = flat(w_(9, "a_log")?).iter().map(|v| -v.exp()).collect::<Vec<f32>>();
    let mut g = linear(&x, rows, w_(7, "wa")?, Some(dt_bias), "a")?;
    if a.len() != h {
        return Err(format!("a_log has {} entries for {h} heads", a.len()));
    }
    g.par_chunks_mut(h).for_each(|row| {
        for (v, ah) in row.iter_mut().zip(&a) {
            *v = (softplus(*v) * ah).max(s.decay_floor);
        }
    });
    let past_state = inputs.get(JetBlockSpec::PAST_STATE).copied().flatten().and_then(|v| v.as_f32()).map(flat);
    let dims = Dims::new(b, t, h, dk, dv);
    let gi = GatedDeltaInputs { q: &q, k: &k, v: &conv.v, g: &g, beta: &beta, scale: s.scale, initial_state: past_state.as_deref() };
    let lin = if s.chunk == 0 { gated_delta_recurrent(&dims, &gi) } else { gated_delta_chunked(&dims, &gi, s.chunk) }
        .map_err(|e| e.to_string())?;
    let gate = linear(&x, rows, w_(11, "wg")?, None, "g")?;
    let onorm = flat(w_(12, "o_norm")?);
    let mut o = lin.o;
    o.par_chunks_mut(dv).zip(gate.par_chunks(dv)).for_each(|(head, gh)| {
        let inv = 1.0 / (head.iter().map(|v| v * v).sum::<f32>() / dv as f32 + s.norm_eps).sqrt();
        for ((v, wi), gi) in head.iter_mut().zip(onorm.iter()).zip(gh) {
            *v = *v * inv * wi * silu(*gi);
        }
    });
    let y = linear(&o, rows, w_(13, "wo")?, None, "o")?;
    let hidden = y.len() / rows.max(1);
    let arr = |shape: Vec<usize>, data: Vec<f32>| ArrayD::from_shape_vec(IxDyn(&shape), data).map(Value::f32).map_err(|e| e.to_string());
    Ok(vec![arr(vec![b, t, hidden], y)?, arr(vec![b, h * dv, w], conv.cache)?, arr(vec![b, h, dk, dv], lin.state)?])
}
