//! IR graph -> ONNX file.
//!
//! ONNX-level ops are written back as they were imported; constants become initializers
//! (inline, or in one external data file when asked or when the model is over 1.5 GB, since
//! protobuf cannot hold more than 2 GB). Raised ops must be lowered to ONNX ops by a pass
//! before export; meeting one here is an error that names it.
use std::collections::{BTreeMap, HashMap, HashSet};
use std::io::Write;
use std::path::Path;

use jetc_ir::{Attr, Dim, Fact, Graph, Op, Outlet, Tensor};
use prost::Message;

use crate::error::{OnnxError, Result};
use crate::proto::{self, attribute_type as at};

#[derive(Clone, Debug, Default)]
pub struct ExportOptions {
    /// Store every initializer in `<model file name>.data` beside the model.
    pub external_data: bool,
    /// Minimum default-domain opset to declare (the graph's own is used when higher).
    pub min_opset: Option<i64>,
}

const AUTO_EXTERNAL_BYTES: usize = 1_500_000_000;

/// Writes `graph` to `path` (and its external data file when used).
pub fn export_model(graph: &Graph, path: &Path, opts: &ExportOptions) -> Result<()> {
    let shown = path.display().to_string();
    let invalid = |msg: String| OnnxError::Invalid { path: shown.clone(), msg };
    let order = graph.topo_order().map_err(|e| OnnxError::Ir { path: shown.clone(), source: e })?;

    // Name every value uniquely: the imported name when free, a fresh one otherwise.
    let mut names: HashMap<Outlet, String> = HashMap::new();
    let mut taken: HashSet<String> = HashSet::new();
    let mut fresh = 0usize;
    for &id in &order {
        let node = graph.node(id).map_err(|e| invalid(e.to_string()))?;
        for (slot, info) in node.outputs.iter().enumerate() {
            let mut name = info.name.clone();
            if name.is_empty() || taken.contains(&name) {
                loop {
                    fresh += 1;
                    name = format!("jetc_v{fresh}");
                    if !taken.contains(&name) {
                        break;
                    }
                }
            }
            taken.insert(name.clone());
            names.insert(Outlet::new(id, slot), name);
        }
    }

    let total_weight_bytes: usize = order
        .iter()
        .filter_map(|&id| match graph.node(id).map(|n| &n.op) {
            Ok(Op::Const(t)) => Some(t.bytes().len()),
            _ => None,
        })
        .sum();
    let external = opts.external_data || total_weight_bytes > AUTO_EXTERNAL_BYTES;
    let data_file_name = format!(
        "{}.data",
        path.file_name().map(|s| s.to_string_lossy().into_owned()).unwrap_or_else(|| "model.onnx".into())
    );
    let io = |e: std::io::Error| OnnxError::Io { path: shown.clone(), source: e };
    // Weights stream into the data file as they are met, never gathered in memory.
    let data_path = path.with_file_name(&data_file_name);
    let mut data_file = if external {
        Some(std::io::BufWriter::with_capacity(1 << 22, std::fs::File::create(&data_path).map_err(io)?))
    } else {
        None
    };
    let mut data_len = 0usize;
    let mut node_names: HashSet<String> = HashSet::new();

    let mut gp = proto::GraphProto { name: "jetc".into(), ..Default::default() };
    let mut opsets: BTreeMap<String, i64> = BTreeMap::new();
    for (k, v) in &graph.meta {
        if let (Some(d), Ok(v)) = (k.strip_prefix("opset."), v.parse::<i64>()) {
            opsets.insert(if d == "ai.onnx" { String::new() } else { d.to_string() }, v);
        }
    }

    for &id in &order {
        let node = graph.node(id).map_err(|e| invalid(e.to_string()))?;
        let out_name = |slot: usize| names.get(&Outlet::new(id, slot)).cloned().unwrap_or_default();
        match &node.op {
            Op::Input => gp.input.push(value_info(&out_name(0), &node.outputs[0].fact)),
            Op::Const(t) => {
                let bytes = t.bytes();
                let tp = match data_file.as_mut() {
                    Some(file) if bytes.len() >= 1024 => {
                        let offset = data_len;
                        // Each tensor starts 64-byte aligned so it can be mapped as-is.
                        let padded = bytes.len().div_ceil(64) * 64;
                        file.write_all(bytes).map_err(io)?;
                        file.write_all(&vec![0u8; padded - bytes.len()]).map_err(io)?;
                        data_len += padded;
                        let mut tp = tensor_proto(&out_name(0), t, false);
                        tp.data_location = proto::DATA_LOCATION_EXTERNAL;
                        tp.external_data = vec![
                            kv("location", &data_file_name),
                            kv("offset", &offset.to_string()),
                            kv("length", &bytes.len().to_string()),
                        ];
                        tp
                    }
                    _ => tensor_proto(&out_name(0), t, true),
                };
                gp.initializer.push(tp);
            }
            Op::Onnx(o) => {
                let entry = opsets.entry(o.domain.clone()).or_insert(o.opset);
                *entry = (*entry).max(o.opset);
                let inputs = node
                    .inputs()
                    .iter()
                    .map(|i| i.and_then(|o| names.get(&o).cloned()).unwrap_or_default())
                    .collect();
                let outputs = (0..node.outputs.len())
                    .map(|s| {
                        let used = !graph.consumers(Outlet::new(id, s)).is_empty()
                            || graph.is_graph_output(Outlet::new(id, s))
                            || !node.outputs[s].name.is_empty();
                        if used { out_name(s) } else { String::new() }
                    })
                    .collect();
                let mut attribute = Vec::new();
                for (k, a) in &o.attrs {
                    attribute.push(attr_proto(k, a));
                }
                // onnxruntime rejects duplicate node names; passes may create some.
                let mut node_name = node.name.clone();
                let mut k = 1;
                while !node_names.insert(node_name.clone()) {
                    k += 1;
                    node_name = format!("{}_{k}", node.name);
                }
                gp.node.push(proto::NodeProto {
                    input: inputs,
                    output: outputs,
                    name: node_name,
                    op_type: o.op_type.clone(),
                    domain: o.domain.clone(),
                    attribute,
                    ..Default::default()
                });
            }
            other => {
                return Err(invalid(format!(
                    "node `{}` is a raised {} op: lower it to ONNX ops before export",
                    node.name,
                    other.name()
                )))
            }
        }
    }

    // Graph outputs: an Identity where the output name differs from the value's name.
    for go in &graph.outputs {
        let value = names.get(&go.outlet).cloned().unwrap_or_default();
        let fact = graph.fact(go.outlet).map_err(|e| invalid(e.to_string()))?;
        if value != go.name {
            gp.node.push(proto::NodeProto {
                input: vec![value],
                output: vec![go.name.clone()],
                name: format!("jetc_output_{}", go.name),
                op_type: "Identity".into(),
                ..Default::default()
            });
        }
        gp.output.push(value_info(&go.name, fact));
    }

    let default = opsets.entry(String::new()).or_insert(17);
    if let Some(min) = opts.min_opset {
        *default = (*default).max(min);
    }
    let ir_version = graph.meta.get("ir_version").and_then(|v| v.parse().ok()).unwrap_or(10);
    let model = proto::ModelProto {
        ir_version,
        opset_import: opsets
            .into_iter()
            .map(|(domain, version)| proto::OperatorSetIdProto { domain, version })
            .collect(),
        producer_name: "jetc".into(),
        producer_version: env!("CARGO_PKG_VERSION").into(),
        functions: crate::functions::definitions_for(gp.node.iter().map(|n| (n.domain.as_str(), n.op_type.as_str()))),
        graph: Some(gp),
        ..Default::default()
    };
    if let Some(mut file) = data_file {
        file.flush().map_err(io)?;
    }
    let bytes = model.encode_to_vec();
    let mut f = std::fs::File::create(path).map_err(io)?;
    f.write_all(&bytes).map_err(io)?;
    Ok(())
}

fn kv(key: &str, value: &str) -> proto::StringStringEntryProto {
    proto::StringStringEntryProto { key: key.into(), value: value.into() }
}

fn tensor_proto(name: &str, t: &Tensor, with_data: bool) -> proto::TensorProto {
    proto::TensorProto {
        name: name.into(),
        dims: t.shape().iter().map(|&d| d as i64).collect(),
        data_type: t.dtype().to_onnx(),
        raw_data: if with_data { t.bytes().to_vec() } else { Vec::new() },
        ..Default::default()
    }
}

fn value_info(name: &str, fact: &Fact) -> proto::ValueInfoProto {
    use proto::tensor_shape_proto::{dimension::Value as DV, Dimension};
    let shape = fact.shape.as_ref().map(|dims| proto::TensorShapeProto {
        dim: dims
            .iter()
            .map(|d: &Dim| Dimension {
                value: Some(match d.as_known() {
                    Some(v) => DV::DimValue(v),
                    None => DV::DimParam(d.to_string()),
                }),
                denotation: String::new(),
            })
            .collect(),
    });
    proto::ValueInfoProto {
        name: name.into(),
        r#type: Some(proto::TypeProto {
            value: Some(proto::type_proto::Value::TensorType(proto::type_proto::Tensor {
                elem_type: fact.dtype.to_onnx(),
                shape,
            })),
            denotation: String::new(),
        }),
        ..Default::default()
    }
}

fn attr_proto(name: &str, a: &Attr) -> proto::AttributeProto {
    let mut p = proto::AttributeProto { name: name.into(), ..Default::default() };
    match a {
        Attr::Int(v) => {
            p.r#type = at::INT;
            p.i = *v;
        }
        Attr::Float(v) => {
            p.r#type = at::FLOAT;
            p.f = *v;
        }
        Attr::String(v) => {
            p.r#type = at::STRING;
            p.s = v.as_bytes().to_vec();
        }
        Attr::Ints(v) => {
            p.r#type = at::INTS;
            p.ints = v.clone();
        }
        Attr::Floats(v) => {
            p.r#type = at::FLOATS;
            p.floats = v.clone();
        }
        Attr::Strings(v) => {
            p.r#type = at::STRINGS;
            p.strings = v.iter().map(|s| s.as_bytes().to_vec()).collect();
        }
        Attr::Tensor(t) => {
            p.r#type = at::TENSOR;
            p.t = Some(tensor_proto("", t, true));
        }
    }
    p
}
