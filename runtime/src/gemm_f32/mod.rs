//! jetc's own f32 GEMM for x86-64 with AVX-512 or AVX2 + FMA: `c = (accumulate ? c : 0) +
//! alpha · a · b`, operands strided, `c` row-major.
//!
//! Why: the `gemm` crate, which the executor used for every product, compiles its AVX-512
//! kernels only with its `nightly` feature, so on a stable toolchain it runs 256-bit kernels
//! even where the CPU has 512-bit ones, and onnxruntime's MLAS prefilled 2-3x faster on such
//! a machine. AVX-512 intrinsics are stable since Rust 1.89.
//!
//! The layout follows BLIS and MLAS, with two changes that remove both packing passes:
//! - `b` is packed in blocks of up to `KC` rows x `GROUP` panels of `NR` columns, a group
//!   staying in L2. A row-major `b` is packed by the first tile that uses each panel: the
//!   micro-kernel copies the values it loads ([`avx512`], [`avx2`] with `PACK`), so reading
//!   `b` from memory overlaps with arithmetic instead of being a pass of its own;
//! - `a` is read in place, a strip of `MR` rows at a time (in L1 across the panels of a
//!   group); an `a` whose rows are not contiguous is first copied to a row-major buffer;
//! - a micro-kernel multiplies `MR` rows of `a` by one B panel into an `MR x NR` tile of
//!   accumulators held in registers;
//! - threads take contiguous ranges of whole panels (columns of `c`), each packing its own
//!   panels, so a product needs no synchronisation between threads until it ends.
//!
//! Each element of `c` sums over `k` in the same order whatever the thread count or the
//! range it falls in, so results do not depend on the number of threads.
//!
//! [`sgemm`] returns `false` (and does nothing) where it does not apply: no such CPU, or a
//! product too small for a tile (decode's one-row products), so the caller falls back.
use std::cell::RefCell;
use std::sync::OnceLock;
use std::thread::LocalKey;

use rayon::prelude::*;

mod avx2;
mod avx512;

/// Rows of `k` per block at most, AVX-512: with `a` read in place, fewer blocks mean fewer
/// passes over `c`, and 1024 ran 5-10% faster than 512 on the prefill of a 0.5B decoder (a
/// 1024 x 32 B panel is 128 KB and a block of `a` 576 KB, both in a 1 MB L2). AVX2 keeps 512,
/// for the smaller L2 of the CPUs that stop there.
const KC_AVX512: usize = 1024;
const KC_AVX2: usize = 512;
/// Panels of `b` per group packed together and kept in L2 (4 x 32 columns x 1024 rows is
/// 512 KB with AVX-512), while every strip of `MR` rows of `a` passes by.
const GROUP_AVX512: usize = 4;
const GROUP_AVX2: usize = 8;
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
    /// `(MR, NR, GROUP)`: the tile's rows and columns, and the panels per group of columns.
    fn tile(self) -> (usize, usize, usize) {
        match self {
            Isa::Avx512 => (avx512::MR, avx512::NR, GROUP_AVX512),
            Isa::Avx2 => (avx2::MR, avx2::NR, GROUP_AVX2),
        }
    }

    /// Rows of `k` per block for a product of depth `k`: the fewest blocks of at most this
    /// kernel's depth, of equal size (4864 as 5 x 973 rather than 4 x 1024 + 768).
    fn block_depth(self, k: usize) -> usize {
        let most = match self {
            Isa::Avx512 => KC_AVX512,
            Isa::Avx2 => KC_AVX2,
        };
        k.div_ceil(k.div_ceil(most).max(1))
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
    let (_, nr, _) = isa.tile();
    if m < MIN_ROWS || n < nr || k == 0 || !a.fits(m, k) || !b.fits(k, n) || c.len() < m * n {
        return false;
    }
    let parallel = threads && m * n * k >= PARALLEL_WORK;
    let product = Product { isa, m, n, k, b, alpha, accumulate, parallel };
    if a.cs == 1 {
        product.run(a.data, a.rs, &mut c[..m * n]);
    } else {
        // Rows of `a` not contiguous (a transposed operand): copied to row-major first.
        with_buffer(&ROW_MAJOR_A, m * k, |buf| {
            let copy = |(r, row): (usize, &mut [f32])| row.iter_mut().enumerate().for_each(|(kk, v)| *v = a.data[r * a.rs + kk * a.cs]);
            if parallel {
                buf.par_chunks_mut(k).enumerate().for_each(copy);
            } else {
                buf.chunks_mut(k).enumerate().for_each(copy);
            }
            product.run(buf, k, &mut c[..m * n]);
        });
    }
    true
}

/// One product, its operands checked; `a` comes to [`Product::run`] row-major.
struct Product<'a> {
    isa: Isa,
    m: usize,
    n: usize,
    k: usize,
    b: Operand<'a>,
    alpha: f32,
    accumulate: bool,
    parallel: bool,
}

/// The output matrix shared by the threads of one product, each writing its own columns.
#[derive(Clone, Copy)]
struct SharedOut(*mut f32);
// SAFETY: the threads of a product write disjoint column ranges of `c` (see `Product::run`),
// and the product returns only after all of them are done.
unsafe impl Send for SharedOut {}
unsafe impl Sync for SharedOut {}

impl Product<'_> {
    /// The whole product: ranges of whole panels of columns, one per thread.
    fn run(&self, a: &[f32], lda: usize, c: &mut [f32]) {
        let (_, nr, group) = self.isa.tile();
        let panels = self.n.div_ceil(nr);
        let workers = if self.parallel { rayon::current_num_threads().clamp(1, panels) } else { 1 };
        let per = panels.div_ceil(workers) * nr;
        let out = SharedOut(c.as_mut_ptr());
        let columns = |w: usize| {
            let (j0, j1) = (w * per, ((w + 1) * per).min(self.n));
            if j0 < j1 {
                with_buffer(&PACK_B, self.isa.block_depth(self.k) * group * nr, |bbuf| self.columns(a, lda, out, j0, j1, bbuf));
            }
        };
        if workers > 1 {
            (0..workers).into_par_iter().for_each(columns);
        } else {
            columns(0);
        }
    }

    /// Columns `j0..j1` of `c`, all rows, with this thread's packing buffer `bbuf`.
    ///
    /// The loop order is MLAS's: a group of panels, packed by the first strip of rows, stays in
    /// L2 while every strip of `MR` rows of `a` passes by; a strip (`MR x kc`, 48 KB at most)
    /// stays in L1 across the group's panels; the group's columns of `c` stay in L2 across the
    /// blocks of k. (Blocks of 144 rows of `a` in L2 with 2048 columns of `b` in L3 ran 4-9%
    /// slower at a 0.5B decoder's shapes.)
    fn columns(&self, a: &[f32], lda: usize, c: SharedOut, j0: usize, j1: usize, bbuf: &mut [f32]) {
        let (mr, nr, group) = self.isa.tile();
        let Product { m, n, k, b, alpha, accumulate, .. } = *self;
        // Edge tiles: the rows of `a` past `m` as zeros, the tile of `c` as scratch.
        let kc_max = self.isa.block_depth(k);
        let mut edge_a = vec![0.0f32; mr * kc_max];
        let mut edge_c = [0.0f32; avx512::MR * avx512::NR];
        for g0 in (j0..j1).step_by(group * nr) {
            let panels = (j1 - g0).div_ceil(nr).min(group);
            for pc in (0..k).step_by(kc_max) {
                let kc = kc_max.min(k - pc);
                // The first block of k overwrites c unless accumulating; later ones add.
                let load = accumulate || pc > 0;
                for row in (0..m).step_by(mr) {
                    let rows = mr.min(m - row);
                    for jr in 0..panels {
                        let col = g0 + jr * nr;
                        let cols = nr.min(j1 - col);
                        let panel = &mut bbuf[jr * kc * nr..(jr + 1) * kc * nr];
                        // A full panel of a row-major `b` is packed by the first strip's tile (a
                        // whole one, as m >= MIN_ROWS > MR); any other by a pass of its own.
                        let fuse = cols == nr && b.cs == 1;
                        if row == 0 && !fuse {
                            pack_b_panel(b, pc, kc, col, cols, nr, panel);
                        }
                        let pack = (fuse && row == 0).then_some((b, pc * b.rs + col));
                        let at = row * n + col;
                        if rows == mr && cols == nr {
                            let mut tile = Tile { kc, a: &a[row * lda + pc..], lda, panel, pack, alpha, load };
                            // SAFETY: rows row..row+mr and columns col..col+nr lie inside the
                            // m x n matrix `c`, in this thread's column range.
                            unsafe { tile.run(self.isa, c.0.add(at), n, m * n - at) };
                        } else {
                            for r in 0..mr {
                                let dst = &mut edge_a[r * kc..(r + 1) * kc];
                                match a.get((row + r) * lda + pc..) {
                                    Some(src) if r < rows => dst.copy_from_slice(&src[..kc]),
                                    _ => dst.fill(0.0),
                                }
                            }
                            let mut tile = Tile { kc, a: &edge_a, lda: kc, panel, pack, alpha, load: false };
                            // SAFETY: `edge_c` holds a whole tile with row stride nr.
                            unsafe { tile.run(self.isa, edge_c.as_mut_ptr(), nr, edge_c.len()) };
                            for r in 0..rows {
                                // SAFETY: row `row + r` < m, columns col..col+cols < n of `c`,
                                // in this thread's range.
                                let dst = unsafe { std::slice::from_raw_parts_mut(c.0.add(at + r * n), cols) };
                                let src = &edge_c[r * nr..r * nr + cols];
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
    }
}

/// One micro-kernel call: `kc` steps, rows of `a` from `a` with stride `lda`, the B panel,
/// which `pack = Some((b, offset))` fills from `b.data[offset..]` as it goes.
struct Tile<'a, 'b> {
    kc: usize,
    a: &'a [f32],
    lda: usize,
    panel: &'a mut [f32],
    pack: Option<(Operand<'b>, usize)>,
    alpha: f32,
    load: bool,
}

impl Tile<'_, '_> {
    /// Runs the kernel into the tile at `c` (row stride `ldc`, `c_len` floats from `c` on).
    ///
    /// # Safety
    /// `c` is valid for writes of `c_len` floats, and no other thread touches this tile.
    unsafe fn run(&mut self, isa: Isa, c: *mut f32, ldc: usize, c_len: usize) {
        let (mr, nr, _) = isa.tile();
        let kc = self.kc;
        assert!(
            self.a.len() >= (mr - 1) * self.lda + kc && self.panel.len() >= kc * nr && ldc >= nr && c_len >= (mr - 1) * ldc + nr,
            "gemm tile out of bounds"
        );
        let (src, ldb) = match self.pack {
            Some((b, offset)) => {
                assert!(b.cs == 1 && b.data.len() >= offset + (kc - 1) * b.rs + nr, "gemm panel source out of bounds");
                (b.data[offset..].as_ptr(), b.rs)
            }
            None => (std::ptr::null(), 0),
        };
        let (a, panel) = (self.a.as_ptr(), self.panel.as_mut_ptr());
        let (alpha, load) = (self.alpha, self.load);
        // SAFETY: the CPU has the kernel's features (`detected`, or the caller of `sgemm_with`
        // checked), and the asserts above keep every access inside the slices and `c`.
        match (isa, self.pack.is_some()) {
            (Isa::Avx512, true) => avx512::kernel::<true>(kc, a, self.lda, src, ldb, panel, c, ldc, alpha, load),
            (Isa::Avx512, false) => avx512::kernel::<false>(kc, a, self.lda, src, ldb, panel, c, ldc, alpha, load),
            (Isa::Avx2, true) => avx2::kernel::<true>(kc, a, self.lda, src, ldb, panel, c, ldc, alpha, load),
            (Isa::Avx2, false) => avx2::kernel::<false>(kc, a, self.lda, src, ldb, panel, c, ldc, alpha, load),
        }
    }
}

thread_local! {
    /// Each thread's buffers, kept between products: a fresh buffer per product cost page
    /// faults and zeroing on every call (the packing writes every element it reads).
    static PACK_B: RefCell<Vec<f32>> = const { RefCell::new(Vec::new()) };
    static ROW_MAJOR_A: RefCell<Vec<f32>> = const { RefCell::new(Vec::new()) };
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
            // Several blocks of k, several groups of panels, edge tiles on both sides.
            let (m, n, k) = (203, 9 * GROUP_AVX512 * avx512::NR + 45, 2 * KC_AVX512 + 17);
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
