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
    let mut beta = floats(inputs, LinearAttentionSpec::BETA, "beta")?;
    check_widths(spec, b, t, decay.as_deref(), &mut beta)?;
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
        UpdateRule::GatedDeltaVector => {
            let (g, beta) = (need(&decay, "decay")?, need(&beta, "beta")?);
            let x = linear::gated_delta::GatedDeltaInputs { q: &q, k: &k, v: &v, g: &g, beta: &beta, scale, initial_state: init };
            linear::gated_delta::gated_delta_per_key_recurrent(&dims, &x)
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

/// The decay and beta widths a rule reads, checked before any kernel runs: a shape the kernel
/// would read differently is an error, never a different computation. A beta of width 1
/// (one value per token, the standard op allows it) is broadcast over the heads.
fn check_widths(spec: &LinearAttentionSpec, b: usize, t: usize, decay: Option<&[f32]>, beta: &mut Option<std::borrow::Cow<'_, [f32]>>) -> R<()> {
    let (h, dk) = (spec.kv_heads, spec.dk);
    let rows = b * t;
    // As the standard: a rule that does not read an input forbids it.
    let gated = !matches!(spec.rule, UpdateRule::Linear | UpdateRule::Delta);
    let delta = matches!(spec.rule, UpdateRule::Delta | UpdateRule::GatedDelta | UpdateRule::GatedDeltaVector);
    if decay.is_some() && !gated {
        return Err(format!("the {} rule takes no decay input, but one is given", spec.rule.name()));
    }
    if beta.is_some() && !delta {
        return Err(format!("the {} rule takes no beta input, but one is given", spec.rule.name()));
    }
    if let Some(d) = decay {
        let per_key = matches!(spec.rule, UpdateRule::GatedVector | UpdateRule::GatedDeltaVector | UpdateRule::Dplr);
        let want = rows * h * if per_key { dk } else { 1 };
        if d.len() != want {
            return Err(format!(
                "decay has {} values; the {} rule reads {want} ([B={b}, T={t}, {}])",
                d.len(),
                spec.rule.name(),
                if per_key { format!("H*d_k={}", h * dk) } else { format!("H={h}") }
            ));
        }
    }
    if let Some(be) = beta.as_deref() {
        if be.len() == rows && h > 1 {
            let wide: Vec<f32> = be.iter().flat_map(|&v| std::iter::repeat_n(v, h)).collect();
            *beta = Some(std::borrow::Cow::Owned(wide));
        } else if be.len() != rows * h {
            return Err(format!("beta has {} values; expected [B={b}, T={t}, H={h}] or [B, T, 1]", be.len()));
        }
    }
    Ok(())
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

#[cfg(test)]
mod tests {
    use super::*;

    fn val(shape: &[usize], f: impl Fn(usize) -> f32) -> Value {
        let n = shape.iter().product();
        Value::f32(ArrayD::from_shape_vec(IxDyn(shape), (0..n).map(f).collect()).expect("shape"))
    }

    fn spec(rule: UpdateRule) -> LinearAttentionSpec {
        LinearAttentionSpec { rule, q_heads: 2, kv_heads: 2, dk: 3, dv: 2, scale: 0.5, chunk: 0 }
    }

    #[test]
    fn beta_of_width_one_is_broadcast_over_heads() {
        let (b, t, h) = (1, 4, 2);
        let q = val(&[b, t, h * 3], |i| ((i * 7) % 5) as f32 * 0.1 - 0.2);
        let k = val(&[b, t, h * 3], |i| ((i * 3) % 7) as f32 * 0.1 - 0.3);
        let v = val(&[b, t, h * 2], |i| (i % 4) as f32 * 0.2 - 0.3);
        let g = val(&[b, t, h], |i| -0.1 * (i % 3) as f32);
        let narrow = val(&[b, t, 1], |i| 0.2 + 0.1 * i as f32);
        let wide = val(&[b, t, h], |i| 0.2 + 0.1 * (i / h) as f32);
        let run = |beta: &Value| {
            let ins = [Some(&q), Some(&k), Some(&v), None, Some(&g), Some(beta)];
            linear_attention(&spec(UpdateRule::GatedDelta), &ins).expect("runs")
        };
        assert_eq!(run(&narrow), run(&wide));
    }

    /// The per-key gated delta rule against the f64 per-token oracle of the backward module
    /// (an independent implementation of the same recurrence), with GQA and an initial state;
    /// and with every key row's gate equal, it is the per-head rule.
    #[test]
    fn per_key_gated_delta_matches_the_f64_oracle() {
        use crate::grad::linear_attention::{head_forward, Decay, HeadInputs};
        let (b, t, hq, h, dk, dv) = (2, 5, 4, 2, 3, 2);
        let f = |i: usize, a: usize, m: usize| ((i * a) % m) as f32 / m as f32 - 0.5;
        let q = val(&[b, t, hq * dk], |i| f(i, 7, 11));
        let k = val(&[b, t, h * dk], |i| f(i, 5, 13));
        let v = val(&[b, t, h * dv], |i| f(i, 3, 7));
        let s0 = val(&[b, h, dk, dv], |i| 0.3 * f(i, 5, 9));
        let g = val(&[b, t, h * dk], |i| -0.05 - 0.4 * (f(i, 7, 17) + 0.5));
        let beta = val(&[b, t, h], |i| 0.2 + 0.6 * (f(i, 3, 5) + 0.5));
        let sp = LinearAttentionSpec { rule: UpdateRule::GatedDeltaVector, q_heads: hq, kv_heads: h, dk, dv, scale: 0.7, chunk: 64 };
        let out = linear_attention(&sp, &[Some(&q), Some(&k), Some(&v), Some(&s0), Some(&g), Some(&beta)]).expect("runs");
        let flat = |x: &Value| x.as_f32().expect("f32").iter().map(|&x| x as f64).collect::<Vec<f64>>();
        let (qf, kf, vf, sf, gf, bf) = (flat(&q), flat(&k), flat(&v), flat(&s0), flat(&g), flat(&beta));
        let (o, st) = (flat(&out[0]), flat(&out[1]));
        let group = hq / h;
        for bi in 0..b {
            for hh in 0..h {
                let rows = |x: &[f64], heads: usize, w: usize, head: usize| -> Vec<f64> {
                    (0..t).flat_map(|ti| x[((bi * t + ti) * heads + head) * w..][..w].to_vec()).collect()
                };
                let qh: Vec<f64> = (0..group).flat_map(|r| rows(&qf, hq, dk, hh * group + r)).collect();
                let (kh, vh, gh, bh) = (rows(&kf, h, dk, hh), rows(&vf, h, dv, hh), rows(&gf, h, dk, hh), rows(&bf, h, 1, hh));
                let n = dk * dv;
                let h0 = &sf[(bi * h + hh) * n..][..n];
                let x = HeadInputs { t, dk, dv, group, scale: 0.7, q: &qh, k: &kh, v: &vh, decay: Decay::Vector(&gh), beta: Some(&bh), h0: Some(h0) };
                let (want_o, want_s) = head_forward(&x);
                for r in 0..group {
                    for ti in 0..t {
                        for j in 0..dv {
                            let got = o[((bi * t + ti) * hq + hh * group + r) * dv + j];
                            let want = want_o[(r * t + ti) * dv + j];
                            assert!((got - want).abs() < 1e-5, "o[{bi},{ti},{}] {got} vs {want}", hh * group + r);
                        }
                    }
                }
                for (i, w) in want_s.iter().enumerate() {
                    assert!((st[(bi * h + hh) * n + i] - w).abs() < 1e-5, "state {bi},{hh},{i}");
                }
            }
        }
        // One gate per head, repeated over the key rows: the per-head rule's values.
        let g1 = val(&[b, t, h], |i| -0.1 - 0.3 * (f(i, 7, 17) + 0.5));
        let wide = val(&[b, t, h * dk], |i| g1.as_f32().expect("f32").as_slice().expect("flat")[i / dk]);
        let per_key = linear_attention(&sp, &[Some(&q), Some(&k), Some(&v), Some(&s0), Some(&wide), Some(&beta)]).expect("runs");
        let per_head = linear_attention(&LinearAttentionSpec { rule: UpdateRule::GatedDelta, chunk: 0, ..sp }, &[Some(&q), Some(&k), Some(&v), Some(&s0), Some(&g1), Some(&beta)]).expect("runs");
        for (a, c) in flat(&per_key[0]).iter().zip(flat(&per_head[0])) {
            assert!((a - c).abs() < 1e-5, "{a} vs {c}");
        }
    }

    #[test]
    fn widths_the_rule_cannot_read_are_errors() {
        let (b, t, h) = (1, 3, 2);
        let q = val(&[b, t, h * 3], |i| i as f32 * 0.01);
        let v = val(&[b, t, h * 2], |i| i as f32 * 0.01);
        let per_key = val(&[b, t, h * 3], |_| -0.1);
        let beta = val(&[b, t, h], |_| 0.5);
        let e = linear_attention(&spec(UpdateRule::GatedDelta), &[Some(&q), Some(&q), Some(&v), None, Some(&per_key), Some(&beta)]).unwrap_err();
        assert!(e.contains("decay has 18 values; the gated_delta rule reads 6"), "{e}");
        let odd = val(&[b, t, 5], |_| 0.5);
        let e = linear_attention(&spec(UpdateRule::Delta), &[Some(&q), Some(&q), Some(&v), None, None, Some(&odd)]).unwrap_err();
        assert!(e.contains("beta has 15 values"), "{e}");
        let e = linear_attention(&spec(UpdateRule::Linear), &[Some(&q), Some(&q), Some(&v), None, Some(&beta), None]).unwrap_err();
        assert!(e.contains("the linear rule takes no decay"), "{e}");
        let e = linear_attention(&spec(UpdateRule::Gated), &[Some(&q), Some(&q), Some(&v), None, Some(&beta), Some(&beta)]).unwrap_err();
        assert!(e.contains("the gated rule takes no beta"), "{e}");
    }
}
