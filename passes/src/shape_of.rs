//! Shape-of elimination: `Shape(v)` of an intermediate value whose shape is known in terms of
//! the graph inputs' dims is rewritten to compute that shape from the inputs directly
//! (`Shape(input)` slices, `Add`/`Mul` for expressions such as `past + seq`).
//!
//! Exporters (the legacy TorchScript one, optimum) read shapes off intermediate values, e.g.
//! the causal mask is sliced to `Shape(key_with_cache)[2]`. Once the attention that produces
//! that key is replaced by one op, such a read would make the mask depend on the attention's
//! own output: a cycle. Reading shapes from inputs removes the dependency, and lets the old
//! subgraph die.
use std::collections::BTreeMap;

use jetc_ir::{Attr, DType, Dim, Fact, Graph, NodeId, OnnxOp, Op, Outlet, OutputInfo, Tensor};

use crate::error::{PassError, Result};
use crate::pass::Pass;
use crate::pattern::default_opset;

pub struct ShapeOf;

impl Pass for ShapeOf {
    fn name(&self) -> &'static str {
        "shape-of"
    }

    fn run(&self, g: &mut Graph) -> Result<bool> {
        let err = |source| PassError::Ir { pass: "shape-of".into(), source };
        let sources = symbol_sources(g);
        let mut changed = false;
        for id in g.topo_order().map_err(err)? {
            let node = g.node(id).map_err(err)?;
            let Op::Onnx(op) = &node.op else { continue };
            if op.op_type != "Shape" || !op.domain.is_empty() {
                continue;
            }
            let Some(src) = node.inputs().first().copied().flatten() else { continue };
            if matches!(g.node(src.node).map(|n| &n.op), Ok(Op::Input | Op::Const(_))) {
                continue;
            }
            let Some(dims) = g.fact(src).map_err(err)?.shape.clone() else { continue };
            let r = dims.len() as i64;
            let clamp = |v: i64| (if v < 0 { v + r } else { v }).clamp(0, r) as usize;
            let (start, end) = (clamp(op.int_or("start", 0)), clamp(op.int_or("end", r)));
            let dims = &dims[start..end.max(start)];
            if !dims.iter().all(|d| d.symbols().iter().all(|s| sources.contains_key(&**s))) {
                continue;
            }
            let name = node.name.clone();
            let new = materialize(g, &name, dims, &sources).map_err(err)?;
            g.replace_uses(Outlet::new(id, 0), new).map_err(err)?;
            changed = true;
        }
        g.prune_dead().map_err(err)?;
        Ok(changed)
    }
}

/// For each symbol that is a whole dim of a graph input: (input node, axis), first seen.
fn symbol_sources(g: &Graph) -> BTreeMap<String, (NodeId, usize)> {
    let mut out = BTreeMap::new();
    for &id in &g.inputs {
        let Ok(f) = g.fact(Outlet::new(id, 0)) else { continue };
        let Some(shape) = &f.shape else { continue };
        for (axis, d) in shape.iter().enumerate() {
            let syms = d.symbols();
            if syms.len() == 1 && *d == Dim::sym(&syms[0]) {
                out.entry(syms[0].to_string()).or_insert((id, axis));
            }
        }
    }
    out
}

/// Emits nodes computing the i64 vector `dims` from graph-input shapes.
fn materialize(g: &mut Graph, name: &str, dims: &[Dim], sources: &BTreeMap<String, (NodeId, usize)>) -> jetc_ir::Result<Outlet> {
    let opset = default_opset(g);
    let v1 = |g: &Graph, o: Outlet| g.fact(o).cloned();
    let add = |g: &mut Graph, suffix: String, op: OnnxOp, inputs: Vec<Outlet>, fact: Fact| -> jetc_ir::Result<Outlet> {
        let id = g.add_node(
            format!("{name}/{suffix}"),
            Op::Onnx(op),
            inputs.into_iter().map(Some).collect(),
            vec![OutputInfo { name: String::new(), fact }],
        )?;
        Ok(Outlet::new(id, 0))
    };
    let mut parts = Vec::with_capacity(dims.len());
    for (i, d) in dims.iter().enumerate() {
        let part = if let Some(k) = d.as_known() {
            g.add_const(&format!("{name}/dim{i}"), Tensor::from_i64(vec![1], &[k])?)?
        } else {
            let mut total: Option<Outlet> = None;
            for (j, (monomial, coeff)) in d.terms().into_iter().enumerate() {
                let mut term = g.add_const(&format!("{name}/dim{i}_c{j}"), Tensor::from_i64(vec![1], &[coeff])?)?;
                for (k, s) in monomial.iter().enumerate() {
                    let (input, axis) = sources[&**s];
                    let shape_op = OnnxOp::new("Shape", opset)
                        .with_attr("start", Attr::Int(axis as i64))
                        .with_attr("end", Attr::Int(axis as i64 + 1));
                    let f = Fact::new(DType::I64, vec![Dim::known(1)]).with_value(vec![Dim::sym(s)]);
                    let sym = add(g, format!("dim{i}_t{j}_s{k}"), shape_op, vec![Outlet::new(input, 0)], f)?;
                    let f = v1(g, term)?;
                    term = add(g, format!("dim{i}_t{j}_m{k}"), OnnxOp::new("Mul", opset), vec![term, sym], f)?;
                }
                total = Some(match total {
                    None => term,
                    Some(t) => {
                        let f = v1(g, t)?;
                        add(g, format!("dim{i}_sum{j}"), OnnxOp::new("Add", opset), vec![t, term], f)?
                    }
                });
            }
            total.ok_or_else(|| jetc_ir::IrError::Other(format!("{name}: empty dim")))?
        };
        parts.push(part);
    }
    let fact = Fact::new(DType::I64, vec![Dim::known(dims.len() as i64)]).with_value(dims.to_vec());
    if parts.len() == 1 {
        return Ok(parts[0]);
    }
    add(g, "shape".into(), OnnxOp::new("Concat", opset).with_attr("axis", Attr::Int(0)), parts, fact)
}
