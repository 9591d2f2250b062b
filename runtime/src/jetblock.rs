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

use crate::math::{silu, softplus};

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
    // The seven projections of x: one GEMM over the packed weight, or one each.
    let [mut q, mut k, u, mut hg, a_proj, b_proj, gate] = if s.packed {
        let generator = w_(5, "w2")?.shape().first().copied().unwrap_or(0);
        let widths = s.packed_widths(generator);
        let all = linear(&x, rows, w_(1, "w_in")?, None, "in_proj")?;
        let total: usize = widths.iter().sum();
        if all.len() != rows * total {
            return Err(format!("packed w_in gives {} columns, the block needs {total}", all.len() / rows.max(1)));
        }
        let mut parts: [Vec<f32>; 7] = widths.map(|w| Vec::with_capacity(rows * w));
        for row in all.chunks(total) {
            let mut start = 0;
            for (part, w) in parts.iter_mut().zip(widths) {
                part.extend_from_slice(&row[start..start + w]);
                start += w;
            }
        }
        parts
    } else {
        let names = [(1, "wq"), (2, "wk"), (3, "wv"), (4, "w1"), (7, "wa"), (10, "wb"), (11, "wg")];
        let mut parts: [Vec<f32>; 7] = Default::default();
        for (part, (slot, what)) in parts.iter_mut().zip(names) {
            *part = linear(&x, rows, w_(slot, what)?, None, what)?;
        }
        parts
    };
    q.par_iter_mut().for_each(|v| *v = silu(*v));
    l2norm(&mut q, dk, s.l2_eps);
    k.par_iter_mut().for_each(|v| *v = silu(*v));
    l2norm(&mut k, dk, s.l2_eps);
    hg.par_iter_mut().for_each(|v| *v = silu(*v));
    let b2 = w_(6, "b2")?;
    let ker = linear(&hg, rows, w_(5, "w2")?, Some(b2), "w2")?;
    let past_conv = inputs.get(JetBlockSpec::PAST_CONV).copied().flatten().and_then(|v| v.as_f32()).map(flat);
    let conv = dynamic_conv(&ConvDims { batch: b, seq: t, channels: h * dv, width: w }, &u, &ker, past_conv.as_deref())
        .map_err(|e| e.to_string())?;
    let mut beta = b_proj;
    beta.par_iter_mut().for_each(|v| *v = 1.0 / (1.0 + (-*v).exp()));
    let dt_bias = flat(w_(8, "dt_bias")?);
    let a = flat(w_(9, "a_log")?).iter().map(|v| -v.exp()).collect::<Vec<f32>>();
    if a.len() != h || dt_bias.len() != h {
        return Err(format!("a_log has {} and dt_bias {} entries for {h} heads", a.len(), dt_bias.len()));
    }
    let mut g = a_proj;
    g.par_chunks_mut(h).for_each(|row| {
        for ((v, ah), db) in row.iter_mut().zip(&a).zip(dt_bias.iter()) {
            *v = (softplus(*v + db) * ah).max(s.decay_floor);
        }
    });
    let past_state = inputs.get(JetBlockSpec::PAST_STATE).copied().flatten().and_then(|v| v.as_f32()).map(flat);
    let dims = Dims::new(b, t, h, dk, dv);
    let gi = GatedDeltaInputs { q: &q, k: &k, v: &conv.v, g: &g, beta: &beta, scale: s.scale, initial_state: past_state.as_deref() };
    let lin = if s.chunk == 0 { gated_delta_recurrent(&dims, &gi) } else { gated_delta_chunked(&dims, &gi, s.chunk) }
        .map_err(|e| e.to_string())?;
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
