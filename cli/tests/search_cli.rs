//! `jetc search heatmap` and `jetc search placement` as a user runs them on a supernet
//! distilled from a fixture decoder: every heat-map cell equals what `jetc eval` scores on
//! the subnet that `jetc convert --supernet` writes (an independent path: ONNX export, then
//! import); a stopped map resumes; the placement search picks the best-scoring placement,
//! reuses a heat map's cells, and writes a layout `jetc convert` reads; block selection
//! distills each candidate the same way and scores what distill itself wrote; the
//! hardware-aware search compares shapes at equal recurrent state; bad input (an
//! unknown task, a layer the model lacks, a budget over the layer count, a supernet of
//! another model, a non-empty output) is refused with nothing written.
use std::path::{Path, PathBuf};

mod common;
use common::{fails, jetc, repo, stdout, word_text, word_tokenizer, Tmp};

fn tmp(tag: &str) -> Tmp {
    common::tmp("search-cli", tag)
}

/// The 2-layer llama fixture (vocab 128), a word tokenizer, a text, and a supernet (attn +
/// jetblock on both layers) trained by the local then the path phase.
fn setup(dir: &Path) -> (PathBuf, PathBuf, PathBuf) {
    let model = dir.join("model.onnx");
    std::fs::copy(
        repo().join("tests/fixtures/llama-dynamo-opset20-eager-nokv/model.onnx"),
        &model,
    )
    .expect("copy fixture");
    word_tokenizer(dir, 128, Some(2), serde_json::json!({"eos_token": "w2"}));
    let data = dir.join("data.txt");
    std::fs::write(&data, word_text(1200, 4242)).expect("write data");
    let (m, d) = (model.to_str().unwrap(), data.to_str().unwrap());
    let local = dir.join("local");
    let common = [
        "--data",
        d,
        "--seq-len",
        "16",
        "--batch",
        "2",
        "--json",
        "--format",
        "onnx",
        "--token-cache",
        "none",
        "--supernet",
        "attn,jetblock",
    ];
    let o = jetc(
        &[
            &[
                "distill",
                m,
                "-o",
                local.to_str().unwrap(),
                "--steps",
                "10",
                "--lr",
                "1e-2",
            ][..],
            &common[..],
        ]
        .concat(),
    );
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let run = dir.join("supernet");
    let o = jetc(
        &[
            &[
                "distill",
                m,
                "-o",
                run.to_str().unwrap(),
                "--steps",
                "8",
                "--phase",
                "path",
                "--sample",
                "budget:1",
                "--init-from",
                local.to_str().unwrap(),
            ][..],
            &common[..],
        ]
        .concat(),
    );
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    (model, data, run)
}

fn json_of(out: &std::process::Output) -> serde_json::Value {
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_str(&stdout(out)).expect("--json prints JSON")
}

#[test]
fn heatmap_cells_equal_eval_of_the_converted_subnets_and_resume() {
    let dir = tmp("map");
    let (model, data, run) = setup(&dir.0);
    let (m, d, r) = (
        model.to_str().unwrap(),
        data.to_str().unwrap(),
        run.to_str().unwrap(),
    );
    let out = dir.0.join("map");
    let args = |o: &Path| -> Vec<String> {
        [
            "search",
            "heatmap",
            r,
            "-o",
            o.to_str().unwrap(),
            "--task",
            "lm,passkey",
            "--data",
            d,
            "--seq-len",
            "16",
            "--limit",
            "3",
            "--filler-tokens",
            "20",
            "--json",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect()
    };
    let argv = args(&out);
    let j = json_of(&jetc(&argv.iter().map(String::as_str).collect::<Vec<_>>()));
    assert_eq!(j["layers"], serde_json::json!([0, 1]));
    let rows = j["rows"].as_array().unwrap();
    let names: Vec<String> = rows
        .iter()
        .map(|r| {
            format!(
                "{} {}",
                r["task"].as_str().unwrap(),
                r["metric"].as_str().unwrap()
            )
        })
        .collect();
    assert_eq!(names, ["lm nll", "passkey acc", "passkey answer_loss"]);
    for f in [
        "heatmap.json",
        "heatmap.png",
        "heatmap.svg",
        "cells.jsonl",
        "params.json",
    ] {
        assert!(out.join(f).is_file(), "{f} not written");
    }
    // Each cell against the written subnet, scored by plain `jetc eval`; the all-linear one too.
    for (layer, value) in [
        (Some(0usize), &rows[0]["values"][0]),
        (Some(1), &rows[0]["values"][1]),
        (None, &rows[0]["all_linear"]),
    ] {
        let onnx = dir.0.join(format!("sub-{layer:?}.onnx"));
        let mut conv = vec![
            "convert",
            m,
            "-o",
            onnx.to_str().unwrap(),
            "--format",
            "onnx",
            "--supernet",
            r,
        ];
        let l = layer.map(|l| l.to_string());
        if let Some(l) = &l {
            conv.extend(["--full-attn", l.as_str()]);
        }
        let o = jetc(&conv);
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        let e = json_of(&jetc(&[
            "eval",
            onnx.to_str().unwrap(),
            "--task",
            "lm",
            "--data",
            d,
            "--seq-len",
            "16",
            "--limit",
            "3",
            "--tokenizer",
            dir.0.join("tokenizer.json").to_str().unwrap(),
            "--json",
        ]));
        let want = e["tasks"][0]["metrics"]["nll"]["value"].as_f64().unwrap();
        let got = value.as_f64().unwrap();
        assert!(
            (got - want).abs() < 1e-4 * want,
            "layer {layer:?}: heat map {got}, eval of the converted subnet {want}"
        );
    }
    // The two layers' subnets differ (the map is not one number repeated).
    assert_ne!(rows[0]["values"][0], rows[0]["values"][1]);

    // Stopped after the first two cells: --resume scores only the last and gives the same map.
    let cells = std::fs::read_to_string(out.join("cells.jsonl")).unwrap();
    let resumed = dir.0.join("resumed");
    std::fs::create_dir_all(&resumed).unwrap();
    std::fs::copy(out.join("params.json"), resumed.join("params.json")).unwrap();
    std::fs::write(
        resumed.join("cells.jsonl"),
        cells.lines().take(2).collect::<Vec<_>>().join("\n") + "\n",
    )
    .unwrap();
    let mut argv = args(&resumed);
    argv.push("--resume".into());
    let j2 = json_of(&jetc(&argv.iter().map(String::as_str).collect::<Vec<_>>()));
    assert_eq!(j2["rows"], j["rows"], "resumed map");
    assert_eq!(
        std::fs::read_to_string(resumed.join("cells.jsonl"))
            .unwrap()
            .lines()
            .count(),
        3
    );
    // Other settings are refused on --resume.
    let mut other = args(&resumed);
    other[8] = "lm".into();
    other.push("--resume".into());
    fails(
        &jetc(&other.iter().map(String::as_str).collect::<Vec<_>>()),
        &["--resume", "other settings"],
    );
    // A non-empty output without --resume is refused.
    fails(
        &jetc(
            &argv[..argv.len() - 1]
                .iter()
                .map(String::as_str)
                .collect::<Vec<_>>(),
        ),
        &["not empty"],
    );
}

#[test]
fn bad_input_is_refused_and_nothing_written() {
    let dir = tmp("bad");
    let (_, data, run) = setup(&dir.0);
    let (d, r) = (data.to_str().unwrap(), run.to_str().unwrap());
    let out = dir.0.join("out");
    let o = out.to_str().unwrap();
    fails(
        &jetc(&["search", "heatmap", r, "-o", o, "--task", "mmlu-pro-max"]),
        &["unknown task `mmlu-pro-max`"],
    );
    fails(
        &jetc(&[
            "search", "heatmap", r, "-o", o, "--task", "lm", "--data", d, "--layers", "0,7",
        ]),
        &["layer 7", "2 layers"],
    );
    fails(
        &jetc(&[
            "search",
            "heatmap",
            dir.0.to_str().unwrap(),
            "-o",
            o,
            "--task",
            "lm",
            "--data",
            d,
        ]),
        &["no checkpoint"],
    );
    fails(
        &jetc(&[
            "search",
            "heatmap",
            r,
            "-o",
            o,
            "--task",
            "lm",
            "--data",
            d,
            "--block",
            "gated-deltanet",
        ]),
        &["candidates are attn,jetblock"],
    );
    // A supernet of another model: the qwen2 fixture (other shapes).
    let qwen = dir.0.join("qwen.onnx");
    std::fs::copy(
        repo().join("tests/fixtures/qwen2-dynamo-opset20-eager-nokv/model.onnx"),
        &qwen,
    )
    .unwrap();
    fails(
        &jetc(&[
            "search",
            "heatmap",
            r,
            "--model",
            qwen.to_str().unwrap(),
            "-o",
            o,
            "--task",
            "lm",
            "--data",
            d,
            "--tokenizer",
            dir.0.join("tokenizer.json").to_str().unwrap(),
        ]),
        &["distilled from another model", "qwen.onnx", "model.onnx"],
    );
    assert!(!out.exists(), "nothing is written on bad input");
}

#[test]
fn placement_picks_the_best_subnet_reuses_a_heatmap_and_writes_a_layout() {
    let dir = tmp("placement");
    let (model, data, run) = setup(&dir.0);
    let (m, d, r) = (
        model.to_str().unwrap(),
        data.to_str().unwrap(),
        run.to_str().unwrap(),
    );
    let tasks = [
        "--task",
        "lm",
        "--data",
        d,
        "--seq-len",
        "16",
        "--limit",
        "3",
        "--json",
    ];
    let map = dir.0.join("map");
    let h = json_of(&jetc(
        &[
            &["search", "heatmap", r, "-o", map.to_str().unwrap()][..],
            &tasks[..],
        ]
        .concat(),
    ));
    let nll: Vec<f64> = h["rows"][0]["values"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_f64().unwrap())
        .collect();
    let best_layer = if nll[0] <= nll[1] { 0 } else { 1 };

    let out = dir.0.join("place");
    let p = json_of(&jetc(
        &[
            &[
                "search",
                "placement",
                r,
                "-o",
                out.to_str().unwrap(),
                "--budget",
                "1",
                "--heatmap",
                map.to_str().unwrap(),
            ][..],
            &tasks[..],
        ]
        .concat(),
    ));
    assert_eq!(p["method"], "exhaustive");
    assert_eq!(
        p["best"]["full_attn"],
        serde_json::json!([best_layer]),
        "the lower-NLL layer: {nll:?}"
    );
    assert!(
        (p["best"]["objective"].as_f64().unwrap() + nll[best_layer]).abs() < 1e-12,
        "objective = -NLL"
    );
    assert_eq!(
        p["uniform"]["full_attn"],
        serde_json::json!([1]),
        "uniform: the middle of the one span"
    );
    assert_eq!(
        p["subnets_new"], 0,
        "every one-layer subnet came from the heat map"
    );
    assert!((p["gap"].as_f64().unwrap() - (nll[1] - nll[best_layer])).abs() < 1e-12);
    // The gap's paired standard error, from the two subnets' per-window NLLs in the heat map.
    let cells = std::fs::read_to_string(map.join("cells.jsonl")).unwrap();
    let per_window = |layer: u64| -> Vec<f64> {
        let c = cells.lines().map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap()).find(|c| c["layer"] == layer).unwrap();
        c["scores"][0]["metrics"].as_array().unwrap().iter().find(|m| m["name"] == "nll").unwrap()["values"].as_array().unwrap().iter().map(|v| v.as_f64().unwrap()).collect()
    };
    let (a, u) = (per_window(best_layer as u64), per_window(1));
    assert_eq!(a.len(), 3, "one NLL per window");
    let d: Vec<f64> = a.iter().zip(&u).map(|(x, y)| y - x).collect();
    let mean_d = d.iter().sum::<f64>() / 3.0;
    let se = (d.iter().map(|x| (x - mean_d).powi(2)).sum::<f64>() / 2.0 / 3.0).sqrt();
    assert!((p["gap_stderr"].as_f64().unwrap() - se).abs() < 1e-12, "paired stderr {} vs {se}", p["gap_stderr"]);

    // The written layout is one `jetc convert --supernet` reads.
    let layout = out.join("layout.json");
    let onnx = dir.0.join("best.onnx");
    let o = jetc(&[
        "convert",
        m,
        "-o",
        onnx.to_str().unwrap(),
        "--format",
        "onnx",
        "--supernet",
        r,
        "--layout",
        layout.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));

    // Without the heat map, budget 2 of 2 layers scores the one placement (and the same uniform).
    let out2 = dir.0.join("place2");
    let p2 = json_of(&jetc(
        &[
            &[
                "search",
                "placement",
                r,
                "-o",
                out2.to_str().unwrap(),
                "--budget",
                "2",
            ][..],
            &tasks[..],
        ]
        .concat(),
    ));
    assert_eq!(p2["best"]["full_attn"], serde_json::json!([0, 1]));
    assert_eq!(p2["subnets_new"], 1);

    // Bad input: nothing written.
    let bad = dir.0.join("bad");
    let b = bad.to_str().unwrap();
    fails(
        &jetc(
            &[
                &["search", "placement", r, "-o", b, "--budget", "3"][..],
                &tasks[..],
            ]
            .concat(),
        ),
        &["--budget 3", "2 layers"],
    );
    fails(
        &jetc(
            &[
                &[
                    "search",
                    "placement",
                    r,
                    "-o",
                    b,
                    "--budget",
                    "1",
                    "--objective",
                    "passkey",
                ][..],
                &tasks[..],
            ]
            .concat(),
        ),
        &["--objective", "passkey", "not among"],
    );
    fails(
        &jetc(
            &[
                &[
                    "search",
                    "placement",
                    r,
                    "-o",
                    b,
                    "--budget",
                    "1",
                    "--objective",
                    "lm:nll=x",
                ][..],
                &tasks[..],
            ]
            .concat(),
        ),
        &["not a number"],
    );
    fails(
        &jetc(
            &[
                &[
                    "search",
                    "placement",
                    r,
                    "-o",
                    b,
                    "--budget",
                    "1",
                    "--heatmap",
                    out.to_str().unwrap(),
                ][..],
                &tasks[..],
            ]
            .concat(),
        ),
        &["--heatmap", "not a heat map"],
    );
    assert!(!bad.exists(), "nothing is written on bad input");
}

#[test]
fn block_selection_scores_each_candidate_as_its_own_distilled_model() {
    let dir = tmp("block");
    let model = dir.0.join("model.onnx");
    std::fs::copy(repo().join("tests/fixtures/llama-dynamo-opset20-eager-nokv/model.onnx"), &model).expect("copy fixture");
    word_tokenizer(&dir.0, 128, Some(2), serde_json::json!({"eos_token": "w2"}));
    let data = dir.0.join("data.txt");
    std::fs::write(&data, word_text(1200, 77)).unwrap();
    let (m, d) = (model.to_str().unwrap(), data.to_str().unwrap());
    let out = dir.0.join("sel");
    let argv = [
        "search", "block", m, "-o", out.to_str().unwrap(), "--full-attn", "0", "--candidates", "jetblock,gated-deltanet", "--train-data", d,
        "--steps", "4", "--train-seq-len", "16", "--batch", "2", "--lr", "1e-3", "--init", "attention", "--task", "lm", "--data", d, "--seq-len", "16",
        "--limit", "3", "--json",
    ];
    let j = json_of(&jetc(&argv));
    let cands = j["candidates"].as_array().unwrap();
    assert_eq!(cands.iter().map(|c| c["block"].as_str().unwrap()).collect::<Vec<_>>(), ["jetblock", "gated-deltanet"]);
    for c in cands {
        let b = c["block"].as_str().unwrap();
        assert_eq!(c["tokens"], 4 * 2 * 16, "{b}: equal tokens");
        assert!(c["tokens_per_s"].as_f64().unwrap() > 0.0 && c["block_params"].as_u64().unwrap() > 0);
        // The score is that of the model distill wrote for this candidate.
        let written = out.join(b).join("model/model.onnx");
        let e = json_of(&jetc(&["eval", written.to_str().unwrap(), "--task", "lm", "--data", d, "--seq-len", "16", "--limit", "3", "--json"]));
        let (got, want) = (c["scores"][0]["metrics"][0]["value"].as_f64().unwrap(), e["tasks"][0]["metrics"]["nll"]["value"].as_f64().unwrap());
        assert_eq!(c["scores"][0]["metrics"][0]["name"], "nll");
        assert!((got - want).abs() < 1e-4 * want, "{b}: block search {got}, eval of its distilled model {want}");
    }
    assert_ne!(cands[0]["block_params"], cands[1]["block_params"]);
    for f in ["block.json", "block.png", "block.svg", "params.json"] {
        assert!(out.join(f).is_file(), "{f}");
    }
    // Run again: the candidates are done, nothing is retrained, the table is the same.
    let t0 = std::fs::metadata(out.join("jetblock/distill.json")).unwrap().modified().unwrap();
    let j2 = json_of(&jetc(&argv));
    assert_eq!(j2["candidates"], j["candidates"]);
    assert_eq!(std::fs::metadata(out.join("jetblock/distill.json")).unwrap().modified().unwrap(), t0);

    let bad = dir.0.join("bad");
    let b = bad.to_str().unwrap();
    let base = ["search", "block", m, "-o", b, "--full-attn", "0", "--train-data", d, "--steps", "2", "--task", "lm", "--data", d];
    fails(&jetc(&[&base[..], &["--candidates", "jetblock"]].concat()), &["at least two"]);
    fails(&jetc(&[&base[..], &["--candidates", "jetblock,transformer-xl"]].concat()), &["transformer-xl"]);
    fails(&jetc(&["search", "block", m, "-o", b, "--full-attn", "5", "--train-data", d, "--candidates", "jetblock,gla", "--task", "lm", "--data", d]), &["layer 5", "2 layers"]);
    assert!(!bad.exists(), "nothing is written on bad input");
}

#[test]
fn hw_search_compares_shapes_at_equal_state() {
    let dir = tmp("hw");
    let model = dir.0.join("model.onnx");
    std::fs::copy(repo().join("tests/fixtures/llama-dynamo-opset20-eager-nokv/model.onnx"), &model).expect("copy fixture");
    word_tokenizer(&dir.0, 128, Some(2), serde_json::json!({"eos_token": "w2"}));
    let data = dir.0.join("data.txt");
    std::fs::write(&data, word_text(1200, 91)).unwrap();
    let (m, d) = (model.to_str().unwrap(), data.to_str().unwrap());
    let out = dir.0.join("hw");
    // The fixture: 4 heads of 16, so the default JetBlock is 4 x 12 x 32 = 1536 per layer.
    let j = json_of(&jetc(&[
        "search", "hw", m, "-o", out.to_str().unwrap(), "--full-attn", "0", "--points", "4:12:32,2:24:32,3:16:32", "--train-data", d, "--steps", "3",
        "--train-seq-len", "16", "--lr", "1e-3", "--init", "attention", "--task", "lm", "--data", d, "--seq-len", "16", "--limit", "3",
        "--decode-context", "8", "--decode-tokens", "4", "--json",
    ]));
    let pts = j["points"].as_array().unwrap();
    assert_eq!(pts.len(), 3);
    let state: Vec<u64> = pts.iter().map(|p| p["state_per_layer"].as_u64().unwrap()).collect();
    assert_eq!(state, [1536, 1536, 1536]);
    for p in pts {
        assert!(p["decode_tokens_per_s"].as_f64().unwrap() > 0.0);
        // Each point trained its own shape: the run records it.
        let run = out.join(format!("h{}-dk{}-dv{}", p["heads"], p["dk"], p["dv"]));
        let rec: serde_json::Value = serde_json::from_slice(&std::fs::read(run.join("distill.json")).unwrap()).unwrap();
        assert_eq!((&rec["mixer"]["heads"], &rec["mixer"]["dk"], &rec["mixer"]["dv"]), (&p["heads"], &p["dk"], &p["dv"]));
        assert_eq!(p["train_tokens"], 3 * 2 * 16);
    }
    let params: Vec<u64> = pts.iter().map(|p| p["params"].as_u64().unwrap()).collect();
    assert!(params[0] != params[1], "shapes differ in parameters: {params:?}");
    assert!(pts.iter().any(|p| p["pareto"] == true));
    let pick = j["pick"].as_str().unwrap();
    let best = pts.iter().map(|p| p["objective"].as_f64().unwrap()).fold(f64::NEG_INFINITY, f64::max);
    let picked = pts.iter().find(|p| format!("{}:{}:{}", p["heads"], p["dk"], p["dv"]) == pick).unwrap();
    assert_eq!(picked["objective"].as_f64().unwrap(), best);
    let layout: serde_json::Value = serde_json::from_slice(&std::fs::read(out.join("layout.json")).unwrap()).unwrap();
    assert_eq!(format!("{}:{}:{}", layout["heads"], layout["dk"], layout["dv"]), pick);
    for f in ["hw.json", "hw.png", "hw.svg"] {
        assert!(out.join(f).is_file(), "{f}");
    }
    // A point of another state is refused before anything is written.
    let bad = dir.0.join("bad");
    fails(
        &jetc(&["search", "hw", m, "-o", bad.to_str().unwrap(), "--full-attn", "0", "--points", "4:16:32", "--train-data", d, "--steps", "2", "--task", "lm", "--data", d]),
        &["4:16:32", "2048", "1536", "equal cache"],
    );
    assert!(!bad.exists());
}

/// `--swa 1`: after the full-attention layer, the SWA layer is placed among the layers left
/// (here the one other layer), and its score equals `jetc eval` of that subnet; a supernet
/// without an swa path, or more layers than the model has, is refused.
#[test]
fn placement_places_swa_layers_beside_full_attention() {
    let dir = tmp("swa");
    let (model, data, plain) = setup(&dir.0);
    let (m, d) = (model.to_str().unwrap(), data.to_str().unwrap());
    let run = dir.0.join("swa-supernet");
    let r = run.to_str().unwrap();
    let o = jetc(&[
        "distill", m, "-o", r, "--steps", "6", "--lr", "1e-2", "--data", d, "--seq-len", "16", "--batch", "2", "--json", "--format", "onnx",
        "--token-cache", "none", "--supernet", "attn,swa,jetblock", "--window", "4",
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let tasks = ["--task", "lm", "--data", d, "--seq-len", "16", "--limit", "3", "--json"];
    let out = dir.0.join("place");
    let p = json_of(&jetc(&[&["search", "placement", r, "-o", out.to_str().unwrap(), "--budget", "1", "--swa", "1"][..], &tasks[..]].concat()));
    let full = p["best"]["full_attn"][0].as_u64().unwrap();
    let other = 1 - full;
    let swa = &p["swa"];
    assert_eq!(swa["window"], 4, "the supernet's window");
    assert_eq!(swa["best"]["full_attn"], serde_json::json!([other]), "the one layer left");
    assert_eq!(swa["uniform"]["full_attn"], serde_json::json!([other]));
    let layout: serde_json::Value = serde_json::from_slice(&std::fs::read(out.join("layout.json")).unwrap()).unwrap();
    assert_eq!((layout["full_attn"].clone(), layout["swa"].clone(), layout["window"].clone()), (serde_json::json!([full]), serde_json::json!([other]), serde_json::json!(4)));
    // The SWA subnet's score is what `jetc eval` gives the same layout of the supernet.
    let (fa, sw) = (full.to_string(), other.to_string());
    let e = json_of(&jetc(&[&["eval", m, "--supernet", r, "--full-attn", &fa, "--swa", &sw, "--window", "4"][..], &tasks[..]].concat()));
    let nll = e["tasks"][0]["metrics"]["nll"]["value"].as_f64().unwrap();
    assert!((swa["best"]["objective"].as_f64().unwrap() + nll).abs() < 1e-9, "swa objective {} vs eval NLL {nll}", swa["best"]["objective"]);
    // An SWA window differs from full attention at 16 tokens: the score moved.
    assert_ne!(swa["best"]["objective"], p["best"]["objective"]);

    let bad = dir.0.join("bad");
    let b = bad.to_str().unwrap();
    fails(&jetc(&[&["search", "placement", plain.to_str().unwrap(), "-o", b, "--budget", "1", "--swa", "1"][..], &tasks[..]].concat()), &["without an swa path", "attn,swa,"]);
    fails(&jetc(&[&["search", "placement", r, "-o", b, "--budget", "2", "--swa", "1"][..], &tasks[..]].concat()), &["--swa 1", "2 layers"]);
    assert!(!bad.exists());
}

/// The hidden cache at layer boundaries: on the KV-cache fixture (whose subnets run with
/// caches), a heat map over lm, passkey, a multiple-choice and a generative task gives the
/// same cells with the cache as without it, and the layer-1 subnet starts from the
/// all-linear subnet's hidden states (hits, layers skipped).
#[test]
fn hidden_cache_at_layer_boundaries_changes_no_score() {
    let dir = tmp("hidden");
    let model = dir.0.join("model.onnx");
    for f in ["model.onnx", "model.onnx.data"] {
        std::fs::copy(repo().join("tests/fixtures/llama-dynamo-opset20-sdpa-kv").join(f), dir.0.join(f)).expect("copy kv fixture");
    }
    word_tokenizer(&dir.0, 128, Some(2), serde_json::json!({"eos_token": "w2"}));
    let data = dir.0.join("data.txt");
    std::fs::write(&data, word_text(1200, 77)).unwrap();
    let (m, d) = (model.to_str().unwrap(), data.to_str().unwrap());
    let run = dir.0.join("supernet");
    let o = jetc(&[
        "distill", m, "-o", run.to_str().unwrap(), "--steps", "6", "--lr", "1e-2", "--data", d, "--seq-len", "16", "--batch", "2", "--json",
        "--format", "onnx", "--token-cache", "none", "--supernet", "attn,jetblock",
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    // A multiple-choice file (shared contexts: snapshot and restore) and a generative one.
    let mut lines = Vec::new();
    for q in 0..3usize {
        let ctx = format!("w{} w{} w{}", 30 + q, 40 + q, 50 + q);
        for c in 0..3usize {
            lines.push(serde_json::json!({"doc_id": q, "idx": c, "label": q % 3, "doc": {}, "request": {"context": ctx, "continuation": format!(" w{} w{}", 60 + c, 70 + q)}}).to_string());
        }
    }
    std::fs::write(dir.0.join("arc-e.jsonl"), lines.join("\n")).unwrap();
    let gen_lines: Vec<String> = (0..2)
        .map(|k| serde_json::json!({"doc_id": k, "context": format!("w{} w{} w{}", 80 + k, 90 + k, 100 + k), "answers": ["w33"], "gold": " w33 w34", "stop": ["\n\n"], "max_tokens": 3}).to_string())
        .collect();
    std::fs::write(dir.0.join("squad.jsonl"), gen_lines.join("\n")).unwrap();
    let map = |out: &Path, mb: &str| {
        json_of(&jetc(&[
            "search", "heatmap", run.to_str().unwrap(), "-o", out.to_str().unwrap(), "--task", "lm,passkey,arc-e,squad", "--data", d, "--seq-len", "16",
            "--limit", "3", "--filler-tokens", "30", "--task-dir", dir.0.to_str().unwrap(), "--hidden-cache-mb", mb, "--json",
        ]))
    };
    let cached = map(&dir.0.join("cached"), "64");
    let plain = map(&dir.0.join("plain"), "0");
    let cells = |o: &Path| -> Vec<serde_json::Value> {
        std::fs::read_to_string(o.join("cells.jsonl")).unwrap().lines().map(|l| {
            let mut v: serde_json::Value = serde_json::from_str(l).unwrap();
            v.as_object_mut().unwrap().remove("seconds");
            v
        }).collect()
    };
    let (a, b) = (cells(&dir.0.join("cached")), cells(&dir.0.join("plain")));
    assert_eq!(a.len(), 3);
    for (x, y) in a.iter().zip(&b) {
        for (sx, sy) in x["scores"].as_array().unwrap().iter().zip(y["scores"].as_array().unwrap()) {
            for (mx, my) in sx["metrics"].as_array().unwrap().iter().zip(sy["metrics"].as_array().unwrap()) {
                let (vx, vy) = (mx["value"].as_f64().unwrap(), my["value"].as_f64().unwrap());
                assert!((vx - vy).abs() <= 1e-5 * vy.abs().max(1.0), "layer {}: {} {}: cached {vx}, uncached {vy}", x["layer"], sx["task"], mx["name"]);
            }
        }
    }
    let h = &cached["hidden_cache"];
    // Layer 1's subnet reads boundary 1 on every teacher-forced call: 3 lm windows, 3
    // passkey prompts, 3 contexts + 9 continuations; the generative task runs uncached.
    assert_eq!(h["hits"], 18, "{h}");
    assert_eq!(h["layer_tokens_skipped"], h["hit_tokens"], "one layer skipped per token: {h}");
    assert!(h["layer_tokens_skipped"].as_u64().unwrap() > 0 && h["share_skipped"].as_f64().unwrap() > 0.0, "{h}");
    assert!(plain["hidden_cache"].is_null());
}
