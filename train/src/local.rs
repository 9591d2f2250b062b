//! Local (teacher-forced) distillation of the linear mixers of a layout, as one graph.
//!
//! The teacher graph is cloned and, beside the attention of every layer that the layout
//! turns linear, the linear block is built from the same input (the teacher's normalized
//! hidden state) with the weights `convert` would give it. Each block's output is scored
//! against the teacher attention's output with the normalized MSE ([`crate::loss`]); the
//! loss is the mean over layers. The autodiff pass then appends the backward, so one run of
//! the graph is one teacher forward serving every layer (streamed: nothing is cached between
//! batches), every student forward, and every gradient. The teacher's own outputs (logits,
//! caches) are dropped, so the executor computes only what the losses need.
//!
//! A supernet's local phase builds several candidate blocks per layer
//! ([`build_local_candidates`]), each with its own loss term: their weights have distinct
//! names (`layers.{l}.jet.*`, `layers.{l}.gated_deltanet.*`), so one graph trains them all
//! from the same teacher forward.
//!
//! Only the blocks' learned weights train (`layers.{l}.{block}.*`); attention, MLPs, norms
//! and embeddings are constants of the graph.
use std::collections::HashMap;

use jetc_autodiff::{grad, Gradient};
use jetc_ir::{DType, Fact, Graph, NodeId, OnnxOp, Op, Outlet, OutputInfo, Tensor};
use jetc_models::convert::Layout;
use jetc_passes::linearize::{attention_layers, build, is_block_weight, Block, MixerConfig};
use jetc_runtime::{Params, Session, Value};
use ndarray::ArrayD;

use crate::error::{Result, TrainError};
use crate::loss::normalized_mse;

/// The local-distillation graph of a layout.
pub struct LocalGraph {
    pub graph: Graph,
    /// The layers trained (those the layout makes linear).
    pub layers: Vec<usize>,
    /// The loss terms: a (layer, candidate block) each, in layer order.
    pub terms: Vec<(usize, Block)>,
    /// Trainable weights: node and name, in a fixed order (by name).
    pub params: Vec<(NodeId, String)>,
    pub grads: Vec<Gradient>,
}

/// Names of the outputs: the mean loss and one per layer.
pub const LOSS: &str = "loss";

pub fn layer_loss_name(l: usize) -> String {
    format!("loss.{l}")
}

/// The output of one (layer, candidate) term of a supernet's local graph.
pub fn term_loss_name(l: usize, block: Block) -> String {
    format!("loss.{l}.{}", block.weight_prefix())
}

fn add_onnx(g: &mut Graph, name: &str, op: &str, inputs: &[Outlet]) -> Result<Outlet> {
    let info = OutputInfo { name: String::new(), fact: Fact::unknown_rank(DType::F32) };
    let id = g.add_node(name, Op::Onnx(OnnxOp::new(op, 14)), inputs.iter().map(|&i| Some(i)).collect(), vec![info])?;
    Ok(Outlet::new(id, 0))
}

/// Builds the local-distillation graph of `layout` on a raised teacher graph: every linear
/// layer's block (`layout.block_of`) beside its attention.
pub fn build_local(teacher: &Graph, layout: &Layout, seed: u64) -> Result<LocalGraph> {
    let n = attention_layers(teacher)?.len();
    if n == 0 {
        return Err(TrainError::Other("the model has no attention layer to distill".into()));
    }
    for &l in layout.full_attn.iter().chain(&layout.swa) {
        if l >= n {
            return Err(TrainError::Other(format!("layer {l} is out of range: the model has {n} attention layers (0..{})", n - 1)));
        }
    }
    let terms: Vec<(usize, Block)> = layout.linear_layers(n).into_iter().map(|l| (l, layout.block_of(l))).collect();
    build_terms(teacher, &terms, &layout.config, seed)
}

/// The local graph of a supernet: every one of `layers` gets every block of `candidates`
/// beside its attention, each with its own loss term (the loss is the mean of all terms).
pub fn build_local_candidates(teacher: &Graph, layers: &[usize], candidates: &[Block], config: &MixerConfig, seed: u64) -> Result<LocalGraph> {
    if candidates.is_empty() {
        return Err(TrainError::Other("the supernet has no linear candidate to train".into()));
    }
    let terms: Vec<(usize, Block)> = layers.iter().flat_map(|&l| candidates.iter().map(move |&b| (l, b))).collect();
    build_terms(teacher, &terms, config, seed)
}

fn build_terms(teacher: &Graph, terms: &[(usize, Block)], config: &MixerConfig, seed: u64) -> Result<LocalGraph> {
    let mut g = teacher.clone();
    let attn = attention_layers(&g)?;
    let n = attn.len();
    if let Some(&(l, _)) = terms.iter().find(|(l, _)| *l >= n) {
        return Err(TrainError::Other(format!("layer {l} is out of range: the model has {n} attention layers")));
    }
    if terms.is_empty() {
        return Err(TrainError::Other("the layout keeps every layer as attention: there is no linear mixer to train".into()));
    }
    let mut layers: Vec<usize> = terms.iter().map(|t| t.0).collect();
    layers.dedup();
    // One candidate per layer keeps the per-layer output names (`loss.{l}`).
    let single = layers.len() == terms.len();
    let mut losses = Vec::with_capacity(terms.len());
    for &(l, block) in terms {
        let built = build(block, &mut g, attn[l], l, config, seed, false)
            .map_err(|m| TrainError::Other(format!("layer {l} ({}): {m}", block.name())))?;
        let tag = if single { format!("distill.{l}") } else { format!("distill.{l}.{}", block.weight_prefix()) };
        let loss = normalized_mse(&mut g, &tag, built.y, Outlet::new(attn[l], 0))?;
        losses.push((l, block, loss));
    }
    // Mean over terms.
    let mut total = losses[0].2;
    for (i, &(_, _, o)) in losses.iter().enumerate().skip(1) {
        total = add_onnx(&mut g, &format!("distill.sum.{i}"), "Add", &[total, o])?;
    }
    let inv = g.add_const("distill.inv_layers", Tensor::scalar_f32(1.0 / losses.len() as f32))?;
    let total = add_onnx(&mut g, "distill.mean", "Mul", &[total, inv])?;
    g.outputs.clear();
    g.add_output(LOSS, total)?;
    for &(l, block, o) in &losses {
        g.add_output(&if single { layer_loss_name(l) } else { term_loss_name(l, block) }, o)?;
    }
    jetc_ir::infer::infer_graph(&mut g)?;
    let params = block_weights(&g, &layers);
    let ids: Vec<NodeId> = params.iter().map(|p| p.0).collect();
    let grads = grad(&mut g, total, &ids)?;
    g.prune_dead()?;
    Ok(LocalGraph { graph: g, layers, terms: terms.to_vec(), params, grads })
}

/// The learned weights of the linear blocks of `layers` (`layers.{l}.{block}.*`), sorted by
/// name.
pub fn block_weights(g: &Graph, layers: &[usize]) -> Vec<(NodeId, String)> {
    let mut params: Vec<(NodeId, String)> = g
        .node_ids()
        .filter_map(|id| {
            let node = g.node(id).ok()?;
            let trained = matches!(node.op, Op::Const(_))
                && is_block_weight(&node.name)
                && layers.iter().any(|l| node.name.starts_with(&format!("layers.{l}.")));
            trained.then(|| (id, node.name.clone()))
        })
        .collect();
    params.sort_by(|a, b| a.1.cmp(&b.1));
    params
}

/// The initial values of the trainable weights, in `params` order.
pub fn initial_values(lg: &LocalGraph) -> Result<Vec<(String, ArrayD<f32>)>> {
    weight_values(&lg.graph, &lg.params)
}

/// The values of the named weight nodes of a graph, in the order given.
pub fn weight_values(g: &Graph, params: &[(NodeId, String)]) -> Result<Vec<(String, ArrayD<f32>)>> {
    params
        .iter()
        .map(|(id, name)| match &g.node(*id)?.op {
            Op::Const(t) => {
                let v = Value::from_tensor(t);
                let a = v.as_f32().cloned().ok_or_else(|| TrainError::Param { name: name.clone(), msg: "is not a float weight".into() })?;
                Ok((name.clone(), a))
            }
            _ => Err(TrainError::Param { name: name.clone(), msg: "is not a weight".into() }),
        })
        .collect()
}

/// What one forward + backward run returns.
pub struct StepOutput {
    pub loss: f32,
    /// Per layer: its term, or the mean of its candidates' terms.
    pub layer_losses: Vec<(usize, f32)>,
    /// Per (layer, candidate) term.
    pub term_losses: Vec<(usize, Block, f32)>,
    /// Gradients in `params` order.
    pub grads: Vec<ArrayD<f32>>,
}

/// Runs the graph on `feed` with the current weights bound (owned arrays or references, in
/// `params` order); returns losses and gradients.
pub fn run_step<W: std::borrow::Borrow<ArrayD<f32>>>(lg: &LocalGraph, session: &Session, feed: HashMap<String, Value>, weights: &[W]) -> Result<StepOutput> {
    let mut params = Params::new();
    for ((id, _), w) in lg.params.iter().zip(weights) {
        params.insert(*id, Value::f32(w.borrow().clone()));
    }
    let outs: HashMap<String, Value> = session.run_with(feed, &params, &[])?.into_iter().collect();
    let scalar = |name: &str| -> Result<f32> {
        outs.get(name).and_then(|v| v.as_f32()).and_then(|a| a.iter().next().copied()).ok_or_else(|| TrainError::Other(format!("output `{name}` missing")))
    };
    let loss = scalar(LOSS)?;
    let single = lg.layers.len() == lg.terms.len();
    let term_losses: Vec<(usize, Block, f32)> = lg
        .terms
        .iter()
        .map(|&(l, b)| scalar(&if single { layer_loss_name(l) } else { term_loss_name(l, b) }).map(|v| (l, b, v)))
        .collect::<Result<_>>()?;
    let layer_losses = lg
        .layers
        .iter()
        .map(|&l| {
            let v: Vec<f32> = term_losses.iter().filter(|t| t.0 == l).map(|t| t.2).collect();
            (l, v.iter().sum::<f32>() / v.len().max(1) as f32)
        })
        .collect();
    let grads = lg
        .grads
        .iter()
        .map(|gr| {
            outs.get(&gr.output).and_then(|v| v.as_f32()).cloned().ok_or_else(|| TrainError::Other(format!("gradient `{}` missing", gr.output)))
        })
        .collect::<Result<_>>()?;
    Ok(StepOutput { loss, layer_losses, term_losses, grads })
}
