//! The AVX2 + FMA micro-kernel: a 6 x 16 tile of `c` in 12 ymm accumulators; per step of
//! `k`, two loads of the B panel, six broadcasts from the rows of `a` and 12 FMAs. With
//! `PACK` it also copies each step's 16 values of `b` into the packed panel (see [`super::avx512`]).
#[cfg(target_arch = "x86_64")]
use std::arch::x86_64::*;

/// Rows of the tile.
pub const MR: usize = 6;
/// Columns of the tile (two 8-lane registers).
pub const NR: usize = 16;

/// The 6 x 16 tile, as [`super::avx512::kernel`] describes for its 12 x 32 one.
///
/// # Safety
/// The CPU supports AVX2 and FMA; otherwise as [`super::avx512::kernel`] with this tile.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
#[allow(clippy::too_many_arguments)]
pub unsafe fn kernel<const PACK: bool>(kc: usize, a: *const f32, lda: usize, src: *const f32, ldb: usize, panel: *mut f32, c: *mut f32, ldc: usize, alpha: f32, load: bool) {
    let rows: [*const f32; MR] = std::array::from_fn(|r| a.add(r * lda));
    let mut acc = [[_mm256_setzero_ps(); 2]; MR];
    for p in 0..kc {
        let bp = panel.add(p * NR);
        let (b0, b1) = if PACK {
            let s = src.add(p * ldb);
            let v = (_mm256_loadu_ps(s), _mm256_loadu_ps(s.add(8)));
            _mm256_storeu_ps(bp, v.0);
            _mm256_storeu_ps(bp.add(8), v.1);
            v
        } else {
            (_mm256_loadu_ps(bp), _mm256_loadu_ps(bp.add(8)))
        };
        for (row, ar) in acc.iter_mut().zip(&rows) {
            let av = _mm256_broadcast_ss(&*ar.add(p));
            row[0] = _mm256_fmadd_ps(av, b0, row[0]);
            row[1] = _mm256_fmadd_ps(av, b1, row[1]);
        }
    }
    let va = _mm256_set1_ps(alpha);
    for (r, row) in acc.iter().enumerate() {
        let cp = c.add(r * ldc);
        for (h, v) in row.iter().enumerate() {
            let dst = cp.add(h * 8);
            let y = if load { _mm256_fmadd_ps(*v, va, _mm256_loadu_ps(dst)) } else { _mm256_mul_ps(*v, va) };
            _mm256_storeu_ps(dst, y);
        }
    }
}

/// Never called: [`super::detected`] finds no AVX2 off x86-64.
///
/// # Safety
/// None needed; it panics.
#[cfg(not(target_arch = "x86_64"))]
#[allow(clippy::too_many_arguments)]
pub unsafe fn kernel<const PACK: bool>(_: usize, _: *const f32, _: usize, _: *const f32, _: usize, _: *mut f32, _: *mut f32, _: usize, _: f32, _: bool) {
    unreachable!("the AVX2 kernel exists only on x86-64")
}
