//! The leaf math every kernel shares, forward and backward: logistic, SiLU and its
//! derivative, softplus, generic over [`Real`] (f32 in the executor, f64 in the
//! finite-difference checks). One definition each, so a backward never differs from the
//! forward it mirrors.
use num_traits::Float;

pub trait Real: Float + std::iter::Sum + std::ops::AddAssign + std::ops::SubAssign + std::ops::MulAssign + Send + Sync + std::fmt::Debug + 'static {
    fn of(x: f64) -> Self;
}

impl Real for f32 {
    fn of(x: f64) -> f32 {
        x as f32
    }
}

impl Real for f64 {
    fn of(x: f64) -> f64 {
        x
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

/// `log(1 + exp(x))` as torch computes it (linear above 20); its derivative is `sigmoid`.
pub fn softplus<T: Real>(x: T) -> T {
    if x > T::of(20.0) {
        x
    } else {
        x.exp().ln_1p()
    }
}
