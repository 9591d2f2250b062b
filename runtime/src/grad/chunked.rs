//! Chunked backward of linear attention with a scalar gate (rules `linear`, `gated`,
//! `delta`, `gated_delta`), generic over [`Real`]; the per-token backward of
//! [`super::linear_attention`] is its oracle.
//!
//! Per chunk of `L` tokens with state `S0` entering it, `G` the chunk-local cumulative log
//! decay, `Γ = exp(G)`, `D_ij = exp(G_i - G_j)` (only for `i >= j`, masked before the exp):
//! ```text
//! delta rules:  A = strict_lower(diag(β) (K K^T ⊙ D)),  T = (I + A)^-1   (UT transform)
//!               W = T diag(β Γ) K,  U = T diag(β) V,  Vn = U - W S0
//! other rules:  Vn = V
//! O  = s [ diag(Γ) Q S0 + (tril(Q K^T) ⊙ D) Vn ]
//! S1 = Γ_L S0 + (diag(exp(G_L - G)) K)^T Vn
//! ```
//! The backward runs the chunks in reverse from their checkpointed `S0`, carrying `dS`:
//! `dVn = s M^T dO + Kd dS1`, `dM = s dO Vn^T`, `dS0 = s Qg^T dO + Γ_L dS1 - W^T dVn`; through
//! the UT transform `dT = dU (βV)^T + dW (βΓK)^T` and `dA = -T^T dT T^T` (strictly lower);
//! every `D`/`Γ` factor contributes `dG` as row sums minus column sums of `dX ⊙ X`, and
//! `dg` is the reverse cumulative sum of `dG` within the chunk (fla's order).
use super::linear_attention::{Decay, HeadGrads, HeadInputs};
use super::real::Real;
use crate::math::{axpy, dot};

/// Chunked backward of one state head (scalar or no decay); `None` for per-key decays.
pub fn head_backward_chunked<T: Real>(x: &HeadInputs<T>, do_: Option<&[T]>, ds_final: Option<&[T]>, chunk: usize) -> Option<HeadGrads<T>> {
    if matches!(x.decay, Decay::Vector(_)) {
        return None;
    }
    let (dk, dv, tt, group) = (x.dk, x.dv, x.t, x.group);
    let c = chunk.max(1);
    let n = dk * dv;
    let z = T::zero();
    // States entering each chunk.
    let chunks = tt.div_ceil(c);
    let mut s0s = Vec::with_capacity(chunks);
    {
        let mut s = x.h0.map_or_else(|| vec![z; n], |h| h.to_vec());
        let mut e = vec![z; dk];
        for t in 0..tt {
            if t % c == 0 {
                s0s.push(s.clone());
            }
            x.step_public(t, &mut s, &mut e);
        }
    }
    let mut g = HeadGrads {
        dq: vec![z; group * tt * dk],
        dk: vec![z; tt * dk],
        dv: vec![z; tt * dv],
        ddecay: if matches!(x.decay, Decay::Scalar(_)) { vec![z; tt] } else { Vec::new() },
        dbeta: if x.beta.is_some() { vec![z; tt] } else { Vec::new() },
        dh0: Vec::new(),
    };
    let mut ds = ds_final.map_or_else(|| vec![z; n], |d| d.to_vec());
    for ci in (0..chunks).rev() {
        let start = ci * c;
        let l = (start + c).min(tt) - start;
        let s0 = &s0s[ci];
        let kr = |i: usize| &x.k[(start + i) * dk..(start + i + 1) * dk];
        let vr = |i: usize| &x.v[(start + i) * dv..(start + i + 1) * dv];
        let qr = |gq: usize, i: usize| &x.q[(gq * tt + start + i) * dk..(gq * tt + start + i + 1) * dk];
        // Chunk-local cumulative log decays.
        let mut gc = vec![z; l];
        if let Decay::Scalar(gs) = x.decay {
            let mut acc = z;
            for i in 0..l {
                acc += gs[start + i];
                gc[i] = acc;
            }
        }
        let gam: Vec<T> = gc.iter().map(|v| v.exp()).collect();
        let dmat = |i: usize, j: usize| -> T { if i >= j { (gc[i] - gc[j]).exp() } else { z } };
        let gl = gc[l - 1];
        let e_last: Vec<T> = gc.iter().map(|&v| (gl - v).exp()).collect();
        // UT transform (delta rules) and Vn.
        let beta = x.beta.map(|b| &b[start..start + l]);
        let mut tm = vec![z; l * l]; // T, unit lower triangular
        let mut wm = vec![z; l * dk];
        let mut vn = vec![z; l * dv];
        if let Some(b) = beta {
            let mut a = vec![z; l * l];
            for i in 0..l {
                for j in 0..i {
                    a[i * l + j] = b[i] * dot(kr(i), kr(j)) * dmat(i, j);
                }
            }
            // T = (I + A)^-1 by forward substitution, row by row.
            for i in 0..l {
                tm[i * l + i] = T::one();
                for j in 0..i {
                    let mut acc = z;
                    for m in j..i {
                        acc += a[i * l + m] * tm[m * l + j];
                    }
                    tm[i * l + j] = -acc;
                }
            }
            // W = T diag(βΓ) K, U = T diag(β) V, Vn = U - W S0.
            for i in 0..l {
                for m in 0..=i {
                    let t_im = tm[i * l + m];
                    if t_im == z {
                        continue;
                    }
                    let (fw, fu) = (t_im * b[m] * gam[m], t_im * b[m]);
                    for (w, &kv) in wm[i * dk..(i + 1) * dk].iter_mut().zip(kr(m)) {
                        *w += fw * kv;
                    }
                    for (u, &vv) in vn[i * dv..(i + 1) * dv].iter_mut().zip(vr(m)) {
                        *u += fu * vv;
                    }
                }
                for p in 0..dk {
                    let w = wm[i * dk + p];
                    for (u, &sv) in vn[i * dv..(i + 1) * dv].iter_mut().zip(&s0[p * dv..(p + 1) * dv]) {
                        *u -= w * sv;
                    }
                }
            }
        } else {
            for i in 0..l {
                vn[i * dv..(i + 1) * dv].copy_from_slice(vr(i));
            }
        }
        let mut dgc = vec![z; l];
        let mut dvn = vec![z; l * dv];
        let mut ds0 = vec![z; n];
        // S1 = Γ_L S0 + Kd^T Vn: dVn += Kd dS1, dKd = Vn dS1^T, dS0 += Γ_L dS1.
        let gaml = gam[l - 1];
        dgc[l - 1] += gaml * dot(s0, &ds);
        for (a, &b) in ds0.iter_mut().zip(&ds) {
            *a += gaml * b;
        }
        for i in 0..l {
            let k = kr(i);
            // Kd_i = eL_i k_i.
            for p in 0..dk {
                let row = &ds[p * dv..(p + 1) * dv];
                let kd = e_last[i] * k[p];
                for (o, &d) in dvn[i * dv..(i + 1) * dv].iter_mut().zip(row) {
                    *o += kd * d;
                }
            }
            // dKd_i[p] = Vn_i . dS1[p, :].
            let mut kdot = z;
            for p in 0..dk {
                let dkd = dot(&vn[i * dv..(i + 1) * dv], &ds[p * dv..(p + 1) * dv]);
                g.dk[(start + i) * dk + p] += e_last[i] * dkd;
                kdot += k[p] * dkd;
            }
            let contrib = e_last[i] * kdot;
            dgc[l - 1] += contrib;
            dgc[i] -= contrib;
        }
        // O = s [ Qg S0 + M Vn ], per query head of the group.
        if let Some(do_) = do_ {
            for gq in 0..group {
                let dor = |i: usize| &do_[(gq * tt + start + i) * dv..(gq * tt + start + i + 1) * dv];
                for i in 0..l {
                    let q = qr(gq, i);
                    let doi = dor(i);
                    // Qg S0 term: dQ_i += s Γ_i S0 dO_i; dS0 += s Γ_i q_i dO_i^T; dG_i += s Γ_i q_i . (S0 dO_i).
                    let mut qsd = z;
                    for p in 0..dk {
                        let sd = dot(&s0[p * dv..(p + 1) * dv], doi);
                        g.dq[(gq * tt + start + i) * dk + p] += x.scale * gam[i] * sd;
                        qsd += q[p] * sd;
                        let f = x.scale * gam[i] * q[p];
                        for (a, &d) in ds0[p * dv..(p + 1) * dv].iter_mut().zip(doi) {
                            *a += f * d;
                        }
                    }
                    dgc[i] += x.scale * gam[i] * qsd;
                    // M Vn term, M_ij = (q_i . k_j) D_ij for j <= i.
                    for j in 0..=i {
                        let d_ij = dmat(i, j);
                        let m_ij = dot(q, kr(j)) * d_ij;
                        // dVn_j += s M_ij dO_i; dM_ij = s dO_i . Vn_j.
                        for (a, &d) in dvn[j * dv..(j + 1) * dv].iter_mut().zip(doi) {
                            *a += x.scale * m_ij * d;
                        }
                        let dm = x.scale * dot(doi, &vn[j * dv..(j + 1) * dv]);
                        let f = dm * d_ij;
                        let qi = gq * tt + start + i;
                        axpy(&mut g.dq[qi * dk..(qi + 1) * dk], f, kr(j));
                        axpy(&mut g.dk[(start + j) * dk..(start + j + 1) * dk], f, q);
                        let e = dm * m_ij;
                        dgc[i] += e;
                        dgc[j] -= e;
                    }
                }
            }
        }
        match beta {
            None => {
                for i in 0..l {
                    for (a, &b) in g.dv[(start + i) * dv..(start + i + 1) * dv].iter_mut().zip(&dvn[i * dv..(i + 1) * dv]) {
                        *a += b;
                    }
                }
            }
            Some(b) => {
                // Vn = U - W S0: dU = dVn, dW = -dVn S0^T, dS0 -= W^T dVn.
                let mut dw = vec![z; l * dk];
                for i in 0..l {
                    for p in 0..dk {
                        let sd = dot(&s0[p * dv..(p + 1) * dv], &dvn[i * dv..(i + 1) * dv]);
                        dw[i * dk + p] = -sd;
                        let w = wm[i * dk + p];
                        for (a, &d) in ds0[p * dv..(p + 1) * dv].iter_mut().zip(&dvn[i * dv..(i + 1) * dv]) {
                            *a -= w * d;
                        }
                    }
                }
                // U = T diag(β) V, W = T diag(βΓ) K: dVb = T^T dU, dKbg = T^T dW,
                // dT = dU (βV)^T + dW (βΓK)^T.
                let mut dt = vec![z; l * l];
                for i in 0..l {
                    for m in 0..=i {
                        dt[i * l + m] = b[m] * dot(&dvn[i * dv..(i + 1) * dv], vr(m)) + b[m] * gam[m] * dot(&dw[i * dk..(i + 1) * dk], kr(m));
                    }
                }
                for m in 0..l {
                    let mut dvb = vec![z; dv];
                    let mut dkb = vec![z; dk];
                    for i in m..l {
                        let t_im = tm[i * l + m];
                        for (a, &d) in dvb.iter_mut().zip(&dvn[i * dv..(i + 1) * dv]) {
                            *a += t_im * d;
                        }
                        for (a, &d) in dkb.iter_mut().zip(&dw[i * dk..(i + 1) * dk]) {
                            *a += t_im * d;
                        }
                    }
                    for (a, &d) in g.dv[(start + m) * dv..(start + m + 1) * dv].iter_mut().zip(&dvb) {
                        *a += b[m] * d;
                    }
                    g.dbeta[start + m] += dot(vr(m), &dvb) + gam[m] * dot(kr(m), &dkb);
                    for (a, &d) in g.dk[(start + m) * dk..(start + m + 1) * dk].iter_mut().zip(&dkb) {
                        *a += b[m] * gam[m] * d;
                    }
                    dgc[m] += b[m] * gam[m] * dot(kr(m), &dkb);
                }
                // dA = -T^T dT T^T, strictly lower.
                let mut tmp = vec![z; l * l]; // dT T^T
                for i in 0..l {
                    for j in 0..l {
                        tmp[i * l + j] = dot(&dt[i * l..(i + 1) * l], &tm[j * l..(j + 1) * l]);
                    }
                }
                // Column access made row access: T^T and (dT T^T)^T.
                let transpose = |a: &[T]| -> Vec<T> { (0..l * l).map(|idx| a[(idx % l) * l + idx / l]).collect() };
                let (tm_t, tmp_t) = (transpose(&tm), transpose(&tmp));
                for i in 0..l {
                    for j in 0..i {
                        let da = -dot(&tm_t[i * l..(i + 1) * l], &tmp_t[j * l..(j + 1) * l]);
                        // A_ij = β_i (k_i . k_j) D_ij.
                        let kk = dot(kr(i), kr(j));
                        let d_ij = dmat(i, j);
                        g.dbeta[start + i] += da * kk * d_ij;
                        let f = da * b[i] * d_ij;
                        // Rows i > j of dk: disjoint slices.
                        let (lo, hi) = g.dk.split_at_mut((start + i) * dk);
                        axpy(&mut hi[..dk], f, kr(j));
                        axpy(&mut lo[(start + j) * dk..(start + j + 1) * dk], f, kr(i));
                        let e = da * b[i] * kk * d_ij;
                        dgc[i] += e;
                        dgc[j] -= e;
                    }
                }
            }
        }
        // dg: reverse cumulative sum of dG within the chunk.
        if let Decay::Scalar(_) = x.decay {
            let mut acc = z;
            for i in (0..l).rev() {
                acc += dgc[i];
                g.ddecay[start + i] = acc;
            }
        }
        ds = ds0;
    }
    g.dh0 = ds;
    Some(g)
}
