//! Hybrid layouts and the conversion pipeline behind `jetc convert`: which layers keep full
//! attention, which become sliding-window attention, and which become a linear mixer.
use std::path::Path;

use jetc_ir::Graph;
use jetc_passes::linearize::{attention_layers, Block, Linearize, MixerConfig};
use jetc_passes::swa::Swa;
use jetc_passes::PassManager;

/// A hybrid layout over a model's attention layers (0-indexed).
#[derive(Clone, Debug, PartialEq)]
pub struct Layout {
    pub full_attn: Vec<usize>,
    pub swa: Vec<usize>,
    pub window: Option<usize>,
    pub block: Block,
    pub config: MixerConfig,
}

impl Layout {
    /// Reads a layout file: JSON with `full_attn`, `swa`, `window`, `block`, `heads`, `dk`,
    /// `dv`, `conv`, `reduction` (all optional), or `layer_types`: ["attn"|"swa"|"jet", ...].
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
        let (mut full_attn, mut swa) = (list("full_attn")?, list("swa")?);
        if let Some(types) = v.get("layer_types").and_then(|t| t.as_array()) {
            for (i, t) in types.iter().enumerate() {
                match t.as_str() {
                    Some("attn") => full_attn.push(i),
                    Some("swa") => swa.push(i),
                    Some("jet") | Some("linear") => {}
                    _ => return Err(format!("{}: layer_types[{i}] = {t} (attn, swa or jet)", path.display())),
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

/// Applies the layout: SWA layers first, then every layer that is neither full nor SWA
/// becomes the layout's linear block. Checks everything before touching the graph.
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
    let window = match (layout.swa.is_empty(), layout.window) {
        (_, Some(0)) => return Err("the SWA window must be at least 1 token".into()),
        (false, None) => return Err("SWA layers need --window".into()),
        (_, w) => w,
    };
    let linear: Vec<usize> = (0..n).filter(|l| !layout.full_attn.contains(l) && !layout.swa.contains(l)).collect();
    let mut pm = PassManager::new();
    if let (false, Some(w)) = (layout.swa.is_empty(), window) {
        pm = pm.add(Box::new(Swa { layers: layout.swa.clone(), window: w }));
    }
    if !linear.is_empty() {
        // Dims are checked against the first layer before anything is rewritten.
        pm = pm.add(Box::new(Linearize { block: layout.block, layers: linear, config: layout.config, seed }));
    }
    let mut trial = g.clone();
    pm.run(&mut trial).map_err(|e| e.to_string())?;
    *g = trial;
    Ok(())
}
