//! GEMM rates of jetc's own f32 kernels (`jetc_runtime::gemm_f32`, on the micro-kernel this
//! CPU runs) and of the two CPU GEMM crates on the shapes jetc runs (training projections at
//! SmolLM2 dims, the prefill MLP and LM head of qwen2.5-0.5b, the transposed products of
//! backward passes), in one run:
//! `cargo run --release -p jetc-runtime --features bench-faer --example gemm_bench`.
use std::time::Instant;

fn gemm_crate(m: usize, n: usize, k: usize, a: &[f32], b: &[f32], c: &mut [f32], at: bool) {
    let (a_cs, a_rs) = if at { (m as isize, 1) } else { (1, k as isize) };
    // SAFETY: the buffers hold m*k, k*n and m*n elements with these strides.
    unsafe {
        gemm::gemm(m, n, k, c.as_mut_ptr(), 1, n as isize, false, a.as_ptr(), a_cs, a_rs, b.as_ptr(), 1, n as isize, 1.0, 1.0, false, false, false, gemm::Parallelism::Rayon(0));
    }
}

fn faer_crate(m: usize, n: usize, k: usize, a: &[f32], b: &[f32], c: &mut [f32], at: bool) {
    use faer::{Accum, MatMut, MatRef, Par};
    let (rs, cs) = if at { (1, m as isize) } else { (k as isize, 1) };
    // SAFETY: as above.
    let (am, bm, cm) = unsafe {
        (
            MatRef::<f32>::from_raw_parts(a.as_ptr(), m, k, rs, cs),
            MatRef::<f32>::from_raw_parts(b.as_ptr(), k, n, n as isize, 1),
            MatMut::<f32>::from_raw_parts_mut(c.as_mut_ptr(), m, n, n as isize, 1),
        )
    };
    faer::linalg::matmul::matmul(cm, Accum::Replace, am, bm, 1.0f32, Par::rayon(0));
}

fn jetc_kernel(m: usize, n: usize, k: usize, a: &[f32], b: &[f32], c: &mut [f32], at: bool) {
    use jetc_runtime::gemm_f32::{sgemm, Operand};
    let a = if at { Operand { data: a, rs: 1, cs: m } } else { Operand { data: a, rs: k, cs: 1 } };
    let b = Operand { data: b, rs: n, cs: 1 };
    assert!(sgemm(m, n, k, a, b, c, 1.0, false, true), "no jetc kernel for this CPU or shape");
}

fn main() {
    println!("jetc micro-kernel on this CPU: {:?}", jetc_runtime::gemm_f32::detected());
    // `gemm_bench M N K` measures that one shape instead of the table's.
    let custom: Vec<usize> = std::env::args().skip(1).filter_map(|a| a.parse().ok()).collect();
    let default_shapes: [(usize, usize, usize, bool, &str); 8] = [
        (4096, 432, 576, false, "q/k proj fwd (SmolLM2 JetBlock)"),
        (4096, 1152, 576, false, "v/g proj fwd"),
        (4096, 576, 1152, false, "o proj fwd / dx of v"),
        (576, 1152, 4096, true, "dW of v (A^T dY)"),
        (512, 4864, 896, false, "qwen2.5-0.5b MLP gate/up"),
        (512, 896, 4864, false, "qwen2.5-0.5b MLP down"),
        (512, 512, 64, false, "attention scores per head"),
        (512, 151936, 896, false, "qwen2.5-0.5b LM head"),
    ];
    let shapes: Vec<(usize, usize, usize, bool, &str)> = match custom[..] {
        [m, n, k] => vec![(m, n, k, false, "given on the command line")],
        _ => default_shapes.to_vec(),
    };
    println!("| shape m x n x k | what | jetc GFLOP/s | gemm GFLOP/s | faer GFLOP/s | jetc / gemm | jetc / faer |");
    println!("|---|---|---|---|---|---|---|");
    for (m, n, k, at, what) in shapes {
        let a: Vec<f32> = (0..m * k).map(|i| ((i * 7) % 13) as f32 * 0.01).collect();
        let b: Vec<f32> = (0..k * n).map(|i| ((i * 5) % 11) as f32 * 0.01).collect();
        let mut c = vec![0f32; m * n];
        let flops = 2.0 * (m * n * k) as f64;
        // The three run in turn, one product each, so that a slow spell of the machine (a
        // shared host) falls on all of them; each rate is the median over the rounds.
        type Impl<'a> = &'a dyn Fn(&mut [f32]);
        let impls: [Impl; 3] = [&|c| jetc_kernel(m, n, k, &a, &b, c, at), &|c| gemm_crate(m, n, k, &a, &b, c, at), &|c| faer_crate(m, n, k, &a, &b, c, at)];
        let rounds = ((4e10 / flops) as usize).clamp(7, 101);
        let mut secs = vec![Vec::with_capacity(rounds); impls.len()];
        let mut scratch = vec![0f32; m * n];
        impls.iter().for_each(|f| f(&mut scratch));
        for _ in 0..rounds {
            for (f, s) in impls.iter().zip(&mut secs) {
                let t = Instant::now();
                f(&mut scratch);
                s.push(t.elapsed().as_secs_f64());
            }
        }
        let rate = |s: &mut Vec<f64>| {
            s.sort_by(f64::total_cmp);
            flops / s[s.len() / 2] / 1e9
        };
        let (j, g, f) = (rate(&mut secs[0]), rate(&mut secs[1]), rate(&mut secs[2]));
        gemm_crate(m, n, k, &a, &b, &mut c, at);
        for other in [faer_crate as fn(usize, usize, usize, &[f32], &[f32], &mut [f32], bool), jetc_kernel] {
            let mut c2 = vec![0f32; m * n];
            other(m, n, k, &a, &b, &mut c2, at);
            let diff = c.iter().zip(&c2).fold(0f32, |d, (x, y)| d.max((x - y).abs()));
            assert!(diff < 1e-2, "results differ by {diff}");
        }
        println!("| {m} x {n} x {k} | {what} | {j:.0} | {g:.0} | {f:.0} | {:.2} | {:.2} |", j / g, j / f);
    }
}
