//! Backward of the raised softmax `Attention` op. Not built yet: the op is frozen in local
//! distillation (its output is the target, not on the gradient path), and the path phase
//! that needs dX through frozen attention comes with the supernet distillation work.
use jetc_ir::AttentionSpec;
use ndarray::ArrayD;

use super::{Bwd, R};

pub(crate) fn check(_s: &AttentionSpec, _wrt: &[usize]) -> R<()> {
    Err("Attention has no backward rule yet (local distillation keeps it off the gradient path)".into())
}

pub(crate) fn vjp(_c: &Bwd, s: &AttentionSpec) -> R<Vec<Option<ArrayD<f32>>>> {
    check(s, &[]).map(|_| Vec::new())
}
