//! `jetc distill` as a user runs it on a fixture decoder with a word-level tokenizer: the
//! loss falls, metrics and summary are written, the distilled model runs in onnxruntime and
//! matches jetc; and bad input is refused with a clear error, nothing overwritten.
use std::path::{Path, PathBuf};
use std::process::Command;


mod common;
use common::{fails, jetc, onnxruntime_agrees, repo, word_text, word_tokenizer, Tmp};

fn tmp(tag: &str) -> Tmp {
    common::tmp("distill-cli", tag)
}

/// The llama fixture (vocab 128) with a word-level tokenizer (token i is `w{i}`) and a text
/// of pseudo-random words.
fn setup(dir: &Path) -> (PathBuf, PathBuf) {
    let model = dir.join("model.onnx");
    std::fs::copy(repo().join("tests/fixtures/llama-dynamo-opset20-eager-nokv/model.onnx"), &model).expect("copy fixture");
    word_tokenizer(dir, 128, Some(2), serde_json::json!({"eos_token": "w2"}));
    let words = word_text(1200, 12345);
    let data = dir.join("data.txt");
    std::fs::write(&data, words).expect("write data");
    (model, data)
}

#[test]
fn distills_a_fixture_and_the_result_runs_in_onnxruntime() {
    let dir = tmp("ok");
    let (model, data) = setup(&dir.0);
    let out = dir.0.join("run");
    let o = jetc(&[
        "distill", model.to_str().unwrap(), "-o", out.to_str().unwrap(), "--data", data.to_str().unwrap(),
        "--full-attn", "0", "--seq-len", "16", "--batch", "2", "--steps", "120", "--lr", "2e-2", "--warmup", "2", "--json",
        "--token-cache", dir.0.join("cache").to_str().unwrap(),
    ]);
    assert!(o.status.success(), "distill failed:\n{}", String::from_utf8_lossy(&o.stderr));
    let s: serde_json::Value = serde_json::from_slice(&o.stdout).expect("--json summary");
    let (first, last) = (s["loss_first"].as_f64().unwrap(), s["loss_last"].as_f64().unwrap());
    assert!(last < 0.75 * first, "loss {first} -> {last}");
    assert_eq!(s["layers"], serde_json::json!([1]));
    let before = s["heldout_loss_before"].as_f64().expect("held-out windows");
    let after = s["heldout_loss_after"].as_f64().unwrap();
    assert!(after < before, "held-out {before} -> {after}");
    let lines = std::fs::read_to_string(out.join("metrics.jsonl")).expect("metrics");
    assert_eq!(lines.lines().count(), 120);
    assert!(out.join("distill.json").is_file());
    let png = std::fs::read(out.join("loss.png")).expect("loss.png");
    assert_eq!(&png[..4], b"\x89PNG");
    assert!(out.join("loss.svg").is_file());
    // A second run reads the tokens from the cache.
    let o2 = jetc(&[
        "distill", model.to_str().unwrap(), "-o", dir.0.join("run2").to_str().unwrap(), "--data", data.to_str().unwrap(),
        "--full-attn", "0", "--seq-len", "16", "--batch", "2", "--steps", "2", "--token-cache", dir.0.join("cache").to_str().unwrap(),
    ]);
    assert!(o2.status.success() && String::from_utf8_lossy(&o2.stderr).contains("tokens from the cache"), "{}", String::from_utf8_lossy(&o2.stderr));
    let onnx = out.join("model/model.onnx");
    assert!(onnx.is_file() && out.join("model/tokenizer.json").is_file());

    onnxruntime_agrees(&dir.0, &onnx);
}


fn summary(out: &std::process::Output) -> serde_json::Value {
    assert!(out.status.success(), "distill failed:\n{}", String::from_utf8_lossy(&out.stderr));
    serde_json::from_slice(&out.stdout).expect("--json summary")
}

fn metric_lines(run: &Path) -> Vec<serde_json::Value> {
    std::fs::read_to_string(run.join("metrics.jsonl")).expect("metrics").lines().map(|l| serde_json::from_str(l).expect("json line")).collect()
}

/// Local phase, then the path phase from its weights: the composed model's hidden states and
/// its distribution move toward the teacher's (what the path phase is for), the held-out NLL
/// is measured on schedule, and the written hybrid runs in onnxruntime and agrees with jetc.
#[test]
fn path_phase_after_local_moves_the_hybrid_toward_the_teacher() {
    let dir = tmp("path");
    let (model, data) = setup(&dir.0);
    let (m, d) = (model.to_str().unwrap(), data.to_str().unwrap());
    let cache = dir.0.join("cache");
    let local = dir.0.join("local");
    let common = ["--full-attn", "0", "--seq-len", "16", "--batch", "2", "--warmup", "2", "--json", "--token-cache", cache.to_str().unwrap()];
    let args = |out: &Path, more: &[&str]| -> Vec<String> {
        ["distill", m, "-o", out.to_str().unwrap(), "--data", d].iter().chain(&common).chain(more).map(|s| s.to_string()).collect()
    };
    let run = |a: Vec<String>| jetc(&a.iter().map(String::as_str).collect::<Vec<_>>());
    let s = summary(&run(args(&local, &["--steps", "40", "--lr", "2e-2"])));
    let local_nll = s["heldout_nll_after"].as_f64().expect("held-out NLL of the local run");
    let teacher_nll = s["teacher_heldout_nll"].as_f64().expect("the teacher's held-out NLL");
    let path = dir.0.join("path");
    let s = summary(&run(args(&path, &["--steps", "60", "--lr", "5e-3", "--phase", "path", "--kl", "1", "--eval-every", "20", "--init-from", local.to_str().unwrap()])));
    let (before, after) = (s["heldout_nll_before"].as_f64().unwrap(), s["heldout_nll_after"].as_f64().unwrap());
    assert!((before - local_nll).abs() < 1e-4, "--init-from: the path run starts at {before}, the local run ended at {local_nll}");
    // The teacher is scored on the same windows by both runs (the phase does not change them).
    let teacher_again = s["teacher_heldout_nll"].as_f64().expect("the teacher's held-out NLL");
    assert!(teacher_nll.is_finite() && teacher_nll > 0.0 && (teacher_nll - teacher_again).abs() < 1e-9, "teacher NLL {teacher_nll} vs {teacher_again}");
    // The fixture's teacher is a random decoder on random words: its NLL is near the uniform
    // one, so the student's NLL has little room; its distance to the teacher is what falls.
    assert!(after < before + 0.01, "held-out NLL {before} -> {after}");
    let lines = metric_lines(&path);
    assert_eq!(lines.len(), 60);
    assert_eq!(lines.iter().filter(|l| l["heldout_nll"].is_number()).count(), 3, "every 20 steps and at the end");
    let mean = |key: &str, r: std::ops::Range<usize>| lines[r.clone()].iter().map(|l| l[key].as_f64().expect(key)).sum::<f64>() / r.len() as f64;
    let (kl0, kl1) = (mean("kl", 0..10), mean("kl", 50..60));
    assert!(kl1 < 0.8 * kl0, "KL to the teacher {kl0} -> {kl1}");
    let (f0, f1) = (mean("features", 0..10), mean("features", 50..60));
    assert!(f1 < 0.8 * f0, "hidden-state loss {f0} -> {f1}");
    assert!(lines.iter().all(|l| l["full_attn"] == serde_json::json!([0])));
    onnxruntime_agrees(&dir.0, &path.join("model/model.onnx"));

    // Stage 2 from the local run's weights: knowledge distillation on the logits alone, the
    // MLPs training too; the KL to the teacher falls and the MLP weights are among the trained.
    let kd = dir.0.join("kd");
    let s = summary(&run(args(&kd, &["--steps", "30", "--lr", "1e-3", "--phase", "kd", "--train-mlp", "--init-from", local.to_str().unwrap()])));
    assert_eq!((s["kl"].as_f64(), s["train_mlp"].as_bool()), (Some(1.0), Some(true)), "{s}");
    let kd_lines = metric_lines(&kd);
    assert!(kd_lines.iter().all(|l| l.get("features").is_none() && l["kl"].is_number()));
    let kd_mean = |r: std::ops::Range<usize>| kd_lines[r.clone()].iter().map(|l| l["kl"].as_f64().unwrap()).sum::<f64>() / r.len() as f64;
    assert!(kd_mean(20..30) < kd_mean(0..10), "KD: KL {} -> {}", kd_mean(0..10), kd_mean(20..30));
    let meta: serde_json::Value = serde_json::from_slice(&std::fs::read(kd.join("checkpoints/step-00000030/state.json")).unwrap()).unwrap();
    let names: Vec<&str> = meta["params"].as_array().unwrap().iter().filter_map(|v| v.as_str()).collect();
    // The fixture's two SwiGLU MLPs: gate, up and down each (named by the exporter).
    let mlp = names.iter().filter(|n| !n.starts_with("layers.")).count();
    assert!(mlp == 6 && names.iter().any(|n| n.starts_with("layers.1.jet.")), "{names:?}");
    onnxruntime_agrees(&dir.0, &kd.join("model/model.onnx"));
}

/// `--init calibrated`: every block's output projection is the least-squares fit to its
/// attention's output. The training graph's own loss on the calibration batch (the first
/// step's per-layer loss, computed by the graph's normalized-MSE ops) equals the fit's error
/// computed from the accumulated sums, and the mapped init's first loss equals the error
/// before. (The fixture's text is random words, so generalization is measured on SmolLM2 in
/// docs/benchmarks.md, not here.)
#[test]
fn calibrated_init_fits_each_block_to_its_attention() {
    let dir = tmp("calibrated");
    let (model, data) = setup(&dir.0);
    let (m, d) = (model.to_str().unwrap(), data.to_str().unwrap());
    let cache = dir.0.join("cache");
    let run = |tag: &str, more: &[&str]| -> (serde_json::Value, PathBuf) {
        let out = dir.0.join(tag);
        let mut a = vec!["distill", m, "-o", out.to_str().unwrap(), "--data", d, "--full-attn", "0", "--seq-len", "16", "--batch", "2"];
        a.extend(["--steps", "1", "--lr", "1e-9", "--warmup", "0", "--json", "--token-cache", cache.to_str().unwrap()]);
        a.extend(more);
        (summary(&jetc(&a)), out)
    };
    let (mapped, mapped_dir) = run("mapped", &[]);
    assert_eq!(mapped["calibration"], serde_json::json!([]));
    // One calibration batch of 2 x 16 tokens: the first training batch.
    let (fit, fit_dir) = run("fit", &["--init", "calibrated", "--calib-tokens", "32"]);
    let c = &fit["calibration"][0];
    assert_eq!(c["layer"], 1, "{fit}");
    let (before, after) = (c["nmse_before"].as_f64().unwrap(), c["nmse_after"].as_f64().unwrap());
    assert!(after < 0.5 * before && after < 1.0, "calibration {before} -> {after}");
    let first_loss = |run: &Path| metric_lines(run)[0]["layers"]["1"].as_f64().expect("layer 1 loss");
    let (graph_after, graph_before) = (first_loss(&fit_dir), first_loss(&mapped_dir));
    assert!((graph_after - after).abs() <= 2e-3 * after.max(1e-3), "graph loss {graph_after} vs fit {after}");
    assert!((graph_before - before).abs() <= 2e-3 * before, "graph loss {graph_before} vs before {before}");
    // Unknown inits are refused by name.
    let bad = jetc(&["distill", m, "-o", dir.0.join("bad").to_str().unwrap(), "--data", d, "--init", "zeros", "--steps", "1"]);
    fails(&bad, &["unknown --init `zeros`"]);
}

/// Sampled layouts: each step's layout is logged, a block's weights update only on the steps
/// whose layout made its layer linear (per-weight step counts in the checkpoint), and the
/// same seed replays the same layouts.
#[test]
fn sampled_layouts_update_only_the_blocks_on_the_path() {
    let dir = tmp("sample");
    let (model, data) = setup(&dir.0);
    let (m, d) = (model.to_str().unwrap(), data.to_str().unwrap());
    let out = dir.0.join("run");
    let o = jetc(&[
        "distill", m, "-o", out.to_str().unwrap(), "--data", d, "--full-attn", "0", "--seq-len", "16", "--batch", "2", "--steps", "12",
        "--phase", "path", "--sample", "uniform", "--json", "--token-cache", "none",
    ]);
    summary(&o);
    let lines = metric_lines(&out);
    let linear_steps = |l: u64| lines.iter().filter(|x| !x["full_attn"].as_array().unwrap().iter().any(|v| v.as_u64() == Some(l))).count() as u64;
    let (n0, n1) = (linear_steps(0), linear_steps(1));
    assert!(n0 > 0 && n1 > 0 && (n0 < 12 || n1 < 12), "uniform sampling over 12 steps: layer 0 linear {n0}x, layer 1 {n1}x");
    let meta: serde_json::Value = serde_json::from_slice(&std::fs::read(out.join("checkpoints/step-00000012/state.json")).unwrap()).unwrap();
    let names = meta["params"].as_array().unwrap();
    let steps = meta["param_steps"].as_array().expect("per-weight steps");
    for (n, s) in names.iter().zip(steps) {
        let n = n.as_str().unwrap();
        let want = if n.starts_with("layers.0.") { n0 } else { n1 };
        assert_eq!(s.as_u64(), Some(want), "{n}");
    }
    // The same run again samples the same layouts.
    let again = dir.0.join("again");
    let o = jetc(&[
        "distill", m, "-o", again.to_str().unwrap(), "--data", d, "--full-attn", "0", "--seq-len", "16", "--batch", "2", "--steps", "12",
        "--phase", "path", "--sample", "uniform", "--json", "--token-cache", "none",
    ]);
    summary(&o);
    let layouts = |r: &Path| metric_lines(r).iter().map(|l| l["full_attn"].clone()).collect::<Vec<_>>();
    assert_eq!(layouts(&out), layouts(&again));
    fails(&jetc(&["distill", m, "-o", dir.0.join("x").to_str().unwrap(), "--data", d, "--sample", "budget:2", "--phase", "path"]), &["budget:2", "every one"]);
    fails(&jetc(&["distill", m, "-o", dir.0.join("x").to_str().unwrap(), "--data", d, "--sample", "uniform"]), &["--phase path"]);
}

#[test]
fn distills_from_parquet_with_a_named_text_column() {
    let dir = tmp("parquet");
    let (model, _) = setup(&dir.0);
    let out = dir.0.join("out");
    let data = repo().join("train/tests/fixtures/data/content-column.parquet");
    let o = jetc(&[
        "distill", model.to_str().unwrap(), "-o", out.to_str().unwrap(), "--data", data.to_str().unwrap(), "--text-field", "content",
        "--full-attn", "0", "--seq-len", "8", "--batch", "2", "--steps", "2", "--token-cache", "none", "--json",
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let summary: serde_json::Value = serde_json::from_slice(&std::fs::read(out.join("distill.json")).unwrap()).unwrap();
    assert_eq!(summary["data"]["documents"], 7, "{summary}");
    assert_eq!(summary["data"]["text_field"], "content");
}

#[test]
fn bad_input_is_refused_and_nothing_is_overwritten() {
    let dir = tmp("bad");
    let (model, data) = setup(&dir.0);
    let m = model.to_str().unwrap();
    let d = data.to_str().unwrap();
    let out = dir.0.join("out");
    let o = out.to_str().unwrap();
    // Missing, empty and binary data.
    fails(&jetc(&["distill", m, "-o", o, "--data", "/nonexistent/x.txt", "--full-attn", "0"]), &["/nonexistent/x.txt", "no such file"]);
    let empty = dir.0.join("empty.txt");
    std::fs::write(&empty, "").unwrap();
    fails(&jetc(&["distill", m, "-o", o, "--data", empty.to_str().unwrap(), "--full-attn", "0"]), &["empty.txt", "empty"]);
    let bin = dir.0.join("bin.txt");
    std::fs::write(&bin, [0x41u8, 0xff, 0xfe, 0x00, 0x80]).unwrap();
    fails(&jetc(&["distill", m, "-o", o, "--data", bin.to_str().unwrap(), "--full-attn", "0"]), &["bin.txt", "not UTF-8"]);
    // Parquet: a null text, and a text column that is not there.
    let parquet = |name: &str| repo().join("train/tests/fixtures/data").join(name).to_str().unwrap().to_string();
    fails(&jetc(&["distill", m, "-o", o, "--data", &parquet("null-text.parquet"), "--full-attn", "0"]), &["null-text.parquet", "row 2", "null"]);
    fails(
        &jetc(&["distill", m, "-o", o, "--data", &parquet("content-column.parquet"), "--text-field", "body", "--full-attn", "0"]),
        &["content-column.parquet", "no column `body`", "content"],
    );
    // A layout naming a layer that does not exist.
    fails(&jetc(&["distill", m, "-o", o, "--data", d, "--full-attn", "7"]), &["layer 7", "out of range"]);
    // Not one window of the asked length.
    fails(&jetc(&["distill", m, "-o", o, "--data", d, "--full-attn", "0", "--seq-len", "100000"]), &["--seq-len 100000"]);
    assert!(!out.exists(), "nothing is written on bad input");
    // An output directory holding another run.
    std::fs::create_dir_all(&out).unwrap();
    std::fs::write(out.join("distill.json"), "{}").unwrap();
    fails(&jetc(&["distill", m, "-o", o, "--data", d, "--full-attn", "0"]), &["already holds files"]);
    assert_eq!(std::fs::read_to_string(out.join("distill.json")).unwrap(), "{}");
}

fn checkpoint_bytes(run: &Path, step: u64) -> Vec<u8> {
    let p = run.join(format!("checkpoints/step-{step:08}/state.safetensors"));
    std::fs::read(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

fn losses(run: &Path) -> Vec<String> {
    std::fs::read_to_string(run.join("metrics.jsonl"))
        .expect("metrics")
        .lines()
        .map(|l| {
            let v: serde_json::Value = serde_json::from_str(l).expect("json line");
            format!("{}:{}", v["step"], v["loss"])
        })
        .collect()
}

/// `convert --supernet` on a sampled run: the run's own layout comes out byte for byte as the
/// run wrote it, another layout takes the run's weights for its other blocks (and runs in
/// onnxruntime), and a run that never trained a layout's block is refused, naming it.
#[test]
fn convert_supernet_extracts_any_layout_of_a_sampled_run() {
    let dir = tmp("supernet");
    let (model, data) = setup(&dir.0);
    let (m, d) = (model.to_str().unwrap(), data.to_str().unwrap());
    let run = dir.0.join("run");
    let o = jetc(&[
        "distill", m, "-o", run.to_str().unwrap(), "--data", d, "--full-attn", "0", "--seq-len", "16", "--batch", "2", "--steps", "12",
        "--phase", "path", "--sample", "uniform", "--format", "onnx", "--json", "--token-cache", "none",
    ]);
    summary(&o);
    let r = run.to_str().unwrap();
    let own = dir.0.join("own.onnx");
    let o = jetc(&["convert", m, "-o", own.to_str().unwrap(), "--full-attn", "0", "--format", "onnx", "--supernet", r]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert!(std::fs::read(&own).unwrap() == std::fs::read(run.join("model/model.onnx")).unwrap(), "convert --supernet differs from the run's own model");
    let other = dir.0.join("other.onnx");
    let o = jetc(&["convert", m, "-o", other.to_str().unwrap(), "--full-attn", "1", "--format", "onnx", "--supernet", r]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let plain = dir.0.join("plain.onnx");
    assert!(jetc(&["convert", m, "-o", plain.to_str().unwrap(), "--full-attn", "1", "--format", "onnx"]).status.success());
    assert!(std::fs::read(&other).unwrap() != std::fs::read(&plain).unwrap(), "layer 0's block kept its initial weights");
    onnxruntime_agrees(&dir.0, &other);
    // `eval --supernet` scores the same subnet in memory: the same NLL as the written file.
    let nll = |args: &[&str]| -> f64 {
        let o = jetc(&[&["eval"], args, &["--task", "lm", "--data", d, "--seq-len", "16", "--limit", "4", "--json"]].concat());
        assert!(o.status.success(), "eval: {}", String::from_utf8_lossy(&o.stderr));
        let v: serde_json::Value = serde_json::from_slice(&o.stdout).expect("eval --json");
        v["tasks"][0]["metrics"]["nll"]["value"].as_f64().unwrap_or_else(|| panic!("no lm nll in {v}"))
    };
    let (file, mem) = (nll(&[other.to_str().unwrap()]), nll(&[m, "--full-attn", "1", "--supernet", r]));
    assert!((file - mem).abs() < 1e-4 * file.abs(), "eval of the written subnet {file} vs eval --supernet {mem}");
    let undistilled = nll(&[m, "--full-attn", "1"]);
    assert!((undistilled - mem).abs() > 1e-3, "eval --full-attn 1 converts without the run's weights: {undistilled} vs {mem}");
    // A local run of layout [0] trained only layer 1's block.
    let local = dir.0.join("local");
    summary(&jetc(&[
        "distill", m, "-o", local.to_str().unwrap(), "--data", d, "--full-attn", "0", "--seq-len", "16", "--batch", "2", "--steps", "2", "--json",
        "--token-cache", "none",
    ]));
    let bad = dir.0.join("bad.onnx");
    fails(&jetc(&["convert", m, "-o", bad.to_str().unwrap(), "--full-attn", "1", "--supernet", local.to_str().unwrap()]), &["did not train", "layers.0."]);
    assert!(!bad.exists());
}

/// A supernet of four candidates per layer (attn, swa, JetBlock, Gated DeltaNet): the local
/// phase trains both linear candidates of both layers (one loss term each), the path phase
/// samples subnets over all four (stars and bars) and updates a block only on the steps its
/// layer took it, and `convert --supernet` writes a mixed subnet from a layout file that runs
/// in onnxruntime and agrees with jetc.
#[test]
fn supernet_of_four_candidates_trains_each_and_converts_a_mixed_subnet() {
    let dir = tmp("candidates");
    let (model, data) = setup(&dir.0);
    let (m, d) = (model.to_str().unwrap(), data.to_str().unwrap());
    let cands = "attn,swa,jetblock,gated-deltanet";
    let local = dir.0.join("local");
    let s = summary(&jetc(&[
        "distill", m, "-o", local.to_str().unwrap(), "--data", d, "--supernet", cands, "--window", "4", "--seq-len", "16", "--batch", "2",
        "--steps", "20", "--lr", "1e-2", "--json", "--format", "onnx", "--token-cache", "none",
    ]));
    let terms: Vec<String> = s["candidate_losses_last"].as_array().unwrap().iter().map(|t| format!("{}.{}", t["layer"], t["block"].as_str().unwrap())).collect();
    assert_eq!(terms, ["0.jetblock", "0.gated-deltanet", "1.jetblock", "1.gated-deltanet"]);
    assert_eq!(s["supernet"], cands);
    let lines = metric_lines(&local);
    assert_eq!(lines[0]["candidates"].as_object().unwrap().len(), 4, "{}", lines[0]);
    let (before, after) = (s["heldout_loss_before"].as_f64().unwrap(), s["heldout_loss_after"].as_f64().unwrap());
    assert!(after < before, "the supernet's held-out local loss {before} -> {after}");

    let path = dir.0.join("path");
    summary(&jetc(&[
        "distill", m, "-o", path.to_str().unwrap(), "--data", d, "--supernet", cands, "--window", "4", "--seq-len", "16", "--batch", "2",
        "--steps", "16", "--phase", "path", "--sample", "layouts", "--init-from", local.to_str().unwrap(), "--json", "--format", "onnx",
        "--token-cache", "none",
    ]));
    let lines = metric_lines(&path);
    let types: Vec<Vec<String>> = lines.iter().map(|l| l["layer_types"].as_array().unwrap().iter().map(|t| t.as_str().unwrap().to_string()).collect()).collect();
    for c in ["attn", "swa", "jetblock", "gated-deltanet"] {
        assert!(types.iter().any(|t| t.iter().any(|x| x == c)), "no step sampled {c}: {types:?}");
    }
    let meta: serde_json::Value = serde_json::from_slice(&std::fs::read(path.join("checkpoints/step-00000016/state.json")).unwrap()).unwrap();
    let names = meta["params"].as_array().unwrap();
    let steps = meta["param_steps"].as_array().expect("per-weight steps");
    for (n, st) in names.iter().zip(steps) {
        let n = n.as_str().unwrap();
        let layer: usize = n.split('.').nth(1).unwrap().parse().unwrap();
        let block = if n.contains(".jet.") { "jetblock" } else { "gated-deltanet" };
        let want = types.iter().filter(|t| t[layer] == block).count() as u64;
        assert_eq!(st.as_u64(), Some(want), "{n}: updated on the steps its layer was {block}");
    }

    // A mixed subnet: layer 0 Gated DeltaNet, layer 1 SWA.
    let layout = dir.0.join("mixed.json");
    std::fs::write(&layout, r#"{"layer_types": ["gated-deltanet", "swa"], "window": 4}"#).unwrap();
    let mixed = dir.0.join("mixed.onnx");
    let o = jetc(&["convert", m, "-o", mixed.to_str().unwrap(), "--layout", layout.to_str().unwrap(), "--format", "onnx", "--supernet", path.to_str().unwrap()]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let plain = dir.0.join("plain.onnx");
    assert!(jetc(&["convert", m, "-o", plain.to_str().unwrap(), "--layout", layout.to_str().unwrap(), "--format", "onnx"]).status.success());
    assert!(std::fs::read(&mixed).unwrap() != std::fs::read(&plain).unwrap(), "the subnet kept its initial weights");
    onnxruntime_agrees(&dir.0, &mixed);

    let x = dir.0.join("x");
    let x = x.to_str().unwrap();
    fails(&jetc(&["distill", m, "-o", x, "--data", d, "--supernet", "attn,swa,jetblock"]), &["--window"]);
    fails(&jetc(&["distill", m, "-o", x, "--data", d, "--supernet", "attn,swa"]), &["no linear block"]);
    fails(&jetc(&["distill", m, "-o", x, "--data", d, "--supernet", "attn,jetblock", "--phase", "path"]), &["--sample"]);
    fails(&jetc(&["distill", m, "-o", x, "--data", d, "--supernet", "swa,jetblock", "--window", "4", "--phase", "path", "--sample", "budget:1"]), &["attn"]);
}

/// Stage 2 with the optional terms: KL plus the data's cross-entropy, the attention trained
/// too. The loss is the sum of its terms, the data term falls, and the attention weights the
/// run trained are the ones its model carries.
#[test]
fn kd_with_data_cross_entropy_and_trained_attention() {
    let dir = tmp("kdce");
    let (model, data) = setup(&dir.0);
    let (m, d) = (model.to_str().unwrap(), data.to_str().unwrap());
    let run = dir.0.join("run");
    let s = summary(&jetc(&[
        "distill", m, "-o", run.to_str().unwrap(), "--data", d, "--full-attn", "0", "--seq-len", "16", "--batch", "2", "--steps", "30",
        "--lr", "1e-2", "--phase", "kd", "--ce", "0.5", "--train-attn", "--json", "--format", "onnx", "--token-cache", "none",
    ]));
    assert_eq!((s["ce"].as_f64(), s["train_attn"].as_bool()), (Some(0.5), Some(true)));
    let lines = metric_lines(&run);
    for l in &lines {
        let (loss, ce, data_ce) = (l["loss"].as_f64().unwrap(), l["cross_entropy"].as_f64().unwrap(), l["data_ce"].as_f64().unwrap());
        assert!((loss - (ce + 0.5 * data_ce)).abs() < 1e-4 * loss.abs().max(1.0), "step {}: loss {loss} != KL term {ce} + 0.5 x data {data_ce}", l["step"]);
    }
    let first: f64 = lines[..3].iter().map(|l| l["data_ce"].as_f64().unwrap()).sum();
    let last: f64 = lines[lines.len() - 3..].iter().map(|l| l["data_ce"].as_f64().unwrap()).sum();
    assert!(last < first, "data cross-entropy {first} -> {last} (sums of 3 steps)");
    let meta: serde_json::Value = serde_json::from_slice(&std::fs::read(run.join("checkpoints/step-00000030/state.json")).unwrap()).unwrap();
    let attn: Vec<&str> = meta["params"].as_array().unwrap().iter().filter_map(|n| n.as_str()).filter(|n| !n.starts_with("layers.")).collect();
    assert!(attn.len() >= 4, "layer 0's attention projections train: {attn:?}");
    // No per-weight step counts: every weight, the attention's too, was updated every step.
    assert!(meta["param_steps"].is_null(), "{}", meta["param_steps"]);
    // The written model is not the plain conversion with the trained blocks alone: its
    // attention changed too, and it runs in onnxruntime.
    let onnx = run.join("model/model.onnx");
    let blocks_only = dir.0.join("blocks.onnx");
    let o = jetc(&["convert", m, "-o", blocks_only.to_str().unwrap(), "--full-attn", "0", "--format", "onnx", "--supernet", run.to_str().unwrap()]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert!(std::fs::read(&onnx).unwrap() == std::fs::read(&blocks_only).unwrap(), "convert --supernet binds the trained attention as the run did");
    let plain = dir.0.join("plain.onnx");
    assert!(jetc(&["convert", m, "-o", plain.to_str().unwrap(), "--full-attn", "0", "--format", "onnx"]).status.success());
    assert!(std::fs::read(&onnx).unwrap() != std::fs::read(&plain).unwrap());
    onnxruntime_agrees(&dir.0, &onnx);
    fails(&jetc(&["distill", m, "-o", dir.0.join("x").to_str().unwrap(), "--data", d, "--ce", "1"]), &["--phase path"]);
}

/// A real `jetc distill` killed with SIGKILL mid-run and resumed ends with the same weights
/// and Adam moments, bit for bit, and the same loss sequence, as an uninterrupted run.
#[test]
fn resume_after_sigkill_is_bit_exact() {
    resume_bit_exact("resume", 300, 50, &[]);
}

/// The same for the path phase with sampled layouts (the layouts replay from the seed, and
/// the per-weight step counts come back from the checkpoint).
#[test]
fn path_phase_resume_after_sigkill_is_bit_exact() {
    resume_bit_exact("resume-path", 60, 10, &["--phase", "path", "--sample", "uniform", "--kl", "0.5"]);
}

fn resume_bit_exact(tag: &str, total: u64, every: u64, extra: &[&str]) {
    let dir = tmp(tag);
    let (model, data) = setup(&dir.0);
    let (m, d) = (model.to_str().unwrap(), data.to_str().unwrap());
    let (steps, every_s) = (total.to_string(), every.to_string());
    let run_args = |out: &Path| -> Vec<String> {
        ["distill", m, "-o", out.to_str().unwrap(), "--data", d, "--full-attn", "0", "--seq-len", "32", "--batch", "4", "--steps", &steps, "--checkpoint-every", &every_s, "--lr", "5e-3", "--token-cache", "none"]
            .iter()
            .chain(extra)
            .map(|s| s.to_string())
            .collect()
    };
    let a = dir.0.join("a");
    let o = jetc(&run_args(&a).iter().map(String::as_str).collect::<Vec<_>>());
    assert!(o.status.success(), "uninterrupted run failed:\n{}", String::from_utf8_lossy(&o.stderr));

    let b = dir.0.join("b");
    let mut child = Command::new(env!("CARGO_BIN_EXE_jetc")).args(run_args(&b)).stderr(std::process::Stdio::null()).spawn().expect("start jetc");
    let marker = b.join(format!("checkpoints/step-{every:08}/state.json"));
    let started = std::time::Instant::now();
    while !marker.exists() {
        assert!(started.elapsed().as_secs() < 120, "no checkpoint after 120 s");
        if let Some(status) = child.try_wait().expect("wait") {
            panic!("the run ended ({status}) before it could be killed");
        }
        std::thread::sleep(std::time::Duration::from_millis(2));
    }
    child.kill().expect("SIGKILL");
    let status = child.wait().expect("wait");
    assert!(!status.success(), "the run was killed, not finished");
    // Without --resume the directory is refused; with it the run continues.
    fails(&jetc(&run_args(&b).iter().map(String::as_str).collect::<Vec<_>>()), &["already holds files"]);
    let mut args = run_args(&b);
    args.push("--resume".into());
    let o = jetc(&args.iter().map(String::as_str).collect::<Vec<_>>());
    assert!(o.status.success(), "resume failed:\n{}", String::from_utf8_lossy(&o.stderr));
    assert!(String::from_utf8_lossy(&o.stderr).contains("resuming at step"), "{}", String::from_utf8_lossy(&o.stderr));
    assert!(checkpoint_bytes(&a, total) == checkpoint_bytes(&b, total), "weights and moments differ after resume");
    assert_eq!(losses(&a), losses(&b), "loss sequences differ");
    // A resume with other settings is refused.
    let mut other = run_args(&b);
    let lr = other.iter().position(|s| s == "--lr").unwrap() + 1;
    other[lr] = "1e-3".into();
    other.push("--resume".into());
    fails(&jetc(&other.iter().map(String::as_str).collect::<Vec<_>>()), &["another model, layout, data or settings"]);
    // A truncated newest checkpoint is reported and the older one used.
    let newest = b.join(format!("checkpoints/step-{total:08}/state.safetensors"));
    let bytes = std::fs::read(&newest).unwrap();
    std::fs::write(&newest, &bytes[..bytes.len() / 3]).unwrap();
    let o = jetc(&args.iter().map(String::as_str).collect::<Vec<_>>());
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(o.status.success() && err.contains("truncated or corrupted") && err.contains(&format!("resuming at step {}", total - every)), "{err}");
}

/// A window longer than the model's context (GGUF `context_length`) is refused before any
/// data is read. Needs SmolLM2's GGUF (JETC_SMOLLM2_GGUF, which scripts/test.sh sets).
#[test]
fn seq_len_longer_than_the_context_is_refused() {
    let Some(gguf) = std::env::var_os("JETC_SMOLLM2_GGUF") else {
        assert!(std::env::var_os("CI").is_none(), "CI: JETC_SMOLLM2_GGUF is not set");
        eprintln!("skipping: JETC_SMOLLM2_GGUF not set");
        return;
    };
    let dir = tmp("ctx");
    let out = dir.0.join("out");
    let o = jetc(&["distill", gguf.to_str().unwrap(), "-o", out.to_str().unwrap(), "--data", "/nonexistent", "--full-attn", "3,12,20", "--seq-len", "100000"]);
    fails(&o, &["--seq-len 100000", "context of 8192 tokens"]);
    assert!(!out.exists());
    // A tokenizer that is not the model's: ids past its vocabulary are named.
    let (model, data) = setup(&dir.0);
    let o = jetc(&["distill", model.to_str().unwrap(), "-o", out.to_str().unwrap(), "--data", data.to_str().unwrap(), "--full-attn", "0", "--tokenizer", gguf.to_str().unwrap()]);
    let _ = data;
    fails(&o, &["vocabulary has 128 tokens", "--tokenizer"]);
    assert!(!out.exists());
}

/// `--eval-data`: the held-out NLL is measured on windows of another file, the same windows
/// `jetc eval --task lm` scores (teacher and distilled model alike); an empty file is refused.
#[test]
fn eval_data_measures_the_heldout_nll_on_another_file() {
    let dir = tmp("eval-data");
    let (model, data) = setup(&dir.0);
    let other = dir.0.join("other.txt");
    std::fs::write(&other, word_text(400, 777)).expect("write eval text");
    let (m, d, e) = (model.to_str().unwrap(), data.to_str().unwrap(), other.to_str().unwrap());
    let nll = |args: &[&str], file: &str| -> f64 {
        let o = jetc(&[&["eval"], args, &["--task", "lm", "--data", file, "--seq-len", "16", "--limit", "3", "--json"]].concat());
        assert!(o.status.success(), "eval: {}", String::from_utf8_lossy(&o.stderr));
        let v: serde_json::Value = serde_json::from_slice(&o.stdout).expect("eval --json");
        v["tasks"][0]["metrics"]["nll"]["value"].as_f64().unwrap_or_else(|| panic!("no lm nll in {v}"))
    };
    let run = dir.0.join("run");
    let args = |out: &Path, extra: &[&str]| -> Vec<String> {
        let mut v: Vec<String> = [
            "distill", m, "-o", out.to_str().unwrap(), "--data", d, "--full-attn", "0", "--seq-len", "16", "--batch", "2", "--steps", "6",
            "--lr", "1e-2", "--format", "onnx", "--json", "--token-cache", "none",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        v.extend(extra.iter().map(|s| s.to_string()));
        v
    };
    let a = args(&run, &["--eval-data", e, "--eval-windows", "3"]);
    let s = summary(&jetc(&a.iter().map(String::as_str).collect::<Vec<_>>()));
    assert_eq!(s["eval"]["windows"], 3);
    let teacher = s["teacher_heldout_nll"].as_f64().expect("teacher NLL");
    let want = nll(&[m], e);
    assert!((teacher - want).abs() < 1e-4 * want, "teacher on --eval-data {teacher} vs jetc eval {want}");
    let after = s["heldout_nll_after"].as_f64().expect("NLL after");
    let distilled = nll(&[run.join("model/model.onnx").to_str().unwrap()], e);
    assert!((after - distilled).abs() < 1e-4 * distilled, "held-out NLL after {after} vs jetc eval of the model {distilled}");
    // Without it, the training data's own held-out windows: another figure.
    let own = dir.0.join("own");
    let b = args(&own, &[]);
    let s2 = summary(&jetc(&b.iter().map(String::as_str).collect::<Vec<_>>()));
    assert!((s2["teacher_heldout_nll"].as_f64().unwrap() - teacher).abs() > 1e-3, "--eval-data was not used");
    let empty = dir.0.join("empty.txt");
    std::fs::write(&empty, "").unwrap();
    let bad = dir.0.join("bad");
    let c = args(&bad, &["--eval-data", empty.to_str().unwrap()]);
    fails(&jetc(&c.iter().map(String::as_str).collect::<Vec<_>>()), &["--eval-data"]);
    assert!(!bad.exists(), "a refused run wrote its output directory");
}
