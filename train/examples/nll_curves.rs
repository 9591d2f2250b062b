//! Draws held-out NLL against training tokens for several `jetc distill` runs, beside
//! reference levels, as PNG + SVG (the figure of docs/benchmarks.md).
//!
//! ```text
//! cargo run --release -p jetc-train --example nll_curves -- OUT.png "TITLE" \
//!     "label=RUN_DIR[@NLL_AT_0][+TOKENS]" ... "ref:label=VALUE" ...
//! ```
//! A run contributes every metrics.jsonl line with a `heldout_nll`, at its `tokens` (plus
//! `+TOKENS` when the run continued an earlier one), and its starting NLL at token 0: from
//! distill.json's `heldout_nll_before`, or `@NLL_AT_0` for a run stopped before writing it.
use std::path::{Path, PathBuf};

use jetc_train::plot::{nll_curves, Series};

fn run_series(spec: &str) -> Result<Series, String> {
    let (label, rest) = spec.split_once('=').ok_or_else(|| format!("`{spec}`: expected label=RUN_DIR"))?;
    let (rest, offset) = match rest.rsplit_once('+') {
        Some((r, t)) => (r, t.parse::<f64>().map_err(|e| format!("`{spec}`: tokens offset: {e}"))?),
        None => (rest, 0.0),
    };
    let (dir, at0) = match rest.split_once('@') {
        Some((d, v)) => (d, Some(v.parse::<f64>().map_err(|e| format!("`{spec}`: NLL at 0: {e}"))?)),
        None => (rest, None),
    };
    let dir = PathBuf::from(dir);
    let metrics = dir.join("metrics.jsonl");
    let text = std::fs::read_to_string(&metrics).map_err(|e| format!("{}: {e}", metrics.display()))?;
    let summary: Option<serde_json::Value> = std::fs::read(dir.join("distill.json")).ok().and_then(|b| serde_json::from_slice(&b).ok());
    let mut points = Vec::new();
    if let Some(v) = at0.or_else(|| summary.as_ref().and_then(|s| s["heldout_nll_before"].as_f64())) {
        points.push((offset, v));
    }
    for line in text.lines() {
        let v: serde_json::Value = serde_json::from_str(line).map_err(|e| format!("{}: {e}", metrics.display()))?;
        if let (Some(t), Some(nll)) = (v["tokens"].as_f64(), v["heldout_nll"].as_f64()) {
            points.push((offset + t, nll));
        }
    }
    if points.is_empty() {
        return Err(format!("{}: no held-out NLL in it (run with --eval-every)", dir.display()));
    }
    Ok(Series { label: label.to_string(), points })
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.len() < 3 {
        eprintln!("usage: nll_curves OUT.png TITLE label=RUN_DIR[@NLL_AT_0][+TOKENS]... ref:label=VALUE...");
        std::process::exit(2);
    }
    let png = Path::new(&args[0]);
    let mut series = Vec::new();
    let mut refs = Vec::new();
    for a in &args[2..] {
        let parsed = match a.strip_prefix("ref:") {
            Some(r) => r
                .split_once('=')
                .and_then(|(l, v)| v.parse::<f64>().ok().map(|v| refs.push((l.to_string(), v))))
                .ok_or_else(|| format!("`{a}`: expected ref:label=VALUE")),
            None => run_series(a).map(|s| series.push(s)),
        };
        if let Err(e) = parsed {
            eprintln!("error: {e}");
            std::process::exit(1);
        }
    }
    let svg = png.with_extension("svg");
    match nll_curves(png, &svg, &series, &refs, &args[1]) {
        Ok(text) => {
            if !text {
                eprintln!("note: no font found (set JETC_FONT to a .ttf); drawn without labels");
            }
            eprintln!("wrote {} and {}", png.display(), svg.display());
        }
        Err(e) => {
            eprintln!("error: {e}");
            std::process::exit(1);
        }
    }
}
