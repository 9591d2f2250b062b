//! VJPs of the ONNX elementwise ops (unary and broadcasting binary math) and of Softmax.
//! Binary ops sum their gradients back to each input's shape ([`super::broadcast`]).
use jetc_ir::OnnxOp;
use ndarray::{ArrayD, Axis, IxDyn, Zip};

use super::broadcast::{expand, sum_to_shape};
use super::real::{sigmoid, Real};
use crate::math;
use super::{Bwd, R};
use crate::onnx_ops::common::broadcast_shapes;

/// The unary ops with a rule (Softmax and LogSoftmax along an axis, the rest scalar).
pub const UNARY: &[&str] = &["Neg", "Exp", "Log", "Sqrt", "Reciprocal", "Sigmoid", "Tanh", "Softplus", "Relu", "Abs", "Sin", "Cos", "Erf", "Cast", "Softmax", "LogSoftmax"];
/// The broadcasting binary ops with a rule.
pub const BINARY: &[&str] = &["Add", "Sub", "Mul", "Div", "Pow", "Max", "Min"];

pub(crate) fn check(o: &OnnxOp, wrt: &[usize]) -> R<()> {
    let t = o.op_type.as_str();
    if !(o.domain.is_empty() || o.domain == "ai.onnx") || !(UNARY.contains(&t) || BINARY.contains(&t)) {
        return Err(format!("no backward rule for {}", o.qualified_name()));
    }
    if t == "Pow" && wrt.contains(&1) {
        return Err("input 1 of Pow (the exponent) is not differentiable here: only x^c with a constant c".into());
    }
    if UNARY.contains(&t) && wrt.iter().any(|&s| s != 0) {
        return Err(format!("{t} has one differentiable input"));
    }
    if matches!(t, "Softmax" | "LogSoftmax") && o.opset < 13 {
        return Err(format!("{t} before opset 13 (flattening semantics) has no backward rule; re-export at opset >= 13"));
    }
    Ok(())
}

fn map2(a: &ArrayD<f32>, b: &ArrayD<f32>, f: impl Fn(f32, f32) -> f32) -> ArrayD<f32> {
    let mut out = a.clone();
    Zip::from(&mut out).and(b).for_each(|o, &y| *o = f(*o, y));
    out
}

pub(crate) fn vjp(o: &OnnxOp, c: &Bwd) -> R<Vec<Option<ArrayD<f32>>>> {
    let t = o.op_type.as_str();
    let dy = c.req_dy(0)?;
    if UNARY.contains(&t) {
        let x = c.xf(0, "x")?;
        if x.shape() != dy.shape() {
            return Err(format!("cotangent {:?} does not match the input {:?}", dy.shape(), x.shape()));
        }
        let dx = match t {
            "Softmax" | "LogSoftmax" => softmax_vjp(x, dy, o.int_or("axis", -1), t == "LogSoftmax")?,
            _ => {
                unary_grad::<f32>(t, 0.0, 0.0).ok_or_else(|| format!("no backward rule for {t}"))?;
                map2(dy, x, |g, v| unary_grad(t, g, v).unwrap_or(f32::NAN))
            }
        };
        return Ok(vec![Some(dx)]);
    }
    if matches!(t, "Max" | "Min") {
        return extreme_vjp(c, dy, t == "Max");
    }
    let a = c.xf(0, "a")?;
    let b = c.xf(1, "b")?;
    let shape = broadcast_shapes(&[a.shape(), b.shape()])?;
    if dy.shape() != shape.as_slice() {
        return Err(format!("cotangent {:?} does not match the broadcast shape {shape:?}", dy.shape()));
    }
    // Only the product rules read the other operand; Add and Sub pass the cotangent through.
    let (ga, gb) = match t {
        "Add" => (dy.clone(), dy.clone()),
        "Sub" => (dy.clone(), dy.mapv(|g| -g)),
        "Mul" | "Div" | "Pow" => {
            let (ea, eb) = (expand(a, &shape)?, expand(b, &shape)?);
            let (mut ga, mut gb) = (dy.clone(), dy.clone());
            Zip::from(&mut ga).and(&mut gb).and(&ea).and(&eb).for_each(|ga, gb, &x, &y| {
                let (p, q) = binary_grad(t, *ga, x, y).unwrap_or((f32::NAN, f32::NAN));
                *ga = p;
                *gb = q;
            });
            (ga, gb)
        }
        _ => return Err(format!("no backward rule for {t}")),
    };
    let want = |slot: usize, g: ArrayD<f32>, to: &[usize]| -> R<Option<ArrayD<f32>>> {
        if c.wants(slot) { sum_to_shape(g, to).map(Some) } else { Ok(None) }
    };
    Ok(vec![want(0, ga, a.shape())?, want(1, gb, b.shape())?])
}

/// `g · d op(x)/dx` for the scalar unary ops of [`UNARY`] (`None` for another op), generic
/// so that the finite-difference checks run it in f64 against the forward math.
pub fn unary_grad<T: Real>(op_type: &str, g: T, v: T) -> Option<T> {
    let (zero, one, half) = (T::zero(), T::one(), T::of(0.5));
    Some(match op_type {
        "Neg" => -g,
        "Cast" => g,
        "Exp" => g * v.exp(),
        "Log" => g / v,
        "Sqrt" => g * half / v.sqrt(),
        "Reciprocal" => -g / (v * v),
        "Sigmoid" => {
            let s = sigmoid(v);
            g * s * (one - s)
        }
        "Tanh" => {
            let th = v.tanh();
            g * (one - th * th)
        }
        "Softplus" => g * sigmoid(v),
        "Relu" => {
            if v > zero {
                g
            } else {
                zero
            }
        }
        "Abs" => {
            if v > zero {
                g
            } else if v < zero {
                -g
            } else {
                zero
            }
        }
        "Sin" => g * v.cos(),
        "Cos" => -g * v.sin(),
        "Erf" => g * T::of(std::f64::consts::FRAC_2_SQRT_PI) * (-v * v).exp(),
        _ => return None,
    })
}

/// `(g · d/da, g · d/db)` of the binary ops Add, Sub, Mul, Div and Pow (`x^p`: the exponent
/// gets no gradient), generic like [`unary_grad`].
pub fn binary_grad<T: Real>(op_type: &str, g: T, a: T, b: T) -> Option<(T, T)> {
    Some(match op_type {
        "Add" => (g, g),
        "Sub" => (g, -g),
        "Mul" => (g * b, g * a),
        "Div" => (g / b, -g * a / (b * b)),
        "Pow" => (if b == T::zero() { T::zero() } else { g * b * a.powf(b - T::one()) }, T::zero()),
        _ => return None,
    })
}

/// Max/Min of any number of inputs: the gradient goes to the input that was picked (the
/// first one on ties, as the forward keeps it).
fn extreme_vjp(c: &Bwd, dy: &ArrayD<f32>, max: bool) -> R<Vec<Option<ArrayD<f32>>>> {
    let n = c.spec.forward_inputs;
    let xs: Vec<&ArrayD<f32>> = (0..n).map(|i| c.xf(i, "x")).collect::<R<_>>()?;
    let shapes: Vec<&[usize]> = xs.iter().map(|x| x.shape()).collect();
    let shape = broadcast_shapes(&shapes)?;
    if dy.shape() != shape.as_slice() {
        return Err(format!("cotangent {:?} does not match the broadcast shape {shape:?}", dy.shape()));
    }
    let ex: Vec<ArrayD<f32>> = xs.iter().map(|x| expand(x, &shape)).collect::<R<_>>()?;
    let mut winner = ArrayD::<usize>::zeros(IxDyn(&shape));
    let mut best = ex[0].clone();
    for (i, e) in ex.iter().enumerate().skip(1) {
        Zip::from(&mut winner).and(&mut best).and(e).for_each(|w, b, &v| {
            if (max && v > *b) || (!max && v < *b) {
                *w = i;
                *b = v;
            }
        });
    }
    let mut out = Vec::with_capacity(n);
    for (i, x) in xs.iter().enumerate() {
        if !c.wants(i) {
            out.push(None);
            continue;
        }
        let mut g = dy.clone();
        Zip::from(&mut g).and(&winner).for_each(|v, &w| {
            if w != i {
                *v = 0.0;
            }
        });
        out.push(Some(sum_to_shape(g, x.shape())?));
    }
    Ok(out)
}

/// Softmax and LogSoftmax along `axis`, lane by lane ([`crate::math::softmax_vjp`],
/// [`crate::math::log_softmax_vjp`]).
fn softmax_vjp(x: &ArrayD<f32>, dy: &ArrayD<f32>, axis: i64, log: bool) -> R<ArrayD<f32>> {
    let rank = x.ndim() as i64;
    let ax = if axis < 0 { axis + rank } else { axis };
    if ax < 0 || ax >= rank {
        return Err(format!("axis {axis} is out of range for rank {rank}"));
    }
    let ax = Axis(ax as usize);
    let mut dx = x.clone();
    for (mut xl, gl) in dx.lanes_mut(ax).into_iter().zip(dy.lanes(ax)) {
        let mut p: Vec<f32> = xl.iter().copied().collect();
        math::softmax(&mut p, None);
        let g: Vec<f32> = gl.iter().copied().collect();
        let mut out = vec![0f32; p.len()];
        if log {
            math::log_softmax_vjp(&p, &g, &mut out);
        } else {
            math::softmax_vjp(&p, &g, &mut out);
        }
        xl.iter_mut().zip(out).for_each(|(o, v)| *o = v);
    }
    Ok(dx)
}
