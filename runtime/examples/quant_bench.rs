//! Decode-shaped products on weights in their stored precision (`jetc_runtime::quant`) next
//! to the f32 product the executor runs today on a de-quantized copy, in one run, on the
//! shapes of SmolLM2-135M (hidden 576, 3 kv heads of 64, MLP 1536, vocabulary 49152):
//! `cargo run --release -p jetc-runtime --example quant_bench [-- ROWS]`.
//!
//! Prints per shape and format the time of one product, the weight bytes it reads per second,
//! and the ratio to f32; then one decode step's worth of products (30 layers + LM head).
//! Each shape cycles through as many distinct copies of its weight as a decode step has
//! (30 or 60, one for the LM head), so the weights come from memory, not from the caches,
//! as they do in a real decode.
use std::time::Instant;

use jetc_ir::blocks::BlockFormat;
use jetc_runtime::quant::{matmul, QuantMatrix};

/// The f32 path of the executor for fewer than 16 rows: the `gemm` crate, threads on.
fn f32_product(m: usize, n: usize, k: usize, x: &[f32], wt: &[f32], y: &mut [f32]) {
    // SAFETY: x is m x k, wt is k x n (the weight transposed, as the executor holds it), y m x n.
    unsafe {
        gemm::gemm(m, n, k, y.as_mut_ptr(), 1, n as isize, false, x.as_ptr(), 1, k as isize, wt.as_ptr(), 1, n as isize, 1.0, 1.0, false, false, false, gemm::Parallelism::Rayon(0));
    }
}

/// Median seconds of `f` over enough calls to take about 0.3 s.
fn time(mut f: impl FnMut()) -> f64 {
    f();
    let start = Instant::now();
    f();
    let once = start.elapsed().as_secs_f64().max(1e-7);
    let reps = ((0.3 / once) as usize).clamp(5, 20_000);
    let mut v: Vec<f64> = (0..reps)
        .map(|_| {
            let t = Instant::now();
            f();
            t.elapsed().as_secs_f64()
        })
        .collect();
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn main() {
    let m: usize = std::env::args().nth(1).and_then(|a| a.parse().ok()).unwrap_or(1);
    let shapes: [(&str, usize, usize, usize); 6] = [
        ("q / o", 576, 576, 60),
        ("k / v", 192, 576, 60),
        ("gate / up", 1536, 576, 60),
        ("down", 576, 1536, 30),
        ("LM head", 49152, 576, 1),
        ("(one step)", 0, 0, 0),
    ];
    let formats = [BlockFormat::Q4_0, BlockFormat::Q4_1, BlockFormat::Q8_0, BlockFormat::F16, BlockFormat::BF16];
    println!("rows of x: {m}, threads: {}", rayon::current_num_threads());
    println!("| shape (n x k) | format | us per product | weight GB/s | f32 us | f32 / format |");
    println!("|---|---|---:|---:|---:|---:|");
    let mut step = vec![(0.0f64, 0.0f64, 0usize); formats.len()];
    for &(name, n, k, per_step) in &shapes[..5] {
        let copies: Vec<Vec<f32>> =
            (0..per_step).map(|c| (0..n * k).map(|i| (((i + c * 131) * 7919 % 1000) as f32 / 500.0 - 1.0) * 0.05).collect()).collect();
        let transposed: Vec<Vec<f32>> = copies
            .iter()
            .map(|w| {
                let mut wt = vec![0.0f32; n * k];
                for j in 0..n {
                    for l in 0..k {
                        wt[l * n + j] = w[j * k + l];
                    }
                }
                wt
            })
            .collect();
        let x: Vec<f32> = (0..m * k).map(|i| (i % 13) as f32 / 13.0 - 0.5).collect();
        let mut y = vec![0.0f32; m * n];
        let mut next = 0;
        let f32_s = time(|| {
            f32_product(m, n, k, &x, &transposed[next % per_step], &mut y);
            next += 1;
        });
        drop(transposed);
        for (fi, &format) in formats.iter().enumerate() {
            let stored: Vec<Vec<u8>> = copies.iter().map(|w| format.encode(w).expect("an encodable format")).collect();
            let mats: Vec<QuantMatrix> = stored.iter().map(|b| QuantMatrix::new(format, n, k, b).expect("whole blocks")).collect();
            let s = time(|| {
                matmul(&x, m, &mats[next % per_step], &mut y, true).expect("shapes fit");
                next += 1;
            });
            let bytes = stored[0].len();
            println!(
                "| {name} ({n} x {k}) | {format} | {:.1} | {:.1} | {:.1} | {:.2} |",
                s * 1e6,
                bytes as f64 / s / 1e9,
                f32_s * 1e6,
                f32_s / s
            );
            step[fi].0 += s * per_step as f64;
            step[fi].1 += f32_s * per_step as f64;
            step[fi].2 += bytes * per_step;
        }
    }
    for (fi, &format) in formats.iter().enumerate() {
        let (s, f, bytes) = step[fi];
        println!(
            "| one decode step (30 layers + LM head) | {format} | {:.0} | {:.1} | {:.0} | {:.2} |",
            s * 1e6,
            bytes as f64 / s / 1e9,
            f * 1e6,
            f / s
        );
    }
}
