//! Every backward rule the executor runs, checked at the op level through the executor's own
//! forward kernels:
//! - linear and movement ops by the transpose identity <A x, y> = <x, A^T y> (exact up to
//!   rounding, so the tolerance is tight);
//! - nonlinear ops by central finite differences of the f32 forward kernel (the loss
//!   <f(x), r> is accumulated in f64, so only the perturbed element's rounding remains).
//!
//! The float64 finite-difference checks of the fused math are in `grad_fused.rs`.
use jetc_ir::{Attr, BackwardSpec, DynamicConvSpec, LinearAttentionSpec, OnnxOp, Op, RmsNormSpec, UpdateRule};
use jetc_runtime::{grad, kernels, Value};
use ndarray::{ArrayD, IxDyn};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

fn rnd(rng: &mut StdRng, shape: &[usize], lo: f32, hi: f32) -> Value {
    let n = shape.iter().product();
    Value::f32(ArrayD::from_shape_vec(IxDyn(shape), (0..n).map(|_| rng.random_range(lo..hi)).collect()).unwrap())
}

fn ints(shape: &[usize], v: &[i64]) -> Value {
    Value::i64(ArrayD::from_shape_vec(IxDyn(shape), v.to_vec()).unwrap())
}

fn forward(op: &Op, inputs: &[Option<Value>], n_out: usize) -> Vec<Value> {
    let args: Vec<Option<&Value>> = inputs.iter().map(|v| v.as_ref()).collect();
    kernels::eval(op, "fwd", &args, n_out).unwrap_or_else(|e| panic!("{e}"))
}

fn backward(op: &Op, inputs: &[Option<Value>], cot: &[Option<Value>], wrt: &[usize]) -> Vec<ArrayD<f32>> {
    let spec = BackwardSpec { forward: Box::new(op.clone()), forward_inputs: inputs.len(), forward_outputs: cot.len(), wrt: wrt.to_vec() };
    let all: Vec<Option<Value>> = inputs.iter().cloned().chain(cot.iter().cloned()).collect();
    let args: Vec<Option<&Value>> = all.iter().map(|v| v.as_ref()).collect();
    grad::eval(&spec, "bwd", &args).unwrap_or_else(|e| panic!("{e}")).into_iter().map(|v| v.as_f32().unwrap().clone()).collect()
}

fn dot(a: &Value, b: &Value) -> f64 {
    a.as_f32().unwrap().iter().zip(b.as_f32().unwrap().iter()).map(|(&x, &y)| x as f64 * y as f64).sum()
}

/// Random cotangents for the float outputs that matter (the first `n_out`).
fn cotangents(rng: &mut StdRng, outs: &[Value], n_out: usize) -> Vec<Option<Value>> {
    outs.iter().take(n_out).map(|o| o.as_f32().map(|a| rnd(rng, a.shape(), -1.0, 1.0))).collect()
}

fn loss(op: &Op, inputs: &[Option<Value>], cot: &[Option<Value>]) -> f64 {
    let outs = forward(op, inputs, cot.len());
    outs.iter().zip(cot).filter_map(|(o, c)| c.as_ref().map(|c| dot(o, c))).sum()
}

/// Finite differences of the forward kernel against the backward for inputs `wrt`.
fn check_fd(op: &Op, inputs: Vec<Option<Value>>, n_out: usize, wrt: &[usize], tol: f64, seed: u64) {
    let mut rng = StdRng::seed_from_u64(seed);
    let outs = forward(op, &inputs, n_out);
    let cot = cotangents(&mut rng, &outs, n_out);
    let grads = backward(op, &inputs, &cot, wrt);
    let h = 1e-3f32;
    // Errors relative to the op's largest gradient (an input whose true gradient is ~0, such
    // as a key bias under softmax's shift invariance, is judged against the op's scale).
    let scale = grads.iter().flat_map(|g| g.iter()).fold(1e-2f64, |m, v| m.max(v.abs() as f64));
    for (g, &slot) in grads.iter().zip(wrt) {
        let x = inputs[slot].as_ref().unwrap().as_f32().unwrap().clone();
        let mut worst = 0f64;
        for i in 0..x.len() {
            let mut p = inputs.clone();
            let mut xp = x.clone();
            xp.as_slice_mut().unwrap()[i] += h;
            p[slot] = Some(Value::f32(xp.clone()));
            let up = loss(op, &p, &cot);
            xp.as_slice_mut().unwrap()[i] -= 2.0 * h;
            p[slot] = Some(Value::f32(xp));
            let down = loss(op, &p, &cot);
            let num = (up - down) / (2.0 * h as f64);
            worst = worst.max((num - g.as_slice().unwrap()[i] as f64).abs() / scale);
        }
        assert!(worst < tol, "{} input {slot}: finite-difference error {worst:.2e} (tol {tol:.0e})", op.name());
    }
}

/// <A x, y> = <x, A^T y> for an op affine in input `slot` (the others held fixed; A x is
/// f(x) - f(0), so Concat, Where and Gemm's bias are covered too).
fn check_adjoint(op: &Op, inputs: Vec<Option<Value>>, n_out: usize, slot: usize, seed: u64) {
    let mut rng = StdRng::seed_from_u64(seed);
    let outs = forward(op, &inputs, n_out);
    let ys = cotangents(&mut rng, &outs, n_out);
    let mut zeroed = inputs.clone();
    zeroed[slot] = zeroed[slot].as_ref().map(|v| Value::f32(ArrayD::zeros(IxDyn(v.shape()))));
    let base = forward(op, &zeroed, n_out);
    let lhs: f64 = outs.iter().zip(&base).zip(&ys).filter_map(|((o, z), y)| y.as_ref().map(|y| dot(o, y) - dot(z, y))).sum();
    let g = backward(op, &inputs, &ys, &[slot]).remove(0);
    let x = inputs[slot].as_ref().unwrap();
    let rhs = dot(x, &Value::f32(g));
    assert!((lhs - rhs).abs() <= 1e-5 * lhs.abs().max(rhs.abs()).max(1.0), "{}: <Ax,y> = {lhs} but <x,A^T y> = {rhs}", op.name());
}

fn onnx(t: &str, opset: i64, attrs: &[(&str, Attr)]) -> Op {
    let mut o = OnnxOp::new(t, opset);
    for (k, v) in attrs {
        o = o.with_attr(k, v.clone());
    }
    Op::Onnx(o)
}

#[test]
fn unary_rules_match_finite_differences() {
    let mut rng = StdRng::seed_from_u64(1);
    let positive = ["Log", "Sqrt", "Reciprocal"];
    for t in ["Neg", "Exp", "Log", "Sqrt", "Reciprocal", "Sigmoid", "Tanh", "Softplus", "Relu", "Abs", "Sin", "Cos", "Erf", "Cast"] {
        let (lo, hi) = if positive.contains(&t) { (0.5, 2.0) } else { (-2.0, 2.0) };
        let mut x = rnd(&mut rng, &[3, 5], lo, hi);
        if matches!(t, "Relu" | "Abs") {
            // Keep away from the kink.
            if let Some(a) = x.as_f32().cloned() {
                x = Value::f32(a.mapv(|v| if v.abs() < 0.1 { v + 0.3 } else { v }));
            }
        }
        let attrs: Vec<(&str, Attr)> = if t == "Cast" { vec![("to", Attr::Int(1))] } else { vec![] };
        check_fd(&onnx(t, 17, &attrs), vec![Some(x)], 1, &[0], 2e-3, 7);
    }
    for t in ["Softmax", "LogSoftmax"] {
        for axis in [-1i64, 0, 1] {
            let x = rnd(&mut rng, &[2, 3, 4], -2.0, 2.0);
            check_fd(&onnx(t, 13, &[("axis", Attr::Int(axis))]), vec![Some(x)], 1, &[0], 2e-3, 8);
        }
    }
}

#[test]
fn binary_rules_sum_over_broadcast_axes() {
    let mut rng = StdRng::seed_from_u64(2);
    let shapes: [(&[usize], &[usize]); 4] = [(&[2, 3, 4], &[3, 1]), (&[4], &[2, 3, 4]), (&[2, 1, 4], &[1, 3, 1]), (&[2, 3], &[])];
    for t in ["Add", "Sub", "Mul", "Div", "Max", "Min"] {
        for (sa, sb) in shapes {
            let a = rnd(&mut rng, sa, -2.0, 2.0);
            let (lo, hi) = if t == "Div" { (0.5, 2.0) } else { (-2.0, 2.0) };
            let b = rnd(&mut rng, sb, lo, hi);
            check_fd(&onnx(t, 14, &[]), vec![Some(a), Some(b)], 1, &[0, 1], 2e-3, 9);
        }
    }
    // x^c with a constant exponent.
    let x = rnd(&mut rng, &[3, 4], 0.5, 2.0);
    let c = Value::f32(ArrayD::from_elem(IxDyn(&[]), 2.5));
    check_fd(&onnx("Pow", 15, &[]), vec![Some(x), Some(c)], 1, &[0], 2e-3, 10);
}

#[test]
fn matmul_and_gemm_are_adjoint_in_each_operand() {
    let mut rng = StdRng::seed_from_u64(3);
    let cases: [(&[usize], &[usize]); 6] = [(&[2, 3, 4], &[4, 5]), (&[2, 1, 3, 4], &[3, 4, 2]), (&[4], &[4, 3]), (&[3, 4], &[4]), (&[5, 4], &[4, 6]), (&[4], &[4])];
    for (sa, sb) in cases {
        let a = rnd(&mut rng, sa, -1.0, 1.0);
        let b = rnd(&mut rng, sb, -1.0, 1.0);
        for slot in [0, 1] {
            check_adjoint(&onnx("MatMul", 13, &[]), vec![Some(a.clone()), Some(b.clone())], 1, slot, 11);
        }
    }
    for (ta, tb) in [(0, 0), (1, 0), (0, 1), (1, 1)] {
        let a = rnd(&mut rng, if ta == 1 { &[4, 3] } else { &[3, 4] }, -1.0, 1.0);
        let b = rnd(&mut rng, if tb == 1 { &[5, 4] } else { &[4, 5] }, -1.0, 1.0);
        let c = rnd(&mut rng, &[5], -1.0, 1.0);
        let op = onnx("Gemm", 13, &[("transA", Attr::Int(ta)), ("transB", Attr::Int(tb)), ("alpha", Attr::Float(0.7)), ("beta", Attr::Float(1.3))]);
        for slot in [0, 1, 2] {
            check_adjoint(&op, vec![Some(a.clone()), Some(b.clone()), Some(c.clone())], 1, slot, 12);
        }
    }
}

#[test]
fn movement_and_reduction_ops_are_adjoint() {
    let mut rng = StdRng::seed_from_u64(4);
    let x = rnd(&mut rng, &[2, 3, 4], -1.0, 1.0);
    let cases: Vec<(Op, Vec<Option<Value>>, usize, Vec<usize>)> = vec![
        (onnx("Identity", 13, &[]), vec![Some(x.clone())], 1, vec![0]),
        (onnx("Transpose", 13, &[("perm", Attr::Ints(vec![2, 0, 1]))]), vec![Some(x.clone())], 1, vec![0]),
        (onnx("Reshape", 14, &[]), vec![Some(x.clone()), Some(ints(&[2], &[4, -1]))], 1, vec![0]),
        (onnx("Unsqueeze", 13, &[]), vec![Some(x.clone()), Some(ints(&[2], &[0, 3]))], 1, vec![0]),
        (onnx("Squeeze", 13, &[]), vec![Some(rnd(&mut rng, &[2, 1, 4], -1.0, 1.0)), Some(ints(&[1], &[1]))], 1, vec![0]),
        (onnx("Flatten", 13, &[("axis", Attr::Int(2))]), vec![Some(x.clone())], 1, vec![0]),
        (
            onnx("Slice", 13, &[]),
            vec![Some(x.clone()), Some(ints(&[2], &[3, 0])), Some(ints(&[2], &[-5, 2])), Some(ints(&[2], &[2, 1])), Some(ints(&[2], &[-2, 1]))],
            1,
            vec![0],
        ),
        (
            onnx("Concat", 13, &[("axis", Attr::Int(1))]),
            vec![Some(x.clone()), Some(rnd(&mut rng, &[2, 2, 4], -1.0, 1.0)), Some(x.clone())],
            1,
            vec![0, 1, 2],
        ),
        (onnx("Split", 18, &[("axis", Attr::Int(2)), ("num_outputs", Attr::Int(2))]), vec![Some(x.clone())], 2, vec![0]),
        (onnx("Gather", 13, &[("axis", Attr::Int(1))]), vec![Some(x.clone()), Some(ints(&[2, 2], &[0, 2, 2, -1]))], 1, vec![0]),
        (onnx("Expand", 13, &[]), vec![Some(rnd(&mut rng, &[3, 1], -1.0, 1.0)), Some(ints(&[3], &[2, 3, 4]))], 1, vec![0]),
        (onnx("Tile", 13, &[]), vec![Some(x.clone()), Some(ints(&[3], &[1, 2, 1]))], 1, vec![0]),
        (
            onnx("Where", 16, &[]),
            vec![
                Some(Value::bool(ArrayD::from_shape_fn(IxDyn(&[3, 4]), |i| (i[0] + i[1]) % 2 == 0))),
                Some(x.clone()),
                Some(rnd(&mut rng, &[4], -1.0, 1.0)),
            ],
            1,
            vec![1, 2],
        ),
        (onnx("ReduceSum", 13, &[("keepdims", Attr::Int(0))]), vec![Some(x.clone()), Some(ints(&[2], &[0, -1]))], 1, vec![0]),
        (onnx("ReduceSum", 13, &[]), vec![Some(x.clone())], 1, vec![0]),
        (onnx("ReduceMean", 18, &[("keepdims", Attr::Int(1))]), vec![Some(x.clone()), Some(ints(&[1], &[1]))], 1, vec![0]),
        (onnx("ReduceMean", 13, &[("axes", Attr::Ints(vec![2])), ("keepdims", Attr::Int(0))]), vec![Some(x.clone())], 1, vec![0]),
    ];
    for (op, inputs, n_out, slots) in cases {
        for slot in slots {
            check_adjoint(&op, inputs.clone(), n_out, slot, 13);
        }
    }
}

#[test]
fn decoder_op_rules_match_finite_differences() {
    let mut rng = StdRng::seed_from_u64(5);
    let x = rnd(&mut rng, &[2, 3, 8], -1.5, 1.5);
    check_fd(&Op::RmsNorm(RmsNormSpec { eps: 1e-6 }), vec![Some(x.clone()), Some(rnd(&mut rng, &[8], 0.5, 1.5))], 1, &[0, 1], 2e-3, 20);
    check_fd(&Op::L2Norm { heads: 2, eps: 1e-6 }, vec![Some(x.clone())], 1, &[0], 2e-3, 21);
    check_fd(
        &Op::GatedRmsNorm { heads: 2, eps: 1e-5 },
        vec![Some(x.clone()), Some(rnd(&mut rng, &[4], 0.5, 1.5)), Some(rnd(&mut rng, &[2, 3, 8], -2.0, 2.0))],
        1,
        &[0, 1, 2],
        2e-3,
        22,
    );
    let w = |rng: &mut StdRng, s: &[usize]| rnd(rng, s, -0.5, 0.5);
    check_fd(&Op::SwiGlu, vec![Some(x.clone()), Some(w(&mut rng, &[8, 6])), Some(w(&mut rng, &[8, 6])), Some(w(&mut rng, &[6, 8]))], 1, &[0, 1, 2, 3], 2e-3, 23);
    check_adjoint(&Op::Embedding, vec![Some(w(&mut rng, &[5, 4])), Some(ints(&[2, 3], &[0, 4, 4, 1, -1, 0]))], 1, 0, 24);
    let u = rnd(&mut rng, &[2, 5, 3], -1.0, 1.0);
    check_fd(
        &Op::DynamicConv(DynamicConvSpec { width: 4 }),
        vec![Some(u), Some(rnd(&mut rng, &[2, 5, 12], -1.0, 1.0)), Some(rnd(&mut rng, &[2, 3, 4], -1.0, 1.0))],
        2,
        &[0, 1, 2],
        2e-3,
        25,
    );
}

/// The LinearAttention op (every trainable rule, GQA, initial state, both forward forms)
/// against finite differences of the executor's own forward kernels: this also checks that
/// the backward's recomputed forward is the executor's.
#[test]
fn linear_attention_op_matches_finite_differences() {
    let mut rng = StdRng::seed_from_u64(6);
    let (b, t, hq, hkv, dk, dv) = (2, 7, 4, 2, 3, 5);
    for rule in [UpdateRule::Linear, UpdateRule::Gated, UpdateRule::GatedVector, UpdateRule::Delta, UpdateRule::GatedDelta, UpdateRule::GatedDeltaVector] {
        for chunk in [0, 4] {
            let spec = LinearAttentionSpec { rule, q_heads: hq, kv_heads: hkv, dk, dv, scale: 0.6, chunk };
            let decay = match rule {
                UpdateRule::Gated | UpdateRule::GatedDelta => Some(rnd(&mut rng, &[b, t, hkv], -1.0, -0.05)),
                UpdateRule::GatedVector | UpdateRule::GatedDeltaVector => Some(rnd(&mut rng, &[b, t, hkv * dk], -1.0, -0.05)),
                _ => None,
            };
            let beta = matches!(rule, UpdateRule::Delta | UpdateRule::GatedDelta | UpdateRule::GatedDeltaVector).then(|| rnd(&mut rng, &[b, t, hkv], 0.1, 0.9));
            let mut wrt = vec![0, 1, 2, 3];
            if decay.is_some() {
                wrt.push(4);
            }
            if beta.is_some() {
                wrt.push(5);
            }
            let inputs = vec![
                Some(rnd(&mut rng, &[b, t, hq * dk], -0.7, 0.7)),
                Some(rnd(&mut rng, &[b, t, hkv * dk], -0.7, 0.7)),
                Some(rnd(&mut rng, &[b, t, hkv * dv], -1.0, 1.0)),
                Some(rnd(&mut rng, &[b, hkv, dk, dv], -0.5, 0.5)),
                decay,
                beta,
            ];
            check_fd(&Op::LinearAttention(spec), inputs, 2, &wrt, 3e-3, 30);
        }
    }
}

#[test]
fn non_differentiable_inputs_are_named() {
    let e = grad::check_rule(&Op::Embedding, &[1]).unwrap_err();
    assert!(e.contains("input 1") && e.contains("integers"), "{e}");
    let e = grad::check_rule(&onnx("Reshape", 14, &[]), &[1]).unwrap_err();
    assert!(e.contains("input 1"), "{e}");
    let e = grad::check_rule(&onnx("NonZero", 13, &[]), &[0]).unwrap_err();
    assert!(e.contains("NonZero"), "{e}");
    let spec = LinearAttentionSpec { rule: UpdateRule::Dplr, q_heads: 1, kv_heads: 1, dk: 2, dv: 2, scale: 1.0, chunk: 0 };
    assert!(grad::check_rule(&Op::LinearAttention(spec), &[0]).unwrap_err().contains("not trainable yet"));
}

/// RoPE tables for positions `p..p+t`: [B, T, width] (width = rotary_dim, or half of it).
fn rope_tables(b: usize, t: usize, p: usize, width: usize) -> (Value, Value) {
    let f = |trig: fn(f32) -> f32| {
        Value::f32(ArrayD::from_shape_fn(IxDyn(&[b, t, width]), |i| {
            let freq = 1.0 / 10000f32.powf((i[2] % (width / 2).max(1)) as f32 / width as f32);
            trig((p + i[1]) as f32 * freq + 0.1 * i[0] as f32)
        }))
    };
    (f(f32::cos), f(f32::sin))
}

/// The Attention op: projections with biases, GQA, RoPE (both styles, partial rotary, full
/// and half tables), q/k norms, soft-capping, windows, boolean and additive masks, a past
/// cache, and the present cache's cotangent.
#[test]
fn attention_op_matches_finite_differences() {
    use jetc_ir::{AttentionSpec as A, RopeStyle};
    let mut rng = StdRng::seed_from_u64(40);
    let (b, t, hid, h, kvh, d) = (2, 5, 8, 4, 2, 4);
    struct Case {
        rope: Option<(RopeStyle, usize, usize)>,
        norms: bool,
        softcap: Option<f32>,
        window: Option<usize>,
        mask: u8,
        past: usize,
        present_grad: bool,
    }
    let cases = [
        Case { rope: None, norms: false, softcap: None, window: None, mask: 0, past: 0, present_grad: false },
        Case { rope: Some((RopeStyle::HalfRotate, 4, 4)), norms: false, softcap: None, window: None, mask: 0, past: 0, present_grad: true },
        Case { rope: Some((RopeStyle::HalfRotate, 2, 1)), norms: true, softcap: None, window: Some(2), mask: 1, past: 0, present_grad: false },
        Case { rope: Some((RopeStyle::Interleaved, 4, 2)), norms: false, softcap: Some(2.0), window: None, mask: 2, past: 3, present_grad: true },
        Case { rope: Some((RopeStyle::Interleaved, 4, 4)), norms: true, softcap: Some(1.5), window: Some(3), mask: 2, past: 2, present_grad: false },
    ];
    for (n, cs) in cases.iter().enumerate() {
        let spec = A {
            heads: h,
            kv_heads: kvh,
            head_dim: d,
            scale: 0.5,
            rope: cs.rope.map(|r| r.0),
            rotary_dim: cs.rope.map_or(d, |r| r.1),
            causal: true,
            window: cs.window,
            qk_norm_eps: cs.norms.then_some(1e-6),
            softcap: cs.softcap,
        };
        let mut inputs: Vec<Option<Value>> = vec![None; A::NUM_INPUTS];
        inputs[A::X] = Some(rnd(&mut rng, &[b, t, hid], -1.0, 1.0));
        inputs[A::WQ] = Some(rnd(&mut rng, &[hid, h * d], -0.6, 0.6));
        inputs[A::BQ] = Some(rnd(&mut rng, &[h * d], -0.3, 0.3));
        inputs[A::WK] = Some(rnd(&mut rng, &[hid, kvh * d], -0.6, 0.6));
        inputs[A::BK] = Some(rnd(&mut rng, &[kvh * d], -0.3, 0.3));
        inputs[A::WV] = Some(rnd(&mut rng, &[hid, kvh * d], -0.6, 0.6));
        inputs[A::BV] = Some(rnd(&mut rng, &[kvh * d], -0.3, 0.3));
        inputs[A::WO] = Some(rnd(&mut rng, &[h * d, hid], -0.6, 0.6));
        inputs[A::BO] = Some(rnd(&mut rng, &[hid], -0.3, 0.3));
        if let Some((_, _, width)) = cs.rope {
            let (c, s) = rope_tables(b, t, cs.past, width);
            inputs[A::COS] = Some(c);
            inputs[A::SIN] = Some(s);
        }
        if cs.past > 0 {
            inputs[A::PAST_K] = Some(rnd(&mut rng, &[b, kvh, cs.past, d], -1.0, 1.0));
            inputs[A::PAST_V] = Some(rnd(&mut rng, &[b, kvh, cs.past, d], -1.0, 1.0));
        }
        let s_len = cs.past + t;
        inputs[A::MASK] = match cs.mask {
            1 => Some(Value::bool(ArrayD::from_shape_fn(IxDyn(&[b, 1, 1, s_len]), |i| !(i[0] == 1 && i[3] == 0)))),
            2 => Some(rnd(&mut rng, &[1, h, t, s_len], -1.0, 0.0)),
            _ => None,
        };
        if cs.norms {
            inputs[A::Q_NORM] = Some(rnd(&mut rng, &[d], 0.5, 1.5));
            inputs[A::K_NORM] = Some(rnd(&mut rng, &[d], 0.5, 1.5));
        }
        let mut wrt = vec![A::X, A::WQ, A::BQ, A::WK, A::BK, A::WV, A::BV, A::WO, A::BO];
        if cs.norms {
            wrt.extend([A::Q_NORM, A::K_NORM]);
        }
        let n_out = if cs.present_grad { 3 } else { 1 };
        check_fd(&Op::Attention(spec.clone()), inputs, n_out, &wrt, 3e-3, 41 + n as u64);
    }
    let spec = A { heads: 1, kv_heads: 1, head_dim: 2, scale: 1.0, rope: None, rotary_dim: 2, causal: true, window: None, qk_norm_eps: None, softcap: None };
    assert!(grad::check_rule(&Op::Attention(spec), &[A::PAST_K]).unwrap_err().contains("past KV cache"));
}
