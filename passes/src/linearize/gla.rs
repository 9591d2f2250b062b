//! GLA (fla's `GatedLinearAttention` layer with its defaults: no feature map, no short
//! convolution, swish output gate), built from a base attention layer:
//! ```text
//! q = x Wq   k = x Wk   v = x Wv
//! gk = logsigmoid((x Wgk1) Wgk2 + bgk) / 16               [B, T, H*d_k], per key dimension
//! o = gla(q, k, v, gk)                                     S = Diag(exp(gk)) S + k v^T
//! y = (rmsnorm_per_head(o) * w_onorm * silu(x Wg)) Wo
//! ```
//! The decay goes through a low-rank projection (rank 16, fla's `gate_low_rank_dim`) and is
//! divided by fla's `gate_logit_normalizer` (16). `logsigmoid(z)` is written `-softplus(-z)`.
//! New weights: `gk_proj.0.weight` [hidden, 16], `gk_proj.1.weight` [16, H*d_k] and
//! `gk_proj.1.bias` ~ N(0, 0.02) (a decay of about exp(-0.043) per token at init).
use jetc_ir::{Graph, NodeId, UpdateRule};

use super::parts::{Base, Built};
use super::MixerConfig;

/// fla's `gate_low_rank_dim`.
const GATE_RANK: usize = 16;
/// fla's `gate_logit_normalizer`.
const GATE_NORMALIZER: f32 = 16.0;

/// Builds the GLA mixer of attention node `id` (layer `l`) without rewiring anything. With
/// `with_caches`, a layer that has a KV cache gets the cache input `past_state.{l}`
/// [B, H, d_k, d_v].
pub fn build(g: &mut Graph, id: NodeId, l: usize, cfg: &MixerConfig, seed: u64, with_caches: bool) -> Result<Built, String> {
    let base = Base::read(g, id, cfg)?;
    let mut m = base.start(g, l, &format!("layers.{l}.gla."), seed, with_caches)?;
    let (hidden, h, dk, dv) = (m.d.hidden, m.d.heads, m.d.dk, m.d.dv);
    let gates = m.shared_weights(false, false)?;
    let w1 = m.normal("gk_proj.0.weight", "gk_proj.0", vec![hidden, GATE_RANK])?;
    let w2 = m.normal("gk_proj.1.weight", "gk_proj.1", vec![GATE_RANK, h * dk])?;
    let b2 = m.normal("gk_proj.1.bias", "gk_proj.1.bias", vec![h * dk])?;
    let normalizer = m.e.scalar("gk_proj/normalizer", -1.0 / GATE_NORMALIZER)?;
    let past = m.cache_inputs(&[("state", vec![h, dk, dv])])?;

    let (wq, wk, wv) = (m.wq, m.wk, m.wv);
    let q = m.proj("q_proj", wq)?;
    let k = m.proj("k_proj", wk)?;
    let v = m.proj("v_proj", wv)?;
    let z = m.proj("gk_proj/0", w1)?;
    let z = m.e.onnx("gk_proj/1", "MatMul", &[z, w2], &[])?;
    let z = m.e.onnx("gk_proj/bias", "Add", &[z, b2], &[])?;
    // logsigmoid(z) / 16 = softplus(-z) * (-1/16).
    let nz = m.e.onnx("gk/neg", "Neg", &[z], &[])?;
    let sp = m.e.onnx("gk/softplus", "Softplus", &[nz], &[])?;
    let gk = m.e.onnx("gk", "Mul", &[sp, normalizer], &[])?;
    let (o, state) = m.recurrence("gla", UpdateRule::GatedVector, q, k, v, past[0], Some(gk), None)?;
    let y = m.output(o, &gates)?;
    m.finish(y, &[state])
}
