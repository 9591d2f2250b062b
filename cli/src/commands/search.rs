//! `jetc search`: the PostNAS search over a trained supernet (`jetc distill --supernet`).
//!
//! `heatmap`: each layer alone on full attention, every other layer the supernet's linear
//! block, scored on the tasks, plus the all-linear subnet as the level gains are read from.
//! Each subnet is built in memory from the run's weights (nothing converted to disk). Every
//! scored cell is appended to DIR/cells.jsonl as it finishes, so `--resume` continues a map
//! that was stopped; at the end DIR holds heatmap.json (rows, findings, cells), heatmap.png
//! and heatmap.svg.
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Instant;

use indicatif::{ProgressBar, ProgressStyle};
use jetc::convert::Layout;
use jetc_eval::suite::{self, Suite, SuiteOptions};
use jetc_models::generate::Generator;
use jetc_passes::linearize::{attention_layers, Block};
use jetc_search::heatmap::{Cell, HeatMap};
use jetc_search::supernet::Supernet;
use serde_json::json;

use crate::error::{CliError, Result};
use crate::load;

pub struct HeatmapArgs {
    pub supernet: PathBuf,
    /// The base model (default: the run's own, from its distill.json).
    pub model: Option<PathBuf>,
    pub output: PathBuf,
    pub suite: SuiteOptions,
    pub tokenizer: Option<PathBuf>,
    /// Layers to map (default: all).
    pub layers: Vec<usize>,
    /// The linear block of the other layers (default: the run's).
    pub block: Option<String>,
    pub resume: bool,
    pub json: bool,
}

fn msg(e: impl std::fmt::Display) -> CliError {
    CliError::Msg(e.to_string())
}

/// The cells already in `path` (a resumed map), by layer.
fn read_cells(path: &Path) -> Result<Vec<Cell>> {
    let Ok(text) = std::fs::read_to_string(path) else { return Ok(Vec::new()) };
    text.lines()
        .filter(|l| !l.trim().is_empty())
        .enumerate()
        .map(|(i, l)| {
            let v: serde_json::Value = serde_json::from_str(l).map_err(|e| msg(format!("{}:{}: {e}", path.display(), i + 1)))?;
            Cell::from_json(&v).map_err(|e| msg(format!("{}:{}: {e}", path.display(), i + 1)))
        })
        .collect()
}

pub fn heatmap(a: &HeatmapArgs) -> Result<()> {
    // Everything that can be checked is checked before DIR is touched.
    let choices = suite::read_choice_tasks(&a.suite).map_err(msg)?;
    let net = Supernet::open(&a.supernet)?;
    let model = a.model.clone().or_else(|| net.model.clone()).ok_or_else(|| {
        msg(format!("--supernet {}: its distill.json names no model (give --model)", a.supernet.display()))
    })?;
    let block_name = a.block.clone().or_else(|| net.block.clone()).unwrap_or_else(|| "jetblock".into());
    let block = Block::parse(&block_name).map_err(msg)?;
    if !net.candidates.is_empty() && !net.candidates.iter().any(|c| c == block.name() || c == &block_name) {
        return Err(msg(format!("--block {block_name}: the supernet's candidates are {}", net.candidates.join(","))));
    }
    let params_json = json!({
        "supernet": a.supernet.display().to_string(), "model": model.display().to_string(), "block": block.name(),
        "tasks": a.suite.tasks, "limit": a.suite.limit, "seq_len": a.suite.seq_len, "seed": a.suite.seed,
        "filler_tokens": a.suite.filler_tokens, "data": a.suite.data,
    });
    let cells_path = a.output.join("cells.jsonl");
    let params_path = a.output.join("params.json");
    if a.resume {
        let old: serde_json::Value = std::fs::read(&params_path)
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok())
            .ok_or_else(|| msg(format!("--resume: {} is not a heat-map directory (no params.json)", a.output.display())))?;
        if old != params_json {
            return Err(msg(format!("--resume: {} was mapped with other settings ({old}); give the same flags", params_path.display())));
        }
    } else if a.output.exists() && std::fs::read_dir(&a.output).map(|mut d| d.next().is_some()).unwrap_or(true) {
        return Err(msg(format!("-o {}: not empty (give a new directory, or --resume)", a.output.display())));
    }
    let base = load::load_raised(&model)?;
    let n_layers = attention_layers(&base)?.len();
    net.check_model(&base, &model)?;
    if let Some(&l) = a.layers.iter().find(|&&l| l >= n_layers) {
        return Err(msg(format!("--layers: layer {l} of a model with {n_layers} layers")));
    }
    let layers: Vec<usize> = if a.layers.is_empty() { (0..n_layers).collect() } else { a.layers.clone() };
    let (tok, _) = match &a.tokenizer {
        Some(p) => super::generate::text_from(p)?,
        None => super::generate::text_of(&model)?,
    };
    let suite = Suite::prepare(&a.suite, &tok, choices).map_err(msg)?;
    // The first subnet is built before anything is written: a supernet of another model fails here.
    let layout_of = |layer: Option<usize>| Layout {
        full_attn: layer.into_iter().collect(),
        swa: vec![],
        window: net.window,
        block,
        blocks: vec![],
        config: net.config.clone(),
    };
    let mut first = Some(net.subnet(&base, &layout_of(None))?);

    std::fs::create_dir_all(&a.output).map_err(|e| msg(format!("{}: {e}", a.output.display())))?;
    std::fs::write(&params_path, serde_json::to_string_pretty(&params_json).map_err(msg)?).map_err(|e| msg(format!("{}: {e}", params_path.display())))?;
    let mut cells = if a.resume { read_cells(&cells_path)? } else { Vec::new() };
    let todo: Vec<Option<usize>> = std::iter::once(None).chain(layers.iter().map(|&l| Some(l))).filter(|l| !cells.iter().any(|c| c.layer == *l)).collect();
    let started = Instant::now();
    let pb = if a.json { ProgressBar::hidden() } else { ProgressBar::new((layers.len() + 1) as u64) };
    if let Ok(style) = ProgressStyle::with_template("heat map [{bar:30}] {pos}/{len} subnets, {elapsed} elapsed, eta {eta} {msg}") {
        pb.set_style(style.progress_chars("=> "));
    }
    pb.set_position((layers.len() + 1 - todo.len()) as u64);
    for layer in todo {
        let t0 = Instant::now();
        let graph = match (layer, first.take()) {
            (None, Some(g)) => g,
            _ => net.subnet(&base, &layout_of(layer))?,
        };
        let mut gen = Generator::new(&graph).map_err(msg)?;
        let what = layer.map_or("all linear".to_string(), |l| format!("layer {l}"));
        let scores = suite.score(&mut gen, &mut |task, i, n| pb.set_message(format!("{what}: {task} {i}/{n}"))).map_err(msg)?;
        let cell = Cell { layer, scores: scores.into_iter().map(|s| s.0).collect(), seconds: t0.elapsed().as_secs_f64() };
        let mut f = std::fs::OpenOptions::new().create(true).append(true).open(&cells_path).map_err(|e| msg(format!("{}: {e}", cells_path.display())))?;
        writeln!(f, "{}", cell.to_json()).map_err(|e| msg(format!("{}: {e}", cells_path.display())))?;
        cells.push(cell);
        pb.inc(1);
    }
    pb.finish_and_clear();
    let map = HeatMap { n_layers, layers: layers.clone(), block: block.name().to_string(), cells };
    let mut out = map.to_json()?;
    out["params"] = params_json;
    out["seconds_this_run"] = json!(started.elapsed().as_secs_f64());
    let json_path = a.output.join("heatmap.json");
    std::fs::write(&json_path, serde_json::to_string_pretty(&out).map_err(msg)?).map_err(|e| msg(format!("{}: {e}", json_path.display())))?;
    let run_name = a.supernet.file_name().map_or_else(|| a.supernet.display().to_string(), |n| n.to_string_lossy().into_owned());
    let title = format!("jetc search heatmap: supernet {run_name}, {} subnets", layers.len() + 1);
    if !map.plot(&a.output.join("heatmap.png"), &a.output.join("heatmap.svg"), &title)? {
        eprintln!("note: no font found for the heat-map labels (set JETC_FONT to a .ttf); drawn without text");
    }
    if a.json {
        println!("{}", serde_json::to_string_pretty(&out).map_err(msg)?);
        return Ok(());
    }
    print_table(&map)?;
    println!("wrote {} (and heatmap.png, heatmap.svg, cells.jsonl)", json_path.display());
    Ok(())
}

/// The map as text: one line per row, the all-linear value, then a value per layer; then
/// the findings.
fn print_table(map: &HeatMap) -> Result<()> {
    let rows = map.rows()?;
    print!("{:<24} {:>9}", "task metric", "no attn");
    for l in &map.layers {
        print!(" {:>6}", format!("L{l}"));
    }
    println!();
    for r in &rows {
        print!("{:<24} {:>9}", format!("{} {}", r.task, r.metric), r.baseline.map_or("-".into(), |b| format!("{b:.3}")));
        for v in &r.values {
            print!(" {v:>6.3}");
        }
        println!();
    }
    for r in &rows {
        let ranked = r.ranked(&map.layers);
        let top: Vec<String> = ranked.iter().take(5).map(|(l, g)| format!("{l} ({g:+.3})")).collect();
        println!("{} {}: best layers {}; half the gain from {:?}", r.task, r.metric, top.join(", "), r.carriers(&map.layers));
    }
    Ok(())
}
