//! Vectorized f32 math for the executor's hot loops: `exp` over a slice, the SwiGLU gate
//! `silu(h) u`, and a softmax row.
//!
//! Why: libm's scalar `expf` costs 5-10 ns per call, and a 512-token prefill of a 0.5B
//! decoder calls it about 150 million times (one per MLP hidden unit, one per attention
//! score). Here `exp` is a branch-free polynomial (Cephes' `expf`: range reduction by
//! `ln 2`, a degree-6 polynomial, the power of two written into the exponent bits) that
//! the compiler vectorizes. Each entry point picks, at run time, a copy compiled for
//! AVX-512, for AVX2 + FMA, or for the baseline target, so one binary runs everywhere.
//!
//! Accuracy: within 2 ulp of the correctly rounded `exp` over [-87.3, 88.37] (tested against
//! f64); below -87.3 the result is 0 (so `exp(-inf) = 0`, as a masked softmax needs), above
//! 88.37 it is clamped to `exp(88.37)` (2.4e38). The generic reference math ([`crate::math`]) keeps
//! libm's functions: the f64 finite-difference checks run through that.

/// Below this `exp` is 0 (the smallest normal f32 is `exp(-87.34)`).
const EXP_LO: f32 = -87.336_54;
/// Inputs above this are clamped, so that `round(x / ln 2) <= 127` (`exp(88.37)` is 2.4e38).
const EXP_HI: f32 = 88.376;

/// `exp(x)` as a polynomial; `#[inline(always)]` so that each dispatched copy vectorizes it.
#[inline(always)]
fn exp1(x: f32) -> f32 {
    const LOG2E: f32 = std::f32::consts::LOG2_E;
    // ln 2 split so that n * LN2_HI is exact for |n| < 2^9.
    const LN2_HI: f32 = 0.693_359_4;
    const LN2_LO: f32 = -2.121_944_4e-4;
    // Adding and subtracting 1.5 * 2^23 rounds to the nearest integer in any SIMD width.
    const ROUND: f32 = 12_582_912.0;
    let xc = x.clamp(EXP_LO, EXP_HI);
    let shifted = xc * LOG2E + ROUND;
    let n = shifted - ROUND;
    // n as an integer, read from the bits of `shifted` (ROUND + n, with n in its low
    // mantissa bits): integer lanes, where `n as i32`, which saturates, does not vectorize.
    let ni = shifted.to_bits() as i32 - ROUND.to_bits() as i32;
    let r = xc - n * LN2_HI - n * LN2_LO;
    let mut p = 1.987_569_1e-4;
    p = p * r + 1.398_199_9e-3;
    p = p * r + 8.333_452e-3;
    p = p * r + 4.166_579_6e-2;
    p = p * r + 1.666_666_5e-1;
    p = p * r + 5.000_000_1e-1;
    let e = p * r * r + r + 1.0;
    // 2^n for n in [-126, 127], written into the exponent bits.
    let y = e * f32::from_bits(((ni + 127) as u32) << 23);
    if x < EXP_LO {
        0.0
    } else {
        y
    }
}

/// Runs `$body` (a block over the arguments) in the widest SIMD copy the CPU supports.
macro_rules! dispatch {
    ($(#[$meta:meta])* fn $name:ident($($arg:ident: $ty:ty),*) $body:block) => {
        $(#[$meta])*
        pub fn $name($($arg: $ty),*) {
            #[inline(always)]
            fn kernel($($arg: $ty),*) $body
            #[cfg(target_arch = "x86_64")]
            {
                #[target_feature(enable = "avx512f")]
                fn avx512($($arg: $ty),*) { kernel($($arg),*) }
                #[target_feature(enable = "avx2,fma")]
                fn avx2($($arg: $ty),*) { kernel($($arg),*) }
                if std::arch::is_x86_feature_detected!("avx512f") {
                    // SAFETY: the CPU supports AVX-512F (checked on the line above).
                    return unsafe { avx512($($arg),*) };
                }
                if std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma") {
                    // SAFETY: the CPU supports AVX2 and FMA (checked on the line above).
                    return unsafe { avx2($($arg),*) };
                }
            }
            kernel($($arg),*)
        }
    };
}

dispatch! {
    /// `x <- exp(x)` for every element.
    fn exp_in_place(xs: &mut [f32]) {
        for v in xs.iter_mut() {
            *v = exp1(*v);
        }
    }
}

dispatch! {
    /// `h <- silu(h) u = h u / (1 + exp(-h))`, the SwiGLU gate, elementwise over equal slices.
    fn swiglu_gate_in_place(h: &mut [f32], u: &[f32]) {
        for (a, &b) in h.iter_mut().zip(u) {
            *a = *a * b / (1.0 + exp1(-*a));
        }
    }
}

/// `x <- exp(x - m)` for every element; returns the sum of the results.
#[inline(always)]
fn exp_shifted_sum(xs: &mut [f32], m: f32) -> f32 {
    // Sixteen partial sums so that the reduction vectorizes.
    let mut acc = [0.0f32; 16];
    let mut chunks = xs.chunks_exact_mut(16);
    for c in &mut chunks {
        for (v, a) in c.iter_mut().zip(acc.iter_mut()) {
            *v = exp1(*v - m);
            *a += *v;
        }
    }
    // The tail as one more vector, padded with -inf (whose exp is 0), rather than scalar
    // exps: the rows of a causal softmax have every length.
    let tail = chunks.into_remainder();
    if !tail.is_empty() {
        let mut pad = [f32::NEG_INFINITY; 16];
        pad[..tail.len()].copy_from_slice(tail);
        for (v, a) in pad.iter_mut().zip(acc.iter_mut()) {
            *v = exp1(*v - m);
            *a += *v;
        }
        tail.copy_from_slice(&pad[..tail.len()]);
    }
    acc.iter().sum::<f32>()
}

/// The largest element (`-inf` for an empty slice), in 16 independent lanes so that it
/// vectorizes; NaNs are skipped as `f32::max` skips them.
#[inline(always)]
fn max_of(xs: &[f32]) -> f32 {
    let mut lanes = [f32::NEG_INFINITY; 16];
    let mut chunks = xs.chunks_exact(16);
    for c in &mut chunks {
        for (l, &v) in lanes.iter_mut().zip(c) {
            *l = l.max(v);
        }
    }
    let tail = chunks.remainder().iter().fold(f32::NEG_INFINITY, |m, &v| m.max(v));
    lanes.iter().fold(tail, |m, &v| m.max(v))
}

dispatch! {
    /// In-place softmax of one f32 row; a row that is all `-inf` becomes zeros (the convention
    /// of [`crate::math::softmax`]). All three passes (max, exp and sum, scale) run in the
    /// dispatched copy.
    fn softmax_row(row: &mut [f32]) {
        let max = max_of(row);
        if max == f32::NEG_INFINITY {
            row.fill(0.0);
            return;
        }
        let inv = 1.0 / exp_shifted_sum(row, max);
        row.iter_mut().for_each(|v| *v *= inv);
    }
}

/// `a . b` over equal slices, in 16 independent lanes so that it vectorizes.
#[inline(always)]
fn dot(a: &[f32], b: &[f32]) -> f32 {
    let mut acc = [0.0f32; 16];
    let (ca, cb) = (a.chunks_exact(16), b.chunks_exact(16));
    let tail: f32 = ca.remainder().iter().zip(cb.remainder()).map(|(x, y)| x * y).sum();
    for (x, y) in ca.zip(cb) {
        for i in 0..16 {
            acc[i] = x[i].mul_add(y[i], acc[i]);
        }
    }
    acc.iter().sum::<f32>() + tail
}

dispatch! {
    /// Attention scores of a few query rows (a decode step): `out[r * n + j] = scale * q_r . k_j`
    /// for the `m = q.len() / d` rows of `q` and the `n = keys.len() / d` rows of `keys`, both
    /// row-major with `d` columns. Each key row is read once, for every query row while it is
    /// in L1, so that the keys need no transposed copy.
    fn scores_few_rows(q: &[f32], keys: &[f32], d: usize, scale: f32, out: &mut [f32]) {
        let n = keys.len() / d.max(1);
        for (j, k) in keys.chunks_exact(d.max(1)).enumerate() {
            for (r, qr) in q.chunks_exact(d.max(1)).enumerate() {
                out[r * n + j] = scale * dot(qr, k);
            }
        }
    }
}

dispatch! {
    /// The context of a few query rows: `out_r += sum_j p[r * n + j] v_j` for the `n =
    /// values.len() / d` rows of `values` and the `m = out.len() / d` rows of `out`; each value
    /// row is read once.
    fn context_few_rows(p: &[f32], values: &[f32], d: usize, out: &mut [f32]) {
        let n = values.len() / d.max(1);
        for (j, v) in values.chunks_exact(d.max(1)).enumerate() {
            for (r, o) in out.chunks_exact_mut(d.max(1)).enumerate() {
                let w = p[r * n + j];
                if w != 0.0 {
                    for (x, &y) in o.iter_mut().zip(v) {
                        *x = w.mul_add(y, *x);
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Distance in units in the last place between `a` and the f32 nearest to `want`.
    fn ulps(a: f32, want: f64) -> u32 {
        let w = want as f32;
        (a.to_bits() as i64 - w.to_bits() as i64).unsigned_abs() as u32
    }

    #[test]
    fn exp_is_within_two_ulp_of_f64_over_the_normal_range() {
        let n = 200_001;
        let mut xs: Vec<f32> = (0..n).map(|i| EXP_LO + (EXP_HI - EXP_LO) * i as f32 / (n - 1) as f32).collect();
        xs.extend([0.0, -0.0, 1e-8, -1e-8, 0.5, -0.5, 1.0, -1.0, 10.0, -10.0, 87.0, -87.0]);
        let mut ys = xs.clone();
        exp_in_place(&mut ys);
        let worst = xs.iter().zip(&ys).map(|(&x, &y)| ulps(y, (x as f64).exp())).max().unwrap_or(0);
        assert!(worst <= 2, "worst error {worst} ulp");
        // The baseline copy (no dispatch) agrees with the dispatched one bit for bit.
        for (&x, &y) in xs.iter().zip(&ys) {
            assert_eq!(exp1(x).to_bits(), y.to_bits(), "exp({x})");
        }
    }

    #[test]
    fn exp_saturates_at_both_ends() {
        let mut v = vec![f32::NEG_INFINITY, -1000.0, -88.0, 1000.0, f32::INFINITY];
        exp_in_place(&mut v);
        assert_eq!(&v[..3], &[0.0, 0.0, 0.0]);
        assert!(v[3].is_finite() && v[3] > 2.0e38 && v[4] == v[3], "{v:?}");
    }

    #[test]
    fn swiglu_gate_matches_f64() {
        let h: Vec<f32> = (0..1000).map(|i| (i as f32 - 500.0) * 0.07).collect();
        let u: Vec<f32> = (0..1000).map(|i| ((i * 37 % 101) as f32 - 50.0) * 0.03).collect();
        let mut got = h.clone();
        swiglu_gate_in_place(&mut got, &u);
        for ((&a, &b), &g) in h.iter().zip(&u).zip(&got) {
            let want = (a as f64) * (b as f64) / (1.0 + (-(a as f64)).exp());
            assert!((g as f64 - want).abs() <= 1e-6 * (1.0 + want.abs()), "silu({a}) * {b}: {g} vs {want}");
        }
    }

    #[test]
    fn softmax_row_matches_f64_and_keeps_masked_keys_at_zero() {
        for len in [1usize, 7, 16, 33, 512] {
            let mut row: Vec<f32> = (0..len).map(|i| ((i * 13 % 29) as f32 - 14.0) * 0.4).collect();
            row[len / 2] = f32::NEG_INFINITY;
            let x: Vec<f64> = row.iter().map(|&v| v as f64).collect();
            softmax_row(&mut row);
            let m = x.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
            let s: f64 = x.iter().map(|v| (v - m).exp()).sum();
            for (i, (&g, &v)) in row.iter().zip(&x).enumerate() {
                let want = if len == 1 { 0.0 } else { (v - m).exp() / s };
                assert!((g as f64 - want).abs() <= 1e-6 * want.max(1e-30) + 1e-12, "len {len} [{i}]: {g} vs {want}");
            }
        }
        let mut hidden = vec![f32::NEG_INFINITY; 4];
        softmax_row(&mut hidden);
        assert_eq!(hidden, vec![0.0; 4]);
    }
}
