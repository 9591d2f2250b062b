//! `jetc postnas` end to end on a fixture decoder, as CI runs it (seconds): every stage
//! writes its output, the report names each stage's result, the exported model runs in
//! onnxruntime and agrees with jetc, and a second run keeps every stage (nothing redone).
mod common;
use common::{fails, jetc, onnxruntime_agrees, repo, stdout, word_text, word_tokenizer, Tmp};


#[test]
fn postnas_runs_every_stage_and_its_model_runs_in_onnxruntime() {
    let dir: Tmp = common::tmp("postnas-cli", "e2e");
    let model = dir.0.join("model.onnx");
    std::fs::copy(repo().join("tests/fixtures/llama-dynamo-opset20-eager-nokv/model.onnx"), &model).expect("copy fixture");
    word_tokenizer(&dir.0, 128, Some(2), serde_json::json!({"eos_token": "w2"}));
    let data = dir.0.join("data.txt");
    std::fs::write(&data, word_text(1500, 5)).unwrap();
    let (m, d) = (model.to_str().unwrap(), data.to_str().unwrap());
    let out = dir.0.join("pn");
    let argv = [
        "postnas", m, "-o", out.to_str().unwrap(), "--budget", "1", "--candidates", "jetblock,gated-deltanet", "--task", "lm", "--data", d,
        "--seq-len", "16", "--limit", "3", "--train-data", d, "--train-seq-len", "16", "--batch", "2", "--lr", "1e-3", "--local-lr", "1e-2",
        "--init", "attention", "--supernet-local-steps", "4", "--supernet-steps", "4", "--final-local-steps", "3", "--final-kd-steps", "3",
        "--steps", "3", "--max-points", "2", "--placement-layers", "1", "--json",
    ];
    let o = jetc(&argv);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let j: serde_json::Value = serde_json::from_str(&stdout(&o)).expect("--json summary");
    for f in [
        "supernet/path/distill.json", "heatmap/heatmap.png", "placement/placement.json", "block/block.json", "hw/hw.json", "hw/layout.json",
        "final/kd/distill.json", "model/model.onnx", "model/tokenizer.json", "codegen/manifest.json", "report.md", "postnas.json",
    ] {
        assert!(out.join(f).is_file(), "{f} not written");
    }
    assert_eq!(j["full_attn"].as_array().unwrap().len(), 1);
    // --placement-layers 1: placement searched only the heat map's best layer (lowest NLL).
    let cells = std::fs::read_to_string(out.join("heatmap/cells.jsonl")).unwrap();
    let best = cells
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
        .filter(|c| c["layer"].is_u64())
        .map(|c| (c["scores"][0]["metrics"].as_array().unwrap().iter().find(|m| m["name"] == "nll").unwrap()["value"].as_f64().unwrap(), c["layer"].as_u64().unwrap()))
        .fold((f64::INFINITY, 0), |b, x| if x.0 < b.0 { x } else { b });
    assert_eq!(j["full_attn"], serde_json::json!([best.1]));
    let placement: serde_json::Value = serde_json::from_slice(&std::fs::read(out.join("placement/placement.json")).unwrap()).unwrap();
    assert_eq!(placement["top"].as_array().unwrap().len(), 1, "one candidate layer, one placement: {placement}");
    let report = std::fs::read_to_string(out.join("report.md")).unwrap();
    for section in ["## 1. Supernet", "## 2. Heat map", "## 3. Placement", "uniform", "## 4. Block selection", "gated-deltanet", "## 5. Hardware-aware", "## 6. Final", "## 7. Export"] {
        assert!(report.contains(section), "report.md lacks {section}:\n{report}");
    }
    // The exported model holds the chosen design: its full-attention layer and the hw pick.
    let layout: serde_json::Value = serde_json::from_slice(&std::fs::read(out.join("hw/layout.json")).unwrap()).unwrap();
    assert_eq!(layout["full_attn"], j["full_attn"]);
    assert_eq!(layout["block"], j["block"]);
    onnxruntime_agrees(&dir.0, &out.join("model/model.onnx"));

    // A second run keeps every stage: the KD run is not redone.
    let t0 = std::fs::metadata(out.join("final/kd/distill.json")).unwrap().modified().unwrap();
    let o2 = jetc(&argv);
    assert!(o2.status.success(), "{}", String::from_utf8_lossy(&o2.stderr));
    assert!(String::from_utf8_lossy(&o2.stderr).matches("(done, kept)").count() >= 6, "{}", String::from_utf8_lossy(&o2.stderr));
    assert_eq!(std::fs::metadata(out.join("final/kd/distill.json")).unwrap().modified().unwrap(), t0);

    // Bad input: nothing written.
    let bad = dir.0.join("bad");
    let b = bad.to_str().unwrap();
    fails(&jetc(&["postnas", m, "-o", b, "--budget", "3", "--task", "lm", "--data", d, "--train-data", d]), &["--budget 3", "2 layers"]);
    fails(&jetc(&["postnas", m, "-o", b, "--budget", "1", "--task", "lm", "--data", d, "--train-data", d, "--candidates", "jetblock,lstm"]), &["lstm"]);
    fails(&jetc(&["postnas", m, "-o", b, "--budget", "1", "--task", "mmlu-x", "--data", d, "--train-data", d]), &["unknown task"]);
    fails(&jetc(&["postnas", m, "-o", b, "--budget", "2", "--placement-layers", "1", "--task", "lm", "--data", d, "--train-data", d]), &["--placement-layers 1"]);
    assert!(!bad.exists());
}
