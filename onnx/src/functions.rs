//! ONNX function definitions for jetc's ops that have no standard ONNX op, written into
//! exported models so that any runtime can run them (onnxruntime inlines functions), while
//! jetc's importer keeps the call as one node and runs its own kernel.
//!
//! `ai.jetc::LinearAttention` extends the standard `LinearAttention` (same attributes, inputs
//! query, key, value, past_state, decay, beta) with `update_rule = "dplr"` (RWKV7) and inputs
//! 6 `a`, 7 `b`, all [B, T, H*d_k] except value [B, T, H*d_v] and past_state [B, H, d_k, d_v]
//! (required: the exporter passes zeros when the model has none):
//! ```text
//! S_t = Diag(exp(w_t)) S_{t-1} + b_t (a_t^T S_{t-1}) + k_t v_t^T      o_t = S_t^T (scale q_t)
//! ```
//! The body scales q (the `scale` attribute through `ref_attr_name`) and runs a `Scan` over
//! the time axis whose step is the update above in Reshape/Exp/Unsqueeze/MatMul/Mul/Add. Head
//! sizes come from the state's shape, so one definition serves every model (q_num_heads must
//! equal kv_num_heads).
use crate::proto::attribute_type as at;
use crate::proto::{AttributeProto, FunctionProto, GraphProto, NodeProto, OperatorSetIdProto, TensorProto, TypeProto, ValueInfoProto};

pub const JETC_FUNCTION_DOMAIN: &str = jetc_ir::JETC_DOMAIN;
/// The opset version jetc's domain is imported at.
pub const JETC_DOMAIN_VERSION: i64 = 1;

fn node(op: &str, inputs: &[&str], outputs: &[&str], attribute: Vec<AttributeProto>) -> NodeProto {
    NodeProto {
        input: inputs.iter().map(|s| s.to_string()).collect(),
        output: outputs.iter().map(|s| s.to_string()).collect(),
        op_type: op.into(),
        attribute,
        ..Default::default()
    }
}

fn int_attr(name: &str, v: i64) -> AttributeProto {
    AttributeProto { name: name.into(), r#type: at::INT, i: v, ..Default::default() }
}

fn ints_attr(name: &str, v: &[i64]) -> AttributeProto {
    AttributeProto { name: name.into(), r#type: at::INTS, ints: v.to_vec(), ..Default::default() }
}

fn ints_const(name: &str, v: &[i64]) -> NodeProto {
    let t = TensorProto { dims: vec![v.len() as i64], data_type: 7, int64_data: v.to_vec(), ..Default::default() };
    let value = AttributeProto { name: "value".into(), r#type: at::TENSOR, t: Some(t), ..Default::default() };
    node("Constant", &[], &[name], vec![value])
}

/// A float tensor value of rank `rank` with no dimension sizes (the body is shape-generic).
fn float_of_rank(name: &str, rank: usize) -> ValueInfoProto {
    use crate::proto::tensor_shape_proto::Dimension;
    let shape = crate::proto::TensorShapeProto { dim: vec![Dimension::default(); rank] };
    ValueInfoProto {
        name: name.into(),
        r#type: Some(TypeProto {
            value: Some(crate::proto::type_proto::Value::TensorType(crate::proto::type_proto::Tensor {
                elem_type: 1,
                shape: Some(shape),
            })),
            denotation: String::new(),
        }),
        ..Default::default()
    }
}

/// One token of the DPLR update: state S [B, H, d_k, d_v] and the token's q, k, v, w, a, b
/// [B, H*d] in; the new state and o [B, H*d_v] out. Value names must not repeat the
/// function's own (a subgraph may not shadow an outer name).
fn dplr_step() -> GraphProto {
    let mut n = vec![
        node("Shape", &["S"], &["sh"], vec![]),
        ints_const("c0", &[0]),
        ints_const("c1", &[1]),
        ints_const("c2", &[2]),
        ints_const("minus_one", &[-1]),
        ints_const("axis_last", &[-1]),
        ints_const("axis_row", &[-2]),
        node("Slice", &["sh", "c0", "c2"], &["bh"], vec![]),
        node("Concat", &["bh", "minus_one"], &["head_shape"], vec![int_attr("axis", 0)]),
    ];
    for x in ["q", "k", "v", "w", "a", "b"] {
        n.push(node("Reshape", &[&format!("{x}_t"), "head_shape"], &[&format!("{x}3")], vec![]));
    }
    n.extend([
        node("Exp", &["w3"], &["step_decay"], vec![]),
        node("Unsqueeze", &["step_decay", "axis_last"], &["decay_col"], vec![]),
        node("Mul", &["decay_col", "S"], &["decayed"], vec![]),
        node("Unsqueeze", &["a3", "axis_row"], &["a_row"], vec![]),
        node("MatMul", &["a_row", "S"], &["a_S"], vec![]),
        node("Unsqueeze", &["b3", "axis_last"], &["b_col"], vec![]),
        node("Mul", &["b_col", "a_S"], &["low_rank"], vec![]),
        node("Unsqueeze", &["k3", "axis_last"], &["k_col"], vec![]),
        node("Unsqueeze", &["v3", "axis_row"], &["v_row"], vec![]),
        node("Mul", &["k_col", "v_row"], &["kv"], vec![]),
        node("Add", &["decayed", "low_rank"], &["partial"], vec![]),
        node("Add", &["partial", "kv"], &["S_next"], vec![]),
        node("Unsqueeze", &["q3", "axis_row"], &["q_row"], vec![]),
        node("MatMul", &["q_row", "S_next"], &["o4"], vec![]),
        node("Slice", &["sh", "c0", "c1"], &["b1"], vec![]),
        node("Concat", &["b1", "minus_one"], &["o_shape"], vec![int_attr("axis", 0)]),
        node("Reshape", &["o4", "o_shape"], &["o_t"], vec![]),
    ]);
    let mut input = vec![float_of_rank("S", 4)];
    input.extend(["q_t", "k_t", "v_t", "w_t", "a_t", "b_t"].iter().map(|x| float_of_rank(x, 2)));
    GraphProto {
        node: n,
        name: "dplr_step".into(),
        input,
        output: vec![float_of_rank("S_next", 4), float_of_rank("o_t", 2)],
        ..Default::default()
    }
}

/// The function behind `ai.jetc::LinearAttention` (rule `dplr`).
pub fn dplr_linear_attention() -> FunctionProto {
    let scale = AttributeProto {
        name: "value_float".into(),
        ref_attr_name: "scale".into(),
        r#type: at::FLOAT,
        ..Default::default()
    };
    let body = AttributeProto { name: "body".into(), r#type: at::GRAPH, g: Some(Box::new(dplr_step())), ..Default::default() };
    let scan = node(
        "Scan",
        &["past_state", "q_scaled", "key", "value", "decay", "a", "b"],
        &["present_state", "output"],
        vec![body, int_attr("num_scan_inputs", 6), ints_attr("scan_input_axes", &[1; 6]), ints_attr("scan_output_axes", &[1])],
    );
    FunctionProto {
        name: "LinearAttention".into(),
        domain: JETC_FUNCTION_DOMAIN.into(),
        input: ["query", "key", "value", "past_state", "decay", "beta", "a", "b"].iter().map(|s| s.to_string()).collect(),
        output: vec!["output".into(), "present_state".into()],
        attribute: ["q_num_heads", "kv_num_heads", "update_rule", "scale", "chunk_size"].iter().map(|s| s.to_string()).collect(),
        node: vec![node("Constant", &[], &["scale_value"], vec![scale]), node("Mul", &["query", "scale_value"], &["q_scaled"], vec![]), scan],
        opset_import: vec![OperatorSetIdProto { domain: String::new(), version: 27 }],
        doc_string: "jetc LinearAttention with update_rule dplr (RWKV7): a Scan of the per-token update".into(),
        ..Default::default()
    }
}

/// The functions a model whose nodes use these (domain, op type) pairs needs.
pub fn definitions_for<'a>(ops: impl IntoIterator<Item = (&'a str, &'a str)>) -> Vec<FunctionProto> {
    let mut out = Vec::new();
    for (domain, op) in ops {
        if domain == JETC_FUNCTION_DOMAIN && op == "LinearAttention" && out.is_empty() {
            out.push(dplr_linear_attention());
        }
    }
    out
}

/// Whether the importer keeps a call to this function as one node (jetc runs it natively)
/// instead of inlining its body.
pub fn is_native(domain: &str, op: &str) -> bool {
    domain == JETC_FUNCTION_DOMAIN && op == "LinearAttention"
}
