//! The standard `CausalConvWithState` (opset 27): a depthwise causal 1-D convolution that
//! carries its last `k - 1` inputs between calls, the short convolution of Mamba2, Gated
//! DeltaNet and JetBlock's static part.
//!
//! Inputs: 0 `input` [B, C, L]; 1 `weight` [C, 1, k]; 2 `bias` [C] (optional); 3
//! `past_state` [B, C, k - 1] (optional; zeros). Attribute `activation`: `none` (default),
//! `silu` or its alias `swish`. Outputs: 0 `output` [B, C, L],
//! `y[b, c, t] = bias[c] + sum_j weight[c, 0, j] * x̃[b, c, t + j]` over the past state
//! followed by the input (`x̃`, length `k - 1 + L`), rounded to the input's dtype, then the
//! activation; 1 `present_state` [B, C, k - 1], the last `k - 1` positions of `x̃`.
use jetc_ir::DType;

use super::cast::round_float;
use super::common::{array, contiguous, Ctx, OpResult};
use crate::value::Value;

pub(crate) fn causal_conv_with_state(ctx: &Ctx) -> OpResult {
    let x = ctx.f32(0)?;
    let w = ctx.f32(1)?;
    let bias = ctx.opt_f32(2)?;
    let past = ctx.opt_f32(3)?;
    let silu = match ctx.attr_string("activation")?.unwrap_or("none") {
        "none" => false,
        "silu" | "swish" => true,
        other => return Err(format!("activation `{other}` is not one of none, silu, swish")),
    };
    let (b, c, l) = match x.shape() {
        &[b, c, l] => (b, c, l),
        s => return Err(format!("input must be [B, C, L], got {s:?}")),
    };
    let k = match w.shape() {
        &[wc, 1, k] if wc == c && k >= 1 => k,
        s => return Err(format!("weight must be [C={c}, 1, k >= 1], got {s:?}")),
    };
    if let Some(bs) = bias {
        if bs.shape() != [c] {
            return Err(format!("bias must be [C={c}], got {:?}", bs.shape()));
        }
    }
    if let Some(p) = past {
        if p.shape() != [b, c, k - 1] {
            return Err(format!("past_state must be [B={b}, C={c}, k-1={}], got {:?}", k - 1, p.shape()));
        }
    }
    let dtype = ctx.input(0)?.dtype;
    let (xs, ws) = (contiguous(x), contiguous(w));
    let bs = bias.map(contiguous);
    let ps = past.map(contiguous);
    let n = k - 1 + l;
    let mut y = vec![0f32; b * c * l];
    let mut state = vec![0f32; b * c * (k - 1)];
    let mut padded = vec![0f32; n];
    for bc in 0..b * c {
        let ch = bc % c;
        match &ps {
            Some(p) => padded[..k - 1].copy_from_slice(&p[bc * (k - 1)..(bc + 1) * (k - 1)]),
            None => padded[..k - 1].fill(0.0),
        }
        padded[k - 1..].copy_from_slice(&xs[bc * l..(bc + 1) * l]);
        let taps = &ws[ch * k..(ch + 1) * k];
        let b0 = bs.as_ref().map_or(0.0, |bs| bs[ch]);
        for t in 0..l {
            let conv: f32 = taps.iter().zip(&padded[t..t + k]).fold(b0, |acc, (wj, xj)| acc + wj * xj);
            let conv = round_float(conv, dtype);
            y[bc * l + t] = if silu { round_float(conv / (1.0 + (-conv).exp()), dtype) } else { conv };
        }
        state[bc * (k - 1)..(bc + 1) * (k - 1)].copy_from_slice(&padded[l..]);
    }
    let state_dtype = ctx.opt(3).map_or(dtype, |p| p.dtype);
    let tag = |a, d: DType| {
        let mut v = Value::f32(a);
        v.dtype = d;
        v
    };
    Ok(vec![tag(array(&[b, c, l], y)?, dtype), tag(array(&[b, c, k - 1], state)?, state_dtype)])
}
