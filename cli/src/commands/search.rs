//! `jetc search`: the PostNAS search over a trained supernet (`jetc distill --supernet`).
//!
//! `heatmap`: each layer alone on full attention, every other layer the supernet's linear
//! block, scored on the tasks, plus the all-linear subnet as the level gains are read from.
//! Each subnet is built in memory from the run's weights (nothing converted to disk). Every
//! scored cell is appended to DIR/cells.jsonl as it finishes, so `--resume` continues a map
//! that was stopped; at the end DIR holds heatmap.json (rows, findings, cells), heatmap.png
//! and heatmap.svg.
use std::cell::RefCell;
use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::rc::Rc;
use std::time::Instant;

use indicatif::{ProgressBar, ProgressStyle};
use jetc::convert::Layout;

use super::convert::LayoutFlags;
use jetc_eval::suite::{self, Suite, SuiteOptions};
use jetc_eval::Score;
use jetc_eval::runner::{HiddenCache, Runner};
use jetc_models::generate::Generator;
use jetc_passes::linearize::{attention_layers, Block};
use jetc_search::heatmap::{scores_from_json, Cell, HeatMap};
use jetc_search::placement::{beam_cost, binomial, search, Objective, Scored};
use jetc_search::supernet::Supernet;
use serde_json::json;

use crate::error::{CliError, Result};
use crate::load;

/// The flags every search command takes.
pub struct SearchCommon {
    pub supernet: PathBuf,
    /// The base model (default: the run's own, from its distill.json).
    pub model: Option<PathBuf>,
    pub output: PathBuf,
    pub suite: SuiteOptions,
    pub tokenizer: Option<PathBuf>,
    /// The linear block of the non-attention layers (default: the run's).
    pub block: Option<String>,
    pub resume: bool,
    /// MiB for hidden states cached at layer boundaries (0: no cache).
    pub hidden_cache_mb: usize,
    pub json: bool,
    /// Print nothing on stdout (a stage of `jetc postnas`).
    pub quiet: bool,
}

pub struct HeatmapArgs {
    pub common: SearchCommon,
    /// Layers to map (default: all).
    pub layers: Vec<usize>,
}

pub struct PlacementArgs {
    pub common: SearchCommon,
    pub budget: usize,
    pub beam: usize,
    /// `task[:metric][=weight],...` or a file holding it (default: each task's own metric).
    pub objective: Option<String>,
    /// Layers the search may pick (default: all).
    pub candidates: Vec<usize>,
    /// A heat map of the same supernet and tasks, whose cells score the one-layer subnets.
    pub heatmap: Option<PathBuf>,
    /// Sliding-window attention layers placed after the full-attention ones (0: none).
    pub swa: usize,
    /// Their window in tokens (default: the supernet's).
    pub window: Option<usize>,
}

fn msg(e: impl std::fmt::Display) -> CliError {
    CliError::Msg(e.to_string())
}

/// A supernet, its base model and the task suite, checked and loaded.
struct Setup {
    net: Supernet,
    base: jetc_ir::Graph,
    n_layers: usize,
    block: Block,
    suite: Suite,
    /// What the output was computed with (params.json; --resume must match it).
    params: serde_json::Value,
    /// The residual stream entering each layer of the base model.
    layer_inputs: Vec<jetc_ir::Outlet>,
    /// Hidden states at those boundaries, shared by every subnet scored (None: off).
    hidden: Option<Rc<RefCell<HiddenCache>>>,
}

impl Setup {
    fn layout(&self, full_attn: &[usize]) -> Layout {
        Layout {
            full_attn: full_attn.to_vec(),
            swa: vec![],
            window: self.net.window,
            block: self.block,
            blocks: vec![],
            config: self.net.config.clone(),
        }
    }

    /// Scores the subnet with `full_attn` on full attention; `progress` sees task, i, n.
    fn score(
        &self,
        full_attn: &[usize],
        graph: Option<jetc_ir::Graph>,
        progress: &mut dyn FnMut(&str, usize, usize),
    ) -> Result<Vec<Score>> {
        let graph = match graph {
            Some(g) => g,
            None => self.net.subnet(&self.base, &self.layout(full_attn))?,
        };
        let first = full_attn.iter().copied().min().unwrap_or(self.n_layers);
        self.score_graph(graph, first, progress)
    }

    /// Scores the subnet with `full_attn` on full attention and `swa` on sliding-window
    /// attention of `window` tokens.
    fn score_swa(
        &self,
        full_attn: &[usize],
        swa: &[usize],
        window: usize,
        progress: &mut dyn FnMut(&str, usize, usize),
    ) -> Result<Vec<Score>> {
        let layout = Layout { swa: swa.to_vec(), window: Some(window), ..self.layout(full_attn) };
        let first = full_attn.iter().chain(swa).copied().min().unwrap_or(self.n_layers);
        self.score_graph(self.net.subnet(&self.base, &layout)?, first, progress)
    }

    /// Scores `graph`, a subnet equal to the all-linear one before layer `first`: with the
    /// hidden cache on, it starts from the hidden states entering `first` where they are
    /// cached, and records those it computes.
    fn score_graph(&self, graph: jetc_ir::Graph, first: usize, progress: &mut dyn FnMut(&str, usize, usize)) -> Result<Vec<Score>> {
        let gen = Generator::new(&graph).map_err(msg)?;
        let mut gen = match &self.hidden {
            Some(cache) => {
                let b = jetc_search::boundary::plan(&graph, &self.base, &self.layer_inputs, first, &gen.cache_outputs())?;
                Runner::with_cache(gen, b, cache.clone())
            }
            None => Runner::new(gen),
        };
        Ok(self
            .suite
            .score(&mut gen, progress)
            .map_err(msg)?
            .into_iter()
            .map(|s| s.0)
            .collect())
    }
}

/// Checks everything that can be checked, loads the model and prepares the tasks, then
/// creates the output directory (or checks it, with --resume). Returns the setup and the
/// subnet of `first` (built before anything is written: a supernet of another model fails
/// here).
fn setup(
    c: &SearchCommon,
    kind: &str,
    extra: serde_json::Value,
    first: &[usize],
    check: &dyn Fn(usize, &serde_json::Value, &Supernet) -> Result<()>,
) -> Result<(Setup, jetc_ir::Graph)> {
    let choices = suite::read_choice_tasks(&c.suite).map_err(msg)?;
    let net = Supernet::open(&c.supernet)?;
    let model = c
        .model
        .clone()
        .or_else(|| net.model.clone())
        .ok_or_else(|| {
            msg(format!(
                "--supernet {}: its distill.json names no model (give --model)",
                c.supernet.display()
            ))
        })?;
    let block_name = c
        .block
        .clone()
        .or_else(|| net.block.clone())
        .unwrap_or_else(|| "jetblock".into());
    let block = Block::parse(&block_name).map_err(msg)?;
    if !net.candidates.is_empty()
        && !net
            .candidates
            .iter()
            .any(|x| x == block.name() || x == &block_name)
    {
        return Err(msg(format!(
            "--block {block_name}: the supernet's candidates are {}",
            net.candidates.join(",")
        )));
    }
    let mut params = json!({
        "search": kind, "supernet": c.supernet.display().to_string(), "model": model.display().to_string(), "block": block.name(),
        "tasks": c.suite.tasks, "limit": c.suite.limit, "seq_len": c.suite.seq_len, "seed": c.suite.seed,
        "filler_tokens": c.suite.filler_tokens, "data": c.suite.data,
    });
    if let (Some(p), Some(n)) = (params.as_object_mut(), c.suite.max_new_tokens) {
        p.insert("max_new_tokens".into(), json!(n));
    }
    if let (Some(p), Some(e)) = (params.as_object_mut(), extra.as_object()) {
        p.extend(e.clone());
    }
    let params_path = c.output.join("params.json");
    if c.resume {
        let old: serde_json::Value = std::fs::read(&params_path)
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok())
            .ok_or_else(|| {
                msg(format!(
                    "--resume: {} is not a {kind} directory (no params.json)",
                    c.output.display()
                ))
            })?;
        if old != params {
            return Err(msg(format!(
                "--resume: {} was computed with other settings ({old}); give the same flags",
                params_path.display()
            )));
        }
    } else if c.output.exists()
        && std::fs::read_dir(&c.output)
            .map(|mut d| d.next().is_some())
            .unwrap_or(true)
    {
        return Err(msg(format!(
            "-o {}: not empty (give a new directory, or --resume)",
            c.output.display()
        )));
    }
    let base = load::load_raised(&model)?;
    let n_layers = attention_layers(&base)?.len();
    net.check_model(&base, &model)?;
    check(n_layers, &params, &net)?;
    let (tok, _) = super::generate::text_for(&c.tokenizer, &model)?;
    let suite = Suite::prepare(&c.suite, tok, choices).map_err(msg)?;
    let (layer_inputs, hidden) = if c.hidden_cache_mb == 0 {
        (Vec::new(), None)
    } else {
        let inputs = jetc_search::boundary::layer_inputs(&base)?;
        (inputs, Some(Rc::new(RefCell::new(HiddenCache::new(c.hidden_cache_mb << 20)))))
    };
    let s = Setup {
        net,
        base,
        n_layers,
        block,
        suite,
        params,
        layer_inputs,
        hidden,
    };
    let g = s.net.subnet(&s.base, &s.layout(first))?;
    std::fs::create_dir_all(&c.output).map_err(|e| msg(format!("{}: {e}", c.output.display())))?;
    std::fs::write(
        &params_path,
        serde_json::to_string_pretty(&s.params).map_err(msg)?,
    )
    .map_err(|e| msg(format!("{}: {e}", params_path.display())))?;
    Ok((s, g))
}

/// The cells already in `path` (a resumed map).
pub(crate) fn read_cells(path: &Path) -> Result<Vec<Cell>> {
    let Ok(text) = std::fs::read_to_string(path) else {
        return Ok(Vec::new());
    };
    text.lines()
        .filter(|l| !l.trim().is_empty())
        .enumerate()
        .map(|(i, l)| {
            let v: serde_json::Value = serde_json::from_str(l)
                .map_err(|e| msg(format!("{}:{}: {e}", path.display(), i + 1)))?;
            Cell::from_json(&v).map_err(|e| msg(format!("{}:{}: {e}", path.display(), i + 1)))
        })
        .collect()
}

fn append_line(path: &Path, v: &serde_json::Value) -> Result<()> {
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .map_err(|e| msg(format!("{}: {e}", path.display())))?;
    writeln!(f, "{v}").map_err(|e| msg(format!("{}: {e}", path.display())))
}

impl Setup {
    /// What the hidden cache did this run (null when it is off): calls and tokens served
    /// from it or run whole, the layer-token products skipped, and their share of all.
    fn hidden_stats(&self) -> serde_json::Value {
        let Some(c) = &self.hidden else { return serde_json::Value::Null };
        let c = c.borrow();
        let total = (c.hit_tokens + c.miss_tokens) * self.n_layers;
        json!({
            "hits": c.hits, "misses": c.misses, "hit_tokens": c.hit_tokens, "run_tokens": c.miss_tokens, "bytes": c.bytes(),
            "layer_tokens_skipped": c.layer_tokens_saved, "layer_tokens": total,
            "share_skipped": if total > 0 { c.layer_tokens_saved as f64 / total as f64 } else { 0.0 },
        })
    }
}

fn progress_bar(len: usize, what: &str, quiet: bool) -> ProgressBar {
    let pb = if quiet {
        ProgressBar::hidden()
    } else {
        ProgressBar::new(len as u64)
    };
    if let Ok(style) = ProgressStyle::with_template(&format!(
        "{what} [{{bar:30}}] {{pos}}/{{len}} subnets, {{elapsed}} elapsed, eta {{eta}} {{msg}}"
    )) {
        pb.set_style(style.progress_chars("=> "));
    }
    pb
}

pub fn heatmap(a: &HeatmapArgs) -> Result<()> {
    let c = &a.common;
    let layers_ok = |n: usize, _: &serde_json::Value, _: &Supernet| match a.layers.iter().find(|&&l| l >= n) {
        Some(l) => Err(msg(format!(
            "--layers: layer {l} of a model with {n} layers"
        ))),
        None => Ok(()),
    };
    let (s, first) = setup(c, "heatmap", json!({"layers": a.layers}), &[], &layers_ok)?;
    let mut first = Some(first);
    let layers: Vec<usize> = if a.layers.is_empty() {
        (0..s.n_layers).collect()
    } else {
        a.layers.clone()
    };
    let cells_path = c.output.join("cells.jsonl");
    let mut cells = if c.resume {
        read_cells(&cells_path)?
    } else {
        Vec::new()
    };
    let todo: Vec<Option<usize>> = std::iter::once(None)
        .chain(layers.iter().map(|&l| Some(l)))
        .filter(|l| !cells.iter().any(|c| c.layer == *l))
        .collect();
    let started = Instant::now();
    let pb = progress_bar(layers.len() + 1, "heat map", c.json);
    pb.set_position((layers.len() + 1 - todo.len()) as u64);
    for layer in todo {
        let t0 = Instant::now();
        let what = layer.map_or("all linear".to_string(), |l| format!("layer {l}"));
        let graph = if layer.is_none() { first.take() } else { None };
        let scores = s.score(
            &layer.into_iter().collect::<Vec<_>>(),
            graph,
            &mut |task, i, n| pb.set_message(format!("{what}: {task} {i}/{n}")),
        )?;
        let cell = Cell {
            layer,
            scores,
            seconds: t0.elapsed().as_secs_f64(),
        };
        append_line(&cells_path, &cell.to_json())?;
        cells.push(cell);
        pb.inc(1);
    }
    pb.finish_and_clear();
    let map = HeatMap {
        n_layers: s.n_layers,
        layers: layers.clone(),
        block: s.block.name().to_string(),
        cells,
    };
    let mut out = map.to_json()?;
    out["params"] = s.params.clone();
    out["seconds_this_run"] = json!(started.elapsed().as_secs_f64());
    out["hidden_cache"] = s.hidden_stats();
    let json_path = c.output.join("heatmap.json");
    std::fs::write(&json_path, serde_json::to_string_pretty(&out).map_err(msg)?)
        .map_err(|e| msg(format!("{}: {e}", json_path.display())))?;
    let run_name = c.supernet.file_name().map_or_else(
        || c.supernet.display().to_string(),
        |n| n.to_string_lossy().into_owned(),
    );
    let title = format!(
        "jetc search heatmap: supernet {run_name}, {} subnets",
        layers.len() + 1
    );
    if !map.plot(
        &c.output.join("heatmap.png"),
        &c.output.join("heatmap.svg"),
        &title,
    )? {
        eprintln!("note: no font found for the heat-map labels (set JETC_FONT to a .ttf); drawn without text");
    }
    if c.quiet {
        return Ok(());
    }
    if c.json {
        println!("{}", serde_json::to_string_pretty(&out).map_err(msg)?);
        return Ok(());
    }
    print_table(&map)?;
    println!(
        "wrote {} (and heatmap.png, heatmap.svg, cells.jsonl)",
        json_path.display()
    );
    Ok(())
}

/// The objective of `a`: the spec (or the file holding it), checked against the tasks scored.
fn objective_of(a: &PlacementArgs) -> Result<Objective> {
    let tasks = jetc_eval::expand_tasks(&a.common.suite.tasks);
    let Some(spec) = &a.objective else {
        return Ok(Objective::defaults(&tasks));
    };
    let text = if Path::new(spec).is_file() {
        std::fs::read_to_string(spec).map_err(|e| msg(format!("--objective {spec}: {e}")))?
    } else {
        spec.clone()
    };
    let o = Objective::parse(text.trim()).map_err(|e| msg(format!("--objective: {e}")))?;
    if let Some(t) = o.tasks().iter().find(|t| !tasks.contains(t)) {
        return Err(msg(format!(
            "--objective: task {t} is not among the --task tasks ({})",
            tasks.join(",")
        )));
    }
    Ok(o)
}

pub fn placement(a: &PlacementArgs) -> Result<()> {
    let c = &a.common;
    let objective = objective_of(a)?;
    let budget = a.budget;
    let check = |n: usize, params: &serde_json::Value, net: &Supernet| {
        if a.swa > 0 {
            if !net.candidates.is_empty() && !net.candidates.iter().any(|c| c == "swa") {
                return Err(msg(format!(
                    "--swa {}: the supernet {} was trained without an swa path (its candidates are {}); distill one with --supernet attn,swa,{}",
                    a.swa,
                    c.supernet.display(),
                    net.candidates.join(","),
                    net.block.as_deref().unwrap_or("jetblock")
                )));
            }
            if a.window.or(net.window).is_none() {
                return Err(msg("--swa: give --window W (the supernet records no SWA window)"));
            }
            if budget + a.swa > n {
                return Err(msg(format!("--budget {budget} + --swa {}: more than the model's {n} layers", a.swa)));
            }
        }
        if let Some(l) = a.candidates.iter().find(|&&l| l >= n) {
            return Err(msg(format!(
                "--candidates: layer {l} of a model with {n} layers"
            )));
        }
        let m = if a.candidates.is_empty() {
            n
        } else {
            a.candidates.len()
        };
        if budget == 0 || budget > m {
            return Err(msg(format!("--budget {budget}: between 1 and the {m} candidate layers of a model with {n} layers")));
        }
        if let Some(dir) = &a.heatmap {
            check_heatmap(dir, params)?;
        }
        Ok(())
    };
    if a.beam == 0 {
        return Err(msg("--beam must be at least 1"));
    }
    let mut extra = json!({"budget": a.budget, "beam": a.beam, "objective": objective.describe(), "candidates": a.candidates});
    if a.swa > 0 {
        extra["swa"] = json!(a.swa);
        extra["window"] = json!(a.window);
    }
    // The uniform placement's subnet is built first (checks the supernet before writing).
    let (s, _) = setup(c, "placement", extra, &[], &check)?;
    let cands: Vec<usize> = if a.candidates.is_empty() {
        (0..s.n_layers).collect()
    } else {
        a.candidates.clone()
    };
    let cache_path = c.output.join("placements.jsonl");
    let mut cache: BTreeMap<Vec<usize>, Vec<Score>> = BTreeMap::new();
    if c.resume {
        cache = read_placements(&cache_path)?;
    }
    if let Some(dir) = &a.heatmap {
        for cell in read_cells(&dir.join("cells.jsonl"))? {
            cache
                .entry(cell.layer.into_iter().collect())
                .or_insert(cell.scores);
        }
    }
    let reused = cache.len();
    let started = Instant::now();
    let expected = if binomial(cands.len(), budget) <= beam_cost(cands.len(), budget, a.beam) {
        binomial(cands.len(), budget) + 1
    } else {
        beam_cost(cands.len(), budget, a.beam) + 1
    };
    let pb = progress_bar(expected, "placement", c.json);
    let mut fresh = 0usize;
    let outcome = search(
        &cands,
        s.n_layers,
        budget,
        a.beam,
        &objective,
        &mut |layers: &[usize]| {
            if let Some(sc) = cache.get(layers) {
                pb.inc(1);
                return Ok(sc.clone());
            }
            let t0 = Instant::now();
            let what = format!("{layers:?}");
            let scores = s
                .score(layers, None, &mut |task, i, n| {
                    pb.set_message(format!("{what}: {task} {i}/{n}"))
                })
                .map_err(|e| jetc_search::SearchError::Msg(e.to_string()))?;
            let line = json!({"full_attn": layers, "scores": scores, "seconds": t0.elapsed().as_secs_f64()});
            append_line(&cache_path, &line)
                .map_err(|e| jetc_search::SearchError::Msg(e.to_string()))?;
            cache.insert(layers.to_vec(), scores.clone());
            fresh += 1;
            pb.inc(1);
            Ok(scores)
        },
    )?;
    pb.finish_and_clear();
    let best = outcome
        .top
        .first()
        .ok_or_else(|| msg("placement: the search scored nothing"))?;
    // SWA layers, placed the same way among the layers left, with the full-attention ones fixed.
    let swa = if a.swa > 0 { Some(place_swa(a, &s, &best.layers, &objective)?) } else { None };
    let layout_path = c.output.join("layout.json");
    let cfg = &s.net.config;
    let mut layout = json!({"full_attn": best.layers, "block": s.block.name(), "heads": cfg.heads, "dk": cfg.dk, "dv": cfg.dv, "conv": cfg.conv, "reduction": cfg.reduction});
    if let Some((o, window)) = &swa {
        if let Some(b) = o.top.first() {
            layout["swa"] = json!(b.layers);
            layout["window"] = json!(window);
        }
    }
    std::fs::write(
        &layout_path,
        serde_json::to_string_pretty(&layout).map_err(msg)?,
    )
    .map_err(|e| msg(format!("{}: {e}", layout_path.display())))?;
    let out = json!({
        "method": outcome.method, "budget": budget, "beam": a.beam, "objective": objective.describe(),
        "best": best.to_json(), "uniform": outcome.uniform.to_json(),
        "gap": best.objective - outcome.uniform.objective,
        "gap_stderr": objective.paired_stderr(&best.scores, &outcome.uniform.scores)?,
        "top": outcome.top.iter().take(12).map(Scored::to_json).collect::<Vec<_>>(),
        "subnets_scored": outcome.evaluated, "subnets_reused": reused.min(outcome.evaluated), "subnets_new": fresh,
        "seconds": started.elapsed().as_secs_f64(), "params": s.params, "layout": layout_path.display().to_string(),
        "hidden_cache": s.hidden_stats(),
    });
    let mut out = out;
    if let Some((o, window)) = &swa {
        let b = o.top.first().ok_or_else(|| msg("placement: the SWA search scored nothing"))?;
        out["swa"] = json!({
            "count": a.swa, "window": window, "method": o.method, "best": b.to_json(), "uniform": o.uniform.to_json(),
            "gap": b.objective - o.uniform.objective, "gap_stderr": objective.paired_stderr(&b.scores, &o.uniform.scores)?, "top": o.top.iter().take(12).map(Scored::to_json).collect::<Vec<_>>(),
            "subnets_scored": o.evaluated,
        });
    }
    let json_path = c.output.join("placement.json");
    std::fs::write(&json_path, serde_json::to_string_pretty(&out).map_err(msg)?)
        .map_err(|e| msg(format!("{}: {e}", json_path.display())))?;
    if c.quiet {
        return Ok(());
    }
    if c.json {
        println!("{}", serde_json::to_string_pretty(&out).map_err(msg)?);
        return Ok(());
    }
    println!(
        "{} search, budget {budget}, objective {} ({} subnets scored, {fresh} new)",
        outcome.method,
        objective.describe(),
        outcome.evaluated
    );
    let line = |name: &str, p: &Scored| {
        let terms: Vec<String> = objective
            .terms
            .iter()
            .map(|t| {
                let m = p
                    .scores
                    .iter()
                    .find(|x| x.task == t.task)
                    .and_then(|x| x.metrics.iter().find(|m| m.name == t.metric));
                m.map_or("-".into(), |m| {
                    format!(
                        "{} {} {:.4}{}",
                        t.task,
                        t.metric,
                        m.value,
                        m.stderr.map_or(String::new(), |e| format!(" ± {e:.4}"))
                    )
                })
            })
            .collect();
        println!(
            "{name:<10} {:<16} objective {:>9.4}  {}",
            format!("{:?}", p.layers),
            p.objective,
            terms.join(", ")
        );
    };
    for (i, p) in outcome.top.iter().take(5).enumerate() {
        line(&format!("#{}", i + 1), p);
    }
    line("uniform", &outcome.uniform);
    let paired = |se: Option<f64>| se.map_or(String::new(), |e| format!(" ± {e:.4} (paired over examples)"));
    println!("learned - uniform: {:+.4}{}", best.objective - outcome.uniform.objective, paired(out["gap_stderr"].as_f64()));
    if let Some((o, window)) = &swa {
        println!("SWA ({} layers, window {window}) beside full attention at {:?}: {} search", a.swa, best.layers, o.method);
        for (i, p) in o.top.iter().take(5).enumerate() {
            line(&format!("swa #{}", i + 1), p);
        }
        line("swa unif.", &o.uniform);
        if let Some(b) = o.top.first() {
            println!("learned - uniform: {:+.4}{}", b.objective - o.uniform.objective, paired(out["swa"]["gap_stderr"].as_f64()));
        }
    }
    println!("layout written to {}", layout_path.display());
    Ok(())
}

/// The SWA stage of a placement: `a.swa` layers among those `full_attn` leaves, scored with
/// `full_attn` fixed; the uniform SWA placement spreads them over the same free layers. Its
/// subnets are cached in `swa.jsonl` (keyed by the full-attention layers too).
fn place_swa(a: &PlacementArgs, s: &Setup, full_attn: &[usize], objective: &Objective) -> Result<(jetc_search::placement::Outcome, usize)> {
    let c = &a.common;
    let window = a.window.or(s.net.window).ok_or_else(|| msg("--swa: give --window W"))?;
    let free: Vec<usize> = (0..s.n_layers).filter(|l| !full_attn.contains(l)).collect();
    let path = c.output.join("swa.jsonl");
    let mut cache: BTreeMap<Vec<usize>, Vec<Score>> = BTreeMap::new();
    if c.resume {
        if let Ok(text) = std::fs::read_to_string(&path) {
            for (i, l) in text.lines().filter(|l| !l.trim().is_empty()).enumerate() {
                let v: serde_json::Value = serde_json::from_str(l).map_err(|e| msg(format!("{}:{}: {e}", path.display(), i + 1)))?;
                let layers = |k: &str| v[k].as_array().into_iter().flatten().filter_map(|x| x.as_u64().map(|n| n as usize)).collect::<Vec<_>>();
                if layers("full_attn") == full_attn && v["window"].as_u64() == Some(window as u64) {
                    cache.insert(layers("swa"), scores_from_json(&v["scores"])?);
                }
            }
        }
    }
    let total = binomial(free.len(), a.swa).min(beam_cost(free.len(), a.swa, a.beam)) + 1;
    let pb = progress_bar(total, "swa placement", c.json || c.quiet);
    let uniform = jetc_search::placement::uniform_among(&free, a.swa);
    let outcome = jetc_search::placement::search_against(&free, uniform, a.swa, a.beam, objective, &mut |layers: &[usize]| {
        if let Some(sc) = cache.get(layers) {
            pb.inc(1);
            return Ok(sc.clone());
        }
        let t0 = Instant::now();
        let what = format!("swa {layers:?}");
        let scores = s
            .score_swa(full_attn, layers, window, &mut |task, i, n| pb.set_message(format!("{what}: {task} {i}/{n}")))
            .map_err(|e| jetc_search::SearchError::Msg(e.to_string()))?;
        let line = json!({"full_attn": full_attn, "swa": layers, "window": window, "scores": scores, "seconds": t0.elapsed().as_secs_f64()});
        append_line(&path, &line).map_err(|e| jetc_search::SearchError::Msg(e.to_string()))?;
        cache.insert(layers.to_vec(), scores.clone());
        pb.inc(1);
        Ok(scores)
    })?;
    pb.finish_and_clear();
    Ok((outcome, window))
}

/// Checks that `dir` is a heat map of the same supernet, model and tasks as `params`.
fn check_heatmap(dir: &Path, params: &serde_json::Value) -> Result<()> {
    let hp: serde_json::Value = std::fs::read(dir.join("params.json"))
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok())
        .ok_or_else(|| {
            msg(format!(
                "--heatmap {}: no params.json (not a jetc search heatmap directory)",
                dir.display()
            ))
        })?;
    if hp["search"] != "heatmap" {
        return Err(msg(format!(
            "--heatmap {}: a `{}` directory, not a heat map",
            dir.display(),
            hp["search"].as_str().unwrap_or("?")
        )));
    }
    for k in [
        "supernet",
        "model",
        "block",
        "tasks",
        "limit",
        "seq_len",
        "seed",
        "filler_tokens",
        "data",
        "max_new_tokens",
    ] {
        if hp[k] != params[k] {
            return Err(msg(format!(
                "--heatmap {}: it was scored with {k} = {}, this search with {}",
                dir.display(),
                hp[k],
                params[k]
            )));
        }
    }
    Ok(())
}

/// The placements already scored in `path` (a resumed search), by full-attention layers.
fn read_placements(path: &Path) -> Result<BTreeMap<Vec<usize>, Vec<Score>>> {
    let Ok(text) = std::fs::read_to_string(path) else {
        return Ok(BTreeMap::new());
    };
    let mut out = BTreeMap::new();
    for (i, l) in text.lines().filter(|l| !l.trim().is_empty()).enumerate() {
        let at = |e: String| msg(format!("{}:{}: {e}", path.display(), i + 1));
        let v: serde_json::Value = serde_json::from_str(l).map_err(|e| at(e.to_string()))?;
        let layers: Vec<usize> = v["full_attn"]
            .as_array()
            .ok_or_else(|| at("no `full_attn`".into()))?
            .iter()
            .filter_map(|x| x.as_u64().map(|n| n as usize))
            .collect();
        out.insert(
            layers,
            scores_from_json(&v["scores"]).map_err(|e| at(e.to_string()))?,
        );
    }
    Ok(out)
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
        print!(
            "{:<24} {:>9}",
            format!("{} {}", r.task, r.metric),
            r.baseline.map_or("-".into(), |b| format!("{b:.3}"))
        );
        for v in &r.values {
            print!(" {v:>6.3}");
        }
        println!();
    }
    for r in &rows {
        let ranked = r.ranked(&map.layers);
        let top: Vec<String> = ranked
            .iter()
            .take(5)
            .map(|(l, g)| format!("{l} ({g:+.3})"))
            .collect();
        println!(
            "{} {}: best layers {}; half the gain from {:?}",
            r.task,
            r.metric,
            top.join(", "),
            r.carriers(&map.layers)
        );
    }
    Ok(())
}

/// The distillation recipe `search block` and `search hw` give every candidate alike.
#[derive(clap::Args, Clone, Debug)]
pub struct RecipeFlags {
    /// Training text for every candidate (as `jetc distill --data`).
    #[arg(long, value_delimiter = ',', required = true)]
    pub train_data: Vec<PathBuf>,
    /// Optimizer steps per candidate.
    #[arg(long)]
    pub steps: Option<u64>,
    /// Training tokens per candidate instead of --steps.
    #[arg(long)]
    pub tokens: Option<u64>,
    /// Training window in tokens.
    #[arg(long, default_value_t = 256)]
    pub train_seq_len: usize,
    #[arg(long, default_value_t = 2)]
    pub batch: usize,
    #[arg(long, default_value_t = 6e-5)]
    pub lr: f32,
    #[arg(long)]
    pub warmup: Option<u64>,
    /// `local`, `path` or `kd` (as `jetc distill --phase`).
    #[arg(long, default_value = "path")]
    pub phase: String,
    /// Weight of the cross-entropy against the teacher's logits (path phase).
    #[arg(long, default_value_t = 1.0)]
    pub kl: f32,
    /// `attention` or `calibrated`.
    #[arg(long, default_value = "calibrated")]
    pub init: String,
    #[arg(long, default_value_t = 16384)]
    pub calib_tokens: usize,
    /// Seed of every candidate's initial weights and data order.
    #[arg(long, default_value_t = 0)]
    pub train_seed: u64,
}

impl RecipeFlags {
    pub(crate) fn to_json(&self) -> serde_json::Value {
        json!({
            "train_data": self.train_data, "steps": self.steps, "tokens": self.tokens, "seq_len": self.train_seq_len, "batch": self.batch,
            "lr": self.lr, "warmup": self.warmup, "phase": self.phase, "kl": self.kl, "init": self.init, "calib_tokens": self.calib_tokens,
            "seed": self.train_seed,
        })
    }

    /// The distill arguments of one candidate (`layout`) into `run`; a stopped run resumes.
    pub(crate) fn distill_args(&self, model: &Path, tokenizer: &Option<PathBuf>, layout: LayoutFlags, run: &Path) -> super::distill::DistillArgs {
        super::distill::DistillArgs {
            model: model.to_path_buf(),
            output: run.to_path_buf(),
            layout,
            data: self.train_data.clone(),
            text_field: "text".into(),
            tokenizer: tokenizer.clone(),
            steps: self.steps,
            tokens: self.tokens,
            seq_len: self.train_seq_len,
            batch: self.batch,
            lr: self.lr,
            warmup: self.warmup,
            weight_decay: 0.01,
            clip: 1.0,
            seed: self.train_seed,
            format: "onnx".into(),
            json: false,
            checkpoint_every: 20,
            resume: run.join("checkpoints").is_dir(),
            token_cache: None,
            phase: self.phase.clone(),
            sample: "fixed".into(),
            kl: self.kl,
            init_from: None,
            eval_every: 0,
            train_mlp: false,
            init: self.init.clone(),
            calib_tokens: self.calib_tokens,
            supernet: None,
            train_attn: false,
            ce: 0.0,
            eval_data: vec![],
            eval_windows: super::distill::DEFAULT_EVAL_WINDOWS,
        }
    }
}

impl RecipeFlags {
    /// Distills one candidate into `run` unless it is done there (a distill.json), and
    /// returns its record; `say` announces the run on stderr.
    pub(crate) fn distill_once(&self, model: &Path, tokenizer: &Option<PathBuf>, layout: LayoutFlags, run: &Path, say: bool) -> Result<serde_json::Value> {
        if !run.join("distill.json").is_file() {
            if say {
                eprintln!("== {}: distilling", run.display());
            }
            super::distill::run(&self.distill_args(model, tokenizer, layout, run))?;
        }
        read_json(&run.join("distill.json"))
    }
}

/// A JSON file, with an error naming it.
pub(crate) fn read_json(path: &Path) -> Result<serde_json::Value> {
    let bytes = std::fs::read(path).map_err(|e| msg(format!("{}: {e}", path.display())))?;
    serde_json::from_slice(&bytes).map_err(|e| msg(format!("{}: not JSON: {e}", path.display())))
}

/// Output directories of runs that keep finished candidates: new, empty, or holding a
/// params.json equal to `params` (a stopped run, continued).
pub(crate) fn check_rerun(output: &Path, params: &serde_json::Value) -> Result<()> {
    if !output.exists() {
        return Ok(());
    }
    let old: Option<serde_json::Value> = std::fs::read(output.join("params.json")).ok().and_then(|b| serde_json::from_slice(&b).ok());
    match old {
        Some(o) if &o == params => Ok(()),
        Some(o) => Err(msg(format!("-o {}: a run with other settings ({o}); give a new directory", output.display()))),
        None if std::fs::read_dir(output).map(|mut d| d.next().is_some()).unwrap_or(true) => {
            Err(msg(format!("-o {}: not empty (give a new directory)", output.display())))
        }
        None => Ok(()),
    }
}

/// `jetc search block`.
pub struct BlockArgs {
    pub model: PathBuf,
    pub output: PathBuf,
    pub layout: LayoutFlags,
    pub candidates: Vec<String>,
    pub suite: SuiteOptions,
    pub tokenizer: Option<PathBuf>,
    pub recipe: RecipeFlags,
    pub json: bool,
    pub quiet: bool,
}

pub fn block(a: &BlockArgs) -> Result<()> {
    // Checked before anything runs: the candidates, the layout, the tasks, the output.
    if a.candidates.len() < 2 {
        return Err(msg("--candidates: give at least two linear blocks to compare, e.g. jetblock,gated-deltanet"));
    }
    let blocks: Vec<Block> = a.candidates.iter().map(|c| Block::parse(c).map_err(msg)).collect::<Result<_>>()?;
    let layout = super::convert::layout_of(&a.layout)?;
    let choices = suite::read_choice_tasks(&a.suite).map_err(msg)?;
    let params_path = a.output.join("params.json");
    let params = json!({
        "search": "block", "model": a.model.display().to_string(), "full_attn": layout.full_attn, "swa": layout.swa,
        "candidates": a.candidates, "tasks": a.suite.tasks, "limit": a.suite.limit, "recipe": a.recipe.to_json(),
    });
    check_rerun(&a.output, &params)?;
    let base = load::load_raised(&a.model)?;
    let n_layers = attention_layers(&base)?.len();
    if let Some(l) = layout.full_attn.iter().chain(&layout.swa).find(|&&l| l >= n_layers) {
        return Err(msg(format!("layout: layer {l} of a model with {n_layers} layers")));
    }
    let (tok, _) = super::generate::text_for(&a.tokenizer, &a.model)?;
    let suite = Suite::prepare(&a.suite, tok, choices).map_err(msg)?;
    std::fs::create_dir_all(&a.output).map_err(|e| msg(format!("{}: {e}", a.output.display())))?;
    std::fs::write(&params_path, serde_json::to_string_pretty(&params).map_err(msg)?).map_err(|e| msg(format!("{}: {e}", params_path.display())))?;

    let mut results = Vec::new();
    for (name, block) in a.candidates.iter().zip(&blocks) {
        let run = a.output.join(block.name());
        let record = a.recipe.distill_once(&a.model, &a.tokenizer, LayoutFlags { block: name.clone(), ..a.layout.clone() }, &run, !a.json)?;
        let net = Supernet::open(&run)?;
        let graph = net.subnet(&base, &Layout { block: *block, ..layout.clone() })?;
        let mut gen = Runner::new(Generator::new(&graph).map_err(msg)?);
        if !a.json {
            eprintln!("== {}: scoring", block.name());
        }
        let scores = suite.score(&mut gen, &mut |_, _, _| {}).map_err(msg)?.into_iter().map(|s| s.0).collect();
        results.push(jetc_search::block::Candidate {
            block: block.name().to_string(),
            tokens: record["tokens"].as_u64().unwrap_or(0),
            train_seconds: record["seconds"].as_f64().unwrap_or(0.0),
            tokens_per_s: record["tokens_per_s"].as_f64().unwrap_or(0.0),
            block_params: net.weights.values().map(|w| w.len()).sum(),
            heldout_nll: record["heldout_nll_after"].as_f64(),
            scores,
        });
    }
    let first_task = suite.names().first().map(|s| s.to_string()).unwrap_or_default();
    let metric = jetc_search::placement::default_metric(&first_task);
    let title = format!("jetc search block: {} at full attention {:?}", a.model.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default(), layout.full_attn);
    if !jetc_search::block::plot(&results, &first_task, metric, &a.output.join("block.png"), &a.output.join("block.svg"), &title)? {
        eprintln!("note: no font found for the chart labels (set JETC_FONT to a .ttf); drawn without text");
    }
    let out = json!({"params": params, "candidates": results.iter().map(|c| c.to_json()).collect::<Vec<_>>(), "chart": {"task": first_task, "metric": metric}});
    let json_path = a.output.join("block.json");
    std::fs::write(&json_path, serde_json::to_string_pretty(&out).map_err(msg)?).map_err(|e| msg(format!("{}: {e}", json_path.display())))?;
    if a.quiet {
        return Ok(());
    }
    if a.json {
        println!("{}", serde_json::to_string_pretty(&out).map_err(msg)?);
        return Ok(());
    }
    print!("{:<16} {:>9} {:>9} {:>12} {:>12}", "block", "tokens", "tok/s", "params", "held-out");
    for s in &results[0].scores {
        for &(m, _) in jetc_search::heatmap::row_metrics(&s.task) {
            print!(" {:>18}", format!("{} {m}", s.task));
        }
    }
    println!();
    for c in &results {
        print!("{:<16} {:>9} {:>9.1} {:>12} {:>12}", c.block, c.tokens, c.tokens_per_s, c.block_params, c.heldout_nll.map_or("-".into(), |v| format!("{v:.4}")));
        for s in &c.scores {
            for &(m, _) in jetc_search::heatmap::row_metrics(&s.task) {
                let (v, e) = c.metric(&s.task, m).unwrap_or((f64::NAN, None));
                print!(" {:>18}", format!("{v:.4}{}", e.map_or(String::new(), |e| format!("±{e:.3}"))));
            }
        }
        println!();
    }
    println!("wrote {} (and block.png, block.svg; each candidate's run under {})", json_path.display(), a.output.display());
    Ok(())
}

/// `jetc search hw`.
pub struct HwArgs {
    pub model: PathBuf,
    pub output: PathBuf,
    pub layout: LayoutFlags,
    /// Explicit `H:dk:dv` points (default: a grid at the layout's recurrent state).
    pub points: Vec<String>,
    pub max_points: usize,
    pub suite: SuiteOptions,
    pub tokenizer: Option<PathBuf>,
    pub recipe: RecipeFlags,
    pub objective: Option<String>,
    /// Decode throughput: tokens of context before the timed steps, and timed steps.
    pub decode_context: usize,
    pub decode_tokens: usize,
    pub json: bool,
    pub quiet: bool,
}

/// Decode tokens/s of `graph` after `context` tokens (batch 1): `tokens` single-token steps.
fn decode_throughput(graph: &jetc_ir::Graph, vocab: usize, context: usize, tokens: usize) -> Result<f64> {
    let mut gen = Generator::new(graph).map_err(msg)?;
    gen.warm_up().map_err(msg)?;
    let ids: Vec<u32> = (0..context.max(1)).map(|i| ((i * 7919 + 11) % vocab.max(1)) as u32).collect();
    gen.forward(&ids).map_err(msg)?;
    let t0 = Instant::now();
    for i in 0..tokens {
        gen.forward(&[((i * 104729 + 3) % vocab.max(1)) as u32]).map_err(msg)?;
    }
    Ok(tokens as f64 / t0.elapsed().as_secs_f64().max(1e-9))
}

pub fn hw(a: &HwArgs) -> Result<()> {
    use jetc_search::hw::{equal_state_points, pareto, pick, Measured, Point};
    let layout = super::convert::layout_of(&a.layout)?;
    let choices = suite::read_choice_tasks(&a.suite).map_err(msg)?;
    let tasks = jetc_eval::expand_tasks(&a.suite.tasks);
    let objective = match &a.objective {
        Some(o) => Objective::parse(o).map_err(|e| msg(format!("--objective: {e}")))?,
        None => Objective::defaults(&tasks),
    };
    if let Some(t) = objective.tasks().iter().find(|t| !tasks.contains(t)) {
        return Err(msg(format!("--objective: task {t} is not among the --task tasks ({})", tasks.join(","))));
    }
    if a.decode_tokens == 0 {
        return Err(msg("--decode-tokens must be at least 1"));
    }
    let explicit: Vec<Point> = a.points.iter().map(|p| Point::parse(p).map_err(|e| msg(format!("--points: {e}")))).collect::<Result<_>>()?;
    let base_graph = load::load_raised(&a.model)?;
    let attn = attention_layers(&base_graph)?;
    let n_layers = attn.len();
    if let Some(l) = layout.full_attn.iter().chain(&layout.swa).find(|&&l| l >= n_layers) {
        return Err(msg(format!("layout: layer {l} of a model with {n_layers} layers")));
    }
    let Some(&first) = attn.first() else { return Err(msg(format!("{}: no attention layer to convert", a.model.display()))) };
    let jetc_ir::Op::Attention(spec) = &base_graph.node(first)?.op else { return Err(msg("internal: not an attention node")) };
    let base = Point {
        heads: layout.config.heads.unwrap_or(spec.heads),
        dk: layout.config.dk.unwrap_or((spec.head_dim * 3 / 4).max(1)),
        dv: layout.config.dv.unwrap_or(spec.head_dim * 2),
    };
    let points = if explicit.is_empty() { equal_state_points(base, a.max_points.max(2)) } else { explicit };
    if let Some(p) = points.iter().find(|p| p.state() != base.state()) {
        return Err(msg(format!(
            "--points {}: a recurrent state of {} per layer, the layout's is {} ({}); the search compares shapes at equal cache",
            p.name(),
            p.state(),
            base.state(),
            base.name()
        )));
    }
    let params = json!({
        "search": "hw", "model": a.model.display().to_string(), "full_attn": layout.full_attn, "swa": layout.swa, "block": layout.block.name(),
        "points": points.iter().map(|p| p.name()).collect::<Vec<_>>(), "tasks": a.suite.tasks, "limit": a.suite.limit,
        "objective": objective.describe(), "recipe": a.recipe.to_json(), "decode_context": a.decode_context, "decode_tokens": a.decode_tokens,
    });
    check_rerun(&a.output, &params)?;
    let (tok, _) = super::generate::text_for(&a.tokenizer, &a.model)?;
    let suite = Suite::prepare(&a.suite, tok, choices).map_err(msg)?;
    std::fs::create_dir_all(&a.output).map_err(|e| msg(format!("{}: {e}", a.output.display())))?;
    let params_path = a.output.join("params.json");
    std::fs::write(&params_path, serde_json::to_string_pretty(&params).map_err(msg)?).map_err(|e| msg(format!("{}: {e}", params_path.display())))?;

    let mut measured = Vec::new();
    for p in &points {
        let run = a.output.join(format!("h{}-dk{}-dv{}", p.heads, p.dk, p.dv));
        let flags = LayoutFlags { heads: Some(p.heads), dk: Some(p.dk), dv: Some(p.dv), ..a.layout.clone() };
        let record = a.recipe.distill_once(&a.model, &a.tokenizer, flags.clone(), &run, !a.json)?;
        let net = Supernet::open(&run)?;
        let sub_layout = super::convert::layout_of(&flags)?;
        let graph = net.subnet(&base_graph, &sub_layout)?;
        let summary = jetc_passes::summary::summarize(&graph).map_err(msg)?;
        let cache_bytes: usize = summary.mixers.iter().map(|m| m.cache_bytes(a.decode_context)).sum();
        if !a.json {
            eprintln!("== {}: decode throughput, then scoring", p.name());
        }
        let tps = decode_throughput(&graph, summary.vocab, a.decode_context, a.decode_tokens)?;
        let mut gen = Runner::new(Generator::new(&graph).map_err(msg)?);
        let scores: Vec<Score> = suite.score(&mut gen, &mut |_, _, _| {}).map_err(msg)?.into_iter().map(|s| s.0).collect();
        let (obj, _) = objective.value(&scores)?;
        measured.push(Measured {
            point: *p,
            params: summary.params,
            cache_bytes,
            decode_tokens_per_s: tps,
            train_tokens: record["tokens"].as_u64().unwrap_or(0),
            train_tokens_per_s: record["tokens_per_s"].as_f64().unwrap_or(0.0),
            scores,
            objective: obj,
        });
    }
    let front = pareto(&measured);
    let chosen = pick(&measured).ok_or_else(|| msg("hw: no point measured"))?;
    let best = &measured[chosen];
    let layout_path = a.output.join("layout.json");
    let layout_json = json!({"full_attn": layout.full_attn, "swa": layout.swa, "window": layout.window, "block": layout.block.name(), "heads": best.point.heads, "dk": best.point.dk, "dv": best.point.dv});
    std::fs::write(&layout_path, serde_json::to_string_pretty(&layout_json).map_err(msg)?).map_err(|e| msg(format!("{}: {e}", layout_path.display())))?;
    let title = format!("jetc search hw: equal recurrent state {} per layer", base.state());
    if !jetc_search::hw::plot(&measured, &format!("objective {}", objective.describe()), &a.output.join("hw.png"), &a.output.join("hw.svg"), &title)? {
        eprintln!("note: no font found for the chart labels (set JETC_FONT to a .ttf); drawn without text");
    }
    let out = json!({
        "params": params, "base": base.name(), "pick": best.point.name(), "layout": layout_path.display().to_string(),
        "decode": {"batch": 1, "context": a.decode_context, "tokens": a.decode_tokens, "engine": "jetc CPU executor"},
        "points": measured.iter().zip(&front).map(|(m, &f)| m.to_json(f)).collect::<Vec<_>>(),
    });
    let json_path = a.output.join("hw.json");
    std::fs::write(&json_path, serde_json::to_string_pretty(&out).map_err(msg)?).map_err(|e| msg(format!("{}: {e}", json_path.display())))?;
    if a.quiet {
        return Ok(());
    }
    if a.json {
        println!("{}", serde_json::to_string_pretty(&out).map_err(msg)?);
        return Ok(());
    }
    println!("{:<14} {:>12} {:>12} {:>12} {:>12} {:>7}", "heads:dk:dv", "params", "cache B", "decode t/s", "objective", "pareto");
    for (m, f) in measured.iter().zip(&front) {
        println!("{:<14} {:>12} {:>12} {:>12.1} {:>12.4} {:>7}", m.point.name(), m.params, m.cache_bytes, m.decode_tokens_per_s, m.objective, if *f { "yes" } else { "" });
    }
    println!("pick: {} (objective {}); layout written to {}", best.point.name(), objective.describe(), layout_path.display());
    Ok(())
}
