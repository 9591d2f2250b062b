//! The kernels' algorithms, emulated on the CPU step for step, agree with jetc-runtime's
//! reference math: the decode step's one-pass reformulation, and the two-pass chunked form
//! with the blocked triangular inverse (tail chunks, state carried across chunks).
use jetc_codegen::reference::{self as r, MixerInputs, MixerShape};

fn shape(batch: usize, seq: usize, heads: usize, dk: usize, dv: usize) -> MixerShape {
    MixerShape { batch, seq, heads, dk, dv, width: 4, scale: (dk as f32).powf(-0.5), l2_eps: 1e-6, norm_eps: 1e-5 }
}

#[test]
fn decode_emulation_matches_reference() {
    for (b, h, dk, dv) in [(3, 2, 96, 64), (1, 3, 12, 32), (2, 1, 128, 256)] {
        let s = shape(b, 1, h, dk, dv);
        let x = MixerInputs::random(&s, 3 + b as u64);
        let want = r::jet_mixer(&s, &x).expect("reference");
        let got = r::emulate_jet_decode(&s, &x).expect("emulation");
        for (what, a, e) in [("out", &got.out, &want.out), ("state", &got.state, &want.state), ("conv", &got.conv, &want.conv)] {
            let err = r::rel_max_err(a, e);
            assert!(err < 2e-5, "b{b} h{h} dk{dk} dv{dv}: {what} rel err {err}");
        }
    }
}

#[test]
fn blocked_inverse_is_the_inverse() {
    let n = 64;
    let raw = r::random(n * n, 9, 0.9);
    let a: Vec<f32> = (0..n * n).map(|i| if i / n > i % n { raw[i] } else { 0.0 }).collect();
    let t = r::blocked_unit_lower_inverse(&a, n);
    for i in 0..n {
        for j in 0..n {
            // (I + A) T = I
            let mut acc = t[i * n + j];
            for m in 0..n {
                acc += a[i * n + m] * t[m * n + j];
            }
            let want = if i == j { 1.0 } else { 0.0 };
            assert!((acc - want).abs() < 1e-3, "({i},{j}) = {acc}");
        }
    }
}

#[test]
fn chunk_emulation_matches_recurrent_reference() {
    // T = 150: two full chunks and a tail of 22; dk 12 exercises padding-free math at odd sizes.
    for (b, t, h, dk, dv) in [(1, 150, 2, 32, 48), (2, 70, 1, 12, 32)] {
        let s = shape(b, t, h, dk, dv);
        let x = MixerInputs::random(&s, 21);
        let v = r::random(b * t * h * dv, 5, 1.0);
        let (o, st) = r::emulate_gdn_chunk(&s, &x, &v, 64, -88.0).expect("emulation");
        let mut q = x.q.clone();
        let mut k = x.k.clone();
        r::silu_l2norm(&mut q, dk, s.l2_eps, 1.0, true, true);
        r::silu_l2norm(&mut k, dk, s.l2_eps, 1.0, true, true);
        let g = jetc_runtime::linear::gated_delta::gated_delta_log_decay(&x.a, &x.a_log, &x.dt_bias).expect("gates");
        let beta: Vec<f32> = x.b.iter().map(|v| r::sigmoid(*v)).collect();
        let dims = jetc_runtime::linear::Dims::new(b, t, h, dk, dv);
        let gi = jetc_runtime::linear::gated_delta::GatedDeltaInputs { q: &q, k: &k, v: &v, g: &g, beta: &beta, scale: s.scale, initial_state: Some(&x.state) };
        let want = jetc_runtime::linear::gated_delta::gated_delta_recurrent(&dims, &gi).expect("recurrent");
        let (eo, es) = (r::rel_max_err(&o, &want.o), r::rel_max_err(&st, &want.state));
        assert!(eo < 1e-4 && es < 1e-4, "T{t} dk{dk}: output err {eo}, state err {es}");
    }
}
