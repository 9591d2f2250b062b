//! Mamba2 (fla's / mamba_ssm's `Mamba2` mixer, SSD), built from a base attention layer, with
//! one B/C group per head (`ngroups = H`, so B and C take the roles of k and q head by head):
//! ```text
//! z = x Wz   xs = x Wx   B = x WB   C = x WC   dt = softplus(x Wdt + dt_bias)   [B, T, H]
//! xs, B, C = silu(conv(xs)), silu(conv(B)), silu(conv(C))      static causal short convs
//! o = ssd(q = C, k = B, v = xs * dt, g = -exp(A_log) * dt)     S = exp(g) S + k v^T, scale 1
//! y = o + D * xs
//! y = rmsnorm_per_head(y * silu(z)) * w_norm        (norm_before_gate = False, group = head)
//! out = y Wo
//! ```
//! Sizes: state size N = d_k, head dim P = d_v. Weight mapping from the base attention:
//! `WC` from Wq, `WB` from Wk, `Wx` from Wv (as every block), `Wo` from Wo. New weights:
//! `z_proj.weight`, `dt_proj.weight` ~ N(0, 0.02), `A_log = log U(1, 16)` (mamba's
//! `A_init_range`), `dt_bias = softplus^-1(dt)` with dt log-uniform in [1e-3, 0.1], `D = 1`,
//! the short convolutions start as the identity, norm weight 1.
//! Weights are named `layers.{l}.mamba2.*` with the base projections kept as
//! `q_proj`/`k_proj`/`v_proj`/`o_proj` (C, B, x and out).
use jetc_ir::{Graph, NodeId, Op, RmsNormSpec, Tensor, UpdateRule};

use super::init::{a_log_in, dt_bias};
use super::parts::{Base, Built, LOG_DECAY_FLOOR};
use super::MixerConfig;

/// eps of the gated output RMSNorm (mamba's `rmsnorm` eps).
const NORM_EPS: f32 = 1e-5;

/// Builds the Mamba2 mixer of attention node `id` (layer `l`) without rewiring anything.
/// With `with_caches`, a layer that has a KV cache gets the cache inputs `past_conv_x.{l}`
/// [B, H*d_v, W], `past_conv_b.{l}`, `past_conv_c.{l}` [B, H*d_k, W] (raw projections of the
/// last W tokens) and `past_state.{l}` [B, H, d_k, d_v].
pub fn build(g: &mut Graph, id: NodeId, l: usize, cfg: &MixerConfig, seed: u64, with_caches: bool) -> Result<Built, String> {
    let base = Base::read(g, id, cfg)?;
    let mut m = base.start(g, l, &format!("layers.{l}.mamba2."), seed, with_caches)?;
    let (hidden, h, dk, dv, w) = (m.d.hidden, m.d.heads, m.d.dk, m.d.dv, m.d.conv);
    let wz = m.normal("z_proj.weight", "z_proj", vec![hidden, h * dv])?;
    let wdt = m.normal("dt_proj.weight", "dt_proj", vec![hidden, h])?;
    let alog = a_log_in(h, 1.0, 16.0, &mut m.rng("A_log")).map_err(|e| e.to_string())?;
    let alog = m.e.weight("A_log", alog)?;
    let dtb = dt_bias(h, &mut m.rng("dt_bias")).map_err(|e| e.to_string())?;
    let dtb = m.e.weight("dt_bias", dtb)?;
    let d_skip = m.filled("D", vec![h], 1.0)?;
    let wnorm = m.filled("norm.weight", vec![dv], 1.0)?;
    let floor = m.e.weight("log_decay_floor", Tensor::scalar_f32(LOG_DECAY_FLOOR))?;
    let last_axis = m.e.ints("axes/last", &[-1])?;
    let past = m.cache_inputs(&[
        ("conv_x", vec![h * dv, w]),
        ("conv_b", vec![h * dk, w]),
        ("conv_c", vec![h * dk, w]),
        ("state", vec![h, dk, dv]),
    ])?;

    let (wq, wk, wv) = (m.wq, m.wk, m.wv);
    let xs = m.proj("x_proj", wv)?;
    let (xs, conv_x) = m.short_conv("x_conv1d", xs, h * dv, past[0])?;
    let b = m.proj("b_proj", wk)?;
    let (b, conv_b) = m.short_conv("b_conv1d", b, h * dk, past[1])?;
    let c = m.proj("c_proj", wq)?;
    let (c, conv_c) = m.short_conv("c_conv1d", c, h * dk, past[2])?;

    // dt [B, T, H] and the log decay A * dt.
    let dt = m.proj("dt_proj", wdt)?;
    let dt = m.e.onnx("dt/bias", "Add", &[dt, dtb], &[])?;
    let dt = m.e.onnx("dt", "Softplus", &[dt], &[])?;
    let ea = m.e.onnx("A/exp", "Exp", &[alog], &[])?;
    let na = m.e.onnx("A", "Neg", &[ea], &[])?;
    let decay = m.e.onnx("log_decay", "Mul", &[dt, na], &[])?;
    let decay = m.e.onnx("log_decay_floored", "Max", &[decay, floor], &[])?;

    // v = xs * dt per head.
    let xh = m.split_heads("x_heads", xs)?;
    let dt4 = m.e.onnx("dt/per_head", "Unsqueeze", &[dt, last_axis], &[])?;
    let vh = m.e.onnx("x_dt", "Mul", &[xh, dt4], &[])?;
    let v = m.merge_heads("v", vh)?;
    let state_in = past[3];
    let (o, state) = m.recurrence_with("ssd", UpdateRule::Gated, 1.0, &[Some(c), Some(b), Some(v), state_in, Some(decay)])?;

    // y = o + D * xs, then the gated per-head norm.
    let d4 = m.e.onnx("D/per_head", "Unsqueeze", &[d_skip, last_axis], &[])?;
    let skip = m.e.onnx("D_x", "Mul", &[xh, d4], &[])?;
    let skip = m.merge_heads("D_x/merged", skip)?;
    let y = m.e.onnx("y", "Add", &[o, skip], &[])?;
    let z = m.proj("z_proj", wz)?;
    let z = m.e.silu("z", z)?;
    let y = m.e.onnx("y_gated", "Mul", &[y, z], &[])?;
    let yh = m.split_heads("y_heads", y)?;
    let yh = m.e.node("norm", Op::RmsNorm(RmsNormSpec { eps: NORM_EPS }), &[Some(yh), Some(wnorm)], 1)?[0];
    let y = m.merge_heads("y_normed", yh)?;
    let wo = m.wo;
    let out = m.e.onnx("o_proj", "MatMul", &[y, wo], &[])?;
    m.finish(out, &[conv_x, conv_b, conv_c, state])
}
