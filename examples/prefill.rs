//! Prefill throughput of the CPU executor: loads a decoder (import + raise), runs one
//! prefill of `--tokens` random tokens at `--batch` with an empty KV cache `--runs` times,
//! and prints a table row (load time, median run time, tokens/s).
//!
//! cargo run --release --example prefill -- MODEL.onnx [--tokens 512] [--batch 1] [--runs 3] [--no-raise] [--default-alloc]
use std::collections::HashMap;
use std::time::Instant;

use jetc::ir::{DType, Outlet};
use jetc::runtime::{Session, Value};
use ndarray::{ArrayD, IxDyn};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let model = args.first().ok_or("usage: prefill MODEL.onnx [--tokens N] [--batch B] [--runs R] [--no-raise] [--default-alloc]")?;
    let flag = |name: &str, default: usize| -> usize {
        args.iter().position(|a| a == name).and_then(|i| args.get(i + 1)).and_then(|v| v.parse().ok()).unwrap_or(default)
    };
    let (tokens, batch, runs) = (flag("--tokens", 512), flag("--batch", 1), flag("--runs", 3));
    let raise = !args.iter().any(|a| a == "--no-raise");
    // As the jetc binary does, unless asked to keep the C library's default.
    if !args.iter().any(|a| a == "--default-alloc") {
        jetc::runtime::alloc_policy::keep_freed_memory();
    }

    let t0 = Instant::now();
    let path = std::path::Path::new(model);
    let g = if raise { jetc::pipeline::load_raised(path)? } else { jetc::pipeline::load(path)? };
    let session = Session::new(&g)?;
    let load_s = t0.elapsed().as_secs_f64();

    let mut inputs = HashMap::new();
    let mut seed = 12345u64;
    for &id in &g.inputs {
        let name = g.value_name(Outlet::new(id, 0)).to_string();
        let fact = g.fact(Outlet::new(id, 0))?;
        let dims: Vec<usize> = fact
            .shape
            .as_ref()
            .ok_or("input of unknown rank")?
            .iter()
            .map(|d| match d.as_known() {
                Some(v) => v as usize,
                None if d.to_string().contains("past") => 0,
                None if d.to_string().contains("batch") => batch,
                None => tokens,
            })
            .collect();
        let n: usize = dims.iter().product();
        let v = if fact.dtype == DType::I64 {
            let data: Vec<i64> = if name.contains("position") {
                (0..n).map(|i| (i % tokens) as i64).collect()
            } else if name.contains("mask") {
                vec![1; n]
            } else {
                (0..n)
                    .map(|_| {
                        seed ^= seed << 13;
                        seed ^= seed >> 7;
                        seed ^= seed << 17;
                        (seed % 1000) as i64
                    })
                    .collect()
            };
            Value::i64(ArrayD::from_shape_vec(IxDyn(&dims), data)?)
        } else {
            Value::f32(ArrayD::zeros(IxDyn(&dims)))
        };
        inputs.insert(name, v);
    }
    let mut times = Vec::new();
    for _ in 0..runs {
        let t = Instant::now();
        let out = session.run(inputs.clone())?;
        times.push(t.elapsed().as_secs_f64());
        std::hint::black_box(out);
    }
    times.sort_by(|a, b| a.total_cmp(b));
    let median = times[times.len() / 2];
    println!("| model | raise | batch | tokens | load s | median run s | tokens/s |");
    println!("|---|---|---|---|---|---|---|");
    println!(
        "| {} | {raise} | {batch} | {tokens} | {load_s:.2} | {median:.3} | {:.1} |",
        path.file_name().map(|s| s.to_string_lossy().into_owned()).unwrap_or_default(),
        (batch * tokens) as f64 / median
    );
    Ok(())
}
