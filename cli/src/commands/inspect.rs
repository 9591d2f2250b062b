//! `jetc inspect`: architecture summary of a decoder (layers, mixers, heads, parameters,
//! cache per token and per sequence), as a table or as JSON.
use std::path::Path;

use jetc_ir::DType;
use jetc_passes::summary::{summarize_with, DecoderSummary};
use serde_json::json;

use crate::error::{CliError, Result};
use crate::load;

/// Context lengths at which the per-sequence cache is reported.
const CONTEXTS: [usize; 3] = [4096, 65536, 262144];

pub(crate) fn parse_cache_dtype(cache_dtype: Option<&str>) -> Result<Option<DType>> {
    Ok(match cache_dtype {
        None => None,
        Some("f32") => Some(DType::F32),
        Some("f16") => Some(DType::F16),
        Some("bf16") => Some(DType::BF16),
        Some(other) => return Err(CliError::Msg(format!("unknown cache dtype `{other}` (f32, f16 or bf16)"))),
    })
}

pub fn run(model: &Path, as_json: bool, cache_dtype: Option<&str>) -> Result<()> {
    let kv_dtype = parse_cache_dtype(cache_dtype)?;
    let g = load::load_raised(model)?;
    let s = summarize_with(&g, kv_dtype).map_err(|m| CliError::Msg(format!("{}: {m}", model.display())))?;
    if as_json {
        println!("{}", serde_json::to_string_pretty(&to_json(&s)).unwrap_or_default());
    } else {
        print_table(model, &s);
    }
    Ok(())
}

pub(crate) fn to_json(s: &DecoderSummary) -> serde_json::Value {
    let mixers: Vec<_> = s
        .mixers
        .iter()
        .map(|m| {
            json!({
                "layer": m.layer, "kind": m.kind, "heads": m.heads, "kv_heads": m.kv_heads,
                "head_dim": m.head_dim, "rope": m.rope, "window": m.window,
                "dk": m.dk, "dv": m.dv,
                "cache_bytes_per_token": m.cache_bytes_per_token, "state_bytes": m.state_bytes,
            })
        })
        .collect();
    let per_seq: serde_json::Map<String, serde_json::Value> =
        CONTEXTS.iter().map(|&c| (c.to_string(), json!(sequence_bytes(s, c)))).collect();
    json!({
        "layers": s.layers,
        "hidden": s.hidden,
        "vocab": s.vocab,
        "intermediate": s.intermediate,
        "params": s.params,
        "weight_bytes": s.weight_bytes,
        "tied_embeddings": s.tied_embeddings,
        "mixers": mixers,
        "cache_dtype": s.cache_dtype.name(),
        "kv_cache_bytes_per_token": s.kv_cache_bytes_per_token,
        "cache_bytes_per_sequence": per_seq,
    })
}

/// Cache of one sequence of `context` tokens over all layers.
fn sequence_bytes(s: &DecoderSummary, context: usize) -> usize {
    s.mixers.iter().map(|m| m.cache_bytes(context)).sum()
}

fn mb(bytes: usize) -> String {
    if bytes < 100_000 {
        format!("{:.1} kB", bytes as f64 / 1e3)
    } else {
        format!("{:.1} MB", bytes as f64 / 1e6)
    }
}

pub(crate) fn print_table(model: &Path, s: &DecoderSummary) {
    println!("{}", model.display());
    println!("  layers {}  hidden {}  vocab {}  intermediate {}", s.layers, s.hidden, s.vocab,
        s.intermediate.map(|v| v.to_string()).unwrap_or_else(|| "-".into()));
    println!("  params {:.3} M ({})", s.params as f64 / 1e6, mb(s.weight_bytes));
    println!(
        "  {:>5}  {:<10} {:>5} {:>8} {:>8} {:>5} {:>7} {:>12} {:>12}",
        "layer", "mixer", "heads", "kv_heads", "head_dim", "rope", "window", "cache/token", "fixed cache"
    );
    for m in &s.mixers {
        let dims = match (m.dk, m.dv) {
            (Some(k), Some(v)) => format!("{k}/{v}"),
            _ => m.head_dim.to_string(),
        };
        println!(
            "  {:>5}  {:<10} {:>5} {:>8} {:>8} {:>5} {:>7} {:>10} B {:>10} B",
            m.layer, m.kind, m.heads, m.kv_heads, dims, m.rope,
            m.window.map(|w| w.to_string()).unwrap_or_else(|| "-".into()), m.cache_bytes_per_token, m.state_bytes
        );
    }
    print!("  cache (KV/conv {}, state f32) per sequence:", s.cache_dtype);
    for c in CONTEXTS {
        print!(" {} at {}K", mb(sequence_bytes(s, c)), c / 1024);
    }
    println!();
}
