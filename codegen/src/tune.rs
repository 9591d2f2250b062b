//! Autotuning. Per kernel problem and run-size bucket, the tuner walks the family's config
//! space ([`Kernel::space`]), drops what the device cannot run ([`prune`]: threads, shared
//! memory, cluster size, tile divisibility), and hands each survivor to a [`Bench`], which
//! compiles it, checks it against the CPU reference on random inputs and only then times it
//! (CUDA events, warm-up, L2 flush, median). Any failure counts as infinitely slow. The winner
//! goes to the tuning database, a schema-versioned JSON file written atomically and keyed by
//! kernel family + template hash + problem + bucket + device + NVRTC version + jetc version,
//! so a second run is served from it without compiling or timing anything. A database that
//! cannot be read (corrupt, other schema) is reported and rebuilt from scratch.
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::cache::write_atomic;
use crate::error::{CodegenError, Result};
use crate::kernels::{DeviceLimits, Instance, Kernel, Params, RunSize};

/// Version of the database layout; a file with another version is rebuilt.
pub const DB_SCHEMA: u32 = 1;

/// Keeps the configurations the device can run; the rest come back with the reason.
pub fn prune(kernel: &Kernel, limits: &DeviceLimits) -> (Vec<Params>, Vec<(Params, String)>) {
    let mut ok = Vec::new();
    let mut rejected = Vec::new();
    for p in kernel.space() {
        match kernel.instance(p).validate(limits) {
            Ok(()) => ok.push(p),
            Err(e) => rejected.push((p, e.to_string())),
        }
    }
    (ok, rejected)
}

/// What identifies a tuning result.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct TuneKey {
    pub family: String,
    pub template_hash: String,
    pub problem: String,
    pub bucket: String,
    pub device: String,
    pub nvrtc: String,
    pub jetc: String,
}

impl TuneKey {
    pub fn new(kernel: &Kernel, size: RunSize, device: &str, nvrtc: (i32, i32)) -> Result<TuneKey> {
        Ok(TuneKey {
            family: kernel.family().to_string(),
            template_hash: crate::templates::template_hash(kernel.template())?,
            problem: kernel.problem_id(),
            bucket: size.bucket(),
            device: device.to_string(),
            nvrtc: format!("{}.{}", nvrtc.0, nvrtc.1),
            jetc: crate::JETC_VERSION.to_string(),
        })
    }

    pub fn as_string(&self) -> String {
        format!(
            "{}|{}|{}|{}|{}|nvrtc {}|jetc {}",
            self.family, self.template_hash, self.problem, self.bucket, self.device, self.nvrtc, self.jetc
        )
    }
}

/// One measured candidate; `ms == None` means it failed (compile, launch, wrong result).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Trial {
    pub params: Params,
    pub ms: Option<f64>,
    pub error: Option<String>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct DbEntry {
    pub key: TuneKey,
    pub kernel: Kernel,
    pub size: RunSize,
    pub best: Params,
    pub best_ms: f64,
    pub trials: Vec<Trial>,
}

#[derive(Serialize, Deserialize)]
struct DbFile {
    schema: u32,
    entries: BTreeMap<String, DbEntry>,
}

/// The tuning database file.
pub struct TuningDb {
    pub path: PathBuf,
    entries: BTreeMap<String, DbEntry>,
    /// Why the file on disk was not used (corrupt, other schema), when it was not.
    pub rebuilt: Option<String>,
}

/// `JETC_TUNING_DB`, else `~/.cache/jetc/tuning.json`.
pub fn default_db_path() -> PathBuf {
    if let Some(p) = std::env::var_os("JETC_TUNING_DB") {
        return PathBuf::from(p);
    }
    match std::env::var_os("HOME") {
        Some(h) => Path::new(&h).join(".cache/jetc/tuning.json"),
        None => PathBuf::from("jetc-tuning.json"),
    }
}

impl TuningDb {
    /// Opens `path`; a missing file is an empty database, an unreadable one is an empty
    /// database with [`TuningDb::rebuilt`] saying why (the file is replaced on save).
    pub fn open(path: &Path) -> Result<TuningDb> {
        let mut db = TuningDb { path: path.to_path_buf(), entries: BTreeMap::new(), rebuilt: None };
        let bytes = match std::fs::read(path) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(db),
            Err(e) => return Err(CodegenError::io(path, e)),
        };
        #[derive(Deserialize)]
        struct Head {
            schema: u32,
        }
        match serde_json::from_slice::<Head>(&bytes) {
            Err(e) => db.rebuilt = Some(format!("not a tuning database ({e}); rebuilding it")),
            Ok(h) if h.schema != DB_SCHEMA => {
                db.rebuilt = Some(format!("schema {} (this jetc writes {DB_SCHEMA}); rebuilding it", h.schema))
            }
            Ok(_) => match serde_json::from_slice::<DbFile>(&bytes) {
                Ok(f) => db.entries = f.entries,
                Err(e) => db.rebuilt = Some(format!("corrupt entries ({e}); rebuilding it")),
            },
        }
        Ok(db)
    }

    pub fn get(&self, key: &TuneKey) -> Option<&DbEntry> {
        self.entries.get(&key.as_string())
    }

    pub fn insert(&mut self, entry: DbEntry) {
        self.entries.insert(entry.key.as_string(), entry);
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    pub fn entries(&self) -> impl Iterator<Item = &DbEntry> {
        self.entries.values()
    }

    /// Writes the database atomically (temporary file + rename).
    pub fn save(&self) -> Result<()> {
        let file = DbFile { schema: DB_SCHEMA, entries: self.entries.clone() };
        let text = serde_json::to_vec_pretty(&file).map_err(|e| CodegenError::Db { path: self.path.clone(), msg: e.to_string() })?;
        write_atomic(&self.path, &text)
    }
}

/// Compiles, validates and times candidates on a device.
pub trait Bench {
    /// Device name as it goes into database keys (e.g. "NVIDIA H200").
    fn device(&self) -> String;
    fn limits(&self) -> DeviceLimits;
    fn nvrtc_version(&self) -> (i32, i32);
    /// Compiles `inst`, checks it against the CPU reference, then returns its median time in
    /// ms at `size`. An error means the candidate is unusable.
    fn measure(&mut self, inst: &Instance, size: RunSize) -> Result<f64>;
}

/// Outcome of tuning one (kernel, size).
#[derive(Clone, Debug, PartialEq)]
pub struct Tuned {
    pub entry: DbEntry,
    pub from_db: bool,
}

/// Tunes one problem at one size, or serves it from `db`. `progress` is told each candidate.
pub fn tune_one(
    bench: &mut dyn Bench,
    db: &mut TuningDb,
    kernel: &Kernel,
    size: RunSize,
    progress: &mut dyn FnMut(&Instance, Option<f64>),
) -> Result<Tuned> {
    let key = TuneKey::new(kernel, size, &bench.device(), bench.nvrtc_version())?;
    if let Some(e) = db.get(&key) {
        return Ok(Tuned { entry: e.clone(), from_db: true });
    }
    let (candidates, _) = prune(kernel, &bench.limits());
    let mut trials = Vec::new();
    let mut best: Option<(Params, f64)> = None;
    for p in candidates {
        let inst = kernel.instance(p);
        let (ms, error) = match bench.measure(&inst, size) {
            Ok(ms) if ms.is_finite() && ms >= 0.0 => (Some(ms), None),
            Ok(ms) => (None, Some(format!("time {ms} is not a finite duration"))),
            Err(e) => (None, Some(e.to_string())),
        };
        progress(&inst, ms);
        if let Some(t) = ms {
            if best.is_none_or(|(_, b)| t < b) {
                best = Some((p, t));
            }
        }
        trials.push(Trial { params: p, ms, error });
    }
    let Some((best, best_ms)) = best else {
        let why = trials.iter().filter_map(|t| t.error.as_deref()).next().unwrap_or("no configuration fits the device");
        return Err(CodegenError::Other(format!(
            "{} at {}: every candidate failed (first: {why})",
            kernel.family(),
            size.bucket()
        )));
    };
    let entry = DbEntry { key, kernel: kernel.clone(), size, best, best_ms, trials };
    db.insert(entry.clone());
    db.save()?;
    Ok(Tuned { entry, from_db: false })
}

/// The parameters to use for `kernel` at `size`: tuned if the database has them, else the
/// family default.
pub fn lookup(db: &TuningDb, kernel: &Kernel, size: RunSize, device: &str, nvrtc: (i32, i32)) -> Params {
    TuneKey::new(kernel, size, device, nvrtc)
        .ok()
        .and_then(|k| db.get(&k).map(|e| e.best))
        .unwrap_or_else(|| kernel.default_params())
}
