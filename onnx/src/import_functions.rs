//! Inlining of model-local functions (`ModelProto.functions`), which some exporters emit
//! for module boundaries. Each call is replaced by the function body with its values renamed
//! under the call node's name, and attribute references resolved from the call site (or the
//! function's defaults).
use std::collections::HashMap;

use crate::proto::{AttributeProto, FunctionProto, NodeProto};

const MAX_DEPTH: usize = 16;

pub fn inline_functions(nodes: Vec<NodeProto>, functions: &[FunctionProto]) -> Result<Vec<NodeProto>, String> {
    let table: HashMap<(&str, &str), &FunctionProto> =
        functions.iter().map(|f| ((f.domain.as_str(), f.name.as_str()), f)).collect();
    let mut out = Vec::new();
    for n in nodes {
        expand(n, &table, 0, &mut out)?;
    }
    Ok(out)
}

fn expand(
    call: NodeProto,
    table: &HashMap<(&str, &str), &FunctionProto>,
    depth: usize,
    out: &mut Vec<NodeProto>,
) -> Result<(), String> {
    let native = crate::functions::is_native(&call.domain, &call.op_type);
    let Some(f) = table.get(&(call.domain.as_str(), call.op_type.as_str())).filter(|_| !native) else {
        out.push(call);
        return Ok(());
    };
    if depth > MAX_DEPTH {
        return Err(format!("function `{}` nests deeper than {MAX_DEPTH} calls (recursive?)", f.name));
    }
    let prefix = if call.name.is_empty() { format!("{}_{}", f.name, out.len()) } else { call.name.clone() };
    let mut rename: HashMap<String, String> = HashMap::new();
    for (formal, actual) in f.input.iter().zip(call.input.iter()) {
        rename.insert(formal.clone(), actual.clone());
    }
    for (formal, actual) in f.output.iter().zip(call.output.iter()) {
        rename.insert(formal.clone(), actual.clone());
    }
    let mut attrs: HashMap<&str, &AttributeProto> = f.attribute_proto.iter().map(|a| (a.name.as_str(), a)).collect();
    for a in &call.attribute {
        attrs.insert(a.name.as_str(), a);
    }
    for body in &f.node {
        let mut n = body.clone();
        let map_name = |v: &String| -> String {
            if v.is_empty() {
                return String::new();
            }
            rename.get(v).cloned().unwrap_or_else(|| format!("{prefix}/{v}"))
        };
        n.input = n.input.iter().map(map_name).collect();
        n.output = n.output.iter().map(map_name).collect();
        n.name = format!("{prefix}/{}", n.name);
        let mut resolved = Vec::new();
        for a in n.attribute {
            if a.ref_attr_name.is_empty() {
                resolved.push(a);
            } else if let Some(actual) = attrs.get(a.ref_attr_name.as_str()) {
                let mut a2 = (*actual).clone();
                a2.name = a.name.clone();
                resolved.push(a2);
            }
        }
        n.attribute = resolved;
        if n.metadata_props.is_empty() {
            n.metadata_props = call.metadata_props.clone();
        }
        expand(n, table, depth + 1, out)?;
    }
    Ok(())
}
