//! The leaf math every kernel shares, forward and backward: logistic, SiLU and its
//! derivative, softplus, softmax and log-softmax of a row with their VJPs, and the rotary
//! embedding of one head with its transpose, generic over [`Real`] (f32 in the executor, f64
//! in the finite-difference checks). One definition each: the ONNX ops, the decoder ops and
//! the backward kernels all call these, so a backward never differs from the forward it
//! mirrors.
use jetc_ir::RopeStyle;
use num_traits::Float;

pub trait Real: Float + std::iter::Sum + std::ops::AddAssign + std::ops::SubAssign + std::ops::MulAssign + Send + Sync + std::fmt::Debug + 'static {
    fn of(x: f64) -> Self;

    /// The slice as f32 when `Self` is f32 (the executor's own GEMM takes only f32).
    fn as_f32(s: &[Self]) -> Option<&[f32]> {
        let _ = s;
        None
    }

    /// [`Real::as_f32`] for a mutable slice.
    fn as_f32_mut(s: &mut [Self]) -> Option<&mut [f32]> {
        let _ = s;
        None
    }
}

impl Real for f32 {
    fn of(x: f64) -> f32 {
        x as f32
    }

    fn as_f32(s: &[f32]) -> Option<&[f32]> {
        Some(s)
    }

    fn as_f32_mut(s: &mut [f32]) -> Option<&mut [f32]> {
        Some(s)
    }
}

impl Real for f64 {
    fn of(x: f64) -> f64 {
        x
    }
}

/// Dot product over eight independent partial sums, so that the compiler vectorizes it (one
/// running float sum is sequential and does not); the order is fixed, so results reproduce.
pub fn dot<T: Real>(a: &[T], b: &[T]) -> T {
    let n = a.len().min(b.len());
    let (a, b) = (&a[..n], &b[..n]);
    let mut acc = [T::zero(); 8];
    let (ca, cb) = (a.chunks_exact(8), b.chunks_exact(8));
    let (ra, rb) = (ca.remainder(), cb.remainder());
    for (x, y) in ca.zip(cb) {
        for i in 0..8 {
            acc[i] += x[i] * y[i];
        }
    }
    let mut s = ((acc[0] + acc[4]) + (acc[1] + acc[5])) + ((acc[2] + acc[6]) + (acc[3] + acc[7]));
    for (&x, &y) in ra.iter().zip(rb) {
        s += x * y;
    }
    s
}

/// `y += alpha x` elementwise (over the shorter of the two).
pub fn axpy<T: Real>(y: &mut [T], alpha: T, x: &[T]) {
    for (a, &b) in y.iter_mut().zip(x) {
        *a += alpha * b;
    }
}

/// Numerically stable logistic function.
pub fn sigmoid<T: Real>(x: T) -> T {
    let one = T::one();
    if x >= T::zero() {
        one / (one + (-x).exp())
    } else {
        let e = x.exp();
        e / (one + e)
    }
}

/// `x sigmoid(x)`.
pub fn silu<T: Real>(x: T) -> T {
    x * sigmoid(x)
}

/// d silu(x) / dx = s (1 + x (1 - s)), s = sigmoid(x).
pub fn silu_grad<T: Real>(x: T) -> T {
    let s = sigmoid(x);
    s * (T::one() + x * (T::one() - s))
}

/// The SwiGLU gate: `silu(h) u` from the gate projection `h` and the up projection `u`.
pub fn swiglu_gate<T: Real>(h: T, u: T) -> T {
    silu(h) * u
}

/// VJP of [`swiglu_gate`]: `(g u silu'(h), g silu(h))`.
pub fn swiglu_gate_vjp<T: Real>(g: T, h: T, u: T) -> (T, T) {
    (g * u * silu_grad(h), g * silu(h))
}

/// `log(1 + exp(x))` as torch computes it (linear above 20); its derivative is `sigmoid`.
pub fn softplus<T: Real>(x: T) -> T {
    if x > T::of(20.0) {
        x
    } else {
        x.exp().ln_1p()
    }
}

/// Softmax of one row in place (max-subtracted), with an optional sink logit that joins the
/// denominator only. A row with no finite logit (every key masked) becomes zeros.
pub fn softmax<T: Real>(row: &mut [T], sink: Option<T>) {
    let mut max = row.iter().fold(T::neg_infinity(), |m, &v| m.max(v));
    if let Some(s) = sink {
        max = max.max(s);
    }
    if max == T::neg_infinity() {
        row.fill(T::zero());
        return;
    }
    let mut sum = T::zero();
    for v in row.iter_mut() {
        *v = (*v - max).exp();
        sum += *v;
    }
    if let Some(s) = sink {
        sum += (s - max).exp();
    }
    let inv = T::one() / sum;
    row.iter_mut().for_each(|v| *v *= inv);
}

/// Log-softmax of one row in place.
pub fn log_softmax<T: Real>(row: &mut [T]) {
    let max = row.iter().fold(T::neg_infinity(), |m, &v| m.max(v));
    let sum: T = row.iter().map(|&v| (v - max).exp()).sum();
    let l = sum.ln();
    row.iter_mut().for_each(|v| *v = *v - max - l);
}

/// VJP of [`softmax`] from its output `y`: dx = y (dy - <dy, y>).
pub fn softmax_vjp<T: Real>(y: &[T], dy: &[T], dx: &mut [T]) {
    let s: T = dy.iter().zip(y).map(|(&g, &p)| g * p).sum();
    for ((o, &g), &p) in dx.iter_mut().zip(dy).zip(y) {
        *o = p * (g - s);
    }
}

/// VJP of [`log_softmax`] from the softmax `p` of its input: dx = dy - p sum(dy).
pub fn log_softmax_vjp<T: Real>(p: &[T], dy: &[T], dx: &mut [T]) {
    let s: T = dy.iter().copied().sum();
    for ((o, &g), &q) in dx.iter_mut().zip(dy).zip(p) {
        *o = g - q * s;
    }
}

/// The cos/sin factors of rotary pair `i`: a table of `rot` entries per position holds one
/// per element, a table of `rot / 2` one per pair.
fn rope_factors<T: Real>(cos: &[T], sin: &[T], i: usize, rot: usize, style: RopeStyle) -> (T, T, T, T) {
    let half = rot / 2;
    if cos.len() < rot {
        return (cos[i], sin[i], cos[i], sin[i]);
    }
    match style {
        RopeStyle::HalfRotate => (cos[i], sin[i], cos[i + half], sin[i + half]),
        RopeStyle::Interleaved => (cos[2 * i], sin[2 * i], cos[2 * i + 1], sin[2 * i + 1]),
    }
}

/// The element pair of rotary pair `i`.
fn rope_pair(i: usize, rot: usize, style: RopeStyle) -> (usize, usize) {
    match style {
        RopeStyle::HalfRotate => (i, i + rot / 2),
        RopeStyle::Interleaved => (2 * i, 2 * i + 1),
    }
}

/// Rotates the first `rot` elements of one head vector in place: each pair (a, b) becomes
/// (a c1 - b s1, b c2 + a s2), pairs split in halves or interleaved.
pub fn rope<T: Real>(x: &mut [T], cos: &[T], sin: &[T], rot: usize, style: RopeStyle) {
    for i in 0..rot / 2 {
        let (ia, ib) = rope_pair(i, rot, style);
        let (c1, s1, c2, s2) = rope_factors(cos, sin, i, rot, style);
        let (a, b) = (x[ia], x[ib]);
        x[ia] = a * c1 - b * s1;
        x[ib] = b * c2 + a * s2;
    }
}

/// The transpose of [`rope`] (its VJP), same pairing and table conventions.
pub fn rope_transpose<T: Real>(g: &mut [T], cos: &[T], sin: &[T], rot: usize, style: RopeStyle) {
    for i in 0..rot / 2 {
        let (ia, ib) = rope_pair(i, rot, style);
        let (c1, s1, c2, s2) = rope_factors(cos, sin, i, rot, style);
        let (ga, gb) = (g[ia], g[ib]);
        g[ia] = ga * c1 + gb * s2;
        g[ib] = -ga * s1 + gb * c2;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn softmax_handles_sinks_and_fully_masked_rows() {
        let mut r = [1.0f64, 2.0, 3.0];
        softmax(&mut r, Some(0.5));
        let z = 1f64.exp() + 2f64.exp() + 3f64.exp() + 0.5f64.exp();
        assert!((r[2] - 3f64.exp() / z).abs() < 1e-15);
        let mut m = [f32::NEG_INFINITY; 4];
        softmax(&mut m, None);
        assert_eq!(m, [0.0; 4]);
        let mut l = [0.5f64, -1.0];
        log_softmax(&mut l);
        assert!((l[0].exp() + l[1].exp() - 1.0).abs() < 1e-15);
    }

    #[test]
    fn rope_transpose_is_the_adjoint() {
        for style in [RopeStyle::HalfRotate, RopeStyle::Interleaved] {
            for width in [3usize, 6] {
                let cos: Vec<f64> = (0..width).map(|i| (0.3 * i as f64).cos()).collect();
                let sin: Vec<f64> = (0..width).map(|i| (0.3 * i as f64).sin()).collect();
                let x: Vec<f64> = (0..8).map(|i| (i as f64 * 0.7).sin()).collect();
                let y: Vec<f64> = (0..8).map(|i| (i as f64 * 1.3).cos()).collect();
                let (mut ax, mut aty) = (x.clone(), y.clone());
                rope(&mut ax, &cos, &sin, 6, style);
                rope_transpose(&mut aty, &cos, &sin, 6, style);
                let lhs: f64 = ax.iter().zip(&y).map(|(a, b)| a * b).sum();
                let rhs: f64 = x.iter().zip(&aty).map(|(a, b)| a * b).sum();
                assert!((lhs - rhs).abs() < 1e-13, "{style:?} width {width}");
                assert_eq!(ax[6..], x[6..], "elements past rot are untouched");
            }
        }
    }
}
