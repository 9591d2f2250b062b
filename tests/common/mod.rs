//! Shared helpers for the integration tests: fixture discovery, reference comparison, and
//! the Python interpreter that has onnxruntime (for export round trips).
#![allow(dead_code)]

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use jetc::runtime::npz::read_npz;
use jetc::runtime::{Data, Value};

pub fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

pub fn fixtures_dir() -> PathBuf {
    root().join("tests/fixtures")
}

/// Fixture directory names listed in the manifest.
pub fn fixture_names() -> Vec<String> {
    let text = std::fs::read_to_string(fixtures_dir().join("manifest.json")).expect("tests/fixtures/manifest.json");
    let v: serde_json::Value = serde_json::from_str(&text).expect("manifest is JSON");
    v["variants"].as_array().expect("variants").iter().filter_map(|s| s.as_str().map(String::from)).collect()
}

pub fn meta(name: &str) -> serde_json::Value {
    let text = std::fs::read_to_string(fixtures_dir().join(name).join("meta.json")).expect("meta.json");
    serde_json::from_str(&text).expect("meta.json is JSON")
}

/// (case name, inputs, reference outputs) for every case of a fixture.
pub fn cases(name: &str) -> Vec<(String, HashMap<String, Value>, Vec<(String, Value)>)> {
    let m = meta(name);
    let dir = fixtures_dir().join(name);
    m["cases"]
        .as_array()
        .expect("cases")
        .iter()
        .filter_map(|c| c.as_str())
        .map(|c| {
            let inputs = read_npz(&dir.join(format!("{c}.inputs.npz"))).expect("inputs npz").into_iter().collect();
            let outputs = read_npz(&dir.join(format!("{c}.outputs.npz"))).expect("outputs npz");
            (c.to_string(), inputs, outputs)
        })
        .collect()
}

fn floats(v: &Value) -> Vec<f64> {
    match &v.dense().data {
        Data::F(a) => a.iter().map(|&x| x as f64).collect(),
        Data::I(a) => a.iter().map(|&x| x as f64).collect(),
        Data::B(a) => a.iter().map(|&x| x as u8 as f64).collect(),
        Data::Q(_) => unreachable!("dense() returns f32 values"),
    }
}

/// max |got - want| / max |want|; panics with context on a shape mismatch.
pub fn rel_err(what: &str, got: &Value, want: &Value) -> f64 {
    assert_eq!(got.shape(), want.shape(), "{what}: shape");
    let (g, w) = (floats(got), floats(want));
    let max_ref = w.iter().fold(0.0f64, |a, &b| a.max(b.abs()));
    let max_diff = g.iter().zip(&w).fold(0.0f64, |a, (x, y)| a.max((x - y).abs()));
    if max_ref == 0.0 {
        max_diff
    } else {
        max_diff / max_ref
    }
}

/// Compares every reference output by name; returns the worst relative error.
pub fn compare_outputs(what: &str, got: &[(String, Value)], want: &[(String, Value)], tol: f64) -> f64 {
    let got: HashMap<&str, &Value> = got.iter().map(|(n, v)| (n.as_str(), v)).collect();
    let mut worst = 0.0f64;
    for (name, w) in want {
        let g = got.get(name.as_str()).unwrap_or_else(|| panic!("{what}: output `{name}` missing"));
        let e = rel_err(&format!("{what} {name}"), g, w);
        assert!(e <= tol, "{what}: output `{name}` rel err {e:e} > {tol:e}");
        worst = worst.max(e);
    }
    worst
}

/// A Python with onnxruntime and numpy: `JETC_PYTHON`, else `.venv/bin/python`, else
/// `python3`. In CI a missing onnxruntime is a failure; elsewhere the caller skips.
pub fn python_with_ort() -> Option<PathBuf> {
    python_with("onnxruntime, numpy", "onnxruntime")
}

/// A Python (JETC_PYTHON, the repo's .venv, then `python3`) that imports `modules`; `None`
/// (the test skips) when there is none, a panic under CI, where a skip counts as a failure.
pub fn python_with(modules: &str, what: &str) -> Option<PathBuf> {
    let candidates: Vec<PathBuf> = std::env::var_os("JETC_PYTHON")
        .map(PathBuf::from)
        .into_iter()
        .chain([root().join(".venv/bin/python"), PathBuf::from("python3")])
        .collect();
    for py in candidates {
        let ok = std::process::Command::new(&py)
            .args(["-c", &format!("import {modules}")])
            .output()
            .map(|o| o.status.success())
            .unwrap_or(false);
        if ok {
            return Some(py);
        }
    }
    if std::env::var_os("CI").is_some() {
        panic!("CI: no Python with {what} found (set JETC_PYTHON or run .ci/run)");
    }
    eprintln!("skipping: no Python with {what} (set JETC_PYTHON)");
    None
}

/// Runs a model in onnxruntime (CPU, graph optimizations off) through scripts/ort_run.py.
pub fn run_ort(py: &Path, model: &Path, inputs: &Path, out: &Path) {
    let o = std::process::Command::new(py)
        .arg(root().join("scripts/ort_run.py"))
        .args([model, inputs, out])
        .output()
        .expect("run python");
    assert!(o.status.success(), "onnxruntime failed on {}: {}", model.display(), String::from_utf8_lossy(&o.stderr));
}

/// Replaces the short-convolution kernels of the linear blocks (constants named
/// `layers.{l}.<block>.{q,k,v}_conv1d.weight`, the identity at init) by deterministic values in
/// (-1, 1), so that a test sees the convolution caches matter. Returns how many it replaced.
pub fn perturb_short_convs(g: &mut jetc::ir::Graph, seed: u64) -> usize {
    let mut state = seed | 1;
    let mut count = 0;
    for id in g.node_ids().collect::<Vec<_>>() {
        let n = g.node_mut(id).expect("node");
        let jetc::ir::Op::Const(t) = &mut n.op else { continue };
        if !(n.name.starts_with("layers.") && n.name.ends_with("_conv1d.weight")) {
            continue;
        }
        let v: Vec<f32> = (0..t.numel())
            .map(|_| {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                (state >> 40) as f32 / (1u64 << 23) as f32 - 1.0
            })
            .collect();
        *t = jetc::ir::Tensor::from_f32(t.shape().to_vec(), &v).expect("tensor");
        count += 1;
    }
    count
}
