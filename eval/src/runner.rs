//! The model a suite scores, with hidden states cached at layer boundaries.
//!
//! A search scores many subnets of one supernet. Two subnets whose first `L` layers are the
//! same (the same linear blocks with the same weights; every subnet's layers before its first
//! attention layer are the all-linear subnet's) compute the same hidden states at the input
//! of layer `L` for every example. A [`Runner`] records those hidden states, per boundary, in a
//! shared [`HiddenCache`] keyed by the exact token sequence of each call (what was consumed
//! since the last reset, and the call's tokens), and a later subnet that reads boundary `L`
//! feeds them to layer `L` directly ([`jetc_runtime::exec::Partial`]): layers `0..L` do not
//! run, nor do their cache updates.
//!
//! Those skipped caches go stale. While they are, a call whose hidden states are not cached
//! cannot just run the whole model; the runner then re-runs everything consumed since the
//! reset, and the call, in one pass (recording as it goes), and continues from there. Calls
//! are cached only on graphs with caches; generation (tokens that differ between subnets)
//! runs uncached ([`Runner::set_caching`]).
use std::cell::RefCell;
use std::collections::hash_map::DefaultHasher;
use std::collections::{HashMap, HashSet};
use std::hash::{Hash, Hasher};
use std::rc::Rc;

use jetc_ir::Outlet;
use jetc_models::generate::{Generator, GeneratorState, Logits};
use jetc_runtime::exec::Partial;
use jetc_runtime::Value;
use ndarray::{Axis, Slice};

use crate::error::{task_err, Result};

/// Hidden states by (boundary layer, call), shared by the runners of one search.
#[derive(Debug, Default)]
pub struct HiddenCache {
    rows: HashMap<(usize, u64), Value>,
    bytes: usize,
    /// At most this many bytes are kept; later boundaries are not recorded past it.
    pub cap_bytes: usize,
    /// Calls served from the cache, and their tokens.
    pub hits: usize,
    pub hit_tokens: usize,
    /// Calls that ran every layer, and their tokens (re-runs of stale prefixes included).
    pub misses: usize,
    pub miss_tokens: usize,
    /// Layer-token products skipped by hits (boundary layer times the call's tokens).
    pub layer_tokens_saved: usize,
}

impl HiddenCache {
    pub fn new(cap_bytes: usize) -> HiddenCache {
        HiddenCache { cap_bytes, ..HiddenCache::default() }
    }

    pub fn bytes(&self) -> usize {
        self.bytes
    }

    fn insert(&mut self, key: (usize, u64), v: Value) {
        let b = v.len() * 4;
        if self.rows.contains_key(&key) || self.bytes + b > self.cap_bytes {
            return;
        }
        self.bytes += b;
        self.rows.insert(key, v);
    }
}

/// Where one subnet reads and records hidden states: the outlets in its own graph.
#[derive(Clone, Debug, Default)]
pub struct Boundaries {
    /// The boundary this subnet starts from (its first layer that differs), if any.
    pub read: Option<(usize, Outlet)>,
    /// The boundaries it records (every one at or before `read`, whose hidden states any
    /// subnet sharing those first layers has too).
    pub record: Vec<(usize, Outlet)>,
    /// Cache outputs computed before the read boundary: skipped when starting from it.
    pub skip_outputs: HashSet<String>,
}

/// What a [`Runner`] has consumed, to come back to.
#[derive(Clone, Debug)]
pub struct RunnerState {
    gen: GeneratorState,
    history: Vec<u32>,
    synced: bool,
}

/// A [`Generator`] that reads and records hidden states at layer boundaries.
pub struct Runner<'g> {
    gen: Generator<'g>,
    plan: Option<Plan>,
    history: Vec<u32>,
    /// Whether every cache is up to date (false after a call served from a boundary).
    synced: bool,
    caching: bool,
}

/// A cached runner's boundaries and the two partial runs it makes, built once.
struct Plan {
    boundaries: Boundaries,
    cache: Rc<RefCell<HiddenCache>>,
    /// From the read boundary (its override is set per call): the skipped cache outputs.
    suffix: Partial,
    /// A whole run capturing the recorded boundaries.
    record: Partial,
}

fn key_of(history: &[u32], ids: &[u32]) -> u64 {
    let mut h = DefaultHasher::new();
    (history.len(), history, ids).hash(&mut h);
    h.finish()
}

/// The last `n` positions (axis 1) of a `[batch, T, ...]` value.
fn last_rows(v: &Value, n: usize) -> Result<Value> {
    let a = v.as_f32().ok_or_else(|| task_err("hidden cache", "a boundary's hidden states are not f32"))?;
    let t = *a.shape().get(1).ok_or_else(|| task_err("hidden cache", format!("hidden states of shape {:?}", a.shape())))?;
    if n > t {
        return Err(task_err("hidden cache", format!("{n} rows asked of hidden states with {t}")));
    }
    Ok(Value::f32(a.slice_axis(Axis(1), Slice::from(t - n..t)).to_owned()))
}

impl<'g> Runner<'g> {
    /// A runner without a cache: every call runs the whole model.
    pub fn new(gen: Generator<'g>) -> Runner<'g> {
        Runner { gen, plan: None, history: Vec::new(), synced: true, caching: true }
    }

    /// A runner that reads and records `boundaries` in `cache` (a graph without caches runs
    /// uncached: it re-runs every sequence whole anyway).
    pub fn with_cache(gen: Generator<'g>, boundaries: Boundaries, cache: Rc<RefCell<HiddenCache>>) -> Runner<'g> {
        let plan = gen.has_caches().then(|| Plan {
            suffix: Partial { skip_outputs: boundaries.skip_outputs.clone(), ..Partial::default() },
            record: Partial { capture: boundaries.record.iter().map(|r| r.1).collect(), ..Partial::default() },
            boundaries,
            cache,
        });
        Runner { gen, plan, history: Vec::new(), synced: true, caching: true }
    }

    /// Turns the cache off (generation) or back on; in effect from the next call.
    pub fn set_caching(&mut self, on: bool) {
        self.caching = on;
    }

    pub fn reset(&mut self) {
        self.gen.reset();
        self.history.clear();
        self.synced = true;
    }

    pub fn snapshot(&self) -> RunnerState {
        RunnerState { gen: self.gen.snapshot(), history: self.history.clone(), synced: self.synced }
    }

    pub fn restore(&mut self, s: &RunnerState) {
        self.gen.restore(&s.gen);
        self.history = s.history.clone();
        self.synced = s.synced;
    }

    /// Runs `ids` after everything consumed so far (as [`Generator::forward`]).
    pub fn forward(&mut self, ids: &[u32]) -> Result<Logits> {
        let Some(plan) = self.plan.as_mut() else {
            self.history.extend_from_slice(ids);
            return Ok(self.gen.forward(ids)?);
        };
        let key = key_of(&self.history, ids);
        if self.caching {
            if let Some((layer, outlet)) = plan.boundaries.read {
                let rows = plan.cache.borrow().rows.get(&(layer, key)).cloned();
                if let Some(rows) = rows {
                    plan.suffix.overrides.insert(outlet, rows);
                    let run = self.gen.forward_partial(ids, &plan.suffix);
                    plan.suffix.overrides.clear();
                    let (logits, _) = run?;
                    let mut c = plan.cache.borrow_mut();
                    c.hits += 1;
                    c.hit_tokens += ids.len();
                    c.layer_tokens_saved += layer * ids.len();
                    self.history.extend_from_slice(ids);
                    self.synced = false;
                    return Ok(logits);
                }
            }
        }
        let uncached = Partial::default();
        let partial = if self.caching { &plan.record } else { &uncached };
        let (logits, captured) = if self.synced {
            self.gen.forward_partial(ids, partial)?
        } else {
            // The skipped layers' caches are stale: run the whole sequence again.
            let all: Vec<u32> = self.history.iter().chain(ids).copied().collect();
            self.gen.reset();
            let (l, caps) = self.gen.forward_partial(&all, partial)?;
            let keep = if l.rows() == all.len() { ids.len() } else { l.rows() };
            let data = l.data[(l.rows() - keep) * l.vocab..].to_vec();
            self.synced = true;
            plan.cache.borrow_mut().miss_tokens += all.len() - ids.len();
            (Logits { vocab: l.vocab, data }, caps)
        };
        let mut c = plan.cache.borrow_mut();
        c.misses += 1;
        c.miss_tokens += ids.len();
        for ((layer, _), v) in plan.boundaries.record.iter().zip(&captured) {
            c.insert((*layer, key), last_rows(v, ids.len())?);
        }
        self.history.extend_from_slice(ids);
        Ok(logits)
    }
}
