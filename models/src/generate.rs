//! Text generation on the CPU executor: prefill over the prompt ids, then token-by-token
//! decode with the model's caches fed back, greedy or temperature + top-p sampling with a
//! seeded RNG, stopping on end-of-sequence ids or a token budget, with a per-token callback
//! for streaming and prefill / decode timings.
//!
//! The graph's interface is read, not assumed, so that imported decoders of every exporter
//! and converted hybrids run through the same loop:
//! - `input_ids` [B, T] (required; B is 1 here);
//! - `position_ids` [B, T] (optional): the absolute positions of the new tokens;
//! - `attention_mask` [B, P+T] (optional): all ones (no padding with one sequence);
//! - every other input named `past*` is a cache, fed by the output whose name is the same
//!   with `present` for `past` (`present.0.key` -> `past_key_values.0.key`,
//!   `present_conv.0` -> `past_conv.0`, `present_key_values.0.key` ->
//!   `past_key_values.0.key`; transformers' exporter: `output.x` -> `input.x`). A cache starts zero-filled at its declared shape with the
//!   batch dimension 1 and every other symbolic dimension 0: KV caches (`[B, H, past, d]`)
//!   start empty, recurrent and convolution states (fixed dims) start at zero, as
//!   `linearize` documents for its `past_conv.*` / `past_state.*` caches. A dimension the
//!   input leaves symbolic but inference knows on the matching output (a head size an
//!   exporter named `kv_cache_dim`) takes that value.
//! - the logits are the output named `logits` (else the first), `[B, T, V]` or `[B, V]`.
//!
//! A graph without caches (a prefill-only export) still generates: each step re-runs the
//! whole sequence.
use std::collections::HashMap;
use std::time::{Duration, Instant};

use jetc_ir::{DType, Dim, Graph, Outlet};
use jetc_runtime::exec::Partial;
use jetc_runtime::{Data, RuntimeError, Session, Value};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use thiserror::Error;

#[derive(Debug, Error)]
pub enum GenerateError {
    /// The graph's inputs/outputs do not fit a decoder, or the request is invalid.
    #[error("{0}")]
    Model(String),
    #[error(transparent)]
    Runtime(#[from] RuntimeError),
}

pub type Result<T, E = GenerateError> = std::result::Result<T, E>;

/// How the next token is chosen from the logits.
#[derive(Clone, Debug, PartialEq)]
pub enum Sampling {
    /// The most likely token (the first of equal ones).
    Greedy,
    /// Softmax of logits / `temperature`, cut to the smallest set of most likely tokens whose
    /// probability reaches `top_p`, sampled with an RNG seeded by `seed`. A temperature of 0
    /// is greedy.
    TopP { temperature: f32, top_p: f32, seed: u64 },
}

#[derive(Clone, Debug)]
pub struct GenerateOptions {
    /// At most this many new tokens (end-of-sequence not counted).
    pub max_tokens: usize,
    pub sampling: Sampling,
    /// Generation stops when one of these is chosen (it is not part of the result).
    pub stop_ids: Vec<u32>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StopReason {
    /// This end-of-sequence id was chosen.
    Eos(u32),
    MaxTokens,
    /// The per-token callback asked to stop.
    Callback,
}

/// The outcome of [`Generator::generate`].
#[derive(Clone, Debug)]
pub struct Generation {
    pub prompt_tokens: usize,
    /// The new tokens, without the end-of-sequence id that stopped generation.
    pub ids: Vec<u32>,
    pub stop: StopReason,
    /// The forward pass over the prompt and the choice of the first token.
    pub prefill: Duration,
    /// The one-token forward passes (and choices) after it.
    pub decode: Duration,
    pub decode_steps: usize,
}

impl Generation {
    /// Prompt tokens per second of prefill.
    pub fn prefill_tokens_per_s(&self) -> f64 {
        self.prompt_tokens as f64 / self.prefill.as_secs_f64().max(1e-9)
    }

    /// Decode steps per second (0 when there were none).
    pub fn decode_tokens_per_s(&self) -> f64 {
        if self.decode_steps == 0 {
            return 0.0;
        }
        self.decode_steps as f64 / self.decode.as_secs_f64().max(1e-9)
    }
}

/// Logits of consecutive positions, row-major `[rows, vocab]`.
#[derive(Clone, Debug, PartialEq)]
pub struct Logits {
    pub vocab: usize,
    pub data: Vec<f32>,
}

impl Logits {
    pub fn rows(&self) -> usize {
        self.data.len() / self.vocab.max(1)
    }

    pub fn row(&self, i: usize) -> &[f32] {
        &self.data[i * self.vocab..(i + 1) * self.vocab]
    }

    /// The last position's logits.
    pub fn last(&self) -> &[f32] {
        let n = self.rows();
        self.row(n.saturating_sub(1))
    }
}

/// One cache: the input it is fed to, the output it comes from, its initial value.
#[derive(Clone, Debug)]
pub(crate) struct Cache {
    pub(crate) input: String,
    pub(crate) output: String,
    pub(crate) init: Value,
}

/// The graph's interface as the loop uses it.
#[derive(Clone, Debug)]
pub(crate) struct Interface {
    pub(crate) ids: DType,
    pub(crate) positions: Option<DType>,
    pub(crate) mask: Option<DType>,
    pub(crate) caches: Vec<Cache>,
    pub(crate) logits: String,
}

/// What a [`Generator`] has consumed: its caches and position.
#[derive(Clone, Debug)]
pub struct GeneratorState {
    caches: HashMap<String, Value>,
    position: usize,
    history: Vec<u32>,
}

/// Runs a decoder graph step by step, keeping its caches between calls.
pub struct Generator<'g> {
    session: Session<'g>,
    io: Interface,
    caches: HashMap<String, Value>,
    /// Tokens consumed so far (the next position).
    position: usize,
    /// Every token consumed, for graphs without caches.
    history: Vec<u32>,
}

impl<'g> Generator<'g> {
    /// Prepares `graph` (an imported or converted decoder, raised or not) for generation.
    pub fn new(graph: &'g Graph) -> Result<Generator<'g>> {
        let io = interface(graph)?;
        let session = Session::new(graph)?;
        let mut g = Generator { session, io, caches: HashMap::new(), position: 0, history: Vec::new() };
        g.reset();
        Ok(g)
    }

    /// The session the generator runs (its weights, its last peak memory).
    pub fn session(&self) -> &Session<'g> {
        &self.session
    }

    /// Runs one token and forgets it, so that the session converts its constants (the
    /// weights) now rather than inside the first timed prefill.
    pub fn warm_up(&mut self) -> Result<()> {
        self.reset();
        self.forward(&[0])?;
        self.reset();
        Ok(())
    }

    /// Forgets every token: caches back to their initial values, position 0.
    pub fn reset(&mut self) {
        self.caches = self.io.caches.iter().map(|c| (c.input.clone(), c.init.clone())).collect();
        self.position = 0;
        self.history.clear();
    }

    /// Everything consumed so far (the caches, the position), to come back to with
    /// [`Generator::restore`]: choices that share a context run it once.
    pub fn snapshot(&self) -> GeneratorState {
        GeneratorState { caches: self.caches.clone(), position: self.position, history: self.history.clone() }
    }

    /// Back to a state [`Generator::snapshot`] took (of this generator).
    pub fn restore(&mut self, state: &GeneratorState) {
        self.caches = state.caches.clone();
        self.position = state.position;
        self.history = state.history.clone();
    }

    /// Tokens consumed since the last reset.
    pub fn position(&self) -> usize {
        self.position
    }

    /// Whether the graph carries caches (else every step re-runs the whole sequence).
    pub fn has_caches(&self) -> bool {
        !self.io.caches.is_empty()
    }

    /// Runs `ids` after everything consumed so far; returns their logits (one row per id,
    /// or only the last row for a graph that outputs `[B, V]`) and keeps the caches.
    pub fn forward(&mut self, ids: &[u32]) -> Result<Logits> {
        Ok(self.forward_partial(ids, &Partial::default())?.0)
    }

    /// The names of the graph's cache outputs (`present...`), in the graph's order.
    pub fn cache_outputs(&self) -> Vec<String> {
        self.io.caches.iter().map(|c| c.output.clone()).collect()
    }

    /// [`Generator::forward`] as a partial run ([`Partial`]): overridden intermediate values
    /// (a layer boundary's hidden states) stand in for what computes them; a cache whose
    /// output is skipped keeps its value. Returns the captured values beside the logits.
    pub fn forward_partial(&mut self, ids: &[u32], partial: &Partial) -> Result<(Logits, Vec<Value>)> {
        if ids.is_empty() {
            return Err(GenerateError::Model("nothing to run: no token ids".into()));
        }
        let stateless = self.io.caches.is_empty();
        let (run_ids, start): (Vec<u32>, usize) = if stateless {
            (self.history.iter().chain(ids).copied().collect(), 0)
        } else {
            (ids.to_vec(), self.position)
        };
        let t = run_ids.len();
        let mut feed: HashMap<String, Value> = std::mem::take(&mut self.caches);
        feed.insert("input_ids".into(), int_value(self.io.ids, &[1, t], run_ids.iter().map(|&i| i as i64).collect()));
        if let Some(dt) = self.io.positions {
            feed.insert("position_ids".into(), int_value(dt, &[1, t], (start..start + t).map(|p| p as i64).collect()));
        }
        if let Some(dt) = self.io.mask {
            let n = start + t;
            feed.insert("attention_mask".into(), ones(dt, &[1, n]));
        }
        let kept: Vec<(String, Value)> = self
            .io
            .caches
            .iter()
            .filter(|c| partial.skip_outputs.contains(&c.output))
            .filter_map(|c| feed.get(&c.input).map(|v| (c.input.clone(), v.clone())))
            .collect();
        let (outputs, captured) = self.session.run_partial(feed, partial)?;
        let mut by_name: HashMap<String, Value> = outputs.into_iter().collect();
        for c in &self.io.caches {
            if partial.skip_outputs.contains(&c.output) {
                continue;
            }
            let v = by_name.remove(&c.output).ok_or_else(|| GenerateError::Model(format!("output `{}` was not produced", c.output)))?;
            self.caches.insert(c.input.clone(), v);
        }
        self.caches.extend(kept);
        let logits = by_name
            .remove(&self.io.logits)
            .ok_or_else(|| GenerateError::Model(format!("output `{}` was not produced", self.io.logits)))?;
        let Data::F(a) = &logits.data else {
            return Err(GenerateError::Model(format!("output `{}` is not floating-point", self.io.logits)));
        };
        let shape = a.shape().to_vec();
        let vocab = *shape.last().unwrap_or(&0);
        let rows = match shape.len() {
            3 if shape[0] == 1 && shape[1] == t => t,
            2 if shape[0] == 1 => 1,
            _ => {
                return Err(GenerateError::Model(format!(
                    "logits `{}` have shape {shape:?}; expected [1, {t}, vocab] or [1, vocab]",
                    self.io.logits
                )))
            }
        };
        let mut data: Vec<f32> = a.iter().copied().collect();
        // Without caches the whole sequence ran: keep the rows of the new tokens.
        let keep = ids.len().min(rows);
        data.drain(..(rows - keep) * vocab);
        self.position += ids.len();
        if stateless {
            self.history.extend_from_slice(ids);
        }
        Ok((Logits { vocab, data }, captured))
    }

    /// Generates after `prompt` from a fresh state. `on_token` sees each new token as it is
    /// chosen (not the end-of-sequence id); returning `false` stops generation.
    pub fn generate(
        &mut self,
        prompt: &[u32],
        opts: &GenerateOptions,
        on_token: &mut dyn FnMut(u32) -> bool,
    ) -> Result<Generation> {
        if prompt.is_empty() {
            return Err(GenerateError::Model("the prompt has no tokens".into()));
        }
        let mut sampler = Sampler::new(&opts.sampling)?;
        self.reset();
        let started = Instant::now();
        let logits = self.forward(prompt)?;
        let mut next = sampler.pick(logits.last())?;
        let prefill = started.elapsed();
        let (mut ids, mut decode, mut steps) = (Vec::new(), Duration::ZERO, 0usize);
        let stop = loop {
            if ids.len() >= opts.max_tokens {
                break StopReason::MaxTokens;
            }
            if opts.stop_ids.contains(&next) {
                break StopReason::Eos(next);
            }
            ids.push(next);
            if !on_token(next) {
                break StopReason::Callback;
            }
            if ids.len() >= opts.max_tokens {
                break StopReason::MaxTokens;
            }
            let t = Instant::now();
            let logits = self.forward(&[next])?;
            next = sampler.pick(logits.last())?;
            decode += t.elapsed();
            steps += 1;
        };
        Ok(Generation { prompt_tokens: prompt.len(), ids, stop, prefill, decode, decode_steps: steps })
    }
}

/// Reads the graph's inputs and outputs (see the module doc).
pub(crate) fn interface(g: &Graph) -> Result<Interface> {
    let fail = |m: String| GenerateError::Model(m);
    let mut inputs: Vec<(String, jetc_ir::Fact)> = Vec::new();
    for &id in &g.inputs {
        let o = Outlet::new(id, 0);
        let fact = g.fact(o).map_err(|e| fail(e.to_string()))?.clone();
        inputs.push((g.value_name(o).to_string(), fact));
    }
    let find = |n: &str| inputs.iter().find(|(name, _)| name == n).map(|(_, f)| f);
    let ids_fact = find("input_ids").ok_or_else(|| fail("the model has no `input_ids` input: not a decoder jetc can generate with".into()))?;
    if !ids_fact.dtype.is_int() {
        return Err(fail(format!("`input_ids` is {}, not an integer type", ids_fact.dtype)));
    }
    // The batch symbol, fixed to 1 in every cache.
    let batch: Option<Dim> = ids_fact.shape.as_ref().and_then(|s| s.first().cloned()).filter(|d| d.as_known().is_none());
    let outputs: Vec<String> = g.outputs.iter().map(|o| o.name.clone()).collect();
    let mut caches = Vec::new();
    let mut positions = None;
    let mut mask = None;
    for (name, fact) in &inputs {
        match name.as_str() {
            "input_ids" => {}
            "position_ids" => positions = Some(int_dtype(name, fact.dtype)?),
            "attention_mask" => mask = Some(fact.dtype),
            n if n.starts_with("past") || outputs.iter().any(|o| past_names(o).iter().any(|p| p == n)) => {
                let output = outputs.iter().find(|o| past_names(o).iter().any(|p| p == n)).ok_or_else(|| {
                    fail(format!("cache input `{n}` has no matching `present*` output (outputs: {})", outputs.join(", ")))
                })?;
                if !fact.dtype.is_float() {
                    return Err(fail(format!("cache input `{n}` is {}, not floating-point", fact.dtype)));
                }
                let shape = fact.shape.as_ref().ok_or_else(|| fail(format!("cache input `{n}` has no declared rank")))?;
                // What inference knows of the output it is fed from (an exporter may leave
                // the head size symbolic in the input, e.g. `kv_cache_dim`).
                let out_shape = g
                    .outputs
                    .iter()
                    .find(|o| &o.name == output)
                    .and_then(|o| g.fact(o.outlet).ok())
                    .and_then(|f| f.shape.clone())
                    .filter(|s| s.len() == shape.len());
                let dims: Vec<usize> = shape
                    .iter()
                    .enumerate()
                    .map(|(i, d)| match d.as_known() {
                        Some(k) => usize::try_from(k).unwrap_or(0),
                        None if i == 0 || batch.as_ref() == Some(d) => 1,
                        None => match out_shape.as_ref().and_then(|s| s[i].as_known()) {
                            Some(k) => usize::try_from(k).unwrap_or(0),
                            None => 0,
                        },
                    })
                    .collect();
                let count = dims.iter().product();
                let arr = ndarray::ArrayD::from_shape_vec(ndarray::IxDyn(&dims), vec![0f32; count])
                    .map_err(|e| fail(format!("cache input `{n}`: {e}")))?;
                caches.push(Cache { input: n.to_string(), output: output.clone(), init: Value { dtype: fact.dtype, data: Data::F(arr) } });
            }
            other => {
                return Err(fail(format!(
                    "input `{other}` is not one jetc's generation loop knows how to feed \
                     (input_ids, position_ids, attention_mask, past* caches)"
                )))
            }
        }
    }
    let logits = if outputs.iter().any(|o| o == "logits") {
        "logits".to_string()
    } else {
        outputs.first().cloned().ok_or_else(|| fail("the model has no outputs".into()))?
    };
    Ok(Interface { ids: ids_fact.dtype, positions, mask, caches, logits })
}

/// The cache input names an output may feed: `present{x}` feeds `past{x}` (and
/// `past_key_values{x}` when x starts with a dot); transformers' own exporter pairs
/// `output.{x}` with `input.{x}`.
fn past_names(output: &str) -> Vec<String> {
    if let Some(rest) = output.strip_prefix("present") {
        let mut v = vec![format!("past{rest}")];
        if rest.starts_with('.') {
            v.push(format!("past_key_values{rest}"));
        }
        return v;
    }
    match output.strip_prefix("output.") {
        Some(rest) => vec![format!("input.{rest}")],
        None => Vec::new(),
    }
}

fn int_dtype(name: &str, dt: DType) -> Result<DType> {
    if dt.is_int() {
        Ok(dt)
    } else {
        Err(GenerateError::Model(format!("`{name}` is {dt}, not an integer type")))
    }
}

pub(crate) fn int_value(dtype: DType, shape: &[usize], data: Vec<i64>) -> Value {
    let arr = ndarray::ArrayD::from_shape_vec(ndarray::IxDyn(shape), data).unwrap_or_default();
    Value { dtype, data: Data::I(arr) }
}

/// All-ones mask in the declared dtype (integer, boolean or float).
pub(crate) fn ones(dtype: DType, shape: &[usize]) -> Value {
    let sh = ndarray::IxDyn(shape);
    let data = if dtype == DType::Bool {
        Data::B(ndarray::ArrayD::from_elem(sh, true))
    } else if dtype.is_float() {
        Data::F(ndarray::ArrayD::from_elem(sh, 1.0))
    } else {
        Data::I(ndarray::ArrayD::from_elem(sh, 1))
    };
    Value { dtype, data }
}

/// Chooses tokens from logits.
pub struct Sampler {
    sampling: Sampling,
    rng: Option<StdRng>,
}

impl Sampler {
    pub fn new(sampling: &Sampling) -> Result<Sampler> {
        let rng = match *sampling {
            Sampling::Greedy => None,
            Sampling::TopP { temperature, top_p, seed } => {
                if !(temperature >= 0.0 && temperature.is_finite()) {
                    return Err(GenerateError::Model(format!("temperature {temperature} must be finite and >= 0")));
                }
                if !(top_p > 0.0 && top_p <= 1.0) {
                    return Err(GenerateError::Model(format!("top-p {top_p} must be in (0, 1]")));
                }
                Some(StdRng::seed_from_u64(seed))
            }
        };
        Ok(Sampler { sampling: sampling.clone(), rng })
    }

    /// The next token.
    pub fn pick(&mut self, logits: &[f32]) -> Result<u32> {
        if logits.is_empty() {
            return Err(GenerateError::Model("empty logits".into()));
        }
        match (&self.sampling, self.rng.as_mut()) {
            (Sampling::TopP { temperature, top_p, .. }, Some(rng)) if *temperature > 0.0 => {
                Ok(top_p_sample(logits, *temperature, *top_p, rng.random::<f64>()))
            }
            _ => Ok(argmax(logits)),
        }
    }
}

/// Index of the largest logit (the first of equal ones; NaN never wins).
pub fn argmax(logits: &[f32]) -> u32 {
    let mut best = 0usize;
    let mut best_v = f32::NEG_INFINITY;
    for (i, &v) in logits.iter().enumerate() {
        if v > best_v {
            best = i;
            best_v = v;
        }
    }
    best as u32
}

/// Top-p (nucleus) sampling: `u` in [0, 1) picks from the renormalized nucleus.
pub fn top_p_sample(logits: &[f32], temperature: f32, top_p: f32, u: f64) -> u32 {
    let max = logits.iter().copied().filter(|v| !v.is_nan()).fold(f32::NEG_INFINITY, f32::max);
    if !max.is_finite() {
        return argmax(logits);
    }
    let inv_t = 1.0 / temperature as f64;
    let mut probs: Vec<(u32, f64)> = logits
        .iter()
        .enumerate()
        .map(|(i, &v)| (i as u32, if v.is_nan() { 0.0 } else { ((v as f64 - max as f64) * inv_t).exp() }))
        .collect();
    let total: f64 = probs.iter().map(|p| p.1).sum();
    probs.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
    let mut kept = 0usize;
    let mut mass = 0.0f64;
    for p in &probs {
        mass += p.1;
        kept += 1;
        if mass >= top_p as f64 * total {
            break;
        }
    }
    let target = u.clamp(0.0, 1.0) * mass;
    let mut acc = 0.0f64;
    for p in &probs[..kept] {
        acc += p.1;
        if acc > target {
            return p.0;
        }
    }
    probs[kept - 1].0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn argmax_first_of_ties_and_skips_nan() {
        assert_eq!(argmax(&[1.0, 3.0, 3.0, f32::NAN]), 1);
        assert_eq!(argmax(&[f32::NAN, -1.0]), 1);
    }

    #[test]
    fn top_p_keeps_the_nucleus() {
        // Probabilities ~ [0.64, 0.24, 0.09, 0.03] at temperature 1.
        let logits = [3.0f32, 2.0, 1.0, -0.2];
        // top_p 0.5: only the first token, whatever u.
        for u in [0.0, 0.5, 0.999] {
            assert_eq!(top_p_sample(&logits, 1.0, 0.5, u), 0);
        }
        // top_p 0.8: tokens 0 and 1; u near 1 takes the second.
        assert_eq!(top_p_sample(&logits, 1.0, 0.8, 0.99), 1);
        assert_eq!(top_p_sample(&logits, 1.0, 0.8, 0.1), 0);
        // top_p 1: every token reachable.
        assert_eq!(top_p_sample(&logits, 1.0, 1.0, 0.9999), 3);
    }

    #[test]
    fn sampling_is_seeded() {
        let logits: Vec<f32> = (0..50).map(|i| (i as f32 * 0.37).sin()).collect();
        let run = |seed| {
            let mut s = Sampler::new(&Sampling::TopP { temperature: 1.0, top_p: 0.95, seed }).expect("sampler");
            (0..20).map(|_| s.pick(&logits).expect("pick")).collect::<Vec<_>>()
        };
        assert_eq!(run(7), run(7));
        assert_ne!(run(7), run(8));
        let mut zero = Sampler::new(&Sampling::TopP { temperature: 0.0, top_p: 0.9, seed: 1 }).expect("sampler");
        assert_eq!(zero.pick(&logits).expect("pick"), argmax(&logits));
        assert!(Sampler::new(&Sampling::TopP { temperature: 1.0, top_p: 0.0, seed: 1 }).is_err());
    }

    #[test]
    fn present_names_map_to_past_names() {
        assert!(past_names("present.0.key").contains(&"past_key_values.0.key".to_string()));
        assert_eq!(past_names("present_conv.3"), vec!["past_conv.3".to_string()]);
        assert!(past_names("present_key_values.1.value").contains(&"past_key_values.1.value".to_string()));
        assert_eq!(past_names("output.past_key_values.layers.0.keys"), vec!["input.past_key_values.layers.0.keys".to_string()]);
        assert!(past_names("logits").is_empty());
    }
}
