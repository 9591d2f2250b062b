//! Prints a GGUF file's header: version, metadata (arrays summarized), tensor types and the
//! first tensors; de-quantizes the first tensor of each type. With `--check REF.npz`
//! (written by `scripts/make_gguf_goldens.py --ref-from MODEL.gguf REF.npz`), compares
//! those de-quantizations with gguf-py's bit for bit.
//!
//! cargo run -p jetc-gguf --release --example gguf_inspect -- MODEL.gguf [--check REF.npz]
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Instant;

use jetc_gguf::{GgmlType, GgufFile, MetaValue};

fn main() {
    if let Err(e) = run() {
        eprintln!("error: {e}");
        std::process::exit(1);
    }
}

fn run() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let (path, check) = match args.as_slice() {
        [p] => (PathBuf::from(p), None),
        [p, flag, r] if flag == "--check" => (PathBuf::from(p), Some(PathBuf::from(r))),
        _ => return Err("usage: gguf_inspect MODEL.gguf [--check REF.npz]".into()),
    };
    let t0 = Instant::now();
    let f = GgufFile::open(&path)?;
    println!(
        "{}: GGUF v{}, {} metadata keys, {} tensors, alignment {}, data at {} (header parsed in {:.1} ms)",
        path.display(),
        f.version,
        f.metadata.len(),
        f.tensors.len(),
        f.alignment,
        f.data_offset,
        t0.elapsed().as_secs_f64() * 1e3
    );
    println!("\nmetadata:");
    for (k, v) in &f.metadata {
        let shown = match v {
            MetaValue::Array(a) => format!("ARRAY of {} {}", a.len(), a.elem_type()),
            MetaValue::String(s) if s.len() > 60 => {
                format!(
                    "STRING of {} bytes: {:?}...",
                    s.len(),
                    s.chars().take(60).collect::<String>()
                )
            }
            v => v.describe(),
        };
        println!("  {k} = {shown}");
    }
    for key in ["tokenizer.ggml.tokens", "tokenizer.ggml.merges"] {
        if let Ok(v) = f.get_str_array(key) {
            println!("  {key}[..5] = {:?}", &v[..v.len().min(5)]);
        }
    }

    let mut by_type: BTreeMap<GgmlType, (usize, u64)> = BTreeMap::new();
    for t in &f.tensors {
        let e = by_type.entry(t.ggml_type).or_default();
        e.0 += 1;
        e.1 += t.byte_len;
    }
    println!("\ntensor types:");
    for (ty, (n, bytes)) in &by_type {
        println!("  {ty:<8} {n:>4} tensors, {bytes} bytes");
    }
    println!("\nfirst tensors:");
    for t in f.tensors.iter().take(12) {
        println!(
            "  {:<28} {:<5} dims {:?} -> shape {:?}",
            t.name,
            t.ggml_type.name(),
            t.dims,
            t.shape()
        );
    }

    let reference = match &check {
        Some(p) => jetc_runtime::npz::read_npz(p)?,
        None => Vec::new(),
    };
    println!("\nde-quantizing the first tensor of each type:");
    let mut failures = 0;
    for ty in by_type.keys() {
        let Some(t) = f.tensors.iter().find(|t| t.ggml_type == *ty) else {
            continue;
        };
        let t0 = Instant::now();
        let v = match f.dequantize(t) {
            Ok(v) => v,
            Err(e) => {
                println!("  {}: {e}", t.name);
                continue;
            }
        };
        let ms = t0.elapsed().as_secs_f64() * 1e3;
        let sum: f64 = v.iter().map(|&x| x as f64).sum();
        let absmax = v.iter().fold(0f32, |m, &x| m.max(x.abs()));
        print!(
            "  {:<24} {ty:<5} {} values in {ms:.1} ms, sum {sum:.6e}, max |x| {absmax:.4e}",
            t.name,
            v.len()
        );
        if let Some((_, r)) = reference.iter().find(|(n, _)| n == &t.name) {
            let r = r.as_f32().ok_or("reference is not f32")?;
            let shape_ok = r.shape() == t.shape().as_slice();
            let mismatches = v
                .iter()
                .zip(r.iter())
                .filter(|(a, b)| a.to_bits() != b.to_bits())
                .count();
            let ok = shape_ok && r.len() == v.len() && mismatches == 0;
            failures += !ok as usize;
            print!(
                "; vs gguf-py: {} (shape {}, {mismatches} of {} values differ)",
                if ok { "bit-identical" } else { "MISMATCH" },
                if shape_ok { "ok" } else { "differs" },
                r.len()
            );
        }
        println!();
    }
    if failures > 0 {
        return Err(format!("{failures} tensors differ from the reference").into());
    }
    Ok(())
}
