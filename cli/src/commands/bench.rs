//! `jetc bench`: prefill and decode throughput of a model (and of a second one to compare,
//! typically its hybrid) on the CPU executor, at several context lengths and a batch size:
//! tokens/s, the bytes a step must move and the bandwidth that implies, peak memory, and,
//! with `--compare` (a second model file) or `--compare-layout` (the model converted in memory
//! to a layout file, its other weights kept as loaded), the measured speedup beside the one
//! the bytes per step predict. Writes a
//! PNG (and SVG) of decode throughput against context with `--plot`; `--json` for scripts.
//! How the caches are filled is in `jetc_models::bench`.
use std::path::{Path, PathBuf};

use indicatif::{ProgressBar, ProgressStyle};
use jetc::bench::{Bench, DecodeMeasure, PrefillMeasure};
use jetc::convert::{convert, Layout};
use serde_json::json;

use crate::error::{CliError, Result};
use crate::load;

pub struct BenchArgs {
    pub model: PathBuf,
    pub compare: Option<PathBuf>,
    /// Compare with MODEL converted in memory to this layout file instead.
    pub compare_layout: Option<PathBuf>,
    pub contexts: Vec<usize>,
    pub batch: usize,
    pub new_tokens: usize,
    pub prefill_tokens: usize,
    pub stored_weights: bool,
    pub plot: Option<PathBuf>,
    pub json: bool,
    pub seed: u64,
}

fn msg(e: impl std::fmt::Display) -> CliError {
    CliError::Msg(e.to_string())
}

/// A context length: `4096`, `4k` or `4K` (x1024).
pub fn parse_context(s: &str) -> std::result::Result<usize, String> {
    let t = s.trim();
    let (num, mult) = match t.strip_suffix(['k', 'K']) {
        Some(n) => (n, 1024),
        None => (t, 1),
    };
    num.parse::<usize>().map(|n| n * mult).map_err(|_| format!("`{s}` is not a context length (e.g. 4096 or 4k)"))
}

/// A model file, or a directory `jetc convert` wrote (its model.onnx).
fn model_file(p: &Path) -> Result<PathBuf> {
    if p.is_dir() {
        let f = p.join("model.onnx");
        if f.is_file() {
            return Ok(f);
        }
        return Err(msg(format!("{}: a directory without model.onnx (give the model file, or a directory `jetc convert` wrote)", p.display())));
    }
    Ok(p.to_path_buf())
}

/// One model's figures.
struct Measured {
    name: String,
    prefill: Option<PrefillMeasure>,
    decode: Vec<DecodeMeasure>,
}

/// What to measure: a model file, or a model converted in memory to a layout.
enum Subject<'a> {
    File(&'a Path),
    Converted(&'a Path, &'a Path),
}

fn load_subject(subject: &Subject, args: &BenchArgs) -> Result<(String, jetc_ir::Graph)> {
    let precision = if args.stored_weights { load::Precision::Stored } else { load::Precision::F32 };
    match subject {
        Subject::File(path) => {
            let file = model_file(path)?;
            Ok((file.display().to_string(), load::load_raised_with(&file, precision)?))
        }
        Subject::Converted(path, layout_file) => {
            let file = model_file(path)?;
            let layout = Layout::from_file(layout_file).map_err(msg)?;
            let mut g = load::load_raised_with(&file, precision)?;
            convert(&mut g, &layout, args.seed).map_err(|e| msg(format!("{} with layout {}: {e}", file.display(), layout_file.display())))?;
            Ok((format!("{} as {}", file.display(), layout_file.display()), g))
        }
    }
}

fn measure(subject: &Subject, args: &BenchArgs, bar: &ProgressBar) -> Result<Measured> {
    bar.set_message("loading");
    let (name, graph) = load_subject(subject, args)?;
    let with = |e: jetc::generate::GenerateError| msg(format!("{name}: {e}"));
    let mut bench = Bench::new(&graph).map_err(with)?;
    let prefill = if args.prefill_tokens > 0 {
        bar.set_message(format!("{name}: prefill of {} x {} tokens", args.batch, args.prefill_tokens));
        Some(bench.prefill(args.batch, args.prefill_tokens, args.seed).map_err(with)?)
    } else {
        None
    };
    bar.inc(1);
    let mut decode = Vec::new();
    for &c in &args.contexts {
        bar.set_message(format!("{name}: decode at context {c}, batch {}", args.batch));
        decode.push(bench.decode(args.batch, c, args.new_tokens, args.seed).map_err(with)?);
        bar.inc(1);
    }
    Ok(Measured { name, prefill, decode })
}

fn mb(b: u64) -> f64 {
    b as f64 / 1e6
}

fn decode_json(d: &DecodeMeasure) -> serde_json::Value {
    json!({
        "context": d.context,
        "batch": d.batch,
        "steps": d.steps,
        "decode_tokens_per_s": d.tokens_per_s,
        "median_step_s": d.median_step_s,
        "cache_bytes": d.cache_bytes,
        "weight_bytes": d.weight_bytes,
        "bytes_per_step": d.bytes_per_step,
        "effective_gb_per_s": d.effective_gb_per_s,
        "peak_value_bytes": d.peak_value_bytes,
        "peak_rss_bytes": d.peak_rss_bytes,
    })
}

fn model_json(m: &Measured) -> serde_json::Value {
    json!({
        "model": m.name,
        "prefill": m.prefill.as_ref().map(|p| json!({
            "batch": p.batch, "tokens": p.tokens, "seconds": p.seconds,
            "tokens_per_s": p.tokens_per_s, "peak_rss_bytes": p.peak_rss_bytes,
        })),
        "decode": m.decode.iter().map(decode_json).collect::<Vec<_>>(),
    })
}

fn print_model(m: &Measured, stream_gb_s: f64) {
    println!("{}", m.name);
    if let Some(p) = &m.prefill {
        println!(
            "  prefill: {} x {} tokens in {:.2} s = {:.1} tok/s (peak RSS {} MB)",
            p.batch,
            p.tokens,
            p.seconds,
            p.tokens_per_s,
            p.peak_rss_bytes.map_or("?".into(), |b| format!("{:.0}", mb(b)))
        );
    }
    println!("  | context | batch | decode tok/s | ms/step | cache MB | bytes/step MB | GB/s (of {stream_gb_s:.1} stream) | peak RSS MB |");
    println!("  |---|---|---|---|---|---|---|---|");
    for d in &m.decode {
        println!(
            "  | {} | {} | {:.1} | {:.1} | {:.1} | {:.1} | {:.1} ({:.0}%) | {} |",
            d.context,
            d.batch,
            d.tokens_per_s,
            d.median_step_s * 1e3,
            mb(d.cache_bytes),
            mb(d.bytes_per_step),
            d.effective_gb_per_s,
            100.0 * d.effective_gb_per_s / stream_gb_s.max(1e-9),
            d.peak_rss_bytes.map_or("?".into(), |b| format!("{:.0}", mb(b)))
        );
    }
}

pub fn run(args: &BenchArgs) -> Result<()> {
    if args.contexts.is_empty() {
        return Err(msg("--context: give at least one context length (e.g. 1k,4k,16k,32k)"));
    }
    if args.batch == 0 || args.new_tokens == 0 {
        return Err(msg("--batch and --new-tokens must be at least 1"));
    }
    let mut models = vec![Subject::File(&args.model)];
    match (&args.compare, &args.compare_layout) {
        (Some(_), Some(_)) => return Err(msg("give either --compare MODEL2 or --compare-layout FILE, not both")),
        (Some(m), None) => models.push(Subject::File(m)),
        (None, Some(l)) => models.push(Subject::Converted(&args.model, l)),
        (None, None) => {}
    }
    let bar = if args.json { ProgressBar::hidden() } else { ProgressBar::new((models.len() * (args.contexts.len() + 1)) as u64) };
    bar.set_style(ProgressStyle::with_template("{bar:30} {pos}/{len} {msg}").unwrap_or_else(|_| ProgressStyle::default_bar()));
    bar.set_message("measuring stream bandwidth");
    let stream = jetc::bench::stream_read_bandwidth(1 << 30, 3);
    let mut measured = Vec::new();
    for m in &models {
        measured.push(measure(m, args, &bar)?);
    }
    bar.finish_and_clear();
    // Per context: the second model's speedup over the first, measured and from bytes.
    let ratios: Vec<serde_json::Value> = match measured.as_slice() {
        [a, b] => a
            .decode
            .iter()
            .zip(&b.decode)
            .map(|(x, y)| {
                json!({
                    "context": x.context,
                    "measured": y.tokens_per_s / x.tokens_per_s.max(1e-12),
                    "expected_from_bytes": x.bytes_per_step as f64 / (y.bytes_per_step as f64).max(1.0),
                })
            })
            .collect(),
        _ => Vec::new(),
    };
    if let Some(png) = &args.plot {
        let series: Vec<jetc_train::plot::Series> = measured
            .iter()
            .map(|m| jetc_train::plot::Series {
                label: m.name.split(" as ").map(|part| Path::new(part).file_name().map_or(part.to_string(), |f| f.to_string_lossy().into_owned())).collect::<Vec<_>>().join(" as "),
                points: m.decode.iter().map(|d| (d.context as f64, d.tokens_per_s)).collect(),
            })
            .collect();
        let title = format!("decode throughput, batch {}, {} new tokens", args.batch, args.new_tokens);
        let axes = jetc_train::plot::Axes { title: &title, x_desc: "context (tokens)", y_desc: "decode tokens/s (all sequences)", log_x: true };
        jetc_train::plot::xy_curves(png, &png.with_extension("svg"), &series, &axes).map_err(msg)?;
    }
    if args.json {
        let j = json!({
            "stream_read_gb_per_s": stream,
            "batch": args.batch,
            "new_tokens": args.new_tokens,
            "threads": rayon::current_num_threads(),
            "models": measured.iter().map(model_json).collect::<Vec<_>>(),
            "speedup": ratios,
            "plot": args.plot.as_ref().map(|p| p.display().to_string()),
        });
        println!("{}", serde_json::to_string_pretty(&j).map_err(msg)?);
        return Ok(());
    }
    println!("{} threads; stream read bandwidth {stream:.1} GB/s; {} timed steps after one untimed, caches filled at each context", rayon::current_num_threads(), args.new_tokens);
    for m in &measured {
        print_model(m, stream);
    }
    if !ratios.is_empty() {
        println!("speedup of {} over {}:", measured[1].name, measured[0].name);
        println!("  | context | measured | expected from bytes/step |");
        println!("  |---|---|---|");
        for r in &ratios {
            println!(
                "  | {} | {:.2}x | {:.2}x |",
                r["context"],
                r["measured"].as_f64().unwrap_or(f64::NAN),
                r["expected_from_bytes"].as_f64().unwrap_or(f64::NAN)
            );
        }
    }
    if let Some(p) = &args.plot {
        println!("plot: {} (and .svg)", p.display());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn contexts_parse_with_k_suffix() {
        assert_eq!(parse_context("4k"), Ok(4096));
        assert_eq!(parse_context("32K"), Ok(32768));
        assert_eq!(parse_context(" 1000 "), Ok(1000));
        assert!(parse_context("4m").is_err());
        assert!(parse_context("").is_err());
    }
}
