//! Bad input never panics: the `jetc` binary, given broken, foreign or mismatched files,
//! exits non-zero with a message that names the problem (file, node, op, tensor or input),
//! and never with a Rust panic.
//!
//! Models are either real fixtures (truncated, moved away from their external data) or tiny
//! graphs encoded here from `jetc_onnx::proto` structs with prost.
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::atomic::{AtomicUsize, Ordering};

use jetc_onnx::proto::{
    self, tensor_shape_proto::dimension, type_proto, GraphProto, ModelProto, NodeProto, OperatorSetIdProto,
    TensorProto, TensorShapeProto, TypeProto, ValueInfoProto,
};
use jetc_runtime::npz::{read_npz, write_npz};
use jetc_runtime::Value;
use prost::Message;

const ONNX_FLOAT: i32 = 1;
const ONNX_INT64: i32 = 7;

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn fixture(name: &str) -> PathBuf {
    repo().join("tests/fixtures").join(name)
}

/// A directory under the system temp dir, removed when dropped.
struct TempDir(PathBuf);

impl std::ops::Deref for TempDir {
    type Target = Path;
    fn deref(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A fresh, empty directory under the system temp dir, unique to this process and call.
fn temp_dir(tag: &str) -> TempDir {
    static COUNTER: AtomicUsize = AtomicUsize::new(0);
    let n = COUNTER.fetch_add(1, Ordering::SeqCst);
    let dir = std::env::temp_dir().join(format!("jetc-bad-input-{}-{n}-{tag}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("create temp dir");
    TempDir(dir)
}

fn jetc(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_jetc")).args(args).output().expect("start jetc")
}

fn path_arg(p: &Path) -> &str {
    p.to_str().expect("temp paths are UTF-8")
}

/// Asserts a clean failure: non-zero exit, no panic, and every word of `words` in stderr.
fn assert_fails(out: &Output, words: &[&str]) -> String {
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(!out.status.success(), "jetc should have failed; stderr:\n{stderr}");
    assert!(!stderr.contains("panicked"), "jetc panicked:\n{stderr}");
    assert_ne!(out.status.code(), Some(101), "exit code 101 is Rust's panic code; stderr:\n{stderr}");
    for w in words {
        assert!(stderr.contains(w), "stderr should mention `{w}`:\n{stderr}");
    }
    stderr
}

fn assert_succeeds(out: &Output) {
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "jetc failed:\n{stderr}");
}

fn tensor_type(elem_type: i32, dims: &[&str]) -> Option<TypeProto> {
    let dim = dims
        .iter()
        .map(|d| proto::tensor_shape_proto::Dimension {
            value: Some(match d.parse::<i64>() {
                Ok(v) => dimension::Value::DimValue(v),
                Err(_) => dimension::Value::DimParam(d.to_string()),
            }),
            denotation: String::new(),
        })
        .collect();
    Some(TypeProto {
        value: Some(type_proto::Value::TensorType(type_proto::Tensor {
            elem_type,
            shape: Some(TensorShapeProto { dim }),
        })),
        denotation: String::new(),
    })
}

fn value_info(name: &str, elem_type: i32, dims: &[&str]) -> ValueInfoProto {
    ValueInfoProto { name: name.into(), r#type: tensor_type(elem_type, dims), ..Default::default() }
}

fn node(op_type: &str, name: &str, inputs: &[&str], outputs: &[&str]) -> NodeProto {
    NodeProto {
        op_type: op_type.into(),
        name: name.into(),
        input: inputs.iter().map(|s| s.to_string()).collect(),
        output: outputs.iter().map(|s| s.to_string()).collect(),
        ..Default::default()
    }
}

fn model(nodes: Vec<NodeProto>, initializer: Vec<TensorProto>, inputs: Vec<ValueInfoProto>, outputs: Vec<ValueInfoProto>, opset: i64) -> Vec<u8> {
    ModelProto {
        ir_version: 9,
        opset_import: vec![OperatorSetIdProto { domain: String::new(), version: opset }],
        producer_name: "jetc-bad-input-test".into(),
        graph: Some(GraphProto { name: "g".into(), node: nodes, initializer, input: inputs, output: outputs, ..Default::default() }),
        ..Default::default()
    }
    .encode_to_vec()
}

/// y = x + 1 over x: f32[batch, n]. A valid ONNX graph, but no decoder.
fn add_one_model() -> Vec<u8> {
    let one = TensorProto { name: "one".into(), data_type: ONNX_FLOAT, float_data: vec![1.0], ..Default::default() };
    model(
        vec![node("Add", "add_one", &["x", "one"], &["y"])],
        vec![one],
        vec![value_info("x", ONNX_FLOAT, &["batch", "n"])],
        vec![value_info("y", ONNX_FLOAT, &["batch", "n"])],
        20,
    )
}

/// One node `op_type` named `node_name` between x and y, at default-domain opset `opset`.
fn single_op_model(op_type: &str, node_name: &str, inputs: &[&str], opset: i64) -> Vec<u8> {
    model(
        vec![node(op_type, node_name, inputs, &["y"])],
        vec![],
        vec![value_info("x", ONNX_FLOAT, &["1", "4", "4"])],
        vec![value_info("y", ONNX_INT64, &["n", "3"])],
        opset,
    )
}

fn write(dir: &Path, name: &str, bytes: &[u8]) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, bytes).expect("write temp file");
    p
}

fn f32_value(shape: &[usize], data: &[f32]) -> Value {
    Value::from_tensor(&jetc_ir::Tensor::from_f32(shape.to_vec(), data).expect("tensor"))
}

fn i64_value(shape: &[usize], data: &[i64]) -> Value {
    Value::from_tensor(&jetc_ir::Tensor::from_i64(shape.to_vec(), data).expect("tensor"))
}

// ---- truncated and random files ----

fn truncated_fixture(tag: &str) -> (TempDir, PathBuf) {
    let bytes = std::fs::read(fixture("llama-dynamo-opset20-eager-nokv/model.onnx")).expect("fixture");
    let dir = temp_dir(tag);
    let m = write(&dir, "model.onnx", &bytes[..bytes.len() / 2]);
    (dir, m)
}

#[test]
fn inspect_truncated_onnx() {
    let (_dir, m) = truncated_fixture("trunc-inspect");
    let out = jetc(&["inspect", path_arg(&m)]);
    assert_fails(&out, &[path_arg(&m), "not a readable ONNX model"]);
}

#[test]
fn run_truncated_onnx() {
    let (_dir, m) = truncated_fixture("trunc-run");
    let inputs = fixture("llama-dynamo-opset20-eager-nokv/past0.inputs.npz");
    let out_npz = m.with_file_name("out.npz");
    let out = jetc(&["run", path_arg(&m), "--inputs", path_arg(&inputs), "--out", path_arg(&out_npz)]);
    assert_fails(&out, &[path_arg(&m), "not a readable ONNX model"]);
    assert!(!out_npz.exists(), "no output file on failure");
}

#[test]
fn random_bytes_named_model_onnx() {
    // A fixed xorshift stream, so the failure is reproducible.
    let mut s = 0x9e37_79b9_7f4a_7c15u64;
    let bytes: Vec<u8> = (0..4096)
        .map(|_| {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            (s >> 24) as u8
        })
        .collect();
    let dir = temp_dir("random");
    let m = write(&dir, "model.onnx", &bytes);
    for cmd in ["inspect", "dump"] {
        let out = jetc(&[cmd, path_arg(&m)]);
        assert_fails(&out, &[path_arg(&m), "not a readable ONNX model"]);
    }
}

// ---- valid ONNX that is not a decoder ----

#[test]
fn inspect_rejects_a_graph_that_is_not_a_decoder() {
    let dir = temp_dir("add-one-inspect");
    let m = write(&dir, "add_one.onnx", &add_one_model());
    let out = jetc(&["inspect", path_arg(&m)]);
    assert_fails(&out, &[path_arg(&m), "not a decoder", "no attention layer"]);
}

#[test]
fn run_accepts_a_graph_that_is_not_a_decoder() {
    let dir = temp_dir("add-one-run");
    let m = write(&dir, "add_one.onnx", &add_one_model());
    let inputs = dir.join("in.npz");
    let out_npz = dir.join("out.npz");
    write_npz(&inputs, &[("x".into(), f32_value(&[2, 3], &[0.0, 1.0, 2.0, -1.0, 0.5, 10.0]))]).expect("write npz");
    for extra in [None, Some("--no-raise")] {
        let mut args = vec!["run", path_arg(&m), "--inputs", path_arg(&inputs), "--out", path_arg(&out_npz)];
        args.extend(extra);
        assert_succeeds(&jetc(&args));
        let got = read_npz(&out_npz).expect("read outputs");
        assert_eq!(got, vec![("y".to_string(), f32_value(&[2, 3], &[1.0, 2.0, 3.0, 0.0, 1.5, 11.0]))]);
    }
}

// ---- unsupported ops ----

#[test]
fn unknown_op_in_the_default_domain() {
    let dir = temp_dir("fancy");
    let m = write(&dir, "fancy.onnx", &single_op_model("FancyOp", "my_fancy_node", &["x"], 20));
    let out = jetc(&["inspect", path_arg(&m)]);
    assert_fails(&out, &[path_arg(&m), "unsupported op FancyOp", "my_fancy_node", "opset 20"]);
}

#[test]
fn real_onnx_op_without_a_kernel() {
    let dir = temp_dir("nms");
    let m = write(&dir, "nms.onnx", &single_op_model("NonMaxSuppression", "nms_0", &["x", "x"], 19));
    let inputs = dir.join("in.npz");
    write_npz(&inputs, &[("x".into(), f32_value(&[1, 4, 4], &[0.0; 16]))]).expect("write npz");
    let out = jetc(&["inspect", path_arg(&m)]);
    assert_fails(&out, &["unsupported op NonMaxSuppression", "nms_0", "opset 19"]);
    let out_npz = dir.join("out.npz");
    let out = jetc(&["run", path_arg(&m), "--inputs", path_arg(&inputs), "--out", path_arg(&out_npz), "--no-raise"]);
    assert_fails(&out, &[path_arg(&m), "unsupported op NonMaxSuppression", "nms_0", "opset 19"]);
}

#[test]
fn loop_with_a_subgraph() {
    let dir = temp_dir("loop");
    let body = GraphProto { name: "body".into(), ..Default::default() };
    let mut lp = node("Loop", "my_loop", &["", "", "x"], &["y"]);
    lp.attribute.push(proto::AttributeProto {
        name: "body".into(),
        r#type: proto::attribute_type::GRAPH,
        g: Some(Box::new(body)),
        ..Default::default()
    });
    let bytes = model(
        vec![lp],
        vec![],
        vec![value_info("x", ONNX_FLOAT, &["4"])],
        vec![value_info("y", ONNX_FLOAT, &["4"])],
        21,
    );
    let m = write(&dir, "loop.onnx", &bytes);
    let out = jetc(&["inspect", path_arg(&m)]);
    assert_fails(&out, &[path_arg(&m), "Loop", "my_loop", "opset 21", "not supported"]);
}

// ---- external data ----

#[test]
fn missing_external_data() {
    let dir = temp_dir("no-data");
    let src = fixture("llama-dynamo-opset20-sdpa-kv/model.onnx");
    let m = dir.join("model.onnx");
    std::fs::copy(&src, &m).expect("copy fixture");
    let out = jetc(&["inspect", path_arg(&m)]);
    let stderr = assert_fails(&out, &[path_arg(&m), "external data", "model.onnx.data", "No such file", "tensor `"]);
    // The named tensor is one of the model's initializers.
    let tensor = stderr.split("tensor `").nth(1).and_then(|r| r.split('`').next()).unwrap_or_default();
    assert!(!tensor.is_empty(), "no tensor named:\n{stderr}");
}

// ---- npz inputs that do not fit ----

const KV_FIXTURE: &str = "llama-dynamo-opset20-sdpa-kv";

/// The fixture's past3 inputs with `edit` applied, written to a temp npz; runs `jetc run`.
fn run_with_edited_inputs(tag: &str, edit: impl FnOnce(&mut Vec<(String, Value)>)) -> Output {
    let dir = temp_dir(tag);
    let mut arrays = read_npz(&fixture(KV_FIXTURE).join("past3.inputs.npz")).expect("fixture inputs");
    edit(&mut arrays);
    let inputs = dir.join("in.npz");
    write_npz(&inputs, &arrays).expect("write npz");
    let model = fixture(KV_FIXTURE).join("model.onnx");
    let out_npz = dir.join("out.npz");
    let out = jetc(&["run", path_arg(&model), "--inputs", path_arg(&inputs), "--out", path_arg(&out_npz)]);
    assert!(!out_npz.exists(), "no output file on failure");
    out
}

#[test]
fn npz_with_an_extra_input() {
    let out = run_with_edited_inputs("extra", |a| a.push(("token_type_ids".into(), i64_value(&[2, 4], &[0; 8]))));
    assert_fails(&out, &["in.npz", "input `token_type_ids`", "the model has no such input", "input_ids"]);
}

#[test]
fn npz_with_a_missing_input() {
    let out = run_with_edited_inputs("missing", |a| a.retain(|(n, _)| n != "position_ids"));
    assert_fails(&out, &["in.npz", "input `position_ids`", "missing"]);
}

#[test]
fn npz_with_the_wrong_rank() {
    let out = run_with_edited_inputs("rank", |a| {
        for (name, v) in a.iter_mut() {
            if name == "input_ids" {
                let flat = v.to_tensor().expect("tensor");
                let n = flat.numel();
                *v = Value::from_tensor(&flat.reshaped(vec![n]).expect("reshape"));
            }
        }
    });
    assert_fails(&out, &["in.npz", "input `input_ids`", "does not fit the declared"]);
}

#[test]
fn npz_with_inconsistent_batch() {
    let out = run_with_edited_inputs("batch", |a| {
        for (name, v) in a.iter_mut() {
            if name == "position_ids" {
                // Batch 3 where input_ids has batch 2.
                let seq = v.shape()[1];
                let data: Vec<i64> = (0..3 * seq as i64).collect();
                *v = i64_value(&[3, seq], &data);
            }
        }
    });
    assert_fails(&out, &["in.npz", "input `position_ids`", "dimension `batch` is 3 here but 2 in input `input_ids`"]);
}

#[test]
fn npz_that_is_not_a_zip() {
    let dir = temp_dir("bad-npz");
    let inputs = write(&dir, "in.npz", b"PK\x03\x04 this is not really a zip archive");
    let model = fixture(KV_FIXTURE).join("model.onnx");
    let out_npz = dir.join("out.npz");
    let out = jetc(&["run", path_arg(&model), "--inputs", path_arg(&inputs), "--out", path_arg(&out_npz)]);
    assert_fails(&out, &[path_arg(&inputs), "not a zip archive"]);
}

// ---- paths ----

#[test]
fn nonexistent_model_path() {
    let dir = temp_dir("nonexistent");
    let m = dir.join("no_such_model.onnx");
    for cmd in ["inspect", "dump"] {
        let out = jetc(&[cmd, path_arg(&m)]);
        assert_fails(&out, &[path_arg(&m), "No such file"]);
    }
}

#[test]
fn unknown_file_extension() {
    let dir = temp_dir("ext");
    // Not ONNX by extension: the content decides. A safetensors file is tried as ONNX and
    // refused as such; a GGUF file (by extension or by magic) is read as GGUF, and its
    // broken header is named.
    let header = br#"{"w":{"dtype":"F32","shape":[1],"data_offsets":[0,4]}}"#;
    let mut safetensors = (header.len() as u64).to_le_bytes().to_vec();
    safetensors.extend_from_slice(header);
    safetensors.extend_from_slice(&1.0f32.to_le_bytes());
    let m = write(&dir, "model.safetensors", &safetensors);
    let out = jetc(&["inspect", path_arg(&m)]);
    assert_fails(&out, &[path_arg(&m), "not a readable ONNX model"]);

    let gguf = b"GGUF\x03\x00\x00\x00 not really a GGUF file";
    for name in ["model.gguf", "model.bin"] {
        let m = write(&dir, name, gguf);
        let out = jetc(&["inspect", path_arg(&m)]);
        assert_fails(&out, &[path_arg(&m), "metadata count", "remain in the file"]);
    }
}
