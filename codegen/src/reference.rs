//! CPU references of the kernels' contracts (what each launch must compute, in f32), built
//! on jetc-runtime's reference math (`linear::gated_delta`, `linear::dynamic_conv`), plus CPU
//! emulations of the two non-obvious GPU algorithms, step for step as the templates do them:
//! - [`emulate_jet_decode`]: one pass over S for S^T k and S^T q, then
//!   `u = beta (v - e^g S^T k)`, `o = e^g S^T q + u (k . q)`, `S = e^g S + k u^T`;
//! - [`emulate_gdn_chunk`]: pass 1 (gates, A, Aqk, T = (I + A)^-1 by 16x16 diagonal blocks
//!   and block rows, W, U) and pass 2 (V_new, O, state) per chunk.
//! Tests check the emulations against the references, so the algorithms are verified without
//! a GPU; the GPU checks then compare kernels against the references.
use jetc_runtime::linear::dynamic_conv::{dynamic_conv, ConvDims};
use jetc_runtime::linear::gated_delta::{gated_delta_log_decay, gated_delta_recurrent, GatedDeltaInputs};
use jetc_runtime::linear::Dims;

use crate::error::{CodegenError, Result};

pub fn silu(x: f32) -> f32 {
    x / (1.0 + (-x).exp())
}

pub fn sigmoid(x: f32) -> f32 {
    1.0 / (1.0 + (-x).exp())
}

fn rt(e: impl std::fmt::Display) -> CodegenError {
    CodegenError::Other(format!("CPU reference: {e}"))
}

/// Per-head silu + L2 norm (x / sqrt(sum x^2 + eps)) times `mult`, in place.
pub fn silu_l2norm(x: &mut [f32], d: usize, eps: f32, mult: f32, silu_first: bool, l2: bool) {
    for h in x.chunks_mut(d) {
        if silu_first {
            h.iter_mut().for_each(|v| *v = silu(*v));
        }
        let inv = if l2 { 1.0 / (h.iter().map(|v| v * v).sum::<f32>() + eps).sqrt() } else { 1.0 };
        h.iter_mut().for_each(|v| *v *= inv * mult);
    }
}

/// Sizes and scalars of a JetBlock mixer call (after the projections).
#[derive(Clone, Copy, Debug)]
pub struct MixerShape {
    pub batch: usize,
    pub seq: usize,
    pub heads: usize,
    pub dk: usize,
    pub dv: usize,
    pub width: usize,
    pub scale: f32,
    pub l2_eps: f32,
    pub norm_eps: f32,
}

/// The projections' outputs and the parameters a JetBlock mixer kernel reads (f32 here).
/// Layouts: q, k [B,T,H*dk]; u, gate [B,T,H*dv]; ker [B,T,H*dv*W]; a, b [B,T,H];
/// conv [B,H*dv,W]; state [B,H,dk,dv].
#[derive(Clone, Debug)]
pub struct MixerInputs {
    pub q: Vec<f32>,
    pub k: Vec<f32>,
    pub u: Vec<f32>,
    pub ker: Vec<f32>,
    pub a: Vec<f32>,
    pub b: Vec<f32>,
    pub gate: Vec<f32>,
    pub a_log: Vec<f32>,
    pub dt_bias: Vec<f32>,
    pub o_norm: Vec<f32>,
    pub conv: Vec<f32>,
    pub state: Vec<f32>,
}

/// What the mixer produces: the gated-normed output [B,T,H*dv] (`o_pre` before the norm),
/// the new conv cache and state.
#[derive(Clone, Debug)]
pub struct MixerOutputs {
    pub o_pre: Vec<f32>,
    pub out: Vec<f32>,
    pub conv: Vec<f32>,
    pub state: Vec<f32>,
}

/// Deterministic inputs in [-range, range) (xorshift), for tests and GPU checks.
pub fn random(n: usize, seed: u64, range: f32) -> Vec<f32> {
    let mut s = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..n)
        .map(|_| {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            ((s >> 40) as f32 / (1u64 << 24) as f32 * 2.0 - 1.0) * range
        })
        .collect()
}

impl MixerInputs {
    pub fn random(s: &MixerShape, seed: u64) -> MixerInputs {
        let (bt, h) = (s.batch * s.seq, s.heads);
        let c = h * s.dv;
        MixerInputs {
            q: random(bt * h * s.dk, seed, 2.0),
            k: random(bt * h * s.dk, seed + 1, 2.0),
            u: random(bt * c, seed + 2, 1.0),
            ker: random(bt * c * s.width, seed + 3, 0.5),
            a: random(bt * h, seed + 4, 2.0),
            b: random(bt * h, seed + 5, 2.0),
            gate: random(bt * c, seed + 6, 2.0),
            a_log: random(h, seed + 7, 1.0).iter().map(|v| v + 0.5).collect(),
            dt_bias: random(h, seed + 8, 1.0),
            o_norm: random(s.dv, seed + 9, 0.5).iter().map(|v| v + 1.0).collect(),
            conv: random(s.batch * c * s.width, seed + 10, 1.0),
            state: random(s.batch * h * s.dk * s.dv, seed + 11, 0.5),
        }
    }

    /// Rounds every activation to `bf16` (what the GPU sees); weights and state stay f32.
    pub fn round_bf16(&mut self) {
        for v in [&mut self.q, &mut self.k, &mut self.u, &mut self.ker, &mut self.a, &mut self.b, &mut self.gate, &mut self.conv] {
            v.iter_mut().for_each(|x| *x = half::bf16::from_f32(*x).to_f32());
        }
    }
}

/// Gated RMSNorm per head: o / sqrt(mean(o^2) + eps) * w * silu(gate).
pub fn gated_rmsnorm(o: &[f32], gate: &[f32], w: &[f32], d: usize, eps: f32) -> Vec<f32> {
    let mut out = o.to_vec();
    for (head, gh) in out.chunks_mut(d).zip(gate.chunks(d)) {
        let inv = 1.0 / (head.iter().map(|v| v * v).sum::<f32>() / d as f32 + eps).sqrt();
        for ((v, wi), g) in head.iter_mut().zip(w).zip(gh) {
            *v = *v * inv * wi * silu(*g);
        }
    }
    out
}

/// The JetBlock mixer (decode when seq = 1, prefill otherwise) from jetc-runtime's pieces:
/// dynamic conv with cache, gates, silu + L2 norm, recurrent gated delta rule, gated norm.
pub fn jet_mixer(s: &MixerShape, x: &MixerInputs) -> Result<MixerOutputs> {
    let c = s.heads * s.dv;
    let conv = dynamic_conv(&ConvDims { batch: s.batch, seq: s.seq, channels: c, width: s.width }, &x.u, &x.ker, Some(&x.conv)).map_err(rt)?;
    let mut q = x.q.clone();
    let mut k = x.k.clone();
    silu_l2norm(&mut q, s.dk, s.l2_eps, 1.0, true, true);
    silu_l2norm(&mut k, s.dk, s.l2_eps, 1.0, true, true);
    let g = gated_delta_log_decay(&x.a, &x.a_log, &x.dt_bias).map_err(rt)?;
    let beta: Vec<f32> = x.b.iter().map(|v| sigmoid(*v)).collect();
    let dims = Dims::new(s.batch, s.seq, s.heads, s.dk, s.dv);
    let gi = GatedDeltaInputs { q: &q, k: &k, v: &conv.v, g: &g, beta: &beta, scale: s.scale, initial_state: Some(&x.state) };
    let lin = gated_delta_recurrent(&dims, &gi).map_err(rt)?;
    let out = gated_rmsnorm(&lin.o, &x.gate, &x.o_norm, s.dv, s.norm_eps);
    Ok(MixerOutputs { o_pre: lin.o, out, conv: conv.cache, state: lin.state })
}

/// The decode kernel's algorithm on the CPU (seq must be 1), as jet_decode.cu.j2 does it.
pub fn emulate_jet_decode(s: &MixerShape, x: &MixerInputs) -> Result<MixerOutputs> {
    if s.seq != 1 {
        return Err(CodegenError::Other("emulate_jet_decode: seq must be 1".into()));
    }
    let (h, dk, dv, w) = (s.heads, s.dk, s.dv, s.width);
    let c = h * dv;
    let mut conv = x.conv.clone();
    let mut state = x.state.clone();
    let mut o_pre = vec![0.0; s.batch * c];
    let mut out = vec![0.0; s.batch * c];
    let g_all = gated_delta_log_decay(&x.a, &x.a_log, &x.dt_bias).map_err(rt)?;
    for b in 0..s.batch {
        for hh in 0..h {
            let g = g_all[b * h + hh];
            let beta = sigmoid(x.b[b * h + hh]);
            let eg = g.exp();
            let mut q = x.q[(b * h + hh) * dk..][..dk].to_vec();
            let mut k = x.k[(b * h + hh) * dk..][..dk].to_vec();
            silu_l2norm(&mut q, dk, s.l2_eps, s.scale, true, true);
            silu_l2norm(&mut k, dk, s.l2_eps, 1.0, true, true);
            let kq: f32 = k.iter().zip(&q).map(|(a, b)| a * b).sum();
            let st = &mut state[(b * h + hh) * dk * dv..][..dk * dv];
            let mut o_head = vec![0.0; dv];
            for col in 0..dv {
                let ch = hh * dv + col;
                let cs = &mut conv[(b * c + ch) * w..][..w];
                let mut win: Vec<f32> = cs[1..].to_vec();
                win.push(x.u[b * c + ch]);
                let acc: f32 = (0..w).map(|i| x.ker[(b * c + ch) * w + i] * win[i]).sum();
                cs.copy_from_slice(&win);
                let v = silu(acc);
                let (mut ks, mut qs) = (0.0f32, 0.0f32);
                for r in 0..dk {
                    ks += k[r] * st[r * dv + col];
                    qs += q[r] * st[r * dv + col];
                }
                let uu = beta * (v - eg * ks);
                o_head[col] = eg * qs + uu * kq;
                for r in 0..dk {
                    st[r * dv + col] = eg * st[r * dv + col] + k[r] * uu;
                }
            }
            o_pre[b * c + hh * dv..][..dv].copy_from_slice(&o_head);
        }
    }
    for (i, v) in gated_rmsnorm(&o_pre, &x.gate, &x.o_norm, dv, s.norm_eps).into_iter().enumerate() {
        out[i] = v;
    }
    Ok(MixerOutputs { o_pre, out, conv, state })
}

/// (I + A)^-1 for strictly lower triangular A [n x n], n a multiple of 16, as pass 1 does it:
/// forward substitution inside each 16x16 diagonal block, then block rows
/// T_ij = -T_ii sum_{m=j}^{i-1} A_im T_mj.
pub fn blocked_unit_lower_inverse(a: &[f32], n: usize) -> Vec<f32> {
    let mut t = vec![0.0f32; n * n];
    let nb = n / 16;
    for d in 0..nb {
        let d0 = d * 16;
        for c in 0..16 {
            for r in c..16 {
                let mut acc = if r == c { 1.0 } else { 0.0 };
                for m in c..r {
                    acc -= a[(d0 + r) * n + d0 + m] * t[(d0 + m) * n + d0 + c];
                }
                t[(d0 + r) * n + d0 + c] = acc;
            }
        }
    }
    for bi in 1..nb {
        for bj in 0..bi {
            let mut x = [0.0f32; 256];
            for r in 0..16 {
                for cc in 0..16 {
                    let mut acc = 0.0;
                    for bm in bj..bi {
                        for s in 0..16 {
                            acc += a[(bi * 16 + r) * n + bm * 16 + s] * t[(bm * 16 + s) * n + bj * 16 + cc];
                        }
                    }
                    x[r * 16 + cc] = acc;
                }
            }
            for r in 0..16 {
                for cc in 0..16 {
                    let mut acc = 0.0;
                    for s in 0..=r {
                        acc += t[(bi * 16 + r) * n + bi * 16 + s] * x[s * 16 + cc];
                    }
                    t[(bi * 16 + r) * n + bj * 16 + cc] = -acc;
                }
            }
        }
    }
    t
}

/// The two-pass chunked algorithm (gdn_chunk_prep + gdn_chunk_state) in f32 on the CPU, with
/// raw q/k (silu + L2 norm) and raw gates, on the mixer's conv output `v` [B,T,H*dv].
/// Returns (o [B,T,H*dv], final state).
pub fn emulate_gdn_chunk(s: &MixerShape, x: &MixerInputs, v: &[f32], chunk: usize, decay_floor: f32) -> Result<(Vec<f32>, Vec<f32>)> {
    let (h, dk, dv, t_len, cc) = (s.heads, s.dk, s.dv, s.seq, chunk);
    if cc % 16 != 0 || cc == 0 {
        return Err(CodegenError::Other("chunk must be a multiple of 16".into()));
    }
    let mut o = vec![0.0f32; s.batch * t_len * h * dv];
    let mut state = x.state.clone();
    let g_all = gated_delta_log_decay(&x.a, &x.a_log, &x.dt_bias).map_err(rt)?;
    for b in 0..s.batch {
        for hh in 0..h {
            let st = &mut state[(b * h + hh) * dk * dv..][..dk * dv];
            for t0 in (0..t_len).step_by(cc) {
                let l = cc.min(t_len - t0);
                let mut g = vec![0.0f32; cc];
                let mut beta = vec![0.0f32; cc];
                let mut qn = vec![0.0f32; cc * dk];
                let mut kn = vec![0.0f32; cc * dk];
                let mut vv = vec![0.0f32; cc * dv];
                for i in 0..l {
                    let row = b * t_len + t0 + i;
                    g[i] = g_all[row * h + hh].max(decay_floor);
                    beta[i] = sigmoid(x.b[row * h + hh]);
                    qn[i * dk..][..dk].copy_from_slice(&x.q[(row * h + hh) * dk..][..dk]);
                    kn[i * dk..][..dk].copy_from_slice(&x.k[(row * h + hh) * dk..][..dk]);
                    vv[i * dv..][..dv].copy_from_slice(&v[(row * h + hh) * dv..][..dv]);
                }
                silu_l2norm(&mut qn[..l * dk], dk, s.l2_eps, s.scale, true, true);
                silu_l2norm(&mut kn[..l * dk], dk, s.l2_eps, 1.0, true, true);
                let mut gc = vec![0.0f32; cc];
                let mut acc = 0.0;
                for i in 0..cc {
                    acc += g[i];
                    gc[i] = acc;
                }
                let dot = |a: &[f32], b: &[f32]| a.iter().zip(b).map(|(x, y)| x * y).sum::<f32>();
                let mut a = vec![0.0f32; cc * cc];
                let mut aqk = vec![0.0f32; cc * cc];
                for i in 0..cc {
                    for j in 0..=i {
                        let d = (gc[i] - gc[j]).exp();
                        let kk = dot(&kn[i * dk..][..dk], &kn[j * dk..][..dk]);
                        if i > j {
                            a[i * cc + j] = beta[i] * kk * d;
                        }
                        aqk[i * cc + j] = dot(&qn[i * dk..][..dk], &kn[j * dk..][..dk]) * d;
                    }
                }
                let tm = blocked_unit_lower_inverse(&a, cc);
                let mut w = vec![0.0f32; cc * dk];
                let mut u = vec![0.0f32; cc * dv];
                for i in 0..cc {
                    for m in 0..=i {
                        let tv = tm[i * cc + m];
                        let kb = beta[m] * gc[m].exp();
                        for j in 0..dk {
                            w[i * dk + j] += tv * kb * kn[m * dk + j];
                        }
                        for j in 0..dv {
                            u[i * dv + j] += tv * beta[m] * vv[m * dv + j];
                        }
                    }
                }
                // Pass 2.
                let g_last = gc[l - 1];
                let mut vnew = u.clone();
                for i in 0..cc {
                    for r in 0..dk {
                        let wv = w[i * dk + r];
                        for c2 in 0..dv {
                            vnew[i * dv + c2] -= wv * st[r * dv + c2];
                        }
                    }
                }
                for i in 0..l {
                    let eg = gc[i].exp();
                    for c2 in 0..dv {
                        let mut acc = 0.0;
                        for r in 0..dk {
                            acc += qn[i * dk + r] * eg * st[r * dv + c2];
                        }
                        for j in 0..=i {
                            acc += aqk[i * cc + j] * vnew[j * dv + c2];
                        }
                        o[((b * t_len + t0 + i) * h + hh) * dv + c2] = acc;
                    }
                }
                let egl = g_last.exp();
                for r in 0..dk {
                    for c2 in 0..dv {
                        let mut acc = egl * st[r * dv + c2];
                        for i in 0..l {
                            acc += kn[i * dk + r] * (g_last - gc[i]).exp() * vnew[i * dv + c2];
                        }
                        st[r * dv + c2] = acc;
                    }
                }
            }
        }
    }
    Ok((o, state))
}

/// Largest |a - b| over max(|b|) (0 when b is all zeros and a equals it); NaN in `a` is an
/// infinite error.
pub fn rel_max_err(a: &[f32], b: &[f32]) -> f32 {
    if a.len() != b.len() {
        return f32::INFINITY;
    }
    let scale = b.iter().fold(0.0f32, |m, v| m.max(v.abs())).max(1e-6);
    let mut worst = 0.0f32;
    for (x, y) in a.iter().zip(b) {
        if !x.is_finite() {
            return f32::INFINITY;
        }
        worst = worst.max((x - y).abs());
    }
    worst / scale
}
