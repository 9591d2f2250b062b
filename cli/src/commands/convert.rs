//! `jetc convert`: a pretrained decoder -> a hybrid (full attention / SWA / linear mixer)
//! model, written in the Jet-Nemotron Hugging Face layout. Everything is checked and built in
//! memory first; nothing is written when the layout is bad.
use std::path::{Path, PathBuf};

use jetc::convert::{convert, Layout};
use jetc::jet_hf::{export_jet_hf, HfOptions};
use jetc_onnx::{export_model, ExportOptions};
use jetc_passes::linearize::{Block, MixerConfig};
use jetc_passes::lower::Lower;
use jetc_passes::PassManager;

use crate::error::{CliError, Result};
use crate::load;

pub struct ConvertArgs {
    pub model: PathBuf,
    pub output: PathBuf,
    pub layout: LayoutFlags,
    pub format: String,
    pub seed: u64,
    pub json: bool,
    pub cache_dtype: Option<String>,
    /// A distill run whose newest checkpoint gives the linear blocks their weights.
    pub supernet: Option<PathBuf>,
}

/// The layout flags shared by `convert` and `distill`: a layout file, or the per-layer form.
#[derive(clap::Args, Clone, Debug)]
pub struct LayoutFlags {
    /// Layers (0-indexed) that keep full attention, e.g. 14,19.
    #[arg(long, value_delimiter = ',')]
    pub full_attn: Vec<usize>,
    /// Layers that become sliding-window attention.
    #[arg(long, value_delimiter = ',')]
    pub swa: Vec<usize>,
    /// SWA window in tokens (each query sees itself and the previous window-1 keys).
    #[arg(long)]
    pub window: Option<usize>,
    /// Linear mixer for the remaining layers: jetblock, gated-deltanet, deltanet, gla, retnet, mamba2 or rwkv7.
    #[arg(long, default_value = "jetblock")]
    pub block: String,
    /// Mixer heads (default: the base model's).
    #[arg(long)]
    pub heads: Option<usize>,
    /// Mixer key head size (default: 3/4 of the base head size).
    #[arg(long)]
    pub dk: Option<usize>,
    /// Mixer value head size (default: twice the base head size).
    #[arg(long)]
    pub dv: Option<usize>,
    /// A JSON layout file instead of the flags above.
    #[arg(long)]
    pub layout: Option<PathBuf>,
}

pub fn layout_of(a: &LayoutFlags) -> Result<Layout> {
    Ok(match &a.layout {
        Some(p) => Layout::from_file(p).map_err(CliError::Msg)?,
        None => Layout {
            full_attn: a.full_attn.clone(),
            swa: a.swa.clone(),
            window: a.window,
            block: Block::parse(&a.block).map_err(CliError::Msg)?,
            blocks: vec![],
            config: MixerConfig { heads: a.heads, dk: a.dk, dv: a.dv, ..MixerConfig::default() },
        },
    })
}

pub fn run(a: &ConvertArgs) -> Result<()> {
    let layout = layout_of(&a.layout)?;
    if !matches!(a.format.as_str(), "onnx" | "jet-hf" | "both" | "auto") {
        return Err(CliError::Msg(format!("unknown format `{}` (onnx, jet-hf, both or auto)", a.format)));
    }
    let mut g = load::load_raised(&a.model)?;
    let net = a.supernet.as_deref().map(jetc_search::supernet::Supernet::open).transpose()?;
    if let Some(net) = &net {
        net.check_model(&g, &a.model)?;
    }
    // A supernet's subnet takes the run's seed: its blocks' non-learned constants come from it.
    let seed = net.as_ref().map_or(a.seed, |n| n.seed);
    convert(&mut g, &layout, seed).map_err(|m| CliError::Msg(format!("{}: {m}", a.model.display())))?;
    if let Some(net) = &net {
        let n = net.bind(&mut g)?;
        eprintln!("{n} weights from {}", net.checkpoint.display());
    }
    write_converted(&g, &a.model, &a.output, &a.format, if a.json { Report::Json } else { Report::Table }, a.cache_dtype.as_deref())
}

/// Writes a converted graph the way `jetc convert` does: ONNX (lowered to opset 27) and/or
/// the Jet-Nemotron layout (`format`: onnx, jet-hf, both, auto), the tokenizer of `model`
/// beside the ONNX, and the summary (table or `--json`). Everything is built in memory
/// before anything is written.
/// How `write_converted` reports the converted model's summary on stdout.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Report {
    Table,
    Json,
    /// Nothing on stdout (the caller prints its own summary).
    Silent,
}

/// Where the ONNX model goes: `output` itself when it names a `.onnx` file (and no jet-hf
/// directory is written beside it), otherwise `model.onnx` inside the directory `output`.
pub fn onnx_target(output: &Path, hf: bool) -> PathBuf {
    let is_file = output.extension().is_some_and(|e| e.eq_ignore_ascii_case("onnx"));
    if hf || !is_file {
        output.join("model.onnx")
    } else {
        output.to_path_buf()
    }
}

pub fn write_converted(g: &jetc_ir::Graph, model: &Path, output: &Path, format: &str, report: Report, cache_dtype: Option<&str>) -> Result<()> {
    let (onnx, hf) = match format {
        "jet-hf" => (false, true),
        "onnx" => (true, false),
        "both" | "auto" => (true, true),
        other => return Err(CliError::Msg(format!("unknown format `{other}` (onnx, jet-hf, both or auto)"))),
    };
    let auto = format == "auto";
    let kv_dtype = super::inspect::parse_cache_dtype(cache_dtype)?;
    let summary = jetc_passes::summary::summarize_with(g, kv_dtype).map_err(CliError::Msg)?;
    // Build every output in memory before writing any.
    let lowered = if onnx {
        let mut l = g.clone();
        PassManager::new().add(Box::new(Lower)).run(&mut l)?;
        Some(l)
    } else {
        None
    };
    let onnx_path = onnx_target(output, hf);
    let mut wrote_hf = hf;
    if hf {
        match write_jet_hf(g, output) {
            Ok(()) => {}
            // The Jet-Nemotron layout has no place for this hybrid (another linear block, q/k
            // norms, ...): refused before anything is written; ONNX carries it.
            Err(e) if auto => {
                eprintln!("note: no Jet-Nemotron (jet-hf) export: {e}; writing ONNX only");
                wrote_hf = false;
            }
            Err(e) => return Err(e),
        }
    }
    if let Some(l) = lowered {
        if let Some(parent) = onnx_path.parent().filter(|p| !p.as_os_str().is_empty()) {
            std::fs::create_dir_all(parent).map_err(|e| CliError::Msg(format!("{}: {e}", parent.display())))?;
        }
        let big = l.node_ids().filter_map(|id| match l.node(id).map(|n| &n.op) {
            Ok(jetc_ir::Op::Const(t)) => Some(t.bytes().len()),
            _ => None,
        }).sum::<usize>() > (256 << 20);
        export_model(&l, &onnx_path, &ExportOptions { external_data: big, ..Default::default() })?;
    }
    match report {
        Report::Json => println!("{}", serde_json::to_string_pretty(&super::inspect::to_json(&summary)).unwrap_or_default()),
        Report::Table => super::inspect::print_table(output, &summary),
        Report::Silent => {}
    }
    if onnx {
        let dir = onnx_path.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
        if let Err(e) = carry_tokenizer(model, dir) {
            eprintln!("note: the tokenizer was not written beside the model: {e}");
        }
    }
    match (onnx, wrote_hf) {
        (true, false) => eprintln!("wrote {} (ONNX opset 27)", onnx_path.display()),
        (false, true) => eprintln!("wrote {} (config.json, model.safetensors)", output.display()),
        _ => eprintln!("wrote {} (model.onnx, config.json, model.safetensors)", output.display()),
    }
    Ok(())
}

/// The source model's tokenizer, beside the converted ONNX, so that `jetc generate` (and
/// transformers) can use it: built from a GGUF's metadata and saved in the Hugging Face
/// layout, or the Hugging Face files beside an ONNX source copied over.
fn carry_tokenizer(model: &Path, dir: &Path) -> std::result::Result<(), String> {
    if jetc::pipeline::is_gguf(model) {
        let file = jetc_gguf::GgufFile::open(model).map_err(|e| e.to_string())?;
        let (tok, template) = jetc_text::from_gguf(&file).map_err(|e| e.to_string())?;
        return tok.save_hf(dir, template.as_ref()).map_err(|e| e.to_string());
    }
    let src = model.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
    if src.canonicalize().ok() == dir.canonicalize().ok() {
        return Ok(());
    }
    for name in ["tokenizer.json", "tokenizer_config.json", "generation_config.json", "special_tokens_map.json", "chat_template.jinja"] {
        let from = src.join(name);
        if from.is_file() {
            std::fs::copy(&from, dir.join(name)).map_err(|e| format!("{}: {e}", from.display()))?;
        }
    }
    Ok(())
}

fn write_jet_hf(g: &jetc_ir::Graph, dir: &Path) -> Result<()> {
    export_jet_hf(g, dir, &HfOptions::default()).map_err(|e| CliError::Msg(e.to_string()))
}
