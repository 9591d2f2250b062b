//! RetNet (fla's `MultiScaleRetention`), built from a base attention layer:
//! ```text
//! q = rope(x Wq)   k = rope(x Wk)   v = x Wv
//! o = simple_gla(q, k, v, g_h = log(1 - 2^(-5-h)))     fixed per-head decay, no beta
//! y = (rmsnorm_per_head(o) * w_onorm * silu(x Wg)) Wo
//! ```
//! RoPE on q and k as fla's RetNet (`rotate_half`), with the base attention's position tables
//! and frequencies (the first min(R, d_k) dims of each head; none when the base has no RoPE).
//! q and k are not activated or normalized (fla's default `feature_map=None`).
//! The decay is a constant `retention_log_decay` [H] broadcast over [B, T], not a weight.
use jetc_ir::{Graph, NodeId, Tensor, UpdateRule};

use super::parts::{Base, Built};
use super::MixerConfig;

/// The constant's name (it is not a learned weight).
pub const DECAY_NAME: &str = "retention_log_decay";

/// Builds the RetNet mixer of attention node `id` (layer `l`) without rewiring anything.
/// With `with_caches`, a layer that has a KV cache gets the cache input `past_state.{l}`
/// [B, H, d_k, d_v].
pub fn build(g: &mut Graph, id: NodeId, l: usize, cfg: &MixerConfig, seed: u64, with_caches: bool) -> Result<Built, String> {
    let base = Base::read(g, id, cfg)?;
    let mut m = base.start(g, l, &format!("layers.{l}.retnet."), seed, with_caches)?;
    let (h, dk, dv) = (m.d.heads, m.d.dk, m.d.dv);
    let gates = m.shared_weights(false, false)?;
    let gamma: Vec<f32> = (0..h).map(|i| (-(2f64.powi(-5 - i as i32))).ln_1p() as f32).collect();
    let gamma = m.e.weight(DECAY_NAME, Tensor::from_f32(vec![h], &gamma).map_err(|e| e.to_string())?)?;
    let past = m.cache_inputs(&[("state", vec![h, dk, dv])])?;

    let (wq, wk, wv) = (m.wq, m.wk, m.wv);
    let q = m.proj("q_proj", wq)?;
    let q = m.rope("q_rope", q, dk)?;
    let k = m.proj("k_proj", wk)?;
    let k = m.rope("k_rope", k, dk)?;
    let v = m.proj("v_proj", wv)?;
    let decay = m.broadcast_bt("log_decay", gamma, h)?;
    let (o, state) = m.recurrence("retention", UpdateRule::Gated, q, k, v, past[0], Some(decay), None)?;
    let y = m.output(o, &gates)?;
    m.finish(y, &[state])
}
