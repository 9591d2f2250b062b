//! AVX2 + FMA dot products of stored rows, the same formats and order of operations as
//! [`super::avx512`] with 8-lane vectors: a 32-element chunk is four vectors, summed into two
//! running sums per row of `x` (vectors 0 and 2, 1 and 3); two rows of `W` side by side for
//! one or two rows of `x`, one row for more (16 registers).
use std::arch::x86_64::*;

use jetc_ir::blocks::BlockFormat;

use super::QuantMatrix;

const Q4_0: u8 = 0;
const Q4_1: u8 = 1;
const Q5_0: u8 = 2;
const Q5_1: u8 = 3;
const Q8_0: u8 = 4;
const F16: u8 = 5;
const BF16: u8 = 6;

/// As [`super::avx512::row_dots`].
///
/// # Safety
/// The CPU supports AVX2, FMA and F16C; `x` holds `mb · cols` floats; `out.len()` is a
/// multiple of `mb`, with `j0 + out.len() / mb <= rows`.
#[target_feature(enable = "avx2,fma,f16c")]
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
#[target_feature(enable = "avx2,fma,f16c")]
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

#[target_feature(enable = "avx2,fma,f16c")]
#[inline]
unsafe fn decode_rows_as<const F: u8>(w: &QuantMatrix, r0: usize, r1: usize, out: &mut [f32]) {
    let k = w.cols;
    let (chunks, tail, cb) = (k / 32, k % 32, chunk_bytes::<F>());
    for (r, o) in (r0..r1).zip(out.chunks_exact_mut(k)) {
        let row = w.row(r);
        for c in 0..chunks {
            // SAFETY: chunk c lies inside the row; o holds k >= 32·(c + 1) floats.
            let v = decode::<F>(row.as_ptr().add(c * cb));
            for (q, vq) in v.iter().enumerate() {
                _mm256_storeu_ps(o.as_mut_ptr().add(c * 32 + 8 * q), *vq);
            }
        }
        if tail > 0 {
            w.format.decode(&row[chunks * cb..], &mut o[chunks * 32..]);
        }
    }
}

#[target_feature(enable = "avx2,fma,f16c")]
#[inline]
unsafe fn by_batch<const F: u8>(w: &QuantMatrix, j0: usize, x: &[f32], mb: usize, out: &mut [f32]) {
    match mb {
        1 => rows::<F, 1, 2>(w, j0, x, out),
        2 => rows::<F, 2, 2>(w, j0, x, out),
        3 => rows::<F, 3, 1>(w, j0, x, out),
        _ => rows::<F, 4, 1>(w, j0, x, out),
    }
}

/// `R` (1 or 2) rows of `W` at a time.
#[target_feature(enable = "avx2,fma,f16c")]
#[inline]
unsafe fn rows<const F: u8, const M: usize, const R: usize>(w: &QuantMatrix, j0: usize, x: &[f32], out: &mut [f32]) {
    let n = out.len() / M;
    let mut r = 0;
    if R == 2 {
        while r + 2 <= n {
            let sums = group::<F, M, 2>(w, [w.row(j0 + r), w.row(j0 + r + 1)], x);
            out[r * M..(r + 2) * M].copy_from_slice(sums.as_flattened());
            r += 2;
        }
    }
    while r < n {
        let sums = group::<F, M, 1>(w, [w.row(j0 + r)], x);
        out[r * M..(r + 1) * M].copy_from_slice(&sums[0]);
        r += 1;
    }
}

#[target_feature(enable = "avx2,fma,f16c")]
#[inline]
unsafe fn group<const F: u8, const M: usize, const R: usize>(w: &QuantMatrix, wrows: [&[u8]; R], x: &[f32]) -> [[f32; M]; R] {
    let k = w.cols;
    let (chunks, tail) = (k / 32, k % 32);
    let cb = chunk_bytes::<F>();
    let xp = x.as_ptr();
    let mut acc = [[[_mm256_setzero_ps(); 2]; M]; R];
    for c in 0..chunks {
        for q in 0..R {
            // SAFETY: chunk c of a row ends at (c + 1)·cb <= the row's bytes.
            let v = decode::<F>(wrows[q].as_ptr().add(c * cb));
            for (i, a) in acc[q].iter_mut().enumerate() {
                // SAFETY: x holds M rows of k floats; c·32 + 32 <= k.
                let xv = xp.add(i * k + c * 32);
                a[0] = _mm256_fmadd_ps(v[0], _mm256_loadu_ps(xv), a[0]);
                a[1] = _mm256_fmadd_ps(v[1], _mm256_loadu_ps(xv.add(8)), a[1]);
                a[0] = _mm256_fmadd_ps(v[2], _mm256_loadu_ps(xv.add(16)), a[0]);
                a[1] = _mm256_fmadd_ps(v[3], _mm256_loadu_ps(xv.add(24)), a[1]);
            }
        }
    }
    let mut sums = [[0.0f32; M]; R];
    let mut rest = [0.0f32; 32];
    for q in 0..R {
        if tail > 0 {
            w.format.decode(&wrows[q][chunks * cb..], &mut rest[..tail]);
        }
        for i in 0..M {
            let mut lanes = [0.0f32; 8];
            _mm256_storeu_ps(lanes.as_mut_ptr(), _mm256_add_ps(acc[q][i][0], acc[q][i][1]));
            let mut s = lanes.iter().sum::<f32>();
            for (l, &v) in rest[..tail].iter().enumerate() {
                s += v * x[i * k + chunks * 32 + l];
            }
            sums[q][i] = s;
        }
    }
    sums
}

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

#[target_feature(enable = "avx2,fma,f16c")]
#[inline]
unsafe fn half_at(p: *const u8) -> f32 {
    let bits = u16::from_le_bytes([*p, *p.add(1)]);
    _mm_cvtss_f32(_mm_cvtph_ps(_mm_cvtsi32_si128(bits as i32)))
}

/// The 32 nibbles of 16 bytes (low ones are elements 0..16), widened to four vectors.
#[target_feature(enable = "avx2,fma,f16c")]
#[inline]
unsafe fn nibbles(qs: *const u8) -> [__m256i; 4] {
    let v = _mm_loadu_si128(qs as *const __m128i);
    let mask = _mm_set1_epi8(0x0F);
    let (lo, hi) = (_mm_and_si128(v, mask), _mm_and_si128(_mm_srli_epi16::<4>(v), mask));
    [
        _mm256_cvtepu8_epi32(lo),
        _mm256_cvtepu8_epi32(_mm_srli_si128::<8>(lo)),
        _mm256_cvtepu8_epi32(hi),
        _mm256_cvtepu8_epi32(_mm_srli_si128::<8>(hi)),
    ]
}

/// Adds 16 to the lanes of element e whose bit e is set in `qh`.
#[target_feature(enable = "avx2,fma,f16c")]
#[inline]
unsafe fn fifth_bit(mut q: [__m256i; 4], qh: u32) -> [__m256i; 4] {
    let lanes = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
    let one = _mm256_set1_epi32(1);
    for (v, qv) in q.iter_mut().enumerate() {
        let bits = _mm256_and_si256(_mm256_srlv_epi32(_mm256_set1_epi32((qh >> (8 * v)) as i32), lanes), one);
        *qv = _mm256_or_si256(*qv, _mm256_slli_epi32::<4>(bits));
    }
    q
}

#[target_feature(enable = "avx2,fma,f16c")]
#[inline]
unsafe fn decode<const F: u8>(b: *const u8) -> [__m256; 4] {
    let mut out = [_mm256_setzero_ps(); 4];
    match F {
        Q4_0 | Q5_0 => {
            // d * (q - 8), d * (q - 16)
            let d = _mm256_set1_ps(half_at(b));
            let (q, offset) = if F == Q4_0 {
                (nibbles(b.add(2)), 8)
            } else {
                let qh = u32::from_le_bytes([*b.add(2), *b.add(3), *b.add(4), *b.add(5)]);
                (fifth_bit(nibbles(b.add(6)), qh), 16)
            };
            let off = _mm256_set1_epi32(offset);
            for v in 0..4 {
                out[v] = _mm256_mul_ps(d, _mm256_cvtepi32_ps(_mm256_sub_epi32(q[v], off)));
            }
        }
        Q4_1 | Q5_1 => {
            // d * q + m
            let (d, m) = (_mm256_set1_ps(half_at(b)), _mm256_set1_ps(half_at(b.add(2))));
            let q = if F == Q4_1 {
                nibbles(b.add(4))
            } else {
                let qh = u32::from_le_bytes([*b.add(4), *b.add(5), *b.add(6), *b.add(7)]);
                fifth_bit(nibbles(b.add(8)), qh)
            };
            for v in 0..4 {
                out[v] = _mm256_add_ps(_mm256_mul_ps(d, _mm256_cvtepi32_ps(q[v])), m);
            }
        }
        Q8_0 => {
            // q * d
            let d = _mm256_set1_ps(half_at(b));
            for half in 0..2 {
                let v = _mm_loadu_si128(b.add(2 + 16 * half) as *const __m128i);
                out[2 * half] = _mm256_mul_ps(_mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(v)), d);
                out[2 * half + 1] = _mm256_mul_ps(_mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(_mm_srli_si128::<8>(v))), d);
            }
        }
        F16 => {
            for (v, o) in out.iter_mut().enumerate() {
                *o = _mm256_cvtph_ps(_mm_loadu_si128(b.add(16 * v) as *const __m128i));
            }
        }
        _ => {
            for (v, o) in out.iter_mut().enumerate() {
                let wide = _mm256_cvtepu16_epi32(_mm_loadu_si128(b.add(16 * v) as *const __m128i));
                *o = _mm256_castsi256_ps(_mm256_slli_epi32::<16>(wide));
            }
        }
    }
    out
}
