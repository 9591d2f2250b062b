//! Type and shape inference for the ops of the IR.
//!
//! Besides dtypes and symbolic shapes, inference tracks the *symbolic content* of small
//! integer tensors (`Fact::value`): that is what turns the `Shape -> Gather -> Unsqueeze ->
//! Concat -> Reshape` plumbing of exported graphs into shapes such as `[batch, seq, 4, 16]`.
//! `infer_node` returns `None` for an op it has no rule for; the importer then keeps the
//! facts the model declared.
use crate::dtype::DType;
use crate::error::{IrError, Result};
use crate::op::{AttentionSpec, LinearAttentionSpec, OnnxOp, Op};
use crate::shape::{Dim, Fact};
use crate::tensor::Tensor;

/// Small integer constants are tracked as symbolic values up to this many elements.
const MAX_TRACKED: usize = 64;

/// Input facts of a node, with the constant tensor behind each input when it is one.
pub struct NodeInputs<'a> {
    pub facts: Vec<Option<&'a Fact>>,
    pub consts: Vec<Option<&'a Tensor>>,
}

impl<'a> NodeInputs<'a> {
    fn fact(&self, i: usize) -> Option<&'a Fact> {
        self.facts.get(i).copied().flatten()
    }
    fn shape(&self, i: usize) -> Option<&'a Vec<Dim>> {
        self.fact(i)?.shape.as_ref()
    }
    fn value(&self, i: usize) -> Option<&'a Vec<Dim>> {
        self.fact(i)?.value.as_ref()
    }
    fn dtype(&self, i: usize) -> Option<DType> {
        self.fact(i).map(|f| f.dtype)
    }
    /// Known integer content of input `i` (from its constant or its tracked value).
    fn ints(&self, i: usize) -> Option<Vec<i64>> {
        if let Some(t) = self.consts.get(i).copied().flatten() {
            return Some(t.to_i64_vec());
        }
        self.value(i)?.iter().map(|d| d.as_known()).collect()
    }
}

/// The fact of a constant, with its content tracked when it is a small integer tensor.
pub fn const_fact(t: &Tensor) -> Fact {
    let f = Fact::known(t.dtype(), t.shape());
    if t.dtype().is_int() && t.shape().len() <= 1 && t.numel() <= MAX_TRACKED {
        f.with_value(t.to_i64_vec().into_iter().map(Dim::known).collect())
    } else {
        f
    }
}

pub fn infer_node(op: &Op, node: &str, inputs: &NodeInputs) -> Result<Option<Vec<Fact>>> {
    let err = |msg: String| IrError::node(node, op.name(), msg);
    match op {
        Op::Input => Ok(None),
        Op::Const(t) => Ok(Some(vec![const_fact(t)])),
        Op::Onnx(o) => infer_onnx(o, inputs).map_err(err),
        Op::Embedding => {
            let table = inputs.shape(0).ok_or_else(|| err("embedding table shape unknown".into()))?;
            let dt = inputs.dtype(0).unwrap_or(DType::F32);
            Ok(inputs.shape(1).map(|ids| {
                let mut s = ids.clone();
                s.push(table.get(1).cloned().unwrap_or(Dim::known(0)));
                vec![Fact::new(dt, s)]
            }))
        }
        Op::RmsNorm(_) => Ok(inputs.fact(0).map(|f| vec![Fact { value: None, ..f.clone() }])),
        Op::SwiGlu => Ok(inputs.fact(0).map(|f| vec![Fact { value: None, ..f.clone() }])),
        Op::Attention(spec) => Ok(infer_attention(spec, inputs)),
        Op::LinearAttention(spec) => Ok(infer_linear(spec, inputs)),
        Op::DynamicConv(spec) => Ok(inputs.shape(0).map(|u| {
            let dt = inputs.dtype(0).unwrap_or(DType::F32);
            let (b, c) = (u[0].clone(), u.last().cloned().unwrap_or(Dim::known(0)));
            vec![Fact::new(dt, u.clone()), Fact::new(dt, vec![b, c, Dim::known(spec.width as i64)])]
        })),
        Op::JetBlock(spec) => Ok(inputs.shape(0).map(|x| {
            let dt = inputs.dtype(0).unwrap_or(DType::F32);
            let k = |v: usize| Dim::known(v as i64);
            vec![
                Fact::new(dt, x.clone()),
                Fact::new(dt, vec![x[0].clone(), k(spec.heads * spec.dv), k(spec.width)]),
                Fact::new(DType::F32, vec![x[0].clone(), k(spec.heads), k(spec.dk), k(spec.dv)]),
            ]
        })),
        Op::Backward(b) => Ok(b
            .wrt
            .iter()
            .map(|&slot| inputs.fact(slot).map(|f| Fact { dtype: DType::F32, value: None, ..f.clone() }))
            .collect()),
        Op::L2Norm { .. } | Op::GatedRmsNorm { .. } | Op::Switch { .. } => {
            Ok(inputs.fact(0).map(|f| vec![Fact { value: None, ..f.clone() }]))
        }
    }
}

fn infer_attention(spec: &AttentionSpec, inputs: &NodeInputs) -> Option<Vec<Fact>> {
    let x = inputs.shape(AttentionSpec::X)?;
    let dt = inputs.dtype(AttentionSpec::X)?;
    let (b, t) = (x.first()?.clone(), x.get(1)?.clone());
    let mut total = match inputs.shape(AttentionSpec::PAST_K) {
        Some(p) => p.get(2)?.add(&t),
        None => t.clone(),
    };
    if let Some(w) = spec.window {
        // The cache keeps the last `w` tokens: min(total, w).
        total = total.min_with(w as i64);
    }
    let kv = Fact::new(dt, vec![b, Dim::known(spec.kv_heads as i64), total, Dim::known(spec.head_dim as i64)]);
    Some(vec![Fact::new(dt, x.clone()), kv.clone(), kv])
}

fn infer_linear(spec: &LinearAttentionSpec, inputs: &NodeInputs) -> Option<Vec<Fact>> {
    let q = inputs.shape(LinearAttentionSpec::Q)?;
    if q.len() != 3 {
        return None;
    }
    let dt = inputs.dtype(LinearAttentionSpec::Q)?;
    let o = Fact::new(dt, vec![q[0].clone(), q[1].clone(), known((spec.q_heads * spec.dv) as i64)]);
    let state = Fact::new(
        DType::F32,
        vec![q[0].clone(), known(spec.kv_heads as i64), known(spec.dk as i64), known(spec.dv as i64)],
    );
    Some(vec![o, state])
}

fn known(v: i64) -> Dim {
    Dim::known(v)
}

fn norm_axis(axis: i64, rank: usize) -> std::result::Result<usize, String> {
    let r = rank as i64;
    let a = if axis < 0 { axis + r } else { axis };
    if a < 0 || a >= r.max(1) {
        return Err(format!("axis {axis} out of range for rank {rank}"));
    }
    Ok(a as usize)
}

/// Numpy broadcasting of symbolic shapes.
pub fn broadcast(a: &[Dim], b: &[Dim]) -> std::result::Result<Vec<Dim>, String> {
    let n = a.len().max(b.len());
    let one = known(1);
    let mut out = Vec::with_capacity(n);
    for i in 0..n {
        let da = if i + a.len() >= n { &a[i + a.len() - n] } else { &one };
        let db = if i + b.len() >= n { &b[i + b.len() - n] } else { &one };
        out.push(if da == db || *db == one {
            da.clone()
        } else if *da == one {
            db.clone()
        } else if da.is_known() && db.is_known() {
            return Err(format!("cannot broadcast {a:?} with {b:?}"));
        } else if da.is_known() {
            // One side symbolic: the known non-one side decides.
            da.clone()
        } else {
            db.clone()
        });
    }
    Ok(out)
}

/// Applies `f` element by element to two tracked values (a length-1 value broadcasts).
fn zip_values(a: &[Dim], b: &[Dim], f: impl Fn(Dim, Dim) -> Option<Dim>) -> Option<Vec<Dim>> {
    let n = a.len().max(b.len());
    if (a.len() != n && a.len() != 1) || (b.len() != n && b.len() != 1) {
        return None;
    }
    let pick = |v: &[Dim], i: usize| if v.len() == 1 { v[0].clone() } else { v[i].clone() };
    (0..n).map(|i| f(pick(a, i), pick(b, i))).collect()
}

fn elementwise_value(o: &OnnxOp, a: &[Dim], b: &[Dim]) -> Option<Vec<Dim>> {
    zip_values(a, b, |x, y| match o.op_type.as_str() {
        "Add" => Some(x.add(&y)),
        "Sub" => Some(x.sub(&y)),
        "Mul" => Some(x.mul(&y)),
        "Div" => match (x.as_known(), y.as_known()) {
            (Some(p), Some(q)) if q != 0 => Some(known(p / q)),
            _ => x.div_exact(&y),
        },
        _ => None,
    })
}

fn infer_onnx(o: &OnnxOp, inp: &NodeInputs) -> std::result::Result<Option<Vec<Fact>>, String> {
    let f0 = inp.fact(0);
    let dt0 = inp.dtype(0);
    let same = |shape: Option<Vec<Dim>>| dt0.map(|d| vec![Fact { dtype: d, shape, value: None }]);
    let out = match o.op_type.as_str() {
        "Identity" | "Dropout" => f0.map(|f| vec![f.clone()]),
        "Neg" | "Sqrt" | "Reciprocal" | "Exp" | "Log" | "Sin" | "Cos" | "Tanh" | "Sigmoid" | "Erf" | "Abs"
        | "Relu" | "Floor" | "Ceil" | "Softmax" | "LogSoftmax" | "CumSum" | "Clip" | "Trilu" | "Gelu" | "Silu"
        | "Softplus" | "Softsign" | "Swish" | "HardSigmoid" | "HardSwish" | "LeakyRelu" | "Elu" | "Round" | "Sign" | "Tan"
        | "LayerNormalization" | "RMSNormalization" | "SimplifiedLayerNormalization" | "RotaryEmbedding"
        | "SwiGLU" | "QuickGelu" => {
            same(inp.shape(0).cloned())
        }
        "Add" | "Sub" | "Mul" | "Div" | "Pow" | "Max" | "Min" | "Mod" => {
            let (Some(a), Some(b)) = (inp.shape(0), inp.shape(1)) else { return Ok(same(None)) };
            let mut s = a.clone();
            for i in 1..inp.facts.len() {
                if let Some(x) = inp.shape(i) {
                    s = broadcast(&s, x)?;
                }
            }
            let _ = b;
            let value = match (inp.value(0), inp.value(1)) {
                (Some(x), Some(y)) if inp.facts.len() == 2 => elementwise_value(o, x, y),
                _ => None,
            };
            dt0.map(|d| vec![Fact { dtype: d, shape: Some(s), value }])
        }
        "Equal" | "Less" | "Greater" | "LessOrEqual" | "GreaterOrEqual" | "And" | "Or" | "Xor" => {
            let s = match (inp.shape(0), inp.shape(1)) {
                (Some(a), Some(b)) => Some(broadcast(a, b)?),
                _ => None,
            };
            let value = match (o.op_type.as_str(), inp.value(0), inp.value(1)) {
                ("Equal", Some(a), Some(b)) => equal_value(a, b),
                _ => None,
            };
            Some(vec![Fact { dtype: DType::Bool, shape: s, value }])
        }
        "Not" | "IsNaN" | "IsInf" => Some(vec![Fact { dtype: DType::Bool, shape: inp.shape(0).cloned(), value: None }]),
        "Where" => {
            let s = match (inp.shape(0), inp.shape(1), inp.shape(2)) {
                (Some(a), Some(b), Some(c)) => Some(broadcast(&broadcast(a, b)?, c)?),
                _ => None,
            };
            let dt = inp.dtype(1).or(inp.dtype(2));
            let value = match (inp.value(0), inp.value(1), inp.value(2)) {
                (Some(c), Some(x), Some(y)) => where_value(c, x, y),
                _ => None,
            };
            dt.map(|d| vec![Fact { dtype: d, shape: s, value }])
        }
        "Cast" => {
            let to = o.int("to").ok_or("Cast without `to`")?;
            let d = DType::from_onnx(to as i32).ok_or(format!("Cast to unsupported type {to}"))?;
            let value = if d.is_int() { inp.value(0).cloned() } else { None };
            Some(vec![Fact { dtype: d, shape: inp.shape(0).cloned(), value }])
        }
        "CastLike" => inp.dtype(1).map(|d| vec![Fact { dtype: d, shape: inp.shape(0).cloned(), value: None }]),
        "Shape" => {
            let Some(s) = inp.shape(0) else { return Ok(Some(vec![Fact::unknown_rank(DType::I64)])) };
            let r = s.len() as i64;
            let clamp = |v: i64| (if v < 0 { v + r } else { v }).clamp(0, r) as usize;
            let start = clamp(o.int_or("start", 0));
            let end = clamp(o.int_or("end", r)).max(start);
            let v: Vec<Dim> = s[start..end].to_vec();
            Some(vec![Fact::new(DType::I64, vec![known(v.len() as i64)]).with_value(v)])
        }
        "Size" => {
            let v = inp.shape(0).map(|s| s.iter().fold(known(1), |a, d| a.mul(d)));
            let f = Fact::new(DType::I64, vec![]);
            Some(vec![match v {
                Some(v) => f.with_value(vec![v]),
                None => f,
            }])
        }
        "Gather" => {
            let (Some(data), Some(idx)) = (inp.shape(0), inp.shape(1)) else { return Ok(same(None)) };
            let axis = norm_axis(o.int_or("axis", 0), data.len())?;
            let mut s: Vec<Dim> = data[..axis].to_vec();
            s.extend(idx.iter().cloned());
            s.extend(data[axis + 1..].iter().cloned());
            let mut value = None;
            if let (Some(v), Some(ix)) = (inp.value(0), inp.ints(1)) {
                if data.len() == 1 {
                    let n = v.len() as i64;
                    value = ix
                        .iter()
                        .map(|&i| v.get((if i < 0 { i + n } else { i }) as usize).cloned())
                        .collect::<Option<Vec<_>>>();
                }
            }
            dt0.map(|d| vec![Fact { dtype: d, shape: Some(s), value }])
        }
        // The output takes the indices' shape and the data's type.
        "GatherElements" => {
            let Some(idx) = inp.shape(1) else { return Ok(same(None)) };
            dt0.map(|d| vec![Fact::new(d, idx.to_vec())])
        }
        "Unsqueeze" | "Squeeze" => {
            let axes = if o.opset >= 13 { inp.ints(1) } else { o.ints("axes").map(|a| a.to_vec()) };
            let Some(s) = inp.shape(0) else { return Ok(same(None)) };
            let shape = if o.op_type == "Unsqueeze" {
                let axes = axes.ok_or("Unsqueeze axes unknown")?;
                let r = s.len() + axes.len();
                let mut ax: Vec<usize> = axes.iter().map(|&a| norm_axis(a, r)).collect::<std::result::Result<_, _>>()?;
                ax.sort();
                let mut out = Vec::with_capacity(r);
                let mut it = s.iter();
                for i in 0..r {
                    if ax.contains(&i) {
                        out.push(known(1));
                    } else {
                        out.push(it.next().cloned().ok_or("Unsqueeze axes repeat")?);
                    }
                }
                out
            } else {
                match axes {
                    Some(axes) => {
                        let ax: Vec<usize> =
                            axes.iter().map(|&a| norm_axis(a, s.len())).collect::<std::result::Result<_, _>>()?;
                        s.iter().enumerate().filter(|(i, _)| !ax.contains(i)).map(|(_, d)| d.clone()).collect()
                    }
                    None => s.iter().filter(|d| d.as_known() != Some(1)).cloned().collect(),
                }
            };
            let value = inp.value(0).cloned();
            dt0.map(|d| vec![Fact { dtype: d, shape: Some(shape), value }])
        }
        "Concat" => {
            let shapes: Option<Vec<&Vec<Dim>>> = (0..inp.facts.len()).map(|i| inp.shape(i)).collect();
            let Some(shapes) = shapes else { return Ok(same(None)) };
            let Some(first) = shapes.first() else { return Ok(None) };
            let axis = norm_axis(o.int_or("axis", 0), first.len())?;
            let mut s = (*first).clone();
            for x in &shapes[1..] {
                if x.len() != s.len() {
                    return Err(format!("Concat of ranks {} and {}", s.len(), x.len()));
                }
                s[axis] = s[axis].add(&x[axis]);
            }
            let values: Option<Vec<&Vec<Dim>>> = (0..inp.facts.len()).map(|i| inp.value(i)).collect();
            let value = values.filter(|_| first.len() == 1).map(|vs| vs.into_iter().flatten().cloned().collect());
            dt0.map(|d| vec![Fact { dtype: d, shape: Some(s), value }])
        }
        "Reshape" => {
            let Some(target) = inp.value(1).cloned().or_else(|| inp.ints(1).map(|v| v.into_iter().map(known).collect()))
            else {
                let rank = inp.shape(1).and_then(|s| s.first()).and_then(|d| d.as_known());
                return Ok(dt0.map(|d| {
                    vec![match rank {
                        Some(r) => Fact::new(
                            d,
                            (0..r).map(|i| Dim::sym(&format!("reshape_{}_{i}", o.op_type.len()))).collect(),
                        ),
                        None => Fact::unknown_rank(d),
                    }]
                }));
            };
            let shape = match inp.shape(0) {
                Some(s) => reshape_dims(s, &target, o.int_or("allowzero", 0) != 0)?,
                None => return Ok(same(None)),
            };
            let value = inp.value(0).cloned();
            dt0.map(|d| vec![Fact { dtype: d, shape: Some(shape), value }])
        }
        "Transpose" => {
            let Some(s) = inp.shape(0) else { return Ok(same(None)) };
            let perm: Vec<usize> = match o.ints("perm") {
                Some(p) => p.iter().map(|&a| norm_axis(a, s.len())).collect::<std::result::Result<_, _>>()?,
                None => (0..s.len()).rev().collect(),
            };
            if perm.len() != s.len() {
                return Err(format!("perm {perm:?} does not fit rank {}", s.len()));
            }
            same(Some(perm.iter().map(|&p| s[p].clone()).collect()))
        }
        "MatMul" => {
            let (Some(a), Some(b)) = (inp.shape(0), inp.shape(1)) else { return Ok(same(None)) };
            same(Some(matmul_shape(a, b)?))
        }
        "Gemm" => {
            let (Some(a), Some(b)) = (inp.shape(0), inp.shape(1)) else { return Ok(same(None)) };
            if a.len() != 2 || b.len() != 2 {
                return Err("Gemm needs 2-D inputs".into());
            }
            let m = if o.int_or("transA", 0) != 0 { &a[1] } else { &a[0] };
            let n = if o.int_or("transB", 0) != 0 { &b[0] } else { &b[1] };
            same(Some(vec![m.clone(), n.clone()]))
        }
        "ReduceMean" | "ReduceSum" | "ReduceMax" | "ReduceMin" | "ReduceProd" | "ArgMax" | "ArgMin" => {
            let Some(s) = inp.shape(0) else { return Ok(same(None)) };
            let keep = o.int_or("keepdims", 1) != 0;
            let axes: Option<Vec<i64>> = if o.op_type.starts_with("Arg") {
                Some(vec![o.int_or("axis", 0)])
            } else if o.opset >= 18 || (o.op_type == "ReduceSum" && o.opset >= 13) {
                if inp.facts.len() > 1 { inp.ints(1) } else { Some(vec![]) }
            } else {
                Some(o.ints("axes").map(|a| a.to_vec()).unwrap_or_default())
            };
            let Some(axes) = axes else { return Ok(same(None)) };
            let all = axes.is_empty() && o.int_or("noop_with_empty_axes", 0) == 0;
            let ax: Vec<usize> = axes.iter().map(|&a| norm_axis(a, s.len())).collect::<std::result::Result<_, _>>()?;
            let mut out = Vec::new();
            for (i, d) in s.iter().enumerate() {
                let reduced = all || ax.contains(&i);
                if !reduced {
                    out.push(d.clone());
                } else if keep {
                    out.push(known(1));
                }
            }
            let dt = if o.op_type.starts_with("Arg") { Some(DType::I64) } else { dt0 };
            dt.map(|d| vec![Fact::new(d, out)])
        }
        "Slice" => {
            let Some(s) = inp.shape(0) else { return Ok(same(None)) };
            let (starts, ends) = if o.opset >= 10 {
                (inp.ints(1), inp.ints(2))
            } else {
                (o.ints("starts").map(|v| v.to_vec()), o.ints("ends").map(|v| v.to_vec()))
            };
            // `x[..., :n]` with a symbolic n (HF slices its causal-mask buffer to the key length).
            let symbolic_end = match (&starts, inp.value(2)) {
                (Some(st), Some(en)) if o.opset >= 10 && st.iter().all(|&v| v == 0) && en.iter().any(|d| !d.is_known()) => Some(en.clone()),
                _ => None,
            };
            let unit_steps = inp.fact(4).is_none() || inp.ints(4).is_some_and(|v| v.iter().all(|&x| x == 1));
            if let (Some(ends), true) = (symbolic_end, unit_steps) {
                let axes: Vec<i64> = match inp.fact(3) {
                    Some(_) => inp.ints(3).ok_or("Slice axes unknown")?,
                    None => (0..ends.len() as i64).collect(),
                };
                let mut shape = s.clone();
                for (a, e) in axes.iter().zip(ends) {
                    let ax = norm_axis(*a, s.len())?;
                    // Assumes n <= dim, as the exporters' mask slicing guarantees.
                    shape[ax] = match e.as_known() {
                        Some(v) if v >= i64::MAX / 2 => s[ax].clone(),
                        _ => e,
                    };
                }
                return Ok(same(Some(shape)));
            }
            let (Some(starts), Some(ends)) = (starts, ends) else {
                return Ok(same(Some(
                    s.iter().enumerate().map(|(i, _)| Dim::sym(&format!("slice_{i}"))).collect(),
                ))
                .map(|mut v| {
                    v[0].shape = None;
                    v
                }));
            };
            let axes: Vec<i64> = if o.opset >= 10 {
                if inp.facts.len() > 3 && inp.fact(3).is_some() {
                    inp.ints(3).ok_or("Slice axes unknown")?
                } else {
                    (0..starts.len() as i64).collect()
                }
            } else {
                o.ints("axes").map(|v| v.to_vec()).unwrap_or_else(|| (0..starts.len() as i64).collect())
            };
            let steps: Vec<i64> = if inp.facts.len() > 4 && inp.fact(4).is_some() {
                inp.ints(4).ok_or("Slice steps unknown")?
            } else {
                vec![1; starts.len()]
            };
            let mut shape = s.clone();
            let mut value = inp.value(0).cloned();
            for i in 0..starts.len() {
                let ax = norm_axis(*axes.get(i).ok_or("Slice axes too short")?, s.len())?;
                let step = *steps.get(i).ok_or("Slice steps too short")?;
                let (st, en) = (starts[i], *ends.get(i).ok_or("Slice ends too short")?);
                match s[ax].as_known() {
                    Some(n) => {
                        let len = slice_len(n, st, en, step);
                        shape[ax] = known(len as i64);
                        if let Some(v) = value.as_mut().filter(|_| s.len() == 1) {
                            *v = slice_items(v, st, en, step);
                        }
                    }
                    None => {
                        value = None;
                        shape[ax] = if step == 1 && st >= 0 && en >= i64::MAX / 2 {
                            s[ax].sub(&known(st))
                        } else if step == 1 && st >= 0 && (0..i64::MAX / 2).contains(&en) && en >= st {
                            // min(dim, en) - st: exact when the dim is at least `en`, which
                            // holds for the head-dim slices this appears in.
                            known(en - st)
                        } else if step == 1 && st < 0 && en >= i64::MAX / 2 {
                            // The last k of a symbolic dim: min(dim, k) (an SWA cache's last W
                            // tokens hold fewer while the sequence is short).
                            s[ax].min_with(-st)
                        } else if step == 1 && st >= 0 && en < 0 {
                            // x[st:-k]: dim - st - k, for dims at least st + k long.
                            s[ax].sub(&known(st)).add(&known(en))
                        } else {
                            Dim::sym(&format!("slice({},{st},{en},{step})", s[ax]))
                        };
                    }
                }
            }
            dt0.map(|d| vec![Fact { dtype: d, shape: Some(shape), value }])
        }
        "Expand" => {
            let Some(s) = inp.shape(0) else { return Ok(same(None)) };
            if let Some(target) = inp.value(1) {
                return Ok(same(Some(broadcast(s, target)?)));
            }
            // Target content unknown but its length known: the rank is known, and so is every
            // dim where the input is not 1 (broadcasting cannot change it).
            let Some(n) = inp.shape(1).and_then(|t| t.first()).and_then(|d| d.as_known()) else { return Ok(same(None)) };
            let rank = (n.max(0) as usize).max(s.len());
            let dims = (0..rank)
                .map(|i| {
                    let from_input = (i + s.len()).checked_sub(rank).map(|j| &s[j]);
                    match from_input {
                        Some(d) if d.as_known() != Some(1) => d.clone(),
                        _ => Dim::sym(&format!("expand({})#{i}", inp.fact(0).map(|f| f.to_string()).unwrap_or_default())),
                    }
                })
                .collect();
            same(Some(dims))
        }
        "ConstantOfShape" => {
            let dt = o.tensor("value").map(|t| t.dtype()).unwrap_or(DType::F32);
            let shape = inp.value(0).cloned();
            let value = match (o.tensor("value"), &shape) {
                (Some(t), Some(s)) if t.dtype().is_int() && s.len() == 1 && s[0].as_known().is_some_and(|n| (0..=MAX_TRACKED as i64).contains(&n)) => {
                    let v = t.to_i64_vec().first().copied().unwrap_or(0);
                    s[0].as_known().map(|n| vec![known(v); n as usize])
                }
                _ => None,
            };
            Some(vec![Fact { dtype: dt, shape, value }])
        }
        "Range" => {
            let len = match (inp.ints(0), inp.ints(1), inp.ints(2)) {
                (Some(a), Some(b), Some(c)) if c.first().is_some_and(|&c| c != 0) => {
                    let (a, b, c) = (a[0], b[0], c[0]);
                    known(((b as f64 - a as f64) / c as f64).ceil().max(0.0) as i64)
                }
                _ => match (inp.ints(0), inp.value(1), inp.ints(2)) {
                    (Some(a), Some(b), Some(c)) if c.first() == Some(&1) && b.len() == 1 => b[0].sub(&known(a[0])),
                    _ => Dim::sym("range"),
                },
            };
            same(Some(vec![len]))
        }
        "Split" => return Ok(None),
        "Attention" if o.domain.is_empty() => {
            let (Some(q), Some(k), Some(v), Some(dt)) = (inp.shape(0), inp.shape(1), inp.shape(2), dt0) else { return Ok(None) };
            let y = match (q.len(), v.len()) {
                (4, 4) => vec![q[0].clone(), q[1].clone(), q[2].clone(), v[3].clone()],
                (3, 3) => {
                    let hq = o.int("q_num_heads").ok_or("3-D Attention needs q_num_heads")?;
                    let hkv = o.int("kv_num_heads").ok_or("3-D Attention needs kv_num_heads")?;
                    let dv = v[2].div_exact(&known(hkv)).ok_or("V width does not split into kv heads")?;
                    vec![q[0].clone(), q[1].clone(), dv.mul(&known(hq))]
                }
                _ => return Ok(None),
            };
            let mut outs = vec![Fact::new(dt, y)];
            if k.len() == 4 && v.len() == 4 {
                let total = |past: Option<&Vec<Dim>>, new: &Vec<Dim>| match past {
                    Some(p) if p.len() == 4 => p[2].add(&new[2]),
                    _ => new[2].clone(),
                };
                let mut pk = k.clone();
                pk[2] = total(inp.shape(4), k);
                let mut pv = v.clone();
                pv[2] = total(inp.shape(5), v);
                outs.push(Fact::new(dt, pk));
                outs.push(Fact::new(dt, pv));
            }
            Some(outs)
        }
        "LinearAttention" if o.domain.is_empty() || o.domain == crate::op::JETC_DOMAIN => {
            let (Some(q), Some(v), Some(dt)) = (inp.shape(0), inp.shape(2), dt0) else { return Ok(None) };
            if q.len() != 3 || v.len() != 3 {
                return Ok(None);
            }
            let hq = o.int_or("q_num_heads", 1);
            let hkv = o.int_or("kv_num_heads", 1);
            let dv = v[2].div_exact(&known(hkv)).ok_or("value width does not split into kv heads")?;
            let dk = inp.shape(1).and_then(|k| k.get(2)?.div_exact(&known(hkv))).ok_or("key width unknown")?;
            Some(vec![
                Fact::new(dt, vec![q[0].clone(), q[1].clone(), dv.mul(&known(hq))]),
                Fact::new(DType::F32, vec![q[0].clone(), known(hkv), dk, dv]),
            ])
        }
        "SkipSimplifiedLayerNormalization" | "SkipLayerNormalization" if o.domain == "com.microsoft" => {
            // output and input_skip_bias_sum (0, 3) have the input's shape; mean and
            // inv_std_var (1, 2) are f32 statistics of a shape not needed downstream.
            let Some(dt) = dt0 else { return Ok(None) };
            let x = Fact { dtype: dt, shape: inp.shape(0).cloned(), value: None };
            let stat = Fact { dtype: DType::F32, shape: None, value: None };
            Some(vec![x.clone(), stat.clone(), stat, x])
        }
        "CausalConvWithState" if o.domain.is_empty() => {
            // output: the input's [B, C, T]; present_state: [B, C, k - 1] in the state's dtype
            // (the input's when no past state is given).
            let (Some(x), Some(dt)) = (inp.shape(0), dt0) else { return Ok(None) };
            let k = inp.shape(1).and_then(|w| w.last().cloned());
            let state_dt = inp.dtype(3).unwrap_or(dt);
            let state = match (x.len(), k) {
                (3, Some(k)) => Some(vec![x[0].clone(), x[1].clone(), k.sub(&known(1))]),
                _ => None,
            };
            Some(vec![Fact { dtype: dt, shape: Some(x.clone()), value: None }, Fact { dtype: state_dt, shape: state, value: None }])
        }
        "GroupQueryAttention" if o.domain == "com.microsoft" => {
            let (Some(q), Some(dt)) = (inp.shape(0), dt0) else { return Ok(None) };
            let (h, kv) = (o.int_or("num_heads", 0), o.int_or("kv_num_heads", 0));
            let width = q.get(2).and_then(|d| d.as_known()).ok_or("query width unknown")?;
            let packed = inp.fact(1).is_none();
            let d = if packed { width / (h + 2 * kv).max(1) } else { width / h.max(1) };
            let (b, t) = (q[0].clone(), q[1].clone());
            let total = match inp.shape(3) {
                Some(p) if p.len() == 4 => p[2].add(&t),
                _ => t.clone(),
            };
            let kv_fact = Fact::new(dt, vec![b.clone(), known(kv), total, known(d)]);
            Some(vec![Fact::new(dt, vec![b, t, known(h * d)]), kv_fact.clone(), kv_fact])
        }
        "Tile" => {
            let (Some(s), Some(r)) = (inp.shape(0), inp.value(1)) else { return Ok(same(None)) };
            same(Some(s.iter().zip(r).map(|(a, b)| a.mul(b)).collect()))
        }
        "Flatten" => {
            let Some(s) = inp.shape(0) else { return Ok(same(None)) };
            let axis = o.int_or("axis", 1);
            let axis = if axis < 0 { axis + s.len() as i64 } else { axis } as usize;
            let a = s[..axis.min(s.len())].iter().fold(known(1), |x, d| x.mul(d));
            let b = s[axis.min(s.len())..].iter().fold(known(1), |x, d| x.mul(d));
            same(Some(vec![a, b]))
        }
        _ => None,
    };
    Ok(out)
}

/// Element-wise `Equal` of tracked values (as 0/1). A symbolic dim is never negative, so
/// comparing it with a negative constant (`-1` in legacy reshape plumbing) is false.
fn equal_value(a: &[Dim], b: &[Dim]) -> Option<Vec<Dim>> {
    zip_values(a, b, |x, y| {
        if x == y {
            return Some(known(1));
        }
        match (x.as_known(), y.as_known()) {
            (Some(_), Some(_)) => Some(known(0)),
            (None, Some(k)) | (Some(k), None) if k < 0 => Some(known(0)),
            _ => None,
        }
    })
}

fn where_value(c: &[Dim], x: &[Dim], y: &[Dim]) -> Option<Vec<Dim>> {
    let n = c.len().max(x.len()).max(y.len());
    let pick = |v: &[Dim], i: usize| if v.len() == 1 { Some(v[0].clone()) } else { v.get(i).cloned() };
    (0..n)
        .map(|i| match pick(c, i)?.as_known()? {
            0 => pick(y, i),
            _ => pick(x, i),
        })
        .collect()
}

fn slice_len(n: i64, start: i64, end: i64, step: i64) -> usize {
    let clamp = |v: i64, lo: i64, hi: i64| v.clamp(lo, hi);
    let (s, e) = if step > 0 {
        let s = if start < 0 { start + n } else { start };
        let e = if end < 0 { end + n } else { end };
        (clamp(s, 0, n), clamp(e, 0, n))
    } else {
        let s = if start < 0 { start + n } else { start };
        let e = if end < 0 { end + n } else { end };
        (clamp(s, -1, n - 1), clamp(e, -1, n - 1))
    };
    if step > 0 {
        ((e - s).max(0) as u64).div_ceil(step as u64) as usize
    } else if step < 0 {
        ((s - e).max(0) as u64).div_ceil((-step) as u64) as usize
    } else {
        0
    }
}

fn slice_items(v: &[Dim], start: i64, end: i64, step: i64) -> Vec<Dim> {
    let n = v.len() as i64;
    let len = slice_len(n, start, end, step) as i64;
    let s = if start < 0 { start + n } else { start };
    let s = if step > 0 { s.clamp(0, n) } else { s.clamp(-1, n - 1) };
    (0..len).filter_map(|i| v.get((s + i * step) as usize).cloned()).collect()
}

fn reshape_dims(input: &[Dim], target: &[Dim], allowzero: bool) -> std::result::Result<Vec<Dim>, String> {
    let mut out: Vec<Dim> = Vec::with_capacity(target.len());
    let mut infer_at = None;
    for (i, t) in target.iter().enumerate() {
        match t.as_known() {
            Some(0) if !allowzero => out.push(input.get(i).cloned().ok_or("Reshape 0 past the input rank")?),
            Some(-1) => {
                if infer_at.is_some() {
                    return Err("Reshape with two -1".into());
                }
                infer_at = Some(i);
                out.push(known(1));
            }
            _ => out.push(t.clone()),
        }
    }
    if let Some(i) = infer_at {
        let total = input.iter().fold(known(1), |a, d| a.mul(d));
        let rest = out.iter().enumerate().filter(|(j, _)| *j != i).fold(known(1), |a, (_, d)| a.mul(d));
        out[i] = total
            .div_exact(&rest)
            .unwrap_or_else(|| Dim::sym(&format!("({total})/({rest})")));
    }
    Ok(out)
}

pub fn matmul_shape(a: &[Dim], b: &[Dim]) -> std::result::Result<Vec<Dim>, String> {
    if a.is_empty() || b.is_empty() {
        return Err("MatMul of a scalar".into());
    }
    let a2: Vec<Dim> = if a.len() == 1 { vec![known(1), a[0].clone()] } else { a.to_vec() };
    let b2: Vec<Dim> = if b.len() == 1 { vec![b[0].clone(), known(1)] } else { b.to_vec() };
    let (ka, kb) = (&a2[a2.len() - 1], &b2[b2.len() - 2]);
    if ka.is_known() && kb.is_known() && ka != kb {
        return Err(format!("MatMul inner dims {ka} and {kb} differ"));
    }
    let batch = broadcast(&a2[..a2.len() - 2], &b2[..b2.len() - 2])?;
    let mut out = batch;
    if a.len() > 1 {
        out.push(a2[a2.len() - 2].clone());
    }
    if b.len() > 1 {
        out.push(b2[b2.len() - 1].clone());
    }
    Ok(out)
}

/// Facts of a node's inputs, and the constants behind them.
pub fn node_inputs<'a>(g: &'a crate::Graph, node: &'a crate::Node) -> NodeInputs<'a> {
    let mut facts = Vec::with_capacity(node.inputs().len());
    let mut consts = Vec::with_capacity(node.inputs().len());
    for i in node.inputs() {
        match i {
            Some(o) => {
                facts.push(g.fact(*o).ok());
                consts.push(match g.node(o.node).map(|n| &n.op) {
                    Ok(Op::Const(t)) => Some(t),
                    _ => None,
                });
            }
            None => {
                facts.push(None);
                consts.push(None);
            }
        }
    }
    NodeInputs { facts, consts }
}

/// Runs inference over the whole graph in topological order. Inferred dims win over the
/// declared ones unless only the declared dim is a known number.
pub fn infer_graph(g: &mut crate::Graph) -> Result<()> {
    for id in g.topo_order()? {
        let node = g.node(id)?;
        let inferred = infer_node(&node.op, &node.name, &node_inputs(g, node))?;
        let Some(inferred) = inferred else { continue };
        let node = g.node_mut(id)?;
        for (info, new) in node.outputs.iter_mut().zip(inferred) {
            info.fact = merge_facts(&info.fact, new);
        }
    }
    Ok(())
}

fn merge_facts(declared: &Fact, inferred: Fact) -> Fact {
    let shape = match (&declared.shape, inferred.shape) {
        (Some(d), Some(i)) if d.len() == i.len() => Some(
            d.iter()
                .zip(i)
                .map(|(d, i)| if !i.is_known() && d.is_known() { d.clone() } else { i })
                .collect(),
        ),
        (_, Some(i)) => Some(i),
        (d, None) => d.clone(),
    };
    Fact { dtype: inferred.dtype, shape, value: inferred.value }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reshape_infers_minus_one_symbolically() {
        let input = vec![Dim::sym("batch"), Dim::sym("seq"), known(64)];
        let out = reshape_dims(&input, &[known(0), known(0), known(-1), known(16)], false).unwrap_or_default();
        let s: Vec<String> = out.iter().map(|d| d.to_string()).collect();
        assert_eq!(s, ["batch", "seq", "4", "16"]);
    }

    /// Fuzzing regression (fuzz/regressions/import/reshape-dim-overflow.min.onnx): the
    /// product of the other target dims overflowed while inferring the -1.
    #[test]
    fn reshape_with_huge_target_dims_does_not_panic() {
        let input = vec![Dim::sym("s44"), Dim::sym("s70"), known(64)];
        let target = [known(0x7f00_0000_0000), known(0xa_0000_0000), known(4), known(-1)];
        let out = reshape_dims(&input, &target, false).unwrap_or_default();
        assert_eq!(out.len(), 4);
        assert!(!out[3].is_known(), "{}", out[3]);
    }

    fn infer_one(op: OnnxOp, facts: &[Fact]) -> Result<Option<Vec<Fact>>> {
        let inputs = NodeInputs { facts: facts.iter().map(Some).collect(), consts: vec![None; facts.len()] };
        infer_node(&Op::Onnx(op), "n", &inputs)
    }

    /// Fuzzing regression: a ConstantOfShape to a negative length made a vector of
    /// `n as usize` elements ("capacity overflow").
    #[test]
    fn constant_of_shape_with_a_negative_length_does_not_panic() {
        let mut op = OnnxOp::new("ConstantOfShape", 20);
        op.attrs.insert("value".into(), crate::Attr::Tensor(Tensor::scalar_i64(0)));
        let shape = const_fact(&Tensor::from_i64(vec![1], &[-5]).unwrap_or_else(|_| Tensor::scalar_i64(0)));
        let out = infer_one(op, &[shape]);
        assert!(out.is_ok_and(|f| f.is_some_and(|f| f[0].value.is_none())));
    }

    /// A Range between extreme bounds: `limit - start` overflowed i64.
    #[test]
    fn range_with_extreme_bounds_does_not_panic() {
        let ints = |v: i64| const_fact(&Tensor::scalar_i64(v));
        let out = infer_one(OnnxOp::new("Range", 20), &[ints(i64::MIN), ints(i64::MAX), ints(1)]);
        assert!(out.is_ok());
    }

    #[test]
    fn slice_lengths_follow_onnx_clamping() {
        assert_eq!(slice_len(10, 0, i64::MAX, 1), 10);
        assert_eq!(slice_len(10, -3, i64::MAX, 1), 3);
        assert_eq!(slice_len(10, 8, 2, -2), 3);
        assert_eq!(slice_len(10, 20, 30, 1), 0);
        assert_eq!(slice_len(16, 8, i64::MAX, 1), 8);
    }
}
