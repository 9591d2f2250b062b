//! Shared helpers for the ONNX kernels: the per-node context [`Ctx`] (input and attribute
//! access that fails with a message saying what is wrong), numpy broadcasting, axis
//! normalisation and small array conversions.
//!
//! Kernels return `Result<_, String>`; `mod.rs` wraps the message with the node and op name.
use std::borrow::Cow;

use jetc_ir::{Attr, OnnxOp};
use ndarray::{ArrayD, ArrayViewD, IxDyn, Zip};

use crate::value::Value;

/// What a kernel returns: its outputs, or a message saying what is wrong.
pub(crate) type OpResult<T = Vec<Value>> = std::result::Result<T, String>;

/// One node being evaluated.
pub(crate) struct Ctx<'a> {
    pub op: &'a OnnxOp,
    pub inputs: &'a [Option<&'a Value>],
    /// How many outputs the graph uses (kernels with optional outputs may skip the others).
    pub num_outputs: usize,
}

impl<'a> Ctx<'a> {
    pub fn opset(&self) -> i64 {
        self.op.opset
    }

    /// Input `i`, or `None` when omitted (or beyond the inputs given).
    pub fn opt(&self, i: usize) -> Option<&'a Value> {
        self.inputs.get(i).copied().flatten()
    }

    pub fn input(&self, i: usize) -> OpResult<&'a Value> {
        self.opt(i).ok_or_else(|| format!("required input {i} is missing"))
    }

    pub fn f32(&self, i: usize) -> OpResult<&'a ArrayD<f32>> {
        let v = self.input(i)?;
        v.as_f32().ok_or_else(|| format!("input {i} must be a float tensor, got {}", v.dtype))
    }

    pub fn opt_f32(&self, i: usize) -> OpResult<Option<&'a ArrayD<f32>>> {
        match self.opt(i) {
            None => Ok(None),
            Some(v) => v.as_f32().map(Some).ok_or_else(|| format!("input {i} must be a float tensor, got {}", v.dtype)),
        }
    }

    pub fn i64(&self, i: usize) -> OpResult<&'a ArrayD<i64>> {
        let v = self.input(i)?;
        v.as_i64().ok_or_else(|| format!("input {i} must be an integer tensor, got {}", v.dtype))
    }

    pub fn bool(&self, i: usize) -> OpResult<&'a ArrayD<bool>> {
        let v = self.input(i)?;
        v.as_bool().ok_or_else(|| format!("input {i} must be a bool tensor, got {}", v.dtype))
    }

    /// The elements of integer input `i`, flattened.
    pub fn ints(&self, i: usize) -> OpResult<Vec<i64>> {
        Ok(to_vec(self.i64(i)?))
    }

    pub fn opt_ints(&self, i: usize) -> OpResult<Option<Vec<i64>>> {
        match self.opt(i) {
            None => Ok(None),
            Some(_) => self.ints(i).map(Some),
        }
    }

    /// Integer input `i` holding exactly one element.
    pub fn scalar_int(&self, i: usize) -> OpResult<i64> {
        let v = self.ints(i)?;
        match v.as_slice() {
            [x] => Ok(*x),
            _ => Err(format!("input {i} must hold exactly one integer, got {} elements", v.len())),
        }
    }

    /// Int attribute; an attribute of another kind is an error.
    pub fn attr_int(&self, name: &str) -> OpResult<Option<i64>> {
        match self.op.attrs.get(name) {
            None => Ok(None),
            Some(Attr::Int(v)) => Ok(Some(*v)),
            Some(other) => Err(format!("attribute `{name}` must be an int, got {other}")),
        }
    }

    pub fn int_or(&self, name: &str, default: i64) -> OpResult<i64> {
        Ok(self.attr_int(name)?.unwrap_or(default))
    }

    pub fn req_int(&self, name: &str) -> OpResult<i64> {
        self.attr_int(name)?.ok_or_else(|| format!("required attribute `{name}` is missing"))
    }

    /// Float attribute (an int attribute is accepted and converted).
    pub fn attr_float(&self, name: &str) -> OpResult<Option<f32>> {
        match self.op.attrs.get(name) {
            None => Ok(None),
            Some(Attr::Float(v)) => Ok(Some(*v)),
            Some(Attr::Int(v)) => Ok(Some(*v as f32)),
            Some(other) => Err(format!("attribute `{name}` must be a float, got {other}")),
        }
    }

    pub fn float_or(&self, name: &str, default: f32) -> OpResult<f32> {
        Ok(self.attr_float(name)?.unwrap_or(default))
    }

    pub fn attr_ints(&self, name: &str) -> OpResult<Option<&'a [i64]>> {
        match self.op.attrs.get(name) {
            None => Ok(None),
            Some(Attr::Ints(v)) => Ok(Some(v)),
            Some(other) => Err(format!("attribute `{name}` must be a list of ints, got {other}")),
        }
    }

    pub fn attr_floats(&self, name: &str) -> OpResult<Option<&'a [f32]>> {
        match self.op.attrs.get(name) {
            None => Ok(None),
            Some(Attr::Floats(v)) => Ok(Some(v)),
            Some(other) => Err(format!("attribute `{name}` must be a list of floats, got {other}")),
        }
    }

    pub fn attr_string(&self, name: &str) -> OpResult<Option<&'a str>> {
        match self.op.attrs.get(name) {
            None => Ok(None),
            Some(Attr::String(v)) => Ok(Some(v)),
            Some(other) => Err(format!("attribute `{name}` must be a string, got {other}")),
        }
    }

    /// A 0/1 flag attribute.
    pub fn flag(&self, name: &str, default: bool) -> OpResult<bool> {
        match self.int_or(name, default as i64)? {
            0 => Ok(false),
            1 => Ok(true),
            v => Err(format!("attribute `{name}` must be 0 or 1, got {v}")),
        }
    }

    /// Axes given by attribute before `input_from_opset`, by input `input` from it on.
    pub fn axes_attr_or_input(&self, input: usize, input_from_opset: i64) -> OpResult<Option<Vec<i64>>> {
        if self.opset() < input_from_opset {
            Ok(self.attr_ints("axes")?.map(|a| a.to_vec()))
        } else {
            self.opt_ints(input)
        }
    }
}

/// Normalises a possibly negative axis against `rank`.
pub(crate) fn norm_axis(axis: i64, rank: usize) -> OpResult<usize> {
    let r = rank as i64;
    let a = if axis < 0 { axis + r } else { axis };
    if (0..r).contains(&a) {
        Ok(a as usize)
    } else {
        Err(format!("axis {axis} is out of range for a tensor of rank {rank}"))
    }
}

/// Normalises a list of axes; duplicates are an error.
pub(crate) fn norm_axes(axes: &[i64], rank: usize) -> OpResult<Vec<usize>> {
    let mut out = Vec::with_capacity(axes.len());
    for &a in axes {
        let n = norm_axis(a, rank)?;
        if out.contains(&n) {
            return Err(format!("axis {a} appears more than once in {axes:?}"));
        }
        out.push(n);
    }
    Ok(out)
}

/// A shape from integer values; negative entries are an error.
pub(crate) fn to_dims(v: &[i64], what: &str) -> OpResult<Vec<usize>> {
    v.iter().map(|&d| usize::try_from(d).map_err(|_| format!("{what} {v:?} has a negative dimension"))).collect()
}

/// The numpy broadcast of several shapes.
pub(crate) fn broadcast_shapes(shapes: &[&[usize]]) -> OpResult<Vec<usize>> {
    let rank = shapes.iter().map(|s| s.len()).max().unwrap_or(0);
    let mut out = vec![1usize; rank];
    for s in shapes {
        let off = rank - s.len();
        for (i, &d) in s.iter().enumerate() {
            let o = &mut out[off + i];
            if *o == 1 {
                *o = d;
            } else if d != 1 && d != *o {
                return Err(format!("shapes {shapes:?} cannot be broadcast together"));
            }
        }
    }
    Ok(out)
}

/// A view of `a` broadcast to `shape` (numpy rules, `a` on the right).
pub(crate) fn broadcast_to<'b, T>(a: &'b ArrayD<T>, shape: &[usize]) -> OpResult<ArrayViewD<'b, T>> {
    a.broadcast(IxDyn(shape)).ok_or_else(|| format!("shape {:?} cannot be broadcast to {shape:?}", a.shape()))
}

/// Element-wise `f(a, b)` with numpy broadcasting.
pub(crate) fn zip2<A: Copy, B: Copy, C: Clone>(
    a: &ArrayD<A>,
    b: &ArrayD<B>,
    f: impl Fn(A, B) -> C,
) -> OpResult<ArrayD<C>> {
    if a.shape() == b.shape() {
        if let (Some(x), Some(y)) = (a.as_slice(), b.as_slice()) {
            let v = x.iter().zip(y).map(|(&p, &q)| f(p, q)).collect();
            return array(a.shape(), v);
        }
    }
    if b.len() == 1 && b.ndim() <= a.ndim() {
        if let (Some(x), Some(&q)) = (a.as_slice(), b.iter().next()) {
            let shape = broadcast_shapes(&[a.shape(), b.shape()])?;
            return array(&shape, x.iter().map(|&p| f(p, q)).collect());
        }
    }
    let shape = broadcast_shapes(&[a.shape(), b.shape()])?;
    let (va, vb) = (broadcast_to(a, &shape)?, broadcast_to(b, &shape)?);
    Ok(standard(Zip::from(&va).and(&vb).map_collect(|&p, &q| f(p, q))))
}

/// Element-wise `f(a, b, c)` with numpy broadcasting.
pub(crate) fn zip3<A: Copy, B: Copy, C: Copy, D: Clone>(
    a: &ArrayD<A>,
    b: &ArrayD<B>,
    c: &ArrayD<C>,
    f: impl Fn(A, B, C) -> D,
) -> OpResult<ArrayD<D>> {
    let shape = broadcast_shapes(&[a.shape(), b.shape(), c.shape()])?;
    let (va, vb, vc) = (broadcast_to(a, &shape)?, broadcast_to(b, &shape)?, broadcast_to(c, &shape)?);
    Ok(standard(Zip::from(&va).and(&vb).and(&vc).map_collect(|&p, &q, &r| f(p, q, r))))
}

/// Makes an array from a shape and row-major data.
pub(crate) fn array<T>(shape: &[usize], data: Vec<T>) -> OpResult<ArrayD<T>> {
    let n = data.len();
    ArrayD::from_shape_vec(IxDyn(shape), data)
        .map_err(|e| format!("internal error: {n} elements do not fit shape {shape:?}: {e}"))
}

/// The elements in row-major order.
pub(crate) fn to_vec<T: Clone>(a: &ArrayD<T>) -> Vec<T> {
    match a.as_slice() {
        Some(s) => s.to_vec(),
        None => a.iter().cloned().collect(),
    }
}

/// The elements in row-major order, borrowed when the array is already contiguous.
pub(crate) fn contiguous<T: Clone>(a: &ArrayD<T>) -> Cow<'_, [T]> {
    match a.as_slice() {
        Some(s) => Cow::Borrowed(s),
        None => Cow::Owned(a.iter().cloned().collect()),
    }
}

/// The array in standard (row-major, contiguous) layout, copying only when needed.
pub(crate) fn standard<T: Clone>(a: ArrayD<T>) -> ArrayD<T> {
    if a.is_standard_layout() {
        a
    } else {
        a.as_standard_layout().into_owned()
    }
}

/// A standard-layout copy of a view.
pub(crate) fn owned<T: Clone>(v: ArrayViewD<'_, T>) -> ArrayD<T> {
    v.as_standard_layout().into_owned()
}

/// Applies `$body` to the array inside a value whatever its element type; `$a` names the
/// array (`&ArrayD<T>`) and the body yields an `ArrayD<T>` of the same element type.
macro_rules! map_data {
    ($v:expr, |$a:ident| $body:expr) => {
        match &$v.dense().data {
            $crate::value::Data::F($a) => $crate::value::Data::F($body),
            $crate::value::Data::I($a) => $crate::value::Data::I($body),
            $crate::value::Data::B($a) => $crate::value::Data::B($body),
            $crate::value::Data::Q(_) => return Err($crate::value::NOT_DENSE.into()),
        }
    };
}
pub(crate) use map_data;

/// The arrays of several values that must share one storage kind, or an error naming the
/// first mismatch.
pub(crate) fn same_kind<'v, T>(
    vals: &[&'v Value],
    get: impl Fn(&'v Value) -> Option<&'v ArrayD<T>>,
) -> OpResult<Vec<&'v ArrayD<T>>> {
    vals.iter()
        .enumerate()
        .map(|(i, v)| {
            get(v).ok_or_else(|| {
                format!(
                    "input {i} has dtype {} but the inputs must share one element type ({})",
                    v.dtype, vals[0].dtype
                )
            })
        })
        .collect()
}

#[cfg(test)]
pub(crate) mod test_util {
    //! Helpers for the kernel tests: building nodes and values, a tiny PRNG, comparisons.
    use super::*;

    pub fn op(op_type: &str, opset: i64, attrs: &[(&str, Attr)]) -> OnnxOp {
        let mut o = OnnxOp::new(op_type, opset);
        for (k, v) in attrs {
            o.attrs.insert(k.to_string(), v.clone());
        }
        o
    }

    pub fn ms_op(op_type: &str, attrs: &[(&str, Attr)]) -> OnnxOp {
        let mut o = op(op_type, 1, attrs);
        o.domain = "com.microsoft".into();
        o
    }

    pub fn f(shape: &[usize], data: &[f32]) -> Value {
        Value::f32(ArrayD::from_shape_vec(IxDyn(shape), data.to_vec()).expect("test shape"))
    }

    pub fn i(shape: &[usize], data: &[i64]) -> Value {
        Value::i64(ArrayD::from_shape_vec(IxDyn(shape), data.to_vec()).expect("test shape"))
    }

    pub fn b(shape: &[usize], data: &[bool]) -> Value {
        Value::bool(ArrayD::from_shape_vec(IxDyn(shape), data.to_vec()).expect("test shape"))
    }

    /// Runs a node with all inputs present.
    pub fn run(o: &OnnxOp, inputs: &[&Value]) -> crate::Result<Vec<Value>> {
        let ins: Vec<Option<&Value>> = inputs.iter().map(|v| Some(*v)).collect();
        crate::onnx_ops::eval(o, "n", &ins, 1)
    }

    /// Runs a node with optional inputs and a number of wanted outputs.
    pub fn run_opt(o: &OnnxOp, inputs: &[Option<&Value>], n_out: usize) -> crate::Result<Vec<Value>> {
        crate::onnx_ops::eval(o, "n", inputs, n_out)
    }

    pub fn run1(o: &OnnxOp, inputs: &[&Value]) -> Value {
        run(o, inputs).expect("kernel failed").remove(0)
    }

    pub fn fvec(v: &Value) -> Vec<f32> {
        to_vec(v.as_f32().expect("float output"))
    }

    pub fn ivec(v: &Value) -> Vec<i64> {
        to_vec(v.as_i64().expect("int output"))
    }

    pub fn bvec(v: &Value) -> Vec<bool> {
        to_vec(v.as_bool().expect("bool output"))
    }

    pub fn assert_close(got: &[f32], want: &[f64], tol: f64) {
        assert_eq!(got.len(), want.len(), "length differs");
        for (k, (&g, &w)) in got.iter().zip(want).enumerate() {
            let err = (g as f64 - w).abs();
            assert!(err <= tol * (1.0 + w.abs()), "element {k}: got {g}, want {w} (err {err})");
        }
    }

    /// xorshift64* — deterministic inputs without a rand dependency.
    pub struct Rng(u64);

    impl Rng {
        pub fn new(seed: u64) -> Rng {
            Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
        }

        pub fn next_u64(&mut self) -> u64 {
            let mut x = self.0;
            x ^= x >> 12;
            x ^= x << 25;
            x ^= x >> 27;
            self.0 = x;
            x.wrapping_mul(0x2545_F491_4F6C_DD1D)
        }

        /// Uniform in [-1, 1).
        pub fn uniform(&mut self) -> f32 {
            ((self.next_u64() >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
        }

        pub fn vec(&mut self, n: usize) -> Vec<f32> {
            (0..n).map(|_| self.uniform()).collect()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn broadcast_examples() {
        assert_eq!(broadcast_shapes(&[&[2, 3, 4], &[3, 1]]).unwrap(), vec![2, 3, 4]);
        assert_eq!(broadcast_shapes(&[&[1], &[5, 1, 7]]).unwrap(), vec![5, 1, 7]);
        assert_eq!(broadcast_shapes(&[&[], &[2]]).unwrap(), vec![2]);
        assert_eq!(broadcast_shapes(&[&[0, 3], &[1, 3]]).unwrap(), vec![0, 3]);
        assert!(broadcast_shapes(&[&[2, 3], &[3, 2]]).is_err());
    }

    #[test]
    fn axis_normalisation() {
        assert_eq!(norm_axis(-1, 3).unwrap(), 2);
        assert_eq!(norm_axis(0, 1).unwrap(), 0);
        assert!(norm_axis(3, 3).is_err());
        assert!(norm_axis(-4, 3).is_err());
        assert!(norm_axes(&[1, -2], 3).is_err());
    }

    fn shape_strategy() -> impl Strategy<Value = Vec<usize>> {
        prop::collection::vec(1usize..4, 0..4)
    }

    proptest! {
        /// Broadcasting against a shape obtained by replacing some dims of `s` with 1 (and
        /// dropping leading dims) gives back `s`, symmetrically, and zip2 agrees with
        /// explicit index arithmetic.
        #[test]
        fn broadcast_matches_index_arithmetic(s in shape_strategy(), mask in prop::collection::vec(any::<bool>(), 4), drop in 0usize..4) {
            let drop = drop.min(s.len());
            let t: Vec<usize> = s[drop..].iter().enumerate().map(|(k, &d)| if mask[k] { 1 } else { d }).collect();
            prop_assert_eq!(broadcast_shapes(&[&s, &t]).unwrap(), s.clone());
            prop_assert_eq!(broadcast_shapes(&[&t, &s]).unwrap(), s.clone());
            let n: usize = s.iter().product();
            let m: usize = t.iter().product();
            let a = ArrayD::from_shape_vec(IxDyn(&s), (0..n).map(|v| v as i64).collect()).unwrap();
            let b = ArrayD::from_shape_vec(IxDyn(&t), (0..m).map(|v| 1000 * v as i64).collect()).unwrap();
            let got = zip2(&a, &b, |x, y| x + y).unwrap();
            prop_assert_eq!(got.shape(), &s[..]);
            for (idx, &g) in got.indexed_iter() {
                let mut off = 0usize;
                for (k, &d) in t.iter().enumerate() {
                    let full = idx[drop + k];
                    off = off * d + if d == 1 { 0 } else { full };
                }
                let mut aoff = 0usize;
                for (k, &d) in s.iter().enumerate() {
                    aoff = aoff * d + idx[k];
                }
                prop_assert_eq!(g, aoff as i64 + 1000 * off as i64);
            }
        }

        /// Two shapes with a dimension that differs and is not 1 never broadcast.
        #[test]
        fn incompatible_shapes_fail(d1 in 2usize..5, d2 in 2usize..5, rest in shape_strategy()) {
            prop_assume!(d1 != d2);
            let mut a = rest.clone();
            a.push(d1);
            let mut b = rest;
            b.push(d2);
            prop_assert!(broadcast_shapes(&[&a, &b]).is_err());
        }
    }
}
