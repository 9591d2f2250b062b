//! jetc's own f32 GEMM for x86-64 with AVX-512 or AVX2 + FMA: `c = (accumulate ? c : 0) +
//! alpha · a · b`, operands strided, `c` row-major.
//!
//! Why: the `gemm` crate, which the executor used for every product, compiles its AVX-512
//! kernels only with its `nightly` feature, so on a stable toolchain it runs 256-bit kernels
//! even where the CPU has 512-bit ones, and onnxruntime's MLAS prefilled 2-3x faster on such
//! a machine. AVX-512 intrinsics are stable since Rust 1.89.
//!
//! The layout is the classic one of BLIS and MLAS:
//! - `b` is packed in blocks of `KC` rows x `NC` columns, as panels of `NR` columns;
//! - `a` is packed in blocks of `MC` rows x `KC` columns, as panels of `MR` rows;
//! - a micro-kernel ([`avx512`], [`avx2`]) multiplies one A panel by one B panel into an
//!   `MR x NR` tile of accumulators held in registers;
//! - each block of `b` is packed once (threads share the panels); threads then take
//!   contiguous bands of rows of `c`, each packing its own blocks of `a`.
//!
//! Each element of `c` sums over `k` in the same order whatever the thread count or the
//! band it falls in, so results do not depend on the number of threads.
//!
//! [`sgemm`] returns `false` (and does nothing) where it does not apply: no such CPU, or a
//! product too small for a tile (decode's one-row products), so the caller falls back.
use std::cell::RefCell;
use std::sync::OnceLock;
use std::thread::LocalKey;

use rayon::prelude::*;

mod avx2;
mod avx512;

/// Rows of `k` per packed block. 512 ran 5-15% faster than 256 or 128 on the prefill and
/// training shapes (an AVX-512 B micro-panel of 512 x 32 is 64 KB, served from L2); fewer
/// passes over the tiles of `c` outweigh the larger panel.
const KC: usize = 512;
/// Columns per packed block of `b` (`KC x NC` floats: 8 MB, in L3).
const NC: usize = 4096;
/// Products at least this large (m·n·k) use several threads.
const PARALLEL_WORK: usize = 1 << 18;
/// Fewer rows than this go to the fallback (a tile would be mostly padding).
const MIN_ROWS: usize = 16;

/// The instruction set a micro-kernel needs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Isa {
    Avx512,
    Avx2,
}

impl Isa {
    /// `(MR, NR, MC)`: the tile's rows and columns, and the rows per packed block of `a`.
    fn tile(self) -> (usize, usize, usize) {
        match self {
            Isa::Avx512 => (avx512::MR, avx512::NR, avx512::MR * 16),
            Isa::Avx2 => (avx2::MR, avx2::NR, avx2::MR * 24),
        }
    }
}

/// The widest micro-kernel this CPU runs, found once (`JETC_GEMM=fallback` disables both, for
/// comparisons).
pub fn detected() -> Option<Isa> {
    static ISA: OnceLock<Option<Isa>> = OnceLock::new();
    *ISA.get_or_init(|| {
        if std::env::var("JETC_GEMM").is_ok_and(|v| v == "fallback") {
            return None;
        }
        #[cfg(target_arch = "x86_64")]
        {
            if std::arch::is_x86_feature_detected!("avx512f") {
                return Some(Isa::Avx512);
            }
            if std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma") {
                return Some(Isa::Avx2);
            }
        }
        None
    })
}

/// A strided operand: element (r, c) is at `data[r * rs + c * cs]`.
#[derive(Clone, Copy)]
pub struct Operand<'a> {
    pub data: &'a [f32],
    pub rs: usize,
    pub cs: usize,
}

impl Operand<'_> {
    fn fits(&self, rows: usize, cols: usize) -> bool {
        rows == 0 || cols == 0 || (rows - 1) * self.rs + (cols - 1) * self.cs < self.data.len()
    }
}

/// `c = (accumulate ? c : 0) + alpha · a · b` for `a` m×k, `b` k×n, `c` row-major m×n, on the
/// detected micro-kernel. Returns `false`, touching nothing, when it does not apply.
#[allow(clippy::too_many_arguments)]
pub fn sgemm(m: usize, n: usize, k: usize, a: Operand, b: Operand, c: &mut [f32], alpha: f32, accumulate: bool, threads: bool) -> bool {
    match detected() {
        Some(isa) => sgemm_with(isa, m, n, k, a, b, c, alpha, accumulate, threads),
        None => false,
    }
}

/// [`sgemm`] on a given micro-kernel (the tests run each one the CPU supports).
#[allow(clippy::too_many_arguments)]
pub fn sgemm_with(isa: Isa, m: usize, n: usize, k: usize, a: Operand, b: Operand, c: &mut [f32], alpha: f32, accumulate: bool, threads: bool) -> bool {
    let (mr, nr, mc_max) = isa.tile();
    if m < MIN_ROWS || n < nr || k == 0 || !a.fits(m, k) || !b.fits(k, n) || c.len() < m * n {
        return false;
    }
    let workers = if threads && m * n * k >= PARALLEL_WORK { rayon::current_num_threads().max(1) } else { 1 };
    // Bands of whole tiles of rows, one per worker; each packs its own blocks of `a`, all
    // share one packed block of `b`.
    let band = m.div_ceil(workers).div_ceil(mr) * mr;
    let c = &mut c[..m * n];
    let kc_max = KC.min(k);
    let nc_max = NC.min(n).div_ceil(nr) * nr;
    with_buffer(&PACK_B, kc_max * nc_max, |bbuf| {
    for jc in (0..n).step_by(NC) {
        let nc = NC.min(n - jc);
        let b_panels = nc.div_ceil(nr);
        for pc in (0..k).step_by(KC) {
            let kc = KC.min(k - pc);
            let bp = &mut bbuf[..b_panels * kc * nr];
            let pack = |(p, panel): (usize, &mut [f32])| pack_b_panel(b, pc, kc, jc + p * nr, nr.min(nc - p * nr), nr, panel);
            if workers > 1 {
                bp.par_chunks_mut(kc * nr).enumerate().for_each(pack);
            } else {
                bp.chunks_mut(kc * nr).enumerate().for_each(pack);
            }
            let bp = &*bp;
            // The first block of k overwrites c unless accumulating; later ones add.
            let load = accumulate || pc > 0;
            let run = |(i, cb): (usize, &mut [f32])| {
                let rows = cb.len() / n;
                let blk = Block { jc, nc, pc, kc, n, alpha, load };
                with_buffer(&PACK_A, mc_max.min(rows.div_ceil(mr) * mr) * kc, |abuf| band_product(isa, &blk, a, i * band, rows, bp, cb, abuf));
            };
            if workers > 1 && band < m {
                c.par_chunks_mut(band * n).enumerate().for_each(run);
            } else {
                run((0, &mut *c));
            }
        }
    }
    });
    true
}

thread_local! {
    /// Each thread's packing buffers, kept between products: a fresh buffer per product cost
    /// page faults and zeroing on every call (the packing writes every element it reads).
    static PACK_A: RefCell<Vec<f32>> = const { RefCell::new(Vec::new()) };
    static PACK_B: RefCell<Vec<f32>> = const { RefCell::new(Vec::new()) };
}

/// Runs `f` on `len` floats of this thread's buffer `key`, starting on a 64-byte boundary (a
/// cache line, a zmm load). A thread that is already using that buffer (a product run while
/// it waits inside another, as rayon does) gets a fresh one.
fn with_buffer<R>(key: &'static LocalKey<RefCell<Vec<f32>>>, len: usize, f: impl FnOnce(&mut [f32]) -> R) -> R {
    key.with(|cell| {
        let mut own = Vec::new();
        let mut kept = cell.try_borrow_mut().ok();
        let v: &mut Vec<f32> = match kept.as_deref_mut() {
            Some(v) => v,
            None => &mut own,
        };
        if v.len() < len + 16 {
            v.resize(len + 16, 0.0);
        }
        let start = v.as_ptr().align_offset(64).min(16);
        f(&mut v[start..start + len])
    })
}

/// Where one packed block of `b` sits in the product.
#[derive(Clone, Copy)]
struct Block {
    jc: usize,
    nc: usize,
    pc: usize,
    kc: usize,
    /// Columns of `c` (its row stride).
    n: usize,
    alpha: f32,
    /// Add to `c` (not overwrite).
    load: bool,
}

/// Rows `r0..r0+rows` of the product against one packed block of `b` (`bp`), into `c`
/// (those rows of the whole `c`): blocks of `a` packed, then tiles.
#[allow(clippy::too_many_arguments)]
fn band_product(isa: Isa, blk: &Block, a: Operand, r0: usize, rows: usize, bp: &[f32], c: &mut [f32], abuf: &mut [f32]) {
    let (mr, nr, mc_max) = isa.tile();
    let Block { jc, nc, pc, kc, n, alpha, load } = *blk;
    let b_panels = nc.div_ceil(nr);
    let mut edge = [0.0f32; avx512::MR * avx512::NR];
    for ic in (0..rows).step_by(mc_max) {
        let mc = mc_max.min(rows - ic);
        let a_panels = mc.div_ceil(mr);
        let ap = &mut abuf[..a_panels * kc * mr];
        pack_a(a, r0 + ic, mc, pc, kc, mr, ap);
        for jr in 0..b_panels {
            let cols = nr.min(nc - jr * nr);
            let bpanel = &bp[jr * kc * nr..(jr + 1) * kc * nr];
            for ir in 0..a_panels {
                let tile_rows = mr.min(mc - ir * mr);
                let apanel = &ap[ir * kc * mr..(ir + 1) * kc * mr];
                let at = (ic + ir * mr) * n + jc + jr * nr;
                if tile_rows == mr && cols == nr {
                    tile(isa, kc, apanel, bpanel, &mut c[at..], n, alpha, load);
                } else {
                    // An edge tile: computed whole into a scratch tile, then the part inside
                    // c is added or stored.
                    tile(isa, kc, apanel, bpanel, &mut edge, nr, alpha, false);
                    for r in 0..tile_rows {
                        let dst = &mut c[at + r * n..at + r * n + cols];
                        let src = &edge[r * nr..r * nr + cols];
                        if load {
                            dst.iter_mut().zip(src).for_each(|(d, s)| *d += s);
                        } else {
                            dst.copy_from_slice(src);
                        }
                    }
                }
            }
        }
    }
}

/// One micro-kernel call, its slices checked against the tile's extent first.
#[allow(clippy::too_many_arguments)]
fn tile(isa: Isa, kc: usize, ap: &[f32], bp: &[f32], c: &mut [f32], ldc: usize, alpha: f32, load: bool) {
    let (mr, nr, _) = isa.tile();
    assert!(ap.len() >= kc * mr && bp.len() >= kc * nr && ldc >= nr && c.len() >= (mr - 1) * ldc + nr, "gemm tile out of bounds");
    match isa {
        // SAFETY: the CPU has the kernel's features (`detected`, or the caller of
        // `sgemm_with` checked), and the assert above keeps every access inside the slices.
        Isa::Avx512 => unsafe { avx512::kernel(kc, ap.as_ptr(), bp.as_ptr(), c.as_mut_ptr(), ldc, alpha, load) },
        Isa::Avx2 => unsafe { avx2::kernel(kc, ap.as_ptr(), bp.as_ptr(), c.as_mut_ptr(), ldc, alpha, load) },
    }
}

/// Rows `ic..ic+mc`, columns `pc..pc+kc` of `a` as panels of `mr` rows: element (r, kk) of
/// panel p at `p·kc·mr + kk·mr + r`; rows past `mc` are zero.
fn pack_a(a: Operand, ic: usize, mc: usize, pc: usize, kc: usize, mr: usize, out: &mut [f32]) {
    for (p, panel) in out.chunks_exact_mut(kc * mr).enumerate() {
        let rows = mr.min(mc - p * mr);
        if a.cs == 1 {
            // Each row's kc values as one slice (bounds checked once), written column by column.
            let srcs: Vec<&[f32]> = (0..rows)
                .map(|r| {
                    let base = (ic + p * mr + r) * a.rs + pc;
                    &a.data[base..base + kc]
                })
                .collect();
            for (kk, dst) in panel.chunks_exact_mut(mr).enumerate() {
                for (d, src) in dst.iter_mut().zip(&srcs) {
                    *d = src[kk];
                }
                dst[rows..].fill(0.0);
            }
        } else {
            // Transposed `a`: each column of the panel is contiguous in memory.
            for (kk, dst) in panel.chunks_exact_mut(mr).enumerate() {
                let base = (ic + p * mr) * a.rs + (pc + kk) * a.cs;
                for (r, d) in dst.iter_mut().enumerate().take(rows) {
                    *d = a.data[base + r * a.rs];
                }
                dst[rows..].fill(0.0);
            }
        }
    }
}

/// Rows `pc..pc+kc`, columns `j0..j0+cols` of `b` as one panel of `nr` columns: element
/// (kk, j) at `kk·nr + j`; columns past `cols` are zero.
fn pack_b_panel(b: Operand, pc: usize, kc: usize, j0: usize, cols: usize, nr: usize, panel: &mut [f32]) {
    if b.cs == 1 && cols == nr {
        // The common case, with the panel width known at compile time so that each row is a
        // few vector moves rather than a call to memcpy.
        match nr {
            32 => return pack_b_full::<32>(b, pc, kc, j0, panel),
            16 => return pack_b_full::<16>(b, pc, kc, j0, panel),
            _ => {}
        }
    }
    if b.cs == 1 {
        for kk in 0..kc {
            let base = (pc + kk) * b.rs + j0;
            let dst = &mut panel[kk * nr..(kk + 1) * nr];
            dst[..cols].copy_from_slice(&b.data[base..base + cols]);
            dst[cols..].fill(0.0);
        }
    } else {
        for j in 0..nr {
            if j >= cols {
                for kk in 0..kc {
                    panel[kk * nr + j] = 0.0;
                }
                continue;
            }
            let base = pc * b.rs + (j0 + j) * b.cs;
            for kk in 0..kc {
                panel[kk * nr + j] = b.data[base + kk * b.rs];
            }
        }
    }
}

/// [`pack_b_panel`] of a whole panel of `NR` columns of a row-major `b`.
fn pack_b_full<const NR: usize>(b: Operand, pc: usize, kc: usize, j0: usize, panel: &mut [f32]) {
    for (kk, dst) in panel.chunks_exact_mut(NR).take(kc).enumerate() {
        let base = (pc + kk) * b.rs + j0;
        // Both lengths are the constant NR, so the copy is inlined.
        dst.copy_from_slice(&b.data[base..base + NR]);
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn isas() -> Vec<Isa> {
        let mut v = Vec::new();
        #[cfg(target_arch = "x86_64")]
        {
            if std::arch::is_x86_feature_detected!("avx512f") {
                v.push(Isa::Avx512);
            }
            if std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma") {
                v.push(Isa::Avx2);
            }
        }
        v
    }

    fn values(n: usize, seed: u64) -> Vec<f32> {
        let mut s = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
        (0..n)
            .map(|_| {
                s ^= s << 13;
                s ^= s >> 7;
                s ^= s << 17;
                ((s >> 40) as f32 / (1u64 << 24) as f32) - 0.5
            })
            .collect()
    }

    /// The float64 product, `c0` scaled in when accumulating.
    #[allow(clippy::too_many_arguments)]
    fn oracle(m: usize, n: usize, k: usize, a: Operand, b: Operand, c0: &[f32], alpha: f32, accumulate: bool) -> Vec<f64> {
        let mut out = vec![0.0f64; m * n];
        for i in 0..m {
            for j in 0..n {
                let s: f64 = (0..k).map(|kk| a.data[i * a.rs + kk * a.cs] as f64 * b.data[kk * b.rs + j * b.cs] as f64).sum();
                out[i * n + j] = alpha as f64 * s + if accumulate { c0[i * n + j] as f64 } else { 0.0 };
            }
        }
        out
    }

    #[allow(clippy::too_many_arguments)]
    fn check(isa: Isa, m: usize, n: usize, k: usize, at: bool, bt: bool, alpha: f32, accumulate: bool, threads: bool) {
        let (av, bv) = (values(m * k, 1 + m as u64), values(k * n, 2 + n as u64));
        let a = if at { Operand { data: &av, rs: 1, cs: m } } else { Operand { data: &av, rs: k, cs: 1 } };
        let b = if bt { Operand { data: &bv, rs: 1, cs: k } } else { Operand { data: &bv, rs: n, cs: 1 } };
        let c0 = values(m * n, 3);
        let mut c = c0.clone();
        assert!(sgemm_with(isa, m, n, k, a, b, &mut c, alpha, accumulate, threads), "{isa:?} {m}x{n}x{k} declined");
        let want = oracle(m, n, k, a, b, &c0, alpha, accumulate);
        for (i, (&g, &w)) in c.iter().zip(&want).enumerate() {
            let tol = 1e-5 * (k as f64).sqrt() * (1.0 + w.abs());
            assert!((g as f64 - w).abs() <= tol, "{isa:?} {m}x{n}x{k} at={at} bt={bt} acc={accumulate} [{}, {}]: {g} vs {w}", i / n, i % n);
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(48))]
        #[test]
        fn every_kernel_matches_f64(m in 16usize..80, n in 32usize..110, k in 1usize..300, at: bool, bt: bool, accumulate: bool, alpha in -2.0f32..2.0) {
            for isa in isas() {
                check(isa, m, n, k, at, bt, alpha, accumulate, false);
            }
        }
    }

    #[test]
    fn blocks_bands_and_threads_give_the_same_bits() {
        for isa in isas() {
            // Several KC and NC blocks, several MC blocks, edge tiles on both sides.
            let (m, n, k) = (203, 4096 + 45, 2 * KC + 17);
            check(isa, m, n, k, false, true, 0.5, true, true);
            let (av, bv) = (values(m * k, 7), values(k * n, 8));
            let (a, b) = (Operand { data: &av, rs: k, cs: 1 }, Operand { data: &bv, rs: n, cs: 1 });
            let mut one = vec![0.0f32; m * n];
            let mut many = vec![0.0f32; m * n];
            assert!(sgemm_with(isa, m, n, k, a, b, &mut one, 1.0, false, false));
            assert!(sgemm_with(isa, m, n, k, a, b, &mut many, 1.0, false, true));
            assert!(one.iter().zip(&many).all(|(x, y)| x.to_bits() == y.to_bits()), "{isa:?}: threads changed the result");
        }
    }

    #[test]
    fn declines_what_it_does_not_cover() {
        for isa in isas() {
            let v = values(64 * 64, 1);
            let op = Operand { data: &v, rs: 64, cs: 1 };
            let mut c = vec![0.0f32; 64 * 64];
            // One row (decode), k = 0, and operands too short for their shapes.
            assert!(!sgemm_with(isa, 1, 64, 64, op, op, &mut c, 1.0, false, false));
            assert!(!sgemm_with(isa, 64, 64, 0, op, op, &mut c, 1.0, false, false));
            assert!(!sgemm_with(isa, 64, 64, 65, op, op, &mut c, 1.0, false, false));
            assert!(c.iter().all(|&x| x == 0.0));
        }
    }
}
