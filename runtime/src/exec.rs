//! The executor: runs a graph on named inputs in topological order, freeing each value after
//! its last use. Constants are converted to run-time values once per [`Session`] and reused
//! across runs (token-by-token generation runs the same session many times).
//!
//! Training binds parameters per run instead ([`Params`]): a bound value replaces a constant
//! for that run only, so an optimizer updates weights without rebuilding the session.
//! Supernet switches are chosen per run, by position or by the alternative's name.
use std::collections::{BTreeMap, HashMap};
use std::sync::OnceLock;

use jetc_ir::{Dim, Graph, NodeId, Op, Outlet};

use crate::error::{Result, RuntimeError};
use crate::onnx_ops;
use crate::value::{Data, Value};

/// Values bound to constant nodes (weights) for one run, by node id.
pub type Params = HashMap<NodeId, Value>;

/// What a partial run does differently from a full one: `overrides` give values of
/// intermediate results (their nodes are not run for them, nor anything only they need),
/// `skip_outputs` names graph outputs not wanted, and `capture` lists intermediate values
/// to return. A model's layers past a boundary run from the boundary's hidden states this
/// way, and a full run records those hidden states.
#[derive(Clone, Debug, Default)]
pub struct Partial {
    pub overrides: HashMap<Outlet, Value>,
    pub skip_outputs: std::collections::HashSet<String>,
    pub capture: Vec<Outlet>,
}

pub struct Session<'g> {
    graph: &'g Graph,
    order: Vec<NodeId>,
    /// For each value, the index in `order` of its last consumer.
    last_use: HashMap<Outlet, usize>,
    consts: HashMap<NodeId, OnceLock<Value>>,
    /// Supernet switches in topological order (layer order).
    switches: Vec<NodeId>,
    /// Peak bytes of the values alive at once during the last run (inputs and intermediates;
    /// constants and bound parameters not counted).
    peak_bytes: std::sync::atomic::AtomicUsize,
}

/// Bytes a run-time value holds (floats as f32, integers as i64).
fn value_bytes(v: &Value) -> usize {
    v.len()
        * match v.data {
            Data::F(_) => 4,
            Data::I(_) => 8,
            Data::B(_) => 1,
            Data::Q(_) => 0,
        }
        + v.stored().map_or(0, |s| s.tensor().held_bytes())
}

/// Whether an op's kernel reads weights in their stored precision (the projections of
/// attention and the MLP, embeddings, and a `MatMul` or `Gather` on a weight). Every other
/// kernel gets the f32 values of a stored weight.
fn reads_stored(op: &Op) -> bool {
    match op {
        Op::Attention(_) | Op::SwiGlu | Op::Embedding => true,
        Op::Onnx(o) => o.domain.is_empty() && matches!(o.op_type.as_str(), "MatMul" | "Gather"),
        _ => false,
    }
}

impl<'g> Session<'g> {
    /// Prepares a graph for execution; fails on the first op without a kernel.
    pub fn new(graph: &'g Graph) -> Result<Session<'g>> {
        check_supported(graph)?;
        let order = graph.topo_order()?;
        let mut last_use = HashMap::new();
        let mut consts = HashMap::new();
        let mut switches = Vec::new();
        for (i, &id) in order.iter().enumerate() {
            let node = graph.node(id)?;
            if matches!(node.op, Op::Const(_)) {
                consts.insert(id, OnceLock::new());
            }
            if matches!(node.op, Op::Switch { .. }) {
                switches.push(id);
            }
            for o in node.inputs().iter().flatten() {
                last_use.insert(*o, i);
            }
        }
        for go in &graph.outputs {
            last_use.insert(go.outlet, usize::MAX);
        }
        Ok(Session { graph, order, last_use, consts, switches, peak_bytes: std::sync::atomic::AtomicUsize::new(0) })
    }

    /// Runs the graph. Inputs are matched by name; outputs come back under the graph's output
    /// names, in the graph's order. Supernet switches take their first alternative.
    pub fn run(&self, inputs: HashMap<String, Value>) -> Result<Vec<(String, Value)>> {
        self.run_with_choices(inputs, &[])
    }

    /// Runs with `choices[i]` selecting the alternative of the i-th `Switch` (in topological
    /// order; missing entries take 0). Only the nodes the chosen path needs are evaluated.
    pub fn run_with_choices(&self, inputs: HashMap<String, Value>, choices: &[usize]) -> Result<Vec<(String, Value)>> {
        self.run_with(inputs, &Params::new(), choices)
    }

    /// Peak bytes of the values alive at once during the last run: what the executor's
    /// liveness (each value freed after its last use, forward values after their last
    /// backward use) kept in memory, constants and bound parameters aside.
    pub fn last_peak_bytes(&self) -> usize {
        self.peak_bytes.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Bytes of weights kept in a stored precision ([`Data::Q`]) that some kernel needed as
    /// f32, so that the session made and kept an f32 copy of them: 0 when every reader of
    /// such weights reads their blocks.
    pub fn dense_weight_bytes(&self) -> usize {
        self.consts
            .values()
            .filter_map(|cell| cell.get()?.stored())
            .filter(|s| s.is_dense())
            .map(|s| 4 * s.tensor().numel())
            .sum()
    }

    /// Bytes of the weights (float constants) as the session holds them (stored blocks, or
    /// f32), counting only those converted so far; a stored matrix that two weights share (a tied embedding and
    /// LM head) counts once.
    pub fn weight_bytes(&self) -> usize {
        self.held_weight_bytes(|_| true)
    }

    /// Bytes of the weights a step reads whole: every converted weight but the tables that
    /// are only gathered from (an embedding reads the rows of its ids), shared blocks once.
    /// With the caches, what a decode step must at least move.
    pub fn streamed_weight_bytes(&self) -> usize {
        let mut gathered_only: std::collections::HashSet<NodeId> = self.consts.keys().copied().collect();
        for id in &self.order {
            let Ok(node) = self.graph.node(*id) else { continue };
            let gathers = matches!(&node.op, Op::Embedding) || matches!(&node.op, Op::Onnx(o) if o.op_type == "Gather");
            for (slot, o) in node.inputs().iter().enumerate() {
                if let Some(o) = o {
                    if !(gathers && slot == 0) {
                        gathered_only.remove(&o.node);
                    }
                }
            }
        }
        self.held_weight_bytes(|id| !gathered_only.contains(&id))
    }

    /// Bytes of the float constants (weights; not shapes, indices or masks) that `keep`
    /// selects, as held.
    fn held_weight_bytes(&self, keep: impl Fn(NodeId) -> bool) -> usize {
        let mut seen = std::collections::HashSet::new();
        self.consts
            .iter()
            .filter(|(id, _)| keep(**id))
            .filter_map(|(_, cell)| cell.get())
            .filter(|v| matches!(v.data, Data::F(_) | Data::Q(_)))
            .filter(|v| match v.stored() {
                Some(s) => seen.insert((s.stored().bytes().as_ptr() as usize, s.stored().bytes().len())),
                None => true,
            })
            .map(value_bytes)
            .sum()
    }

    /// The supernet switches in the order `choices` indexes them: node name and the names of
    /// its alternatives.
    pub fn switches(&self) -> Result<Vec<(String, Vec<String>)>> {
        self.switches
            .iter()
            .map(|&id| {
                let node = self.graph.node(id)?;
                match &node.op {
                    Op::Switch { choices } => Ok((node.name.clone(), choices.clone())),
                    _ => Ok((node.name.clone(), Vec::new())),
                }
            })
            .collect()
    }

    /// Switch positions for alternative names, one name per switch in layer order (`None`
    /// keeps the first alternative). An unknown name is an error listing the switch's choices.
    pub fn choice_indices(&self, names: &[Option<&str>]) -> Result<Vec<usize>> {
        let switches = self.switches()?;
        if names.len() > switches.len() {
            return Err(RuntimeError::Input {
                name: "choices".into(),
                msg: format!("{} choices given, the graph has {} switches", names.len(), switches.len()),
            });
        }
        let mut out = Vec::with_capacity(names.len());
        for ((node, choices), name) in switches.iter().zip(names) {
            let Some(name) = name else {
                out.push(0);
                continue;
            };
            let i = choices.iter().position(|c| c == name).ok_or_else(|| {
                RuntimeError::node(node, "Switch", format!("no alternative `{name}` (it has: {})", choices.join(", ")))
            })?;
            out.push(i);
        }
        Ok(out)
    }

    /// Runs with alternatives chosen by name (see [`Session::choice_indices`]).
    pub fn run_with_named_choices(&self, inputs: HashMap<String, Value>, names: &[Option<&str>]) -> Result<Vec<(String, Value)>> {
        let choices = self.choice_indices(names)?;
        self.run_with(inputs, &Params::new(), &choices)
    }

    /// Runs with `params` bound in place of the constants of those nodes (for this run only)
    /// and switches chosen by position. A bound value must have its constant's shape.
    pub fn run_with(&self, inputs: HashMap<String, Value>, params: &Params, choices: &[usize]) -> Result<Vec<(String, Value)>> {
        Ok(self.run_inner(inputs, params, choices, &Partial::default())?.0)
    }

    /// A partial run (see [`Partial`]): the overridden values stand in for what their nodes
    /// would compute, so only what the wanted outputs need beyond them runs; the skipped
    /// outputs are left out of the result; the captured values come back beside it, in order.
    pub fn run_partial(&self, inputs: HashMap<String, Value>, partial: &Partial) -> Result<(Vec<(String, Value)>, Vec<Value>)> {
        self.run_inner(inputs, &Params::new(), &[], partial)
    }

    fn run_inner(
        &self,
        mut inputs: HashMap<String, Value>,
        params: &Params,
        choices: &[usize],
        partial: &Partial,
    ) -> Result<(Vec<(String, Value)>, Vec<Value>)> {
        check_inputs(self.graph, &inputs)?;
        self.check_params(params)?;
        let needed = self.needed(choices, partial)?;
        let mut captured: Vec<Option<Value>> = vec![None; partial.capture.len()];
        let mut profile = std::env::var_os("JETC_PROFILE").map(|_| BTreeMap::<String, (usize, f64)>::new());
        let mut env: HashMap<Outlet, Value> = HashMap::new();
        let (mut live, mut peak) = (0usize, 0usize);
        for &id in &self.graph.inputs {
            let name = self.graph.value_name(Outlet::new(id, 0)).to_string();
            if let Some(v) = inputs.remove(&name) {
                live += value_bytes(&v);
                env.insert(Outlet::new(id, 0), v);
            }
        }
        for (o, v) in &partial.overrides {
            live += value_bytes(v);
            env.insert(*o, v.clone());
        }
        peak = peak.max(live);
        for (step, &id) in self.order.iter().enumerate() {
            let node = self.graph.node(id)?;
            if !needed.contains(&id) {
                continue;
            }
            let outputs = match &node.op {
                Op::Input | Op::Const(_) => continue,
                Op::Switch { choices: names } => {
                    let pick = self.switch_choice(id, choices)?;
                    let o = node.inputs().get(pick).copied().flatten().ok_or_else(|| {
                        RuntimeError::node(&node.name, "Switch", format!("choice {pick} is out of range ({})", names.join(", ")))
                    })?;
                    vec![self.lookup(&env, params, o)?.clone()]
                }
                op => {
                    let blocks = reads_stored(op);
                    let args: Vec<Option<&Value>> = node
                        .inputs()
                        .iter()
                        .map(|i| match i {
                            None => Ok(None),
                            Some(o) => self.lookup(&env, params, *o).map(|v| Some(if blocks { v } else { v.dense() })),
                        })
                        .collect::<Result<_>>()?;
                    let started = profile.as_ref().map(|_| std::time::Instant::now());
                    let out = crate::kernels::eval(op, &node.name, &args, node.outputs.len())?;
                    if let (Some(p), Some(t)) = (profile.as_mut(), started) {
                        let e = p.entry(op.name()).or_insert((0, 0.0));
                        e.0 += 1;
                        e.1 += t.elapsed().as_secs_f64();
                    }
                    out
                }
            };
            for (slot, v) in outputs.into_iter().enumerate().take(node.outputs.len()) {
                let o = Outlet::new(id, slot);
                if partial.overrides.contains_key(&o) {
                    continue;
                }
                if let Some(k) = partial.capture.iter().position(|c| *c == o) {
                    captured[k] = Some(v.clone());
                }
                if self.last_use.contains_key(&o) {
                    live += value_bytes(&v);
                    if let Some(old) = env.insert(o, v) {
                        live -= value_bytes(&old);
                    }
                }
            }
            peak = peak.max(live);
            for o in node.inputs().iter().flatten() {
                if self.last_use.get(o).is_some_and(|&last| last <= step) {
                    if let Some(v) = env.remove(o) {
                        live -= value_bytes(&v);
                    }
                }
            }
        }
        self.peak_bytes.store(peak, std::sync::atomic::Ordering::Relaxed);
        if let Some(p) = profile {
            print_profile(&p);
        }
        let mut out = Vec::with_capacity(self.graph.outputs.len());
        let wanted: Vec<_> = self.graph.outputs.iter().filter(|go| !partial.skip_outputs.contains(&go.name)).collect();
        for (i, go) in wanted.iter().enumerate() {
            // A value read only here is moved out, not copied (the logits of a prefill are
            // hundreds of MB); one that a later output or capture reads again is cloned.
            let read_again = wanted[i + 1..].iter().any(|g| g.outlet == go.outlet)
                || partial.capture.iter().zip(&captured).any(|(c, v)| *c == go.outlet && v.is_none());
            let v = match (read_again, env.remove(&go.outlet)) {
                (false, Some(v)) => v,
                (true, Some(v)) => {
                    let copy = v.clone();
                    env.insert(go.outlet, v);
                    copy
                }
                (_, None) => self.lookup(&env, params, go.outlet)?.clone(),
            };
            out.push((go.name.clone(), v));
        }
        let mut caught = Vec::with_capacity(captured.len());
        for (v, o) in captured.into_iter().zip(&partial.capture) {
            let v = match v {
                Some(v) => v,
                None => self.lookup(&env, params, *o)?.clone(),
            };
            caught.push(v);
        }
        Ok((out, caught))
    }

    /// The alternative index for Switch `id`.
    fn switch_choice(&self, id: NodeId, choices: &[usize]) -> Result<usize> {
        let index = self.switches.iter().position(|&s| s == id).unwrap_or(0);
        Ok(choices.get(index).copied().unwrap_or(0))
    }

    /// Nodes the wanted outputs (and the captured values) depend on when each Switch follows
    /// only its chosen input, stopping at overridden values.
    fn needed(&self, choices: &[usize], partial: &Partial) -> Result<std::collections::HashSet<NodeId>> {
        let mut seen = std::collections::HashSet::new();
        let live = |o: &Outlet| !partial.overrides.contains_key(o);
        let mut stack: Vec<NodeId> = self
            .graph
            .outputs
            .iter()
            .filter(|o| !partial.skip_outputs.contains(&o.name))
            .map(|o| o.outlet)
            .chain(partial.capture.iter().copied())
            .filter(|o| live(o))
            .map(|o| o.node)
            .collect();
        while let Some(id) = stack.pop() {
            if !seen.insert(id) {
                continue;
            }
            let node = self.graph.node(id)?;
            if matches!(node.op, Op::Switch { .. }) {
                let pick = self.switch_choice(id, choices)?;
                stack.extend(node.inputs().get(pick).copied().flatten().filter(|o| live(o)).map(|o| o.node));
            } else {
                stack.extend(node.inputs().iter().flatten().filter(|o| live(o)).map(|o| o.node));
            }
        }
        Ok(seen)
    }

    /// Bound parameters must name constants and keep their shapes.
    fn check_params(&self, params: &Params) -> Result<()> {
        for (&id, v) in params {
            let node = self.graph.node(id)?;
            let Op::Const(t) = &node.op else {
                return Err(RuntimeError::node(&node.name, &node.op.name(), "a parameter can only be bound to a constant (weight) node"));
            };
            if t.shape() != v.shape() {
                return Err(RuntimeError::node(
                    &node.name,
                    "Const",
                    format!("bound parameter has shape {:?}, the weight {:?}", v.shape(), t.shape()),
                ));
            }
        }
        Ok(())
    }

    fn lookup<'a>(&'a self, env: &'a HashMap<Outlet, Value>, params: &'a Params, o: Outlet) -> Result<&'a Value> {
        if let Some(v) = env.get(&o) {
            return Ok(v);
        }
        if let Some(v) = params.get(&o.node) {
            return Ok(v);
        }
        if let Some(cell) = self.consts.get(&o.node) {
            if let Op::Const(t) = &self.graph.node(o.node)?.op {
                return Ok(cell.get_or_init(|| Value::from_tensor(t)));
            }
        }
        let name = self.graph.node(o.node).map(|n| n.name.clone()).unwrap_or_default();
        Err(RuntimeError::node(&name, "?", format!("output {} was not computed", o.slot)))
    }
}

/// With `JETC_PROFILE` set, each run prints time per op type to stderr, slowest first.
fn print_profile(p: &BTreeMap<String, (usize, f64)>) {
    let total: f64 = p.values().map(|v| v.1).sum();
    let mut rows: Vec<_> = p.iter().collect();
    rows.sort_by(|a, b| b.1 .1.total_cmp(&a.1 .1));
    eprintln!("{:<28} {:>6} {:>10} {:>6}", "op", "calls", "ms", "%");
    for (name, (calls, secs)) in rows {
        eprintln!("{name:<28} {calls:>6} {:>10.2} {:>6.1}", secs * 1e3, 100.0 * secs / total.max(1e-12));
    }
}

/// Fails with the op type, node name and opset of the first node that has no kernel.
pub fn check_supported(graph: &Graph) -> Result<()> {
    let order = graph.topo_order()?;
    for id in order {
        let node = graph.node(id)?;
        if let Op::Onnx(o) = &node.op {
            if !onnx_ops::is_supported(o) {
                return Err(RuntimeError::Unsupported {
                    op: o.qualified_name(),
                    node: node.name.clone(),
                    opset: o.opset,
                });
            }
        }
    }
    Ok(())
}

/// Checks names, dtypes and shapes of the given inputs against the graph's declarations,
/// binding each symbol to one value across all inputs.
pub fn check_inputs(graph: &Graph, inputs: &HashMap<String, Value>) -> Result<()> {
    let expected: Vec<String> =
        graph.inputs.iter().map(|&id| graph.value_name(Outlet::new(id, 0)).to_string()).collect();
    for name in inputs.keys() {
        if !expected.contains(name) {
            return Err(RuntimeError::Input {
                name: name.clone(),
                msg: format!("the model has no such input (it has: {})", expected.join(", ")),
            });
        }
    }
    let mut bound: BTreeMap<String, (i64, String)> = BTreeMap::new();
    for &id in &graph.inputs {
        let name = graph.value_name(Outlet::new(id, 0)).to_string();
        let fact = graph.fact(Outlet::new(id, 0))?;
        let v = inputs.get(&name).ok_or_else(|| RuntimeError::Input {
            name: name.clone(),
            msg: format!("missing (the model needs: {})", expected.join(", ")),
        })?;
        let kind_ok = match &v.dense().data {
            Data::F(_) => fact.dtype.is_float(),
            Data::I(_) => fact.dtype.is_int(),
            Data::B(_) => fact.dtype == jetc_ir::DType::Bool,
            Data::Q(_) => fact.dtype.is_float(),
        };
        if !kind_ok {
            return Err(RuntimeError::Input {
                name,
                msg: format!("given {} data, the model declares {}", v.dtype, fact.dtype),
            });
        }
        let Some(shape) = &fact.shape else { continue };
        let got = v.shape();
        let mismatch = || RuntimeError::Input {
            name: name.clone(),
            msg: format!("shape {got:?} does not fit the declared {fact}"),
        };
        if shape.len() != got.len() {
            return Err(mismatch());
        }
        for (d, &g) in shape.iter().zip(got) {
            bind_dim(d, g as i64, &name, &mut bound).map_err(|m| {
                if m.is_empty() { mismatch() } else { RuntimeError::Input { name: name.clone(), msg: m } }
            })?;
        }
    }
    Ok(())
}

fn bind_dim(d: &Dim, got: i64, input: &str, bound: &mut BTreeMap<String, (i64, String)>) -> std::result::Result<(), String> {
    if let Some(k) = d.as_known() {
        return if k == got { Ok(()) } else { Err(String::new()) };
    }
    let syms = d.symbols();
    if syms.len() != 1 || *d != Dim::sym(&syms[0]) {
        return Ok(()); // an expression such as past+seq: checked by the kernels
    }
    let s = syms[0].to_string();
    match bound.get(&s) {
        Some((v, first)) if *v != got => Err(format!(
            "dimension `{s}` is {got} here but {v} in input `{first}`"
        )),
        Some(_) => Ok(()),
        None => {
            bound.insert(s, (got, input.to_string()));
            Ok(())
        }
    }
}

#[cfg(test)]
mod tests {
    use jetc_ir::{DType, Fact, OnnxOp, OutputInfo};

    use super::*;

    #[test]
    fn an_unknown_contrib_op_is_named_with_its_domain_and_node() {
        let mut g = Graph::new();
        let x = g.add_input("x", Fact::known(DType::F32, &[2])).unwrap_or_else(|e| panic!("{e}"));
        let mut op = OnnxOp::new("FancyNorm", 1);
        op.domain = "com.microsoft".into();
        let info = OutputInfo { name: String::new(), fact: Fact::known(DType::F32, &[2]) };
        let n = g.add_node("my_norm", Op::Onnx(op), vec![Some(Outlet::new(x, 0))], vec![info]).unwrap_or_else(|e| panic!("{e}"));
        g.add_output("y", Outlet::new(n, 0)).unwrap_or_else(|e| panic!("{e}"));
        let msg = check_supported(&g).err().map(|e| e.to_string()).unwrap_or_default();
        assert!(msg.contains("com.microsoft::FancyNorm") && msg.contains("my_norm") && msg.contains("opset 1"), "{msg}");
        assert!(Session::new(&g).is_err(), "a session over an unknown op must not build");
    }
}
