//! Reductions: ReduceMean/Sum/Max/Min/Prod/SumSquare/L1/L2/LogSumExp, ArgMax/ArgMin,
//! CumSum.
//!
//! Opset notes: `axes` is an input from opset 13 for ReduceSum and from opset 18 for the
//! others (an attribute before). Empty or absent axes reduce everything unless
//! `noop_with_empty_axes` = 1, which returns the input. Float sums accumulate in f64.
use ndarray::{ArrayD, Axis};

use super::common::{array, norm_axes, norm_axis, Ctx, OpResult};
use crate::value::{Data, Value};

#[derive(Clone, Copy, Debug, PartialEq)]
pub(crate) enum Reduce {
    Mean,
    Sum,
    Max,
    Min,
    Prod,
    SumSquare,
    L1,
    L2,
    LogSumExp,
}

impl Reduce {
    fn float(self, xs: &[f32]) -> f32 {
        match self {
            Reduce::Sum => xs.iter().map(|&v| v as f64).sum::<f64>() as f32,
            Reduce::Mean => (xs.iter().map(|&v| v as f64).sum::<f64>() / xs.len() as f64) as f32,
            Reduce::Max => xs.iter().fold(f32::NEG_INFINITY, |m, &v| if v > m || v.is_nan() { v } else { m }),
            Reduce::Min => xs.iter().fold(f32::INFINITY, |m, &v| if v < m || v.is_nan() { v } else { m }),
            Reduce::Prod => xs.iter().map(|&v| v as f64).product::<f64>() as f32,
            Reduce::SumSquare => xs.iter().map(|&v| (v as f64) * (v as f64)).sum::<f64>() as f32,
            Reduce::L1 => xs.iter().map(|&v| (v as f64).abs()).sum::<f64>() as f32,
            Reduce::L2 => xs.iter().map(|&v| (v as f64) * (v as f64)).sum::<f64>().sqrt() as f32,
            Reduce::LogSumExp => {
                let m = xs.iter().fold(f32::NEG_INFINITY, |m, &v| m.max(v));
                if m == f32::NEG_INFINITY {
                    return m;
                }
                (m as f64 + xs.iter().map(|&v| ((v - m) as f64).exp()).sum::<f64>().ln()) as f32
            }
        }
    }

    fn int(self, xs: &[i64]) -> OpResult<i64> {
        Ok(match self {
            Reduce::Sum => xs.iter().fold(0i64, |s, &v| s.wrapping_add(v)),
            Reduce::Mean => {
                if xs.is_empty() {
                    return Err("ReduceMean over an empty set of integers".into());
                }
                xs.iter().fold(0i64, |s, &v| s.wrapping_add(v)) / xs.len() as i64
            }
            Reduce::Max => xs.iter().copied().max().unwrap_or(i64::MIN),
            Reduce::Min => xs.iter().copied().min().unwrap_or(i64::MAX),
            Reduce::Prod => xs.iter().fold(1i64, |s, &v| s.wrapping_mul(v)),
            Reduce::SumSquare => xs.iter().fold(0i64, |s, &v| s.wrapping_add(v.wrapping_mul(v))),
            Reduce::L1 => xs.iter().fold(0i64, |s, &v| s.wrapping_add(v.wrapping_abs())),
            Reduce::L2 | Reduce::LogSumExp => return Err(format!("{self:?} needs a float input")),
        })
    }
}

/// Moves `axes` to the end (in order) and returns the standard-layout data with the
/// number of reduced elements per output element.
fn axes_last<T: Clone>(a: &ArrayD<T>, axes: &[usize]) -> (Vec<T>, usize) {
    let mut perm: Vec<usize> = (0..a.ndim()).filter(|d| !axes.contains(d)).collect();
    perm.extend_from_slice(axes);
    let inner: usize = axes.iter().map(|&d| a.shape()[d]).product();
    let v = a.view().permuted_axes(perm);
    let data = match v.as_slice() {
        Some(s) => s.to_vec(),
        None => v.iter().cloned().collect(),
    };
    (data, inner)
}

fn out_shape(shape: &[usize], axes: &[usize], keepdims: bool) -> Vec<usize> {
    shape
        .iter()
        .enumerate()
        .filter_map(|(d, &n)| {
            if !axes.contains(&d) {
                Some(n)
            } else if keepdims {
                Some(1)
            } else {
                None
            }
        })
        .collect()
}

fn chunk_reduce<T, U>(data: &[T], inner: usize, outer: usize, f: impl Fn(&[T]) -> OpResult<U>) -> OpResult<Vec<U>> {
    if inner == 0 {
        return (0..outer).map(|_| f(&[])).collect();
    }
    data.chunks(inner).map(f).collect()
}

pub(crate) fn reduce(ctx: &Ctx, r: Reduce) -> OpResult {
    let x = ctx.input(0)?;
    let keepdims = ctx.flag("keepdims", true)?;
    let noop = ctx.flag("noop_with_empty_axes", false)?;
    let from = if r == Reduce::Sum { 13 } else { 18 };
    let axes = ctx.axes_attr_or_input(1, from)?.unwrap_or_default();
    let rank = x.shape().len();
    if axes.is_empty() && noop {
        return Ok(vec![x.clone()]);
    }
    let mut axes = if axes.is_empty() { (0..rank).collect() } else { norm_axes(&axes, rank)? };
    axes.sort_unstable();
    let shape = out_shape(x.shape(), &axes, keepdims);
    let outer: usize = shape.iter().product();
    let data = match &x.dense().data {
        Data::F(a) => {
            let (d, inner) = axes_last(a, &axes);
            Data::F(array(&shape, chunk_reduce(&d, inner, outer, |c| Ok(r.float(c)))?)?)
        }
        Data::I(a) => {
            let (d, inner) = axes_last(a, &axes);
            Data::I(array(&shape, chunk_reduce(&d, inner, outer, |c| r.int(c))?)?)
        }
        Data::B(_) => return Err(format!("{r:?} needs a numeric input, got bool")),
        Data::Q(_) => return Err(crate::value::NOT_DENSE.into()),
    };
    Ok(vec![Value { dtype: x.dtype, data }])
}

/// ArgMax / ArgMin with `axis`, `keepdims`, `select_last_index`.
pub(crate) fn arg_extreme(ctx: &Ctx, max: bool) -> OpResult {
    let x = ctx.input(0)?;
    let axis = norm_axis(ctx.int_or("axis", 0)?, x.shape().len())?;
    let keepdims = ctx.flag("keepdims", true)?;
    let last = ctx.flag("select_last_index", false)?;
    let shape = out_shape(x.shape(), &[axis], keepdims);
    if x.shape()[axis] == 0 {
        return Err(format!(
            "{} over an empty axis {axis} of shape {:?}",
            if max { "ArgMax" } else { "ArgMin" },
            x.shape()
        ));
    }
    let pick = |better: bool, equal: bool| better || (last && equal);
    let idx: Vec<i64> = match &x.dense().data {
        Data::F(a) => {
            let (d, inner) = axes_last(a, &[axis]);
            d.chunks(inner)
                .map(|c| arg_of(c, |v, best| pick(if max { v > best } else { v < best }, v == best)))
                .collect()
        }
        Data::I(a) => {
            let (d, inner) = axes_last(a, &[axis]);
            d.chunks(inner)
                .map(|c| arg_of(c, |v, best| pick(if max { v > best } else { v < best }, v == best)))
                .collect()
        }
        Data::B(_) => return Err("ArgMax/ArgMin need a numeric input, got bool".into()),
        Data::Q(_) => return Err(crate::value::NOT_DENSE.into()),
    };
    Ok(vec![Value::i64(array(&shape, idx)?)])
}

fn arg_of<T: Copy>(c: &[T], replace: impl Fn(T, T) -> bool) -> i64 {
    let mut best = 0usize;
    for (k, &v) in c.iter().enumerate().skip(1) {
        if replace(v, c[best]) {
            best = k;
        }
    }
    best as i64
}

/// CumSum along the axis given by input 1, with `exclusive` and `reverse`.
pub(crate) fn cumsum(ctx: &Ctx) -> OpResult {
    let x = ctx.input(0)?;
    let axis = norm_axis(ctx.scalar_int(1)?, x.shape().len())?;
    let exclusive = ctx.flag("exclusive", false)?;
    let reverse = ctx.flag("reverse", false)?;
    let data = match &x.dense().data {
        Data::F(a) => Data::F(scan(a, axis, exclusive, reverse, 0f32, |s, v| s + v)),
        Data::I(a) => Data::I(scan(a, axis, exclusive, reverse, 0i64, |s, v| s.wrapping_add(v))),
        Data::B(_) => return Err("CumSum needs a numeric input, got bool".into()),
        Data::Q(_) => return Err(crate::value::NOT_DENSE.into()),
    };
    Ok(vec![Value { dtype: x.dtype, data }])
}

fn scan<T: Copy>(
    a: &ArrayD<T>,
    axis: usize,
    exclusive: bool,
    reverse: bool,
    zero: T,
    add: impl Fn(T, T) -> T,
) -> ArrayD<T> {
    let mut out = a.as_standard_layout().into_owned();
    for mut lane in out.lanes_mut(Axis(axis)) {
        let n = lane.len();
        let mut acc = zero;
        for t in 0..n {
            let k = if reverse { n - 1 - t } else { t };
            let v = lane[k];
            if exclusive {
                lane[k] = acc;
                acc = add(acc, v);
            } else {
                acc = add(acc, v);
                lane[k] = acc;
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::super::common::test_util::*;
    use jetc_ir::Attr;

    fn x() -> crate::Value {
        f(&[2, 3, 2], &[1., 2., 3., 4., 5., 6., 7., 8., 9., 10., 11., 12.])
    }

    #[test]
    fn reduce_axes_attribute_and_input() {
        // opset 13: axes attribute for ReduceMean, input for ReduceSum.
        let y = run1(&op("ReduceMean", 13, &[("axes", Attr::Ints(vec![1]))]), &[&x()]);
        assert_eq!(y.shape(), &[2, 1, 2]);
        assert_eq!(fvec(&y), vec![3., 4., 9., 10.]);
        let y = run1(&op("ReduceSum", 13, &[("keepdims", Attr::Int(0))]), &[&x(), &i(&[2], &[0, -1])]);
        assert_eq!(y.shape(), &[3]);
        assert_eq!(fvec(&y), vec![1. + 2. + 7. + 8., 3. + 4. + 9. + 10., 5. + 6. + 11. + 12.]);
        // opset 18: axes input for ReduceMean.
        let y = run1(&op("ReduceMean", 18, &[]), &[&x(), &i(&[1], &[-1])]);
        assert_eq!(y.shape(), &[2, 3, 1]);
        assert_eq!(fvec(&y), vec![1.5, 3.5, 5.5, 7.5, 9.5, 11.5]);
        // No axes: everything, or a no-op with noop_with_empty_axes.
        let y = run1(&op("ReduceMax", 18, &[("keepdims", Attr::Int(0))]), &[&x()]);
        assert_eq!(y.shape(), &[] as &[usize]);
        assert_eq!(fvec(&y), vec![12.]);
        let y = run1(&op("ReduceSum", 13, &[("noop_with_empty_axes", Attr::Int(1))]), &[&x()]);
        assert_eq!(y, x());
        assert!(run(&op("ReduceMean", 13, &[("axes", Attr::Ints(vec![3]))]), &[&x()]).is_err());
    }

    #[test]
    fn reduce_kinds() {
        let v = f(&[2, 2], &[1., -2., 3., 4.]);
        let all = |name: &str| {
            fvec(&run1(&op(name, 13, &[("axes", Attr::Ints(vec![1])), ("keepdims", Attr::Int(0))]), &[&v]))
        };
        assert_eq!(all("ReduceMin"), vec![-2., 3.]);
        assert_eq!(all("ReduceProd"), vec![-2., 12.]);
        assert_eq!(all("ReduceSumSquare"), vec![5., 25.]);
        assert_eq!(all("ReduceL1"), vec![3., 7.]);
        assert_close(&all("ReduceL2"), &[5f64.sqrt(), 5.0], 1e-7);
        assert_close(
            &all("ReduceLogSumExp"),
            &[(1f64.exp() + (-2f64).exp()).ln(), (3f64.exp() + 4f64.exp()).ln()],
            1e-7,
        );
        let y = run1(&op("ReduceMax", 13, &[("axes", Attr::Ints(vec![0]))]), &[&i(&[2, 2], &[1, 9, 5, 3])]);
        assert_eq!(ivec(&y), vec![5, 9]);
    }

    #[test]
    fn argmax_argmin() {
        let v = f(&[2, 3], &[1., 5., 5., 7., 0., 7.]);
        let y = run1(&op("ArgMax", 13, &[("axis", Attr::Int(1))]), &[&v]);
        assert_eq!(y.shape(), &[2, 1]);
        assert_eq!(ivec(&y), vec![1, 0]);
        let o = op(
            "ArgMax",
            13,
            &[("axis", Attr::Int(-1)), ("keepdims", Attr::Int(0)), ("select_last_index", Attr::Int(1))],
        );
        assert_eq!(ivec(&run1(&o, &[&v])), vec![2, 2]);
        let y = run1(&op("ArgMin", 13, &[("keepdims", Attr::Int(0))]), &[&v]);
        assert_eq!(ivec(&y), vec![0, 1, 0]);
    }

    #[test]
    fn cumsum_modes() {
        let v = f(&[2, 3], &[1., 2., 3., 4., 5., 6.]);
        let ax = i(&[], &[1]);
        assert_eq!(fvec(&run1(&op("CumSum", 14, &[]), &[&v, &ax])), vec![1., 3., 6., 4., 9., 15.]);
        let o = op("CumSum", 14, &[("exclusive", Attr::Int(1))]);
        assert_eq!(fvec(&run1(&o, &[&v, &ax])), vec![0., 1., 3., 0., 4., 9.]);
        let o = op("CumSum", 14, &[("reverse", Attr::Int(1))]);
        assert_eq!(fvec(&run1(&o, &[&v, &ax])), vec![6., 5., 3., 15., 11., 6.]);
        let o = op("CumSum", 14, &[("reverse", Attr::Int(1)), ("exclusive", Attr::Int(1))]);
        assert_eq!(fvec(&run1(&o, &[&v, &i(&[1], &[0])])), vec![4., 5., 6., 0., 0., 0.]);
        assert_eq!(ivec(&run1(&op("CumSum", 14, &[]), &[&i(&[3], &[1, 1, 1]), &i(&[], &[0])])), vec![1, 2, 3]);
    }
}
