//! MatMul (numpy semantics: batched, broadcasting over leading dims, 1-D operands promoted
//! and the added dim removed) and Gemm (opset 11+: C optional and unidirectionally
//! broadcast; older opsets behave the same for the graphs we see). f32 products run on jetc's
//! own AVX-512 / AVX2 kernels ([`crate::gemm_f32`]) where the CPU has them and the product is
//! large enough, otherwise (and f64 always) on the `gemm` crate; integer MatMul uses plain loops.
use gemm::Parallelism;
use ndarray::ArrayD;
use rayon::prelude::*;

use super::common::{array, broadcast_shapes, broadcast_to, contiguous, to_vec, Ctx, OpResult};
use crate::gemm_f32;
use crate::math::Real;
use crate::value::{Data, Value};

/// Products at least this large (m·n·k) use several threads.
const PARALLEL_WORK: usize = 1 << 18;

/// A strided matrix operand: element (r, c) is at `data[r * rs + c * cs]`.
#[derive(Clone, Copy)]
pub(crate) struct Mat<'a, T = f32> {
    pub data: &'a [T],
    pub rs: usize,
    pub cs: usize,
}

impl<'a, T> Mat<'a, T> {
    /// A row-major matrix with `cols` columns.
    pub fn rows(data: &'a [T], cols: usize) -> Mat<'a, T> {
        Mat { data, rs: cols, cs: 1 }
    }

    /// The transpose of a row-major matrix with `cols` columns.
    pub fn transposed(data: &'a [T], cols: usize) -> Mat<'a, T> {
        Mat { data, rs: 1, cs: cols }
    }

    fn fits(&self, rows: usize, cols: usize) -> bool {
        rows == 0 || cols == 0 || (rows - 1) * self.rs + (cols - 1) * self.cs < self.data.len()
    }
}

/// `c = (accumulate ? c : 0) + alpha · a · b` where `a` is m×k, `b` is k×n and `c` is a
/// row-major m×n buffer. `threads` lets large products use the rayon pool. Generic over the
/// float type (f32 in the executor, f64 in the finite-difference checks).
#[allow(clippy::too_many_arguments)]
pub(crate) fn sgemm<T: Real>(
    m: usize,
    n: usize,
    k: usize,
    a: Mat<'_, T>,
    b: Mat<'_, T>,
    c: &mut [T],
    alpha: T,
    accumulate: bool,
    threads: bool,
) -> OpResult<()> {
    if !a.fits(m, k) || !b.fits(k, n) || c.len() < m * n {
        return Err(format!("internal error: gemm operands too small for {m}x{k} · {k}x{n}"));
    }
    if m == 0 || n == 0 {
        return Ok(());
    }
    if k == 0 {
        if !accumulate {
            c[..m * n].fill(T::zero());
        }
        return Ok(());
    }
    // f32 on a CPU with AVX-512 or AVX2 + FMA: jetc's own kernels (see `gemm_f32`).
    if let (Some(ad), Some(bd)) = (T::as_f32(a.data), T::as_f32(b.data)) {
        let (fa, fb) = (gemm_f32::Operand { data: ad, rs: a.rs, cs: a.cs }, gemm_f32::Operand { data: bd, rs: b.rs, cs: b.cs });
        let alpha_f32 = alpha.to_f32().unwrap_or(f32::NAN);
        if let Some(cd) = T::as_f32_mut(c) {
            if gemm_f32::sgemm(m, n, k, fa, fb, cd, alpha_f32, accumulate, threads) {
                return Ok(());
            }
        }
    }
    let par = if threads && m * n * k >= PARALLEL_WORK { Parallelism::Rayon(0) } else { Parallelism::None };
    // SAFETY: the checks above keep every index the kernel touches inside the slices:
    // a: (m-1)·rs + (k-1)·cs, b: (k-1)·rs + (n-1)·cs, c: m·n row-major.
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            c.as_mut_ptr(),
            1,
            n as isize,
            accumulate,
            a.data.as_ptr(),
            a.cs as isize,
            a.rs as isize,
            b.data.as_ptr(),
            b.cs as isize,
            b.rs as isize,
            T::one(),
            alpha,
            false,
            false,
            false,
            par,
        );
    }
    Ok(())
}

pub(crate) fn matmul(ctx: &Ctx) -> OpResult {
    let (a, b) = (ctx.input(0)?, ctx.input(1)?);
    let data = match (&a.data, &b.data) {
        (Data::F(x), Data::Q(w)) if w.stored().transposed() && x.ndim() >= 1 => Data::F(matmul_stored(x, w)?),
        (Data::F(x), Data::F(y)) => Data::F(matmul_f32(x, y)?),
        (Data::Q(_), _) | (_, Data::Q(_)) => match (&a.dense().data, &b.dense().data) {
            (Data::F(x), Data::F(y)) => Data::F(matmul_f32(x, y)?),
            _ => return Err(format!("MatMul of {} by a stored weight needs a float operand", a.dtype)),
        },
        (Data::I(x), Data::I(y)) => Data::I(matmul_i64(x, y)?),
        _ => {
            return Err(format!("MatMul operands must both be float or both integer, got {} and {}", a.dtype, b.dtype))
        }
    };
    Ok(vec![Value { dtype: a.dtype, data }])
}

/// `x [.., k] @ w [k, n]` with `w` the transpose of a stored-precision matrix of `n` rows of
/// `k` (a linear layer's weight as ggml stores it), de-quantized inside the kernel.
fn matmul_stored(x: &ArrayD<f32>, w: &crate::value::StoredValue) -> OpResult<ArrayD<f32>> {
    let q = w.matrix()?;
    let (n, k) = (q.rows(), q.cols());
    let kx = x.shape().last().copied().unwrap_or(0);
    if kx != k {
        return Err(format!("MatMul inner dimensions differ: shapes {:?} and [{k}, {n}] ({})", x.shape(), q.format()));
    }
    let m = x.len() / k.max(1);
    let xd = contiguous(x);
    let mut out = vec![0f32; m * n];
    crate::quant::matmul(&xd, m, &q, &mut out, true)?;
    let mut shape = x.shape().to_vec();
    match shape.last_mut() {
        Some(last) if x.ndim() > 1 => *last = n,
        _ => shape = vec![n],
    }
    array(&shape, out)
}

/// Shapes of a batched product: leading batch dims, m, k, n, output shape, and per-batch
/// element offsets into the (row-major) operands.
struct Plan {
    m: usize,
    k: usize,
    n: usize,
    out_shape: Vec<usize>,
    a_offsets: Vec<usize>,
    b_offsets: Vec<usize>,
    /// True when `b` is one matrix shared by every batch (then the batch folds into m).
    b_shared: bool,
}

fn plan(a: &[usize], b: &[usize]) -> OpResult<Plan> {
    if a.is_empty() || b.is_empty() {
        return Err(format!("MatMul operands must have rank >= 1, got shapes {a:?} and {b:?}"));
    }
    let a2: Vec<usize> = if a.len() == 1 { vec![1, a[0]] } else { a.to_vec() };
    let b2: Vec<usize> = if b.len() == 1 { vec![b[0], 1] } else { b.to_vec() };
    let (m, k) = (a2[a2.len() - 2], a2[a2.len() - 1]);
    let (kb, n) = (b2[b2.len() - 2], b2[b2.len() - 1]);
    if k != kb {
        return Err(format!("MatMul inner dimensions differ: shapes {a:?} and {b:?}"));
    }
    let (ba, bb) = (&a2[..a2.len() - 2], &b2[..b2.len() - 2]);
    let batch =
        broadcast_shapes(&[ba, bb]).map_err(|_| format!("MatMul batch dims of {a:?} and {b:?} do not broadcast"))?;
    let mut out_shape = batch.clone();
    if a.len() > 1 {
        out_shape.push(m);
    }
    if b.len() > 1 {
        out_shape.push(n);
    }
    let nb: usize = batch.iter().product();
    let b_shared = bb.iter().product::<usize>() == 1;
    let a_offsets = batch_offsets(ba, &batch, m * k);
    let b_offsets = batch_offsets(bb, &batch, k * n);
    debug_assert_eq!(a_offsets.len(), nb);
    Ok(Plan { m, k, n, out_shape, a_offsets, b_offsets, b_shared })
}

/// For every index of the broadcast `batch` shape, the offset of the matching matrix in an
/// operand whose own batch dims are `own` (right-aligned, size-1 dims broadcast).
fn batch_offsets(own: &[usize], batch: &[usize], matrix: usize) -> Vec<usize> {
    let nb: usize = batch.iter().product();
    let lead = batch.len() - own.len();
    let mut strides = vec![0usize; batch.len()];
    let mut s = matrix;
    for (i, &d) in own.iter().enumerate().rev() {
        strides[lead + i] = if d == 1 { 0 } else { s };
        s *= d;
    }
    let mut out = Vec::with_capacity(nb);
    let mut idx = vec![0usize; batch.len()];
    for _ in 0..nb {
        out.push(idx.iter().zip(&strides).map(|(i, s)| i * s).sum());
        for d in (0..batch.len()).rev() {
            idx[d] += 1;
            if idx[d] < batch[d] {
                break;
            }
            idx[d] = 0;
        }
    }
    out
}

pub(crate) fn matmul_f32(a: &ArrayD<f32>, b: &ArrayD<f32>) -> OpResult<ArrayD<f32>> {
    let p = plan(a.shape(), b.shape())?;
    let (ad, bd) = (contiguous(a), contiguous(b));
    let (ad, bd) = (&ad[..], &bd[..]);
    let (m, k, n) = (p.m, p.k, p.n);
    let nb = p.a_offsets.len();
    let mut out = vec![0f32; nb * m * n];
    if p.b_shared && a.ndim() >= 2 && nb > 0 && a.len() == nb * m * k {
        // Every batch of `a` against one `b`: one (nb·m)×k · k×n product.
        let bm = Mat::rows(&bd[p.b_offsets[0]..], n);
        sgemm(nb * m, n, k, Mat::rows(ad, k), bm, &mut out, 1.0, false, true)?;
    } else if m * n > 0 {
        let big = m * n * k >= PARALLEL_WORK;
        let one = |i: usize, c: &mut [f32]| {
            let am = Mat::rows(&ad[p.a_offsets[i]..], k);
            let bm = Mat::rows(&bd[p.b_offsets[i]..], n);
            sgemm(m, n, k, am, bm, c, 1.0, false, big)
        };
        if big || nb == 1 {
            out.chunks_mut(m * n).enumerate().try_for_each(|(i, c)| one(i, c))?;
        } else {
            out.par_chunks_mut(m * n).enumerate().try_for_each(|(i, c)| one(i, c))?;
        }
    }
    array(&p.out_shape, out)
}

fn matmul_i64(a: &ArrayD<i64>, b: &ArrayD<i64>) -> OpResult<ArrayD<i64>> {
    let p = plan(a.shape(), b.shape())?;
    let (ad, bd) = (to_vec(a), to_vec(b));
    let (m, k, n) = (p.m, p.k, p.n);
    let mut out = vec![0i64; p.a_offsets.len() * m * n];
    for (bi, c) in out.chunks_mut((m * n).max(1)).enumerate().take(p.a_offsets.len()) {
        let (ao, bo) = (p.a_offsets[bi], p.b_offsets[bi]);
        for r in 0..m {
            for j in 0..n {
                c[r * n + j] =
                    (0..k).fold(0i64, |s, t| s.wrapping_add(ad[ao + r * k + t].wrapping_mul(bd[bo + t * n + j])));
            }
        }
    }
    array(&p.out_shape, out)
}

/// Gemm: `Y = alpha · A' · B' + beta · C` with A' = transA ? Aᵀ : A, likewise B'.
pub(crate) fn gemm_op(ctx: &Ctx) -> OpResult {
    let (av, a, b) = (ctx.input(0)?, ctx.f32(0)?, ctx.f32(1)?);
    let c = ctx.opt_f32(2)?;
    let alpha = ctx.float_or("alpha", 1.0)?;
    let beta = ctx.float_or("beta", 1.0)?;
    let (ta, tb) = (ctx.flag("transA", false)?, ctx.flag("transB", false)?);
    if a.ndim() != 2 || b.ndim() != 2 {
        return Err(format!("Gemm needs 2-D A and B, got shapes {:?} and {:?}", a.shape(), b.shape()));
    }
    let (m, k) = if ta { (a.shape()[1], a.shape()[0]) } else { (a.shape()[0], a.shape()[1]) };
    let (kb, n) = if tb { (b.shape()[1], b.shape()[0]) } else { (b.shape()[0], b.shape()[1]) };
    if k != kb {
        return Err(format!(
            "Gemm inner dimensions differ: A {:?} (transA={ta}) and B {:?} (transB={tb})",
            a.shape(),
            b.shape()
        ));
    }
    let mut out = vec![0f32; m * n];
    let mut accumulate = false;
    if let Some(c) = c {
        if beta != 0.0 {
            let cv = broadcast_to(c, &[m, n])
                .map_err(|_| format!("Gemm C of shape {:?} does not broadcast to [{m}, {n}]", c.shape()))?;
            for (o, &x) in out.iter_mut().zip(cv.iter()) {
                *o = beta * x;
            }
            accumulate = true;
        }
    }
    let (ad, bd) = (contiguous(a), contiguous(b));
    let am = if ta { Mat::transposed(&ad, m) } else { Mat::rows(&ad, k) };
    let bm = if tb { Mat::transposed(&bd, k) } else { Mat::rows(&bd, n) };
    sgemm(m, n, k, am, bm, &mut out, alpha, accumulate, true)?;
    Ok(vec![Value { dtype: av.dtype, data: Data::F(array(&[m, n], out)?) }])
}

#[cfg(test)]
mod tests {
    use super::super::common::test_util::Rng;
    use super::super::common::test_util::*;
    use jetc_ir::Attr;
    use proptest::prelude::*;

    /// Naive f64 matmul over explicit broadcasting, the oracle.
    fn naive(a: &[f32], ash: &[usize], b: &[f32], bsh: &[usize]) -> (Vec<f64>, Vec<usize>) {
        let a2: Vec<usize> = if ash.len() == 1 { vec![1, ash[0]] } else { ash.to_vec() };
        let b2: Vec<usize> = if bsh.len() == 1 { vec![bsh[0], 1] } else { bsh.to_vec() };
        let (m, k, n) = (a2[a2.len() - 2], a2[a2.len() - 1], b2[b2.len() - 1]);
        let (ba, bb) = (&a2[..a2.len() - 2], &b2[..b2.len() - 2]);
        let rank = ba.len().max(bb.len());
        let pad = |s: &[usize]| -> Vec<usize> {
            let mut v = vec![1; rank - s.len()];
            v.extend_from_slice(s);
            v
        };
        let (pa, pb) = (pad(ba), pad(bb));
        let batch: Vec<usize> = pa.iter().zip(&pb).map(|(&x, &y)| x.max(y)).collect();
        let nb: usize = batch.iter().product();
        let mut out = Vec::new();
        for bi in 0..nb {
            let mut rem = bi;
            let mut idx = vec![0; rank];
            for d in (0..rank).rev() {
                idx[d] = rem % batch[d];
                rem /= batch[d];
            }
            let off = |p: &[usize]| idx.iter().zip(p).fold(0, |o, (&i, &d)| o * d + if d == 1 { 0 } else { i });
            let (ao, bo) = (off(&pa) * m * k, off(&pb) * k * n);
            for r in 0..m {
                for c in 0..n {
                    out.push((0..k).map(|t| a[ao + r * k + t] as f64 * b[bo + t * n + c] as f64).sum());
                }
            }
        }
        let mut shape = batch;
        if ash.len() > 1 {
            shape.push(m);
        }
        if bsh.len() > 1 {
            shape.push(n);
        }
        (out, shape)
    }

    fn check(ash: &[usize], bsh: &[usize], seed: u64) {
        let mut rng = Rng::new(seed);
        let a = rng.vec(ash.iter().product());
        let b = rng.vec(bsh.iter().product());
        let got = run1(&op("MatMul", 13, &[]), &[&f(ash, &a), &f(bsh, &b)]);
        let (want, shape) = naive(&a, ash, &b, bsh);
        assert_eq!(got.shape(), &shape[..], "shapes {ash:?} x {bsh:?}");
        assert_close(&fvec(&got), &want, 1e-5);
    }

    #[test]
    fn matmul_shapes_and_values() {
        check(&[2, 3], &[3, 4], 1);
        check(&[3], &[3, 4], 2);
        check(&[2, 3], &[3], 3);
        check(&[5], &[5], 4);
        check(&[2, 4, 3], &[3, 5], 5); // folded batch
        check(&[4, 3], &[2, 3, 5], 6); // batch from b
        check(&[2, 1, 4, 3], &[3, 3, 2], 7); // broadcast both ways
        check(&[3], &[2, 3, 2], 8);
        check(&[1, 2, 0], &[0, 3], 9); // k = 0 gives zeros
        check(&[64, 96], &[96, 80], 10); // threaded gemm
    }

    #[test]
    fn matmul_hand_computed_and_errors() {
        let y = run1(&op("MatMul", 13, &[]), &[&f(&[2, 2], &[1., 2., 3., 4.]), &f(&[2, 2], &[5., 6., 7., 8.])]);
        assert_eq!(fvec(&y), vec![19., 22., 43., 50.]);
        let y = run1(&op("MatMul", 13, &[]), &[&i(&[1, 2], &[2, 3]), &i(&[2, 1], &[4, 5])]);
        assert_eq!(ivec(&y), vec![23]);
        let e = run(&op("MatMul", 13, &[]), &[&f(&[2, 3], &[0.; 6]), &f(&[2, 3], &[0.; 6])]).unwrap_err();
        assert!(e.to_string().contains("inner dimensions"), "{e}");
        assert!(run(&op("MatMul", 13, &[]), &[&f(&[2, 3, 4], &[0.; 24]), &f(&[4, 4, 2], &[0.; 32])]).is_err());
        assert!(run(&op("MatMul", 13, &[]), &[&f(&[2], &[0.; 2]), &i(&[2], &[0; 2])]).is_err());
    }

    #[test]
    fn gemm_transposes_alpha_beta_and_bias_broadcast() {
        let mut rng = Rng::new(11);
        let (m, k, n) = (3, 4, 5);
        let a = rng.vec(m * k);
        let b = rng.vec(k * n);
        let c = rng.vec(n);
        // A stored transposed (k×m), B stored transposed (n×k).
        let at: Vec<f32> = (0..k * m).map(|x| a[(x % m) * k + x / m]).collect();
        let bt: Vec<f32> = (0..n * k).map(|x| b[(x % k) * n + x / k]).collect();
        let o = op(
            "Gemm",
            13,
            &[
                ("transA", Attr::Int(1)),
                ("transB", Attr::Int(1)),
                ("alpha", Attr::Float(0.5)),
                ("beta", Attr::Float(2.0)),
            ],
        );
        let y = run1(&o, &[&f(&[k, m], &at), &f(&[n, k], &bt), &f(&[n], &c)]);
        let mut want = Vec::new();
        for r in 0..m {
            for j in 0..n {
                let dot: f64 = (0..k).map(|t| a[r * k + t] as f64 * b[t * n + j] as f64).sum();
                want.push(0.5 * dot + 2.0 * c[j] as f64);
            }
        }
        assert_eq!(y.shape(), &[m, n]);
        assert_close(&fvec(&y), &want, 1e-5);
        // Without C.
        let y = run1(&op("Gemm", 13, &[]), &[&f(&[1, 2], &[1., 2.]), &f(&[2, 1], &[3., 4.])]);
        assert_eq!(fvec(&y), vec![11.]);
        let e = run(&op("Gemm", 13, &[]), &[&f(&[1, 2], &[1., 2.]), &f(&[3, 1], &[3., 4., 5.])]).unwrap_err();
        assert!(e.to_string().contains("inner dimensions"), "{e}");
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]
        /// MatMul agrees with naive loops for random ranks, broadcast batch dims and sizes.
        #[test]
        fn matmul_matches_naive(
            m in 1usize..6, k in 0usize..6, n in 1usize..6,
            ba in prop::collection::vec(1usize..3, 0..3),
            bb in prop::collection::vec(1usize..3, 0..3),
            a1 in any::<bool>(), b1 in any::<bool>(), seed in any::<u64>(),
        ) {
            // Make the batch dims compatible: where both have a dim, keep one of them or 1.
            let rank = ba.len().min(bb.len());
            let mut bb = bb;
            for t in 0..rank {
                let (ia, ib) = (ba.len() - 1 - t, bb.len() - 1 - t);
                if ba[ia] != bb[ib] && ba[ia] != 1 { bb[ib] = 1; }
            }
            let ash: Vec<usize> = if a1 { vec![k] } else { ba.iter().copied().chain([m, k]).collect() };
            let bsh: Vec<usize> = if b1 { vec![k] } else { bb.iter().copied().chain([k, n]).collect() };
            check(&ash, &bsh, seed);
        }
    }
}
