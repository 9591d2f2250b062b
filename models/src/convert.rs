//! Hybrid layouts and the conversion pipeline behind `jetc convert`: which layers keep full
//! attention, which become sliding-window attention, and which become a linear mixer.
use std::path::Path;

use jetc_ir::Graph;
use jetc_passes::linearize::{attention_layers, Block, LinearizeEach, MixerConfig};
use jetc_passes::swa::Swa;
use jetc_passes::PassManager;

/// A hybrid layout over a model's attention layers (0-indexed).
#[derive(Clone, Debug, PartialEq)]
pub struct Layout {
    pub full_attn: Vec<usize>,
    pub swa: Vec<usize>,
    pub window: Option<usize>,
    /// The linear mixer of every linear layer not listed in `blocks`.
    pub block: Block,
    /// Per-layer exceptions to `block` (a supernet's mixed subnets: layer 4 Gated DeltaNet,
    /// the rest JetBlock). A listed layer that is full attention or SWA is an error.
    pub blocks: Vec<(usize, Block)>,
    pub config: MixerConfig,
}

impl Layout {
    /// The linear mixer layer `l` gets when it is linear.
    pub fn block_of(&self, l: usize) -> Block {
        self.blocks.iter().find(|(k, _)| *k == l).map_or(self.block, |&(_, b)| b)
    }

    /// The layers that are neither full attention nor SWA, of a model with `n` layers.
    pub fn linear_layers(&self, n: usize) -> Vec<usize> {
        (0..n).filter(|l| !self.full_attn.contains(l) && !self.swa.contains(l)).collect()
    }

    /// What layer `l` is: `attn`, `swa` or the name of its linear block.
    pub fn layer_type(&self, l: usize) -> &'static str {
        if self.full_attn.contains(&l) {
            "attn"
        } else if self.swa.contains(&l) {
            "swa"
        } else {
            self.block_of(l).name()
        }
    }

    /// Reads a layout file: JSON with `full_attn`, `swa`, `window`, `block`, `heads`, `dk`,
    /// `dv`, `conv`, `reduction` (all optional), or `layer_types`: one entry per layer,
    /// `attn`, `swa`, `jet`/`linear` (the layout's `block`) or a block name such as
    /// `gated-deltanet` (that layer's own mixer).
    pub fn from_file(path: &Path) -> Result<Layout, String> {
        let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
        let v: serde_json::Value = serde_json::from_str(&text).map_err(|e| format!("{}: not JSON: {e}", path.display()))?;
        let list = |key: &str| -> Result<Vec<usize>, String> {
            match v.get(key) {
                None => Ok(vec![]),
                Some(a) => a
                    .as_array()
                    .ok_or(format!("{}: `{key}` must be a list of layer indices", path.display()))?
                    .iter()
                    .map(|x| x.as_u64().map(|n| n as usize).ok_or(format!("{}: `{key}` holds a non-index {x}", path.display())))
                    .collect(),
            }
        };
        let num = |key: &str| v.get(key).and_then(|x| x.as_u64()).map(|n| n as usize);
        let (mut full_attn, mut swa, mut blocks) = (list("full_attn")?, list("swa")?, Vec::new());
        if let Some(types) = v.get("layer_types").and_then(|t| t.as_array()) {
            for (i, t) in types.iter().enumerate() {
                match t.as_str() {
                    Some("attn") => full_attn.push(i),
                    Some("swa") => swa.push(i),
                    Some("jet") | Some("linear") => {}
                    Some(name) => match Block::parse(name) {
                        Ok(b) => blocks.push((i, b)),
                        Err(_) => return Err(format!("{}: layer_types[{i}] = {t} (attn, swa, jet or a block name: {})", path.display(), block_names())),
                    },
                    None => return Err(format!("{}: layer_types[{i}] = {t} is not a string", path.display())),
                }
            }
        }
        let block = Block::parse(v.get("block").and_then(|b| b.as_str()).unwrap_or("jetblock"))?;
        let d = MixerConfig::default();
        Ok(Layout {
            full_attn,
            swa,
            window: num("window"),
            block,
            blocks,
            config: MixerConfig {
                heads: num("heads"),
                dk: num("dk"),
                dv: num("dv"),
                conv: num("conv").unwrap_or(d.conv),
                reduction: num("reduction").unwrap_or(d.reduction),
            },
        })
    }
}

fn block_names() -> String {
    Block::ALL.iter().map(|b| b.name()).collect::<Vec<_>>().join(", ")
}

/// Applies the layout: SWA layers first, then every layer that is neither full nor SWA
/// becomes its linear block (`block_of`). Checks everything before touching the graph.
pub fn convert(g: &mut Graph, layout: &Layout, seed: u64) -> Result<(), String> {
    let n = attention_layers(g).map_err(|e| e.to_string())?.len();
    if n == 0 {
        return Err("the model has no attention layer to convert".into());
    }
    for &l in layout.full_attn.iter().chain(&layout.swa) {
        if l >= n {
            return Err(format!("layer {l} is out of range: the model has {n} attention layers (0..{})", n - 1));
        }
    }
    if let Some(l) = layout.full_attn.iter().find(|l| layout.swa.contains(l)) {
        return Err(format!("layer {l} is listed both as full attention and as SWA"));
    }
    for &(l, b) in &layout.blocks {
        if l >= n {
            return Err(format!("layer {l} ({}) is out of range: the model has {n} attention layers (0..{})", b.name(), n - 1));
        }
        if layout.full_attn.contains(&l) || layout.swa.contains(&l) {
            return Err(format!("layer {l} is given the linear block {} but is listed as attention", b.name()));
        }
    }
    let window = match (layout.swa.is_empty(), layout.window) {
        (_, Some(0)) => return Err("the SWA window must be at least 1 token".into()),
        (false, None) => return Err("SWA layers need --window".into()),
        (_, w) => w,
    };
    let linear = layout.linear_layers(n);
    let mut pm = PassManager::new();
    if let (false, Some(w)) = (layout.swa.is_empty(), window) {
        pm = pm.add(Box::new(Swa { layers: layout.swa.clone(), window: w }));
    }
    if !linear.is_empty() {
        let layers = linear.iter().map(|&l| (l, layout.block_of(l))).collect();
        pm = pm.add(Box::new(LinearizeEach { layers, config: layout.config, seed }));
    }
    let mut trial = g.clone();
    pm.run(&mut trial).map_err(|e| e.to_string())?;
    *g = trial;
    Ok(())
}
