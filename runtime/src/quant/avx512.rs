//! AVX-512 dot products of stored rows of the 32-element formats (Q4_0, Q4_1, Q5_0, Q5_1,
//! Q8_0) and of the half floats (f16, bf16, in chunks of 32) with up to four rows of `x`.
//!
//! Each block is decoded into two vectors of 16 floats with the reference's operations in
//! the reference's order (`d * q + m` as a multiply, then an add), so the weights are
//! bit-identical to [`jetc_ir::blocks`]; each row keeps two running sums per row of `x`
//! (one per half block), and two rows of `W` go side by side, so that the FMAs of four
//! independent chains overlap.
use std::arch::x86_64::*;

use jetc_ir::blocks::BlockFormat;

use super::QuantMatrix;

/// The formats, as const parameters.
const Q4_0: u8 = 0;
const Q4_1: u8 = 1;
const Q5_0: u8 = 2;
const Q5_1: u8 = 3;
const Q8_0: u8 = 4;
const F16: u8 = 5;
const BF16: u8 = 6;

/// `out[(j - j0) · mb + i] = x_i · W_j` for the rows of `W` from `j0` that `out` holds;
/// `false`, touching nothing, for a format without a kernel here.
///
/// # Safety
/// The CPU supports AVX-512F and F16C; `x` holds `mb · cols` floats; `out.len()` is a
/// multiple of `mb`, with `j0 + out.len() / mb <= rows`.
#[target_feature(enable = "avx512f,f16c")]
pub unsafe fn row_dots(w: &QuantMatrix, j0: usize, x: &[f32], mb: usize, out: &mut [f32]) -> bool {
    match w.format {
        BlockFormat::Q4_0 => by_batch::<Q4_0>(w, j0, x, mb, out),
        BlockFormat::Q4_1 => by_batch::<Q4_1>(w, j0, x, mb, out),
        BlockFormat::Q5_0 => by_batch::<Q5_0>(w, j0, x, mb, out),
        BlockFormat::Q5_1 => by_batch::<Q5_1>(w, j0, x, mb, out),
        BlockFormat::Q8_0 => by_batch::<Q8_0>(w, j0, x, mb, out),
        BlockFormat::F16 => by_batch::<F16>(w, j0, x, mb, out),
        BlockFormat::BF16 => by_batch::<BF16>(w, j0, x, mb, out),
        _ => return false,
    }
    true
}

/// Rows `r0..r1` of `W` de-quantized into `out` (row-major), bit-identical to the
/// reference; `false`, touching nothing, for a format without a kernel here.
///
/// # Safety
/// The CPU supports the features enabled below; `r1 <= rows`, `out` holds `(r1 - r0) · cols`.
#[target_feature(enable = "avx512f,f16c")]
pub unsafe fn decode_rows(w: &QuantMatrix, r0: usize, r1: usize, out: &mut [f32]) -> bool {
    match w.format {
        BlockFormat::Q4_0 => decode_rows_as::<Q4_0>(w, r0, r1, out),
        BlockFormat::Q4_1 => decode_rows_as::<Q4_1>(w, r0, r1, out),
        BlockFormat::Q5_0 => decode_rows_as::<Q5_0>(w, r0, r1, out),
        BlockFormat::Q5_1 => decode_rows_as::<Q5_1>(w, r0, r1, out),
        BlockFormat::Q8_0 => decode_rows_as::<Q8_0>(w, r0, r1, out),
        BlockFormat::F16 => decode_rows_as::<F16>(w, r0, r1, out),
        BlockFormat::BF16 => decode_rows_as::<BF16>(w, r0, r1, out),
        _ => return false,
    }
    true
}

#[target_feature(enable = "avx512f,f16c")]
#[inline]
unsafe fn decode_rows_as<const F: u8>(w: &QuantMatrix, r0: usize, r1: usize, out: &mut [f32]) {
    let k = w.cols;
    let (chunks, tail, cb) = (k / 32, k % 32, chunk_bytes::<F>());
    for (r, o) in (r0..r1).zip(out.chunks_exact_mut(k)) {
        let row = w.row(r);
        for c in 0..chunks {
            // SAFETY: chunk c lies inside the row; o holds k >= 32·(c + 1) floats.
            let (lo, hi) = decode::<F>(row.as_ptr().add(c * cb));
            _mm512_storeu_ps(o.as_mut_ptr().add(c * 32), lo);
            _mm512_storeu_ps(o.as_mut_ptr().add(c * 32 + 16), hi);
        }
        if tail > 0 {
            w.format.decode(&row[chunks * cb..], &mut o[chunks * 32..]);
        }
    }
}

#[target_feature(enable = "avx512f,f16c")]
#[inline]
unsafe fn by_batch<const F: u8>(w: &QuantMatrix, j0: usize, x: &[f32], mb: usize, out: &mut [f32]) {
    match mb {
        1 => rows::<F, 1>(w, j0, x, out),
        2 => rows::<F, 2>(w, j0, x, out),
        3 => rows::<F, 3>(w, j0, x, out),
        _ => rows::<F, 4>(w, j0, x, out),
    }
}

#[target_feature(enable = "avx512f,f16c")]
#[inline]
unsafe fn rows<const F: u8, const M: usize>(w: &QuantMatrix, j0: usize, x: &[f32], out: &mut [f32]) {
    let n = out.len() / M;
    let mut r = 0;
    while r + 2 <= n {
        let sums = group::<F, M, 2>(w, [w.row(j0 + r), w.row(j0 + r + 1)], x);
        out[r * M..(r + 2) * M].copy_from_slice(sums.as_flattened());
        r += 2;
    }
    if r < n {
        let sums = group::<F, M, 1>(w, [w.row(j0 + r)], x);
        out[r * M..(r + 1) * M].copy_from_slice(&sums[0]);
    }
}

/// `R` stored rows dotted with `M` rows of `x`.
#[target_feature(enable = "avx512f,f16c")]
#[inline]
unsafe fn group<const F: u8, const M: usize, const R: usize>(w: &QuantMatrix, wrows: [&[u8]; R], x: &[f32]) -> [[f32; M]; R] {
    let k = w.cols;
    let (chunks, tail) = (k / 32, k % 32);
    let cb = chunk_bytes::<F>();
    let xp = x.as_ptr();
    let mut acc = [[[_mm512_setzero_ps(); 2]; M]; R];
    for c in 0..chunks {
        for q in 0..R {
            // SAFETY: chunk c of a row ends at (c + 1)·cb <= the row's bytes (k / 32 chunks).
            let (lo, hi) = decode::<F>(wrows[q].as_ptr().add(c * cb));
            for (i, a) in acc[q].iter_mut().enumerate() {
                // SAFETY: x holds M rows of k floats; c·32 + 32 <= k.
                let xv = xp.add(i * k + c * 32);
                a[0] = _mm512_fmadd_ps(lo, _mm512_loadu_ps(xv), a[0]);
                a[1] = _mm512_fmadd_ps(hi, _mm512_loadu_ps(xv.add(16)), a[1]);
            }
        }
    }
    let mut sums = [[0.0f32; M]; R];
    let mut rest = [0.0f32; 32];
    for q in 0..R {
        // A tail shorter than 32 exists only for the half floats (one element per block).
        if tail > 0 {
            w.format.decode(&wrows[q][chunks * cb..], &mut rest[..tail]);
        }
        for i in 0..M {
            let mut s = _mm512_reduce_add_ps(_mm512_add_ps(acc[q][i][0], acc[q][i][1]));
            for (l, &v) in rest[..tail].iter().enumerate() {
                s += v * x[i * k + chunks * 32 + l];
            }
            sums[q][i] = s;
        }
    }
    sums
}

/// Bytes of 32 elements.
const fn chunk_bytes<const F: u8>() -> usize {
    match F {
        Q4_0 => 18,
        Q4_1 => 20,
        Q5_0 => 22,
        Q5_1 => 24,
        Q8_0 => 34,
        _ => 64,
    }
}

/// The f16 at `p`, as f32.
#[target_feature(enable = "avx512f,f16c")]
#[inline]
unsafe fn half_at(p: *const u8) -> f32 {
    let bits = u16::from_le_bytes([*p, *p.add(1)]);
    _mm_cvtss_f32(_mm_cvtph_ps(_mm_cvtsi32_si128(bits as i32)))
}

/// The low and high nibbles of 16 bytes, widened to 32-bit lanes (elements 0..16, 16..32).
#[target_feature(enable = "avx512f,f16c")]
#[inline]
unsafe fn nibbles(qs: *const u8) -> (__m512i, __m512i) {
    let v = _mm_loadu_si128(qs as *const __m128i);
    let mask = _mm_set1_epi8(0x0F);
    (_mm512_cvtepu8_epi32(_mm_and_si128(v, mask)), _mm512_cvtepu8_epi32(_mm_and_si128(_mm_srli_epi16::<4>(v), mask)))
}

/// Adds 16 to the lanes whose bit is set in `qh` (the fifth bit of Q5 quants).
#[target_feature(enable = "avx512f,f16c")]
#[inline]
unsafe fn fifth_bit(q: (__m512i, __m512i), qh: u32) -> (__m512i, __m512i) {
    let sixteen = _mm512_set1_epi32(16);
    (_mm512_mask_or_epi32(q.0, qh as u16, q.0, sixteen), _mm512_mask_or_epi32(q.1, (qh >> 16) as u16, q.1, sixteen))
}

/// The 32 elements of the chunk at `b`, in two vectors.
#[target_feature(enable = "avx512f,f16c")]
#[inline]
unsafe fn decode<const F: u8>(b: *const u8) -> (__m512, __m512) {
    let cvt = _mm512_cvtepi32_ps;
    match F {
        Q4_0 => {
            // d * (q - 8)
            let d = _mm512_set1_ps(half_at(b));
            let (lo, hi) = nibbles(b.add(2));
            let eight = _mm512_set1_epi32(8);
            (_mm512_mul_ps(d, cvt(_mm512_sub_epi32(lo, eight))), _mm512_mul_ps(d, cvt(_mm512_sub_epi32(hi, eight))))
        }
        Q4_1 => {
            // d * q + m
            let (d, m) = (_mm512_set1_ps(half_at(b)), _mm512_set1_ps(half_at(b.add(2))));
            let (lo, hi) = nibbles(b.add(4));
            (_mm512_add_ps(_mm512_mul_ps(d, cvt(lo)), m), _mm512_add_ps(_mm512_mul_ps(d, cvt(hi)), m))
        }
        Q5_0 => {
            // d * (q - 16)
            let d = _mm512_set1_ps(half_at(b));
            let qh = u32::from_le_bytes([*b.add(2), *b.add(3), *b.add(4), *b.add(5)]);
            let (lo, hi) = fifth_bit(nibbles(b.add(6)), qh);
            let s = _mm512_set1_epi32(16);
            (_mm512_mul_ps(d, cvt(_mm512_sub_epi32(lo, s))), _mm512_mul_ps(d, cvt(_mm512_sub_epi32(hi, s))))
        }
        Q5_1 => {
            // d * q + m
            let (d, m) = (_mm512_set1_ps(half_at(b)), _mm512_set1_ps(half_at(b.add(2))));
            let qh = u32::from_le_bytes([*b.add(4), *b.add(5), *b.add(6), *b.add(7)]);
            let (lo, hi) = fifth_bit(nibbles(b.add(8)), qh);
            (_mm512_add_ps(_mm512_mul_ps(d, cvt(lo)), m), _mm512_add_ps(_mm512_mul_ps(d, cvt(hi)), m))
        }
        Q8_0 => {
            // q * d
            let d = _mm512_set1_ps(half_at(b));
            let lo = _mm512_cvtepi8_epi32(_mm_loadu_si128(b.add(2) as *const __m128i));
            let hi = _mm512_cvtepi8_epi32(_mm_loadu_si128(b.add(18) as *const __m128i));
            (_mm512_mul_ps(cvt(lo), d), _mm512_mul_ps(cvt(hi), d))
        }
        F16 => (
            _mm512_cvtph_ps(_mm256_loadu_si256(b as *const __m256i)),
            _mm512_cvtph_ps(_mm256_loadu_si256(b.add(32) as *const __m256i)),
        ),
        _ => {
            // bf16: the high half of an f32
            let lo = _mm512_cvtepu16_epi32(_mm256_loadu_si256(b as *const __m256i));
            let hi = _mm512_cvtepu16_epi32(_mm256_loadu_si256(b.add(32) as *const __m256i));
            (_mm512_castsi512_ps(_mm512_slli_epi32::<16>(lo)), _mm512_castsi512_ps(_mm512_slli_epi32::<16>(hi)))
        }
    }
}
