//! The float type of the generic reference math: f32 in the executor, f64 in the
//! finite-difference checks.
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

pub fn silu<T: Real>(x: T) -> T {
    x * sigmoid(x)
}

/// d silu(x) / dx = s (1 + x (1 - s)), s = sigmoid(x).
pub fn silu_grad<T: Real>(x: T) -> T {
    let s = sigmoid(x);
    s * (T::one() + x * (T::one() - s))
}
