//! The AVX-512 micro-kernel: a 12 x 32 tile of `c` in 24 zmm accumulators; per step of `k`,
//! two loads of the B panel, twelve broadcasts of the A panel and 24 FMAs.
#[cfg(target_arch = "x86_64")]
use std::arch::x86_64::*;

/// Rows of the tile.
pub const MR: usize = 12;
/// Columns of the tile (two 16-lane registers).
pub const NR: usize = 32;

/// `c[r·ldc + j] = (load ? c : 0) + alpha · Σ_p a[p·MR + r] · b[p·NR + j]` for the 12 x 32 tile.
///
/// # Safety
/// The CPU supports AVX-512F; `a` holds `kc·MR`, `b` `kc·NR` floats, and `c` reaches
/// `(MR - 1)·ldc + NR` floats.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
pub unsafe fn kernel(kc: usize, a: *const f32, b: *const f32, c: *mut f32, ldc: usize, alpha: f32, load: bool) {
    // The tile of c is read or written after the loop: fetch its lines meanwhile.
    for r in 0..MR {
        _mm_prefetch::<_MM_HINT_T0>(c.add(r * ldc) as *const i8);
        _mm_prefetch::<_MM_HINT_T0>(c.add(r * ldc + 16) as *const i8);
    }
    let mut acc = [[_mm512_setzero_ps(); 2]; MR];
    for p in 0..kc {
        let bp = b.add(p * NR);
        let (b0, b1) = (_mm512_loadu_ps(bp), _mm512_loadu_ps(bp.add(16)));
        let ap = a.add(p * MR);
        for (r, row) in acc.iter_mut().enumerate() {
            let av = _mm512_set1_ps(*ap.add(r));
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
pub unsafe fn kernel(_: usize, _: *const f32, _: *const f32, _: *mut f32, _: usize, _: f32, _: bool) {
    unreachable!("the AVX-512 kernel exists only on x86-64")
}
