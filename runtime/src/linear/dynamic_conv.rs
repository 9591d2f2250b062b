//! JetBlock's dynamic causal convolution on the values: `jet-nemotron.md` §2 (`ker`, `v`
//! lines; "Caches: conv cache [B, Dv, W] of raw u (last W tokens)"):
//! ```text
//! v[t, c] = silu( sum_{w=0..W-1} ker[t, c, w] * u[t - W + 1 + w, c] )
//! ```
//! with per-token kernels `ker [B, T, C, W]` (flat index `c * W + w`, as the reference's
//! `'b t (d w) -> b t d w'`), raw values `u [B, T, C]`, and `u` before the sequence taken from
//! the cache (zeros without one).
//!
//! **Cache convention** (the reference's `DynamicShortConvolution`, `[B, C, W]`): the cache
//! holds the RAW `u` of the last `W` tokens, oldest first, `cache[b, c, W - 1]` the newest.
//! - prefill of `T` tokens reads `u[τ] = cache[b, c, W + τ]` for `τ < 0`; only positions
//!   `1..W` are ever read (the oldest slot is outside the next token's window), and returns the
//!   last `W` raw values of `concat(cache, u)` (so `T < W` shifts the old values left);
//! - decode ([`dynamic_conv_step`]) first shifts the cache left by one and writes the new `u`
//!   at `W - 1`, then `v = silu(sum_w ker[w] * cache[w])` — the reference's `_step_naive`.
//!
//! Both give the same outputs and caches, token by token or in one pass.
//! (The reference's naive prefill ignores an incoming cache and, for `T < W`, overwrites only
//! the last `T` slots without shifting; its Triton cache path and this module do not.)
use rayon::prelude::*;

use super::{check_len, dims_err, prod};
use crate::error::Result;

/// Sizes of a dynamic convolution: `channels = Dv`, `width = W` (4 in Jet-Nemotron).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ConvDims {
    pub batch: usize,
    pub seq: usize,
    pub channels: usize,
    pub width: usize,
}

/// Output of [`dynamic_conv`].
#[derive(Clone, Debug, PartialEq)]
pub struct ConvOutput {
    /// `[B, T, C]`.
    pub v: Vec<f32>,
    /// The updated cache `[B, C, W]`.
    pub cache: Vec<f32>,
}

pub use crate::math::silu;

/// Checks sizes; returns (u, ker, cache) element counts.
fn check(d: &ConvDims) -> Result<(usize, usize, usize)> {
    if d.width == 0 {
        return Err(dims_err("convolution width must be at least 1"));
    }
    let u = prod(&[d.batch, d.seq, d.channels])?;
    Ok((u, prod(&[u, d.width])?, prod(&[d.batch, d.channels, d.width])?))
}

/// Prefill: the convolution of `u [B, T, C]` with `ker [B, T, C, W]`, past values from
/// `cache [B, C, W]` (zeros when absent); returns `v` and the new cache.
pub fn dynamic_conv(dims: &ConvDims, u: &[f32], ker: &[f32], cache: Option<&[f32]>) -> Result<ConvOutput> {
    let (nu, nk, nc) = check(dims)?;
    check_len("u", u, nu)?;
    check_len("ker", ker, nk)?;
    if let Some(c) = cache {
        check_len("conv cache", c, nc)?;
    }
    let (seq, ch, w) = (dims.seq, dims.channels, dims.width);
    // Raw u at time tau (may be negative) of batch b, channel c.
    let value = |b: usize, tau: isize, c: usize| -> f32 {
        if tau >= 0 {
            u[(b * seq + tau as usize) * ch + c]
        } else {
            // tau >= -W here, so W + tau is a valid slot.
            cache.map_or(0.0, |cc| cc[(b * ch + c) * w + (w as isize + tau) as usize])
        }
    };
    let mut v = vec![0.0f32; nu];
    if ch > 0 {
        v.par_chunks_mut(ch).enumerate().for_each(|(row, out)| {
            let (b, t) = (row / seq, row % seq);
            for (c, o) in out.iter_mut().enumerate() {
                let kc = &ker[(row * ch + c) * w..(row * ch + c + 1) * w];
                let mut acc = 0.0f32;
                for (i, kw) in kc.iter().enumerate() {
                    acc += kw * value(b, t as isize - w as isize + 1 + i as isize, c);
                }
                *o = silu(acc);
            }
        });
    }
    let mut new_cache = vec![0.0f32; nc];
    for b in 0..dims.batch {
        for c in 0..ch {
            for p in 0..w {
                new_cache[(b * ch + c) * w + p] = value(b, seq as isize - w as isize + p as isize, c);
            }
        }
    }
    Ok(ConvOutput { v, cache: new_cache })
}

/// One decode step (`dims.seq` must be 1): `u [B, C]`, `ker [B, C, W]`; shifts `cache
/// [B, C, W]` left, appends `u`, returns `v [B, C]`.
pub fn dynamic_conv_step(dims: &ConvDims, u: &[f32], ker: &[f32], cache: &mut [f32]) -> Result<Vec<f32>> {
    if dims.seq != 1 {
        return Err(dims_err(format!("a decode step has seq 1, got {}", dims.seq)));
    }
    let (nu, nk, nc) = check(dims)?;
    check_len("u", u, nu)?;
    check_len("ker", ker, nk)?;
    check_len("conv cache", cache, nc)?;
    let w = dims.width;
    let mut v = vec![0.0f32; nu];
    for (i, (o, &x)) in v.iter_mut().zip(u).enumerate() {
        let slot = &mut cache[i * w..(i + 1) * w];
        slot.copy_within(1.., 0);
        slot[w - 1] = x;
        let acc: f32 = slot.iter().zip(&ker[i * w..(i + 1) * w]).map(|(a, b)| a * b).sum();
        *o = silu(acc);
    }
    Ok(v)
}

#[cfg(test)]
mod tests {
    use super::super::testutil::*;
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn goldens() {
        for name in golden_names("dconv_") {
            let gd = Golden::load(&name);
            let s = gd.shape("ker");
            let dims = ConvDims { batch: s[0], seq: s[1], channels: s[2], width: s[3] };
            let (u, ker, cache) = (gd.get("u"), gd.get("ker"), gd.opt("cache"));
            let out = dynamic_conv(&dims, u, ker, cache).unwrap();
            let (ev, ec) = (rel_rms(&out.v, gd.get("v")), rel_rms(&out.cache, gd.get("new_cache")));
            println!("GOLDEN dconv prefill {name}: v {ev:.3e} cache {ec:.3e}");
            assert!(ev < GOLDEN_TOL && ec < GOLDEN_TOL, "{name}: v {ev:e} cache {ec:e}");
            // Step by step from the same cache.
            let mut c = cache.map_or_else(|| vec![0.0; out.cache.len()], <[f32]>::to_vec);
            let mut vs = vec![0.0f32; out.v.len()];
            let one = ConvDims { seq: 1, ..dims };
            let (ch, w) = (dims.channels, dims.width);
            for t in 0..dims.seq {
                let pick = |x: &[f32], d: usize| -> Vec<f32> {
                    (0..dims.batch)
                        .flat_map(|b| x[(b * dims.seq + t) * d..(b * dims.seq + t + 1) * d].to_vec())
                        .collect()
                };
                let v = dynamic_conv_step(&one, &pick(u, ch), &pick(ker, ch * w), &mut c).unwrap();
                for b in 0..dims.batch {
                    vs[(b * dims.seq + t) * ch..(b * dims.seq + t + 1) * ch].copy_from_slice(&v[b * ch..(b + 1) * ch]);
                }
            }
            let (ev, ec) = (rel_rms(&vs, gd.get("v")), rel_rms(&c, gd.get("new_cache")));
            println!("GOLDEN dconv decode {name}: v {ev:.3e} cache {ec:.3e}");
            assert!(ev < GOLDEN_TOL && ec < GOLDEN_TOL, "{name} decode: v {ev:e} cache {ec:e}");
            // Off-by-one in the kernel tap order is caught: reverse each kernel.
            let rev: Vec<f32> = ker.chunks(w).flat_map(|k| k.iter().rev().copied().collect::<Vec<_>>()).collect();
            let bad = dynamic_conv(&dims, u, &rev, cache).unwrap();
            assert!(rel_rms(&bad.v, gd.get("v")) > 100.0 * GOLDEN_TOL, "{name}: reversed taps still match");
        }
    }

    #[test]
    fn small_example_by_hand() {
        // B = 1, T = 2, C = 1, W = 3, cache holds u[-3..-1] = [9, 1, 2].
        let dims = ConvDims { batch: 1, seq: 2, channels: 1, width: 3 };
        let u = [3.0, 4.0];
        let ker = [1.0, 10.0, 100.0, 0.5, 0.25, 0.125];
        let out = dynamic_conv(&dims, &u, &ker, Some(&[9.0, 1.0, 2.0])).unwrap();
        let want0 = 1.0 * 1.0 + 10.0 * 2.0 + 100.0 * 3.0;
        let want1 = 0.5 * 2.0 + 0.25 * 3.0 + 0.125 * 4.0;
        assert_eq!(out.v, vec![silu(want0), silu(want1)]);
        assert_eq!(out.cache, vec![2.0, 3.0, 4.0]);
        // Without a cache the past is zero.
        let out = dynamic_conv(&dims, &u, &ker, None).unwrap();
        assert_eq!(out.v, vec![silu(300.0), silu(0.25 * 3.0 + 0.125 * 4.0)]);
        assert_eq!(out.cache, vec![0.0, 3.0, 4.0]);
        // T = 0 keeps the cache.
        let empty = ConvDims { seq: 0, ..dims };
        assert_eq!(dynamic_conv(&empty, &[], &[], Some(&[1.0, 2.0, 3.0])).unwrap().cache, vec![1.0, 2.0, 3.0]);
        assert!(dynamic_conv(&ConvDims { width: 0, ..dims }, &u, &[], None).is_err());
        assert!(dynamic_conv(&dims, &u, &ker[..5], None).is_err());
        assert!(dynamic_conv_step(&dims, &u, &ker, &mut [0.0; 3]).is_err());
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

        #[test]
        fn prefill_equals_decode_and_split_prefill(batch in 1usize..3, seq in 0usize..20, ch in 1usize..6, width in 1usize..6, split in 0usize..20, seed in 0u64..1000, with_cache: bool) {
            let mut r = SplitMix::new(seed);
            let dims = ConvDims { batch, seq, channels: ch, width };
            let u = r.vec(batch * seq * ch, -2.0, 2.0);
            let ker = r.vec(batch * seq * ch * width, -1.0, 1.0);
            let cache0 = if with_cache { r.vec(batch * ch * width, -1.0, 1.0) } else { vec![0.0; batch * ch * width] };
            let full = dynamic_conv(&dims, &u, &ker, Some(&cache0)).unwrap();
            if !with_cache {
                prop_assert_eq!(&full, &dynamic_conv(&dims, &u, &ker, None).unwrap());
            }
            let pick = |x: &[f32], d: usize, t0: usize, t1: usize| -> Vec<f32> {
                (0..batch).flat_map(|b| x[(b * seq + t0) * d..(b * seq + t1) * d].to_vec()).collect()
            };
            // Token by token.
            let mut c = cache0.clone();
            for t in 0..seq {
                let v = dynamic_conv_step(&ConvDims { seq: 1, ..dims }, &pick(&u, ch, t, t + 1), &pick(&ker, ch * width, t, t + 1), &mut c).unwrap();
                prop_assert_eq!(v, pick(&full.v, ch, t, t + 1));
            }
            prop_assert_eq!(&c, &full.cache);
            // Two prefills.
            let s = split.min(seq);
            let a = dynamic_conv(&ConvDims { seq: s, ..dims }, &pick(&u, ch, 0, s), &pick(&ker, ch * width, 0, s), Some(&cache0)).unwrap();
            let b = dynamic_conv(&ConvDims { seq: seq - s, ..dims }, &pick(&u, ch, s, seq), &pick(&ker, ch * width, s, seq), Some(&a.cache)).unwrap();
            prop_assert_eq!(a.v, pick(&full.v, ch, 0, s));
            prop_assert_eq!(b.v, pick(&full.v, ch, s, seq));
            prop_assert_eq!(b.cache, full.cache);
        }
    }
}
