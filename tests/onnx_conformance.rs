//! ONNX's own node conformance cases (generated from the `onnx` package by
//! scripts/onnx_node_cases.py, not vendored) through jetc's import and CPU executor, the way
//! `jetc run` takes a model: every case either matches the reference outputs within the case's
//! own tolerance or is refused with an error. None may be wrong, none may panic, and every case
//! of the ops jetc exports or raises into decoder ops (the standard `LinearAttention`,
//! `CausalConvWithState`, opset 28's `SwiGLU`, `Swish`) must pass.
//!
//! The counts per outcome are printed; with `JETC_CONFORMANCE_OUT=FILE` they and each case's
//! outcome are written there as JSON (the figures in docs/benchmarks.md).
mod common;

use std::collections::{BTreeMap, HashMap};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::Path;

use jetc::runtime::npz::read_npz;
use jetc::runtime::{Session, Value};
use jetc::runtime::Data;

/// Ops whose every conformance case must pass (what jetc's own exports use, and the
/// activations the MLP raise reads as SiLU).
const MUST_PASS: &[&str] = &["LinearAttention", "CausalConvWithState", "SwiGLU", "Swish"];

#[derive(Debug)]
enum Outcome {
    Pass,
    Refused(String),
    Wrong(String),
    Panic(String),
    Unfeedable(String),
}

impl Outcome {
    fn kind(&self) -> &'static str {
        match self {
            Outcome::Pass => "pass",
            Outcome::Refused(_) => "refused",
            Outcome::Wrong(_) => "wrong",
            Outcome::Panic(_) => "panic",
            Outcome::Unfeedable(_) => "unfeedable",
        }
    }
}

fn numbers(v: &Value) -> Vec<f64> {
    match &v.dense().data {
        Data::F(a) => a.iter().map(|&x| x as f64).collect(),
        Data::I(a) => a.iter().map(|&x| x as f64).collect(),
        Data::B(a) => a.iter().map(|&x| x as u8 as f64).collect(),
        Data::Q(_) => unreachable!("dense() returns f32 values"),
    }
}

/// The spacing of the floats of `dtype` around `w` (f32 for the wider types).
fn ulp(w: f64, dtype: jetc::ir::DType) -> f64 {
    let (mantissa, min_exp) = match dtype {
        jetc::ir::DType::F16 => (10, -14),
        jetc::ir::DType::BF16 => (7, -126),
        _ => (23, -126),
    };
    let e = if w == 0.0 { min_exp } else { (w.abs().log2().floor() as i32).max(min_exp) };
    2f64.powi(e - mantissa)
}

/// numpy's `assert_allclose(got, want, rtol, atol)` (NaN equals NaN), plus shape and dtype.
/// A reference in f16 or bf16 was computed in that precision step by step, so it is itself
/// only good to about an ulp: two ulps of its dtype are allowed on top.
fn mismatch(name: &str, got: &Value, want: &Value, rtol: f64, atol: f64) -> Option<String> {
    if got.shape() != want.shape() {
        return Some(format!("`{name}`: shape {:?}, expected {:?}", got.shape(), want.shape()));
    }
    if got.dtype != want.dtype {
        return Some(format!("`{name}`: dtype {:?}, expected {:?}", got.dtype, want.dtype));
    }
    let exact = !want.dtype.is_float();
    for (i, (g, w)) in numbers(got).into_iter().zip(numbers(want)).enumerate() {
        let ok = if exact {
            g == w
        } else if w.is_nan() || g.is_nan() {
            w.is_nan() && g.is_nan()
        } else if w.is_infinite() {
            g == w
        } else {
            let rounding = if matches!(want.dtype, jetc::ir::DType::F16 | jetc::ir::DType::BF16) { 2.0 * ulp(w, want.dtype) } else { 0.0 };
            (g - w).abs() <= atol + rtol * w.abs() + rounding
        };
        if !ok {
            return Some(format!("`{name}` element {i}: {g}, expected {w} (rtol {rtol}, atol {atol})"));
        }
    }
    None
}

fn run_case(dir: &Path, sets: usize, rtol: f64, atol: f64) -> Outcome {
    let model = dir.join("model.onnx");
    let g = match jetc::pipeline::load_raised(&model) {
        Ok(g) => g,
        Err(e) => return Outcome::Refused(format!("import: {e}")),
    };
    let session = match Session::new(&g) {
        Ok(s) => s,
        Err(e) => return Outcome::Refused(format!("session: {e}")),
    };
    for k in 0..sets {
        let inputs: HashMap<String, Value> = match read_npz(&dir.join(format!("in_{k}.npz"))) {
            Ok(v) => v.into_iter().collect(),
            Err(e) => return Outcome::Refused(format!("inputs: {e}")),
        };
        let want = match read_npz(&dir.join(format!("out_{k}.npz"))) {
            Ok(v) => v,
            Err(e) => return Outcome::Refused(format!("outputs: {e}")),
        };
        if let Err(e) = jetc::runtime::check_inputs(&g, &inputs) {
            return Outcome::Refused(format!("inputs: {e}"));
        }
        let got: HashMap<String, Value> = match session.run(inputs) {
            Ok(v) => v.into_iter().collect(),
            Err(e) => return Outcome::Refused(format!("run: {e}")),
        };
        for (name, w) in &want {
            let Some(g) = got.get(name) else { return Outcome::Wrong(format!("output `{name}` missing")) };
            if let Some(m) = mismatch(name, g, w, rtol, atol) {
                return Outcome::Wrong(m);
            }
        }
    }
    Outcome::Pass
}

#[test]
fn onnx_node_conformance_cases_pass_or_are_refused() {
    let Some(py) = common::python_with("onnx, numpy", "the onnx package") else { return };
    let out = std::env::temp_dir().join(format!("jetc-onnx-cases-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&out);
    let o = std::process::Command::new(&py).arg(common::root().join("scripts/onnx_node_cases.py")).arg(&out).output().expect("python");
    assert!(o.status.success(), "onnx_node_cases.py: {}", String::from_utf8_lossy(&o.stderr));
    let index: Vec<serde_json::Value> = serde_json::from_str(&std::fs::read_to_string(out.join("cases.json")).expect("cases.json")).expect("cases.json");
    assert!(index.len() > 1000, "only {} cases generated", index.len());
    // Panics are outcomes here: keep their messages off the test output.
    let hook = std::panic::take_hook();
    std::panic::set_hook(Box::new(|_| {}));
    let mut results: Vec<(String, Vec<String>, Outcome)> = Vec::new();
    for e in &index {
        let name = e["name"].as_str().expect("name").to_string();
        let ops: Vec<String> = e["ops"].as_array().expect("ops").iter().filter_map(|o| o.as_str().map(str::to_string)).collect();
        let outcome = match e["unfeedable"].as_str() {
            Some(why) => Outcome::Unfeedable(why.to_string()),
            None => {
                let (sets, rtol, atol) = (e["data_sets"].as_u64().unwrap_or(0) as usize, e["rtol"].as_f64().unwrap_or(1e-3), e["atol"].as_f64().unwrap_or(1e-7));
                let dir = out.join(&name);
                catch_unwind(AssertUnwindSafe(|| run_case(&dir, sets, rtol, atol))).unwrap_or_else(|p| {
                    let m = p.downcast_ref::<String>().cloned().or_else(|| p.downcast_ref::<&str>().map(|s| s.to_string())).unwrap_or_default();
                    Outcome::Panic(m)
                })
            }
        };
        results.push((name, ops, outcome));
    }
    std::panic::set_hook(hook);
    let _ = std::fs::remove_dir_all(&out);

    let mut counts: BTreeMap<&str, usize> = BTreeMap::new();
    for (_, _, o) in &results {
        *counts.entry(o.kind()).or_default() += 1;
    }
    eprintln!("ONNX node conformance: {} cases: {counts:?}", results.len());
    if let Some(path) = std::env::var_os("JETC_CONFORMANCE_OUT") {
        let cases: Vec<serde_json::Value> = results
            .iter()
            .map(|(n, ops, o)| {
                let detail = match o {
                    Outcome::Pass => String::new(),
                    Outcome::Refused(m) | Outcome::Wrong(m) | Outcome::Panic(m) | Outcome::Unfeedable(m) => m.clone(),
                };
                serde_json::json!({"name": n, "ops": ops, "outcome": o.kind(), "detail": detail})
            })
            .collect();
        std::fs::write(&path, serde_json::to_string_pretty(&serde_json::json!({"counts": counts, "cases": cases})).expect("json")).expect("write JETC_CONFORMANCE_OUT");
    }
    let bad: Vec<String> = results
        .iter()
        .filter(|(_, ops, o)| matches!(o, Outcome::Wrong(_) | Outcome::Panic(_)) || (ops.iter().any(|op| MUST_PASS.contains(&op.as_str())) && !matches!(o, Outcome::Pass)))
        .map(|(n, _, o)| format!("{n}: {o:?}"))
        .collect();
    assert!(bad.is_empty(), "{} conformance cases wrong, panicking, or refused for an op jetc exports:\n{}", bad.len(), bad.join("\n"));
}
