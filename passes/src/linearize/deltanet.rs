//! Gated DeltaNet and DeltaNet (fla's `GatedDeltaNet` and `DeltaNet` layers, with the
//! output gate), built from a base attention layer:
//! ```text
//! q = l2norm(silu(conv_q(x Wq)))   k = l2norm(silu(conv_k(x Wk)))   v = silu(conv_v(x Wv))
//! beta = sigmoid(x Wb)
//! g = max(-exp(A_log) softplus(x Wa + dt_bias), -88)                 (gated only)
//! o = gated_delta_rule(q, k, v, g, beta) | delta_rule(q, k, v, beta)
//! y = (rmsnorm_per_head(o) * w_onorm * silu(x Wg)) Wo
//! ```
//! Each conv is a static causal depthwise short convolution of width W (`MixerConfig::conv`),
//! expressed as `DynamicConv` with its constant kernel broadcast over [B, T]; the kernels
//! start as the identity (last tap 1), so at init the block sees the projections unchanged.
use jetc_ir::{Graph, NodeId, UpdateRule};

use super::parts::{Base, Built};
use super::MixerConfig;

/// Builds the (gated) DeltaNet of attention node `id` (layer `l`) without rewiring anything.
/// With `with_caches`, a layer that has a KV cache gets the cache inputs
/// `past_conv_q.{l}`, `past_conv_k.{l}` [B, H*d_k, W], `past_conv_v.{l}` [B, H*d_v, W] (raw
/// projections of the last W tokens) and `past_state.{l}` [B, H, d_k, d_v].
pub fn build(g: &mut Graph, id: NodeId, l: usize, cfg: &MixerConfig, seed: u64, with_caches: bool, gated: bool) -> Result<Built, String> {
    let base = Base::read(g, id, cfg)?;
    let prefix = if gated { "gated_deltanet" } else { "deltanet" };
    let mut m = base.start(g, l, &format!("layers.{l}.{prefix}."), seed, with_caches)?;
    let (h, dk, dv, w) = (m.d.heads, m.d.dk, m.d.dv, m.d.conv);
    let gates = m.shared_weights(true, gated)?;
    let past = m.cache_inputs(&[
        ("conv_q", vec![h * dk, w]),
        ("conv_k", vec![h * dk, w]),
        ("conv_v", vec![h * dv, w]),
        ("state", vec![h, dk, dv]),
    ])?;

    let (wq, wk, wv) = (m.wq, m.wk, m.wv);
    let q = m.proj("q_proj", wq)?;
    let (q, conv_q) = m.short_conv("q_conv1d", q, h * dk, past[0])?;
    let q = m.l2norm("q_norm", q)?;
    let k = m.proj("k_proj", wk)?;
    let (k, conv_k) = m.short_conv("k_conv1d", k, h * dk, past[1])?;
    let k = m.l2norm("k_norm", k)?;
    let v = m.proj("v_proj", wv)?;
    let (v, conv_v) = m.short_conv("v_conv1d", v, h * dv, past[2])?;
    let beta = m.beta(gates.wb.ok_or("the delta rule needs beta")?)?;
    let (o, state) = match &gates.decay {
        Some(d) => {
            let decay = m.log_decay(d)?;
            m.recurrence("gated_delta_rule", UpdateRule::GatedDelta, q, k, v, past[3], Some(decay), Some(beta))?
        }
        None => m.recurrence("delta_rule", UpdateRule::Delta, q, k, v, past[3], None, Some(beta))?,
    };
    let y = m.output(o, &gates)?;
    m.finish(y, &[conv_q, conv_k, conv_v, state])
}
