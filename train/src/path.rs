//! Path distillation: the student runs one layout end to end on its own hidden states (no
//! teacher forcing), and every layer's output hidden state is matched to the teacher's.
//!
//! This is PostNAS's once-for-all training when the layout is sampled per step, and plain
//! end-to-end feature distillation of one hybrid when it is fixed. Teacher-forced (local)
//! training makes each layer good on the teacher's inputs; composed, the small errors of 27
//! layers compound, which is what this phase trains against.
//!
//! Two graphs:
//! - the **teacher graph** (forward only): the teacher with the residual stream after every
//!   layer as outputs `hidden.{l}` (and the logits when a KL term is asked for);
//! - the **path graph** of a layout: `convert`'s hybrid of that layout, with inputs
//!   `target.{l}` (the teacher's hidden states), the per-token normalized MSE of every
//!   layer's output against its target ([`crate::loss::token_normalized_mse`]: every token
//!   counts, not only the few with massive activations), optionally `kl_weight` times the cross-entropy of the student's
//!   logits against the teacher's distribution (input `teacher_probs`), and the gradients of
//!   every linear block's weights from the autodiff pass. Attention, MLPs, norms and
//!   embeddings are constants.
//!
//! Optional terms and weights: `ce_weight` times the cross-entropy of the student's logits on
//! the data's next tokens (input `labels`, the window's tokens 1..T), and with `train_attn`
//! the projections (and q/k norms) of the layout's attention and SWA layers train too.
//!
//! Weights are named as `convert` names them (`layers.{l}.{block}.*`), so one set of named
//! weights serves every layout: a block's weights do not depend on which other layers are
//! linear. The layouts a run visits bind the subset they contain.
use std::collections::HashMap;

use jetc_autodiff::{grad, Gradient};
use jetc_ir::{Attr, DType, Fact, Graph, NodeId, OnnxOp, Op, Outlet, OutputInfo, Tensor};
use jetc_models::convert::{convert, Layout};
use jetc_passes::linearize::attention_layers;
use jetc_runtime::{Params, Session, Value};
use ndarray::ArrayD;

use crate::error::{Result, TrainError};
use crate::loss::token_normalized_mse;

/// Output holding the residual stream after layer `l`.
pub fn hidden_name(l: usize) -> String {
    format!("hidden.{l}")
}

/// Input feeding the teacher's hidden state after layer `l` to the path graph.
pub fn target_name(l: usize) -> String {
    format!("target.{l}")
}

/// The teacher's next-token distribution (softmax of its logits), `[B, T, V]`.
pub const TEACHER_PROBS: &str = "teacher_probs";
/// The data's next tokens `[B, T-1, 1]` (int64) for the data cross-entropy.
pub const LABELS: &str = "labels";
/// Cross-entropy of the student's logits on the data's next tokens.
pub const DATA_CE: &str = "loss.data_ce";
/// The graph's total loss.
pub const LOSS: &str = "loss";
/// Mean normalized MSE over layers.
pub const FEATURE_LOSS: &str = "loss.features";
/// Cross-entropy of the student's logits against the teacher's distribution.
pub const CROSS_ENTROPY: &str = "loss.ce";
/// The logits output of a decoder graph.
pub const LOGITS: &str = "logits";

pub fn layer_loss_name(l: usize) -> String {
    format!("loss.{l}")
}

fn add_onnx(g: &mut Graph, name: &str, op: OnnxOp, inputs: &[Outlet]) -> Result<Outlet> {
    let info = OutputInfo { name: String::new(), fact: Fact::unknown_rank(DType::F32) };
    let id = g.add_node(name, Op::Onnx(op), inputs.iter().map(|&i| Some(i)).collect(), vec![info])?;
    Ok(Outlet::new(id, 0))
}

fn is_add(g: &Graph, id: NodeId) -> bool {
    matches!(g.node(id).map(|n| &n.op), Ok(Op::Onnx(o)) if o.op_type == "Add")
}

/// The residual stream after every attention layer, in layer order: the `Add` that takes the
/// mixer's output, then the `Add` after it that closes the MLP block (pre-norm decoders:
/// `h = x + attn(norm(x)); y = h + mlp(norm(h))`). A layer without an MLP block ends at its
/// first `Add`.
pub fn layer_outputs(g: &Graph) -> Result<Vec<Outlet>> {
    let attn = attention_layers(g)?;
    let mut outs = Vec::with_capacity(attn.len());
    for (l, &a) in attn.iter().enumerate() {
        let adds: Vec<NodeId> = g.consumers(Outlet::new(a, 0)).into_iter().map(|(n, _)| n).filter(|&n| is_add(g, n)).collect();
        let [first] = adds[..] else {
            return Err(TrainError::Other(format!(
                "layer {l}: the attention output feeds {} residual Adds, expected one (not a pre-norm decoder layer)",
                adds.len()
            )));
        };
        let h = Outlet::new(first, 0);
        let closing: Vec<NodeId> = g.consumers(h).into_iter().map(|(n, _)| n).filter(|&n| is_add(g, n)).collect();
        outs.push(match closing[..] {
            [second] => Outlet::new(second, 0),
            _ => h,
        });
    }
    Ok(outs)
}

/// The teacher graph: outputs `hidden.{l}` for every layer (when `with_hidden`), plus
/// `logits` when asked.
pub fn teacher_graph(teacher: &Graph, with_hidden: bool, with_logits: bool) -> Result<Graph> {
    let mut g = teacher.clone();
    let hidden = layer_outputs(&g)?;
    let logits = g.outputs.iter().find(|o| o.name == LOGITS).map(|o| o.outlet);
    g.outputs.clear();
    for (l, &h) in hidden.iter().enumerate().filter(|_| with_hidden) {
        g.add_output(&hidden_name(l), h)?;
    }
    if with_logits {
        let lo = logits.ok_or_else(|| TrainError::Other("the model has no `logits` output for the KL term".into()))?;
        g.add_output(LOGITS, lo)?;
    }
    g.prune_dead()?;
    Ok(g)
}

/// What the path loss holds and what trains.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct PathOptions {
    /// The per-layer hidden-state terms (off: knowledge distillation on the logits alone).
    pub features: bool,
    /// Weight of the cross-entropy against the teacher's distribution (0: none).
    pub kl_weight: f32,
    /// The MLPs train too (the SwiGLU weights of every layer), not only the linear blocks.
    pub train_mlp: bool,
    /// The attention and SWA layers' projections and q/k norms train too.
    pub train_attn: bool,
    /// Weight of the cross-entropy on the data's next tokens (0: none).
    pub ce_weight: f32,
}

impl Default for PathOptions {
    fn default() -> PathOptions {
        PathOptions { features: true, kl_weight: 0.0, train_mlp: false, train_attn: false, ce_weight: 0.0 }
    }
}

/// The path graph of one layout.
pub struct PathGraph {
    pub graph: Graph,
    pub layout: Layout,
    /// Layers of the model (every one has a feature term).
    pub layers: usize,
    /// The layers the layout makes linear (whose blocks train).
    pub linear: Vec<usize>,
    /// Trainable weights: node and name, sorted by name.
    pub params: Vec<(NodeId, String)>,
    pub grads: Vec<Gradient>,
    pub options: PathOptions,
}

/// Builds the path graph of `layout` on a raised teacher graph.
pub fn build_path(teacher: &Graph, layout: &Layout, seed: u64, options: PathOptions) -> Result<PathGraph> {
    let mut g = teacher.clone();
    let hidden = layer_outputs(&g)?;
    let n = hidden.len();
    let linear: Vec<usize> = (0..n).filter(|l| !layout.full_attn.contains(l) && !layout.swa.contains(l)).collect();
    if linear.is_empty() && !options.train_attn && !options.train_mlp {
        return Err(TrainError::Other("the layout keeps every layer as attention: there is no linear mixer to train".into()));
    }
    // Outputs survive the conversion (their producers are residual Adds, never rewritten).
    let logits = g.outputs.iter().find(|o| o.name == LOGITS).map(|o| o.outlet);
    g.outputs.clear();
    for (l, &h) in hidden.iter().enumerate() {
        g.add_output(&hidden_name(l), h)?;
    }
    if let Some(lo) = logits {
        g.add_output(LOGITS, lo)?;
    }
    convert(&mut g, layout, seed).map_err(TrainError::Other)?;
    let outlet_of = |g: &Graph, name: &str| -> Result<Outlet> {
        g.outputs.iter().find(|o| o.name == name).map(|o| o.outlet).ok_or_else(|| TrainError::Other(format!("output `{name}` was lost in the conversion")))
    };
    let mut losses = Vec::with_capacity(n);
    if options.features {
        for l in 0..n {
            let h = outlet_of(&g, &hidden_name(l))?;
            let fact = g.fact(h)?.clone();
            let target = g.add_input(&target_name(l), fact)?;
            losses.push(token_normalized_mse(&mut g, &format!("path.{l}"), h, Outlet::new(target, 0))?);
        }
    }
    let features = match losses.first() {
        None => None,
        Some(&first) => {
            let mut total = first;
            for (i, &o) in losses.iter().enumerate().skip(1) {
                total = add_onnx(&mut g, &format!("path.sum.{i}"), OnnxOp::new("Add", 14), &[total, o])?;
            }
            let inv = g.add_const("path.inv_layers", Tensor::scalar_f32(1.0 / n as f32))?;
            Some(add_onnx(&mut g, "path.features", OnnxOp::new("Mul", 14), &[total, inv])?)
        }
    };
    let mut ce = None;
    let mut weighted = Vec::new();
    let lo = match logits {
        Some(_) if options.kl_weight > 0.0 || options.ce_weight > 0.0 => Some(outlet_of(&g, LOGITS)?),
        None if options.kl_weight > 0.0 || options.ce_weight > 0.0 => {
            return Err(TrainError::Other("the model has no `logits` output for the KL or data cross-entropy term".into()))
        }
        _ => None,
    };
    let logq = match lo {
        Some(lo) => Some(add_onnx(&mut g, "path.ce/log_softmax", OnnxOp::new("LogSoftmax", 13).with_attr("axis", Attr::Int(-1)), &[lo])?),
        None => None,
    };
    if let (true, Some(lo), Some(logq)) = (options.kl_weight > 0.0, lo, logq) {
        let fact = g.fact(lo)?.clone();
        let probs = g.add_input(TEACHER_PROBS, fact)?;
        // -mean over tokens of sum_v p_teacher log q_student.
        let prod = add_onnx(&mut g, "path.ce/mul", OnnxOp::new("Mul", 14), &[logq, Outlet::new(probs, 0)])?;
        let axes = g.add_const("path.ce/axes", Tensor::from_i64(vec![1], &[-1])?)?;
        let rows = add_onnx(&mut g, "path.ce/rows", OnnxOp::new("ReduceSum", 13).with_attr("keepdims", Attr::Int(0)), &[prod, axes])?;
        let mean = add_onnx(&mut g, "path.ce/mean", OnnxOp::new("ReduceMean", 13).with_attr("keepdims", Attr::Int(0)), &[rows])?;
        let c = add_onnx(&mut g, "path.ce", OnnxOp::new("Neg", 13), &[mean])?;
        let w = g.add_const("path.kl_weight", Tensor::scalar_f32(options.kl_weight))?;
        weighted.push(add_onnx(&mut g, "path.ce/weighted", OnnxOp::new("Mul", 14), &[c, w])?);
        ce = Some(c);
    }
    let mut data_ce = None;
    if let (true, Some(logq)) = (options.ce_weight > 0.0, logq) {
        // -mean over positions 0..T-1 of log q(token t+1).
        // [B, T-1, 1] from the logits' [B, T, V].
        let lfact = match lo.map(|lo| g.fact(lo).map(|f| f.shape.clone())).transpose()?.flatten() {
            Some(d) if d.len() == 3 => Fact::new(DType::I64, vec![d[0].clone(), d[1].sub(&jetc_ir::Dim::known(1)), jetc_ir::Dim::known(1)]),
            _ => return Err(TrainError::Other("the data cross-entropy needs logits shaped [batch, seq, vocab]".into())),
        };
        let labels = g.add_input(LABELS, lfact)?;
        let starts = g.add_const("path.data_ce/starts", Tensor::from_i64(vec![1], &[0])?)?;
        let ends = g.add_const("path.data_ce/ends", Tensor::from_i64(vec![1], &[-1])?)?;
        let axis = g.add_const("path.data_ce/axis", Tensor::from_i64(vec![1], &[1])?)?;
        let head = add_onnx(&mut g, "path.data_ce/slice", OnnxOp::new("Slice", 13), &[logq, starts, ends, axis])?;
        let picked = add_onnx(
            &mut g,
            "path.data_ce/gather",
            OnnxOp::new("GatherElements", 13).with_attr("axis", Attr::Int(2)),
            &[head, Outlet::new(labels, 0)],
        )?;
        let mean = add_onnx(&mut g, "path.data_ce/mean", OnnxOp::new("ReduceMean", 13).with_attr("keepdims", Attr::Int(0)), &[picked])?;
        let c = add_onnx(&mut g, "path.data_ce", OnnxOp::new("Neg", 13), &[mean])?;
        let w = g.add_const("path.ce_weight", Tensor::scalar_f32(options.ce_weight))?;
        weighted.push(add_onnx(&mut g, "path.data_ce/weighted", OnnxOp::new("Mul", 14), &[c, w])?);
        data_ce = Some(c);
    }
    let mut terms: Vec<Outlet> = features.into_iter().collect();
    terms.extend(weighted);
    let Some(&first) = terms.first() else {
        return Err(TrainError::Other("the path loss has no term: give the feature terms, a KL weight or a data cross-entropy weight".into()));
    };
    let mut loss = first;
    for (i, &t) in terms.iter().enumerate().skip(1) {
        loss = add_onnx(&mut g, &format!("path.loss.{i}"), OnnxOp::new("Add", 14), &[loss, t])?;
    }
    g.outputs.clear();
    g.add_output(LOSS, loss)?;
    if let Some(f) = features {
        g.add_output(FEATURE_LOSS, f)?;
    }
    if let Some(c) = ce {
        g.add_output(CROSS_ENTROPY, c)?;
    }
    if let Some(c) = data_ce {
        g.add_output(DATA_CE, c)?;
    }
    for (l, &o) in losses.iter().enumerate() {
        g.add_output(&layer_loss_name(l), o)?;
    }
    jetc_ir::infer::infer_graph(&mut g)?;
    // Unfuse first when the conversion fused blocks: parameters are named on that graph.
    if g.node_ids().any(|id| matches!(g.node(id).map(|n| &n.op), Ok(Op::JetBlock(_)))) {
        use jetc_passes::manager::Pass;
        jetc_passes::fuse::Unfuse.run(&mut g).map_err(|e| TrainError::Other(e.to_string()))?;
    }
    let mut params = crate::local::block_weights(&g, &linear);
    if options.train_mlp {
        params.extend(mlp_weights(&g)?);
    }
    if options.train_attn {
        params.extend(attention_weights(&g)?);
    }
    params.sort_by(|a, b| a.1.cmp(&b.1));
    params.dedup_by(|a, b| a.0 == b.0);
    let ids: Vec<NodeId> = params.iter().map(|p| p.0).collect();
    let grads = grad(&mut g, loss, &ids)?;
    g.prune_dead()?;
    Ok(PathGraph { graph: g, layout: layout.clone(), layers: n, linear, params, grads, options })
}

/// The weights of every SwiGLU MLP (gate, up, down), by node.
fn mlp_weights(g: &Graph) -> Result<Vec<(NodeId, String)>> {
    let mut out = Vec::new();
    for id in g.node_ids() {
        let node = g.node(id)?;
        if !matches!(node.op, Op::SwiGlu) {
            continue;
        }
        for w in node.inputs().iter().skip(1).flatten() {
            let wn = g.node(w.node)?;
            if matches!(wn.op, Op::Const(_)) {
                out.push((w.node, wn.name.clone()));
            }
        }
    }
    if out.is_empty() {
        return Err(TrainError::Other("--train-mlp: the model has no SwiGLU MLP with weights to train".into()));
    }
    Ok(out)
}

/// The learned weights of every attention (and SWA) node left in the graph: projections,
/// their biases and the q/k norms. RoPE tables, masks and caches are not weights.
pub fn attention_weights(g: &Graph) -> Result<Vec<(NodeId, String)>> {
    use jetc_ir::AttentionSpec as A;
    let mut out = Vec::new();
    for id in g.node_ids() {
        let node = g.node(id)?;
        if !matches!(node.op, Op::Attention(_)) {
            continue;
        }
        for slot in [A::WQ, A::BQ, A::WK, A::BK, A::WV, A::BV, A::WO, A::BO, A::Q_NORM, A::K_NORM] {
            let Some(w) = node.inputs().get(slot).copied().flatten() else { continue };
            let wn = g.node(w.node)?;
            if matches!(wn.op, Op::Const(_)) {
                out.push((w.node, wn.name.clone()));
            }
        }
    }
    Ok(out)
}

/// The initial values of a path graph's trainable weights, by name.
pub fn initial_values(pg: &PathGraph) -> Result<Vec<(String, ArrayD<f32>)>> {
    crate::local::weight_values(&pg.graph, &pg.params)
}

/// The teacher's targets for one batch: hidden states by layer, and the softmax of its
/// logits when the path graph has a KL term.
pub struct Targets {
    pub hidden: Vec<Value>,
    pub probs: Option<Value>,
    /// Mean entropy of the teacher's next-token distribution (nats): cross-entropy minus this
    /// is the KL divergence.
    pub entropy: Option<f64>,
    /// The data's next tokens for the data cross-entropy ([`labels_of`]).
    pub labels: Option<Value>,
}

/// The `labels` input of a batch of `batch` windows of `seq` tokens: each window's tokens
/// 1..seq, shaped `[batch, seq - 1, 1]`.
pub fn labels_of(ids: &[i64], batch: usize, seq: usize) -> Result<Value> {
    if seq < 2 || ids.len() != batch * seq {
        return Err(TrainError::Other(format!("the data cross-entropy needs windows of at least 2 tokens ({} ids for {batch} x {seq})", ids.len())));
    }
    let next: Vec<i64> = ids.chunks(seq).flat_map(|w| w[1..].iter().copied()).collect();
    let a = ArrayD::from_shape_vec(ndarray::IxDyn(&[batch, seq - 1, 1]), next).map_err(|e| TrainError::Other(e.to_string()))?;
    Ok(Value::i64(a))
}

/// Runs the teacher graph on `feed` (`layers` hidden states: 0 when the graph has none).
pub fn teacher_targets(session: &Session, feed: HashMap<String, Value>, layers: usize, with_probs: bool) -> Result<Targets> {
    let mut outs: HashMap<String, Value> = session.run(feed)?.into_iter().collect();
    let hidden = (0..layers)
        .map(|l| outs.remove(&hidden_name(l)).ok_or_else(|| TrainError::Other(format!("teacher output `{}` missing", hidden_name(l)))))
        .collect::<Result<Vec<_>>>()?;
    let (mut probs, mut entropy) = (None, None);
    if with_probs {
        let logits = outs.remove(LOGITS).ok_or_else(|| TrainError::Other("teacher output `logits` missing".into()))?;
        let mut a = logits.as_f32().cloned().ok_or_else(|| TrainError::Other("teacher logits are not float".into()))?;
        let v = a.shape().last().copied().unwrap_or(1).max(1);
        let slice = a.as_slice_mut().ok_or_else(|| TrainError::Other("teacher logits are not contiguous".into()))?;
        let (mut h, mut rows) = (0f64, 0usize);
        for row in slice.chunks_mut(v) {
            let max = row.iter().copied().fold(f32::NEG_INFINITY, f32::max);
            let mut sum = 0f64;
            for x in row.iter_mut() {
                *x = (*x - max).exp();
                sum += *x as f64;
            }
            for x in row.iter_mut() {
                let p = (*x as f64 / sum) as f32;
                *x = p;
                if p > 0.0 {
                    h -= p as f64 * (p as f64).ln();
                }
            }
            rows += 1;
        }
        entropy = Some(h / rows.max(1) as f64);
        probs = Some(Value::f32(a));
    }
    Ok(Targets { hidden, probs, entropy, labels: None })
}

/// What one forward + backward run of a path graph returns.
pub struct PathStep {
    pub loss: f32,
    pub features: Option<f32>,
    pub cross_entropy: Option<f32>,
    pub data_cross_entropy: Option<f32>,
    pub layer_losses: Vec<f32>,
    /// Gradients in `params` order.
    pub grads: Vec<ArrayD<f32>>,
}

/// Runs the path graph on `feed` (the prefill inputs) with the teacher's `targets` and the
/// weights bound (in `params` order).
pub fn run_path<W: std::borrow::Borrow<ArrayD<f32>>>(pg: &PathGraph, session: &Session, mut feed: HashMap<String, Value>, targets: &Targets, weights: &[W]) -> Result<PathStep> {
    for (l, h) in targets.hidden.iter().enumerate() {
        feed.insert(target_name(l), h.clone());
    }
    if pg.options.ce_weight > 0.0 {
        let labels = targets.labels.as_ref().ok_or_else(|| TrainError::Other("the path graph has a data cross-entropy term but no labels were given".into()))?;
        feed.insert(LABELS.to_string(), labels.clone());
    }
    if pg.options.kl_weight > 0.0 {
        let p = targets.probs.as_ref().ok_or_else(|| TrainError::Other("the path graph has a KL term but the teacher gave no distribution".into()))?;
        feed.insert(TEACHER_PROBS.to_string(), p.clone());
    }
    let mut params = Params::new();
    for ((id, _), w) in pg.params.iter().zip(weights) {
        params.insert(*id, Value::f32(w.borrow().clone()));
    }
    let outs: HashMap<String, Value> = session.run_with(feed, &params, &[])?.into_iter().collect();
    let scalar = |name: &str| -> Result<f32> {
        outs.get(name).and_then(|v| v.as_f32()).and_then(|a| a.iter().next().copied()).ok_or_else(|| TrainError::Other(format!("output `{name}` missing")))
    };
    let layer_losses = if pg.options.features { (0..pg.layers).map(|l| scalar(&layer_loss_name(l))).collect::<Result<_>>()? } else { Vec::new() };
    let grads = pg
        .grads
        .iter()
        .map(|gr| outs.get(&gr.output).and_then(|v| v.as_f32()).cloned().ok_or_else(|| TrainError::Other(format!("gradient `{}` missing", gr.output))))
        .collect::<Result<_>>()?;
    Ok(PathStep {
        loss: scalar(LOSS)?,
        features: if pg.options.features { Some(scalar(FEATURE_LOSS)?) } else { None },
        cross_entropy: if pg.options.kl_weight > 0.0 { Some(scalar(CROSS_ENTROPY)?) } else { None },
        data_cross_entropy: if pg.options.ce_weight > 0.0 { Some(scalar(DATA_CE)?) } else { None },
        layer_losses,
        grads,
    })
}
