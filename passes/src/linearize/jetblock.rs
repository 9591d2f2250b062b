//! The JetBlock subgraph (jet-nemotron.md §2), built from a base attention layer: Gated
//! DeltaNet without short convolutions on q and k, with a dynamic convolution on v whose
//! per-token kernels come from a small generator on the block input.
use jetc_ir::{DynamicConvSpec, Graph, NodeId, Op, UpdateRule};

use super::init::normal;
use super::parts::{Base, Built, INIT_STD};
use super::MixerConfig;

/// Builds the JetBlock of attention node `id` (layer `l`) from the same input, without
/// rewiring anything. With `with_caches`, a layer that has a KV cache gets the cache inputs
/// `past_conv.{l}` [B, H*d_v, W] and `past_state.{l}` [B, H, d_k, d_v].
pub fn build(g: &mut Graph, id: NodeId, l: usize, cfg: &MixerConfig, seed: u64, with_caches: bool) -> Result<Built, String> {
    let base = Base::read(g, id, cfg)?;
    let (h, dv, w) = (base.dims.heads, base.dims.dv, base.dims.conv);
    if (h * dv) % cfg.reduction != 0 {
        return Err(format!("heads x d_v = {} is not divisible by the generator reduction {}", h * dv, cfg.reduction));
    }
    let generator = h * dv / cfg.reduction;
    let mut m = base.start(g, l, &format!("layers.{l}.jet."), seed, with_caches)?;
    let (hidden, dk) = (m.d.hidden, m.d.dk);
    let w1 = m.filled("dynamic_conv1d.kernel_generator.w1.weight", vec![hidden, generator], 0.0)?;
    let w2 = m.filled("dynamic_conv1d.kernel_generator.w2.weight", vec![generator, h * dv * w], 0.0)?;
    let b2 = normal(vec![h * dv * w], INIT_STD, &mut m.rng("b2")).map_err(|e| e.to_string())?;
    let b2 = m.e.weight("dynamic_conv1d.kernel_generator.w2.bias", b2)?;
    let gates = m.shared_weights(true, true)?;
    let past = m.cache_inputs(&[("conv", vec![h * dv, w]), ("state", vec![h, dk, dv])])?;

    let (wq, wk, wv) = (m.wq, m.wk, m.wv);
    let q = m.proj("q_proj", wq)?;
    let q = m.e.silu("q", q)?;
    let q = m.l2norm("q_norm", q)?;
    let k = m.proj("k_proj", wk)?;
    let k = m.e.silu("k", k)?;
    let k = m.l2norm("k_norm", k)?;
    let u = m.proj("v_proj", wv)?;
    let hg = m.proj("kernel_generator/w1", w1)?;
    let hg = m.e.silu("kernel_generator", hg)?;
    let ker = m.e.onnx("kernel_generator/w2", "MatMul", &[hg, w2], &[])?;
    let ker = m.e.onnx("kernel_generator/b2", "Add", &[ker, b2], &[])?;
    let conv = m.e.node("dynamic_conv", Op::DynamicConv(DynamicConvSpec { width: w }), &[Some(u), Some(ker), past[0]], 2)?;
    let beta = m.beta(gates.wb.ok_or("JetBlock needs beta")?)?;
    let decay = m.log_decay(gates.decay.as_ref().ok_or("JetBlock needs a decay")?)?;
    let (o, state) = m.recurrence("gated_delta_rule", UpdateRule::GatedDelta, q, k, conv[0], past[1], Some(decay), Some(beta))?;
    let y = m.output(o, &gates)?;
    m.finish(y, &[conv[1], state])
}
