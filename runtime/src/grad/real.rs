//! The float type of the generic reference math and its shared functions (defined once in
//! [`crate::math`]).
pub use crate::math::{sigmoid, silu, silu_grad, softplus, Real};
