//! A trained supernet: the distilled weights of a `jetc distill` run's newest checkpoint, and
//! what the run records about itself (seed, model, candidates). [`Supernet::subnet`] builds
//! the hybrid of any layout in memory and binds the run's weights into it, so `jetc eval`,
//! `jetc convert --supernet` and the search all take a subnet the same way.
use std::collections::HashMap;
use std::path::{Path, PathBuf};

use jetc_ir::{Graph, Op, Tensor};
use jetc_models::convert::{convert, Layout};
use jetc_passes::linearize::{is_block_weight, MixerConfig};
use ndarray::ArrayD;

use crate::error::{err, Result};

/// A distill run's weights and record.
pub struct Supernet {
    /// The run directory.
    pub run: PathBuf,
    /// The checkpoint the weights come from.
    pub checkpoint: PathBuf,
    /// Trained weights by parameter name (the optimizer moments are not kept).
    pub weights: HashMap<String, ArrayD<f32>>,
    /// The run's seed: the non-learned constants of its blocks come from it.
    pub seed: u64,
    /// The model the run distilled (its distill.json `model`), when recorded.
    pub model: Option<PathBuf>,
    /// The run's linear block (distill.json `block`), when recorded.
    pub block: Option<String>,
    /// The run's candidates (distill.json `supernet`), when recorded.
    pub candidates: Vec<String>,
    /// The base model's fingerprint (distill.json `model_fingerprint`), when recorded.
    pub fingerprint: Option<String>,
    /// The mixers' shape (distill.json `mixer`; the defaults when not recorded).
    pub config: MixerConfig,
    /// The SWA window of the run (distill.json `mixer.window`).
    pub window: Option<usize>,
}

impl Supernet {
    /// Opens run `run`: its newest valid checkpoint and its distill.json (when the run has
    /// finished; a run in progress has only checkpoints, and seed 0 is assumed).
    pub fn open(run: &Path) -> Result<Supernet> {
        let ck = jetc_train::checkpoint::latest(run)?.ok_or_else(|| {
            err(format!(
                "supernet {}: no checkpoint in it (not a jetc distill run?)",
                run.display()
            ))
        })?;
        let record: Option<serde_json::Value> = std::fs::read(run.join("distill.json"))
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok());
        let field = |k: &str| record.as_ref().and_then(|v| v.get(k)).cloned();
        let candidates = match field("supernet") {
            Some(serde_json::Value::String(s)) => s
                .split(',')
                .map(|c| c.trim().to_string())
                .filter(|c| !c.is_empty())
                .collect(),
            Some(serde_json::Value::Array(a)) => a
                .iter()
                .filter_map(|c| c.as_str().map(str::to_string))
                .collect(),
            _ => Vec::new(),
        };
        let mixer = field("mixer").unwrap_or_default();
        let num = |k: &str| mixer.get(k).and_then(|v| v.as_u64()).map(|n| n as usize);
        let d = MixerConfig::default();
        let config = MixerConfig {
            heads: num("heads"),
            dk: num("dk"),
            dv: num("dv"),
            conv: num("conv").unwrap_or(d.conv),
            reduction: num("reduction").unwrap_or(d.reduction),
        };
        Ok(Supernet {
            fingerprint: field("model_fingerprint").and_then(|v| v.as_str().map(str::to_string)),
            config,
            window: num("window"),
            run: run.to_path_buf(),
            checkpoint: ck.dir.clone(),
            weights: ck.state.into_iter().map(|(n, (w, _, _))| (n, w)).collect(),
            seed: field("seed").and_then(|v| v.as_u64()).unwrap_or(0),
            model: field("model").and_then(|v| v.as_str().map(PathBuf::from)),
            block: field("block").and_then(|v| v.as_str().map(str::to_string)),
            candidates,
        })
    }

    /// Checks that `base` (the raised model the subnets are built from, `path` in messages)
    /// is the model the run distilled: same fingerprint when the run recorded one, and no
    /// block of a layer the model lacks.
    pub fn check_model(&self, base: &Graph, path: &Path) -> Result<()> {
        let n_layers = jetc_passes::linearize::attention_layers(base)?.len();
        self.check_layers(n_layers)?;
        if let Some(want) = &self.fingerprint {
            let got = fingerprint(base);
            if &got != want {
                return Err(err(format!(
                    "supernet {} was distilled from another model than {} (weights fingerprint {want}, this model {got}); give the run's own model{}",
                    self.run.display(),
                    path.display(),
                    self.model.as_ref().map_or(String::new(), |m| format!(" ({})", m.display()))
                )));
            }
        }
        Ok(())
    }

    /// The highest layer index among the run's block weights (`layers.{l}.…`).
    pub fn max_layer(&self) -> Option<usize> {
        self.weights
            .keys()
            .filter(|n| is_block_weight(n))
            .filter_map(|n| n.strip_prefix("layers.")?.split('.').next()?.parse().ok())
            .max()
    }

    /// Checks that the run was trained on a model of `n_layers` layers.
    pub fn check_layers(&self, n_layers: usize) -> Result<()> {
        match self.max_layer() {
            Some(l) if l >= n_layers => Err(err(format!(
                "supernet {}: it holds blocks of layer {l}, the model has {n_layers} layers (a supernet of another model?)",
                self.run.display()
            ))),
            None => Err(err(format!("supernet {}: its checkpoint holds no linear-block weights", self.run.display()))),
            _ => Ok(()),
        }
    }

    /// The hybrid of `layout` built from `base` (a raised decoder), with this run's weights:
    /// every linear block's weights must come from the run (a run that never trained a
    /// layer's block is refused, naming the weight); other trained weights (attention with
    /// --train-attn, MLPs with --train-mlp) bind where their names occur.
    pub fn subnet(&self, base: &Graph, layout: &Layout) -> Result<Graph> {
        let mut g = base.clone();
        convert(&mut g, layout, self.seed)
            .map_err(|m| err(format!("layout of supernet {}: {m}", self.run.display())))?;
        self.bind(&mut g)?;
        Ok(g)
    }

    /// Binds the run's weights into a converted graph (see [`Supernet::subnet`]); returns how
    /// many were bound.
    pub fn bind(&self, g: &mut Graph) -> Result<usize> {
        let missing: Vec<String> = g
            .node_ids()
            .filter_map(|id| g.node(id).ok())
            .filter(|n| {
                matches!(n.op, Op::Const(_))
                    && is_block_weight(&n.name)
                    && !self.weights.contains_key(n.name.as_str())
            })
            .map(|n| n.name.clone())
            .collect();
        if let Some(first) = missing.first() {
            return Err(err(format!(
                "supernet {}: the run did not train `{first}` ({} weights of this layout missing; a local or fixed-layout run holds only its own layout's blocks)",
                self.checkpoint.display(),
                missing.len()
            )));
        }
        let by_name: HashMap<&str, &ArrayD<f32>> =
            self.weights.iter().map(|(n, w)| (n.as_str(), w)).collect();
        bind_weights(g, &by_name)
            .map_err(|e| err(format!("supernet {}: {e}", self.checkpoint.display())))
    }
}

/// A fingerprint of a model's weights: FNV-1a over every constant's name and content, in
/// name order (a distill run records it; the search checks the model it is given).
pub fn fingerprint(g: &Graph) -> String {
    let mut consts: Vec<(&str, u64)> = g
        .node_ids()
        .filter_map(|id| g.node(id).ok())
        .filter_map(|n| match &n.op {
            Op::Const(t) => Some((n.name.as_str(), t.content_hash())),
            _ => None,
        })
        .collect();
    consts.sort();
    let mut h: u64 = 0xcbf29ce484222325;
    for (name, c) in consts {
        for b in name.bytes().chain(c.to_le_bytes()) {
            h ^= b as u64;
            h = h.wrapping_mul(0x100000001b3);
        }
    }
    format!("{h:016x}")
}

/// Replaces the constants of `g` named in `weights` (shapes must match); returns how many.
pub fn bind_weights(g: &mut Graph, weights: &HashMap<&str, &ArrayD<f32>>) -> Result<usize> {
    let mut replaced = 0;
    for id in g.node_ids().collect::<Vec<_>>() {
        let node = g.node_mut(id)?;
        if let (Op::Const(t), Some(v)) = (&node.op, weights.get(node.name.as_str())) {
            if t.shape() != v.shape() {
                return Err(err(format!(
                    "weight `{}`: {:?} in the run, {:?} in this model (another model or mixer config?)",
                    node.name,
                    v.shape(),
                    t.shape()
                )));
            }
            let data: Vec<f32> = v.iter().copied().collect();
            node.op = Op::Const(Tensor::from_f32(t.shape().to_vec(), &data)?);
            replaced += 1;
        }
    }
    Ok(replaced)
}
