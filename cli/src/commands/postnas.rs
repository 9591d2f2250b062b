//! `jetc postnas`: the whole PostNAS pipeline, one stage after another under DIR, each
//! skipped when its output is there and continued when it was stopped:
//!
//! 1. `supernet/local`, `supernet/path`: the supernet (attention + the linear block on every
//!    layer), the local phase then the path phase sampling `--budget` attention layers;
//! 2. `heatmap`: each layer alone on full attention, on the tasks;
//! 3. `placement`: the `--budget` layers that keep full attention (beam search, uniform beside);
//! 4. `block`: the linear candidates at that placement, distilled alike (skipped with one candidate);
//! 5. `hw`: (heads, d_k, d_v) at the chosen block's recurrent state;
//! 6. `final/local`, `final/kd`: the chosen design distilled again, local then KD;
//! 7. `model` (ONNX + jet-hf + tokenizer, as `jetc convert` writes) and `codegen` (the CUDA
//!    kernels' sources, compiled when NVRTC is there, and the manifest);
//!
//! then `report.md` with the tables and plots of every stage, and postnas.json.
use std::path::PathBuf;
use std::time::Instant;

use jetc_eval::suite::SuiteOptions;
use jetc_search::placement::Objective;
use serde_json::{json, Value};

use super::convert::LayoutFlags;
use super::search::{read_json, RecipeFlags, SearchCommon};
use crate::error::{CliError, Result};
use crate::load;

pub struct PostnasArgs {
    pub model: PathBuf,
    pub output: PathBuf,
    pub budget: usize,
    /// The supernet's linear block.
    pub block: String,
    /// Block selection candidates (the supernet's block among them).
    pub candidates: Vec<String>,
    pub suite: SuiteOptions,
    pub tokenizer: Option<PathBuf>,
    /// The recipe of block selection and the hardware-aware search (and the path phases).
    pub recipe: RecipeFlags,
    pub local_lr: f32,
    pub supernet_local_steps: u64,
    pub supernet_steps: u64,
    pub final_local_steps: u64,
    pub final_kd_steps: u64,
    pub beam: usize,
    /// Placement searches the best this many layers of the heat map (0: every layer).
    pub placement_layers: usize,
    pub objective: Option<String>,
    pub max_points: usize,
    pub json: bool,
}

fn msg(e: impl std::fmt::Display) -> CliError {
    CliError::Msg(e.to_string())
}


/// Prints the stage banner (on stderr: stdout is for the summary).
fn stage(i: usize, name: &str, what: &str, done: bool) {
    eprintln!("[postnas {i}/7] {name}: {}", if done { format!("{what} (done, kept)") } else { what.to_string() });
}

pub fn run(a: &PostnasArgs) -> Result<()> {
    let started = Instant::now();
    // Checked before any stage runs.
    let n_layers = {
        let base = load::load_raised(&a.model)?;
        jetc_passes::linearize::attention_layers(&base)?.len()
    };
    if a.budget == 0 || a.budget > n_layers {
        return Err(msg(format!("--budget {}: between 1 and the model's {n_layers} layers", a.budget)));
    }
    if a.placement_layers > 0 && a.budget > a.placement_layers {
        return Err(msg(format!("--budget {} exceeds --placement-layers {}: placement picks the budget among those layers", a.budget, a.placement_layers)));
    }
    jetc_passes::linearize::Block::parse(&a.block).map_err(msg)?;
    for c in &a.candidates {
        jetc_passes::linearize::Block::parse(c).map_err(msg)?;
    }
    jetc_eval::suite::read_choice_tasks(&a.suite).map_err(msg)?;
    let tasks = jetc_eval::expand_tasks(&a.suite.tasks);
    let objective = match &a.objective {
        Some(o) => Objective::parse(o).map_err(|e| msg(format!("--objective: {e}")))?,
        None => Objective::defaults(&tasks),
    };
    if let Some(t) = objective.tasks().iter().find(|t| !tasks.contains(t)) {
        return Err(msg(format!("--objective: task {t} is not among the --task tasks ({})", tasks.join(","))));
    }
    let d = &a.output;
    let params = json!({
        "model": a.model.display().to_string(), "budget": a.budget, "block": a.block, "candidates": a.candidates,
        "tasks": a.suite.tasks, "limit": a.suite.limit, "data": a.suite.data, "seq_len": a.suite.seq_len, "filler_tokens": a.suite.filler_tokens,
        "seed": a.suite.seed, "recipe": a.recipe.to_json(), "local_lr": a.local_lr,
        "supernet_local_steps": a.supernet_local_steps, "supernet_steps": a.supernet_steps,
        "final_local_steps": a.final_local_steps, "final_kd_steps": a.final_kd_steps, "beam": a.beam, "placement_layers": a.placement_layers,
        "objective": objective.describe(), "max_points": a.max_points,
    });
    let mut params = params;
    if let (Some(p), Some(n)) = (params.as_object_mut(), a.suite.max_new_tokens) {
        p.insert("max_new_tokens".into(), json!(n));
    }
    super::search::check_rerun(d, &params)?;
    std::fs::create_dir_all(d).map_err(|e| msg(format!("{}: {e}", d.display())))?;
    std::fs::write(d.join("params.json"), serde_json::to_string_pretty(&params).map_err(msg)?).map_err(|e| msg(format!("{}: {e}", d.display())))?;
    let supernet_candidates = format!("attn,{}", a.block);
    let all_linear = LayoutFlags { full_attn: vec![], swa: vec![], window: None, block: a.block.clone(), heads: None, dk: None, dv: None, layout: None };

    // 1. The supernet.
    let local = d.join("supernet/local");
    let path = d.join("supernet/path");
    let done = path.join("distill.json").is_file();
    stage(1, "supernet", &format!("local {} steps, path {} steps sampling {} attention layers", a.supernet_local_steps, a.supernet_steps, a.budget), done);
    if !done {
        if a.supernet_local_steps > 0 && !local.join("distill.json").is_file() {
            let mut args = a.recipe.distill_args(&a.model, &a.tokenizer, all_linear.clone(), &local);
            (args.phase, args.steps, args.tokens, args.lr, args.kl, args.supernet) = ("local".into(), Some(a.supernet_local_steps), None, a.local_lr, 0.0, Some(supernet_candidates.clone()));
            super::distill::run(&args)?;
        }
        let mut args = a.recipe.distill_args(&a.model, &a.tokenizer, all_linear.clone(), &path);
        (args.phase, args.steps, args.tokens, args.sample, args.supernet) = ("path".into(), Some(a.supernet_steps), None, format!("budget:{}", a.budget), Some(supernet_candidates.clone()));
        args.init_from = (a.supernet_local_steps > 0).then(|| local.clone());
        super::distill::run(&args)?;
    }
    let common = |out: PathBuf| SearchCommon {
        supernet: path.clone(),
        model: Some(a.model.clone()),
        output: out.clone(),
        suite: a.suite.clone(),
        tokenizer: a.tokenizer.clone(),
        block: Some(a.block.clone()),
        resume: out.join("params.json").is_file(),
        hidden_cache_mb: 2048,
        json: false,
        quiet: true,
    };

    // 2. The heat map.
    let hm = d.join("heatmap");
    let done = hm.join("heatmap.json").is_file();
    stage(2, "heatmap", &format!("{n_layers} one-attention-layer subnets + the all-linear one"), done);
    if !done {
        super::search::heatmap(&super::search::HeatmapArgs { common: common(hm.clone()), layers: vec![] })?;
    }

    // 3. Placement.
    let pl = d.join("placement");
    let done = pl.join("placement.json").is_file();
    // The candidate layers: the heat map's best `--placement-layers` under the objective.
    let candidates: Vec<usize> = if a.placement_layers == 0 || a.placement_layers >= n_layers {
        vec![]
    } else {
        let cells: Vec<(usize, Vec<jetc_eval::Score>)> = super::search::read_cells(&hm.join("cells.jsonl"))?.into_iter().filter_map(|c| Some((c.layer?, c.scores))).collect();
        let mut best = jetc_search::placement::rank_layers(&cells, &objective)?;
        best.truncate(a.placement_layers);
        best.sort_unstable();
        best
    };
    let placement_among = candidates.clone();
    let among = if candidates.is_empty() { "every layer".to_string() } else { format!("the heat map's best {} layers {candidates:?}", candidates.len()) };
    stage(3, "placement", &format!("budget {} among {among}, beam {}, objective {}", a.budget, a.beam, objective.describe()), done);
    if !done {
        super::search::placement(&super::search::PlacementArgs {
            common: common(pl.clone()),
            budget: a.budget,
            beam: a.beam,
            objective: Some(objective.describe()),
            candidates: candidates.clone(),
            heatmap: Some(hm.clone()),
            swa: 0,
            window: None,
        })?;
    }
    let placement = read_json(&pl.join("placement.json"))?;
    let full_attn: Vec<usize> = placement["best"]["full_attn"].as_array().into_iter().flatten().filter_map(|v| v.as_u64().map(|n| n as usize)).collect();
    let at = LayoutFlags { full_attn: full_attn.clone(), ..all_linear.clone() };

    // 4. Block selection.
    let bl = d.join("block");
    let mut chosen_block = a.block.clone();
    let mut candidates = a.candidates.clone();
    if !candidates.contains(&a.block) {
        candidates.insert(0, a.block.clone());
    }
    if candidates.len() >= 2 {
        let done = bl.join("block.json").is_file();
        stage(4, "block", &format!("{} at full attention {full_attn:?}", candidates.join(", ")), done);
        if !done {
            super::search::block(&super::search::BlockArgs {
                model: a.model.clone(),
                output: bl.clone(),
                layout: at.clone(),
                candidates: candidates.clone(),
                suite: a.suite.clone(),
                tokenizer: a.tokenizer.clone(),
                recipe: a.recipe.clone(),
                json: false,
                quiet: true,
            })?;
        }
        let sel = read_json(&bl.join("block.json"))?;
        let mut best = f64::NEG_INFINITY;
        for c in sel["candidates"].as_array().into_iter().flatten() {
            let scores = jetc_search::heatmap::scores_from_json(&c["scores"])?;
            let (v, _) = objective.value(&scores)?;
            if v > best {
                best = v;
                chosen_block = c["block"].as_str().unwrap_or(&a.block).to_string();
            }
        }
    } else {
        stage(4, "block", "one candidate: nothing to select", false);
    }
    let at = LayoutFlags { block: chosen_block.clone(), ..at };

    // 5. Hardware-aware search.
    let hwd = d.join("hw");
    let done = hwd.join("hw.json").is_file();
    stage(5, "hw", &format!("(heads, d_k, d_v) of {chosen_block} at equal state, up to {} points", a.max_points), done);
    if !done {
        super::search::hw(&super::search::HwArgs {
            model: a.model.clone(),
            output: hwd.clone(),
            layout: at.clone(),
            points: vec![],
            max_points: a.max_points,
            suite: a.suite.clone(),
            tokenizer: a.tokenizer.clone(),
            recipe: a.recipe.clone(),
            objective: Some(objective.describe()),
            decode_context: 512,
            decode_tokens: 16,
            json: false,
            quiet: true,
        })?;
    }
    let hw = read_json(&hwd.join("hw.json"))?;
    let final_layout = hwd.join("layout.json");

    // 6. Final distillation of the chosen design: local, then KD.
    let fl = d.join("final/local");
    let fk = d.join("final/kd");
    let done = fk.join("distill.json").is_file();
    stage(6, "final", &format!("local {} steps, then KD {} steps of {} at {full_attn:?}, {}", a.final_local_steps, a.final_kd_steps, chosen_block, hw["pick"].as_str().unwrap_or("?")), done);
    let design = LayoutFlags { layout: Some(final_layout.clone()), ..all_linear.clone() };
    if !done {
        if a.final_local_steps > 0 && !fl.join("distill.json").is_file() {
            let mut args = a.recipe.distill_args(&a.model, &a.tokenizer, design.clone(), &fl);
            (args.phase, args.steps, args.tokens, args.lr, args.kl) = ("local".into(), Some(a.final_local_steps), None, a.local_lr, 0.0);
            super::distill::run(&args)?;
        }
        let mut args = a.recipe.distill_args(&a.model, &a.tokenizer, design.clone(), &fk);
        (args.phase, args.steps, args.tokens, args.kl) = ("kd".into(), Some(a.final_kd_steps), None, 1.0);
        args.init_from = (a.final_local_steps > 0).then(|| fl.clone());
        super::distill::run(&args)?;
    }
    let final_record = read_json(&fk.join("distill.json"))?;

    // 7. Export: the model (ONNX + jet-hf + tokenizer) and the kernels.
    let model_dir = d.join("model");
    let cg = d.join("codegen");
    let done = model_dir.join("model.onnx").is_file() && cg.join("manifest.json").is_file();
    stage(7, "export", "ONNX + jet-hf + tokenizer, then the CUDA kernels and their manifest", done);
    let mut compiled = true;
    if !done {
        let mut g = load::load_raised(&a.model)?;
        let net = jetc_search::supernet::Supernet::open(&fk)?;
        net.check_model(&g, &a.model)?;
        let layout = super::convert::layout_of(&design)?;
        g = net.subnet(&g, &layout)?;
        super::convert::write_converted(&g, &a.model, &model_dir, "auto", super::convert::Report::Silent, None)?;
        let onnx = model_dir.join("model.onnx");
        let mut cga = super::codegen::CodegenArgs {
            model: onnx.display().to_string(),
            arch: "sm_90".into(),
            output: cg.clone(),
            dtype: "bf16".into(),
            render_only: false,
            ptxas: false,
            allow_spills: true,
            quiet: true,
        };
        if let Err(e) = super::codegen::run(&cga) {
            eprintln!("note: the kernels were not compiled ({e}); writing their sources only");
            compiled = false;
            cga.render_only = true;
            super::codegen::run(&cga)?;
        }
    }

    // The report.
    let heat = read_json(&hm.join("heatmap.json"))?;
    let block_sel = bl.join("block.json").is_file().then(|| read_json(&bl.join("block.json"))).transpose()?;
    let report = report_md(a, &objective, &heat, &placement, &placement_among, block_sel.as_ref(), &chosen_block, &hw, &final_record, &read_json(&path.join("distill.json"))?);
    std::fs::write(d.join("report.md"), report).map_err(|e| msg(format!("{}: {e}", d.display())))?;
    let out = json!({
        "params": params, "full_attn": full_attn, "block": chosen_block, "hw_pick": hw["pick"], "layout": final_layout.display().to_string(),
        "model": model_dir.join("model.onnx").display().to_string(), "codegen": cg.display().to_string(), "kernels_compiled": compiled,
        "placement_gap_vs_uniform": placement["gap"], "final_heldout_nll": final_record["heldout_nll_after"],
        "seconds_this_run": started.elapsed().as_secs_f64(), "report": d.join("report.md").display().to_string(),
    });
    std::fs::write(d.join("postnas.json"), serde_json::to_string_pretty(&out).map_err(msg)?).map_err(|e| msg(format!("{}: {e}", d.display())))?;
    if a.json {
        println!("{}", serde_json::to_string_pretty(&out).map_err(msg)?);
    } else {
        println!("postnas: full attention at {full_attn:?}, {chosen_block} {} elsewhere; model in {}; report in {}", hw["pick"].as_str().unwrap_or(""), model_dir.display(), d.join("report.md").display());
    }
    Ok(())
}

fn f(v: &Value) -> String {
    v.as_f64().map_or("-".into(), |x| format!("{x:.4}"))
}

/// The metric `name` of `task` in a scores list, with its stderr.
fn metric_cell(scores: &Value, task: &str, name: &str) -> String {
    let m = scores.as_array().into_iter().flatten().find(|s| s["task"] == task).and_then(|s| s["metrics"].as_array()?.iter().find(|m| m["name"] == name).cloned());
    match m {
        Some(m) => match m["stderr"].as_f64() {
            Some(e) => format!("{} ± {e:.4}", f(&m["value"])),
            None => f(&m["value"]),
        },
        None => "-".into(),
    }
}

#[allow(clippy::too_many_arguments)]
fn report_md(a: &PostnasArgs, obj: &Objective, heat: &Value, placement: &Value, among: &[usize], block: Option<&Value>, chosen: &str, hw: &Value, fin: &Value, supernet: &Value) -> String {
    let mut r = String::new();
    let terms: Vec<(String, String)> = obj.terms.iter().map(|t| (t.task.clone(), t.metric.clone())).collect();
    r += &format!("# jetc postnas: {}\n\n", a.model.display());
    r += &format!(
        "Budget {} full-attention layers; objective `{}`; tasks {}; limits {}.\n\n",
        a.budget,
        obj.describe(),
        a.suite.tasks.join(","),
        a.suite.limit.describe()
    );
    r += "## 1. Supernet\n\n";
    r += &format!(
        "attention + {} on every layer; path phase sampling {} attention layers: {} tokens in {:.0} s ({:.1} tokens/s); internal held-out NLL {} -> {} (teacher {}).\n\n",
        a.block,
        a.budget,
        supernet["tokens"],
        supernet["seconds"].as_f64().unwrap_or(0.0),
        supernet["tokens_per_s"].as_f64().unwrap_or(0.0),
        f(&supernet["heldout_nll_before"]),
        f(&supernet["heldout_nll_after"]),
        f(&supernet["teacher_heldout_nll"])
    );
    r += "## 2. Heat map\n\n![heat map](heatmap/heatmap.png)\n\n| row | best layers (gain over all-linear) | layers carrying half the gain |\n|---|---|---|\n";
    for row in heat["findings"]["rows"].as_array().into_iter().flatten() {
        let top: Vec<String> = row["top_layers"].as_array().into_iter().flatten().zip(row["top_gains"].as_array().into_iter().flatten()).map(|(l, g)| format!("{l} ({:+.3})", g.as_f64().unwrap_or(0.0))).collect();
        r += &format!("| {} {} | {} | {} |\n", row["task"].as_str().unwrap_or(""), row["metric"].as_str().unwrap_or(""), top.join(", "), row["carriers_of_half_the_gain"]);
    }
    r += "\n## 3. Placement\n\n";
    let among = if among.is_empty() { "every layer".to_string() } else { format!("the heat map's best {} layers under the objective, {among:?}", among.len()) };
    r += &format!("{} search among {among}, {} subnets scored.\n\n| placement | objective |", placement["method"].as_str().unwrap_or(""), placement["subnets_scored"]);
    for (t, m) in &terms {
        r += &format!(" {t} {m} |");
    }
    r += "\n|---|---|";
    r += &"---|".repeat(terms.len());
    r += "\n";
    let mut line = |name: String, p: &Value| {
        r += &format!("| {name} | {} |", f(&p["objective"]));
        for (t, m) in &terms {
            r += &format!(" {} |", metric_cell(&p["scores"], t, m));
        }
        r += "\n";
    };
    for p in placement["top"].as_array().into_iter().flatten().take(5) {
        line(format!("learned {}", p["full_attn"]), p);
    }
    line(format!("uniform {}", placement["uniform"]["full_attn"]), &placement["uniform"]);
    r += &format!(
        "\nLearned - uniform: {}{}.\n\n",
        f(&placement["gap"]),
        placement["gap_stderr"].as_f64().map_or(String::new(), |e| format!(" ± {e:.4} (paired over the same examples)"))
    );
    r += "## 4. Block selection\n\n";
    match block {
        Some(b) => {
            r += "![block selection](block/block.png)\n\n| block | training tokens | training tokens/s | block params |";
            for (t, m) in &terms {
                r += &format!(" {t} {m} |");
            }
            r += "\n|---|---|---|---|";
            r += &"---|".repeat(terms.len());
            r += "\n";
            for c in b["candidates"].as_array().into_iter().flatten() {
                r += &format!("| {} | {} | {:.1} | {} |", c["block"].as_str().unwrap_or(""), c["tokens"], c["tokens_per_s"].as_f64().unwrap_or(0.0), c["block_params"]);
                for (t, m) in &terms {
                    r += &format!(" {} |", metric_cell(&c["scores"], t, m));
                }
                r += "\n";
            }
            r += &format!("\nChosen: **{chosen}**.\n\n");
        }
        None => r += &format!("One candidate ({chosen}): nothing to select.\n\n"),
    }
    r += "## 5. Hardware-aware search\n\n![hardware-aware search](hw/hw.png)\n\n| heads:d_k:d_v | params | cache bytes | decode tokens/s | objective | Pareto |\n|---|---|---|---|---|---|\n";
    for p in hw["points"].as_array().into_iter().flatten() {
        r += &format!(
            "| {}:{}:{} | {} | {} | {:.1} | {} | {} |\n",
            p["heads"],
            p["dk"],
            p["dv"],
            p["params"],
            p["cache_bytes"],
            p["decode_tokens_per_s"].as_f64().unwrap_or(0.0),
            f(&p["objective"]),
            if p["pareto"] == true { "yes" } else { "" }
        );
    }
    r += &format!("\nDecode: batch 1, {} tokens of context, jetc's CPU executor. Pick: **{}**.\n\n", hw["decode"]["context"], hw["pick"].as_str().unwrap_or(""));
    r += "## 6. Final distillation\n\n";
    r += &format!(
        "KD phase: {} tokens in {:.0} s; internal held-out NLL {} -> {} (teacher {}).\n\n",
        fin["tokens"],
        fin["seconds"].as_f64().unwrap_or(0.0),
        f(&fin["heldout_nll_before"]),
        f(&fin["heldout_nll_after"]),
        f(&fin["teacher_heldout_nll"])
    );
    r += "## 7. Export\n\n`model/` holds the ONNX model (opset 27), the Jet-Nemotron layout where it fits, and the tokenizer; `codegen/` the CUDA kernels and their manifest.\n";
    r
}
