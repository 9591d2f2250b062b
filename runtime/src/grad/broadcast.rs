//! The one helper that sums a gradient back to the shape of an input that was broadcast
//! (numpy rules: leading axes added, axes of size 1 stretched).
use ndarray::{ArrayD, Axis, IxDyn};

use super::R;

/// Sums `g` over the axes along which `shape` was broadcast to `g.shape()`.
pub fn sum_to_shape(g: ArrayD<f32>, shape: &[usize]) -> R<ArrayD<f32>> {
    if g.shape() == shape {
        return Ok(g);
    }
    let rank = g.ndim();
    if shape.len() > rank {
        return Err(format!("cannot sum a gradient of shape {:?} to the larger rank of {shape:?}", g.shape()));
    }
    let lead = rank - shape.len();
    let mut out = g;
    // Leading axes that broadcasting added.
    for _ in 0..lead {
        out = out.sum_axis(Axis(0));
    }
    for (d, &n) in shape.iter().enumerate() {
        if out.shape()[d] != n {
            if n != 1 {
                return Err(format!("gradient axis {d} has {} elements, the input {n}: not a broadcast", out.shape()[d]));
            }
            out = out.sum_axis(Axis(d)).insert_axis(Axis(d));
        }
    }
    out.into_shape_with_order(IxDyn(shape)).map_err(|e| e.to_string())
}

/// `g` with `a`'s values broadcast to `shape`, as an owned standard-layout array.
pub fn expand(a: &ArrayD<f32>, shape: &[usize]) -> R<ArrayD<f32>> {
    let v = a.broadcast(IxDyn(shape)).ok_or_else(|| format!("shape {:?} cannot be broadcast to {shape:?}", a.shape()))?;
    Ok(v.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sums_leading_and_stretched_axes() {
        let g = ArrayD::from_shape_vec(IxDyn(&[2, 3, 2]), (0..12).map(|v| v as f32).collect()).unwrap();
        let s = sum_to_shape(g.clone(), &[3, 1]).unwrap();
        // s[j, 0] = sum over i, k of g[i, j, k].
        for j in 0..3 {
            let want: f32 = (0..2).flat_map(|i| (0..2).map(move |k| (i * 6 + j * 2 + k) as f32)).sum();
            assert_eq!(s[[j, 0]], want);
        }
        assert_eq!(sum_to_shape(g.clone(), &[]).unwrap().sum(), g.sum());
        assert!(sum_to_shape(g, &[3, 3]).is_err());
    }
}
