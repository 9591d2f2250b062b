//! The backward math against float64 central finite differences of the same generic forward
//! that the executor runs in f32, on random shapes and values (proptest): the scalar unary and
//! binary ONNX rules, softmax and log-softmax, the SwiGLU gate, the norms, the dynamic conv
//! and linear attention; and the f32 instances of those forwards against the executor's
//! kernels.
use jetc_runtime::grad::attention::{head_backward as attn_head_backward, head_forward as attn_head_forward, HeadCore};
use jetc_runtime::grad::dynamic_conv::{self as conv, Conv};
use jetc_runtime::grad::linear_attention::{head_backward, head_forward, Decay, HeadInputs};
use jetc_runtime::grad::elementwise::{binary_grad, unary_grad, BINARY, UNARY};
use jetc_runtime::grad::norms;
use jetc_runtime::math;
use jetc_runtime::onnx_ops::elementwise::{powf, Arith, Unary};
use proptest::prelude::*;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

fn rand_vec(rng: &mut StdRng, n: usize, lo: f64, hi: f64) -> Vec<f64> {
    (0..n).map(|_| rng.random_range(lo..hi)).collect()
}

fn dot(a: &[f64], b: &[f64]) -> f64 {
    a.iter().zip(b).map(|(x, y)| x * y).sum()
}

/// Central differences of `f` at `x`, one element at a time.
fn fd(x: &[f64], f: &dyn Fn(&[f64]) -> f64) -> Vec<f64> {
    let h = 1e-6;
    (0..x.len())
        .map(|i| {
            let mut p = x.to_vec();
            p[i] += h;
            let up = f(&p);
            p[i] -= 2.0 * h;
            (up - f(&p)) / (2.0 * h)
        })
        .collect()
}

/// max |a - b| / max(max |b|, 1e-3).
fn rel(a: &[f64], b: &[f64]) -> f64 {
    assert_eq!(a.len(), b.len());
    let scale = b.iter().fold(1e-3f64, |m, v| m.max(v.abs()));
    a.iter().zip(b).fold(0.0f64, |m, (x, y)| m.max((x - y).abs())) / scale
}

const TOL: f64 = 1e-6;

proptest! {
    #![proptest_config(ProptestConfig::with_cases(32))]

    /// One attention head (what the Attention rule runs per query head): causal or not, a
    /// sliding window, past keys, an additive mask, soft-capping, queries fewer than keys.
    #[test]
    fn attention_head_matches_f64_finite_differences(
        t in 1usize..5, past in 0usize..4, d in 1usize..5, causal: bool, window in prop::option::of(1usize..4),
        capped: bool, masked: bool, seed in 0u64..1000,
    ) {
        let mut rng = StdRng::seed_from_u64(seed);
        let s = past + t;
        let q = rand_vec(&mut rng, t * d, -1.5, 1.5);
        let k = rand_vec(&mut rng, s * d, -1.5, 1.5);
        let v = rand_vec(&mut rng, s * d, -1.0, 1.0);
        let add = rand_vec(&mut rng, t * s, -1.0, 1.0);
        let r = rand_vec(&mut rng, t * d, -1.0, 1.0);
        let visible = |ti: usize, si: usize| -> Option<f64> {
            let pos = past + ti;
            let keep = (!causal || si <= pos) && window.is_none_or(|w| si + w > pos);
            keep.then(|| if masked { add[ti * s + si] } else { 0.0 })
        };
        let softcap = capped.then_some(2.5);
        let ctx_of = |q: &[f64], k: &[f64], v: &[f64]| -> Vec<f64> {
            let h = HeadCore { t, s, d, q, k, v, scale: 0.6, softcap };
            attn_head_forward(&h, &visible).expect("forward").ctx
        };
        let h = HeadCore { t, s, d, q: &q, k: &k, v: &v, scale: 0.6, softcap };
        let (mut dk, mut dv) = (vec![0.0; s * d], vec![0.0; s * d]);
        let (ctx, dq) = attn_head_backward(&h, &visible, &r, &mut dk, &mut dv).expect("backward");
        prop_assert!(rel(&ctx, &ctx_of(&q, &k, &v)) < 1e-15);
        prop_assert!(rel(&dq, &fd(&q, &|q| dot(&ctx_of(q, &k, &v), &r))) < TOL, "dq");
        prop_assert!(rel(&dk, &fd(&k, &|k| dot(&ctx_of(&q, k, &v), &r))) < TOL, "dk");
        prop_assert!(rel(&dv, &fd(&v, &|v| dot(&ctx_of(&q, &k, v), &r))) < TOL, "dv");
    }
}

/// A point of op `t`'s domain away from its kinks (0 for Relu/Abs, and x <= 0 for Log/Sqrt).
fn in_domain(t: &str, x: f64) -> f64 {
    match t {
        "Log" | "Sqrt" | "Reciprocal" => x.abs() + 0.2,
        "Relu" | "Abs" => if x.abs() < 0.05 { x + 0.1f64.copysign(x) } else { x },
        _ => x,
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    /// Every scalar unary rule against d/dx of the forward math the executor runs.
    #[test]
    fn unary_rules_match_f64_finite_differences(x in -3.0f64..3.0, g in -2.0f64..2.0) {
        for &t in UNARY.iter().filter(|t| !matches!(**t, "Softmax" | "LogSoftmax")) {
            let x = in_domain(t, x);
            let f = |v: f64| if t == "Cast" { v } else { Unary::parse(t).expect("a unary op").apply(v) };
            let h = 1e-6;
            let num = g * (f(x + h) - f(x - h)) / (2.0 * h);
            let got = unary_grad(t, g, x).expect("a rule");
            prop_assert!((got - num).abs() <= TOL * num.abs().max(1.0), "{t} at {x}: {got} vs {num}");
        }
    }

    /// Every binary rule (both operands), with Max/Min picking away from ties.
    #[test]
    fn binary_rules_match_f64_finite_differences(a in -3.0f64..3.0, b in -3.0f64..3.0, g in -2.0f64..2.0) {
        for &t in BINARY {
            let (a, b) = match t {
                "Div" => (a, b.abs() + 0.3),
                "Pow" => (a.abs() + 0.2, b),
                "Max" | "Min" if (a - b).abs() < 0.05 => (a, b + 0.1),
                _ => (a, b),
            };
            let f = |x: f64, y: f64| match t {
                "Pow" => powf(x, y),
                "Add" => Arith::Add.apply(x, y),
                "Sub" => Arith::Sub.apply(x, y),
                "Mul" => Arith::Mul.apply(x, y),
                "Div" => Arith::Div.apply(x, y),
                "Max" => Arith::Max.apply(x, y),
                _ => Arith::Min.apply(x, y),
            };
            let h = 1e-6;
            let na = g * (f(a + h, b) - f(a - h, b)) / (2.0 * h);
            let nb = g * (f(a, b + h) - f(a, b - h)) / (2.0 * h);
            let (ga, gb) = match t {
                // The executor's Max/Min rule routes g to the picked operand.
                "Max" => if a >= b { (g, 0.0) } else { (0.0, g) },
                "Min" => if a <= b { (g, 0.0) } else { (0.0, g) },
                _ => binary_grad(t, g, a, b).expect("a rule"),
            };
            prop_assert!((ga - na).abs() <= TOL * na.abs().max(1.0), "{t} d/da at ({a}, {b}): {ga} vs {na}");
            // Pow's exponent carries no gradient (x^c with a constant c).
            if t != "Pow" {
                prop_assert!((gb - nb).abs() <= TOL * nb.abs().max(1.0), "{t} d/db at ({a}, {b}): {gb} vs {nb}");
            }
        }
    }

    /// Softmax and log-softmax of a row (with a strongly negative logit among them), and the
    /// SwiGLU gate.
    #[test]
    fn softmax_and_gate_match_f64_finite_differences(n in 1usize..9, seed in 0u64..1000) {
        let mut rng = StdRng::seed_from_u64(seed);
        let mut x = rand_vec(&mut rng, n, -4.0, 4.0);
        x[0] -= 20.0;
        let r = rand_vec(&mut rng, n, -1.0, 1.0);
        let soft = |x: &[f64]| { let mut y = x.to_vec(); math::softmax(&mut y, None); y };
        let (y, mut dx) = (soft(&x), vec![0.0; n]);
        math::softmax_vjp(&y, &r, &mut dx);
        prop_assert!(rel(&dx, &fd(&x, &|x| dot(&soft(x), &r))) < TOL, "softmax");
        let logsoft = |x: &[f64]| { let mut y = x.to_vec(); math::log_softmax(&mut y); y };
        math::log_softmax_vjp(&y, &r, &mut dx);
        prop_assert!(rel(&dx, &fd(&x, &|x| dot(&logsoft(x), &r))) < TOL, "log-softmax");
        let (h, u) = (rand_vec(&mut rng, n, -4.0, 4.0), rand_vec(&mut rng, n, -2.0, 2.0));
        let gate = |h: &[f64], u: &[f64]| -> Vec<f64> { h.iter().zip(u).map(|(&a, &b)| math::swiglu_gate(a, b)).collect() };
        let (dh, du): (Vec<f64>, Vec<f64>) = (0..n).map(|i| math::swiglu_gate_vjp(r[i], h[i], u[i])).unzip();
        prop_assert!(rel(&dh, &fd(&h, &|h| dot(&gate(h, &u), &r))) < TOL, "gate dh");
        prop_assert!(rel(&du, &fd(&u, &|u| dot(&gate(&h, u), &r))) < TOL, "gate du");
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(24))]

    #[test]
    fn norms_match_finite_differences(rows in 1usize..4, d in 1usize..7, heads in 1usize..3, seed in 0u64..1000) {
        let mut rng = StdRng::seed_from_u64(seed);
        let eps = 1e-6;
        // RMSNorm over rows of d.
        let x = rand_vec(&mut rng, rows * d, -2.0, 2.0);
        let w = rand_vec(&mut rng, d, 0.5, 1.5);
        let r = rand_vec(&mut rng, rows * d, -1.0, 1.0);
        let (dx, dw) = norms::rms_norm_backward(&x, &w, &r, d, eps);
        prop_assert!(rel(&dx, &fd(&x, &|x| dot(&norms::rms_norm(x, &w, d, eps), &r))) < TOL);
        prop_assert!(rel(&dw, &fd(&w, &|w| dot(&norms::rms_norm(&x, w, d, eps), &r))) < TOL);
        // L2Norm and GatedRmsNorm per head of d (rows * heads heads).
        let n = rows * heads * d;
        let x = rand_vec(&mut rng, n, -2.0, 2.0);
        let r = rand_vec(&mut rng, n, -1.0, 1.0);
        let dx = norms::l2_norm_backward(&x, &r, d, eps);
        prop_assert!(rel(&dx, &fd(&x, &|x| dot(&norms::l2_norm(x, d, eps), &r))) < TOL);
        let gate = rand_vec(&mut rng, n, -3.0, 3.0);
        let (dox, dw, dg) = norms::gated_rms_norm_backward(&x, &w, &gate, &r, d, eps);
        prop_assert!(rel(&dox, &fd(&x, &|x| dot(&norms::gated_rms_norm(x, &w, &gate, d, eps), &r))) < TOL);
        prop_assert!(rel(&dw, &fd(&w, &|w| dot(&norms::gated_rms_norm(&x, w, &gate, d, eps), &r))) < TOL);
        prop_assert!(rel(&dg, &fd(&gate, &|g| dot(&norms::gated_rms_norm(&x, &w, g, d, eps), &r))) < TOL);
    }

    #[test]
    fn dynamic_conv_matches_finite_differences(b in 1usize..3, t in 1usize..7, c in 1usize..4, w in 1usize..5, with_past: bool, seed in 0u64..1000) {
        let mut rng = StdRng::seed_from_u64(seed);
        let s = Conv { b, t, c, w };
        let u = rand_vec(&mut rng, b * t * c, -2.0, 2.0);
        let ker = rand_vec(&mut rng, b * t * c * w, -1.0, 1.0);
        let past = with_past.then(|| rand_vec(&mut rng, b * c * w, -2.0, 2.0));
        let ry = rand_vec(&mut rng, b * t * c, -1.0, 1.0);
        let rp = rand_vec(&mut rng, b * c * w, -1.0, 1.0);
        let loss = |u: &[f64], k: &[f64], p: Option<&[f64]>| {
            let (y, present) = conv::forward(&s, u, k, p);
            dot(&y, &ry) + dot(&present, &rp)
        };
        let (du, dk, dp) = conv::backward(&s, &u, &ker, past.as_deref(), Some(&ry), Some(&rp));
        prop_assert!(rel(&du, &fd(&u, &|u| loss(u, &ker, past.as_deref()))) < TOL);
        prop_assert!(rel(&dk, &fd(&ker, &|k| loss(&u, k, past.as_deref()))) < TOL);
        if let Some(p) = &past {
            prop_assert!(rel(&dp, &fd(p, &|p| loss(&u, &ker, Some(p)))) < TOL);
        }
    }

    /// Every rule, GQA groups, d_k != d_v, T not a multiple of the chunk, strong decay and
    /// g = 0, with and without an initial state and a final-state cotangent.
    #[test]
    fn linear_attention_matches_finite_differences(
        t in 1usize..12, dk in 1usize..5, dv in 1usize..5, group in 1usize..3,
        rule in 0usize..5, strength in 0usize..3, with_h0: bool, with_ds: bool,
        chunk in prop::sample::select(vec![1usize, 3, 4, 64]), seed in 0u64..1000,
    ) {
        let mut rng = StdRng::seed_from_u64(seed);
        let q = rand_vec(&mut rng, group * t * dk, -1.0, 1.0);
        let k = rand_vec(&mut rng, t * dk, -1.0, 1.0);
        let v = rand_vec(&mut rng, t * dv, -1.0, 1.0);
        // rule: 0 linear, 1 gated (scalar), 2 gated_vector, 3 delta, 4 gated_delta.
        let (lo, hi) = match strength { 0 => (-1e-9, 0.0), 1 => (-2.0, -0.01), _ => (-20.0, -5.0) };
        let decay = match rule {
            1 | 4 => Some(rand_vec(&mut rng, t, lo, hi)),
            2 => Some(rand_vec(&mut rng, t * dk, lo, hi)),
            _ => None,
        };
        let beta = matches!(rule, 3 | 4).then(|| rand_vec(&mut rng, t, 0.05, 0.95));
        let h0 = with_h0.then(|| rand_vec(&mut rng, dk * dv, -1.0, 1.0));
        let ro = rand_vec(&mut rng, group * t * dv, -1.0, 1.0);
        let rs = with_ds.then(|| rand_vec(&mut rng, dk * dv, -1.0, 1.0));
        let vector = rule == 2;
        let mk = |q: &[f64], k: &[f64], v: &[f64], g: Option<&[f64]>, b: Option<&[f64]>, h: Option<&[f64]>| -> f64 {
            let x = HeadInputs {
                t, dk, dv, group, scale: 0.7, q, k, v,
                decay: match (g, vector) { (None, _) => Decay::None, (Some(g), false) => Decay::Scalar(g), (Some(g), true) => Decay::Vector(g) },
                beta: b, h0: h,
            };
            let (o, s) = head_forward(&x);
            dot(&o, &ro) + rs.as_ref().map_or(0.0, |r| dot(&s, r))
        };
        let x = HeadInputs {
            t, dk, dv, group, scale: 0.7, q: &q, k: &k, v: &v,
            decay: match (&decay, vector) { (None, _) => Decay::None, (Some(g), false) => Decay::Scalar(g), (Some(g), true) => Decay::Vector(g) },
            beta: beta.as_deref(), h0: h0.as_deref(),
        };
        let g = head_backward(&x, Some(&ro), rs.as_deref(), chunk);
        let (gd, bd, hd) = (decay.as_deref(), beta.as_deref(), h0.as_deref());
        prop_assert!(rel(&g.dq, &fd(&q, &|q| mk(q, &k, &v, gd, bd, hd))) < TOL, "dq");
        prop_assert!(rel(&g.dk, &fd(&k, &|k| mk(&q, k, &v, gd, bd, hd))) < TOL, "dk");
        prop_assert!(rel(&g.dv, &fd(&v, &|v| mk(&q, &k, v, gd, bd, hd))) < TOL, "dv");
        if let Some(d) = &decay {
            prop_assert!(rel(&g.ddecay, &fd(d, &|d| mk(&q, &k, &v, Some(d), bd, hd))) < TOL, "ddecay");
        }
        if let Some(b) = &beta {
            prop_assert!(rel(&g.dbeta, &fd(b, &|b| mk(&q, &k, &v, gd, Some(b), hd))) < TOL, "dbeta");
        }
        if let Some(h) = &h0 {
            prop_assert!(rel(&g.dh0, &fd(h, &|h| mk(&q, &k, &v, gd, bd, Some(h)))) < TOL, "dh0");
        }
        // Checkpoint spacing changes only where states are recomputed from, not the result.
        let one = head_backward(&x, Some(&ro), rs.as_deref(), 1);
        prop_assert!(rel(&one.dk, &g.dk) < 1e-12 && rel(&one.dq, &g.dq) < 1e-12);
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(32))]

    /// The chunked (UT-transform) backward equals the per-token one in f64 (<= 1e-9 here,
    /// the acceptance asks 1e-5), for every scalar-gate rule, chunk sizes that do and do not
    /// divide T, GQA groups, d_k != d_v, strong and zero decay.
    #[test]
    fn chunked_backward_equals_recurrent(
        t in 1usize..40, dk in 1usize..6, dv in 1usize..6, group in 1usize..3,
        rule in prop::sample::select(vec![0usize, 1, 3, 4]), strength in 0usize..3, with_h0: bool, with_ds: bool,
        chunk in prop::sample::select(vec![1usize, 3, 8, 16, 64]), seed in 0u64..1000,
    ) {
        use jetc_runtime::grad::chunked::head_backward_chunked;
        let mut rng = StdRng::seed_from_u64(seed);
        let q = rand_vec(&mut rng, group * t * dk, -1.0, 1.0);
        let k = rand_vec(&mut rng, t * dk, -1.0, 1.0);
        let v = rand_vec(&mut rng, t * dv, -1.0, 1.0);
        let (lo, hi) = match strength { 0 => (-1e-9, 0.0), 1 => (-2.0, -0.01), _ => (-20.0, -5.0) };
        let decay = matches!(rule, 1 | 4).then(|| rand_vec(&mut rng, t, lo, hi));
        let beta = matches!(rule, 3 | 4).then(|| rand_vec(&mut rng, t, 0.05, 0.95));
        let h0 = with_h0.then(|| rand_vec(&mut rng, dk * dv, -1.0, 1.0));
        let ro = rand_vec(&mut rng, group * t * dv, -1.0, 1.0);
        let rs = with_ds.then(|| rand_vec(&mut rng, dk * dv, -1.0, 1.0));
        let x = HeadInputs {
            t, dk, dv, group, scale: 0.7, q: &q, k: &k, v: &v,
            decay: match &decay { None => Decay::None, Some(g) => Decay::Scalar(g) },
            beta: beta.as_deref(), h0: h0.as_deref(),
        };
        let want = head_backward(&x, Some(&ro), rs.as_deref(), 64);
        let got = head_backward_chunked(&x, Some(&ro), rs.as_deref(), chunk).expect("scalar decay");
        let tol = 1e-9;
        prop_assert!(rel(&got.dq, &want.dq) < tol, "dq {}", rel(&got.dq, &want.dq));
        prop_assert!(rel(&got.dk, &want.dk) < tol, "dk {}", rel(&got.dk, &want.dk));
        prop_assert!(rel(&got.dv, &want.dv) < tol, "dv {}", rel(&got.dv, &want.dv));
        prop_assert!(rel(&got.dh0, &want.dh0) < tol, "dh0 {}", rel(&got.dh0, &want.dh0));
        if decay.is_some() {
            prop_assert!(rel(&got.ddecay, &want.ddecay) < tol, "ddecay {}", rel(&got.ddecay, &want.ddecay));
        }
        if beta.is_some() {
            prop_assert!(rel(&got.dbeta, &want.dbeta) < tol, "dbeta {}", rel(&got.dbeta, &want.dbeta));
        }
    }
}
