//! Training checkpoints: the trainable weights and Adam moments in safetensors
//! (`w.<name>`, `m.<name>`, `v.<name>`), the step, the data cursor, the run's fingerprint and
//! the SHA-256 of the tensor file in a small JSON.
//!
//! Writes are atomic: each file goes to a temporary name, is fsynced, then renamed, and the
//! directory is fsynced; the JSON (which names the tensor file's hash) is written last, so a
//! checkpoint without a valid JSON or whose tensors do not match the hash is incomplete.
//! Checkpoints live in `DIR/checkpoints/step-<N>/`; the newest `keep` are kept, so an older
//! good one survives a crash while the next is being written. Loading takes the newest
//! valid checkpoint and reports every newer one that is truncated or corrupted.
use std::collections::HashMap;
use std::io::Write;
use std::path::{Path, PathBuf};

use ndarray::{ArrayD, IxDyn};
use safetensors::tensor::{Dtype, TensorView};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::error::{Result, TrainError};
use crate::optim::AdamW;

const FORMAT: u32 = 1;
const TENSORS: &str = "state.safetensors";
const META: &str = "state.json";

/// The small JSON of a checkpoint.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Meta {
    pub format: u32,
    /// Optimizer steps taken.
    pub step: u64,
    /// Position in the data stream (windows consumed).
    pub data_cursor: u64,
    /// What identifies the run (model, layout, data, hyper-parameters): a resume must match.
    pub fingerprint: String,
    /// SHA-256 of `state.safetensors`, hex.
    pub sha256: String,
    /// Parameter names in optimizer order.
    pub params: Vec<String>,
    /// Updates of each parameter (in `params` order) when some steps skipped it (path
    /// training); absent in older checkpoints and when every parameter had every step.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub param_steps: Option<Vec<u64>>,
}

/// A checkpoint read back.
pub struct Loaded {
    pub dir: PathBuf,
    pub meta: Meta,
    /// (value, m, v) by parameter name.
    pub state: HashMap<String, (ArrayD<f32>, ArrayD<f32>, ArrayD<f32>)>,
    /// Newer checkpoints that were skipped, with why.
    pub skipped: Vec<(PathBuf, String)>,
}

fn io(path: &Path, e: impl std::fmt::Display) -> TrainError {
    TrainError::Other(format!("{}: {e}", path.display()))
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Writes `bytes` to `path` atomically (temporary file, fsync, rename).
fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    let tmp = path.with_extension("tmp");
    {
        let mut f = std::fs::File::create(&tmp).map_err(|e| io(&tmp, e))?;
        f.write_all(bytes).map_err(|e| io(&tmp, e))?;
        f.sync_all().map_err(|e| io(&tmp, e))?;
    }
    std::fs::rename(&tmp, path).map_err(|e| io(path, e))?;
    if let Some(dir) = path.parent() {
        if let Ok(d) = std::fs::File::open(dir) {
            let _ = d.sync_all();
        }
    }
    Ok(())
}

pub fn checkpoints_dir(run: &Path) -> PathBuf {
    run.join("checkpoints")
}

fn step_dir(run: &Path, step: u64) -> PathBuf {
    checkpoints_dir(run).join(format!("step-{step:08}"))
}

/// Saves the optimizer state at `opt.step`; keeps the newest `keep` checkpoints.
pub fn save(run: &Path, opt: &AdamW, data_cursor: u64, fingerprint: &str, keep: usize) -> Result<PathBuf> {
    let dir = step_dir(run, opt.step);
    std::fs::create_dir_all(&dir).map_err(|e| io(&dir, e))?;
    let mut bufs: Vec<(String, Vec<usize>, Vec<u8>)> = Vec::with_capacity(opt.slots.len() * 3);
    for s in &opt.slots {
        for (prefix, a) in [("w", &s.value), ("m", &s.m), ("v", &s.v)] {
            let bytes: Vec<u8> = a.iter().flat_map(|x| x.to_le_bytes()).collect();
            bufs.push((format!("{prefix}.{}", s.name), a.shape().to_vec(), bytes));
        }
    }
    let views: Vec<(String, TensorView)> = bufs
        .iter()
        .map(|(n, shape, b)| TensorView::new(Dtype::F32, shape.clone(), b).map(|v| (n.clone(), v)))
        .collect::<std::result::Result<_, _>>()
        .map_err(|e| io(&dir, e))?;
    let bytes = safetensors::serialize(views, None).map_err(|e| io(&dir, e))?;
    let sha = hex(&Sha256::digest(&bytes));
    write_atomic(&dir.join(TENSORS), &bytes)?;
    let meta = Meta {
        format: FORMAT,
        step: opt.step,
        data_cursor,
        fingerprint: fingerprint.to_string(),
        sha256: sha,
        params: opt.slots.iter().map(|s| s.name.clone()).collect(),
        param_steps: opt.slots.iter().any(|s| s.steps != opt.step).then(|| opt.slots.iter().map(|s| s.steps).collect()),
    };
    let json = serde_json::to_vec_pretty(&meta).map_err(|e| io(&dir, e))?;
    write_atomic(&dir.join(META), &json)?;
    // Keep the newest `keep` complete checkpoints.
    let mut all = list(run)?;
    all.sort();
    let n = all.len();
    for old in all.into_iter().take(n.saturating_sub(keep.max(1))) {
        let _ = std::fs::remove_dir_all(old);
    }
    Ok(dir)
}

fn list(run: &Path) -> Result<Vec<PathBuf>> {
    let root = checkpoints_dir(run);
    if !root.is_dir() {
        return Ok(Vec::new());
    }
    let mut out = Vec::new();
    for e in std::fs::read_dir(&root).map_err(|e| io(&root, e))? {
        let p = e.map_err(|e| io(&root, e))?.path();
        if p.is_dir() && p.file_name().and_then(|n| n.to_str()).is_some_and(|n| n.starts_with("step-")) {
            out.push(p);
        }
    }
    Ok(out)
}

/// Reads one checkpoint, checking the JSON, the hash and every tensor.
pub fn read(dir: &Path) -> Result<(Meta, HashMap<String, (ArrayD<f32>, ArrayD<f32>, ArrayD<f32>)>)> {
    let meta_path = dir.join(META);
    let text = std::fs::read(&meta_path).map_err(|e| io(&meta_path, format!("incomplete checkpoint ({e})")))?;
    let meta: Meta = serde_json::from_slice(&text).map_err(|e| io(&meta_path, format!("corrupted checkpoint metadata: {e}")))?;
    if meta.format != FORMAT {
        return Err(io(&meta_path, format!("checkpoint format {} (this jetc reads {FORMAT})", meta.format)));
    }
    let tpath = dir.join(TENSORS);
    let bytes = std::fs::read(&tpath).map_err(|e| io(&tpath, e))?;
    let sha = hex(&Sha256::digest(&bytes));
    if sha != meta.sha256 {
        return Err(io(&tpath, format!("truncated or corrupted checkpoint: {} bytes whose SHA-256 does not match {META}", bytes.len())));
    }
    let st = safetensors::SafeTensors::deserialize(&bytes).map_err(|e| io(&tpath, format!("corrupted checkpoint: {e}")))?;
    let get = |name: &str| -> Result<ArrayD<f32>> {
        let t = st.tensor(name).map_err(|e| io(&tpath, format!("tensor `{name}`: {e}")))?;
        if t.dtype() != Dtype::F32 {
            return Err(io(&tpath, format!("tensor `{name}` is {:?}, not f32", t.dtype())));
        }
        let v: Vec<f32> = t.data().chunks_exact(4).map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]])).collect();
        ArrayD::from_shape_vec(IxDyn(t.shape()), v).map_err(|e| io(&tpath, format!("tensor `{name}`: {e}")))
    };
    let mut state = HashMap::new();
    for p in &meta.params {
        state.insert(p.clone(), (get(&format!("w.{p}"))?, get(&format!("m.{p}"))?, get(&format!("v.{p}"))?));
    }
    Ok((meta, state))
}

/// The newest valid checkpoint of a run (newer broken ones are listed in `skipped`), or
/// `None` when the run has none.
pub fn latest(run: &Path) -> Result<Option<Loaded>> {
    let mut all = list(run)?;
    all.sort();
    let mut skipped = Vec::new();
    while let Some(dir) = all.pop() {
        match read(&dir) {
            Ok((meta, state)) => return Ok(Some(Loaded { dir, meta, state, skipped })),
            Err(e) => skipped.push((dir, e.to_string())),
        }
    }
    if let Some((dir, why)) = skipped.first() {
        return Err(TrainError::Other(format!("{}: no valid checkpoint to resume from ({why})", dir.display())));
    }
    Ok(None)
}

/// Restores an optimizer from a checkpoint; parameter names and shapes must match.
pub fn restore(opt: &mut AdamW, ck: &Loaded) -> Result<()> {
    let names: Vec<&str> = opt.slots.iter().map(|s| s.name.as_str()).collect();
    if names != ck.meta.params.iter().map(String::as_str).collect::<Vec<_>>() {
        return Err(TrainError::Other(format!("{}: the checkpoint's parameters differ from this run's", ck.dir.display())));
    }
    for (i, s) in opt.slots.iter_mut().enumerate() {
        s.steps = ck.meta.param_steps.as_ref().and_then(|p| p.get(i).copied()).unwrap_or(ck.meta.step);
        let (w, m, v) = ck.state.get(&s.name).ok_or_else(|| TrainError::Param { name: s.name.clone(), msg: "missing from the checkpoint".into() })?;
        if w.shape() != s.value.shape() {
            return Err(TrainError::Param { name: s.name.clone(), msg: format!("checkpoint shape {:?}, this run {:?}", w.shape(), s.value.shape()) });
        }
        s.value = w.clone();
        s.m = m.clone();
        s.v = v.clone();
    }
    opt.step = ck.meta.step;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::optim::AdamWConfig;

    fn opt() -> AdamW {
        let a = ArrayD::from_shape_vec(IxDyn(&[2, 3]), vec![1.0, -2.0, 3.5, 0.25, 5.0, -6.0]).unwrap();
        let mut o = AdamW::new(AdamWConfig::default(), vec![("layers.0.jet.q_proj.weight".into(), a.clone()), ("layers.0.jet.A_log".into(), a)]);
        let g = ArrayD::from_elem(IxDyn(&[2, 3]), 0.5f32);
        o.step(&[g.clone(), g], 1e-2).unwrap();
        o
    }

    #[test]
    fn round_trips_and_keeps_the_newest() {
        let run = std::env::temp_dir().join(format!("jetc-ckpt-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&run);
        let mut o = opt();
        save(&run, &o, 4, "fp", 2).unwrap();
        let g = ArrayD::from_elem(IxDyn(&[2, 3]), -0.25f32);
        o.step(&[g.clone(), g.clone()], 1e-2).unwrap();
        save(&run, &o, 8, "fp", 2).unwrap();
        o.step(&[g.clone(), g], 1e-2).unwrap();
        save(&run, &o, 12, "fp", 2).unwrap();
        assert_eq!(list(&run).unwrap().len(), 2, "only the newest two are kept");
        let ck = latest(&run).unwrap().unwrap();
        assert_eq!((ck.meta.step, ck.meta.data_cursor), (3, 12));
        let mut fresh = opt();
        restore(&mut fresh, &ck).unwrap();
        for (a, b) in fresh.slots.iter().zip(&o.slots) {
            assert_eq!(a.value, b.value);
            assert_eq!(a.m, b.m);
            assert_eq!(a.v, b.v);
        }
        // Truncate the newest: it is reported, and the older good one is used.
        let newest = step_dir(&run, 3).join(TENSORS);
        let bytes = std::fs::read(&newest).unwrap();
        std::fs::write(&newest, &bytes[..bytes.len() / 2]).unwrap();
        let ck = latest(&run).unwrap().unwrap();
        assert_eq!(ck.meta.step, 2);
        assert!(ck.skipped[0].1.contains("truncated or corrupted"), "{:?}", ck.skipped);
        // Every checkpoint broken: an error naming it.
        let older = step_dir(&run, 2).join(META);
        std::fs::write(&older, b"{not json").unwrap();
        let e = latest(&run).err().expect("no valid checkpoint").to_string();
        assert!(e.contains("no valid checkpoint"), "{e}");
        let _ = std::fs::remove_dir_all(&run);
    }
}
