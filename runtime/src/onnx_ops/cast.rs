//! Cast (attribute `to`) and CastLike (target = dtype of input 1).
//!
//! Floats of every width live in f32: casting to f16/bf16 rounds through `half` (round to
//! nearest even), to f64 keeps the value. Float → int truncates toward zero (NaN → 0,
//! out-of-range saturates to i64 first) and then wraps to the target width like C; int → int
//! wraps; anything → bool is `!= 0`. The `saturate` attribute only concerns float8 types,
//! which jetc does not have.
use half::{bf16, f16};
use jetc_ir::DType;

use super::common::{Ctx, OpResult};
use crate::value::{Data, Value};

pub(crate) fn cast(ctx: &Ctx) -> OpResult {
    let code = ctx.req_int("to")?;
    let to = i32::try_from(code)
        .ok()
        .and_then(DType::from_onnx)
        .ok_or_else(|| format!("attribute `to` = {code} is not a tensor type jetc supports"))?;
    Ok(vec![cast_value(ctx.input(0)?, to)])
}

pub(crate) fn cast_like(ctx: &Ctx) -> OpResult {
    Ok(vec![cast_value(ctx.input(0)?, ctx.input(1)?.dtype)])
}

/// Rounds an f32 to the precision of float dtype `to`.
pub(crate) fn round_float(v: f32, to: DType) -> f32 {
    match to {
        DType::F16 => f16::from_f32(v).to_f32(),
        DType::BF16 => bf16::from_f32(v).to_f32(),
        _ => v,
    }
}

/// Wraps an i64 to the range of integer dtype `to`.
pub(crate) fn wrap_int(v: i64, to: DType) -> i64 {
    match to {
        DType::I32 => v as i32 as i64,
        DType::I16 => v as i16 as i64,
        DType::I8 => v as i8 as i64,
        DType::U8 => v as u8 as i64,
        _ => v,
    }
}

pub(crate) fn cast_value(x: &Value, to: DType) -> Value {
    let data = match (&x.dense().data, to) {
        (Data::F(a), DType::Bool) => Data::B(a.mapv(|v| v != 0.0)),
        (Data::F(a), t) if t.is_float() => Data::F(a.mapv(|v| round_float(v, t))),
        (Data::F(a), t) => Data::I(a.mapv(|v| wrap_int(v as i64, t))),
        (Data::I(a), DType::Bool) => Data::B(a.mapv(|v| v != 0)),
        (Data::I(a), t) if t.is_float() => Data::F(a.mapv(|v| round_float(v as f32, t))),
        (Data::I(a), t) => Data::I(a.mapv(|v| wrap_int(v, t))),
        (Data::B(a), DType::Bool) => Data::B(a.clone()),
        (Data::B(a), t) if t.is_float() => Data::F(a.mapv(|v| v as u8 as f32)),
        (Data::B(a), _) => Data::I(a.mapv(|v| v as i64)),
        (Data::Q(s), _) => return cast_value(s.dense(), to),
    };
    Value { dtype: to, data }
}

#[cfg(test)]
mod tests {
    use super::super::common::test_util::*;
    use jetc_ir::{Attr, DType};

    fn cast_to(x: &crate::Value, to: DType) -> crate::Value {
        run1(&op("Cast", 19, &[("to", Attr::Int(to.to_onnx() as i64))]), &[x])
    }

    #[test]
    fn float_to_int_truncates_and_wraps() {
        let x = f(&[5], &[1.7, -1.7, 300.0, -129.5, f32::NAN]);
        let y = cast_to(&x, DType::I64);
        assert_eq!(y.dtype, DType::I64);
        assert_eq!(ivec(&y), vec![1, -1, 300, -129, 0]);
        assert_eq!(ivec(&cast_to(&x, DType::U8)), vec![1, 255, 44, 127, 0]);
        assert_eq!(ivec(&cast_to(&x, DType::I8)), vec![1, -1, 44, 127, 0]);
        assert_eq!(ivec(&cast_to(&i(&[2], &[1 << 33, -1]), DType::I32)), vec![0, -1]);
    }

    #[test]
    fn half_precision_rounding() {
        // 1 + 2^-11 is a tie between f16 neighbours 1 and 1 + 2^-10: rounds to even (1).
        let x = f(&[3], &[1.0 + 1.0 / 2048.0, 1.0 + 3.0 / 2048.0, 70000.0]);
        let y = cast_to(&x, DType::F16);
        assert_eq!(y.dtype, DType::F16);
        assert_eq!(fvec(&y), vec![1.0, 1.0 + 2.0 / 1024.0, f32::INFINITY]);
        // bf16 has 7 fraction bits (ulp 2^-7 at 1): 1 + 2^-9 rounds down, 1 + 3·2^-9 up.
        let x = f(&[2], &[1.0 + 1.0 / 512.0, 1.0 + 3.0 / 512.0]);
        let y = cast_to(&x, DType::BF16);
        assert_eq!(fvec(&y), vec![1.0, 1.0 + 1.0 / 128.0]);
    }

    #[test]
    fn bools_and_cast_like() {
        assert_eq!(bvec(&cast_to(&f(&[3], &[0.0, -0.0, 0.1]), DType::Bool)), vec![false, false, true]);
        assert_eq!(bvec(&cast_to(&i(&[2], &[0, 7]), DType::Bool)), vec![false, true]);
        assert_eq!(fvec(&cast_to(&b(&[2], &[true, false]), DType::F32)), vec![1.0, 0.0]);
        assert_eq!(ivec(&cast_to(&b(&[2], &[true, false]), DType::I32)), vec![1, 0]);
        let y = run1(&op("CastLike", 19, &[]), &[&i(&[2], &[3, -4]), &f(&[1], &[0.0])]);
        assert_eq!(y.dtype, DType::F32);
        assert_eq!(fvec(&y), vec![3.0, -4.0]);
        let e = run(&op("Cast", 19, &[("to", Attr::Int(8))]), &[&f(&[1], &[1.0])]).unwrap_err();
        assert!(e.to_string().contains("`to` = 8"), "{e}");
        assert!(run(&op("Cast", 19, &[]), &[&f(&[1], &[1.0])]).is_err());
    }
}
