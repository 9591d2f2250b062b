//! ONNX file -> IR graph.
//!
//! The graph is mirrored faithfully: one `Op::Onnx` per node with its domain, type, the opset
//! the model imports for that domain, and every attribute; `Constant` nodes and initializers
//! become `Op::Const`. Value facts come from the model's inputs, outputs and `value_info`;
//! shape inference (a pass) fills in the rest. External data is memory-mapped, never copied.
use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use jetc_ir::{Attr, DType, Dim, Fact, Graph, OnnxOp, Op, Outlet, OutputInfo, Tensor};
use prost::Message;

use crate::error::{OnnxError, Result};
use crate::proto::{self, attribute_type as at, type_proto, TensorProto};

/// The newest default-domain opset jetc imports.
pub const MAX_OPSET: i64 = 28;

/// Reads and imports an ONNX model file (external data is looked up beside it).
pub fn import_model(path: &Path) -> Result<Graph> {
    let shown = path.display().to_string();
    let file = std::fs::File::open(path).map_err(|source| OnnxError::Io { path: shown.clone(), source })?;
    // SAFETY: the map is read-only and lives as long as the decode below; jetc does not
    // modify model files, and a file truncated underneath us is the user's own race.
    let map = unsafe { memmap2::Mmap::map(&file) }.map_err(|source| OnnxError::Io { path: shown.clone(), source })?;
    let base = path.parent().map(Path::to_path_buf).unwrap_or_default();
    import_bytes(&map, &shown, &base)
}

/// Imports a serialized model; `shown` names it in errors, `base_dir` holds external data.
pub fn import_bytes(bytes: &[u8], shown: &str, base_dir: &Path) -> Result<Graph> {
    let model = proto::ModelProto::decode(bytes)
        .map_err(|e| OnnxError::Decode { path: shown.to_string(), msg: e.to_string() })?;
    Importer::new(shown, base_dir).import(model)
}

struct Importer {
    shown: String,
    base_dir: PathBuf,
    maps: HashMap<PathBuf, Arc<memmap2::Mmap>>,
    opsets: BTreeMap<String, i64>,
    unknown_dims: usize,
}

impl Importer {
    fn new(shown: &str, base_dir: &Path) -> Importer {
        Importer {
            shown: shown.to_string(),
            base_dir: base_dir.to_path_buf(),
            maps: HashMap::new(),
            opsets: BTreeMap::new(),
            unknown_dims: 0,
        }
    }

    fn invalid(&self, msg: impl Into<String>) -> OnnxError {
        OnnxError::Invalid { path: self.shown.clone(), msg: msg.into() }
    }

    fn ir(&self, source: jetc_ir::IrError) -> OnnxError {
        OnnxError::Ir { path: self.shown.clone(), source }
    }

    fn import(mut self, mut model: proto::ModelProto) -> Result<Graph> {
        if model.ir_version <= 0 {
            return Err(self.invalid("ir_version is missing: this is not an ONNX model"));
        }
        for o in &model.opset_import {
            let domain = if o.domain == "ai.onnx" { String::new() } else { o.domain.clone() };
            self.opsets.insert(domain, o.version);
        }
        let default_opset = *self
            .opsets
            .get("")
            .ok_or_else(|| self.invalid("the model imports no default-domain opset"))?;
        if !(1..=MAX_OPSET).contains(&default_opset) {
            return Err(self.invalid(format!("default-domain opset {default_opset} is outside 1..={MAX_OPSET}")));
        }
        let graph_proto = model.graph.take().ok_or_else(|| self.invalid("the model has no graph"))?;
        if graph_proto.node.is_empty() {
            return Err(self.invalid("the graph has no nodes"));
        }
        if !model.functions.is_empty() {
            // Local functions are inlined where called.
            let functions = std::mem::take(&mut model.functions);
            return self.import_graph_with_functions(graph_proto, functions, &model);
        }
        self.import_graph(graph_proto, &model)
    }

    fn import_graph_with_functions(
        mut self,
        mut graph_proto: proto::GraphProto,
        functions: Vec<proto::FunctionProto>,
        model: &proto::ModelProto,
    ) -> Result<Graph> {
        graph_proto.node = crate::import_functions::inline_functions(graph_proto.node, &functions)
            .map_err(|msg| self.invalid(msg))?;
        for f in &functions {
            for o in &f.opset_import {
                self.opsets.entry(o.domain.clone()).or_insert(o.version);
            }
        }
        self.import_graph(graph_proto, model)
    }

    fn import_graph(&mut self, gp: proto::GraphProto, model: &proto::ModelProto) -> Result<Graph> {
        let mut g = Graph::new();
        g.meta.insert("ir_version".into(), model.ir_version.to_string());
        g.meta.insert("producer".into(), format!("{} {}", model.producer_name, model.producer_version).trim().into());
        for (d, v) in &self.opsets {
            g.meta.insert(format!("opset.{}", if d.is_empty() { "ai.onnx" } else { d }), v.to_string());
        }

        let mut value_facts: HashMap<&str, Fact> = HashMap::new();
        for vi in gp.value_info.iter().chain(gp.output.iter()) {
            if let Some(f) = self.fact_of(vi)? {
                value_facts.insert(&vi.name, f);
            }
        }

        let mut values: HashMap<String, Outlet> = HashMap::new();
        for init in &gp.initializer {
            if init.name.is_empty() {
                return Err(self.invalid("an initializer has no name"));
            }
            let t = self.tensor(init)?;
            let o = g.add_const(&init.name, t).map_err(|e| self.ir(e))?;
            values.insert(init.name.clone(), o);
        }
        if !gp.sparse_initializer.is_empty() {
            return Err(self.invalid("sparse initializers are not supported"));
        }
        for vi in &gp.input {
            if values.contains_key(&vi.name) {
                continue; // an initializer that is also listed as an input (old exporters)
            }
            let fact = self
                .fact_of(vi)?
                .ok_or_else(|| self.invalid(format!("graph input `{}` has no tensor type", vi.name)))?;
            let id = g.add_input(&vi.name, fact).map_err(|e| self.ir(e))?;
            values.insert(vi.name.clone(), Outlet::new(id, 0));
        }

        for (index, node) in topo_sorted(&gp.node, &values).map_err(|m| self.invalid(m))?.into_iter().enumerate() {
            self.import_node(&mut g, node, index, &mut values, &value_facts)?;
        }

        for out in &gp.output {
            let o = *values
                .get(&out.name)
                .ok_or_else(|| self.invalid(format!("graph output `{}` is produced by no node", out.name)))?;
            g.add_output(&out.name, o).map_err(|e| self.ir(e))?;
        }
        Ok(g)
    }

    fn import_node(
        &mut self,
        g: &mut Graph,
        node: &proto::NodeProto,
        index: usize,
        values: &mut HashMap<String, Outlet>,
        value_facts: &HashMap<&str, Fact>,
    ) -> Result<()> {
        let domain = if node.domain == "ai.onnx" { String::new() } else { node.domain.clone() };
        let opset = self.opsets.get(&domain).copied().unwrap_or(1);
        let name = if node.name.is_empty() { format!("{}_{index}", node.op_type) } else { node.name.clone() };

        let mut attrs = BTreeMap::new();
        for a in &node.attribute {
            let attr = self.attr(a).map_err(|msg| {
                self.invalid(format!("node `{name}` ({}, opset {opset}): attribute `{}`: {msg}", node.op_type, a.name))
            })?;
            attrs.insert(a.name.clone(), attr);
        }

        if domain.is_empty() && node.op_type == "Constant" {
            let out_name = node.output.first().ok_or_else(|| self.invalid(format!("Constant `{name}` has no output")))?;
            let t = constant_value(&attrs).map_err(|m| self.invalid(format!("Constant `{name}`: {m}")))?;
            let o = g.add_const(out_name, t).map_err(|e| self.ir(e))?;
            values.insert(out_name.clone(), o);
            return Ok(());
        }

        let mut inputs = Vec::with_capacity(node.input.len());
        for input in &node.input {
            if input.is_empty() {
                inputs.push(None);
                continue;
            }
            let o = values.get(input).copied().ok_or_else(|| {
                self.invalid(format!("node `{name}` ({}): input `{input}` is defined nowhere", node.op_type))
            })?;
            inputs.push(Some(o));
        }
        while inputs.last() == Some(&None) {
            inputs.pop();
        }
        // Omitted trailing outputs are kept as unnamed slots so that output slot numbers match
        // the ONNX op's.
        let outputs: Vec<OutputInfo> = node
            .output
            .iter()
            .map(|o| OutputInfo {
                name: o.clone(),
                fact: value_facts.get(o.as_str()).cloned().unwrap_or_else(|| Fact::unknown_rank(DType::F32)),
            })
            .collect();
        let op = Op::Onnx(OnnxOp { domain, op_type: node.op_type.clone(), opset, attrs });
        let id = g.add_node(&name, op, inputs, outputs).map_err(|e| self.ir(e))?;
        for (slot, o) in node.output.iter().enumerate() {
            if o.is_empty() {
                continue;
            }
            if values.insert(o.clone(), Outlet::new(id, slot)).is_some() {
                return Err(self.invalid(format!("value `{o}` is defined twice (again by node `{name}`)")));
            }
        }
        Ok(())
    }

    fn fact_of(&mut self, vi: &proto::ValueInfoProto) -> Result<Option<Fact>> {
        let Some(type_proto::Value::TensorType(tt)) = vi.r#type.as_ref().and_then(|t| t.value.as_ref()) else {
            return Ok(None);
        };
        let dtype = DType::from_onnx(tt.elem_type).ok_or_else(|| {
            self.invalid(format!("value `{}` has unsupported element type {}", vi.name, tt.elem_type))
        })?;
        let Some(shape) = &tt.shape else {
            return Ok(Some(Fact::unknown_rank(dtype)));
        };
        let dims = shape
            .dim
            .iter()
            .map(|d| match &d.value {
                Some(proto::tensor_shape_proto::dimension::Value::DimValue(v)) => Dim::known(*v),
                Some(proto::tensor_shape_proto::dimension::Value::DimParam(p)) => parse_dim(p),
                None => {
                    self.unknown_dims += 1;
                    Dim::sym(&format!("unk__{}", self.unknown_dims))
                }
            })
            .collect();
        Ok(Some(Fact::new(dtype, dims)))
    }

    fn tensor(&mut self, t: &TensorProto) -> Result<Tensor> {
        let dtype = DType::from_onnx(t.data_type).ok_or_else(|| {
            self.invalid(format!("tensor `{}` has unsupported data type {}", t.name, t.data_type))
        })?;
        let mut shape = Vec::with_capacity(t.dims.len());
        for &d in &t.dims {
            shape.push(usize::try_from(d).map_err(|_| self.invalid(format!("tensor `{}` has dim {d}", t.name)))?);
        }
        if t.data_location == proto::DATA_LOCATION_EXTERNAL {
            return self.external_tensor(t, dtype, shape);
        }
        let wrap = |r: jetc_ir::Result<Tensor>| r.map_err(|e| self.invalid(format!("tensor `{}`: {e}", t.name)));
        if !t.raw_data.is_empty() {
            return wrap(Tensor::from_bytes(dtype, shape, t.raw_data.clone()));
        }
        let bytes: Vec<u8> = match dtype {
            DType::F32 => t.float_data.iter().flat_map(|v| v.to_le_bytes()).collect(),
            DType::F64 => t.double_data.iter().flat_map(|v| v.to_le_bytes()).collect(),
            DType::I64 => t.int64_data.iter().flat_map(|v| v.to_le_bytes()).collect(),
            DType::I32 => t.int32_data.iter().flat_map(|v| v.to_le_bytes()).collect(),
            // Narrow types are stored one per int32 (f16/bf16 as their bit patterns).
            DType::I16 | DType::F16 | DType::BF16 => {
                t.int32_data.iter().flat_map(|v| (*v as u16).to_le_bytes()).collect()
            }
            DType::I8 | DType::U8 | DType::Bool => t.int32_data.iter().map(|v| *v as u8).collect(),
        };
        wrap(Tensor::from_bytes(dtype, shape, bytes))
    }

    fn external_tensor(&mut self, t: &TensorProto, dtype: DType, shape: Vec<usize>) -> Result<Tensor> {
        let mut location = None;
        let mut offset = 0usize;
        let mut length = None;
        for kv in &t.external_data {
            match kv.key.as_str() {
                "location" => location = Some(kv.value.clone()),
                "offset" => offset = kv.value.parse().unwrap_or(usize::MAX),
                "length" => length = Some(kv.value.parse().unwrap_or(usize::MAX)),
                _ => {}
            }
        }
        let err = |data_path: &str, msg: String| OnnxError::ExternalData {
            path: self.shown.clone(),
            tensor: t.name.clone(),
            data_path: data_path.to_string(),
            msg,
        };
        let location = location.ok_or_else(|| err("?", "no `location` key".into()))?;
        let rel = Path::new(&location);
        if rel.is_absolute() || rel.components().any(|c| matches!(c, std::path::Component::ParentDir)) {
            return Err(err(&location, "the location must be a relative path inside the model's folder".into()));
        }
        let full = self.base_dir.join(rel);
        let map = match self.maps.get(&full) {
            Some(m) => m.clone(),
            None => {
                let file = std::fs::File::open(&full).map_err(|e| err(&full.display().to_string(), e.to_string()))?;
                // SAFETY: read-only map of a weight file that jetc never writes to.
                let map = unsafe { memmap2::Mmap::map(&file) }
                    .map_err(|e| err(&full.display().to_string(), e.to_string()))?;
                let map = Arc::new(map);
                self.maps.insert(full.clone(), map.clone());
                map
            }
        };
        let want = shape.iter().try_fold(dtype.size_bytes(), |a, &d| a.checked_mul(d)).unwrap_or(usize::MAX);
        let length = length.unwrap_or(want);
        Tensor::from_mapped(dtype, shape, map, offset, length).map_err(|e| err(&full.display().to_string(), e.to_string()))
    }

    fn attr(&mut self, a: &proto::AttributeProto) -> std::result::Result<Attr, String> {
        let text = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
        Ok(match a.r#type {
            at::FLOAT => Attr::Float(a.f),
            at::INT => Attr::Int(a.i),
            at::STRING => Attr::String(text(&a.s)),
            at::FLOATS => Attr::Floats(a.floats.clone()),
            at::INTS => Attr::Ints(a.ints.clone()),
            at::STRINGS => Attr::Strings(a.strings.iter().map(|s| text(s)).collect()),
            at::TENSOR => {
                let t = a.t.as_ref().ok_or("tensor attribute without a tensor")?;
                Attr::Tensor(self.tensor(t).map_err(|e| e.to_string())?)
            }
            at::GRAPH | at::GRAPHS => return Err("subgraph attributes (If/Loop/Scan) are not supported".into()),
            other => return Err(format!("attribute type {other} is not supported")),
        })
    }
}

/// The tensor a `Constant` node produces, from whichever `value*` attribute it has.
fn constant_value(attrs: &BTreeMap<String, Attr>) -> std::result::Result<Tensor, String> {
    let r = match (attrs.get("value"), attrs.get("value_float"), attrs.get("value_floats"), attrs.get("value_int"), attrs.get("value_ints")) {
        (Some(Attr::Tensor(t)), ..) => Ok(t.clone()),
        (_, Some(Attr::Float(v)), ..) => Ok(Tensor::scalar_f32(*v)),
        (_, _, Some(Attr::Floats(v)), ..) => Tensor::from_f32(vec![v.len()], v),
        (_, _, _, Some(Attr::Int(v)), _) => Ok(Tensor::scalar_i64(*v)),
        (_, _, _, _, Some(Attr::Ints(v))) => Tensor::from_i64(vec![v.len()], v),
        _ => return Err("no supported value attribute (value, value_float(s), value_int(s))".into()),
    };
    r.map_err(|e| e.to_string())
}

/// Parses a `dim_param`: an integer, a symbol, or a sum/product such as `past + seq`.
pub fn parse_dim(p: &str) -> Dim {
    let p = p.trim();
    if let Ok(v) = p.parse::<i64>() {
        return Dim::known(v);
    }
    let valid_symbol = |s: &str| !s.is_empty() && s.chars().all(|c| c.is_alphanumeric() || c == '_' || c == '.');
    let mut total = Dim::known(0);
    // Split into signed terms, then each term into factors.
    let mut sign = 1i64;
    let mut term = String::new();
    let mut terms: Vec<(i64, String)> = Vec::new();
    for c in p.chars() {
        match c {
            '+' | '-' => {
                terms.push((sign, std::mem::take(&mut term)));
                sign = if c == '-' { -1 } else { 1 };
            }
            ' ' => {}
            _ => term.push(c),
        }
    }
    terms.push((sign, term));
    for (i, (sign, t)) in terms.into_iter().enumerate() {
        if t.is_empty() && i == 0 {
            continue;
        }
        let mut value = Dim::known(sign);
        for f in t.split('*') {
            let factor = if let Ok(v) = f.parse::<i64>() {
                Dim::known(v)
            } else if valid_symbol(f) {
                Dim::sym(f)
            } else {
                return Dim::sym(p);
            };
            value = value.mul(&factor);
        }
        total = total.add(&value);
    }
    total
}

/// Nodes in an order where every input is defined before use. ONNX requires graphs to be
/// sorted, but not every producer complies; this keeps the file's order when it is valid.
fn topo_sorted<'a>(
    nodes: &'a [proto::NodeProto],
    known: &HashMap<String, Outlet>,
) -> std::result::Result<Vec<&'a proto::NodeProto>, String> {
    let mut defined: std::collections::HashSet<&str> = known.keys().map(|s| s.as_str()).collect();
    let mut pending: Vec<&proto::NodeProto> = nodes.iter().collect();
    let mut out = Vec::with_capacity(nodes.len());
    while !pending.is_empty() {
        let before = pending.len();
        let mut rest = Vec::new();
        for n in pending {
            if n.input.iter().all(|i| i.is_empty() || defined.contains(i.as_str())) {
                defined.extend(n.output.iter().map(|s| s.as_str()));
                out.push(n);
            } else {
                rest.push(n);
            }
        }
        if rest.len() == before {
            let n = rest[0];
            let missing = n.input.iter().find(|i| !i.is_empty() && !defined.contains(i.as_str())).cloned().unwrap_or_default();
            return Err(format!(
                "node `{}` ({}): input `{missing}` is defined nowhere (or only in a cycle)",
                n.name, n.op_type
            ));
        }
        pending = rest;
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_dim_params() {
        assert_eq!(parse_dim("12").to_string(), "12");
        assert_eq!(parse_dim("past_sequence_length + 1").to_string(), "past_sequence_length+1");
        assert_eq!(parse_dim("s1*s2").to_string(), "s1*s2");
        assert_eq!(parse_dim("batch").to_string(), "batch");
        assert_eq!(parse_dim("a + b - 2").to_string(), "a+b-2");
        // Not an expression we understand: kept whole as one symbol.
        assert_eq!(parse_dim("floor(s/2)").to_string(), "floor(s/2)");
    }
}
