//! Matmuls on weights kept in their stored precision (f16, bf16 and ggml's block
//! quantizations), de-quantized inside the kernel: `y = x · Wᵀ`, with `W` an n × k matrix
//! stored as n rows of k elements in blocks, ggml's layout of a linear layer's weight.
//!
//! Why: an f32 copy of a quantized model's weights is 5-8x its file, and decode, which reads
//! every weight once per token, is bound by the bytes it reads; the stored blocks are 4-7x
//! fewer bytes than f32.
//!
//! Two paths:
//! - few rows of `x` (decode, batched decode): each row of `W` is decoded a block at a time
//!   into an L1 buffer and dotted with up to [`BATCH`] rows of `x`, two rows of `W` at once
//!   (independent sums, so the adds overlap); threads over ranges of rows of `W`;
//! - many rows (prefill): panels of [`PANEL`] rows of `W` are decoded to f32 and multiplied by
//!   the executor's GEMM, threads over panels.
//!
//! The decoding is the IR's reference code ([`jetc_ir::blocks`]), inlined into copies
//! compiled for AVX-512 and for AVX2 + FMA, so that each weight comes out bit-identical to
//! `gguf.quants.dequantize`; only the order of the sums differs from a matmul on the
//! de-quantized f32 matrix. Each output element is summed by one task in one fixed order, so
//! results do not depend on the thread count.
use jetc_ir::blocks::{self, BlockFormat};
use rayon::prelude::*;

use crate::onnx_ops::matmul::{sgemm, Mat};

#[cfg(target_arch = "x86_64")]
mod avx2;
#[cfg(target_arch = "x86_64")]
mod avx512;
pub mod q8;

/// Rows of `x` dotted with each decoded block at once on the decode path.
pub const BATCH: usize = 4;
/// From this many rows of `x` on, products go through decoded f32 panels and the GEMM.
const PREFILL_ROWS: usize = 16;
/// Bytes of f32 weights decoded per GEMM on the prefill path, about (a multiple of 32 rows).
const PANEL_BYTES: usize = 2 << 20;
/// Rows of `W` per task on the decode path.
const TASK_ROWS: usize = 16;
/// Products with at least this many weights use several threads.
const PARALLEL_WEIGHTS: usize = 1 << 18;

/// A weight matrix in a stored-precision format: `rows` rows of `cols` elements, each row a
/// whole number of blocks.
#[derive(Clone, Copy, Debug)]
pub struct QuantMatrix<'a> {
    format: BlockFormat,
    rows: usize,
    cols: usize,
    row_bytes: usize,
    data: &'a [u8],
}

impl<'a> QuantMatrix<'a> {
    /// Wraps `data` (row-major blocks); errors when a row is not a whole number of blocks or
    /// the bytes do not make `rows` rows.
    pub fn new(format: BlockFormat, rows: usize, cols: usize, data: &'a [u8]) -> Result<QuantMatrix<'a>, String> {
        let row_bytes = format.row_bytes(cols).ok_or_else(|| {
            format!("a row of {cols} elements is not a whole number of {format} blocks of {}", format.block_size())
        })?;
        if rows.checked_mul(row_bytes) != Some(data.len()) {
            return Err(format!(
                "{} bytes of {format} do not make {rows} rows of {cols} elements ({row_bytes} bytes each)",
                data.len()
            ));
        }
        Ok(QuantMatrix { format, rows, cols, row_bytes, data })
    }

    pub fn format(&self) -> BlockFormat {
        self.format
    }

    pub fn rows(&self) -> usize {
        self.rows
    }

    pub fn cols(&self) -> usize {
        self.cols
    }

    /// The stored bytes (what one product reads).
    pub fn bytes(&self) -> &'a [u8] {
        self.data
    }

    /// The stored blocks of row `r`.
    fn row(&self, r: usize) -> &'a [u8] {
        &self.data[r * self.row_bytes..(r + 1) * self.row_bytes]
    }

    /// Rows `r0..r1` de-quantized into `out` (row-major, `(r1 - r0) · cols` elements), with
    /// SIMD where the CPU and the format have it; bit-identical to the reference either way.
    pub fn decode_rows(&self, r0: usize, r1: usize, out: &mut [f32]) {
        self.decode_rows_at(simd(), r0, r1, out)
    }

    fn decode_rows_at(&self, level: Simd, r0: usize, r1: usize, out: &mut [f32]) {
        let out = &mut out[..(r1 - r0) * self.cols];
        let done = match level {
            // SAFETY: the CPU has the level's features (`simd`); r1 <= rows is the caller's,
            // and `out` was cut to the rows' length above.
            #[cfg(target_arch = "x86_64")]
            Simd::Avx512 => unsafe { avx512::decode_rows(self, r0, r1, out) },
            // SAFETY: as above.
            #[cfg(target_arch = "x86_64")]
            Simd::Avx2 => unsafe { avx2::decode_rows(self, r0, r1, out) },
            _ => false,
        };
        if !done {
            self.format.decode(&self.data[r0 * self.row_bytes..r1 * self.row_bytes], out);
        }
    }

    /// [`QuantMatrix::decode_rows`] with the reference code only.
    pub fn decode_rows_reference(&self, r0: usize, r1: usize, out: &mut [f32]) {
        self.format.decode(&self.data[r0 * self.row_bytes..r1 * self.row_bytes], &mut out[..(r1 - r0) * self.cols]);
    }
}

/// `y = x · Wᵀ`: `x` is m × k row-major, `y` m × n row-major, `W` n × k. `threads` lets large
/// products use the rayon pool.
pub fn matmul(x: &[f32], m: usize, w: &QuantMatrix, y: &mut [f32], threads: bool) -> Result<(), String> {
    matmul_at(simd(), x, m, w, y, threads)
}

/// [`matmul`] with the decode path's kernels at a given SIMD level (the tests run each one
/// the CPU has).
fn matmul_at(level: Simd, x: &[f32], m: usize, w: &QuantMatrix, y: &mut [f32], threads: bool) -> Result<(), String> {
    let (n, k) = (w.rows, w.cols);
    if x.len() < m * k || y.len() < m * n {
        return Err(format!(
            "matmul of {m} x {k} by a {} weight of {n} x {k} got {} inputs and {} outputs",
            w.format,
            x.len(),
            y.len()
        ));
    }
    let threads = threads && n * k >= PARALLEL_WEIGHTS;
    if m >= PREFILL_ROWS {
        return by_panels(x, m, w, &mut y[..m * n], threads);
    }
    if q8::int8_dot() && q8::supports(w.format, k) {
        by_rows_q8(x, m, w, &mut y[..m * n], threads);
        return Ok(());
    }
    for i0 in (0..m).step_by(BATCH) {
        let mb = (m - i0).min(BATCH);
        by_rows(level, &x[i0 * k..(i0 + mb) * k], mb, w, &mut y[i0 * n..(i0 + mb) * n], threads);
    }
    Ok(())
}

/// The decode path for `mb <= BATCH` rows of `x`.
fn by_rows(level: Simd, x: &[f32], mb: usize, w: &QuantMatrix, y: &mut [f32], threads: bool) {
    row_tasks(w.rows, mb, y, threads, |j0, chunk| row_dots(level, w, j0, x, mb, chunk));
}

/// The decode path with `x` quantized to 8 bits per block ([`q8`], opt-in), all `m` rows at
/// once.
fn by_rows_q8(x: &[f32], m: usize, w: &QuantMatrix, y: &mut [f32], threads: bool) {
    let xq = q8::Q8Rows::new(x, m, w.cols);
    row_tasks(w.rows, m, y, threads, |j0, chunk| q8::row_dots(w.format, w.data, w.row_bytes, j0, &xq, m, chunk));
}

/// Runs `task(j0, out)` over tasks of [`TASK_ROWS`] rows of `W` (of `n`), each writing
/// `out[(j - j0) · mb + i] = x_i · W_j`, and leaves `y` (`mb × n`, row-major) filled.
fn row_tasks(n: usize, mb: usize, y: &mut [f32], threads: bool, task: impl Fn(usize, &mut [f32]) + Sync) {
    // Tasks write `[row of W][row of x]`; with one row of x that is `y` itself.
    let mut transposed = Vec::new();
    let out: &mut [f32] = if mb == 1 {
        y
    } else {
        transposed.resize(n * mb, 0.0);
        &mut transposed
    };
    let run = |(t, chunk): (usize, &mut [f32])| task(t * TASK_ROWS, chunk);
    if threads {
        out.par_chunks_mut(TASK_ROWS * mb).enumerate().for_each(run);
    } else {
        out.chunks_mut(TASK_ROWS * mb).enumerate().for_each(run);
    }
    if mb > 1 {
        for (j, vals) in transposed.chunks_exact(mb).enumerate() {
            for (i, &v) in vals.iter().enumerate() {
                y[i * n + j] = v;
            }
        }
    }
}

/// The prefill path: panels of rows of `W` decoded to f32 (in parallel), each multiplied
/// by the GEMM (threaded), so that no more than about [`PANEL_BYTES`] of f32 weights exist
/// at once.
fn by_panels(x: &[f32], m: usize, w: &QuantMatrix, y: &mut [f32], threads: bool) -> Result<(), String> {
    let (n, k) = (w.rows, w.cols);
    let panel_rows = (PANEL_BYTES / (4 * k.max(1))).max(32) / 32 * 32;
    let mut decoded = vec![0.0f32; panel_rows.min(n) * k];
    let mut c = vec![0.0f32; m * panel_rows.min(n)];
    for j0 in (0..n).step_by(panel_rows) {
        let j1 = (j0 + panel_rows).min(n);
        let (rows, dec) = (j1 - j0, &mut decoded[..(j1 - j0) * k]);
        let decode = |(b, out): (usize, &mut [f32])| w.decode_rows(j0 + 32 * b, (j0 + 32 * b + 32).min(j1), out);
        if threads {
            dec.par_chunks_mut(32 * k).enumerate().for_each(decode);
        } else {
            dec.chunks_mut(32 * k).enumerate().for_each(decode);
        }
        let c = &mut c[..m * rows];
        sgemm(m, rows, k, Mat::rows(x, k), Mat::transposed(dec, k), c, 1.0, false, threads)?;
        for (i, row) in c.chunks_exact(rows).enumerate() {
            y[i * n + j0..i * n + j1].copy_from_slice(row);
        }
    }
    Ok(())
}

/// Rows `j0..` of `W` (as many as `out` holds) dotted with the `mb` rows of `x`:
/// `out[(j - j0) · mb + i] = x_i · W_j`: the intrinsics of [`avx512`] or [`avx2`] where the
/// CPU and the format have them, else the portable code in the widest copy the CPU runs.
fn row_dots(level: Simd, w: &QuantMatrix, j0: usize, x: &[f32], mb: usize, out: &mut [f32]) {
    #[cfg(target_arch = "x86_64")]
    {
        #[target_feature(enable = "avx512f")]
        fn portable_avx512(w: &QuantMatrix, j0: usize, x: &[f32], mb: usize, out: &mut [f32]) {
            by_format::<true>(w, j0, x, mb, out)
        }
        #[target_feature(enable = "avx2,fma")]
        fn portable_avx2(w: &QuantMatrix, j0: usize, x: &[f32], mb: usize, out: &mut [f32]) {
            by_format::<true>(w, j0, x, mb, out)
        }
        match level {
            Simd::Avx512 => {
                // SAFETY: the CPU supports AVX-512F and F16C (`simd`, `levels`); the lengths are the
                // caller's, as `row_dots` requires.
                if !unsafe { avx512::row_dots(w, j0, x, mb, out) } {
                    // SAFETY: as above.
                    unsafe { portable_avx512(w, j0, x, mb, out) }
                }
                return;
            }
            Simd::Avx2 => {
                // SAFETY: the CPU supports AVX2, FMA and F16C (`simd`); lengths as above.
                if !unsafe { avx2::row_dots(w, j0, x, mb, out) } {
                    // SAFETY: as above.
                    unsafe { portable_avx2(w, j0, x, mb, out) }
                }
                return;
            }
            Simd::None => {}
        }
    }
    by_format::<false>(w, j0, x, mb, out)
}

/// The SIMD level of the decode kernels, found once.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Simd {
    Avx512,
    Avx2,
    None,
}

/// The levels this CPU runs, widest first.
#[cfg(test)]
fn levels() -> Vec<Simd> {
    let mut v = vec![Simd::None];
    #[cfg(target_arch = "x86_64")]
    {
        let f16c = std::arch::is_x86_feature_detected!("f16c");
        if f16c && std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma") {
            v.insert(0, Simd::Avx2);
        }
        if f16c && std::arch::is_x86_feature_detected!("avx512f") {
            v.insert(0, Simd::Avx512);
        }
    }
    v
}

fn simd() -> Simd {
    static LEVEL: std::sync::OnceLock<Simd> = std::sync::OnceLock::new();
    *LEVEL.get_or_init(|| {
        #[cfg(target_arch = "x86_64")]
        {
            let has = |f: &str| match f {
                "avx512f" => std::arch::is_x86_feature_detected!("avx512f"),
                "avx2" => std::arch::is_x86_feature_detected!("avx2"),
                "fma" => std::arch::is_x86_feature_detected!("fma"),
                _ => std::arch::is_x86_feature_detected!("f16c"),
            };
            if std::env::var("JETC_GEMM").is_ok_and(|v| v == "fallback") {
                return Simd::None;
            }
            if has("avx512f") && has("f16c") {
                return Simd::Avx512;
            }
            if has("avx2") && has("fma") && has("f16c") {
                return Simd::Avx2;
            }
        }
        Simd::None
    })
}

/// Picks the decoder of `W`'s format; chunks of 32 elements for the 32-element blocks and
/// the half floats, of 256 for the k-quants' super-blocks.
#[inline(always)]
fn by_format<const FMA: bool>(w: &QuantMatrix, j0: usize, x: &[f32], mb: usize, out: &mut [f32]) {
    match w.format {
        BlockFormat::F16 => by_batch::<FMA, 32, _>(blocks::f16_values, w, j0, x, mb, out),
        BlockFormat::BF16 => by_batch::<FMA, 32, _>(blocks::bf16_values, w, j0, x, mb, out),
        BlockFormat::Q4_0 => by_batch::<FMA, 32, _>(blocks::q4_0, w, j0, x, mb, out),
        BlockFormat::Q4_1 => by_batch::<FMA, 32, _>(blocks::q4_1, w, j0, x, mb, out),
        BlockFormat::Q5_0 => by_batch::<FMA, 32, _>(blocks::q5_0, w, j0, x, mb, out),
        BlockFormat::Q5_1 => by_batch::<FMA, 32, _>(blocks::q5_1, w, j0, x, mb, out),
        BlockFormat::Q8_0 => by_batch::<FMA, 32, _>(blocks::q8_0, w, j0, x, mb, out),
        BlockFormat::Q2_K => by_batch::<FMA, 256, _>(blocks::q2_k, w, j0, x, mb, out),
        BlockFormat::Q3_K => by_batch::<FMA, 256, _>(blocks::q3_k, w, j0, x, mb, out),
        BlockFormat::Q4_K => by_batch::<FMA, 256, _>(blocks::q4_k, w, j0, x, mb, out),
        BlockFormat::Q5_K => by_batch::<FMA, 256, _>(blocks::q5_k, w, j0, x, mb, out),
        BlockFormat::Q6_K => by_batch::<FMA, 256, _>(blocks::q6_k, w, j0, x, mb, out),
    }
}

#[inline(always)]
fn by_batch<const FMA: bool, const C: usize, D: Fn(&[u8], &mut [f32])>(
    decode: D,
    w: &QuantMatrix,
    j0: usize,
    x: &[f32],
    mb: usize,
    out: &mut [f32],
) {
    match mb {
        1 => dots::<FMA, C, 1, D>(decode, w, j0, x, out),
        2 => dots::<FMA, C, 2, D>(decode, w, j0, x, out),
        3 => dots::<FMA, C, 3, D>(decode, w, j0, x, out),
        _ => dots::<FMA, C, 4, D>(decode, w, j0, x, out),
    }
}

/// Lanes of each running sum: two AVX-512 vectors, so that the two halves of a 32-element
/// block add into different registers.
const LANES: usize = 32;

#[inline(always)]
fn dots<const FMA: bool, const C: usize, const M: usize, D: Fn(&[u8], &mut [f32])>(
    decode: D,
    w: &QuantMatrix,
    j0: usize,
    x: &[f32],
    out: &mut [f32],
) {
    let rows = out.len() / M;
    let mut r = 0;
    while r + 2 <= rows {
        let sums = row_group::<FMA, C, M, 2, D>(&decode, w, j0 + r, x);
        for (q, s) in sums.iter().enumerate() {
            out[(r + q) * M..(r + q + 1) * M].copy_from_slice(s);
        }
        r += 2;
    }
    if r < rows {
        let sums = row_group::<FMA, C, M, 1, D>(&decode, w, j0 + r, x);
        out[r * M..(r + 1) * M].copy_from_slice(&sums[0]);
    }
}

/// `R` rows of `W` from `j` dotted with `M` rows of `x`, chunk by chunk of `C` elements.
#[inline(always)]
fn row_group<const FMA: bool, const C: usize, const M: usize, const R: usize, D: Fn(&[u8], &mut [f32])>(
    decode: &D,
    w: &QuantMatrix,
    j: usize,
    x: &[f32],
) -> [[f32; M]; R] {
    let k = w.cols;
    let (bs, bb) = (w.format.block_size(), w.format.block_bytes());
    let chunk_bytes = C / bs * bb;
    let (full, tail) = (k / C, k % C);
    let mut buf = [[0.0f32; C]; R];
    let mut acc = [[[0.0f32; LANES]; M]; R];
    let wrows: [&[u8]; R] = std::array::from_fn(|q| w.row(j + q));
    for c in 0..full {
        for q in 0..R {
            decode(&wrows[q][c * chunk_bytes..(c + 1) * chunk_bytes], &mut buf[q]);
        }
        for i in 0..M {
            let xs = &x[i * k + c * C..i * k + (c + 1) * C];
            for q in 0..R {
                for part in 0..C / LANES {
                    let (wv, xv) = (&buf[q][part * LANES..(part + 1) * LANES], &xs[part * LANES..(part + 1) * LANES]);
                    for l in 0..LANES {
                        acc[q][i][l] = if FMA { wv[l].mul_add(xv[l], acc[q][i][l]) } else { acc[q][i][l] + wv[l] * xv[l] };
                    }
                }
            }
        }
    }
    let mut sums = [[0.0f32; M]; R];
    for q in 0..R {
        // A tail shorter than a chunk exists only for the one-element blocks (f16, bf16).
        if tail > 0 {
            decode(&wrows[q][full * chunk_bytes..], &mut buf[q][..tail]);
        }
        for i in 0..M {
            let mut s = acc[q][i].iter().sum::<f32>();
            for l in 0..tail {
                s += buf[q][l] * x[i * k + full * C + l];
            }
            sums[q][i] = s;
        }
    }
    sums
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Blocks of `format` with random quants and scales of moderate size (random f16 bits
    /// could be NaN or inf).
    fn random_blocks(format: BlockFormat, blocks: usize, seed: u64) -> Vec<u8> {
        let mut state = seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        let mut next = || {
            state = state.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            (state >> 33) as u32
        };
        let mut out = Vec::with_capacity(blocks * format.block_bytes());
        for _ in 0..blocks * format.block_bytes() {
            out.push(next() as u8);
        }
        let scale = |next: &mut dyn FnMut() -> u32| half::f16::from_f32((next() % 2000) as f32 / 1e5 - 0.01).to_le_bytes();
        let bb = format.block_bytes();
        for b in 0..blocks {
            let blk = &mut out[b * bb..(b + 1) * bb];
            // Where the f16 scales sit in each format.
            let at: &[usize] = match format {
                BlockFormat::F16 => &[0],
                BlockFormat::BF16 => &[],
                BlockFormat::Q4_0 | BlockFormat::Q5_0 | BlockFormat::Q8_0 => &[0],
                BlockFormat::Q4_1 | BlockFormat::Q5_1 | BlockFormat::Q4_K | BlockFormat::Q5_K => &[0, 2],
                BlockFormat::Q2_K => &[80, 82],
                BlockFormat::Q3_K => &[108],
                BlockFormat::Q6_K => &[208],
            };
            for &o in at {
                blk[o..o + 2].copy_from_slice(&scale(&mut next));
            }
            if format == BlockFormat::BF16 {
                let v = half::bf16::from_f32((next() % 2000) as f32 / 1e3 - 1.0).to_le_bytes();
                blk.copy_from_slice(&v);
            }
        }
        out
    }

    fn random_x(len: usize, seed: u64) -> Vec<f32> {
        (0..len).map(|i| (((i as u64 * 2654435761 + seed * 97) % 1000) as f32 / 500.0) - 1.0).collect()
    }

    /// Every format, decode and prefill paths, every batch width: against an f64 product of
    /// the reference de-quantization.
    #[test]
    fn matmul_matches_f64_product_of_reference_weights() {
        for format in BlockFormat::ALL {
            let k = if format.block_size() == 256 { 512 } else { 96 + if format.block_size() == 1 { 7 } else { 0 } };
            let n = 37;
            let blocks = n * k / format.block_size();
            let data = random_blocks(format, blocks, format as u64);
            let w = QuantMatrix::new(format, n, k, &data).unwrap();
            let mut wf = vec![0.0f32; n * k];
            w.decode_rows_reference(0, n, &mut wf);
            for level in levels() {
                let mut fast = vec![0.0f32; n * k];
                w.decode_rows_at(level, 0, n, &mut fast);
                assert!(fast.iter().zip(&wf).all(|(a, b)| a.to_bits() == b.to_bits()), "{format} {level:?}: decode differs from the reference");
            }
            for (m, level, threads) in [1, 2, 3, 4, 5, 9, 17].into_iter().flat_map(|m| levels().into_iter().flat_map(move |l| [(m, l, false), (m, l, true)])) {
                let x = random_x(m * k, m as u64);
                {
                    let mut y = vec![f32::NAN; m * n];
                    matmul_at(level, &x, m, &w, &mut y, threads).unwrap();
                    for i in 0..m {
                        for j in 0..n {
                            let (mut want, mut mag) = (0.0f64, 0.0f64);
                            for l in 0..k {
                                want += x[i * k + l] as f64 * wf[j * k + l] as f64;
                                mag += (x[i * k + l] as f64 * wf[j * k + l] as f64).abs();
                            }
                            let got = y[i * n + j] as f64;
                            assert!(
                                (got - want).abs() <= 1e-5 * mag + 1e-30,
                                "{format} m={m} {level:?} threads={threads} ({i},{j}): {got} vs {want} (sum of |terms| {mag})"
                            );
                        }
                    }
                }
            }
        }
    }

    /// The SIMD copies decode each weight exactly as the reference does: a unit vector `x`
    /// reads back each de-quantized weight.
    #[test]
    fn decoded_weights_are_bit_identical_to_reference() {
        for (format, level) in BlockFormat::ALL.into_iter().flat_map(|f| levels().into_iter().map(move |l| (f, l))) {
            let k = if format.block_size() == 256 { 256 } else { 64 };
            let n = 3;
            let data = random_blocks(format, n * k / format.block_size(), 7);
            let w = QuantMatrix::new(format, n, k, &data).unwrap();
            let mut wf = vec![0.0f32; n * k];
            w.decode_rows_reference(0, n, &mut wf);
            for l in 0..k {
                let mut x = vec![0.0f32; k];
                x[l] = 1.0;
                let mut y = vec![0.0f32; n];
                matmul_at(level, &x, 1, &w, &mut y, false).unwrap();
                for j in 0..n {
                    // Equal as numbers: a weight of -0 sums to +0.
                    assert_eq!(y[j], wf[j * k + l], "{format} {level:?} row {j} element {l}");
                }
            }
        }
    }

    #[test]
    fn shapes_that_do_not_fit_are_errors() {
        let data = vec![0u8; 20];
        assert!(QuantMatrix::new(BlockFormat::Q4_1, 1, 31, &data).unwrap_err().contains("whole number"));
        assert!(QuantMatrix::new(BlockFormat::Q4_1, 2, 32, &data).unwrap_err().contains("do not make"));
        let w = QuantMatrix::new(BlockFormat::Q4_1, 1, 32, &data).unwrap();
        assert!(matmul(&[0.0; 31], 1, &w, &mut [0.0], false).is_err());
    }
}
