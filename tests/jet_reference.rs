//! The exported Jet-Nemotron HF model computes what jetc computes: converted fixtures are
//! exported with `export_jet_hf`, run by an independent PyTorch implementation of the
//! Jet-Nemotron decoder written from the spec (scripts/jet_reference.py, which reads only
//! config.json and model.safetensors by the reference parameter names), and its logits are
//! compared with jetc's executor on the converted graph.
//!
//! The JetBlock weights are perturbed before export: at init W1 = W2 = 0 (the dynamic conv is
//! a static conv with kernel b2) and o_norm = 1, which would hide a wrong kernel layout, a
//! wrong generator input or a missing norm weight.
//!
//! Needs a Python with torch and numpy: `JETC_TORCH_PYTHON`, else
//! /root/.cache/jetc/venv-export/bin/python. Without one the test skips, unless
//! `JETC_REQUIRE_TORCH` is set. `JETC_KEEP_TMP=1` keeps the exported models, ids and reference
//! logits (under the temp dir, `jetc-jetref-<pid>`) for inspection.
mod common;

use std::collections::HashMap;
use std::path::PathBuf;

use common::*;
use jetc::convert::{convert, Layout};
use jetc::ir::{Graph, Op, Outlet, Tensor};
use jetc::jet_hf::{export_jet_hf, HfOptions};
use jetc::passes::linearize::{Block, MixerConfig};
use jetc::pipeline::load_raised;
use jetc::runtime::{Session, Value};
use ndarray::{ArrayD, IxDyn};

const TOL: f64 = 1e-4;

fn python_with_torch() -> Option<PathBuf> {
    let candidates: Vec<PathBuf> = std::env::var_os("JETC_TORCH_PYTHON")
        .map(PathBuf::from)
        .into_iter()
        .chain([PathBuf::from("/root/.cache/jetc/venv-export/bin/python")])
        .collect();
    for py in candidates {
        let ok = std::process::Command::new(&py)
            .args(["-c", "import torch, numpy"])
            .output()
            .map(|o| o.status.success())
            .unwrap_or(false);
        if ok {
            return Some(py);
        }
        eprintln!("{}: cannot import torch and numpy", py.display());
    }
    if std::env::var_os("JETC_REQUIRE_TORCH").is_some() {
        panic!("JETC_REQUIRE_TORCH is set but no Python with torch was found (set JETC_TORCH_PYTHON)");
    }
    eprintln!("skipping: no Python with torch (set JETC_TORCH_PYTHON)");
    None
}

fn layout(full: Vec<usize>, swa: Vec<usize>, window: Option<usize>) -> Layout {
    Layout { full_attn: full, swa, window, block: Block::JetBlock, blocks: vec![], config: MixerConfig::default() }
}

/// xorshift64 -> uniform in [-1, 1).
fn uniform(state: &mut u64) -> f32 {
    *state ^= *state << 13;
    *state ^= *state >> 7;
    *state ^= *state << 17;
    (*state >> 40) as f32 / (1u64 << 23) as f32 - 1.0
}

/// Adds deterministic noise to every JetBlock weight (constants named `layers.{l}.jet.*`,
/// except the decay floor): amplitude 0.25 x the tensor's RMS, or 0.1 for an all-zero tensor
/// (W1, W2). Returns the names perturbed.
fn perturb_jetblocks(g: &mut Graph, seed: u64) -> Vec<String> {
    let ids: Vec<_> = g.node_ids().collect();
    let mut state = seed | 1;
    let mut names = Vec::new();
    for id in ids {
        let n = g.node_mut(id).expect("node");
        let Op::Const(t) = &mut n.op else { continue };
        let is_jet = n.name.strip_prefix("layers.").and_then(|r| r.split_once(".jet.")).is_some_and(|(l, rest)| {
            l.parse::<usize>().is_ok() && rest != "log_decay_floor"
        });
        if !is_jet {
            continue;
        }
        let mut v = t.to_f32_vec();
        let rms = (v.iter().map(|x| (*x as f64).powi(2)).sum::<f64>() / v.len().max(1) as f64).sqrt() as f32;
        let amp = if rms > 0.0 { 0.25 * rms } else { 0.1 };
        for x in v.iter_mut() {
            *x += amp * uniform(&mut state);
        }
        *t = Tensor::from_f32(t.shape().to_vec(), &v).expect("tensor");
        names.push(n.name.clone());
    }
    names
}

#[test]
fn exported_jet_hf_matches_an_independent_pytorch_reference() {
    let Some(py) = python_with_torch() else { return };
    let script = root().join("scripts/jet_reference.py");
    let tmp = std::env::temp_dir().join(format!("jetc-jetref-{}", std::process::id()));
    std::fs::create_dir_all(&tmp).expect("tmp");
    let mut report = Vec::new();
    for fixture in ["qwen2-dynamo-opset20-sdpa-kv", "llama-dynamo-opset20-sdpa-kv"] {
        for (name, lay) in [("jet+swa2", layout(vec![], vec![1], Some(2))), ("jet+attn", layout(vec![1], vec![], None))] {
            let what = format!("{fixture} {name}");
            let mut g = load_raised(&fixtures_dir().join(fixture).join("model.onnx")).expect("load");
            convert(&mut g, &lay, 0).unwrap_or_else(|e| panic!("{what}: convert: {e}"));
            let perturbed = perturb_jetblocks(&mut g, 0x5eed_0000 + report.len() as u64);
            // 13 reference parameters of layer 0's JetBlock.
            assert_eq!(perturbed.len(), 13, "{what}: perturbed {perturbed:?}");
            assert!(perturbed.iter().all(|n| n.starts_with("layers.0.jet.")), "{what}: {perturbed:?}");
            let dir = tmp.join(format!("{fixture}-{name}"));
            export_jet_hf(&g, &dir, &HfOptions::default()).unwrap_or_else(|e| panic!("{what}: export: {e}"));

            // jetc: one prefill from empty caches, on the fixture's past0 ids (one partial
            // 64-token chunk) and on 70 ids (two chunks: the state crosses a chunk boundary).
            let (_, past0, _) = cases(fixture).into_iter().find(|(c, _, _)| c == "past0").expect("past0 case");
            for (case, ids) in [("past0", past0["input_ids"].as_i64().expect("input_ids is int64").clone()), ("long70", long_ids(2, 70))] {
                let what = format!("{what} {case}");
                let err = compare_one(&what, &g, &past0, ids, &py, &script, &dir);
                eprintln!("{what}: logits max|diff|/max|ref| = {err:.3e}");
                report.push((what, err));
            }
        }
    }
    eprintln!("{report:#?}");
    if std::env::var_os("JETC_KEEP_TMP").is_none() {
        std::fs::remove_dir_all(&tmp).ok();
    }
}

/// Deterministic token ids in 0..128 (the fixtures' vocabulary).
fn long_ids(b: usize, t: usize) -> ArrayD<i64> {
    let mut state = 0x1d5u64;
    ArrayD::from_shape_fn(IxDyn(&[b, t]), |_| ((uniform(&mut state) + 1.0) * 64.0).floor().clamp(0.0, 127.0) as i64)
}

/// Runs jetc on `g` and the reference on the export in `dir` for one prefill of `ids` from
/// empty caches (positions 0..T-1, no padding); returns the logits' relative error.
fn compare_one(
    what: &str,
    g: &Graph,
    past0: &HashMap<String, Value>,
    ids: ArrayD<i64>,
    py: &std::path::Path,
    script: &std::path::Path,
    dir: &std::path::Path,
) -> f64 {
    let (b, t) = (ids.shape()[0], ids.shape()[1]);
    let mut inputs: HashMap<String, Value> = HashMap::new();
    for (n, v) in past0 {
        if n.starts_with("past_key_values") {
            // Zero-length past KV, as in the fixture's past0 case.
            assert_eq!((v.shape()[0], v.shape()[2]), (b, 0), "{what}: {n} must be empty with batch {b}");
            inputs.insert(n.clone(), v.clone());
        }
    }
    inputs.insert("input_ids".into(), Value::i64(ids.clone()));
    inputs.insert("attention_mask".into(), Value::i64(ArrayD::ones(IxDyn(&[b, t]))));
    inputs.insert("position_ids".into(), Value::i64(ArrayD::from_shape_fn(IxDyn(&[b, t]), |ix| ix[1] as i64)));
    for &id in &g.inputs {
        let n = g.value_name(Outlet::new(id, 0)).to_string();
        if n.starts_with("past_conv") || n.starts_with("past_state") {
            let f = g.fact(Outlet::new(id, 0)).expect("fact");
            let dims: Vec<usize> = f.shape.as_ref().expect("shape").iter().map(|d| d.as_known().map_or(b, |v| v as usize)).collect();
            inputs.insert(n, Value::f32(ArrayD::zeros(IxDyn(&dims))));
        }
    }
    let wanted: Vec<String> = g.inputs.iter().map(|&id| g.value_name(Outlet::new(id, 0)).to_string()).collect();
    inputs.retain(|k, _| wanted.contains(k));
    assert_eq!(inputs.len(), wanted.len(), "{what}: graph inputs {wanted:?}, given {:?}", inputs.keys().collect::<Vec<_>>());
    let session = Session::new(g).expect("session");
    let ours: HashMap<String, Value> = session.run(inputs).unwrap_or_else(|e| panic!("{what}: run: {e}")).into_iter().collect();

    // The reference, from the exported files only.
    let tag = what.rsplit(' ').next().unwrap_or("ids");
    let ids_path = dir.join(format!("{tag}.ids.npz"));
    jetc::runtime::npz::write_npz(&ids_path, &[("input_ids".to_string(), Value::i64(ids))]).expect("write ids");
    let out_path = dir.join(format!("{tag}.ref.npz"));
    let o = std::process::Command::new(py).arg(script).arg(dir).arg(&ids_path).arg(&out_path).output().expect("run python");
    assert!(o.status.success(), "{what}: jet_reference.py failed: {}", String::from_utf8_lossy(&o.stderr));
    let theirs = jetc::runtime::npz::read_npz(&out_path).expect("read reference");
    let got = vec![("logits".to_string(), ours["logits"].clone())];
    compare_outputs(what, &got, &theirs, TOL)
}
