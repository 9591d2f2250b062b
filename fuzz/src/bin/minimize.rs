//! Structure-aware minimizer for crashing inputs of the `import` target (libFuzzer's byte-level
//! `tmin` rarely shrinks a protobuf: removing bytes breaks its length prefixes).
//!
//! `minimize CRASH.onnx OUT.onnx` decodes the model and greedily removes graph nodes, inputs,
//! outputs, initializers, value infos, attributes, local functions and metadata for as long
//! as the pipeline still panics at the same source location, then writes the smaller model.
//! Build it with overflow checks, as the fuzzer does:
//! `cargo build --release --bin minimize` (the package's release profile enables them).
use std::panic::{self, AssertUnwindSafe};
use std::path::PathBuf;
use std::sync::Mutex;

use jetc_onnx::proto::ModelProto;
use prost::Message;

static LAST_PANIC: Mutex<Option<String>> = Mutex::new(None);

/// The source location of the panic the pipeline raises on `bytes`, if it panics.
fn panic_site(bytes: &[u8]) -> Option<String> {
    if let Ok(mut p) = LAST_PANIC.lock() {
        *p = None;
    }
    let r = panic::catch_unwind(AssertUnwindSafe(|| {
        let _ = jetc_fuzz::import_pipeline(bytes);
    }));
    if r.is_ok() {
        return None;
    }
    LAST_PANIC.lock().ok().and_then(|p| p.clone()).or_else(|| Some("?".into()))
}

struct Minimizer {
    site: String,
    runs: usize,
}

impl Minimizer {
    /// Whether `m` still panics at the original site.
    fn still_crashes(&mut self, m: &ModelProto) -> bool {
        self.runs += 1;
        panic_site(&m.encode_to_vec()).as_deref() == Some(self.site.as_str())
    }

    /// Removes elements of the list `get` selects, in chunks of halving size taken from the
    /// end (consumers come after producers, so a sink goes first, then what fed it), keeping
    /// every removal after which the model still crashes.
    fn shrink_list<T: Clone>(&mut self, m: &mut ModelProto, get: fn(&mut ModelProto) -> Option<&mut Vec<T>>) -> bool {
        let mut changed = false;
        let len = get(m).map(|v| v.len()).unwrap_or(0);
        let mut chunk = len.max(1).next_power_of_two();
        loop {
            let mut end = get(m).map(|v| v.len()).unwrap_or(0);
            while end > 0 {
                let start = end.saturating_sub(chunk);
                let mut candidate = m.clone();
                if let Some(l) = get(&mut candidate) {
                    l.drain(start..end);
                }
                if self.still_crashes(&candidate) {
                    *m = candidate;
                    changed = true;
                }
                end = start;
            }
            if chunk == 1 {
                break;
            }
            chunk /= 2;
        }
        changed
    }

    fn shrink_attributes(&mut self, m: &mut ModelProto) -> bool {
        let mut changed = false;
        let nodes = m.graph.as_ref().map(|g| g.node.len()).unwrap_or(0);
        for i in 0..nodes {
            let mut j = 0;
            loop {
                let Some(n) = m.graph.as_mut().and_then(|g| g.node.get_mut(i)) else { break };
                if j >= n.attribute.len() {
                    break;
                }
                let mut candidate = m.clone();
                if let Some(n) = candidate.graph.as_mut().and_then(|g| g.node.get_mut(i)) {
                    n.attribute.remove(j);
                }
                if self.still_crashes(&candidate) {
                    *m = candidate;
                    changed = true;
                } else {
                    j += 1;
                }
            }
        }
        changed
    }

    /// Replaces the graph outputs by one node output, the earliest that keeps the crash
    /// (the passes prune what no output needs, so outputs decide what gets analysed). Only
    /// moves to earlier values, so that a crash that depends on hash order cannot make it
    /// go back and forth.
    fn retarget_output(&mut self, m: &mut ModelProto) -> bool {
        let Some(g) = m.graph.as_ref().filter(|g| !g.output.is_empty()) else { return false };
        let mut names: Vec<String> = g.node.iter().flat_map(|n| n.output.iter()).filter(|o| !o.is_empty()).cloned().collect();
        if g.output.len() == 1 {
            if let Some(at) = names.iter().position(|n| *n == g.output[0].name) {
                names.truncate(at);
            }
        }
        for name in names {
            let mut candidate = m.clone();
            if let Some(g) = candidate.graph.as_mut() {
                g.output = vec![jetc_onnx::proto::ValueInfoProto { name, ..Default::default() }];
            }
            if self.still_crashes(&candidate) {
                *m = candidate;
                return true;
            }
        }
        false
    }

    fn clear_text(&mut self, m: &mut ModelProto) {
        let mut candidate = m.clone();
        candidate.doc_string.clear();
        candidate.producer_name.clear();
        candidate.producer_version.clear();
        candidate.metadata_props.clear();
        if let Some(g) = candidate.graph.as_mut() {
            g.doc_string.clear();
            g.metadata_props.clear();
            for n in &mut g.node {
                n.doc_string.clear();
                n.metadata_props.clear();
            }
        }
        if self.still_crashes(&candidate) {
            *m = candidate;
        }
    }
}

fn main() -> std::process::ExitCode {
    let args: Vec<String> = std::env::args().collect();
    let (Some(input), Some(output)) = (args.get(1).map(PathBuf::from), args.get(2).map(PathBuf::from)) else {
        eprintln!("usage: minimize CRASH.onnx OUT.onnx");
        return std::process::ExitCode::FAILURE;
    };
    panic::set_hook(Box::new(|info| {
        let site = info.location().map(|l| format!("{}:{}", l.file(), l.line())).unwrap_or_default();
        if let Ok(mut p) = LAST_PANIC.lock() {
            *p = Some(site);
        }
    }));
    let bytes = match std::fs::read(&input) {
        Ok(b) => b,
        Err(e) => {
            eprintln!("{}: {e}", input.display());
            return std::process::ExitCode::FAILURE;
        }
    };
    let Some(site) = panic_site(&bytes) else {
        eprintln!("{}: does not panic", input.display());
        return std::process::ExitCode::FAILURE;
    };
    let mut m = match ModelProto::decode(bytes.as_slice()) {
        Ok(m) => m,
        Err(e) => {
            eprintln!("{}: panics at {site} but is no ModelProto ({e}): minimize it with `cargo fuzz tmin`", input.display());
            return std::process::ExitCode::FAILURE;
        }
    };
    eprintln!("panics at {site}; {} bytes", bytes.len());
    let mut mz = Minimizer { site, runs: 0 };
    if !mz.still_crashes(&m) {
        eprintln!("re-encoding the model loses the crash; keeping it as is");
        return std::process::ExitCode::FAILURE;
    }
    mz.clear_text(&mut m);
    loop {
        let mut changed = false;
        changed |= mz.retarget_output(&mut m);
        changed |= mz.shrink_list(&mut m, |m| m.graph.as_mut().map(|g| &mut g.output));
        changed |= mz.shrink_list(&mut m, |m| m.graph.as_mut().map(|g| &mut g.value_info));
        changed |= mz.shrink_list(&mut m, |m| m.graph.as_mut().map(|g| &mut g.node));
        changed |= mz.shrink_list(&mut m, |m| m.graph.as_mut().map(|g| &mut g.initializer));
        changed |= mz.shrink_list(&mut m, |m| m.graph.as_mut().map(|g| &mut g.input));
        changed |= mz.shrink_list(&mut m, |m| Some(&mut m.functions));
        changed |= mz.shrink_list(&mut m, |m| Some(&mut m.opset_import));
        changed |= mz.shrink_attributes(&mut m);
        if let Some(g) = &m.graph {
            eprintln!(
                "{} runs: {} nodes, {} initializers, {} inputs, {} outputs, {} value infos",
                mz.runs,
                g.node.len(),
                g.initializer.len(),
                g.input.len(),
                g.output.len(),
                g.value_info.len()
            );
        }
        if !changed {
            break;
        }
    }
    let out = m.encode_to_vec();
    if let Err(e) = std::fs::write(&output, &out) {
        eprintln!("{}: {e}", output.display());
        return std::process::ExitCode::FAILURE;
    }
    eprintln!("{} bytes -> {} bytes in {} runs: {}", bytes.len(), out.len(), mz.runs, output.display());
    describe(&m);
    std::process::ExitCode::SUCCESS
}

/// A short listing of what is left, for writing the regression test.
fn describe(m: &ModelProto) {
    eprintln!("ir_version {} opsets {:?}", m.ir_version, m.opset_import.iter().map(|o| (&o.domain, o.version)).collect::<Vec<_>>());
    let Some(g) = &m.graph else { return };
    for i in &g.input {
        eprintln!("input {} {:?}", i.name, i.r#type);
    }
    for t in &g.initializer {
        let size = t.raw_data.len() + t.float_data.len() * 4 + t.int64_data.len() * 8 + t.int32_data.len() * 4;
        eprintln!(
            "initializer {} type {} dims {:?} {size} bytes{}",
            t.name,
            t.data_type,
            t.dims,
            if t.raw_data.len() <= 64 { format!(" raw {:?}", t.raw_data) } else { String::new() }
        );
    }
    for n in &g.node {
        eprintln!("node {} {}::{} {:?} -> {:?} attrs {:?}", n.name, n.domain, n.op_type, n.input, n.output, n.attribute);
    }
    for o in &g.output {
        eprintln!("output {} {:?}", o.name, o.r#type);
    }
    for v in &g.value_info {
        eprintln!("value_info {} {:?}", v.name, v.r#type);
    }
}
