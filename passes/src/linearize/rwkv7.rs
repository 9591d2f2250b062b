//! RWKV7 (fla's `RWKV7Attention`), built from a base attention layer:
//! ```text
//! x' = token_shift(x) (the previous token's x, from the cache at t = 0)   δ = x' - x
//! x_c = x + δ * mu_c  for c in r, w, k, v, a, g          (per-channel lerp weights [hidden])
//! r = x_r Wr   k = x_k Wk   v = x_v Wv
//! w = -0.6065 * sigmoid(tanh(x_w Ww1) Ww2 + bw)          log decay per key dim, in (-0.61, 0)
//! a = sigmoid((x_a Wa1) Wa2 + ba)                          in-context learning rate
//! g = sigmoid(x_g Wg1) Wg2                                 output gate
//! kk = l2norm_per_head(k * k_k)     k = k * (1 + (a - 1) * k_a)
//! o, S = dplr(q = r, w, k, v, a = -kk, b = kk * a, scale 1)
//!        S = Diag(exp(w)) S + (kk * a)(-kk^T S) + k v^T
//! o = groupnorm_per_head(o) + sum_per_head(r * k * r_k) * v      ("bonus" term)
//! y = (o * g) Wo
//! ```
//! RWKV7's value residual (every layer's v mixed with the first layer's) is left out: a
//! hybrid conversion picks layers individually and layer 0 may keep attention, so each
//! converted layer's v stands alone. Weight mapping: `Wr` from Wq, `Wk`, `Wv`, `Wo` from the
//! base (as every block). Init (RWKV-7's schedule at mid depth, since layers are converted
//! one by one): mu_c = 1 - (i / hidden)^(p_c / 2) with p = 0.2 (r, g), 0.9 (w, a), 0.7 (k, v);
//! `bw` = decay speeds -7 + 5 (n / (n_max))^(0.85 + 0.5^0.5) + 0.5 over the H*d_k channels;
//! the first LoRA factors ~ N(0, 0.02), the second factors of w and a zero (their biases set
//! the gates at init), `Wg2` ~ N(0, 0.02), `ba` 0, k_k 0.85, k_a 1, r_k ~ N(0, 0.02),
//! group-norm weight 1 and bias 0 (eps d_v * 1e-5). LoRA ranks follow fla's defaults:
//! max(32, round(2.5 sqrt(hidden) / 32) * 32) for w and a, and twice that for g.
use jetc_ir::{Attr, Graph, NodeId, UpdateRule};

use super::parts::{Base, Built, Mixer};
use super::MixerConfig;

/// fla's RWKV7 log-decay scale: w = -exp(-0.5) * sigmoid(...).
const W_SCALE: f32 = -0.606_530_66;

fn lora_rank(hidden: usize, factor: f64) -> usize {
    (((factor * (hidden as f64).sqrt()) / 32.0).round() as usize * 32).max(32)
}

/// Lerp weights mu = 1 - (i / hidden)^p.
fn mu(hidden: usize, p: f64) -> Vec<f32> {
    (0..hidden).map(|i| (1.0 - (i as f64 / hidden as f64).powf(p)) as f32).collect()
}

/// Builds the RWKV7 mixer of attention node `id` (layer `l`) without rewiring anything.
/// With `with_caches`, a layer that has a KV cache gets the cache inputs `past_shift.{l}`
/// [B, 1, hidden] (the block input of the last token) and `past_state.{l}` [B, H, d_k, d_v].
pub fn build(g: &mut Graph, id: NodeId, l: usize, cfg: &MixerConfig, seed: u64, with_caches: bool) -> Result<Built, String> {
    let base = Base::read(g, id, cfg)?;
    let mut m = base.start(g, l, &format!("layers.{l}.rwkv7."), seed, with_caches)?;
    let (hidden, h, dk, dv) = (m.d.hidden, m.d.heads, m.d.dk, m.d.dv);
    let (rank_wa, rank_g) = (lora_rank(hidden, 2.5), 2 * lora_rank(hidden, 2.5));
    let mut lerp = Vec::new();
    for (c, p) in [("r", 0.2), ("w", 0.9), ("k", 0.7), ("v", 0.7), ("a", 0.9), ("g", 0.2)] {
        lerp.push(m.values(&format!("x_{c}"), vec![hidden], &mu(hidden, p * 0.5))?);
    }
    let ww1 = m.normal("w_lora.0.weight", "w_lora.0", vec![hidden, rank_wa])?;
    let ww2 = m.filled("w_lora.2.weight", vec![rank_wa, h * dk], 0.0)?;
    let n = h * dk;
    let speed: Vec<f32> = (0..n)
        .map(|i| (-7.0 + 5.0 * (i as f64 / (n.max(2) - 1) as f64).powf(0.85 + 0.5f64.sqrt()) + 0.5) as f32)
        .collect();
    let bw = m.values("w_lora.2.bias", vec![n], &speed)?;
    let wa1 = m.normal("a_lora.0.weight", "a_lora.0", vec![hidden, rank_wa])?;
    let wa2 = m.filled("a_lora.1.weight", vec![rank_wa, n], 0.0)?;
    let ba = m.filled("a_lora.1.bias", vec![n], 0.0)?;
    let wg1 = m.normal("g_lora.0.weight", "g_lora.0", vec![hidden, rank_g])?;
    let wg2 = m.normal("g_lora.2.weight", "g_lora.2", vec![rank_g, h * dv])?;
    let k_k = m.filled("k_k", vec![n], 0.85)?;
    let k_a = m.filled("k_a", vec![n], 1.0)?;
    let r_k = m.normal("r_k", "r_k", vec![n])?;
    let gn_w = m.filled("g_norm.weight", vec![h, dv], 1.0)?;
    let gn_b = m.filled("g_norm.bias", vec![h, dv], 0.0)?;
    let ones = m.filled("g_norm/unit_scale", vec![dv], 1.0)?;
    let w_scale = m.e.scalar("w/scale", W_SCALE)?;
    let one = m.e.scalar("const/one", 1.0)?;
    let past = m.cache_inputs(&[("shift", vec![1, hidden]), ("state", vec![h, dk, dv])])?;

    // Token shift: x' = [past, x][:, :T]; the new cache is the last token of x.
    let x = m.x;
    let prev_first = match past[0] {
        Some(p) => p,
        None => zeros_like_first_token(&mut m, x)?,
    };
    let cat = m.e.onnx("shift/concat", "Concat", &[prev_first, x], &[("axis", Attr::Int(1))])?;
    let (s0, s_end, ax1) = (m.e.ints("shift/start", &[0])?, m.e.ints("shift/end", &[-1])?, m.e.ints("shift/axis", &[1])?);
    let shifted = m.e.onnx("shift", "Slice", &[cat, s0, s_end, ax1], &[])?;
    let (last, max) = (m.e.ints("shift/last", &[-1])?, m.e.ints("shift/max", &[i64::MAX])?);
    // The last token of [past, x] (one token long whatever T is).
    let present_shift = m.e.onnx("shift/present", "Slice", &[cat, last, max, ax1], &[])?;
    let delta = m.e.onnx("shift/delta", "Sub", &[shifted, x], &[])?;
    let mut xc = Vec::new();
    for (c, mu) in ["r", "w", "k", "v", "a", "g"].iter().zip(&lerp) {
        let d = m.e.onnx(&format!("x_{c}/delta"), "Mul", &[delta, *mu], &[])?;
        xc.push(m.e.onnx(&format!("x_{c}"), "Add", &[x, d], &[])?);
    }
    let [xr, xw, xk, xv, xa, xg] = [xc[0], xc[1], xc[2], xc[3], xc[4], xc[5]];

    let (wq, wk, wv) = (m.wq, m.wk, m.wv);
    let r = m.e.onnx("r_proj", "MatMul", &[xr, wq], &[])?;
    let k = m.e.onnx("k_proj", "MatMul", &[xk, wk], &[])?;
    let v = m.e.onnx("v_proj", "MatMul", &[xv, wv], &[])?;

    let lw = m.e.onnx("w_lora/0", "MatMul", &[xw, ww1], &[])?;
    let lw = m.e.onnx("w_lora/tanh", "Tanh", &[lw], &[])?;
    let lw = m.e.onnx("w_lora/2", "MatMul", &[lw, ww2], &[])?;
    let lw = m.e.onnx("w_lora/bias", "Add", &[lw, bw], &[])?;
    let lw = m.e.onnx("w/sigmoid", "Sigmoid", &[lw], &[])?;
    let w = m.e.onnx("w", "Mul", &[lw, w_scale], &[])?;

    let la = m.e.onnx("a_lora/0", "MatMul", &[xa, wa1], &[])?;
    let la = m.e.onnx("a_lora/1", "MatMul", &[la, wa2], &[])?;
    let la = m.e.onnx("a_lora/bias", "Add", &[la, ba], &[])?;
    let a = m.e.onnx("a", "Sigmoid", &[la], &[])?;

    let lg = m.e.onnx("g_lora/0", "MatMul", &[xg, wg1], &[])?;
    let lg = m.e.onnx("g_lora/sigmoid", "Sigmoid", &[lg], &[])?;
    let gate = m.e.onnx("g_lora/2", "MatMul", &[lg, wg2], &[])?;

    let kk = m.e.onnx("kk/scaled", "Mul", &[k, k_k], &[])?;
    let kk = m.l2norm("kk", kk)?;
    let am1 = m.e.onnx("k/a_minus_1", "Sub", &[a, one], &[])?;
    let t = m.e.onnx("k/times_k_a", "Mul", &[am1, k_a], &[])?;
    let t = m.e.onnx("k/one_plus", "Add", &[t, one], &[])?;
    let k = m.e.onnx("k", "Mul", &[k, t], &[])?;
    let neg_kk = m.e.onnx("dplr_a", "Neg", &[kk], &[])?;
    let b = m.e.onnx("dplr_b", "Mul", &[kk, a], &[])?;
    let ins = [Some(r), Some(k), Some(v), past[1], Some(w), None, Some(neg_kk), Some(b)];
    let (o, state) = m.recurrence_with("dplr", UpdateRule::Dplr, 1.0, &ins)?;

    // Group norm per head (LayerNormalization over d_v, then the [H, d_v] affine).
    let oh = m.split_heads("o_heads", o)?;
    let eps = dv as f32 * 1e-5;
    let on = m.e.onnx("g_norm", "LayerNormalization", &[oh, ones], &[("axis", Attr::Int(-1)), ("epsilon", Attr::Float(eps))])?;
    let on = m.e.onnx("g_norm/scale", "Mul", &[on, gn_w], &[])?;
    let on = m.e.onnx("g_norm/bias", "Add", &[on, gn_b], &[])?;
    // Bonus: sum_per_head(r * k * r_k) * v.
    let rk = m.e.onnx("bonus/rk", "Mul", &[r, k], &[])?;
    let rk = m.e.onnx("bonus/rk_rk", "Mul", &[rk, r_k], &[])?;
    let rk = m.split_heads("bonus/heads", rk)?;
    let last_axis = m.e.ints("bonus/axis", &[-1])?;
    let sum = m.e.onnx("bonus/sum", "ReduceSum", &[rk, last_axis], &[("keepdims", Attr::Int(1))])?;
    let vh = m.split_heads("bonus/v_heads", v)?;
    let bonus = m.e.onnx("bonus", "Mul", &[sum, vh], &[])?;
    let o = m.e.onnx("o_plus_bonus", "Add", &[on, bonus], &[])?;
    let o = m.merge_heads("o_merged", o)?;
    let o = m.e.onnx("o_gated", "Mul", &[o, gate], &[])?;
    let wo = m.wo;
    let y = m.e.onnx("o_proj", "MatMul", &[o, wo], &[])?;
    m.finish(y, &[present_shift, state])
}

/// Zeros [B, 1, hidden] for the token before the first (a model without caches).
fn zeros_like_first_token(m: &mut Mixer, x: jetc_ir::Outlet) -> Result<jetc_ir::Outlet, String> {
    let (s0, s1, ax1) = (m.e.ints("shift/first_start", &[0])?, m.e.ints("shift/first_end", &[1])?, m.e.ints("shift/first_axis", &[1])?);
    let first = m.e.onnx("shift/first", "Slice", &[x, s0, s1, ax1], &[])?;
    let zero = m.e.scalar("shift/zero", 0.0)?;
    m.e.onnx("shift/zeros", "Mul", &[first, zero], &[])
}
