//! Deterministic initializers for new mixer weights (seeded per layer and weight name), and
//! the mapping of base attention weights onto a mixer's head layout.
use jetc_ir::{Result, Tensor};

/// xorshift64* with Box-Muller normals: reproducible across machines.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64, name: &str) -> Rng {
        let mut h = 0xcbf29ce484222325u64 ^ seed.wrapping_mul(0x9E37_79B9_7F4A_7C15);
        for b in name.bytes() {
            h ^= b as u64;
            h = h.wrapping_mul(0x100000001b3);
        }
        Rng(h | 1)
    }

    pub fn uniform(&mut self) -> f64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        let x = self.0.wrapping_mul(0x2545_F491_4F6C_DD1D);
        ((x >> 11) as f64 + 0.5) / (1u64 << 53) as f64 // (0, 1)
    }

    pub fn normal(&mut self, std: f64) -> f32 {
        let (u1, u2) = (self.uniform(), self.uniform());
        ((-2.0 * u1.ln()).sqrt() * (2.0 * std::f64::consts::PI * u2).cos() * std) as f32
    }
}

pub fn normal(shape: Vec<usize>, std: f64, rng: &mut Rng) -> Result<Tensor> {
    let n = shape.iter().product();
    let data: Vec<f32> = (0..n).map(|_| rng.normal(std)).collect();
    Tensor::from_f32(shape, &data)
}

pub fn filled(shape: Vec<usize>, v: f32) -> Result<Tensor> {
    let n = shape.iter().product();
    Tensor::from_f32(shape, &vec![v; n])
}

/// `A_log = log(U(0, 16))`, as the released JetBlock initializes it.
pub fn a_log(heads: usize, rng: &mut Rng) -> Result<Tensor> {
    a_log_in(heads, 0.0, 16.0, rng)
}

/// `A_log = log(U(lo, hi))` (Mamba2's `A_init_range` is (1, 16)).
pub fn a_log_in(heads: usize, lo: f64, hi: f64, rng: &mut Rng) -> Result<Tensor> {
    let v: Vec<f32> = (0..heads).map(|_| (lo + (hi - lo) * rng.uniform()).ln() as f32).collect();
    Tensor::from_f32(vec![heads], &v)
}

/// `dt_bias = softplus^-1(dt)`, dt log-uniform in [1e-3, 0.1], floored at 1e-4.
pub fn dt_bias(heads: usize, rng: &mut Rng) -> Result<Tensor> {
    let (lo, hi) = (1e-3f64.ln(), 0.1f64.ln());
    let v: Vec<f32> = (0..heads)
        .map(|_| {
            let dt = (lo + (hi - lo) * rng.uniform()).exp().max(1e-4);
            (dt + (-(-dt).exp_m1()).ln()) as f32
        })
        .collect();
    Tensor::from_f32(vec![heads], &v)
}

/// Which base head a mixer head takes its weights from: spread evenly (repeats when the
/// mixer has more heads, skips when it has fewer).
fn source_head(h: usize, new_heads: usize, base_heads: usize) -> usize {
    h * base_heads / new_heads
}

/// A projection's output columns re-laid out from `base_heads x base_dim` to
/// `new_heads x new_dim`: shared leading dims copied, extra dims from `fill`.
/// `w` is [in, base_heads*base_dim] (MatMul layout).
pub fn resize_columns(
    w: &Tensor,
    base_heads: usize,
    base_dim: usize,
    new_heads: usize,
    new_dim: usize,
    fill: &mut dyn FnMut() -> f32,
) -> Result<Tensor> {
    let (rows, cols) = (w.shape()[0], w.shape()[1]);
    if cols != base_heads * base_dim {
        return Err(jetc_ir::IrError::Other(format!("weight of {cols} columns is not {base_heads}x{base_dim}")));
    }
    let src = w.to_f32_vec();
    let new_cols = new_heads * new_dim;
    let mut out = vec![0f32; rows * new_cols];
    for r in 0..rows {
        for h in 0..new_heads {
            let sh = source_head(h, new_heads, base_heads);
            for d in 0..new_dim {
                out[r * new_cols + h * new_dim + d] =
                    if d < base_dim { src[r * cols + sh * base_dim + d] } else { fill() };
            }
        }
    }
    Tensor::from_f32(vec![rows, new_cols], &out)
}

/// The output projection's input rows re-laid out the same way ([base_heads*base_dim, out]
/// -> [new_heads*new_dim, out]); rows of a repeated head are divided among its copies so
/// the sum over heads is unchanged, extra rows are zero.
pub fn resize_rows(w: &Tensor, base_heads: usize, base_dim: usize, new_heads: usize, new_dim: usize) -> Result<Tensor> {
    let (rows, cols) = (w.shape()[0], w.shape()[1]);
    if rows != base_heads * base_dim {
        return Err(jetc_ir::IrError::Other(format!("weight of {rows} rows is not {base_heads}x{base_dim}")));
    }
    let src = w.to_f32_vec();
    let copies: Vec<usize> =
        (0..base_heads).map(|b| (0..new_heads).filter(|&h| source_head(h, new_heads, base_heads) == b).count()).collect();
    let mut out = vec![0f32; new_heads * new_dim * cols];
    for h in 0..new_heads {
        let sh = source_head(h, new_heads, base_heads);
        let share = 1.0 / copies[sh].max(1) as f32;
        for d in 0..new_dim.min(base_dim) {
            for c in 0..cols {
                out[(h * new_dim + d) * cols + c] = src[(sh * base_dim + d) * cols + c] * share;
            }
        }
    }
    Tensor::from_f32(vec![new_heads * new_dim, cols], &out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resizing_keeps_shared_dims_and_repeats_heads() {
        // 2 base heads of dim 2 -> 4 heads of dim 3.
        let w = Tensor::from_f32(vec![1, 4], &[1.0, 2.0, 3.0, 4.0]).unwrap_or_else(|e| panic!("{e}"));
        let r = resize_columns(&w, 2, 2, 4, 3, &mut || 9.0).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(r.to_f32_vec(), vec![1.0, 2.0, 9.0, 1.0, 2.0, 9.0, 3.0, 4.0, 9.0, 3.0, 4.0, 9.0]);
        let wo = Tensor::from_f32(vec![4, 1], &[1.0, 2.0, 3.0, 4.0]).unwrap_or_else(|e| panic!("{e}"));
        let r = resize_rows(&wo, 2, 2, 4, 3).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(r.to_f32_vec(), vec![0.5, 1.0, 0.0, 0.5, 1.0, 0.0, 1.5, 2.0, 0.0, 1.5, 2.0, 0.0]);
    }

    #[test]
    fn dt_bias_inverts_softplus() {
        let mut rng = Rng::new(1, "dt");
        let t = dt_bias(64, &mut rng).unwrap_or_else(|e| panic!("{e}"));
        for b in t.to_f32_vec() {
            let dt = (1.0 + (b as f64).exp()).ln();
            assert!((1e-4..=0.1 + 1e-9).contains(&dt), "dt {dt}");
        }
    }
}
