//! The AVX-512 micro-kernel: a 12 x 32 tile of `c` in 24 zmm accumulators; per step of `k`,
//! two loads of the B panel, twelve broadcasts from the rows of `a` and 24 FMAs. With
//! `PACK` it also copies each step's 32 values of `b` from their place in the matrix into the
//! packed panel, so that the first tile of a panel packs it (no separate pass over `b`).
#[cfg(target_arch = "x86_64")]
use std::arch::x86_64::*;

/// Rows of the tile.
pub const MR: usize = 12;
/// Columns of the tile (two 16-lane registers).
pub const NR: usize = 32;
/// How many rows of `b` ahead the packing tile fetches.
const PREFETCH_ROWS: usize = 16;

/// `c[r·ldc + j] = (load ? c : 0) + alpha · Σ_p a[r·lda + p] · B[p][j]` for the 12 x 32 tile,
/// where `B[p][j]` is `panel[p·NR + j]`, or with `PACK` is `src[p·ldb + j]`, then also
/// written to `panel[p·NR + j]`.
///
/// # Safety
/// The CPU supports AVX-512F; row `r < MR` of `a` holds `kc` floats from `a + r·lda`;
/// `panel` holds `kc·NR` floats (writable with `PACK`); with `PACK`, `src + p·ldb` holds
/// `NR` floats for each `p < kc`; `c` reaches `(MR - 1)·ldc + NR` floats.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
#[allow(clippy::too_many_arguments)]
pub unsafe fn kernel<const PACK: bool>(kc: usize, a: *const f32, lda: usize, src: *const f32, ldb: usize, panel: *mut f32, c: *mut f32, ldc: usize, alpha: f32, load: bool) {
    // The tile of c is read or written after the loop: fetch its lines meanwhile.
    for r in 0..MR {
        _mm_prefetch::<_MM_HINT_T0>(c.add(r * ldc) as *const i8);
        _mm_prefetch::<_MM_HINT_T0>(c.add(r * ldc + 16) as *const i8);
    }
    let rows: [*const f32; MR] = std::array::from_fn(|r| a.add(r * lda));
    let mut acc = [[_mm512_setzero_ps(); 2]; MR];
    for p in 0..kc {
        let bp = panel.add(p * NR);
        let (b0, b1) = if PACK {
            let s = src.add(p * ldb);
            // Rows of `b` lie a page or more apart, where the hardware prefetchers do not
            // follow: fetch the row PREFETCH_ROWS ahead (it may lie past the panel; a
            // prefetch never faults).
            let ahead = s.wrapping_add(PREFETCH_ROWS * ldb);
            _mm_prefetch::<_MM_HINT_T0>(ahead as *const i8);
            _mm_prefetch::<_MM_HINT_T0>(ahead.wrapping_add(16) as *const i8);
            // The same row of the next panel (the next 128 bytes of memory) into L2: rows are
            // then read from DRAM 256 bytes at a time.
            _mm_prefetch::<_MM_HINT_T1>(ahead.wrapping_add(NR) as *const i8);
            _mm_prefetch::<_MM_HINT_T1>(ahead.wrapping_add(NR + 16) as *const i8);
            let v = (_mm512_loadu_ps(s), _mm512_loadu_ps(s.add(16)));
            _mm512_storeu_ps(bp, v.0);
            _mm512_storeu_ps(bp.add(16), v.1);
            v
        } else {
            (_mm512_loadu_ps(bp), _mm512_loadu_ps(bp.add(16)))
        };
        for (row, ar) in acc.iter_mut().zip(&rows) {
            let av = _mm512_set1_ps(*ar.add(p));
            row[0] = _mm512_fmadd_ps(av, b0, row[0]);
            row[1] = _mm512_fmadd_ps(av, b1, row[1]);
        }
    }
    let va = _mm512_set1_ps(alpha);
    for (r, row) in acc.iter().enumerate() {
        let cp = c.add(r * ldc);
        for (h, v) in row.iter().enumerate() {
            let dst = cp.add(h * 16);
            let y = if load { _mm512_fmadd_ps(*v, va, _mm512_loadu_ps(dst)) } else { _mm512_mul_ps(*v, va) };
            _mm512_storeu_ps(dst, y);
        }
    }
}

/// Never called: [`super::detected`] finds no AVX-512 off x86-64.
///
/// # Safety
/// None needed; it panics.
#[cfg(not(target_arch = "x86_64"))]
#[allow(clippy::too_many_arguments)]
pub unsafe fn kernel<const PACK: bool>(_: usize, _: *const f32, _: usize, _: *const f32, _: usize, _: *mut f32, _: *mut f32, _: usize, _: f32, _: bool) {
    unreachable!("the AVX-512 kernel exists only on x86-64")
}
