//! Integer dot products for the decode path, as llama.cpp computes them: each row of `x` is
//! quantized to 8 bits per block of 32 (`d = max|x| / 127`, `q = round(x / d)`), and a block
//! of Q4_0, Q4_1 or Q8_0 weights is dotted with it in integers, the block scales applied once
//! to the integer sum:
//! - Q4_0 (`w = dw (n - 8)`): `dw dx (sum n q - 8 sum q)`;
//! - Q4_1 (`w = dw n + mw`): `dw dx sum n q + mw dx sum q`;
//! - Q8_0 (`w = dw c`): `dw dx sum c q`.
//!
//! Why: de-quantizing every weight to f32 costs more arithmetic than reading it, so the f32
//! kernels run below the memory bandwidth; 8-bit products (AVX2 `maddubs`) do 32 weights in
//! a few instructions. The price is the rounding of `x` (about 0.4% per element), so this
//! path is opt-in ([`set_int8_dot`]): the f32-activation kernels stay the exact default.
//! The integer sums are exact, so the AVX2 code and the portable code agree to the last bit
//! of each block's integer sum; only the f32 accumulation of the scaled block sums differs
//! in order.
use std::sync::atomic::{AtomicBool, Ordering};

use half::f16;
use jetc_ir::blocks::BlockFormat;

static INT8_DOT: AtomicBool = AtomicBool::new(false);

/// Turns the integer-dot decode path on or off for this process (off by default).
pub fn set_int8_dot(on: bool) {
    INT8_DOT.store(on, Ordering::Relaxed);
}

/// Whether the integer-dot path is on.
pub fn int8_dot() -> bool {
    INT8_DOT.load(Ordering::Relaxed)
}

/// Whether the integer path has a kernel for `format` with rows of `cols` elements.
pub fn supports(format: BlockFormat, cols: usize) -> bool {
    matches!(format, BlockFormat::Q4_0 | BlockFormat::Q4_1 | BlockFormat::Q8_0) && cols.is_multiple_of(32)
}

/// Rows of `x` quantized to 8 bits per block of 32.
pub struct Q8Rows {
    pub cols: usize,
    /// `rows · cols` quants.
    pub qs: Vec<i8>,
    /// One scale per block (`rows · cols / 32`).
    pub d: Vec<f32>,
    /// The sum of each block's quants.
    pub sums: Vec<i32>,
}

impl Q8Rows {
    /// Quantizes `rows` rows of `cols` (a multiple of 32) elements of `x`.
    pub fn new(x: &[f32], rows: usize, cols: usize) -> Q8Rows {
        let blocks = rows * cols / 32;
        let (mut qs, mut d, mut sums) = (vec![0i8; rows * cols], Vec::with_capacity(blocks), Vec::with_capacity(blocks));
        for (xb, qb) in x[..rows * cols].chunks_exact(32).zip(qs.chunks_exact_mut(32)) {
            let amax = xb.iter().fold(0.0f32, |m, v| m.max(v.abs()));
            let scale = amax / 127.0;
            let inv = if scale > 0.0 { 1.0 / scale } else { 0.0 };
            let mut s = 0i32;
            for (q, &v) in qb.iter_mut().zip(xb) {
                *q = (v * inv).round().clamp(-127.0, 127.0) as i8;
                s += *q as i32;
            }
            d.push(scale);
            sums.push(s);
        }
        Q8Rows { cols, qs, d, sums }
    }

    /// The f32 values the quants stand for (`d q`), for reference checks.
    pub fn values(&self) -> Vec<f32> {
        self.qs.iter().enumerate().map(|(i, &q)| self.d[i / 32] * q as f32).collect()
    }
}

fn f16_at(b: &[u8], i: usize) -> f32 {
    f16::from_bits(u16::from_le_bytes([b[i], b[i + 1]])).to_f32()
}

/// Bytes of one block of `format` (the formats of [`supports`]).
fn block_bytes(format: BlockFormat) -> usize {
    match format {
        BlockFormat::Q4_0 => 18,
        BlockFormat::Q4_1 => 20,
        _ => 34,
    }
}

/// `out[(j - j0) · mb + i] = x_i · W_j` for rows `j0..` of `W` (as many as `out` holds) and
/// the `mb` quantized rows of `x`; AVX2 where the CPU has it.
pub fn row_dots(format: BlockFormat, data: &[u8], row_bytes: usize, j0: usize, x: &Q8Rows, mb: usize, out: &mut [f32]) {
    #[cfg(target_arch = "x86_64")]
    {
        if has_avx2() {
            // SAFETY: the CPU has AVX2, FMA and F16C (checked); the rows lie in `data` and `x` holds
            // `mb` rows of `cols` quants, as the caller's matrix guarantees.
            unsafe { avx2::row_dots(format, data, row_bytes, j0, x, mb, out) };
            return;
        }
    }
    row_dots_portable(format, data, row_bytes, j0, x, mb, out)
}

#[cfg(target_arch = "x86_64")]
fn has_avx2() -> bool {
    static HAS: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *HAS.get_or_init(|| {
        std::arch::is_x86_feature_detected!("avx2")
            && std::arch::is_x86_feature_detected!("fma")
            && std::arch::is_x86_feature_detected!("f16c")
            && std::env::var("JETC_GEMM").map_or(true, |v| v != "fallback")
    })
}

/// [`row_dots`] in plain Rust.
pub fn row_dots_portable(format: BlockFormat, data: &[u8], row_bytes: usize, j0: usize, x: &Q8Rows, mb: usize, out: &mut [f32]) {
    let (k, bb) = (x.cols, block_bytes(format));
    let blocks = k / 32;
    for (r, o) in out.chunks_exact_mut(mb).enumerate() {
        let row = &data[(j0 + r) * row_bytes..(j0 + r + 1) * row_bytes];
        for (i, oi) in o.iter_mut().enumerate() {
            let mut acc = 0.0f32;
            for b in 0..blocks {
                let blk = &row[b * bb..(b + 1) * bb];
                let xq = &x.qs[i * k + b * 32..i * k + b * 32 + 32];
                let (dx, sx) = (x.d[i * blocks + b], x.sums[i * blocks + b]);
                acc += match format {
                    BlockFormat::Q4_0 | BlockFormat::Q4_1 => {
                        let off = if format == BlockFormat::Q4_0 { 2 } else { 4 };
                        let qs = &blk[off..off + 16];
                        let mut isum = 0i32;
                        for j in 0..16 {
                            isum += (qs[j] & 0x0F) as i32 * xq[j] as i32 + (qs[j] >> 4) as i32 * xq[j + 16] as i32;
                        }
                        let dw = f16_at(blk, 0);
                        if format == BlockFormat::Q4_0 {
                            dw * dx * (isum - 8 * sx) as f32
                        } else {
                            dw * dx * isum as f32 + f16_at(blk, 2) * dx * sx as f32
                        }
                    }
                    _ => {
                        let isum: i32 = blk[2..34].iter().zip(xq).map(|(&c, &q)| (c as i8) as i32 * q as i32).sum();
                        f16_at(blk, 0) * dx * isum as f32
                    }
                };
            }
            *oi = acc;
        }
    }
}

#[cfg(target_arch = "x86_64")]
mod avx2 {
    use std::arch::x86_64::*;

    use jetc_ir::blocks::BlockFormat;

    use super::{block_bytes, Q8Rows};

    /// The f16 at byte `i` of `b`, converted by F16C.
    #[target_feature(enable = "avx2,fma,f16c")]
    #[inline]
    unsafe fn f16_at(b: &[u8], i: usize) -> f32 {
        _mm_cvtss_f32(_mm_cvtph_ps(_mm_cvtsi32_si128(u16::from_le_bytes([b[i], b[i + 1]]) as i32)))
    }

    /// The integer sum of one block's 32 quants of `W` with 32 quants of `x`, as 8 i32 lanes.
    /// Q4: nibbles (unsigned, 0..15) times signed `x`; Q8_0: signed times signed through
    /// `sign` (|w| times x carrying w's sign), as `maddubs` needs an unsigned operand.
    #[target_feature(enable = "avx2,fma,f16c")]
    #[inline]
    unsafe fn block_isum<const Q8: bool>(w: *const u8, x: *const i8) -> __m256i {
        let xv = _mm256_loadu_si256(x as *const __m256i);
        let ones = _mm256_set1_epi16(1);
        let prod = if Q8 {
            let wv = _mm256_loadu_si256(w as *const __m256i);
            _mm256_maddubs_epi16(_mm256_sign_epi8(wv, wv), _mm256_sign_epi8(xv, wv))
        } else {
            let packed = _mm_loadu_si128(w as *const __m128i);
            let mask = _mm_set1_epi8(0x0F);
            let lo = _mm_and_si128(packed, mask);
            let hi = _mm_and_si128(_mm_srli_epi16(packed, 4), mask);
            let wv = _mm256_set_m128i(hi, lo);
            _mm256_maddubs_epi16(wv, xv)
        };
        _mm256_madd_epi16(prod, ones)
    }

    #[target_feature(enable = "avx2,fma,f16c")]
    #[inline]
    unsafe fn hsum(v: __m256) -> f32 {
        let s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
        let s = _mm_add_ps(s, _mm_movehl_ps(s, s));
        let s = _mm_add_ss(s, _mm_shuffle_ps(s, s, 1));
        _mm_cvtss_f32(s)
    }

    /// As [`super::row_dots`]: four rows of `W` at a time (four independent sums, so that
    /// the multiply-adds of one block overlap), each against every row of `x`.
    ///
    /// # Safety
    /// The CPU supports AVX2, FMA and F16C; rows `j0 .. j0 + out.len() / mb` of `row_bytes`
    /// bytes lie in `data`; `x` holds at least `mb` rows.
    #[target_feature(enable = "avx2,fma,f16c")]
    pub unsafe fn row_dots(format: BlockFormat, data: &[u8], row_bytes: usize, j0: usize, x: &Q8Rows, mb: usize, out: &mut [f32]) {
        let n = out.len() / mb;
        let mut r = 0;
        while r + 4 <= n {
            rows::<4>(format, data, row_bytes, j0 + r, x, mb, &mut out[r * mb..(r + 4) * mb]);
            r += 4;
        }
        while r < n {
            rows::<1>(format, data, row_bytes, j0 + r, x, mb, &mut out[r * mb..(r + 1) * mb]);
            r += 1;
        }
    }

    #[target_feature(enable = "avx2,fma,f16c")]
    #[inline]
    unsafe fn rows<const R: usize>(format: BlockFormat, data: &[u8], row_bytes: usize, j0: usize, x: &Q8Rows, mb: usize, out: &mut [f32]) {
        let (k, bb) = (x.cols, block_bytes(format));
        let blocks = k / 32;
        let q8 = format == BlockFormat::Q8_0;
        let quants_at = if format == BlockFormat::Q4_1 { 4 } else { 2 };
        let wrows: [&[u8]; R] = std::array::from_fn(|q| &data[(j0 + q) * row_bytes..(j0 + q + 1) * row_bytes]);
        for i in 0..mb {
            let mut acc = [_mm256_setzero_ps(); R];
            let mut extra = [0.0f32; R];
            for b in 0..blocks {
                let xq = x.qs.as_ptr().add(i * k + b * 32);
                let dx = x.d[i * blocks + b];
                let sx = x.sums[i * blocks + b] as f32;
                for q in 0..R {
                    let blk = &wrows[q][b * bb..(b + 1) * bb];
                    let isum = if q8 { block_isum::<true>(blk.as_ptr().add(2), xq) } else { block_isum::<false>(blk.as_ptr().add(quants_at), xq) };
                    let dw = f16_at(blk, 0);
                    acc[q] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(isum), _mm256_set1_ps(dw * dx), acc[q]);
                    match format {
                        BlockFormat::Q4_0 => extra[q] -= 8.0 * dw * dx * sx,
                        BlockFormat::Q4_1 => extra[q] += f16_at(blk, 2) * dx * sx,
                        _ => {}
                    }
                }
            }
            for q in 0..R {
                out[q * mb + i] = hsum(acc[q]) + extra[q];
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn next(state: &mut u64) -> u32 {
        *state = state.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        (*state >> 33) as u32
    }

    /// Random blocks with moderate f16 scales (random bits could be NaN).
    fn blocks_of(format: BlockFormat, rows: usize, cols: usize, seed: u64) -> Vec<u8> {
        let mut s = seed;
        let bb = block_bytes(format);
        let mut out: Vec<u8> = (0..rows * cols / 32 * bb).map(|_| next(&mut s) as u8).collect();
        for blk in out.chunks_exact_mut(bb) {
            let scales: &[usize] = if format == BlockFormat::Q4_1 { &[0, 2] } else { &[0] };
            for &o in scales {
                let v = f16::from_f32((next(&mut s) % 2000) as f32 / 1e5 - 0.01);
                blk[o..o + 2].copy_from_slice(&v.to_le_bytes());
            }
        }
        out
    }

    /// f64 product of the reference-decoded weights with the values the quantized `x`
    /// stands for: what the integer path must compute, up to f32 rounding of the scales.
    fn oracle(format: BlockFormat, data: &[u8], rows: usize, cols: usize, xq: &Q8Rows, mb: usize) -> Vec<f64> {
        let mut w = vec![0.0f32; rows * cols];
        format.decode(data, &mut w);
        let xv = xq.values();
        let mut out = vec![0.0f64; rows * mb];
        for j in 0..rows {
            for i in 0..mb {
                out[j * mb + i] = (0..cols).map(|c| w[j * cols + c] as f64 * xv[i * cols + c] as f64).sum();
            }
        }
        out
    }

    #[test]
    fn integer_dots_match_the_f64_product_of_what_they_stand_for() {
        for format in [BlockFormat::Q4_0, BlockFormat::Q4_1, BlockFormat::Q8_0] {
            for (rows, cols, mb) in [(7, 32, 1), (5, 96, 3), (16, 576, 4)] {
                let data = blocks_of(format, rows, cols, rows as u64 * 31 + cols as u64);
                let mut s = 99;
                let x: Vec<f32> = (0..mb * cols).map(|_| (next(&mut s) % 20001) as f32 / 1e4 - 1.0).collect();
                let xq = Q8Rows::new(&x, mb, cols);
                let want = oracle(format, &data, rows, cols, &xq, mb);
                let row_bytes = cols / 32 * block_bytes(format);
                let scale = want.iter().fold(0.0f64, |m, v| m.max(v.abs())).max(1e-30);
                type Dots = fn(BlockFormat, &[u8], usize, usize, &Q8Rows, usize, &mut [f32]);
                let kernels: [(&str, Dots); 2] = [("dispatched", row_dots), ("portable", row_dots_portable)];
                for (name, f) in kernels {
                    let mut got = vec![0.0f32; rows * mb];
                    f(format, &data, row_bytes, 0, &xq, mb, &mut got);
                    let err = got.iter().zip(&want).map(|(g, w)| (*g as f64 - w).abs()).fold(0.0, f64::max) / scale;
                    assert!(err < 1e-5, "{format} {rows}x{cols} mb {mb} {name}: relative error {err}");
                }
            }
        }
    }

    #[test]
    fn quantized_x_is_within_half_a_step_of_x() {
        let x: Vec<f32> = (0..64).map(|i| ((i * 37) % 29) as f32 / 7.0 - 2.0).collect();
        let q = Q8Rows::new(&x, 2, 32);
        let v = q.values();
        for (b, (xs, vs)) in x.chunks(32).zip(v.chunks(32)).enumerate() {
            let step = q.d[b];
            assert!(step > 0.0);
            for (a, c) in xs.iter().zip(vs) {
                assert!((a - c).abs() <= 0.5 * step * 1.0001, "block {b}: {a} vs {c} (step {step})");
            }
            let s: i32 = q.qs[b * 32..(b + 1) * 32].iter().map(|&x| x as i32).sum();
            assert_eq!(s, q.sums[b]);
        }
        let zeros = Q8Rows::new(&[0.0; 32], 1, 32);
        assert!(zeros.qs.iter().all(|&q| q == 0) && zeros.d[0] == 0.0);
    }
}
