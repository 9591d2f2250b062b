//! Kernels for the raised decoder ops: `Embedding`, `RmsNorm`, `SwiGlu` and `Attention`
//! (projections, RoPE, GQA, KV cache, masks, scale and output projection). Math in f32;
//! softmax with max subtraction; a query row with no visible key outputs zeros. Projections
//! and embedding tables kept in a stored precision are read in their blocks ([`Weight`],
//! [`crate::quant`]).
use jetc_ir::AttentionSpec;
use ndarray::{ArrayD, IxDyn};
use rayon::prelude::*;

use crate::math::{rope, softmax};
use crate::onnx_ops::matmul::{sgemm, Mat};
use crate::quant::QuantMatrix;
use crate::value::{Data, Value};


pub(crate) type R<T> = std::result::Result<T, String>;

fn arg<'a>(inputs: &[Option<&'a Value>], i: usize, what: &str) -> R<&'a Value> {
    inputs.get(i).copied().flatten().ok_or_else(|| format!("input {i} ({what}) is missing"))
}

fn floats<'a>(v: &'a Value, what: &str) -> R<&'a ArrayD<f32>> {
    v.as_f32().ok_or_else(|| format!("{what} must be a float tensor, got {}", v.dtype))
}

/// Contiguous row-major data of a float tensor (borrowed when already contiguous).
fn contiguous(a: &ArrayD<f32>) -> std::borrow::Cow<'_, [f32]> {
    match a.as_slice() {
        Some(s) => std::borrow::Cow::Borrowed(s),
        None => std::borrow::Cow::Owned(a.iter().copied().collect()),
    }
}

fn out(shape: Vec<usize>, data: Vec<f32>) -> R<Value> {
    ArrayD::from_shape_vec(IxDyn(&shape), data).map(Value::f32).map_err(|e| e.to_string())
}

/// `x [rows, k] @ w [k, n] (+ bias)`, for the kernels of other raised ops.
pub(crate) fn linear_f32(x: &[f32], rows: usize, w: &ArrayD<f32>, bias: Option<&ArrayD<f32>>, what: &str) -> R<Vec<f32>> {
    linear(x, rows, Weight::Dense(w), bias, what)
}

/// A projection's weight as `x @ w` reads it, `[k, n]`: f32, or `n` stored rows of `k`
/// elements (a stored-precision weight that is the transpose of its stored matrix).
#[derive(Clone, Copy)]
pub(crate) enum Weight<'a> {
    Dense(&'a ArrayD<f32>),
    Stored(QuantMatrix<'a>),
}

impl<'a> Weight<'a> {
    /// The weight of input `v`: its blocks when it is a stored transposed matrix, else its
    /// f32 values.
    pub(crate) fn of(v: &'a Value, what: &str) -> R<Weight<'a>> {
        match v.stored() {
            Some(s) if s.stored().transposed() => s.matrix().map(Weight::Stored).map_err(|e| format!("{what}: {e}")),
            _ => floats(v, what).map(Weight::Dense),
        }
    }

    /// `[k, n]`, or `None` for a dense weight that is not 2-D.
    fn dims(&self) -> Option<(usize, usize)> {
        match self {
            Weight::Dense(w) => (w.ndim() == 2).then(|| (w.shape()[0], w.shape()[1])),
            Weight::Stored(q) => Some((q.cols(), q.rows())),
        }
    }

    /// Output features.
    pub(crate) fn out_features(&self) -> usize {
        self.dims().map_or(0, |d| d.1)
    }
}

/// `x [rows, k] @ w [k, n] (+ bias)`.
fn linear(x: &[f32], rows: usize, w: Weight, bias: Option<&ArrayD<f32>>, what: &str) -> R<Vec<f32>> {
    let Some((k, n)) = w.dims().filter(|&(k, _)| rows * k == x.len()) else {
        let shape = match w {
            Weight::Dense(a) => format!("{:?}", a.shape()),
            Weight::Stored(q) => format!("[{}, {}] ({})", q.cols(), q.rows(), q.format()),
        };
        return Err(format!("{what} weight {shape} does not fit input of {} x {}", rows, x.len() / rows.max(1)));
    };
    let mut y = vec![0.0f32; rows * n];
    match w {
        Weight::Dense(w) => {
            let wd = contiguous(w);
            sgemm(rows, n, k, Mat::rows(x, k), Mat::rows(&wd, n), &mut y, 1.0, false, true)?;
        }
        Weight::Stored(q) => crate::quant::matmul(x, rows, &q, &mut y, true).map_err(|e| format!("{what}: {e}"))?,
    }
    if let Some(b) = bias {
        let bd = contiguous(b);
        if bd.len() != n {
            return Err(format!("{what} bias has {} elements, expected {n}", bd.len()));
        }
        for row in y.chunks_mut(n) {
            for (v, b) in row.iter_mut().zip(bd.iter()) {
                *v += b;
            }
        }
    }
    Ok(y)
}

/// Rows `ids` of a `[vocab, d]` table, from its stored blocks or its f32 values; negative
/// ids count from the end.
fn table_rows(table: &Value, ids: &ArrayD<i64>, what: &str) -> R<(usize, Vec<f32>)> {
    let blocks = table.stored().filter(|s| !s.stored().transposed());
    let (v, d) = match (blocks, table.shape()) {
        (Some(s), _) => (s.stored().rows(), s.stored().cols()),
        (None, &[v, d]) => (v, d),
        (None, shape) => return Err(format!("{what} must be 2-D, got {shape:?}")),
    };
    let mut data = vec![0.0f32; ids.len() * d];
    let rows: Vec<usize> = ids
        .iter()
        .map(|&id| {
            let row = if id < 0 { id + v as i64 } else { id };
            if row < 0 || row >= v as i64 {
                return Err(format!("token id {id} is outside the vocabulary of {v}"));
            }
            Ok(row as usize)
        })
        .collect::<R<_>>()?;
    match blocks {
        Some(s) => {
            let q = s.matrix().map_err(|e| format!("{what}: {e}"))?;
            for (&r, dst) in rows.iter().zip(data.chunks_mut(d.max(1))) {
                q.decode_rows(r, r + 1, dst);
            }
        }
        None => {
            let t = contiguous(floats(table, what)?);
            for (&r, dst) in rows.iter().zip(data.chunks_mut(d.max(1))) {
                dst.copy_from_slice(&t[r * d..(r + 1) * d]);
            }
        }
    }
    Ok((d, data))
}

/// Rows `ids` of a `[vocab, d]` table as a `[ids.., d]` value (Embedding, and ONNX Gather on
/// axis 0 of a stored table).
pub(crate) fn table_lookup(table: &Value, ids: &ArrayD<i64>, what: &str) -> R<Value> {
    let (d, data) = table_rows(table, ids, what)?;
    let mut shape = ids.shape().to_vec();
    shape.push(d);
    out(shape, data)
}

pub(crate) fn embedding(inputs: &[Option<&Value>]) -> R<Vec<Value>> {
    let table = arg(inputs, 0, "table")?;
    let ids = arg(inputs, 1, "ids")?.as_i64().ok_or("ids must be integers")?;
    Ok(vec![table_lookup(table, ids, "table")?])
}

pub(crate) fn rms_norm(inputs: &[Option<&Value>], eps: f32) -> R<Vec<Value>> {
    let xv = arg(inputs, 0, "x")?;
    let x = floats(xv, "x")?;
    let w = contiguous(floats(arg(inputs, 1, "weight")?, "weight")?);
    let d = *x.shape().last().ok_or("x is a scalar")?;
    if w.len() != d {
        return Err(format!("weight has {} elements, the last axis {d}", w.len()));
    }
    let xd = contiguous(x);
    let mut y = vec![0.0f32; xd.len()];
    y.par_chunks_mut(d.max(1)).zip(xd.par_chunks(d.max(1))).for_each(|(yr, xr)| {
        let ms = xr.iter().map(|v| v * v).sum::<f32>() / d as f32;
        let inv = 1.0 / (ms + eps).sqrt();
        for ((o, v), g) in yr.iter_mut().zip(xr).zip(w.iter()) {
            *o = v * inv * g;
        }
    });
    let mut v = out(x.shape().to_vec(), y)?;
    v.dtype = xv.dtype;
    Ok(vec![v])
}

/// Width of one head of the last axis of `x`, checked against `heads`.
fn head_width(x: &ArrayD<f32>, heads: usize) -> R<usize> {
    let last = *x.shape().last().ok_or("x is a scalar")?;
    if heads == 0 || last % heads != 0 {
        return Err(format!("last axis {last} does not split into {heads} heads"));
    }
    Ok(last / heads)
}

pub(crate) fn l2_norm(inputs: &[Option<&Value>], heads: usize, eps: f32) -> R<Vec<Value>> {
    let xv = arg(inputs, 0, "x")?;
    let x = floats(xv, "x")?;
    let d = head_width(x, heads)?;
    let mut y = contiguous(x).into_owned();
    y.par_chunks_mut(d.max(1)).for_each(|head| {
        let inv = 1.0 / (head.iter().map(|v| v * v).sum::<f32>() + eps).sqrt();
        head.iter_mut().for_each(|v| *v *= inv);
    });
    let mut v = out(x.shape().to_vec(), y)?;
    v.dtype = xv.dtype;
    Ok(vec![v])
}

pub(crate) fn gated_rms_norm(inputs: &[Option<&Value>], heads: usize, eps: f32) -> R<Vec<Value>> {
    let xv = arg(inputs, 0, "o")?;
    let x = floats(xv, "o")?;
    let w = contiguous(floats(arg(inputs, 1, "weight")?, "weight")?);
    let gate = floats(arg(inputs, 2, "gate")?, "gate")?;
    let d = head_width(x, heads)?;
    if w.len() != d || gate.shape() != x.shape() {
        return Err(format!("weight {} / gate {:?} do not fit heads of {d} in {:?}", w.len(), gate.shape(), x.shape()));
    }
    let gd = contiguous(gate);
    let mut y = contiguous(x).into_owned();
    y.par_chunks_mut(d.max(1)).zip(gd.par_chunks(d.max(1))).for_each(|(head, g)| {
        let inv = 1.0 / (head.iter().map(|v| v * v).sum::<f32>() / d as f32 + eps).sqrt();
        for ((v, wi), gi) in head.iter_mut().zip(w.iter()).zip(g) {
            *v = *v * inv * wi * silu(*gi);
        }
    });
    let mut v = out(x.shape().to_vec(), y)?;
    v.dtype = xv.dtype;
    Ok(vec![v])
}

use crate::math::silu;

pub(crate) fn swiglu(inputs: &[Option<&Value>]) -> R<Vec<Value>> {
    let x = floats(arg(inputs, 0, "x")?, "x")?;
    let wg = Weight::of(arg(inputs, 1, "w_gate")?, "w_gate")?;
    let wu = Weight::of(arg(inputs, 2, "w_up")?, "w_up")?;
    let wd = Weight::of(arg(inputs, 3, "w_down")?, "w_down")?;
    let d = *x.shape().last().ok_or("x is a scalar")?;
    let rows = x.len() / d.max(1);
    let xd = contiguous(x);
    let mut h = linear(&xd, rows, wg, None, "gate")?;
    let u = linear(&xd, rows, wu, None, "up")?;
    const CHUNK: usize = 1 << 14;
    h.par_chunks_mut(CHUNK).zip(u.par_chunks(CHUNK)).for_each(|(a, b)| crate::fastmath::swiglu_gate_in_place(a, b));
    let y = linear(&h, rows, wd, None, "down")?;
    let mut shape = x.shape().to_vec();
    let last = shape.len() - 1;
    shape[last] = wd.out_features();
    Ok(vec![out(shape, y)?])
}

/// A RoPE table viewed as [batch|1, T, width].
pub(crate) struct Table<'a> {
    pub data: std::borrow::Cow<'a, [f32]>,
    pub batch: usize,
    pub width: usize,
}

pub(crate) fn rope_table<'a>(v: &'a Value, t: usize, what: &str) -> R<Table<'a>> {
    let a = floats(v, what)?;
    let s = a.shape();
    let (batch, tt, width) = match s.len() {
        2 => (1, s[0], s[1]),
        3 => (s[0], s[1], s[2]),
        4 if s[1] == 1 => (s[0], s[2], s[3]),
        _ => return Err(format!("{what} table has shape {s:?}; expected [T,R], [B,T,R] or [B,1,T,R]")),
    };
    if tt != t {
        return Err(format!("{what} table covers {tt} positions, the input has {t}"));
    }
    Ok(Table { data: contiguous(a), batch, width })
}


/// The mask broadcast to [B, H, T, S]: booleans keep, floats add.
enum Mask<'a> {
    None,
    Bool4 { data: ndarray::ArrayViewD<'a, bool> },
    Add4 { data: ndarray::ArrayViewD<'a, f32> },
}

/// An additive mask value at or below this hides its key: added to any score short of 1e30,
/// its exp underflows to exactly zero next to a visible key. (`-inf`, `finfo(f32).min` and
/// -1e38 hide; -1e4 or -1e9 are added like any other value.)
const HIDDEN: f32 = -1e30;

/// Per row of the mask, the keys `[first, last + 1)` between its first and last visible key,
/// or `None` where it hides every key (or there is no mask). A row broadcast over batch or
/// heads is scanned once.
struct MaskRuns {
    runs: Vec<Option<(usize, usize)>>,
    /// Rows per batch index and per head in `runs`: 0 where the mask is broadcast.
    batch_stride: usize,
    head_stride: usize,
}

impl MaskRuns {
    fn new(mask: &Mask, b: usize, h: usize, t: usize) -> MaskRuns {
        let strides = match mask {
            Mask::None => return MaskRuns { runs: Vec::new(), batch_stride: 0, head_stride: 0 },
            Mask::Bool4 { data } => data.strides().to_vec(),
            Mask::Add4 { data } => data.strides().to_vec(),
        };
        let (nb, nh) = (if strides[0] == 0 { 1 } else { b }, if strides[1] == 0 { 1 } else { h });
        let runs = (0..nb * nh * t)
            .into_par_iter()
            .map(|row| {
                let (bi, hi, ti) = (row / (nh * t), row / t % nh, row % t);
                let span = |first: Option<usize>, last: Option<usize>| first.zip(last).map(|(f, l)| (f, l + 1));
                match mask {
                    Mask::None => None,
                    Mask::Bool4 { data } => {
                        let r = data.slice(ndarray::s![bi, hi, ti, ..]);
                        span(r.iter().position(|&k| k), r.iter().rposition(|&k| k))
                    }
                    Mask::Add4 { data } => {
                        let r = data.slice(ndarray::s![bi, hi, ti, ..]);
                        let shows = |a: &f32| a.is_nan() || *a > HIDDEN;
                        span(r.iter().position(shows), r.iter().rposition(shows))
                    }
                }
            })
            .collect();
        MaskRuns { runs, batch_stride: if nb == 1 { 0 } else { nh * t }, head_stride: if nh == 1 { 0 } else { t } }
    }

    /// The visible run of query `ti` of head `hi` in batch `bi`.
    fn get(&self, bi: usize, hi: usize, ti: usize) -> Option<(usize, usize)> {
        self.runs.get(bi * self.batch_stride + hi * self.head_stride + ti).copied().flatten()
    }
}

/// The keys a query at position `pos` reads within `[lo, hi)`: those the causal and window
/// bounds leave, narrowed to the mask's visible run when that leaves any. (A row whose mask
/// hides all of them keeps the bounds' run, so the softmax sees what it would see unskipped:
/// zeros for `-inf`, a uniform row for a finite hiding value.)
fn row_run(spec: &AttentionSpec, pos: usize, lo: usize, hi: usize, shown: Option<(usize, usize)>) -> (usize, usize) {
    let vis_hi = if spec.causal { (pos + 1).min(hi) } else { hi };
    let vis_lo = spec.window.map_or(lo, |w| (pos + 1).saturating_sub(w).max(lo)).min(vis_hi);
    match shown {
        Some((f, l)) if f.max(vis_lo) < l.min(vis_hi) => (f.max(vis_lo), l.min(vis_hi)),
        _ => (vis_lo, vis_hi),
    }
}

/// Queries per block of the attention's score matrix, at most.
const QUERY_BLOCK: usize = 64;
/// Rows (queries x stacked heads) per block of the score matrix, about.
const BLOCK_ROWS: usize = 256;

/// At most this many query rows per kv head (query tokens x the heads sharing the kv head)
/// take the row-by-row score and context kernels of a decode step rather than the GEMMs.
const FEW_ROWS: usize = 8;

/// Queries per block when `group` query heads share each kv head: about [`BLOCK_ROWS`] rows
/// in all, at most [`QUERY_BLOCK`] queries (the causal bound's waste grows with the block).
fn query_block(group: usize) -> usize {
    (BLOCK_ROWS / group.max(1)).clamp(8, QUERY_BLOCK)
}

thread_local! {
    /// Each thread's score block, reused across blocks, heads and calls.
    static SCORES: std::cell::RefCell<Vec<f32>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// The keys `[lo, hi)` that some query of rows `r0..r1` (positions `p + r0 ..`) can see
/// under the causal and window bounds; the mask can only hide more.
fn key_range(spec: &AttentionSpec, p: usize, r0: usize, r1: usize, s_len: usize) -> (usize, usize) {
    let hi = if spec.causal { (p + r1).min(s_len) } else { s_len };
    // Key si is in the window of position pos when si + w > pos; the block's first row sees the
    // fewest old keys.
    let lo = spec.window.map_or(0, |w| (p + r0 + 1).saturating_sub(w)).min(hi);
    (lo, hi)
}

/// The last `keep` of `len` rows of `d` values in each of `groups` blocks.
fn last_tokens(x: &[f32], groups: usize, len: usize, keep: usize, d: usize) -> Vec<f32> {
    let mut out = Vec::with_capacity(groups * keep * d);
    for g in 0..groups {
        let start = (g * len + len - keep) * d;
        out.extend_from_slice(&x[start..start + keep * d]);
    }
    out
}

/// In-place softmax of one score row; `visible(j)` is `None` for a hidden key, else the
/// additive mask value. A row with no visible key becomes zeros.
pub(crate) fn masked_softmax<T: crate::math::Real>(row: &mut [T], visible: impl Fn(usize) -> Option<T>) {
    for (j, v) in row.iter_mut().enumerate() {
        *v = match visible(j) {
            Some(add) => *v + add,
            None => T::neg_infinity(),
        };
    }
    softmax(row, None);
}

/// RMSNorm of every group of `w.len()` consecutive elements of `x`, times `w`.
pub(crate) fn group_rms_norm(x: &mut [f32], w: &[f32], eps: f32, what: &str) -> R<()> {
    let g = w.len();
    if g == 0 || !x.len().is_multiple_of(g) {
        return Err(format!("{what} weight of {g} elements does not divide the projection"));
    }
    x.par_chunks_mut(g).for_each(|chunk| {
        let inv = 1.0 / (chunk.iter().map(|v| v * v).sum::<f32>() / g as f32 + eps).sqrt();
        for (v, wi) in chunk.iter_mut().zip(w) {
            *v = *v * inv * wi;
        }
    });
    Ok(())
}

pub(crate) fn attention(spec: &AttentionSpec, inputs: &[Option<&Value>]) -> R<Vec<Value>> {
    let (h, kvh, d) = (spec.heads, spec.kv_heads, spec.head_dim);
    if kvh == 0 || h % kvh != 0 || d == 0 {
        return Err(format!("heads {h} / kv_heads {kvh} / head_dim {d} are inconsistent"));
    }
    let xv = arg(inputs, AttentionSpec::X, "x")?;
    let x = floats(xv, "x")?;
    if x.ndim() != 3 {
        return Err(format!("x must be [B,T,hidden], got {:?}", x.shape()));
    }
    let (b, t, hidden) = (x.shape()[0], x.shape()[1], x.shape()[2]);
    let xd = contiguous(x);
    let get = |i: usize| inputs.get(i).copied().flatten();
    let fl = |i: usize, what: &str| -> R<Option<&ArrayD<f32>>> { get(i).map(|v| floats(v, what)).transpose() };
    let rows = b * t;
    let mut q = linear(&xd, rows, Weight::of(arg(inputs, AttentionSpec::WQ, "wq")?, "wq")?, fl(AttentionSpec::BQ, "bq")?, "q")?;
    let mut k = linear(&xd, rows, Weight::of(arg(inputs, AttentionSpec::WK, "wk")?, "wk")?, fl(AttentionSpec::BK, "bk")?, "k")?;
    let v = linear(&xd, rows, Weight::of(arg(inputs, AttentionSpec::WV, "wv")?, "wv")?, fl(AttentionSpec::BV, "bv")?, "v")?;
    if q.len() != rows * h * d || k.len() != rows * kvh * d || v.len() != rows * kvh * d {
        return Err("projection widths do not match heads x head_dim".into());
    }
    if let Some(eps) = spec.qk_norm_eps {
        for (buf, slot, what) in [(&mut q, AttentionSpec::Q_NORM, "q_norm"), (&mut k, AttentionSpec::K_NORM, "k_norm")] {
            if let Some(w) = fl(slot, what)? {
                group_rms_norm(buf, &contiguous(w), eps, what)?;
            }
        }
    }
    // RoPE on q and k ([B, T, heads, D] layout).
    if let Some(style) = spec.rope {
        let cos = rope_table(arg(inputs, AttentionSpec::COS, "cos")?, t, "cos")?;
        let sin = rope_table(arg(inputs, AttentionSpec::SIN, "sin")?, t, "sin")?;
        let rot = spec.rotary_dim.min(d);
        for tab in [&cos, &sin] {
            if tab.width != rot && tab.width * 2 != rot {
                return Err(format!("RoPE table width {} fits neither rotary_dim {rot} nor half of it", tab.width));
            }
            if tab.batch != 1 && tab.batch != b {
                return Err(format!("RoPE table batch {} does not fit batch {b}", tab.batch));
            }
        }
        let rope_rows = |buf: &mut [f32], heads: usize| {
            buf.par_chunks_mut(heads * d).enumerate().for_each(|(row, chunk)| {
                let (bi, ti) = (row / t, row % t);
                let base = ((if cos.batch == 1 { 0 } else { bi }) * t + ti) * cos.width;
                let c = &cos.data[base..base + cos.width];
                let s = &sin.data[base..base + sin.width];
                for head in chunk.chunks_mut(d) {
                    rope(&mut head[..rot], c, s, rot, style);
                }
            });
        };
        rope_rows(&mut q, h);
        rope_rows(&mut k, kvh);
    }
    // KV cache: present = concat(past, new) as [B, KV, P+T, D].
    let past = match (get(AttentionSpec::PAST_K), get(AttentionSpec::PAST_V)) {
        (Some(pk), Some(pv)) => {
            let (pk, pv) = (floats(pk, "past_key")?, floats(pv, "past_value")?);
            let s = pk.shape();
            if s.len() != 4 || s[0] != b || s[1] != kvh || s[3] != d || pv.shape() != s {
                return Err(format!("past key/value {:?}/{:?} do not fit [B={b}, KV={kvh}, P, D={d}]", s, pv.shape()));
            }
            Some((contiguous(pk), contiguous(pv), s[2]))
        }
        (None, None) => None,
        _ => return Err("past_key and past_value must come together".into()),
    };
    let p = past.as_ref().map(|x| x.2).unwrap_or(0);
    let s_len = p + t;
    let mut pk = vec![0.0f32; b * kvh * s_len * d];
    let mut pv = vec![0.0f32; b * kvh * s_len * d];
    // The keys of each (batch, kv head) also transposed, [D, P+T], so that the score product
    // reads them as a row-major operand (packed as it is read) rather than gathering columns.
    // A decode step (a few query rows per kv head) reads the keys row by row instead, once,
    // and needs no transposed copy.
    let few_rows = t * (h / kvh) <= FEW_ROWS;
    let mut pkt = if few_rows { Vec::new() } else { vec![0.0f32; b * kvh * s_len * d] };
    let transposed: Vec<&mut [f32]> = if few_rows { (0..b * kvh).map(|_| &mut [][..]).collect() } else { pkt.chunks_mut(s_len * d).collect() };
    let heads_kv = pk.par_chunks_mut(s_len * d).zip(pv.par_chunks_mut(s_len * d)).zip(transposed);
    heads_kv.enumerate().for_each(|(bh, ((dk, dv), dkt))| {
        let (bi, hi) = (bh / kvh, bh % kvh);
        if let Some((ok, ov, _)) = &past {
            let src = bh * p * d;
            dk[..p * d].copy_from_slice(&ok[src..src + p * d]);
            dv[..p * d].copy_from_slice(&ov[src..src + p * d]);
        }
        for ti in 0..t {
            let src = ((bi * t + ti) * kvh + hi) * d;
            let o = (p + ti) * d;
            dk[o..o + d].copy_from_slice(&k[src..src + d]);
            dv[o..o + d].copy_from_slice(&v[src..src + d]);
        }
        if dkt.is_empty() {
            return;
        }
        // In blocks of 16 keys, so that each write goes to a line just written.
        for s0 in (0..s_len).step_by(16) {
            let s1 = (s0 + 16).min(s_len);
            for e in 0..d {
                let dst = &mut dkt[e * s_len + s0..e * s_len + s1];
                for (j, x) in dst.iter_mut().enumerate() {
                    *x = dk[(s0 + j) * d + e];
                }
            }
        }
    });
    // Mask: numpy-broadcast to [B, H, T, P+T]; booleans (and integers) keep where true,
    // floats are added to the scores.
    let mask_shape = IxDyn(&[b, h, t, s_len]);
    let bad = |m: &Value| format!("mask {:?} does not broadcast to [{b},{h},{t},{s_len}]", m.shape());
    let int_keep;
    // A mask that hides nothing and adds nothing (a padding mask of ones) is no mask: the
    // per-key lookups are skipped.
    let no_op = |m: &Value| match &m.dense().data {
        Data::B(a) => a.iter().all(|&v| v),
        Data::F(a) => a.iter().all(|&v| v == 0.0),
        Data::I(a) => a.iter().all(|&v| v != 0),
        Data::Q(_) => false,
    };
    let mask = match get(AttentionSpec::MASK) {
        None => Mask::None,
        Some(m) if no_op(m) => Mask::None,
        Some(m) => match &m.dense().data {
            Data::B(a) => Mask::Bool4 { data: a.broadcast(mask_shape).ok_or_else(|| bad(m))? },
            Data::F(a) => Mask::Add4 { data: a.broadcast(mask_shape).ok_or_else(|| bad(m))? },
            Data::I(a) => {
                int_keep = a.mapv(|v| v != 0);
                Mask::Bool4 { data: int_keep.broadcast(mask_shape).ok_or_else(|| bad(m))? }
            }
            Data::Q(_) => return Err(bad(m)),
        },
    };
    // Scores, softmax and context per (batch, kv head, block of queries): two GEMMs around a
    // masked softmax. The `group` query heads that share a kv head are stacked into one product
    // (rows query-major, head-minor), so that each packed panel of keys or values serves
    // `group x block` rows rather than `block`. A block reads only the keys some row of it can
    // see (causal and window bounds), so a causal prefill does about half the work of the full
    // score matrix. The latest (costliest) blocks go first, one task at a time, so that the
    // threads finish together.
    let group = h / kvh;
    let block = query_block(group);
    let blocks = t.div_ceil(block);
    let runs = MaskRuns::new(&mask, b, h, t);
    let tasks: Vec<(usize, usize)> = (0..blocks).rev().flat_map(|blk| (0..b * kvh).map(move |bk| (bk, blk))).collect();
    let run = |&(bk, blk): &(usize, usize)| -> R<Vec<f32>> {
        let (bi, ki) = (bk / kvh, bk % kvh);
        let kv = bk * s_len * d;
        let (ks, vs) = (&pk[kv..kv + s_len * d], &pv[kv..kv + s_len * d]);
        let (r0, r1) = (blk * block, ((blk + 1) * block).min(t));
        // The keys the block reads: the union of its rows' runs, so that the keys a mask hides
        // from every row of the block (a causal mask given as a tensor) are skipped too.
        let (lo0, hi0) = key_range(spec, p, r0, r1, s_len);
        let row_runs: Vec<(usize, usize)> =
            (0..(r1 - r0) * group).map(|ri| row_run(spec, p + r0 + ri / group, lo0, hi0, runs.get(bi, ki * group + ri % group, r0 + ri / group))).collect();
        let lo = row_runs.iter().map(|r| r.0).min().unwrap_or(lo0);
        let hi_key = row_runs.iter().map(|r| r.1).max().unwrap_or(lo0).max(lo);
        let (m, kl) = ((r1 - r0) * group, hi_key - lo);
        let mut outb = vec![0.0f32; m * d];
        if kl == 0 {
            return Ok(outb);
        }
        // The group's query rows for this block: for each query, its `group` heads are
        // contiguous in q.
        let mut qb = Vec::with_capacity(m * d);
        for ti in r0..r1 {
            let qo = ((bi * t + ti) * h + ki * group) * d;
            qb.extend_from_slice(&q[qo..qo + group * d]);
        }
        SCORES.with_borrow_mut(|scores| -> R<()> {
            if scores.len() < m * kl {
                scores.resize(m * kl, 0.0);
            }
            let sc = &mut scores[..m * kl];
            if few_rows {
                crate::fastmath::scores_few_rows(&qb, &ks[lo * d..hi_key * d], d, spec.scale, sc);
            } else {
                let keys_t = Mat { data: &pkt[kv + lo..kv + s_len * d], rs: s_len, cs: 1 };
                sgemm(m, kl, d, Mat::rows(&qb, d), keys_t, sc, spec.scale, false, false)?;
            }
            if let Some(c) = spec.softcap {
                sc.iter_mut().for_each(|s| *s = c * (*s / c).tanh());
            }
            for (ri, row) in sc.chunks_mut(kl).enumerate() {
                let (ti, hi) = (r0 + ri / group, ki * group + ri % group);
                // The row's run of keys is softmaxed alone and the rest of the row is zero.
                let (start, end) = (row_runs[ri].0 - lo, row_runs[ri].1 - lo);
                row[..start].fill(0.0);
                row[end..].fill(0.0);
                let run = &mut row[start..end];
                let (k0, k1) = (lo + start, lo + end);
                // The mask's row for this query over the run, as a 1-D view.
                match &mask {
                    Mask::None => {}
                    Mask::Bool4 { data } => {
                        let keep = data.slice(ndarray::s![bi, hi, ti, k0..k1]);
                        match keep.as_slice() {
                            Some(keep) => run.iter_mut().zip(keep).for_each(|(v, &k)| if !k { *v = f32::NEG_INFINITY }),
                            None => run.iter_mut().zip(keep.iter()).for_each(|(v, &k)| if !k { *v = f32::NEG_INFINITY }),
                        }
                    }
                    Mask::Add4 { data } => {
                        let add = data.slice(ndarray::s![bi, hi, ti, k0..k1]);
                        match add.as_slice() {
                            Some(add) => run.iter_mut().zip(add).for_each(|(v, &a)| *v += a),
                            None => run.iter_mut().zip(add.iter()).for_each(|(v, &a)| *v += a),
                        }
                    }
                }
                crate::fastmath::softmax_row(run);
            }
            if few_rows {
                crate::fastmath::context_few_rows(sc, &vs[lo * d..hi_key * d], d, &mut outb);
                Ok(())
            } else {
                sgemm(m, d, kl, Mat::rows(sc, kl), Mat::rows(&vs[lo * d..hi_key * d], d), &mut outb, 1.0, false, false)
            }
        })?;
        Ok(outb)
    };
    let outs: Vec<R<Vec<f32>>> = tasks.par_iter().with_max_len(1).map(run).collect();
    let mut ctx = vec![0.0f32; rows * h * d];
    for (&(bk, blk), outb) in tasks.iter().zip(outs) {
        let outb = outb?;
        let (bi, ki) = (bk / kvh, bk % kvh);
        for (i, ti) in (blk * block..((blk + 1) * block).min(t)).enumerate() {
            let dst = ((bi * t + ti) * h + ki * group) * d;
            ctx[dst..dst + group * d].copy_from_slice(&outb[i * group * d..(i + 1) * group * d]);
        }
    }
    let wo = Weight::of(arg(inputs, AttentionSpec::WO, "wo")?, "wo")?;
    let y = linear(&ctx, rows, wo, fl(AttentionSpec::BO, "bo")?, "o")?;
    let out_dim = wo.out_features();
    if out_dim != hidden {
        return Err(format!("o_proj maps to {out_dim}, hidden is {hidden}"));
    }
    let mut yv = out(vec![b, t, out_dim], y)?;
    yv.dtype = xv.dtype;
    // A sliding-window cache keeps only the last `window` tokens.
    let keep = spec.window.map_or(s_len, |w| w.min(s_len));
    let (pk, pv) = if keep < s_len { (last_tokens(&pk, b * kvh, s_len, keep, d), last_tokens(&pv, b * kvh, s_len, keep, d)) } else { (pk, pv) };
    let kv_shape = vec![b, kvh, keep, d];
    Ok(vec![yv, out(kv_shape.clone(), pk)?, out(kv_shape, pv)?])
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rand_vec(n: usize, seed: &mut u64) -> Vec<f32> {
        (0..n)
            .map(|_| {
                *seed ^= *seed << 13;
                *seed ^= *seed >> 7;
                *seed ^= *seed << 17;
                ((*seed >> 40) as f32 / (1u64 << 24) as f32) - 0.5
            })
            .collect()
    }

    fn arr(shape: &[usize], v: Vec<f32>) -> Value {
        Value::f32(ArrayD::from_shape_vec(IxDyn(shape), v).expect("shape"))
    }

    /// Float64 oracle: projections, GQA, causal + window visibility, no RoPE.
    #[allow(clippy::too_many_arguments)]
    fn oracle(x: &[f32], wq: &[f32], wk: &[f32], wv: &[f32], wo: &[f32], past_k: &[f32], past_v: &[f32],
              (b, t, hid, h, kvh, d, p): (usize, usize, usize, usize, usize, usize, usize), window: Option<usize>, scale: f64,
              causal: bool, mask: &dyn Fn(usize, usize, usize, usize) -> Option<f64>) -> Vec<f64> {
        let proj = |w: &[f32], n: usize, bi: usize, ti: usize| -> Vec<f64> {
            (0..n).map(|j| (0..hid).map(|i| x[(bi * t + ti) * hid + i] as f64 * w[i * n + j] as f64).sum()).collect()
        };
        let s = p + t;
        let mut y = vec![0f64; b * t * hid];
        for bi in 0..b {
            let key = |hi: usize, si: usize| -> Vec<f64> {
                if si < p { (0..d).map(|e| past_k[((bi * kvh + hi) * p + si) * d + e] as f64).collect() } else { proj(wk, kvh * d, bi, si - p)[hi * d..(hi + 1) * d].to_vec() }
            };
            let val = |hi: usize, si: usize| -> Vec<f64> {
                if si < p { (0..d).map(|e| past_v[((bi * kvh + hi) * p + si) * d + e] as f64).collect() } else { proj(wv, kvh * d, bi, si - p)[hi * d..(hi + 1) * d].to_vec() }
            };
            for ti in 0..t {
                let q = proj(wq, h * d, bi, ti);
                let mut ctx = vec![0f64; h * d];
                for hi in 0..h {
                    let kh = hi / (h / kvh);
                    let pos = p + ti;
                    let vis: Vec<usize> = (0..s)
                        .filter(|&si| (!causal || si <= pos) && window.is_none_or(|w| si + w > pos) && mask(bi, hi, ti, si).is_some())
                        .collect();
                    let sc: Vec<f64> = vis
                        .iter()
                        .map(|&si| key(kh, si).iter().zip(&q[hi * d..(hi + 1) * d]).map(|(a, b)| a * b).sum::<f64>() * scale + mask(bi, hi, ti, si).unwrap_or(0.0))
                        .collect();
                    if vis.is_empty() {
                        continue;
                    }
                    let m = sc.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
                    let z: f64 = sc.iter().map(|v| (v - m).exp()).sum();
                    for (&si, v) in vis.iter().zip(&sc) {
                        let wgt = (v - m).exp() / z;
                        for (e, vv) in val(kh, si).iter().enumerate() {
                            ctx[hi * d + e] += wgt * vv;
                        }
                    }
                }
                for j in 0..hid {
                    y[(bi * t + ti) * hid + j] = (0..h * d).map(|i| ctx[i] * wo[i * hid + j] as f64).sum();
                }
            }
        }
        y
    }

    /// Prefill blocks (GEMMs) and decode steps (few query rows, the row-by-row kernels), with
    /// head sizes below and above one SIMD lane group.
    #[test]
    fn windowed_gqa_attention_matches_f64_oracle() {
        for (t, d) in [(5, 3), (1, 3), (3, 20), (1, 20), (6, 17)] {
            windowed_gqa_attention_case(t, d);
        }
    }

    fn windowed_gqa_attention_case(t: usize, d: usize) {
        let (b, hid, h, kvh, p) = (2, 12, 4, 2, 4);
        let mut seed = 7u64;
        let x = rand_vec(b * t * hid, &mut seed);
        let wq = rand_vec(hid * h * d, &mut seed);
        let wk = rand_vec(hid * kvh * d, &mut seed);
        let wv = rand_vec(hid * kvh * d, &mut seed);
        let wo = rand_vec(h * d * hid, &mut seed);
        let pk = rand_vec(b * kvh * p * d, &mut seed);
        let pv = rand_vec(b * kvh * p * d, &mut seed);
        for window in [None, Some(1), Some(3), Some(100)] {
            let spec = AttentionSpec { heads: h, kv_heads: kvh, head_dim: d, scale: 0.7, rope: None, rotary_dim: d, causal: true, window, qk_norm_eps: None, softcap: None };
            let vals = [
                arr(&[b, t, hid], x.clone()), arr(&[hid, h * d], wq.clone()), arr(&[hid, kvh * d], wk.clone()),
                arr(&[hid, kvh * d], wv.clone()), arr(&[h * d, hid], wo.clone()), arr(&[b, kvh, p, d], pk.clone()),
                arr(&[b, kvh, p, d], pv.clone()),
            ];
            let mut inputs: Vec<Option<&Value>> = vec![None; AttentionSpec::NUM_INPUTS];
            inputs[AttentionSpec::X] = Some(&vals[0]);
            inputs[AttentionSpec::WQ] = Some(&vals[1]);
            inputs[AttentionSpec::WK] = Some(&vals[2]);
            inputs[AttentionSpec::WV] = Some(&vals[3]);
            inputs[AttentionSpec::WO] = Some(&vals[4]);
            inputs[AttentionSpec::PAST_K] = Some(&vals[5]);
            inputs[AttentionSpec::PAST_V] = Some(&vals[6]);
            let out = attention(&spec, &inputs).expect("attention");
            let want = oracle(&x, &wq, &wk, &wv, &wo, &pk, &pv, (b, t, hid, h, kvh, d, p), window, 0.7, true, &|_, _, _, _| Some(0.0));
            let got = out[0].as_f32().expect("y");
            let err = got.iter().zip(&want).map(|(a, b)| (*a as f64 - b).abs()).fold(0.0, f64::max);
            assert!(err < 1e-5, "t {t} d {d} window {window:?}: max err {err}");
            let kept = window.map_or(p + t, |w| w.min(p + t));
            assert_eq!(out[1].shape(), &[b, kvh, kept, d], "window {window:?}: present shape");
        }
    }

    /// Boolean and additive masks (with hidden keys, broadcast over heads or batch), causal or
    /// not, windows, a past, and more queries than one block of the score matrix.
    #[test]
    fn tensor_masks_that_hide_keys_match_f64_oracle() {
        // Causal masks given as tensors (the spec not causal), as exporters write them: the
        // keys they hide are skipped, which must not change what any row sees. Batch 1 is
        // left-padded (two keys hidden everywhere) and its first two query rows hide every key.
        let (b, t, hid, h, kvh, d, p) = (2, 2 * QUERY_BLOCK + 5, 8, 4, 2, 4, 3);
        let s_len = p + t;
        let mut seed = 29u64;
        let x = rand_vec(b * t * hid, &mut seed);
        let wq = rand_vec(hid * h * d, &mut seed);
        let wk = rand_vec(hid * kvh * d, &mut seed);
        let wv = rand_vec(hid * kvh * d, &mut seed);
        let wo = rand_vec(h * d * hid, &mut seed);
        let pk = rand_vec(b * kvh * p * d, &mut seed);
        let pv = rand_vec(b * kvh * p * d, &mut seed);
        // (-1e9 leaves no row all hidden: f32 rounds a score minus 1e9 to a multiple of 64,
        // where f64 keeps the differences between keys.)
        let shows = |bi: usize, ti: usize, si: usize, hide_rows: bool| si <= p + ti && !(bi == 1 && (si < 2 || (hide_rows && ti < 2)));
        for hide in [f32::MIN, f32::NEG_INFINITY, -1e9] {
            let add: Vec<f32> = (0..b * t * s_len).map(|i| if shows(i / (t * s_len), i / s_len % t, i % s_len, hide < -1e30) { 0.0 } else { hide }).collect();
            let keep: Vec<bool> = add.iter().map(|&a| a == 0.0).collect();
            let add_mask = arr(&[b, 1, t, s_len], add.clone());
            let bool_mask = Value { dtype: jetc_ir::DType::Bool, data: Data::B(ArrayD::from_shape_vec(IxDyn(&[b, 1, t, s_len]), keep.clone()).expect("shape")) };
            let by_add = |bi: usize, _: usize, ti: usize, si: usize| {
                let a = add[(bi * t + ti) * s_len + si] as f64;
                (a != f64::NEG_INFINITY).then_some(a)
            };
            let by_bool = |bi: usize, _: usize, ti: usize, si: usize| keep[(bi * t + ti) * s_len + si].then_some(0.0);
            let cases: [(&Value, &dyn Fn(usize, usize, usize, usize) -> Option<f64>); 2] = [(&add_mask, &by_add), (&bool_mask, &by_bool)];
            for (mask, hidden) in cases {
                for (causal, window) in [(false, None), (true, Some(9))] {
                    let spec = AttentionSpec { heads: h, kv_heads: kvh, head_dim: d, scale: 0.6, rope: None, rotary_dim: d, causal, window, qk_norm_eps: None, softcap: None };
                    let vals = [
                        arr(&[b, t, hid], x.clone()), arr(&[hid, h * d], wq.clone()), arr(&[hid, kvh * d], wk.clone()),
                        arr(&[hid, kvh * d], wv.clone()), arr(&[h * d, hid], wo.clone()), arr(&[b, kvh, p, d], pk.clone()),
                        arr(&[b, kvh, p, d], pv.clone()),
                    ];
                    let mut inputs: Vec<Option<&Value>> = vec![None; AttentionSpec::NUM_INPUTS];
                    for (slot, v) in [AttentionSpec::X, AttentionSpec::WQ, AttentionSpec::WK, AttentionSpec::WV, AttentionSpec::WO, AttentionSpec::PAST_K, AttentionSpec::PAST_V].into_iter().zip(&vals) {
                        inputs[slot] = Some(v);
                    }
                    inputs[AttentionSpec::MASK] = Some(mask);
                    let out = attention(&spec, &inputs).expect("attention");
                    let want = oracle(&x, &wq, &wk, &wv, &wo, &pk, &pv, (b, t, hid, h, kvh, d, p), window, 0.6, causal, hidden);
                    let got = out[0].as_f32().expect("y");
                    let err = got.iter().zip(&want).map(|(a, b)| (*a as f64 - b).abs()).fold(0.0, f64::max);
                    assert!(err < 1e-5, "hiding value {hide} as {:?}, causal {causal} window {window:?}: max err {err}", mask.dtype);
                }
            }
        }
    }

    #[test]
    fn masked_attention_matches_f64_oracle() {
        let (b, t, hid, h, kvh, d, p) = (2, QUERY_BLOCK + 7, 8, 2, 1, 4, 3);
        let s_len = p + t;
        let mut seed = 11u64;
        let x = rand_vec(b * t * hid, &mut seed);
        let wq = rand_vec(hid * h * d, &mut seed);
        let wk = rand_vec(hid * kvh * d, &mut seed);
        let wv = rand_vec(hid * kvh * d, &mut seed);
        let wo = rand_vec(h * d * hid, &mut seed);
        let pk = rand_vec(b * kvh * p * d, &mut seed);
        let pv = rand_vec(b * kvh * p * d, &mut seed);
        // Bool mask [B, 1, T, S]: about one key in five hidden, and one query row all hidden.
        let keep: Vec<bool> = (0..b * t * s_len).map(|i| (i * 7919) % 5 != 0 && i / s_len != 3).collect();
        // Additive mask [1, H, T, S]: values in [-1, 1), every seventh -inf.
        let add: Vec<f32> = rand_vec(h * t * s_len, &mut seed).iter().enumerate().map(|(i, v)| if i % 7 == 0 { f32::NEG_INFINITY } else { 2.0 * v }).collect();
        let bool_mask = Value { dtype: jetc_ir::DType::Bool, data: Data::B(ArrayD::from_shape_vec(IxDyn(&[b, 1, t, s_len]), keep.clone()).expect("shape")) };
        let add_mask = arr(&[1, h, t, s_len], add.clone());
        let by_bool = |bi: usize, _: usize, ti: usize, si: usize| keep[(bi * t + ti) * s_len + si].then_some(0.0);
        let by_add = |_: usize, hi: usize, ti: usize, si: usize| {
            let a = add[(hi * t + ti) * s_len + si] as f64;
            (a != f64::NEG_INFINITY).then_some(a)
        };
        let cases: [(&Value, &dyn Fn(usize, usize, usize, usize) -> Option<f64>); 2] = [(&bool_mask, &by_bool), (&add_mask, &by_add)];
        for (mask, hidden) in cases {
            for (causal, window) in [(true, None), (true, Some(5)), (false, None)] {
                let spec = AttentionSpec { heads: h, kv_heads: kvh, head_dim: d, scale: 0.6, rope: None, rotary_dim: d, causal, window, qk_norm_eps: None, softcap: None };
                let vals = [
                    arr(&[b, t, hid], x.clone()), arr(&[hid, h * d], wq.clone()), arr(&[hid, kvh * d], wk.clone()),
                    arr(&[hid, kvh * d], wv.clone()), arr(&[h * d, hid], wo.clone()), arr(&[b, kvh, p, d], pk.clone()),
                    arr(&[b, kvh, p, d], pv.clone()),
                ];
                let mut inputs: Vec<Option<&Value>> = vec![None; AttentionSpec::NUM_INPUTS];
                for (slot, v) in [AttentionSpec::X, AttentionSpec::WQ, AttentionSpec::WK, AttentionSpec::WV, AttentionSpec::WO, AttentionSpec::PAST_K, AttentionSpec::PAST_V].into_iter().zip(&vals) {
                    inputs[slot] = Some(v);
                }
                inputs[AttentionSpec::MASK] = Some(mask);
                let out = attention(&spec, &inputs).expect("attention");
                let want = oracle(&x, &wq, &wk, &wv, &wo, &pk, &pv, (b, t, hid, h, kvh, d, p), window, 0.6, causal, hidden);
                let got = out[0].as_f32().expect("y");
                let err = got.iter().zip(&want).map(|(a, b)| (*a as f64 - b).abs()).fold(0.0, f64::max);
                assert!(err < 1e-5, "mask {:?} causal {causal} window {window:?}: max err {err}", mask.dtype);
            }
        }
    }
}
