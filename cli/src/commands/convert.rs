//! `jetc convert`: a pretrained decoder -> a hybrid (full attention / SWA / linear mixer)
//! model, written in the Jet-Nemotron Hugging Face layout. Everything is checked and built in
//! memory first; nothing is written when the layout is bad.
use std::path::{Path, PathBuf};

use jetc::convert::{convert, Layout};
use jetc::jet_hf::{export_jet_hf, HfOptions};
use jetc_passes::linearize::{Block, MixerConfig};

use crate::error::{CliError, Result};
use crate::load;

pub struct ConvertArgs {
    pub model: PathBuf,
    pub output: PathBuf,
    pub full_attn: Vec<usize>,
    pub swa: Vec<usize>,
    pub window: Option<usize>,
    pub block: String,
    pub heads: Option<usize>,
    pub dk: Option<usize>,
    pub dv: Option<usize>,
    pub format: String,
    pub layout: Option<PathBuf>,
    pub seed: u64,
    pub json: bool,
    pub cache_dtype: Option<String>,
}

pub fn run(a: &ConvertArgs) -> Result<()> {
    let layout = match &a.layout {
        Some(p) => Layout::from_file(p).map_err(CliError::Msg)?,
        None => Layout {
            full_attn: a.full_attn.clone(),
            swa: a.swa.clone(),
            window: a.window,
            block: Block::parse(&a.block).map_err(CliError::Msg)?,
            config: MixerConfig { heads: a.heads, dk: a.dk, dv: a.dv, ..MixerConfig::default() },
        },
    };
    match a.format.as_str() {
        "jet-hf" => {}
        "onnx" | "both" => {
            return Err(CliError::Msg(
                "ONNX output of converted models (opset 27 LinearAttention) is not built yet; use --format jet-hf".into(),
            ))
        }
        other => return Err(CliError::Msg(format!("unknown format `{other}` (onnx, jet-hf or both)"))),
    }
    let kv_dtype = super::inspect::parse_cache_dtype(a.cache_dtype.as_deref())?;
    let mut g = load::load_raised(&a.model)?;
    convert(&mut g, &layout, a.seed).map_err(|m| CliError::Msg(format!("{}: {m}", a.model.display())))?;
    let summary = jetc_passes::summary::summarize_with(&g, kv_dtype).map_err(CliError::Msg)?;
    write_jet_hf(&g, &a.output)?;
    if a.json {
        println!("{}", serde_json::to_string_pretty(&super::inspect::to_json(&summary)).unwrap_or_default());
    } else {
        super::inspect::print_table(&a.output, &summary);
    }
    eprintln!("wrote {} (config.json, model.safetensors)", a.output.display());
    Ok(())
}

fn write_jet_hf(g: &jetc_ir::Graph, dir: &Path) -> Result<()> {
    export_jet_hf(g, dir, &HfOptions::default()).map_err(|e| CliError::Msg(e.to_string()))
}
