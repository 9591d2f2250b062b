//! Element-wise ops with numpy broadcasting.
//!
//! Unary math (Sqrt … Erf, Gelu and the contrib Gelu/FastGelu/QuickGelu/BiasGelu), binary
//! arithmetic (Add Sub Mul Div Pow Mod; integer Div truncates like C, Mod follows `fmod`),
//! variadic Max/Min/Sum/Mean, comparisons, logic, Where, Clip (attributes below opset 11,
//! inputs from 11), IsNaN, IsInf.
use ndarray::ArrayD;

use super::common::{zip2, zip3, Ctx, OpResult};
use crate::value::{Data, Value};

// ---------------------------------------------------------------- unary

/// A float (or signed-int where it makes sense) unary op.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Unary {
    Sqrt,
    Reciprocal,
    Neg,
    Exp,
    Log,
    Sin,
    Cos,
    Tan,
    Tanh,
    Sigmoid,
    Erf,
    Abs,
    Relu,
    Floor,
    Ceil,
    Round,
    Sign,
    Softplus,
    Softsign,
    /// x · sigmoid(x)
    Silu,
}

impl Unary {
    /// The op of an ONNX op type. `Swish` is not one: its `alpha` makes it [`swish`].
    pub fn parse(op_type: &str) -> Option<Unary> {
        Some(match op_type {
            "Sqrt" => Unary::Sqrt,
            "Reciprocal" => Unary::Reciprocal,
            "Neg" => Unary::Neg,
            "Exp" => Unary::Exp,
            "Log" => Unary::Log,
            "Sin" => Unary::Sin,
            "Cos" => Unary::Cos,
            "Tan" => Unary::Tan,
            "Tanh" => Unary::Tanh,
            "Sigmoid" => Unary::Sigmoid,
            "Erf" => Unary::Erf,
            "Abs" => Unary::Abs,
            "Relu" => Unary::Relu,
            "Floor" => Unary::Floor,
            "Ceil" => Unary::Ceil,
            "Round" => Unary::Round,
            "Sign" => Unary::Sign,
            "Softplus" => Unary::Softplus,
            "Softsign" => Unary::Softsign,
            _ => return None,
        })
    }

    /// The float math, generic so that the finite-difference checks run it in f64.
    pub fn apply<T: Real>(self, x: T) -> T {
        let (zero, one) = (T::zero(), T::one());
        match self {
            Unary::Sqrt => x.sqrt(),
            Unary::Reciprocal => one / x,
            Unary::Neg => -x,
            Unary::Exp => x.exp(),
            Unary::Log => x.ln(),
            Unary::Sin => x.sin(),
            Unary::Cos => x.cos(),
            Unary::Tan => x.tan(),
            Unary::Tanh => x.tanh(),
            Unary::Sigmoid => sigmoid(x),
            Unary::Erf => T::of(erf(x.to_f64().unwrap_or(f64::NAN))),
            Unary::Abs => x.abs(),
            Unary::Relu => x.max(zero),
            Unary::Floor => x.floor(),
            Unary::Ceil => x.ceil(),
            Unary::Round => round_ties_even(x),
            Unary::Sign => {
                if x > zero {
                    one
                } else if x < zero {
                    -one
                } else {
                    x
                }
            }
            Unary::Softplus => crate::math::softplus(x),
            Unary::Softsign => x / (one + x.abs()),
            Unary::Silu => crate::math::silu(x),
        }
    }

    /// The integer version, for the ops ONNX defines on integers.
    fn i(self, x: i64) -> Option<i64> {
        match self {
            Unary::Neg => Some(x.wrapping_neg()),
            Unary::Abs => Some(x.wrapping_abs()),
            Unary::Relu => Some(x.max(0)),
            Unary::Sign => Some(x.signum()),
            Unary::Floor | Unary::Ceil | Unary::Round => Some(x),
            _ => None,
        }
    }
}

pub(crate) use crate::math::sigmoid;
use crate::math::Real;

/// Rounds half to even (ONNX `Round`).
fn round_ties_even<T: Real>(x: T) -> T {
    let r = x.round();
    if (x - x.trunc()).abs() == T::of(0.5) {
        // A tie: round() went away from zero; step back when that landed on an odd number.
        let two = T::of(2.0);
        if (r / two).fract() != T::zero() {
            return r - x.signum();
        }
    }
    r
}

/// erf to within an ulp (musl's, through the `libm` crate). A polynomial fit accurate only
/// in value would not do: its slope is off by percents near 0, and the backward rule uses
/// erf's true derivative.
pub(crate) fn erf(x: f64) -> f64 {
    libm::erf(x)
}

/// The unary op that the node's op type names (see [`Unary::parse`]).
pub(crate) fn unary_named(ctx: &Ctx) -> OpResult {
    let u = Unary::parse(&ctx.op.op_type).ok_or_else(|| format!("{} is not a unary op", ctx.op.op_type))?;
    unary(ctx, u)
}

pub(crate) fn unary(ctx: &Ctx, u: Unary) -> OpResult {
    let x = ctx.input(0)?;
    let data = match &x.dense().data {
        Data::F(a) => Data::F(a.mapv(|v| u.apply(v))),
        Data::I(a) => {
            if u.i(0).is_none() {
                return Err(format!("{u:?} needs a float input, got {}", x.dtype));
            }
            Data::I(a.mapv(|v| u.i(v).unwrap_or(v)))
        }
        Data::B(_) => return Err(format!("{u:?} needs a numeric input, got bool")),
        Data::Q(_) => return Err(crate::value::NOT_DENSE.into()),
    };
    Ok(vec![Value { dtype: x.dtype, data }])
}

/// Float unary op with a closure (activations with attributes).
fn float_map(ctx: &Ctx, f: impl Fn(f32) -> f32) -> OpResult {
    let x = ctx.input(0)?;
    let a = ctx.f32(0)?;
    Ok(vec![Value { dtype: x.dtype, data: Data::F(a.mapv(f)) }])
}

const SQRT_2_OVER_PI: f32 = 0.797_884_6;

fn gelu_erf(x: f32) -> f32 {
    0.5 * x * (1.0 + erf(x as f64 / std::f64::consts::SQRT_2) as f32)
}

fn gelu_tanh(x: f32) -> f32 {
    0.5 * x * (1.0 + (SQRT_2_OVER_PI * (x + 0.044_715 * x * x * x)).tanh())
}

/// Gelu (opset 20, `approximate` = "none" | "tanh") and com.microsoft Gelu.
pub(crate) fn gelu(ctx: &Ctx) -> OpResult {
    match ctx.attr_string("approximate")?.unwrap_or("none") {
        "none" => float_map(ctx, gelu_erf),
        "tanh" => float_map(ctx, gelu_tanh),
        other => Err(format!("attribute `approximate` must be \"none\" or \"tanh\", got {other:?}")),
    }
}

/// com.microsoft FastGelu (tanh approximation) and BiasGelu (exact), with an optional bias
/// added first.
pub(crate) fn gelu_with_bias(ctx: &Ctx, fast: bool) -> OpResult {
    let x = ctx.input(0)?;
    let a = ctx.f32(0)?;
    let f = if fast { gelu_tanh } else { gelu_erf };
    let y = match ctx.opt_f32(1)? {
        Some(bias) => zip2(a, bias, |p, q| f(p + q))?,
        None => a.mapv(f),
    };
    Ok(vec![Value { dtype: x.dtype, data: Data::F(y) }])
}

/// SwiGLU (opset 28): `A · sigmoid(alpha · A) · B` for `A`, `B` of one shape (no broadcast),
/// the sigmoid rounded to the inputs' dtype as the standard's reference does.
pub(crate) fn swiglu(ctx: &Ctx) -> OpResult {
    let (xa, xb) = (ctx.input(0)?, ctx.input(1)?);
    if xa.shape() != xb.shape() || xa.dtype != xb.dtype {
        return Err(format!("A {:?} {:?} and B {:?} {:?} must have one shape and dtype (no broadcast)", xa.shape(), xa.dtype, xb.shape(), xb.dtype));
    }
    let alpha = ctx.float_or("alpha", 1.0)?;
    let (a, b) = (ctx.f32(0)?, ctx.f32(1)?);
    let to = xa.dtype;
    let round = |v: f32| super::cast::round_float(v, to);
    let y = zip2(a, b, |p, q| round(round(p * round(sigmoid(alpha * p))) * q))?;
    Ok(vec![Value { dtype: to, data: Data::F(y) }])
}

/// Swish (opset 24): `x · sigmoid(alpha · x)`; alpha 1 (the default) is SiLU. The sigmoid is
/// rounded to the input's dtype before the product, as the standard's reference does.
pub(crate) fn swish(ctx: &Ctx) -> OpResult {
    let alpha = ctx.float_or("alpha", 1.0)?;
    let to = ctx.input(0)?.dtype;
    let round = |v: f32| super::cast::round_float(v, to);
    float_map(ctx, |x| round(x * round(sigmoid(alpha * x))))
}

/// com.microsoft QuickGelu: x · sigmoid(alpha · x).
pub(crate) fn quick_gelu(ctx: &Ctx) -> OpResult {
    let alpha = ctx.float_or("alpha", 1.702)?;
    float_map(ctx, |x| x * sigmoid(alpha * x))
}

pub(crate) fn leaky_relu(ctx: &Ctx) -> OpResult {
    let alpha = ctx.float_or("alpha", 0.01)?;
    float_map(ctx, |x| if x >= 0.0 { x } else { alpha * x })
}

pub(crate) fn elu(ctx: &Ctx) -> OpResult {
    let alpha = ctx.float_or("alpha", 1.0)?;
    float_map(ctx, |x| if x >= 0.0 { x } else { alpha * (x.exp() - 1.0) })
}

pub(crate) fn hard_sigmoid(ctx: &Ctx) -> OpResult {
    let alpha = ctx.float_or("alpha", 0.2)?;
    let beta = ctx.float_or("beta", 0.5)?;
    float_map(ctx, |x| (alpha * x + beta).clamp(0.0, 1.0))
}

pub(crate) fn hard_swish(ctx: &Ctx) -> OpResult {
    float_map(ctx, |x| x * (x / 6.0 + 0.5).clamp(0.0, 1.0))
}

pub(crate) fn is_nan(ctx: &Ctx) -> OpResult {
    let a = ctx.f32(0)?;
    Ok(vec![Value::bool(a.mapv(f32::is_nan))])
}

pub(crate) fn is_inf(ctx: &Ctx) -> OpResult {
    let neg = ctx.flag("detect_negative", true)?;
    let pos = ctx.flag("detect_positive", true)?;
    let a = ctx.f32(0)?;
    Ok(vec![Value::bool(a.mapv(|v| v.is_infinite() && ((v > 0.0 && pos) || (v < 0.0 && neg))))])
}

pub(crate) fn not(ctx: &Ctx) -> OpResult {
    Ok(vec![Value::bool(ctx.bool(0)?.mapv(|v| !v))])
}

// ---------------------------------------------------------------- binary arithmetic

#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Arith {
    Add,
    Sub,
    Mul,
    Div,
    Max,
    Min,
}

impl Arith {
    /// The float math (NaN propagates through Max and Min), generic for the f64 checks.
    pub fn apply<T: Real>(self, a: T, b: T) -> T {
        match self {
            Arith::Add => a + b,
            Arith::Sub => a - b,
            Arith::Mul => a * b,
            Arith::Div => a / b,
            Arith::Max => {
                if a.is_nan() || b.is_nan() {
                    T::nan()
                } else {
                    a.max(b)
                }
            }
            Arith::Min => {
                if a.is_nan() || b.is_nan() {
                    T::nan()
                } else {
                    a.min(b)
                }
            }
        }
    }

    /// Integer version; `Div` is checked for zero divisors beforehand.
    fn i(self, a: i64, b: i64) -> i64 {
        match self {
            Arith::Add => a.wrapping_add(b),
            Arith::Sub => a.wrapping_sub(b),
            Arith::Mul => a.wrapping_mul(b),
            Arith::Div => a.checked_div(b).unwrap_or(0),
            Arith::Max => a.max(b),
            Arith::Min => a.min(b),
        }
    }
}

fn arith_values(x: &Value, y: &Value, op: Arith) -> OpResult<Value> {
    let data = match (&x.data, &y.data) {
        (Data::F(a), Data::F(b)) => Data::F(zip2(a, b, |p, q| op.apply(p, q))?),
        (Data::I(a), Data::I(b)) => {
            if op == Arith::Div && b.iter().any(|&v| v == 0) {
                return Err("integer division by zero".into());
            }
            Data::I(zip2(a, b, |p, q| op.i(p, q))?)
        }
        _ => {
            return Err(format!(
                "{op:?} needs two float or two integer operands of one type, got {} and {}",
                x.dtype, y.dtype
            ))
        }
    };
    Ok(Value { dtype: x.dtype, data })
}

pub(crate) fn arith(ctx: &Ctx, op: Arith) -> OpResult {
    Ok(vec![arith_values(ctx.input(0)?, ctx.input(1)?, op)?])
}

/// Max / Min / Sum / Mean over one or more broadcast inputs.
pub(crate) fn variadic(ctx: &Ctx, op: Arith, mean: bool) -> OpResult {
    let vals: Vec<&Value> = ctx.inputs.iter().flatten().copied().collect();
    let Some(first) = vals.first() else {
        return Err("needs at least one input".into());
    };
    let mut acc = (*first).clone();
    for v in &vals[1..] {
        acc = arith_values(&acc, v, op)?;
    }
    if mean {
        let n = vals.len() as f32;
        match &mut acc.data {
            Data::F(a) => a.mapv_inplace(|v| v / n),
            _ => return Err(format!("Mean needs float inputs, got {}", first.dtype)),
        }
    }
    Ok(vec![acc])
}

pub(crate) fn pow(ctx: &Ctx) -> OpResult {
    let (x, y) = (ctx.input(0)?, ctx.input(1)?);
    let data = match (&x.data, &y.data) {
        (Data::F(a), Data::F(b)) => Data::F(zip2(a, b, powf)?),
        (Data::F(a), Data::I(b)) => Data::F(zip2(a, b, |p, q| powf(p, q as f32))?),
        (Data::I(a), Data::I(b)) => Data::I(zip2(a, b, ipow)?),
        (Data::I(a), Data::F(b)) => Data::I(zip2(a, b, |p, q| (p as f64).powf(q as f64) as i64)?),
        _ => return Err(format!("Pow needs numeric operands, got {} and {}", x.dtype, y.dtype)),
    };
    Ok(vec![Value { dtype: x.dtype, data }])
}

/// `a^b` (squares and square roots exact), generic for the f64 checks.
pub fn powf<T: Real>(a: T, b: T) -> T {
    if b == T::of(2.0) {
        a * a
    } else if b == T::of(0.5) {
        a.sqrt()
    } else {
        a.powf(b)
    }
}

fn ipow(a: i64, b: i64) -> i64 {
    if b < 0 {
        // Integer results of negative powers truncate toward zero.
        return (a as f64).powf(b as f64) as i64;
    }
    let mut r: i64 = 1;
    for _ in 0..b.min(64) {
        r = r.wrapping_mul(a);
    }
    r
}

/// Mod: `fmod` = 0 gives the sign of the divisor (integers only), 1 the sign of the dividend.
pub(crate) fn modulo(ctx: &Ctx) -> OpResult {
    let fmod = ctx.flag("fmod", false)?;
    let (x, y) = (ctx.input(0)?, ctx.input(1)?);
    let data = match (&x.data, &y.data) {
        (Data::F(a), Data::F(b)) => {
            if !fmod {
                return Err("Mod on floating-point inputs requires fmod=1".into());
            }
            Data::F(zip2(a, b, |p, q| p % q)?)
        }
        (Data::I(a), Data::I(b)) => {
            if b.iter().any(|&v| v == 0) {
                return Err("integer Mod by zero".into());
            }
            Data::I(zip2(a, b, |p, q| {
                let r = p.wrapping_rem(q);
                if !fmod && r != 0 && ((r < 0) != (q < 0)) {
                    r + q
                } else {
                    r
                }
            })?)
        }
        _ => return Err(format!("Mod needs two float or two integer operands, got {} and {}", x.dtype, y.dtype)),
    };
    Ok(vec![Value { dtype: x.dtype, data }])
}

// ---------------------------------------------------------------- comparisons and logic

#[derive(Clone, Copy, Debug)]
pub(crate) enum Cmp {
    Eq,
    Lt,
    Gt,
    Le,
    Ge,
}

impl Cmp {
    fn on<T: PartialOrd>(self, a: T, b: T) -> bool {
        match self {
            Cmp::Eq => a == b,
            Cmp::Lt => a < b,
            Cmp::Gt => a > b,
            Cmp::Le => a <= b,
            Cmp::Ge => a >= b,
        }
    }
}

pub(crate) fn compare(ctx: &Ctx, c: Cmp) -> OpResult {
    let (x, y) = (ctx.input(0)?, ctx.input(1)?);
    let out = match (&x.data, &y.data) {
        (Data::F(a), Data::F(b)) => zip2(a, b, |p, q| c.on(p, q))?,
        (Data::I(a), Data::I(b)) => zip2(a, b, |p, q| c.on(p, q))?,
        (Data::B(a), Data::B(b)) => zip2(a, b, |p, q| c.on(p, q))?,
        _ => return Err(format!("{c:?} needs operands of one element type, got {} and {}", x.dtype, y.dtype)),
    };
    Ok(vec![Value::bool(out)])
}

#[derive(Clone, Copy, Debug)]
pub(crate) enum Logic {
    And,
    Or,
    Xor,
}

pub(crate) fn logic(ctx: &Ctx, l: Logic) -> OpResult {
    let (a, b) = (ctx.bool(0)?, ctx.bool(1)?);
    let out = match l {
        Logic::And => zip2(a, b, |p, q| p && q)?,
        Logic::Or => zip2(a, b, |p, q| p || q)?,
        Logic::Xor => zip2(a, b, |p, q| p != q)?,
    };
    Ok(vec![Value::bool(out)])
}

pub(crate) fn where_op(ctx: &Ctx) -> OpResult {
    let c = ctx.bool(0)?;
    let (x, y) = (ctx.input(1)?, ctx.input(2)?);
    let data = match (&x.data, &y.data) {
        (Data::F(a), Data::F(b)) => Data::F(zip3(c, a, b, |k, p, q| if k { p } else { q })?),
        (Data::I(a), Data::I(b)) => Data::I(zip3(c, a, b, |k, p, q| if k { p } else { q })?),
        (Data::B(a), Data::B(b)) => Data::B(zip3(c, a, b, |k, p, q| if k { p } else { q })?),
        _ => return Err(format!("Where needs X and Y of one element type, got {} and {}", x.dtype, y.dtype)),
    };
    Ok(vec![Value { dtype: x.dtype, data }])
}

/// Clip: bounds are attributes `min`/`max` below opset 11, optional scalar inputs from 11.
pub(crate) fn clip(ctx: &Ctx) -> OpResult {
    let x = ctx.input(0)?;
    let data = match &x.dense().data {
        Data::F(a) => {
            let (lo, hi) = if ctx.opset() < 11 {
                (ctx.float_or("min", f32::NEG_INFINITY)?, ctx.float_or("max", f32::INFINITY)?)
            } else {
                (bound_f32(ctx, 1)?.unwrap_or(f32::NEG_INFINITY), bound_f32(ctx, 2)?.unwrap_or(f32::INFINITY))
            };
            Data::F(a.mapv(|v| if v.is_nan() { v } else { v.max(lo).min(hi) }))
        }
        Data::I(a) => {
            let lo = bound_i64(ctx, 1)?.unwrap_or(i64::MIN);
            let hi = bound_i64(ctx, 2)?.unwrap_or(i64::MAX);
            Data::I(a.mapv(|v| v.max(lo).min(hi)))
        }
        Data::B(_) => return Err("Clip needs a numeric input, got bool".into()),
        Data::Q(_) => return Err(crate::value::NOT_DENSE.into()),
    };
    Ok(vec![Value { dtype: x.dtype, data }])
}

fn one<T: Copy>(a: &ArrayD<T>, i: usize) -> OpResult<T> {
    match (a.len(), a.iter().next()) {
        (1, Some(&v)) => Ok(v),
        _ => Err(format!("input {i} must be a scalar, got shape {:?}", a.shape())),
    }
}

fn bound_f32(ctx: &Ctx, i: usize) -> OpResult<Option<f32>> {
    match ctx.opt(i) {
        None => Ok(None),
        Some(v) => match &v.dense().data {
            Data::F(a) => one(a, i).map(Some),
            Data::I(a) => one(a, i).map(|x| Some(x as f32)),
            Data::B(_) => Err(format!("input {i} must be numeric, got bool")),
            Data::Q(_) => Err(crate::value::NOT_DENSE.into()),
        },
    }
}

fn bound_i64(ctx: &Ctx, i: usize) -> OpResult<Option<i64>> {
    match ctx.opt(i) {
        None => Ok(None),
        Some(v) => match &v.data {
            Data::I(a) => one(a, i).map(Some),
            _ => Err(format!("input {i} must be an integer scalar like the clipped input, got {}", v.dtype)),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::super::common::test_util::*;
    use jetc_ir::Attr;

    #[test]
    fn unary_values() {
        let x = f(&[4], &[-2.0, -0.5, 0.0, 1.5]);
        let cases: &[(&str, [f64; 4])] = &[
            ("Neg", [2.0, 0.5, 0.0, -1.5]),
            ("Abs", [2.0, 0.5, 0.0, 1.5]),
            ("Relu", [0.0, 0.0, 0.0, 1.5]),
            ("Floor", [-2.0, -1.0, 0.0, 1.0]),
            ("Ceil", [-2.0, -0.0, 0.0, 2.0]),
            ("Round", [-2.0, -0.0, 0.0, 2.0]),
            ("Exp", [0.1353352832, 0.6065306597, 1.0, 4.4816890703]),
            ("Sigmoid", [0.1192029220, 0.3775406688, 0.5, 0.8175744762]),
            ("Tanh", [-0.9640275801, -0.4621171573, 0.0, 0.9051482536]),
            ("Erf", [-0.9953222650, -0.5204998778, 0.0, 0.9661051465]),
            ("Sin", [-0.9092974268, -0.4794255386, 0.0, 0.9974949866]),
            ("Cos", [-0.4161468365, 0.8775825619, 1.0, 0.0707372017]),
            ("Sign", [-1.0, -1.0, 0.0, 1.0]),
        ];
        for (name, want) in cases {
            let y = run1(&op(name, 13, &[]), &[&x]);
            assert_close(&fvec(&y), want, 2e-7);
        }
        let y = run1(&op("Sqrt", 13, &[]), &[&f(&[2], &[4.0, 2.0])]);
        assert_close(&fvec(&y), &[2.0, std::f64::consts::SQRT_2], 1e-7);
        let y = run1(&op("Reciprocal", 13, &[]), &[&f(&[2], &[4.0, -0.5])]);
        assert_eq!(fvec(&y), vec![0.25, -2.0]);
        let y = run1(&op("Log", 13, &[]), &[&f(&[2], &[1.0, std::f32::consts::E])]);
        assert_close(&fvec(&y), &[0.0, 1.0], 1e-7);
        // Round half to even.
        let y = run1(&op("Round", 11, &[]), &[&f(&[3], &[0.5, 1.5, 2.5])]);
        assert_eq!(fvec(&y), vec![0.0, 2.0, 2.0]);
        // Integer Neg/Abs keep the dtype; float-only ops reject ints.
        let y = run1(&op("Neg", 13, &[]), &[&i(&[2], &[3, -4])]);
        assert_eq!(ivec(&y), vec![-3, 4]);
        assert!(run(&op("Exp", 13, &[]), &[&i(&[1], &[1])]).is_err());
    }

    #[test]
    fn gelu_variants() {
        let x = f(&[3], &[-1.0, 0.5, 2.0]);
        // Exact: 0.5·x·(1+erf(x/√2)).
        let exact = [-0.15865525393, 0.34573123063, 1.95449973610];
        assert_close(&fvec(&run1(&op("Gelu", 20, &[]), &[&x])), &exact, 1e-6);
        assert_close(&fvec(&run1(&ms_op("Gelu", &[]), &[&x])), &exact, 1e-6);
        let tanh = [-0.15880800939, 0.34571400982, 1.95459769409];
        let o = op("Gelu", 20, &[("approximate", Attr::String("tanh".into()))]);
        assert_close(&fvec(&run1(&o, &[&x])), &tanh, 1e-6);
        let y = run1(&ms_op("FastGelu", &[]), &[&x, &f(&[1], &[0.0])]);
        assert_close(&fvec(&y), &tanh, 1e-6);
        let y = run1(&ms_op("QuickGelu", &[]), &[&x]);
        let want: Vec<f64> = [-1.0f64, 0.5, 2.0].iter().map(|&v| v / (1.0 + (-1.702 * v).exp())).collect();
        assert_close(&fvec(&y), &want, 1e-6);
    }

    #[test]
    fn activations_with_attributes() {
        let x = f(&[3], &[-2.0, 0.5, 3.0]);
        let xs = [-2.0f64, 0.5, 3.0];
        let map = |g: &dyn Fn(f64) -> f64| xs.iter().map(|&v| g(v)).collect::<Vec<f64>>();
        let y = run1(&op("LeakyRelu", 16, &[("alpha", Attr::Float(0.1))]), &[&x]);
        assert_close(&fvec(&y), &[-0.2, 0.5, 3.0], 1e-7);
        let y = run1(&op("Elu", 6, &[]), &[&x]);
        assert_close(&fvec(&y), &map(&|v| if v >= 0.0 { v } else { v.exp() - 1.0 }), 1e-7);
        let y = run1(&op("HardSigmoid", 6, &[]), &[&x]);
        assert_close(&fvec(&y), &[0.1, 0.6, 1.0], 1e-7);
        let y = run1(&op("HardSwish", 14, &[]), &[&x]);
        assert_close(&fvec(&y), &map(&|v| v * (v / 6.0 + 0.5).clamp(0.0, 1.0)), 1e-7);
        let y = run1(&op("Softplus", 1, &[]), &[&x]);
        assert_close(&fvec(&y), &map(&|v| (1.0 + v.exp()).ln()), 1e-6);
        let y = run1(&op("Softsign", 1, &[]), &[&x]);
        assert_close(&fvec(&y), &map(&|v| v / (1.0 + v.abs())), 1e-7);
        let y = run1(&op("Swish", 24, &[]), &[&x]);
        assert_close(&fvec(&y), &map(&|v| v / (1.0 + (-v).exp())), 1e-6);
        // alpha scales the sigmoid's argument: Swish with alpha 2 is not SiLU.
        let y = run1(&op("Swish", 24, &[("alpha", Attr::Float(2.0))]), &[&x]);
        assert_close(&fvec(&y), &map(&|v| v / (1.0 + (-2.0 * v).exp())), 1e-6);
        // SwiGLU (opset 28): Swish_alpha(A) * B, A and B of one shape.
        let b = f(&[3], &[2.0, -1.0, 0.5]);
        let y = run1(&op("SwiGLU", 28, &[("alpha", Attr::Float(1.5))]), &[&x, &b]);
        let want: Vec<f64> = xs.iter().zip([2.0, -1.0, 0.5]).map(|(&v, w)| v / (1.0 + (-1.5 * v).exp()) * w).collect();
        assert_close(&fvec(&y), &want, 1e-6);
        assert!(run(&op("SwiGLU", 28, &[]), &[&x, &f(&[1], &[1.0])]).is_err(), "SwiGLU does not broadcast");
        let y = run1(&op("Tan", 7, &[]), &[&x]);
        assert_close(&fvec(&y), &map(&f64::tan), 1e-6);
        // BiasGelu adds the bias (broadcast on the last axis) before the exact Gelu.
        let y = run1(&ms_op("BiasGelu", &[]), &[&f(&[2, 2], &[0., 1., 2., 3.]), &f(&[2], &[-1., 1.])]);
        let g = |v: f64| 0.5 * v * (1.0 + super::erf(v / std::f64::consts::SQRT_2));
        assert_close(&fvec(&y), &[g(-1.0), g(2.0), g(1.0), g(4.0)], 1e-6);
    }

    #[test]
    fn binary_broadcast_and_int_division() {
        let a = f(&[2, 3], &[1., 2., 3., 4., 5., 6.]);
        let b = f(&[3], &[10., 20., 30.]);
        assert_eq!(fvec(&run1(&op("Add", 14, &[]), &[&a, &b])), vec![11., 22., 33., 14., 25., 36.]);
        assert_eq!(fvec(&run1(&op("Sub", 14, &[]), &[&b, &a])), vec![9., 18., 27., 6., 15., 24.]);
        assert_eq!(fvec(&run1(&op("Mul", 14, &[]), &[&a, &f(&[2, 1], &[2., 3.])])), vec![2., 4., 6., 12., 15., 18.]);
        assert_eq!(fvec(&run1(&op("Div", 14, &[]), &[&a, &f(&[], &[2.])])), vec![0.5, 1., 1.5, 2., 2.5, 3.]);
        // C-style truncation toward zero.
        let y = run1(&op("Div", 14, &[]), &[&i(&[4], &[7, -7, 7, -7]), &i(&[4], &[2, 2, -2, -2])]);
        assert_eq!(ivec(&y), vec![3, -3, -3, 3]);
        assert!(run(&op("Div", 14, &[]), &[&i(&[1], &[1]), &i(&[1], &[0])]).is_err());
        let e = run(&op("Add", 14, &[]), &[&a, &f(&[2], &[1., 2.])]).unwrap_err();
        assert!(e.to_string().contains("broadcast"), "{e}");
        assert!(run(&op("Add", 14, &[]), &[&a, &i(&[1], &[1])]).is_err());
    }

    #[test]
    fn pow_mod_variadic() {
        let y = run1(&op("Pow", 15, &[]), &[&f(&[3], &[2., 3., 4.]), &f(&[1], &[2.])]);
        assert_eq!(fvec(&y), vec![4., 9., 16.]);
        let y = run1(&op("Pow", 15, &[]), &[&f(&[2], &[4., 9.]), &i(&[], &[3])]);
        assert_eq!(fvec(&y), vec![64., 729.]);
        let y = run1(&op("Pow", 15, &[]), &[&i(&[2], &[3, -2]), &i(&[2], &[3, 3])]);
        assert_eq!(ivec(&y), vec![27, -8]);
        let a = i(&[4], &[7, -7, 7, -7]);
        let m = i(&[4], &[3, 3, -3, -3]);
        assert_eq!(ivec(&run1(&op("Mod", 13, &[]), &[&a, &m])), vec![1, 2, -2, -1]);
        assert_eq!(ivec(&run1(&op("Mod", 13, &[("fmod", Attr::Int(1))]), &[&a, &m])), vec![1, -1, 1, -1]);
        let y = run1(&op("Mod", 13, &[("fmod", Attr::Int(1))]), &[&f(&[2], &[5.5, -5.5]), &f(&[1], &[2.0])]);
        assert_eq!(fvec(&y), vec![1.5, -1.5]);
        assert!(run(&op("Mod", 13, &[]), &[&f(&[1], &[1.0]), &f(&[1], &[2.0])]).is_err());
        let y = run1(&op("Max", 13, &[]), &[&f(&[2], &[1., 5.]), &f(&[2, 1], &[3., 0.]), &f(&[], &[2.])]);
        assert_eq!(y.shape(), &[2, 2]);
        assert_eq!(fvec(&y), vec![3., 5., 2., 5.]);
        let y = run1(&op("Min", 13, &[]), &[&i(&[2], &[1, 5]), &i(&[1], &[3])]);
        assert_eq!(ivec(&y), vec![1, 3]);
        let y = run1(&op("Sum", 13, &[]), &[&f(&[2], &[1., 2.]), &f(&[2], &[3., 4.]), &f(&[2], &[5., 6.])]);
        assert_eq!(fvec(&y), vec![9., 12.]);
        let y = run1(&op("Mean", 13, &[]), &[&f(&[2], &[1., 2.]), &f(&[2], &[3., 6.])]);
        assert_eq!(fvec(&y), vec![2., 4.]);
    }

    #[test]
    fn comparisons_logic_where() {
        let a = f(&[3], &[1., 2., 3.]);
        let two = f(&[1], &[2.]);
        assert_eq!(bvec(&run1(&op("Equal", 13, &[]), &[&a, &two])), vec![false, true, false]);
        assert_eq!(bvec(&run1(&op("Less", 13, &[]), &[&a, &two])), vec![true, false, false]);
        assert_eq!(bvec(&run1(&op("Greater", 13, &[]), &[&a, &two])), vec![false, false, true]);
        assert_eq!(bvec(&run1(&op("LessOrEqual", 16, &[]), &[&a, &two])), vec![true, true, false]);
        assert_eq!(bvec(&run1(&op("GreaterOrEqual", 16, &[]), &[&a, &two])), vec![false, true, true]);
        assert_eq!(bvec(&run1(&op("Equal", 13, &[]), &[&i(&[2], &[4, 5]), &i(&[], &[5])])), vec![false, true]);
        assert!(run(&op("Equal", 13, &[]), &[&a, &i(&[1], &[1])]).is_err());
        let p = b(&[4], &[true, true, false, false]);
        let q = b(&[4], &[true, false, true, false]);
        assert_eq!(bvec(&run1(&op("And", 7, &[]), &[&p, &q])), vec![true, false, false, false]);
        assert_eq!(bvec(&run1(&op("Or", 7, &[]), &[&p, &q])), vec![true, true, true, false]);
        assert_eq!(bvec(&run1(&op("Xor", 7, &[]), &[&p, &q])), vec![false, true, true, false]);
        assert_eq!(bvec(&run1(&op("Not", 1, &[]), &[&p])), vec![false, false, true, true]);
        let c = b(&[2, 1], &[true, false]);
        let y = run1(&op("Where", 16, &[]), &[&c, &f(&[2], &[1., 2.]), &f(&[], &[-1.])]);
        assert_eq!(y.shape(), &[2, 2]);
        assert_eq!(fvec(&y), vec![1., 2., -1., -1.]);
        assert!(run(&op("Where", 16, &[]), &[&c, &f(&[2], &[1., 2.]), &i(&[], &[1])]).is_err());
    }

    #[test]
    fn clip_isnan_isinf() {
        let x = f(&[4], &[-3., -1., 1., 3.]);
        let y = run1(&op("Clip", 13, &[]), &[&x, &f(&[], &[-2.]), &f(&[], &[2.])]);
        assert_eq!(fvec(&y), vec![-2., -1., 1., 2.]);
        let y = run_opt(&op("Clip", 13, &[]), &[Some(&x), None, Some(&f(&[], &[0.]))], 1).unwrap();
        assert_eq!(fvec(&y[0]), vec![-3., -1., 0., 0.]);
        let y = run1(&op("Clip", 6, &[("min", Attr::Float(0.0))]), &[&x]);
        assert_eq!(fvec(&y), vec![0., 0., 1., 3.]);
        let y = run1(&op("Clip", 13, &[]), &[&i(&[3], &[-5, 0, 5]), &i(&[], &[-1]), &i(&[], &[1])]);
        assert_eq!(ivec(&y), vec![-1, 0, 1]);
        let z = f(&[4], &[f32::NAN, f32::INFINITY, f32::NEG_INFINITY, 0.0]);
        assert_eq!(bvec(&run1(&op("IsNaN", 13, &[]), &[&z])), vec![true, false, false, false]);
        assert_eq!(bvec(&run1(&op("IsInf", 10, &[]), &[&z])), vec![false, true, true, false]);
        let o = op("IsInf", 10, &[("detect_negative", Attr::Int(0))]);
        assert_eq!(bvec(&run1(&o, &[&z])), vec![false, true, false, false]);
    }
}
