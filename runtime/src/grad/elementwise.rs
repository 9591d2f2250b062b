//! VJPs of the ONNX elementwise ops (unary and broadcasting binary math) and of Softmax.
//! Binary ops sum their gradients back to each input's shape ([`super::broadcast`]).
use jetc_ir::OnnxOp;
use ndarray::{ArrayD, Axis, IxDyn, Zip};

use super::broadcast::{expand, sum_to_shape};
use super::real::sigmoid;
use super::{Bwd, R};
use crate::onnx_ops::common::broadcast_shapes;

const UNARY: &[&str] = &["Neg", "Exp", "Log", "Sqrt", "Reciprocal", "Sigmoid", "Tanh", "Softplus", "Relu", "Abs", "Sin", "Cos", "Erf", "Cast", "Softmax", "LogSoftmax"];
const BINARY: &[&str] = &["Add", "Sub", "Mul", "Div", "Pow", "Max", "Min"];

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
            "Neg" => dy.mapv(|g| -g),
            "Cast" => dy.clone(),
            "Exp" => map2(dy, x, |g, v| g * v.exp()),
            "Log" => map2(dy, x, |g, v| g / v),
            "Sqrt" => map2(dy, x, |g, v| g * 0.5 / v.sqrt()),
            "Reciprocal" => map2(dy, x, |g, v| -g / (v * v)),
            "Sigmoid" => map2(dy, x, |g, v| {
                let s = sigmoid(v);
                g * s * (1.0 - s)
            }),
            "Tanh" => map2(dy, x, |g, v| {
                let th = v.tanh();
                g * (1.0 - th * th)
            }),
            "Softplus" => map2(dy, x, |g, v| g * sigmoid(v)),
            "Relu" => map2(dy, x, |g, v| if v > 0.0 { g } else { 0.0 }),
            "Abs" => map2(dy, x, |g, v| if v > 0.0 { g } else if v < 0.0 { -g } else { 0.0 }),
            "Sin" => map2(dy, x, |g, v| g * v.cos()),
            "Cos" => map2(dy, x, |g, v| -g * v.sin()),
            "Erf" => map2(dy, x, |g, v| g * std::f32::consts::FRAC_2_SQRT_PI * (-v * v).exp()),
            "Softmax" | "LogSoftmax" => softmax_vjp(x, dy, o.int_or("axis", -1), t == "LogSoftmax")?,
            _ => return Err(format!("no backward rule for {t}")),
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
        "Mul" => {
            let (ea, eb) = (expand(a, &shape)?, expand(b, &shape)?);
            (map2(dy, &eb, |g, y| g * y), map2(dy, &ea, |g, x| g * x))
        }
        "Div" => {
            let (ea, eb) = (expand(a, &shape)?, expand(b, &shape)?);
            let ga = map2(dy, &eb, |g, y| g / y);
            let mut gb = map2(dy, &ea, |g, x| -g * x);
            Zip::from(&mut gb).and(&eb).for_each(|v, &y| *v /= y * y);
            (ga, gb)
        }
        "Pow" => {
            let (ea, eb) = (expand(a, &shape)?, expand(b, &shape)?);
            let mut ga = dy.clone();
            Zip::from(&mut ga).and(&ea).and(&eb).for_each(|g, &x, &p| *g *= if p == 0.0 { 0.0 } else { p * x.powf(p - 1.0) });
            (ga, dy.clone())
        }
        _ => return Err(format!("no backward rule for {t}")),
    };
    let want = |slot: usize, g: ArrayD<f32>, to: &[usize]| -> R<Option<ArrayD<f32>>> {
        if c.wants(slot) { sum_to_shape(g, to).map(Some) } else { Ok(None) }
    };
    Ok(vec![want(0, ga, a.shape())?, want(1, gb, b.shape())?])
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

/// Softmax: dx = y (dy - sum(dy y)); LogSoftmax: dx = dy - softmax(x) sum(dy), along `axis`.
fn softmax_vjp(x: &ArrayD<f32>, dy: &ArrayD<f32>, axis: i64, log: bool) -> R<ArrayD<f32>> {
    let rank = x.ndim() as i64;
    let ax = if axis < 0 { axis + rank } else { axis };
    if ax < 0 || ax >= rank {
        return Err(format!("axis {axis} is out of range for rank {rank}"));
    }
    let ax = Axis(ax as usize);
    let mut dx = x.clone();
    for ((mut xl, gl), _) in dx.lanes_mut(ax).into_iter().zip(dy.lanes(ax)).zip(0..) {
        let m = xl.iter().copied().fold(f32::NEG_INFINITY, f32::max);
        let e: Vec<f32> = xl.iter().map(|&v| (v - m).exp()).collect();
        let z: f32 = e.iter().sum();
        let y: Vec<f32> = e.iter().map(|v| v / z).collect();
        if log {
            let s: f32 = gl.iter().sum();
            for ((o, &g), &p) in xl.iter_mut().zip(gl.iter()).zip(&y) {
                *o = g - p * s;
            }
        } else {
            let s: f32 = gl.iter().zip(&y).map(|(&g, &p)| g * p).sum();
            for ((o, &g), &p) in xl.iter_mut().zip(gl.iter()).zip(&y) {
                *o = p * (g - s);
            }
        }
    }
    Ok(dx)
}

