//! Indexing ops: Gather, GatherElements, GatherND (`batch_dims`), ScatterND and
//! ScatterElements (`reduction` none/add/mul/max/min; legacy Scatter is ScatterElements),
//! NonZero. Negative indices count from the end; out-of-range indices are errors.
use ndarray::{ArrayD, Dimension, IxDyn};

use super::common::{array, contiguous, map_data, norm_axis, to_vec, Ctx, OpResult};
use crate::value::{Data, Value};

/// Resolves a possibly negative index against `dim`.
fn index(i: i64, dim: usize, what: &str) -> OpResult<usize> {
    let j = if i < 0 { i + dim as i64 } else { i };
    if (0..dim as i64).contains(&j) {
        Ok(j as usize)
    } else {
        Err(format!("{what} index {i} is out of range for a dimension of size {dim}"))
    }
}

fn gather_array<T: Clone>(a: &ArrayD<T>, axis: usize, idx: &ArrayD<i64>) -> OpResult<ArrayD<T>> {
    let shape = a.shape();
    let dim = shape[axis];
    let outer: usize = shape[..axis].iter().product();
    let inner: usize = shape[axis + 1..].iter().product();
    let ids: Vec<usize> = idx.iter().map(|&i| index(i, dim, "Gather")).collect::<OpResult<_>>()?;
    let src = contiguous(a);
    let mut out = Vec::with_capacity(outer * ids.len() * inner);
    for o in 0..outer {
        for &i in &ids {
            let start = (o * dim + i) * inner;
            out.extend_from_slice(&src[start..start + inner]);
        }
    }
    let mut out_shape = shape[..axis].to_vec();
    out_shape.extend_from_slice(idx.shape());
    out_shape.extend_from_slice(&shape[axis + 1..]);
    array(&out_shape, out)
}

pub(crate) fn gather(ctx: &Ctx) -> OpResult {
    let x = ctx.input(0)?;
    let idx = ctx.i64(1)?;
    let axis = norm_axis(ctx.int_or("axis", 0)?, x.shape().len())?;
    if x.stored().is_some_and(|s| !s.stored().transposed()) && axis == 0 {
        // Rows of an embedding table kept in its stored precision.
        return Ok(vec![crate::decoder_ops::table_lookup(x, idx, "data")?]);
    }
    let x = x.dense();
    Ok(vec![Value { dtype: x.dtype, data: map_data!(x, |a| gather_array(a, axis, idx)?) }])
}

fn gather_elements_array<T: Clone>(a: &ArrayD<T>, axis: usize, idx: &ArrayD<i64>) -> OpResult<ArrayD<T>> {
    if idx.ndim() != a.ndim() {
        return Err(format!("indices of shape {:?} must have the rank of data {:?}", idx.shape(), a.shape()));
    }
    if (0..a.ndim()).any(|d| d != axis && idx.shape()[d] > a.shape()[d]) {
        return Err(format!("indices of shape {:?} exceed data {:?} outside axis {axis}", idx.shape(), a.shape()));
    }
    let mut out = Vec::with_capacity(idx.len());
    for (pos, &i) in idx.indexed_iter() {
        let mut src = pos.slice().to_vec();
        src[axis] = index(i, a.shape()[axis], "GatherElements")?;
        out.push(a[IxDyn(&src)].clone());
    }
    array(idx.shape(), out)
}

pub(crate) fn gather_elements(ctx: &Ctx) -> OpResult {
    let x = ctx.input(0)?;
    let idx = ctx.i64(1)?;
    let axis = norm_axis(ctx.int_or("axis", 0)?, x.shape().len())?;
    let x = x.dense();
    Ok(vec![Value { dtype: x.dtype, data: map_data!(x, |a| gather_elements_array(a, axis, idx)?) }])
}

/// Offsets into data (within one batch) of the slices addressed by an index tuple.
fn nd_offset(tuple: &[i64], dims: &[usize], slice: usize) -> OpResult<usize> {
    let mut off = 0usize;
    for (&i, &d) in tuple.iter().zip(dims) {
        off = off * d + index(i, d, "ND")?;
    }
    Ok(off * slice)
}

fn gather_nd_array<T: Clone>(a: &ArrayD<T>, idx: &ArrayD<i64>, b: usize) -> OpResult<ArrayD<T>> {
    let (ds, is) = (a.shape(), idx.shape());
    let k = *is.last().ok_or("GatherND indices must have rank >= 1")?;
    if b >= ds.len().min(is.len()) || ds[..b] != is[..b] || b + k > ds.len() {
        return Err(format!("GatherND: indices {is:?} do not fit data {ds:?} with batch_dims {b}"));
    }
    let batches: usize = ds[..b].iter().product();
    let slice: usize = ds[b + k..].iter().product();
    let per_batch: usize = ds[b..].iter().product();
    let tuples_per_batch: usize = is[b..is.len() - 1].iter().product();
    let (src, ids) = (contiguous(a), contiguous(idx));
    let mut out = Vec::with_capacity(batches * tuples_per_batch * slice);
    for bi in 0..batches {
        for t in 0..tuples_per_batch {
            let tuple = &ids[(bi * tuples_per_batch + t) * k..][..k];
            let off = bi * per_batch + nd_offset(tuple, &ds[b..b + k], slice)?;
            out.extend_from_slice(&src[off..off + slice]);
        }
    }
    let mut shape = is[..is.len() - 1].to_vec();
    shape.extend_from_slice(&ds[b + k..]);
    array(&shape, out)
}

pub(crate) fn gather_nd(ctx: &Ctx) -> OpResult {
    let x = ctx.input(0)?;
    let idx = ctx.i64(1)?;
    let b = usize::try_from(ctx.int_or("batch_dims", 0)?).map_err(|_| "batch_dims must be >= 0".to_string())?;
    Ok(vec![Value { dtype: x.dtype, data: map_data!(x, |a| gather_nd_array(a, idx, b)?) }])
}

#[derive(Clone, Copy, Debug)]
enum Reduction {
    None,
    Add,
    Mul,
    Max,
    Min,
}

fn reduction(ctx: &Ctx) -> OpResult<Reduction> {
    Ok(match ctx.attr_string("reduction")?.unwrap_or("none") {
        "none" => Reduction::None,
        "add" => Reduction::Add,
        "mul" => Reduction::Mul,
        "max" => Reduction::Max,
        "min" => Reduction::Min,
        r => return Err(format!("reduction {r:?} is not one of none, add, mul, max, min")),
    })
}

/// Combines an existing element with an update.
trait Combine: Copy + PartialOrd {
    fn add(self, o: Self) -> Self;
    fn mul(self, o: Self) -> Self;
}

impl Combine for f32 {
    fn add(self, o: f32) -> f32 {
        self + o
    }
    fn mul(self, o: f32) -> f32 {
        self * o
    }
}

impl Combine for i64 {
    fn add(self, o: i64) -> i64 {
        self.wrapping_add(o)
    }
    fn mul(self, o: i64) -> i64 {
        self.wrapping_mul(o)
    }
}

impl Combine for bool {
    fn add(self, o: bool) -> bool {
        self || o
    }
    fn mul(self, o: bool) -> bool {
        self && o
    }
}

fn combine<T: Combine>(old: T, new: T, r: Reduction) -> T {
    match r {
        Reduction::None => new,
        Reduction::Add => old.add(new),
        Reduction::Mul => old.mul(new),
        Reduction::Max => {
            if new > old {
                new
            } else {
                old
            }
        }
        Reduction::Min => {
            if new < old {
                new
            } else {
                old
            }
        }
    }
}

fn scatter_nd_array<T: Combine>(
    a: &ArrayD<T>,
    idx: &ArrayD<i64>,
    upd: &ArrayD<T>,
    r: Reduction,
) -> OpResult<ArrayD<T>> {
    let (ds, is) = (a.shape(), idx.shape());
    let k = *is.last().ok_or("ScatterND indices must have rank >= 1")?;
    let mut want: Vec<usize> = is[..is.len() - 1].to_vec();
    if k > ds.len() {
        return Err(format!("ScatterND index tuples of length {k} exceed the rank of data {ds:?}"));
    }
    want.extend_from_slice(&ds[k..]);
    if upd.shape() != &want[..] {
        return Err(format!(
            "ScatterND updates have shape {:?}, expected {want:?} (indices {is:?}, data {ds:?})",
            upd.shape()
        ));
    }
    let slice: usize = ds[k..].iter().product();
    let (mut out, ids, ups) = (to_vec(a), to_vec(idx), to_vec(upd));
    let tuples: usize = is[..is.len() - 1].iter().product();
    for t in 0..tuples {
        let tuple = &ids[t * k..(t + 1) * k];
        let off = nd_offset(tuple, &ds[..k], slice)?;
        for j in 0..slice {
            out[off + j] = combine(out[off + j], ups[t * slice + j], r);
        }
    }
    array(ds, out)
}

pub(crate) fn scatter_nd(ctx: &Ctx) -> OpResult {
    let x = ctx.input(0)?;
    let idx = ctx.i64(1)?;
    let u = ctx.input(2)?;
    let r = reduction(ctx)?;
    let data = match (&x.data, &u.data) {
        (Data::F(a), Data::F(b)) => Data::F(scatter_nd_array(a, idx, b, r)?),
        (Data::I(a), Data::I(b)) => Data::I(scatter_nd_array(a, idx, b, r)?),
        (Data::B(a), Data::B(b)) => Data::B(scatter_nd_array(a, idx, b, r)?),
        _ => return Err(format!("data ({}) and updates ({}) must share an element type", x.dtype, u.dtype)),
    };
    Ok(vec![Value { dtype: x.dtype, data }])
}

fn scatter_elements_array<T: Combine>(
    a: &ArrayD<T>,
    axis: usize,
    idx: &ArrayD<i64>,
    upd: &ArrayD<T>,
    r: Reduction,
) -> OpResult<ArrayD<T>> {
    if idx.shape() != upd.shape() || idx.ndim() != a.ndim() {
        return Err(format!(
            "indices {:?} and updates {:?} must have one shape of the rank of data {:?}",
            idx.shape(),
            upd.shape(),
            a.shape()
        ));
    }
    let mut out = a.as_standard_layout().into_owned();
    for ((pos, &i), &u) in idx.indexed_iter().zip(upd.iter()) {
        let mut dst = pos.slice().to_vec();
        dst[axis] = index(i, a.shape()[axis], "ScatterElements")?;
        if dst.iter().zip(a.shape()).any(|(&p, &d)| p >= d) {
            return Err(format!("ScatterElements position {dst:?} is outside data {:?}", a.shape()));
        }
        let cell = &mut out[IxDyn(&dst)];
        *cell = combine(*cell, u, r);
    }
    Ok(out)
}

pub(crate) fn scatter_elements(ctx: &Ctx) -> OpResult {
    let x = ctx.input(0)?;
    let idx = ctx.i64(1)?;
    let u = ctx.input(2)?;
    let axis = norm_axis(ctx.int_or("axis", 0)?, x.shape().len())?;
    let r = reduction(ctx)?;
    let data = match (&x.data, &u.data) {
        (Data::F(a), Data::F(b)) => Data::F(scatter_elements_array(a, axis, idx, b, r)?),
        (Data::I(a), Data::I(b)) => Data::I(scatter_elements_array(a, axis, idx, b, r)?),
        (Data::B(a), Data::B(b)) => Data::B(scatter_elements_array(a, axis, idx, b, r)?),
        _ => return Err(format!("data ({}) and updates ({}) must share an element type", x.dtype, u.dtype)),
    };
    Ok(vec![Value { dtype: x.dtype, data }])
}

pub(crate) fn non_zero(ctx: &Ctx) -> OpResult {
    let x = ctx.input(0)?;
    let rank = x.shape().len();
    let hits: Vec<Vec<usize>> = match &x.dense().data {
        Data::F(a) => a.indexed_iter().filter(|(_, &v)| v != 0.0).map(|(p, _)| p.slice().to_vec()).collect(),
        Data::I(a) => a.indexed_iter().filter(|(_, &v)| v != 0).map(|(p, _)| p.slice().to_vec()).collect(),
        Data::B(a) => a.indexed_iter().filter(|(_, &v)| v).map(|(p, _)| p.slice().to_vec()).collect(),
        Data::Q(_) => return Err(crate::value::NOT_DENSE.into()),
    };
    let n = hits.len();
    let mut out = vec![0i64; rank * n];
    for (j, p) in hits.iter().enumerate() {
        for (d, &v) in p.iter().enumerate() {
            out[d * n + j] = v as i64;
        }
    }
    Ok(vec![Value::i64(array(&[rank, n], out)?)])
}

#[cfg(test)]
mod tests {
    use super::super::common::test_util::*;
    use jetc_ir::Attr;

    #[test]
    fn gather_axes_and_negative_indices() {
        let x = f(&[3, 2], &[1., 2., 3., 4., 5., 6.]);
        let y = run1(&op("Gather", 13, &[]), &[&x, &i(&[2, 2], &[0, -1, 2, 1])]);
        assert_eq!(y.shape(), &[2, 2, 2]);
        assert_eq!(fvec(&y), vec![1., 2., 5., 6., 5., 6., 3., 4.]);
        let y = run1(&op("Gather", 13, &[("axis", Attr::Int(1))]), &[&x, &i(&[], &[-1])]);
        assert_eq!(y.shape(), &[3]);
        assert_eq!(fvec(&y), vec![2., 4., 6.]);
        let e = run(&op("Gather", 13, &[]), &[&x, &i(&[1], &[3])]).unwrap_err();
        assert!(e.to_string().contains("out of range"), "{e}");
        assert!(run(&op("Gather", 13, &[]), &[&x, &f(&[1], &[0.])]).is_err());
    }

    #[test]
    fn gather_elements_and_nd() {
        let x = f(&[2, 2], &[1., 2., 3., 4.]);
        let y = run1(&op("GatherElements", 13, &[("axis", Attr::Int(1))]), &[&x, &i(&[2, 2], &[0, 0, 1, 0])]);
        assert_eq!(fvec(&y), vec![1., 1., 4., 3.]);
        let y = run1(&op("GatherElements", 13, &[]), &[&x, &i(&[1, 2], &[1, -2])]);
        assert_eq!(fvec(&y), vec![3., 2.]);
        let y = run1(&op("GatherND", 13, &[]), &[&x, &i(&[2, 2], &[0, 0, 1, 1])]);
        assert_eq!(fvec(&y), vec![1., 4.]);
        let y = run1(&op("GatherND", 13, &[]), &[&x, &i(&[2, 1], &[1, 0])]);
        assert_eq!(fvec(&y), vec![3., 4., 1., 2.]);
        let d = f(&[2, 2, 2], &[0., 1., 2., 3., 4., 5., 6., 7.]);
        let y = run1(&op("GatherND", 13, &[("batch_dims", Attr::Int(1))]), &[&d, &i(&[2, 1], &[1, 0])]);
        assert_eq!(y.shape(), &[2, 2]);
        assert_eq!(fvec(&y), vec![2., 3., 4., 5.]);
    }

    #[test]
    fn scatter_nd_and_elements() {
        let x = f(&[4], &[1., 2., 3., 4.]);
        let y = run1(&op("ScatterND", 16, &[]), &[&x, &i(&[2, 1], &[3, -4]), &f(&[2], &[9., 10.])]);
        assert_eq!(fvec(&y), vec![10., 2., 3., 9.]);
        let o = op("ScatterND", 16, &[("reduction", Attr::String("add".into()))]);
        let y = run1(&o, &[&x, &i(&[2, 1], &[1, 1]), &f(&[2], &[5., 6.])]);
        assert_eq!(fvec(&y), vec![1., 13., 3., 4.]);
        let m = f(&[2, 2], &[0.; 4]);
        let y = run1(&op("ScatterND", 16, &[]), &[&m, &i(&[1, 1], &[1]), &f(&[1, 2], &[7., 8.])]);
        assert_eq!(fvec(&y), vec![0., 0., 7., 8.]);
        assert!(run(&op("ScatterND", 16, &[]), &[&m, &i(&[1, 1], &[1]), &f(&[1, 3], &[0.; 3])]).is_err());
        let y = run1(
            &op("ScatterElements", 16, &[("axis", Attr::Int(1))]),
            &[&m, &i(&[2, 1], &[1, 0]), &f(&[2, 1], &[5., 6.])],
        );
        assert_eq!(fvec(&y), vec![0., 5., 6., 0.]);
        let o = op("ScatterElements", 16, &[("reduction", Attr::String("max".into()))]);
        let y = run1(&o, &[&f(&[3], &[1., 5., 2.]), &i(&[2], &[1, 2]), &f(&[2], &[3., 4.])]);
        assert_eq!(fvec(&y), vec![1., 5., 4.]);
    }

    #[test]
    fn non_zero_positions() {
        let y = run1(&op("NonZero", 13, &[]), &[&i(&[2, 2], &[0, 3, 4, 0])]);
        assert_eq!(y.shape(), &[2, 2]);
        assert_eq!(ivec(&y), vec![0, 1, 1, 0]);
    }
}
