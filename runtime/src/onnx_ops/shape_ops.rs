//! Shape and layout ops: Identity, Dropout (inference: identity + all-true mask), Reshape,
//! Flatten, Squeeze, Unsqueeze, Transpose, Concat, Split, Slice, Expand, Tile, Pad, Shape,
//! Size, Range, ConstantOfShape, Constant, Trilu.
//!
//! Opset notes: Reshape takes `shape` as an attribute below opset 5 and honours `allowzero`
//! (14); Squeeze/Unsqueeze axes are attributes below 13, inputs from 13; Split sizes are the
//! `split` attribute below 13, input 1 from 13, and `num_outputs` (18) splits into chunks of
//! ceil(dim / n); Slice takes attributes below 10, inputs (with axes and steps) from 10;
//! Shape has `start`/`end` from 15; Pad takes attributes below 11, inputs from 11 (`axes`
//! from 18; modes constant, edge, reflect, wrap).
use jetc_ir::{DType, Tensor};
use ndarray::{concatenate, ArrayD, ArrayViewD, Axis, IxDyn, Slice};

use super::common::{
    array, broadcast_shapes, map_data, norm_axes, norm_axis, owned, same_kind, to_dims, to_vec, Ctx, OpResult,
};
use crate::value::{Data, Value};

pub(crate) fn identity(ctx: &Ctx) -> OpResult {
    Ok(vec![ctx.input(0)?.clone()])
}

/// Dropout at inference: the data unchanged and an all-true mask.
pub(crate) fn dropout(ctx: &Ctx) -> OpResult {
    let x = ctx.input(0)?;
    let training = match ctx.opt(2) {
        Some(v) => v.as_bool().and_then(|a| a.iter().next().copied()).unwrap_or(false),
        None => false,
    };
    if training {
        return Err("Dropout with training_mode = true is not supported (inference only)".into());
    }
    let mask = ArrayD::from_elem(IxDyn(x.shape()), true);
    Ok(vec![x.clone(), Value::bool(mask)])
}

/// Same data, new shape (row-major order).
fn reshaped(x: &Value, shape: &[usize]) -> OpResult<Value> {
    let n: usize = shape.iter().product();
    if n != x.len() {
        return Err(format!("cannot reshape {:?} ({} elements) to {shape:?} ({n} elements)", x.shape(), x.len()));
    }
    Ok(Value { dtype: x.dtype, data: map_data!(x, |a| array(shape, to_vec(a))?) })
}

pub(crate) fn reshape(ctx: &Ctx) -> OpResult {
    let x = ctx.input(0)?;
    let spec = if ctx.opset() < 5 {
        ctx.attr_ints("shape")?.ok_or("required attribute `shape` is missing")?.to_vec()
    } else {
        ctx.ints(1)?
    };
    let allowzero = ctx.flag("allowzero", false)?;
    let shape = reshape_target(x.shape(), &spec, allowzero)?;
    Ok(vec![reshaped(x, &shape)?])
}

/// Resolves a Reshape spec: 0 copies the input dim (unless `allowzero`), one -1 is inferred.
pub(crate) fn reshape_target(input: &[usize], spec: &[i64], allowzero: bool) -> OpResult<Vec<usize>> {
    let total: usize = input.iter().product();
    let mut out = Vec::with_capacity(spec.len());
    let mut infer = None;
    for (k, &d) in spec.iter().enumerate() {
        match d {
            -1 if infer.is_some() => return Err(format!("shape {spec:?} has more than one -1")),
            -1 => {
                infer = Some(k);
                out.push(1);
            }
            0 if !allowzero => {
                let v = input.get(k).ok_or_else(|| {
                    format!("shape {spec:?} copies dim {k} (0) but the input {input:?} has rank {}", input.len())
                })?;
                out.push(*v);
            }
            d if d < 0 => return Err(format!("shape {spec:?} has an invalid dim {d}")),
            d => out.push(d as usize),
        }
    }
    if let Some(k) = infer {
        let known = out.iter().try_fold(1usize, |a, &d| a.checked_mul(d)).unwrap_or(0);
        let inferred = total.checked_div(known).unwrap_or(0);
        if known == 0 || inferred * known != total {
            return Err(format!("cannot infer the -1 in {spec:?} for an input of shape {input:?}"));
        }
        out[k] = inferred;
    }
    let n = out.iter().try_fold(1usize, |a, &d| a.checked_mul(d));
    if n != Some(total) {
        return Err(format!("cannot reshape {input:?} ({total} elements) to {spec:?} -> {out:?}"));
    }
    Ok(out)
}

pub(crate) fn flatten(ctx: &Ctx) -> OpResult {
    let x = ctx.input(0)?;
    let rank = x.shape().len() as i64;
    let axis = ctx.int_or("axis", 1)?;
    let axis = if axis < 0 { axis + rank } else { axis };
    if !(0..=rank).contains(&axis) {
        return Err(format!("axis {axis} is out of range for Flatten of a rank-{rank} tensor"));
    }
    let (a, b) = x.shape().split_at(axis as usize);
    Ok(vec![reshaped(x, &[a.iter().product(), b.iter().product()])?])
}

pub(crate) fn squeeze(ctx: &Ctx) -> OpResult {
    let x = ctx.input(0)?;
    let shape = x.shape();
    let axes = match ctx.axes_attr_or_input(1, 13)? {
        Some(a) => norm_axes(&a, shape.len())?,
        None => (0..shape.len()).filter(|&d| shape[d] == 1).collect(),
    };
    if let Some(&d) = axes.iter().find(|&&d| shape[d] != 1) {
        return Err(format!("cannot squeeze axis {d} of shape {shape:?}: its size is not 1"));
    }
    let out: Vec<usize> = (0..shape.len()).filter(|d| !axes.contains(d)).map(|d| shape[d]).collect();
    Ok(vec![reshaped(x, &out)?])
}

pub(crate) fn unsqueeze(ctx: &Ctx) -> OpResult {
    let x = ctx.input(0)?;
    let axes = ctx.axes_attr_or_input(1, 13)?.ok_or("Unsqueeze needs axes")?;
    let rank = x.shape().len() + axes.len();
    let axes = norm_axes(&axes, rank)?;
    let mut src = x.shape().iter();
    let out: Vec<usize> =
        (0..rank).map(|d| if axes.contains(&d) { 1 } else { src.next().copied().unwrap_or(1) }).collect();
    Ok(vec![reshaped(x, &out)?])
}

pub(crate) fn transpose(ctx: &Ctx) -> OpResult {
    let x = ctx.input(0)?;
    let rank = x.shape().len();
    let perm: Vec<usize> = match ctx.attr_ints("perm")? {
        None => (0..rank).rev().collect(),
        Some(p) => {
            let v = norm_axes(p, rank)?;
            if v.len() != rank {
                return Err(format!("perm {p:?} is not a permutation of {rank} axes"));
            }
            v
        }
    };
    Ok(vec![Value { dtype: x.dtype, data: map_data!(x, |a| owned(a.view().permuted_axes(perm.clone()))) }])
}

fn concat_arrays<T: Clone>(arrays: &[&ArrayD<T>], axis: i64) -> OpResult<ArrayD<T>> {
    let rank = arrays[0].ndim();
    let ax = norm_axis(axis, rank)?;
    for a in arrays {
        let ok = a.ndim() == rank && (0..rank).all(|d| d == ax || a.shape()[d] == arrays[0].shape()[d]);
        if !ok {
            let shapes: Vec<&[usize]> = arrays.iter().map(|a| a.shape()).collect();
            return Err(format!("inputs of shapes {shapes:?} cannot be concatenated on axis {axis}"));
        }
    }
    let views: Vec<ArrayViewD<T>> = arrays.iter().map(|a| a.view()).collect();
    concatenate(Axis(ax), &views).map(|a| a.as_standard_layout().into_owned()).map_err(|e| e.to_string())
}

pub(crate) fn concat(ctx: &Ctx) -> OpResult {
    let axis = ctx.req_int("axis")?;
    let vals: Vec<&Value> = ctx.inputs.iter().flatten().copied().collect();
    let first = *vals.first().ok_or("Concat needs at least one input")?;
    let data = match &first.dense().data {
        Data::F(_) => Data::F(concat_arrays(&same_kind(&vals, Value::as_f32)?, axis)?),
        Data::I(_) => Data::I(concat_arrays(&same_kind(&vals, Value::as_i64)?, axis)?),
        Data::B(_) => Data::B(concat_arrays(&same_kind(&vals, Value::as_bool)?, axis)?),
        Data::Q(_) => return Err(crate::value::NOT_DENSE.into()),
    };
    Ok(vec![Value { dtype: first.dtype, data }])
}

pub(crate) fn split(ctx: &Ctx) -> OpResult {
    let x = ctx.input(0)?;
    let axis = norm_axis(ctx.int_or("axis", 0)?, x.shape().len())?;
    let dim = x.shape()[axis];
    let given = if ctx.opset() < 13 { ctx.attr_ints("split")?.map(|s| s.to_vec()) } else { ctx.opt_ints(1)? };
    let sizes: Vec<usize> = match given {
        Some(s) => {
            let s = to_dims(&s, "split")?;
            if s.iter().sum::<usize>() != dim {
                return Err(format!(
                    "split sizes {s:?} do not sum to dim {dim} of axis {axis} (shape {:?})",
                    x.shape()
                ));
            }
            s
        }
        None => match ctx.attr_int("num_outputs")? {
            Some(n) if n >= 1 => {
                let n = n as usize;
                let chunk = dim.div_ceil(n);
                (0..n).map(|k| chunk.min(dim.saturating_sub(k * chunk))).collect()
            }
            Some(n) => return Err(format!("attribute `num_outputs` must be positive, got {n}")),
            None => {
                let n = ctx.num_outputs.max(1);
                if dim % n != 0 {
                    return Err(format!("cannot split dim {dim} of axis {axis} evenly into {n} outputs"));
                }
                vec![dim / n; n]
            }
        },
    };
    let mut outs = Vec::with_capacity(sizes.len());
    let mut start = 0;
    for s in sizes {
        let sl = Slice::from(start..start + s);
        outs.push(Value { dtype: x.dtype, data: map_data!(x, |a| owned(a.slice_axis(Axis(axis), sl))) });
        start += s;
    }
    Ok(outs)
}

/// One axis of a Slice after clamping: first index, element count and step.
#[derive(Debug, PartialEq)]
pub(crate) struct AxisSlice {
    pub start: i64,
    pub count: usize,
    pub step: i64,
}

/// Clamps start/end for a dim of size `dim` following the ONNX Slice rules.
pub(crate) fn clamp_slice(start: i64, end: i64, step: i64, dim: usize) -> OpResult<AxisSlice> {
    if step == 0 {
        return Err("Slice step must not be 0".into());
    }
    if dim == 0 {
        return Ok(AxisSlice { start: 0, count: 0, step });
    }
    let d = dim as i64;
    let fix = |v: i64| if v < 0 { v.saturating_add(d) } else { v };
    let (s, e) = (fix(start), fix(end));
    let (s, e) = if step > 0 { (s.clamp(0, d), e.clamp(0, d)) } else { (s.clamp(0, d - 1), e.clamp(-1, d - 1)) };
    let count = if step > 0 {
        if e > s {
            (e - s + step - 1) / step
        } else {
            0
        }
    } else if s > e {
        (s - e + (-step) - 1) / (-step)
    } else {
        0
    };
    Ok(AxisSlice { start: s, count: count as usize, step })
}

pub(crate) fn slice(ctx: &Ctx) -> OpResult {
    let x = ctx.input(0)?;
    let rank = x.shape().len();
    let (starts, ends, axes, steps) = if ctx.opset() < 10 {
        let g = |n: &str| -> OpResult<Vec<i64>> {
            Ok(ctx.attr_ints(n)?.ok_or_else(|| format!("required attribute `{n}` is missing"))?.to_vec())
        };
        (g("starts")?, g("ends")?, ctx.attr_ints("axes")?.map(|a| a.to_vec()), None)
    } else {
        (ctx.ints(1)?, ctx.ints(2)?, ctx.opt_ints(3)?, ctx.opt_ints(4)?)
    };
    let n = starts.len();
    let axes = axes.unwrap_or_else(|| (0..n as i64).collect());
    let steps = steps.unwrap_or_else(|| vec![1; n]);
    if ends.len() != n || axes.len() != n || steps.len() != n {
        return Err(format!(
            "starts {starts:?}, ends {ends:?}, axes {axes:?} and steps {steps:?} must have one length"
        ));
    }
    let axes = norm_axes(&axes, rank)?;
    let mut plan = Vec::with_capacity(n);
    for k in 0..n {
        plan.push((axes[k], clamp_slice(starts[k], ends[k], steps[k], x.shape()[axes[k]])?));
    }
    let data = map_data!(x, |a| {
        let mut v = a.view();
        for (ax, s) in &plan {
            v.slice_axis_inplace(Axis(*ax), ndarray_slice(s));
        }
        owned(v)
    });
    Ok(vec![Value { dtype: x.dtype, data }])
}

/// The ndarray slice selecting the same elements (ndarray takes a range, then steps from
/// its far end when the step is negative).
fn ndarray_slice(s: &AxisSlice) -> Slice {
    if s.count == 0 {
        return Slice::new(0, Some(0), 1);
    }
    let last = s.start + (s.count as i64 - 1) * s.step;
    if s.step > 0 {
        Slice::new(s.start as isize, Some(last as isize + 1), s.step as isize)
    } else {
        Slice::new(last as isize, Some(s.start as isize + 1), s.step as isize)
    }
}

pub(crate) fn expand(ctx: &Ctx) -> OpResult {
    let x = ctx.input(0)?;
    let target = to_dims(&ctx.ints(1)?, "Expand shape")?;
    let shape = broadcast_shapes(&[x.shape(), &target])?;
    let data = map_data!(x, |a| owned(
        a.broadcast(IxDyn(&shape)).ok_or_else(|| format!("cannot expand {:?} to {shape:?}", a.shape()))?
    ));
    Ok(vec![Value { dtype: x.dtype, data }])
}

fn tile_array<T: Clone>(a: &ArrayD<T>, reps: &[usize]) -> OpResult<ArrayD<T>> {
    let mut cur = a.clone();
    for (ax, &r) in reps.iter().enumerate() {
        if r == 1 {
            continue;
        }
        let views: Vec<ArrayViewD<T>> = (0..r).map(|_| cur.view()).collect();
        cur = if r == 0 {
            let mut shape = cur.shape().to_vec();
            shape[ax] = 0;
            array(&shape, Vec::new())?
        } else {
            concatenate(Axis(ax), &views).map_err(|e| e.to_string())?
        };
    }
    Ok(cur.as_standard_layout().into_owned())
}

pub(crate) fn tile(ctx: &Ctx) -> OpResult {
    let x = ctx.input(0)?;
    let reps = to_dims(&ctx.ints(1)?, "repeats")?;
    if reps.len() != x.shape().len() {
        return Err(format!("repeats {reps:?} must have one entry per axis of shape {:?}", x.shape()));
    }
    Ok(vec![Value { dtype: x.dtype, data: map_data!(x, |a| tile_array(a, &reps)?) }])
}

pub(crate) fn shape(ctx: &Ctx) -> OpResult {
    let x = ctx.input(0)?;
    let r = x.shape().len() as i64;
    let clampi = |v: i64| (if v < 0 { v + r } else { v }).clamp(0, r) as usize;
    let start = clampi(ctx.int_or("start", 0)?);
    let end = clampi(ctx.int_or("end", r)?);
    let dims: Vec<i64> = if start < end { x.shape()[start..end].iter().map(|&d| d as i64).collect() } else { vec![] };
    Ok(vec![Value::i64(array(&[dims.len()], dims)?)])
}

pub(crate) fn size(ctx: &Ctx) -> OpResult {
    Ok(vec![Value::i64(array(&[], vec![ctx.input(0)?.len() as i64])?)])
}

pub(crate) fn range(ctx: &Ctx) -> OpResult {
    let v = ctx.input(0)?;
    let scalar = |i: usize| -> OpResult<&Value> {
        let x = ctx.input(i)?;
        if x.len() != 1 {
            return Err(format!("input {i} of Range must be a scalar, got shape {:?}", x.shape()));
        }
        Ok(x)
    };
    let (a, b, c) = (scalar(0)?, scalar(1)?, scalar(2)?);
    let data = match (&a.data, &b.data, &c.data) {
        (Data::F(s), Data::F(l), Data::F(d)) => {
            let (s, l, d) = (first(s)?, first(l)?, first(d)?);
            if d == 0.0 {
                return Err("Range delta must not be 0".into());
            }
            let n = ((l as f64 - s as f64) / d as f64).ceil().max(0.0);
            if !n.is_finite() {
                return Err(format!("Range({s}, {l}, {d}) has no finite length"));
            }
            let n = n as usize;
            Data::F(array(&[n], (0..n).map(|k| s + k as f32 * d).collect())?)
        }
        (Data::I(s), Data::I(l), Data::I(d)) => {
            let (s, l, d) = (first(s)?, first(l)?, first(d)?);
            if d == 0 {
                return Err("Range delta must not be 0".into());
            }
            let span = l as i128 - s as i128;
            let n = ((span + d as i128 - d.signum() as i128) / d as i128).max(0) as usize;
            Data::I(array(&[n], (0..n).map(|k| s + k as i64 * d).collect())?)
        }
        _ => return Err(format!("Range inputs must share a numeric type, got {}, {}, {}", a.dtype, b.dtype, c.dtype)),
    };
    Ok(vec![Value { dtype: v.dtype, data }])
}

fn first<T: Copy>(a: &ArrayD<T>) -> OpResult<T> {
    a.iter().next().copied().ok_or_else(|| "expected one element, got none".to_string())
}

/// The single value of a one-element tensor attribute as a value of `shape`.
fn filled(t: &Tensor, shape: &[usize]) -> OpResult<Value> {
    if t.numel() != 1 {
        return Err(format!("attribute `value` must hold one element, got shape {:?}", t.shape()));
    }
    let n: usize = shape.iter().product();
    let data = match t.dtype() {
        d if d.is_float() => Data::F(array(shape, vec![t.to_f32_vec()[0]; n])?),
        DType::Bool => Data::B(array(shape, vec![t.bytes()[0] != 0; n])?),
        _ => Data::I(array(shape, vec![t.to_i64_vec()[0]; n])?),
    };
    Ok(Value { dtype: t.dtype(), data })
}

pub(crate) fn constant_of_shape(ctx: &Ctx) -> OpResult {
    let shape = to_dims(&ctx.ints(0)?, "ConstantOfShape shape")?;
    match ctx.op.tensor("value") {
        Some(t) => Ok(vec![filled(t, &shape)?]),
        None => Ok(vec![Value::f32(array(&shape, vec![0.0; shape.iter().product()])?)]),
    }
}

pub(crate) fn constant(ctx: &Ctx) -> OpResult {
    if let Some(t) = ctx.op.tensor("value") {
        return Ok(vec![Value::from_tensor(t)]);
    }
    if let Some(v) = ctx.attr_float("value_float")? {
        return Ok(vec![Value::f32(array(&[], vec![v])?)]);
    }
    if let Some(v) = ctx.attr_floats("value_floats")? {
        return Ok(vec![Value::f32(array(&[v.len()], v.to_vec())?)]);
    }
    if let Some(v) = ctx.attr_int("value_int")? {
        return Ok(vec![Value::i64(array(&[], vec![v])?)]);
    }
    if let Some(v) = ctx.attr_ints("value_ints")? {
        return Ok(vec![Value::i64(array(&[v.len()], v.to_vec())?)]);
    }
    let names: Vec<&String> = ctx.op.attrs.keys().collect();
    Err(format!("Constant needs a tensor, float(s) or int(s) value attribute; got attributes {names:?} (sparse and string constants are not supported)"))
}

fn trilu_array<T: Clone + Default>(a: &ArrayD<T>, k: i64, upper: bool) -> OpResult<ArrayD<T>> {
    let shape = a.shape().to_vec();
    let (rows, cols) = (shape[shape.len() - 2], shape[shape.len() - 1]);
    let mut d = to_vec(a);
    if rows * cols > 0 {
        for mat in d.chunks_mut(rows * cols) {
            for i in 0..rows {
                for j in 0..cols {
                    let diff = j as i64 - i as i64;
                    if (upper && diff < k) || (!upper && diff > k) {
                        mat[i * cols + j] = T::default();
                    }
                }
            }
        }
    }
    array(&shape, d)
}

pub(crate) fn trilu(ctx: &Ctx) -> OpResult {
    let x = ctx.input(0)?;
    if x.shape().len() < 2 {
        return Err(format!("Trilu needs rank >= 2, got shape {:?}", x.shape()));
    }
    let k = match ctx.opt(1) {
        Some(_) => ctx.scalar_int(1)?,
        None => 0,
    };
    let upper = ctx.flag("upper", true)?;
    Ok(vec![Value { dtype: x.dtype, data: map_data!(x, |a| trilu_array(a, k, upper)?) }])
}

#[derive(Clone, Copy, PartialEq, Debug)]
enum PadMode {
    Constant,
    Edge,
    Reflect,
    Wrap,
}

/// Source index along one axis for output position `o`, or None for the constant.
fn pad_source(o: i64, begin: i64, dim: i64, mode: PadMode) -> Option<usize> {
    let i = o - begin;
    if (0..dim).contains(&i) {
        return Some(i as usize);
    }
    if dim == 0 {
        return None;
    }
    let j = match mode {
        PadMode::Constant => return None,
        PadMode::Edge => i.clamp(0, dim - 1),
        PadMode::Wrap => i.rem_euclid(dim),
        PadMode::Reflect => {
            if dim == 1 {
                0
            } else {
                let period = 2 * (dim - 1);
                let m = i.rem_euclid(period);
                if m < dim {
                    m
                } else {
                    period - m
                }
            }
        }
    };
    Some(j as usize)
}

fn pad_array<T: Clone>(a: &ArrayD<T>, begins: &[i64], ends: &[i64], mode: PadMode, fill: T) -> OpResult<ArrayD<T>> {
    let shape = a.shape();
    let mut out_shape = Vec::with_capacity(shape.len());
    let mut maps: Vec<Vec<Option<usize>>> = Vec::with_capacity(shape.len());
    for d in 0..shape.len() {
        let n = shape[d] as i64 + begins[d] + ends[d];
        if n < 0 {
            return Err(format!("pads {begins:?}/{ends:?} remove more than axis {d} of shape {shape:?} holds"));
        }
        if mode != PadMode::Constant && shape[d] == 0 && n > 0 {
            return Err(format!("{mode:?} padding of an empty axis {d}"));
        }
        out_shape.push(n as usize);
        maps.push((0..n).map(|o| pad_source(o, begins[d], shape[d] as i64, mode)).collect());
    }
    let out = ArrayD::from_shape_fn(IxDyn(&out_shape), |idx| {
        let mut src = Vec::with_capacity(maps.len());
        for (d, m) in maps.iter().enumerate() {
            match m[idx[d]] {
                Some(s) => src.push(s),
                None => return fill.clone(),
            }
        }
        a[IxDyn(&src)].clone()
    });
    Ok(out)
}

pub(crate) fn pad(ctx: &Ctx) -> OpResult {
    let x = ctx.input(0)?;
    let rank = x.shape().len();
    let mode = match ctx.attr_string("mode")?.unwrap_or("constant") {
        "constant" => PadMode::Constant,
        "edge" => PadMode::Edge,
        "reflect" => PadMode::Reflect,
        "wrap" => PadMode::Wrap,
        m => return Err(format!("Pad mode {m:?} is not one of constant, edge, reflect, wrap")),
    };
    let (pads, cval, axes) = if ctx.opset() < 11 {
        let p = ctx.attr_ints("pads")?.or(ctx.attr_ints("paddings")?).ok_or("required attribute `pads` is missing")?;
        (p.to_vec(), Some(Value::f32(array(&[], vec![ctx.float_or("value", 0.0)?])?)), None)
    } else {
        (ctx.ints(1)?, ctx.opt(2).cloned(), ctx.opt_ints(3)?)
    };
    let axes = match axes {
        Some(a) => norm_axes(&a, rank)?,
        None => (0..rank).collect(),
    };
    if pads.len() != 2 * axes.len() {
        return Err(format!("pads {pads:?} must have 2 entries per padded axis ({} axes)", axes.len()));
    }
    let (mut begins, mut ends) = (vec![0i64; rank], vec![0i64; rank]);
    for (k, &ax) in axes.iter().enumerate() {
        begins[ax] = pads[k];
        ends[ax] = pads[k + axes.len()];
    }
    let data = match &x.dense().data {
        Data::F(a) => {
            let c = match &cval {
                Some(v) => match &v.data {
                    Data::F(c) if c.len() == 1 => first(c)?,
                    _ => {
                        return Err(format!(
                            "constant_value must be one float, got {} of shape {:?}",
                            v.dtype,
                            v.shape()
                        ))
                    }
                },
                None => 0.0,
            };
            Data::F(pad_array(a, &begins, &ends, mode, c)?)
        }
        Data::I(a) => {
            let c = match &cval {
                Some(v) => match &v.data {
                    Data::I(c) if c.len() == 1 => first(c)?,
                    Data::F(c) if c.len() == 1 && ctx.opset() < 11 => first(c)? as i64,
                    _ => {
                        return Err(format!(
                            "constant_value must be one integer, got {} of shape {:?}",
                            v.dtype,
                            v.shape()
                        ))
                    }
                },
                None => 0,
            };
            Data::I(pad_array(a, &begins, &ends, mode, c)?)
        }
        Data::B(a) => {
            let c = match &cval {
                Some(v) => {
                    v.as_bool().and_then(|c| c.iter().next().copied()).ok_or("constant_value must be one bool")?
                }
                None => false,
            };
            Data::B(pad_array(a, &begins, &ends, mode, c)?)
        }
        Data::Q(_) => return Err(crate::value::NOT_DENSE.into()),
    };
    Ok(vec![Value { dtype: x.dtype, data }])
}

#[cfg(test)]
mod tests {
    use super::super::common::test_util::*;
    use super::*;
    use jetc_ir::Attr;

    fn x234() -> Value {
        f(&[2, 3, 4], &(0..24).map(|v| v as f32).collect::<Vec<_>>())
    }

    #[test]
    fn reshape_zero_and_minus_one() {
        let y = run1(&op("Reshape", 14, &[]), &[&x234(), &i(&[3], &[0, -1, 2])]);
        assert_eq!(y.shape(), &[2, 6, 2]);
        assert_eq!(fvec(&y), fvec(&x234()));
        // 0 copies the input dim, unless allowzero makes it a real 0.
        assert_eq!(reshape_target(&[2, 3], &[0, 3], false).unwrap(), vec![2, 3]);
        assert!(reshape_target(&[2, 3], &[0, 3], true).unwrap_err().contains("cannot reshape"));
        assert_eq!(reshape_target(&[0, 3], &[0, 3], true).unwrap(), vec![0, 3]);
        assert_eq!(reshape_target(&[2, 0], &[0, 0], false).unwrap(), vec![2, 0]);
        assert!(reshape_target(&[2, 3], &[-1, -1], false).is_err());
        assert!(reshape_target(&[2, 3], &[4, -1], false).is_err());
        let y = run1(&op("Reshape", 1, &[("shape", Attr::Ints(vec![4, 6]))]), &[&x234()]);
        assert_eq!(y.shape(), &[4, 6]);
        let e = run(&op("Reshape", 14, &[]), &[&x234(), &i(&[2], &[5, 5])]).unwrap_err();
        assert!(e.to_string().contains("24 elements"), "{e}");
    }

    #[test]
    fn squeeze_unsqueeze_flatten_transpose() {
        let x = f(&[1, 3, 1], &[1., 2., 3.]);
        assert_eq!(run1(&op("Squeeze", 13, &[]), &[&x]).shape(), &[3]);
        assert_eq!(run1(&op("Squeeze", 13, &[]), &[&x, &i(&[1], &[-1])]).shape(), &[1, 3]);
        assert_eq!(run1(&op("Squeeze", 11, &[("axes", Attr::Ints(vec![0]))]), &[&x]).shape(), &[3, 1]);
        assert!(run(&op("Squeeze", 13, &[]), &[&x, &i(&[1], &[1])]).is_err());
        assert_eq!(run1(&op("Unsqueeze", 13, &[]), &[&x, &i(&[2], &[0, -1])]).shape(), &[1, 1, 3, 1, 1]);
        assert_eq!(run1(&op("Unsqueeze", 11, &[("axes", Attr::Ints(vec![1]))]), &[&x]).shape(), &[1, 1, 3, 1]);
        assert_eq!(run1(&op("Flatten", 13, &[]), &[&x234()]).shape(), &[2, 12]);
        assert_eq!(run1(&op("Flatten", 13, &[("axis", Attr::Int(0))]), &[&x234()]).shape(), &[1, 24]);
        assert_eq!(run1(&op("Flatten", 13, &[("axis", Attr::Int(-1))]), &[&x234()]).shape(), &[6, 4]);
        let y = run1(&op("Transpose", 13, &[("perm", Attr::Ints(vec![2, 0, 1]))]), &[&x234()]);
        assert_eq!(y.shape(), &[4, 2, 3]);
        // y[c][a][b] = x[a][b][c] = 12a + 4b + c
        assert_eq!(&fvec(&y)[..6], &[0., 4., 8., 12., 16., 20.]);
        let y = run1(&op("Transpose", 13, &[]), &[&f(&[2, 3], &[1., 2., 3., 4., 5., 6.])]);
        assert_eq!(fvec(&y), vec![1., 4., 2., 5., 3., 6.]);
        assert!(run(&op("Transpose", 13, &[("perm", Attr::Ints(vec![0, 0, 1]))]), &[&x234()]).is_err());
    }

    #[test]
    fn concat_and_split() {
        let a = i(&[2, 1], &[1, 2]);
        let bb = i(&[2, 2], &[3, 4, 5, 6]);
        let y = run1(&op("Concat", 13, &[("axis", Attr::Int(-1))]), &[&a, &bb]);
        assert_eq!(y.shape(), &[2, 3]);
        assert_eq!(ivec(&y), vec![1, 3, 4, 2, 5, 6]);
        assert!(run(&op("Concat", 13, &[("axis", Attr::Int(0))]), &[&a, &bb]).is_err());
        assert!(run(&op("Concat", 13, &[("axis", Attr::Int(1))]), &[&a, &f(&[2, 1], &[0., 0.])]).is_err());
        let x = f(&[5], &[1., 2., 3., 4., 5.]);
        // opset 13 split input.
        let o = run_opt(&op("Split", 13, &[]), &[Some(&x), Some(&i(&[2], &[2, 3]))], 2).unwrap();
        assert_eq!(fvec(&o[0]), vec![1., 2.]);
        assert_eq!(fvec(&o[1]), vec![3., 4., 5.]);
        // opset 11 split attribute.
        let o = run_opt(&op("Split", 11, &[("split", Attr::Ints(vec![4, 1]))]), &[Some(&x)], 2).unwrap();
        assert_eq!(fvec(&o[1]), vec![5.]);
        // opset 18 num_outputs: chunks of ceil(5/3) = 2, last one shorter.
        let o = run_opt(&op("Split", 18, &[("num_outputs", Attr::Int(3))]), &[Some(&x)], 3).unwrap();
        assert_eq!(o.iter().map(|v| v.shape()[0]).collect::<Vec<_>>(), vec![2, 2, 1]);
        // Equal split by the number of outputs.
        let o = run_opt(&op("Split", 13, &[]), &[Some(&f(&[2, 4], &[0.; 8]))], 2).unwrap();
        assert_eq!(o[1].shape(), &[1, 4]);
        let o2 = run_opt(&op("Split", 13, &[("axis", Attr::Int(1))]), &[Some(&f(&[2, 4], &[0.; 8]))], 2).unwrap();
        assert_eq!(o2[0].shape(), &[2, 2]);
        assert!(run_opt(&op("Split", 13, &[]), &[Some(&x)], 2).is_err());
        assert!(run_opt(&op("Split", 13, &[]), &[Some(&x), Some(&i(&[2], &[2, 2]))], 2).is_err());
    }

    #[test]
    fn slice_clamping_and_negative_steps() {
        assert_eq!(clamp_slice(1, 3, 1, 5).unwrap(), AxisSlice { start: 1, count: 2, step: 1 });
        assert_eq!(clamp_slice(-2, i64::MAX, 1, 5).unwrap(), AxisSlice { start: 3, count: 2, step: 1 });
        assert_eq!(clamp_slice(-1, i64::MIN, -1, 5).unwrap(), AxisSlice { start: 4, count: 5, step: -1 });
        assert_eq!(clamp_slice(10, -10, -2, 5).unwrap(), AxisSlice { start: 4, count: 3, step: -2 });
        assert_eq!(clamp_slice(3, 1, 1, 5).unwrap().count, 0);
        assert_eq!(clamp_slice(0, 5, 3, 5).unwrap().count, 2);
        assert!(clamp_slice(0, 1, 0, 5).is_err());
        assert_eq!(clamp_slice(-1, i64::MIN, -1, 0).unwrap().count, 0);
        assert!(reshape_target(&[2], &[i64::MAX, 4], false).is_err());
        let x = f(&[5], &[0., 1., 2., 3., 4.]);
        let s = |st: i64, en: i64, sp: i64| {
            fvec(&run1(&op("Slice", 13, &[]), &[&x, &i(&[1], &[st]), &i(&[1], &[en]), &i(&[1], &[0]), &i(&[1], &[sp])]))
        };
        assert_eq!(s(1, 3, 1), vec![1., 2.]);
        assert_eq!(s(-1, i64::MIN, -1), vec![4., 3., 2., 1., 0.]);
        assert_eq!(s(10, -10, -2), vec![4., 2., 0.]);
        assert_eq!(s(0, 100, 3), vec![0., 3.]);
        assert_eq!(s(3, 1, 1), Vec::<f32>::new());
        // 2-D with axes and default steps; opset 1 attributes.
        let y = run1(&op("Slice", 13, &[]), &[&x234(), &i(&[2], &[1, -2]), &i(&[2], &[2, 100]), &i(&[2], &[0, 2])]);
        assert_eq!(y.shape(), &[1, 3, 2]);
        assert_eq!(fvec(&y), vec![14., 15., 18., 19., 22., 23.]);
        let o = op(
            "Slice",
            1,
            &[("starts", Attr::Ints(vec![1])), ("ends", Attr::Ints(vec![3])), ("axes", Attr::Ints(vec![1]))],
        );
        assert_eq!(run1(&o, &[&x234()]).shape(), &[2, 2, 4]);
    }

    #[test]
    fn expand_tile_pad() {
        let x = f(&[3, 1], &[1., 2., 3.]);
        let y = run1(&op("Expand", 13, &[]), &[&x, &i(&[3], &[2, 1, 2])]);
        assert_eq!(y.shape(), &[2, 3, 2]);
        assert_eq!(fvec(&y), vec![1., 1., 2., 2., 3., 3., 1., 1., 2., 2., 3., 3.]);
        // Expand broadcasts both ways: [3, 1] with [4] gives [3, 4]; [2, 1] does not fit.
        assert_eq!(run1(&op("Expand", 13, &[]), &[&x, &i(&[1], &[4])]).shape(), &[3, 4]);
        assert!(run(&op("Expand", 13, &[]), &[&x, &i(&[2], &[2, 1])]).is_err());
        let y = run1(&op("Tile", 13, &[]), &[&f(&[2], &[1., 2.]), &i(&[1], &[3])]);
        assert_eq!(fvec(&y), vec![1., 2., 1., 2., 1., 2.]);
        let y = run1(&op("Tile", 13, &[]), &[&x, &i(&[2], &[1, 2])]);
        assert_eq!(fvec(&y), vec![1., 1., 2., 2., 3., 3.]);
        let p = f(&[3], &[1., 2., 3.]);
        let pad = |mode: &str, pads: [i64; 2]| {
            fvec(&run1(&op("Pad", 18, &[("mode", Attr::String(mode.into()))]), &[&p, &i(&[2], &pads)]))
        };
        assert_eq!(pad("constant", [2, 1]), vec![0., 0., 1., 2., 3., 0.]);
        assert_eq!(pad("edge", [2, 1]), vec![1., 1., 1., 2., 3., 3.]);
        assert_eq!(pad("reflect", [2, 2]), vec![3., 2., 1., 2., 3., 2., 1.]);
        assert_eq!(pad("wrap", [2, 1]), vec![2., 3., 1., 2., 3., 1.]);
        assert_eq!(pad("constant", [-1, 1]), vec![2., 3., 0.]);
        let y = run1(&op("Pad", 18, &[]), &[&p, &i(&[2], &[1, 0]), &f(&[], &[9.])]);
        assert_eq!(fvec(&y), vec![9., 1., 2., 3.]);
        let y = run1(&op("Pad", 2, &[("pads", Attr::Ints(vec![0, 1, 0, 0])), ("value", Attr::Float(5.))]), &[&x]);
        assert_eq!(y.shape(), &[3, 2]);
        assert_eq!(fvec(&y), vec![5., 1., 5., 2., 5., 3.]);
    }

    #[test]
    fn shape_size_range_constants_trilu() {
        assert_eq!(ivec(&run1(&op("Shape", 15, &[]), &[&x234()])), vec![2, 3, 4]);
        assert_eq!(ivec(&run1(&op("Shape", 15, &[("start", Attr::Int(-2))]), &[&x234()])), vec![3, 4]);
        assert_eq!(
            ivec(&run1(&op("Shape", 15, &[("start", Attr::Int(1)), ("end", Attr::Int(-1))]), &[&x234()])),
            vec![3]
        );
        assert_eq!(ivec(&run1(&op("Shape", 15, &[("start", Attr::Int(5))]), &[&x234()])), Vec::<i64>::new());
        assert_eq!(ivec(&run1(&op("Size", 13, &[]), &[&x234()])), vec![24]);
        assert_eq!(ivec(&run1(&op("Range", 11, &[]), &[&i(&[], &[1]), &i(&[], &[8]), &i(&[], &[3])])), vec![1, 4, 7]);
        assert_eq!(ivec(&run1(&op("Range", 11, &[]), &[&i(&[], &[5]), &i(&[], &[1]), &i(&[], &[-2])])), vec![5, 3]);
        assert_eq!(
            ivec(&run1(&op("Range", 11, &[]), &[&i(&[], &[5]), &i(&[], &[1]), &i(&[], &[2])])),
            Vec::<i64>::new()
        );
        assert_eq!(
            fvec(&run1(&op("Range", 11, &[]), &[&f(&[], &[0.]), &f(&[], &[1.]), &f(&[], &[0.25])])),
            vec![0., 0.25, 0.5, 0.75]
        );
        assert!(run(&op("Range", 11, &[]), &[&i(&[], &[0]), &i(&[], &[1]), &i(&[], &[0])]).is_err());
        let o = op("ConstantOfShape", 9, &[("value", Attr::Tensor(Tensor::scalar_i64(7)))]);
        let y = run1(&o, &[&i(&[2], &[2, 2])]);
        assert_eq!((y.dtype, ivec(&y)), (DType::I64, vec![7; 4]));
        let y = run1(&op("ConstantOfShape", 9, &[]), &[&i(&[1], &[3])]);
        assert_eq!(fvec(&y), vec![0.; 3]);
        let c = run1(&op("Constant", 13, &[("value_ints", Attr::Ints(vec![1, 2]))]), &[]);
        assert_eq!(ivec(&c), vec![1, 2]);
        let c = run1(&op("Constant", 13, &[("value_float", Attr::Float(2.5))]), &[]);
        assert_eq!((c.shape().len(), fvec(&c)), (0, vec![2.5]));
        let t = Tensor::from_f32(vec![2], &[1.0, 2.0]).unwrap();
        assert_eq!(fvec(&run1(&op("Constant", 13, &[("value", Attr::Tensor(t))]), &[])), vec![1.0, 2.0]);
        assert!(run(&op("Constant", 13, &[("value_string", Attr::String("a".into()))]), &[]).is_err());
        let m = f(&[3, 3], &[1., 2., 3., 4., 5., 6., 7., 8., 9.]);
        assert_eq!(fvec(&run1(&op("Trilu", 14, &[]), &[&m])), vec![1., 2., 3., 0., 5., 6., 0., 0., 9.]);
        assert_eq!(
            fvec(&run1(&op("Trilu", 14, &[("upper", Attr::Int(0))]), &[&m])),
            vec![1., 0., 0., 4., 5., 0., 7., 8., 9.]
        );
        assert_eq!(fvec(&run1(&op("Trilu", 14, &[]), &[&m, &i(&[], &[1])])), vec![0., 2., 3., 0., 0., 6., 0., 0., 0.]);
        let y = run1(&op("Trilu", 14, &[("upper", Attr::Int(0))]), &[&b(&[2, 2], &[true; 4]), &i(&[], &[-1])]);
        assert_eq!(bvec(&y), vec![false, false, true, false]);
        let outs = run_opt(&op("Dropout", 13, &[]), &[Some(&m)], 2).unwrap();
        assert_eq!((fvec(&outs[0]), bvec(&outs[1]).len()), (fvec(&m), 9));
    }
}
