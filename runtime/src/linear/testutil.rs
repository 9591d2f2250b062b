//! Test helpers of the linear mixers: golden files from fla (`tests/golden/linear/*.npz`),
//! a deterministic random case generator, error measures, token-by-token decode and explicit
//! head repetition.
use std::collections::HashMap;
use std::path::PathBuf;

use proptest::prelude::*;

use super::{Dims, HeadMap, LinearOutput};
use crate::npz::read_npz;

/// Tolerance against the goldens (relative RMS error, f32 against an f64 reference).
pub const GOLDEN_TOL: f64 = 1e-5;

pub fn golden_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../tests/golden/linear")
}

/// Names (without `.npz`) of the golden files starting with `prefix`, sorted; panics when
/// there is none, so that a missing golden directory cannot pass silently.
pub fn golden_names(prefix: &str) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(golden_dir())
        .expect("tests/golden/linear exists")
        .filter_map(|e| e.ok())
        .filter_map(|e| e.file_name().to_str().map(str::to_string))
        .filter(|n| n.starts_with(prefix) && n.ends_with(".npz"))
        .map(|n| n.trim_end_matches(".npz").to_string())
        .collect();
    names.sort();
    assert!(!names.is_empty(), "no golden file {prefix}*.npz in {}", golden_dir().display());
    names
}

/// Relative RMS error `||a - b|| / ||b||` (absolute when `b` is all zeros), in f64.
pub fn rel_rms(a: &[f32], b: &[f32]) -> f64 {
    assert_eq!(a.len(), b.len(), "length mismatch");
    let num: f64 = a.iter().zip(b).map(|(x, y)| (*x as f64 - *y as f64).powi(2)).sum();
    let den: f64 = b.iter().map(|y| (*y as f64).powi(2)).sum();
    if den == 0.0 {
        num.sqrt()
    } else {
        (num / den).sqrt()
    }
}

pub fn assert_close(label: &str, a: &[f32], b: &[f32], tol: f64) {
    let e = rel_rms(a, b);
    assert!(e < tol, "{label}: relative RMS error {e:e} >= {tol:e}");
    assert!(a.iter().all(|x| x.is_finite()), "{label}: non-finite values");
}

/// One golden file: named f32 arrays with shapes.
pub struct Golden {
    pub name: String,
    arrays: HashMap<String, (Vec<usize>, Vec<f32>)>,
}

impl Golden {
    pub fn load(name: &str) -> Golden {
        let path = golden_dir().join(format!("{name}.npz"));
        let arrays = read_npz(&path)
            .unwrap_or_else(|e| panic!("{e}"))
            .into_iter()
            .map(|(n, v)| {
                let a = v.as_f32().unwrap_or_else(|| panic!("{name}: {n} is not float")).clone();
                let shape = a.shape().to_vec();
                (n, (shape, a.into_raw_vec_and_offset().0))
            })
            .collect();
        Golden { name: name.to_string(), arrays }
    }

    pub fn get(&self, k: &str) -> &[f32] {
        &self.arrays.get(k).unwrap_or_else(|| panic!("{}: no array {k}", self.name)).1
    }

    pub fn opt(&self, k: &str) -> Option<&[f32]> {
        self.arrays.get(k).map(|a| a.1.as_slice())
    }

    pub fn shape(&self, k: &str) -> &[usize] {
        &self.arrays.get(k).unwrap_or_else(|| panic!("{}: no array {k}", self.name)).0
    }

    pub fn scalar(&self, k: &str) -> f32 {
        self.get(k)[0]
    }

    /// Dims from q `[B,T,Hq,dk]`, k `[B,T,Hk,dk]`, v `[B,T,Hv,dv]` (or the names given).
    pub fn dims_of(&self, q: &str, k: &str, v: &str) -> Dims {
        let (qs, ks, vs) = (self.shape(q), self.shape(k), self.shape(v));
        Dims { batch: qs[0], seq: qs[1], q_heads: qs[2], k_heads: ks[2], v_heads: vs[2], dk: qs[3], dv: vs[3] }
    }

    pub fn dims(&self) -> Dims {
        self.dims_of("q", "k", "v")
    }

    /// Compares output `o` and final state `ht` at [`GOLDEN_TOL`]; prints the errors
    /// (`cargo test -- --nocapture` shows them).
    pub fn check(&self, label: &str, out: &LinearOutput) {
        let eo = rel_rms(&out.o, self.get("o"));
        let es = rel_rms(&out.state, self.get("ht"));
        println!("GOLDEN {label}: o {eo:.3e} state {es:.3e}");
        assert!(eo < GOLDEN_TOL && es < GOLDEN_TOL, "{label}: relative RMS error o {eo:e}, state {es:e}");
        assert!(out.o.iter().chain(&out.state).all(|x| x.is_finite()), "{label}: non-finite values");
    }

    /// Asserts that a deliberately wrong computation is far outside the tolerance.
    pub fn check_differs(&self, label: &str, out: &LinearOutput) {
        let eo = rel_rms(&out.o, self.get("o"));
        let es = rel_rms(&out.state, self.get("ht"));
        assert!(eo.max(es) > 100.0 * GOLDEN_TOL, "{label}: a perturbed input still matches (o {eo:e}, state {es:e})");
    }
}

/// `x[b, t] <- x[b, t - 1]` for `t >= 1` on a `[B, T, rest]` tensor (`x[b, 0]` kept): an
/// off-by-one in the gate timing.
pub fn shift_tokens(x: &[f32], batch: usize, seq: usize) -> Vec<f32> {
    let mut out = x.to_vec();
    if batch == 0 || seq == 0 {
        return out;
    }
    let row = x.len() / (batch * seq);
    for b in 0..batch {
        for t in 1..seq {
            let (dst, src) = ((b * seq + t) * row, (b * seq + t - 1) * row);
            out[dst..dst + row].copy_from_slice(&x[src..src + row]);
        }
    }
    out
}

/// splitmix64: a tiny deterministic generator (no extra dependency).
pub struct SplitMix(u64);

impl SplitMix {
    pub fn new(seed: u64) -> SplitMix {
        SplitMix(seed ^ 0x9E37_79B9_7F4A_7C15)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in [lo, hi).
    pub fn uniform(&mut self, lo: f32, hi: f32) -> f32 {
        let u = (self.next_u64() >> 40) as f32 / (1u64 << 24) as f32;
        lo + (hi - lo) * u
    }

    pub fn vec(&mut self, n: usize, lo: f32, hi: f32) -> Vec<f32> {
        (0..n).map(|_| self.uniform(lo, hi)).collect()
    }
}

/// L2-normalizes every `d`-row (as fla's delta-rule layers do to q and k).
pub fn l2norm_rows(x: &mut [f32], d: usize) {
    for row in x.chunks_mut(d) {
        let n = (row.iter().map(|v| v * v).sum::<f32>() + 1e-6).sqrt();
        row.iter_mut().for_each(|v| *v /= n);
    }
}

/// Random inputs of every mixer for one set of dims.
#[derive(Clone, Debug)]
pub struct Case {
    pub q: Vec<f32>,
    pub k: Vec<f32>,
    pub v: Vec<f32>,
    /// `[B, T, Hs]` in [gmin, 0].
    pub g: Vec<f32>,
    /// `[B, T, Hs]` in (0, 1).
    pub beta: Vec<f32>,
    /// `[B, T, Hs, dk]` in [gmin, 0].
    pub gk: Vec<f32>,
    /// RWKV7 a and b, `[B, T, Hs, dk]`.
    pub a: Vec<f32>,
    pub b: Vec<f32>,
    /// `[B, Hs, dk, dv]`.
    pub h0: Vec<f32>,
    pub scale: f32,
}

impl Case {
    pub fn random(dims: &Dims, seed: u64, gmin: f32) -> Case {
        let sz = dims.check().expect("valid dims");
        let mut r = SplitMix::new(seed);
        let q = r.vec(sz.q, -1.0, 1.0);
        let mut k = r.vec(sz.k, -1.0, 1.0);
        l2norm_rows(&mut k, dims.dk);
        let v = r.vec(sz.v, -1.0, 1.0);
        let g = r.vec(sz.gate, gmin, 0.0);
        let beta = r.vec(sz.gate, 0.05, 0.95);
        let gk = r.vec(sz.key_gate, gmin, 0.0);
        // RWKV7: a = -kk, b = kk * iclr with kk L2-normalized per head.
        let mut kk = r.vec(sz.key_gate, -1.0, 1.0);
        l2norm_rows(&mut kk, dims.dk);
        let iclr = r.vec(sz.key_gate, 0.0, 1.0);
        let a = kk.iter().map(|x| -x).collect();
        let b = kk.iter().zip(&iclr).map(|(x, y)| x * y).collect();
        let h0 = r.vec(sz.state, -0.5, 0.5);
        Case { q, k, v, g, beta, gk, a, b, h0, scale: dims.default_scale() }
    }

    pub fn gdn(&self) -> super::gated_delta::GatedDeltaInputs<'_> {
        super::gated_delta::GatedDeltaInputs {
            q: &self.q,
            k: &self.k,
            v: &self.v,
            g: &self.g,
            beta: &self.beta,
            scale: self.scale,
            initial_state: Some(&self.h0),
        }
    }

    /// The inputs of token `t` only (a `T = 1` case; `h0` unchanged).
    pub fn token(&self, dims: &Dims, t: usize) -> Case {
        let sz = dims.check().expect("valid dims");
        let pick = |x: &[f32], per_bt: usize| -> Vec<f32> {
            let per = per_bt / (dims.batch * dims.seq).max(1);
            let mut out = Vec::with_capacity(dims.batch * per);
            for b in 0..dims.batch {
                let at = (b * dims.seq + t) * per;
                out.extend_from_slice(&x[at..at + per]);
            }
            out
        };
        Case {
            q: pick(&self.q, sz.q),
            k: pick(&self.k, sz.k),
            v: pick(&self.v, sz.v),
            g: pick(&self.g, sz.gate),
            beta: pick(&self.beta, sz.gate),
            gk: pick(&self.gk, sz.key_gate),
            a: pick(&self.a, sz.key_gate),
            b: pick(&self.b, sz.key_gate),
            h0: self.h0.clone(),
            scale: self.scale,
        }
    }

    /// The case with every head count equal to `Ho`, each head an explicit copy of what the
    /// head mapping says it reads.
    pub fn expanded(&self, dims: &Dims) -> Expanded {
        let map = HeadMap::new(dims.q_heads, dims.k_heads, dims.v_heads).expect("valid heads");
        let ho = map.ho;
        let e = dims.with_heads(ho, ho, ho);
        let (bt, dk, dv) = (dims.batch * dims.seq, dims.dk, dims.dv);
        // Per [rows, heads, d] tensor: new head o copies old head src(o).
        let rep = |x: &[f32], rows: usize, heads: usize, d: usize, src: &dyn Fn(usize) -> usize| -> Vec<f32> {
            let mut out = Vec::with_capacity(rows * ho * d);
            for r in 0..rows {
                for o in 0..ho {
                    let at = (r * heads + src(o)) * d;
                    out.extend_from_slice(&x[at..at + d]);
                }
            }
            out
        };
        let st = |o: usize| map.state_of_out(o);
        let case = Case {
            q: rep(&self.q, bt, map.hq, dk, &|o| map.q_of_out(o)),
            k: rep(&self.k, bt, map.hk, dk, &|o| map.k_head(st(o))),
            v: rep(&self.v, bt, map.hv, dv, &|o| map.v_head(st(o))),
            g: rep(&self.g, bt, map.hs, 1, &st),
            beta: rep(&self.beta, bt, map.hs, 1, &st),
            gk: rep(&self.gk, bt, map.hs, dk, &st),
            a: rep(&self.a, bt, map.hs, dk, &st),
            b: rep(&self.b, bt, map.hs, dk, &st),
            h0: rep(&self.h0, dims.batch, map.hs, dk * dv, &st),
            scale: self.scale,
        };
        Expanded { dims: e, case, map, batch: dims.batch, per_state: dk * dv }
    }
}

pub struct Expanded {
    pub dims: Dims,
    pub case: Case,
    map: HeadMap,
    batch: usize,
    per_state: usize,
}

impl Expanded {
    /// The original `[B, Hs, dk, dv]` state out of the expanded `[B, Ho, dk, dv]` one.
    pub fn state_of(&self, expanded: &[f32]) -> Vec<f32> {
        let mut out = Vec::new();
        for b in 0..self.batch {
            for s in 0..self.map.hs {
                let o = self.map.outs_of_state(s).start;
                let at = (b * self.map.ho + o) * self.per_state;
                out.extend_from_slice(&expanded[at..at + self.per_state]);
            }
        }
        out
    }
}

/// Runs `step` once per token with the state carried over; returns the outputs assembled as
/// `[B, T, Ho, dv]` and the final state.
pub fn decode_steps(
    dims: &Dims,
    case: &Case,
    step: impl Fn(&Dims, &Case, &[f32]) -> LinearOutput,
) -> (Vec<f32>, Vec<f32>) {
    let sz = dims.check().expect("valid dims");
    let one = dims.with_seq(1);
    let per_token = sz.out / (dims.batch * dims.seq).max(1);
    let mut o = vec![0.0f32; sz.out];
    let mut state = case.h0.clone();
    for t in 0..dims.seq {
        let c = case.token(dims, t);
        let r = step(&one, &c, &state);
        for b in 0..dims.batch {
            let dst = (b * dims.seq + t) * per_token;
            o[dst..dst + per_token].copy_from_slice(&r.o[b * per_token..(b + 1) * per_token]);
        }
        state = r.state;
    }
    (o, state)
}

/// Random dims: batch 1-2, any T in 0..40, head layouts with GQA and GVA, dk != dv.
pub fn arb_dims() -> impl Strategy<Value = Dims> {
    let heads = prop::sample::select(vec![
        (1, 1, 1),
        (2, 2, 2),
        (4, 2, 2),
        (2, 1, 1),
        (2, 2, 4),
        (1, 2, 4),
        (2, 4, 2),
        (6, 3, 3),
    ]);
    (1usize..3, 0usize..40, heads, 1usize..9, 1usize..11).prop_map(|(batch, seq, (hq, hk, hv), dk, dv)| Dims {
        batch,
        seq,
        q_heads: hq,
        k_heads: hk,
        v_heads: hv,
        dk,
        dv,
    })
}
