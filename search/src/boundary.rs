//! Layer boundaries of a model and its subnets: the residual stream entering each layer
//! (the input of the RMSNorm before its mixer), where [`jetc_eval::runner`] records and
//! reads hidden states, so subnets that share their first layers run them once.
//!
//! The boundaries are found on the raised base model (each attention layer's mixer reads
//! an RMSNorm of the residual stream) and looked up in a subnet by node: building a subnet
//! replaces mixers and leaves the residual stream's nodes as they are. A subnet where a
//! boundary's node is not the base's is refused (the cache would read the wrong values).
use std::collections::HashSet;

use jetc_eval::runner::Boundaries;
use jetc_ir::{Graph, Op, Outlet};

use crate::error::{err, Result};

/// The residual stream entering each layer of `base` (a raised model), in layer order.
pub fn layer_inputs(base: &Graph) -> Result<Vec<Outlet>> {
    let mut out = Vec::new();
    for (l, id) in jetc_passes::linearize::attention_layers(base)?.into_iter().enumerate() {
        let attn = base.node(id)?;
        let normed = attn.inputs().first().copied().flatten().ok_or_else(|| err(format!("layer {l}: attention `{}` has no input", attn.name)))?;
        let norm = base.node(normed.node)?;
        if !matches!(norm.op, Op::RmsNorm(_)) {
            return Err(err(format!(
                "layer {l}: attention `{}` reads `{}` ({}), not an RMSNorm of the residual stream; no layer boundary to cache",
                attn.name,
                norm.name,
                norm.op.name()
            )));
        }
        let x = norm.inputs().first().copied().flatten().ok_or_else(|| err(format!("layer {l}: RMSNorm `{}` has no input", norm.name)))?;
        out.push(x);
    }
    Ok(out)
}

/// Where subnet `sub` reads and records: it equals the all-linear subnet up to layer
/// `first` (its first layer on attention; the layer count when none is), so it reads the
/// hidden states entering `first` and records those entering layers 1..=first. Its cache
/// outputs computed before the read boundary (`cache_outputs` names them all) are skipped
/// when it starts from there.
pub fn plan(sub: &Graph, base: &Graph, inputs: &[Outlet], first: usize, cache_outputs: &[String]) -> Result<Boundaries> {
    let n = inputs.len();
    let last = first.min(n.saturating_sub(1));
    let mut record = Vec::new();
    for (b, &o) in inputs.iter().enumerate().take(last + 1).skip(1) {
        let (want, got) = (base.node(o.node)?, sub.node(o.node).ok());
        match got {
            Some(g) if g.name == want.name && g.op.name() == want.op.name() => record.push((b, o)),
            _ => {
                return Err(err(format!(
                    "layer {b}: the subnet's residual stream is not the base model's (node `{}` changed); run with --hidden-cache-mb 0",
                    want.name
                )))
            }
        }
    }
    let read = record.iter().copied().find(|r| r.0 == first);
    let mut skip_outputs = HashSet::new();
    if let Some((_, o)) = read {
        let mut ancestors = HashSet::new();
        let mut stack = vec![o.node];
        while let Some(id) = stack.pop() {
            if ancestors.insert(id) {
                stack.extend(sub.node(id)?.inputs().iter().flatten().map(|i| i.node));
            }
        }
        for go in &sub.outputs {
            if cache_outputs.contains(&go.name) && ancestors.contains(&go.outlet.node) {
                skip_outputs.insert(go.name.clone());
            }
        }
    }
    Ok(Boundaries { read, record, skip_outputs })
}
