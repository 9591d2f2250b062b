//! De-quantization of ggml blocks to f32.
//!
//! Each kernel follows gguf-py's `gguf/quants.py` (which follows ggml's `dequantize_row_*`),
//! including the order of the f32 operations (`(d * scale) * q - (dmin * min)`), so that the
//! results are bit-identical to `gguf.quants.dequantize`. Rust never fuses a multiply and an
//! add on its own, so `a * b + c` rounds twice, as numpy does.
use half::f16;
use rayon::prelude::*;

use crate::types::{GgmlType, QK_K};

/// Blocks per parallel work item (and the minimum for going parallel at all).
const PAR_BLOCKS: usize = 4096;

/// De-quantizes whole blocks of type `ty` from `data` into `out`.
///
/// `data` must hold a whole number of blocks and `out` exactly their elements; errors (as
/// a plain message) for a type without a kernel or mismatched lengths. Large inputs are
/// split over rayon's pool.
pub fn dequantize_into(ty: GgmlType, data: &[u8], out: &mut [f32]) -> Result<(), String> {
    let kernel: fn(&[u8], &mut [f32]) = match ty {
        GgmlType::F32 => f32_kernel,
        GgmlType::F16 => f16_kernel,
        GgmlType::BF16 => bf16_kernel,
        GgmlType::Q4_0 => q4_0,
        GgmlType::Q4_1 => q4_1,
        GgmlType::Q5_0 => q5_0,
        GgmlType::Q5_1 => q5_1,
        GgmlType::Q8_0 => q8_0,
        GgmlType::Q2_K => q2_k,
        GgmlType::Q3_K => q3_k,
        GgmlType::Q4_K => q4_k,
        GgmlType::Q5_K => q5_k,
        GgmlType::Q6_K => q6_k,
        _ => return Err(format!("no de-quantization kernel for ggml type {ty}")),
    };
    let (bs, ts) = (ty.block_size(), ty.type_size());
    if data.len() % ts != 0 || data.len() / ts * bs != out.len() {
        return Err(format!(
            "{} bytes of {ty} (blocks of {bs} elements in {ts} bytes) do not make {} elements",
            data.len(),
            out.len()
        ));
    }
    let n_blocks = data.len() / ts;
    if n_blocks < 2 * PAR_BLOCKS {
        kernel(data, out);
    } else {
        data.par_chunks(ts * PAR_BLOCKS)
            .zip(out.par_chunks_mut(bs * PAR_BLOCKS))
            .for_each(|(d, o)| kernel(d, o));
    }
    Ok(())
}

#[inline]
fn f16_at(b: &[u8], i: usize) -> f32 {
    f16::from_bits(u16::from_le_bytes([b[i], b[i + 1]])).to_f32()
}

fn f32_kernel(data: &[u8], out: &mut [f32]) {
    for (c, y) in data.chunks_exact(4).zip(out.iter_mut()) {
        *y = f32::from_le_bytes([c[0], c[1], c[2], c[3]]);
    }
}

fn f16_kernel(data: &[u8], out: &mut [f32]) {
    for (c, y) in data.chunks_exact(2).zip(out.iter_mut()) {
        *y = f16::from_bits(u16::from_le_bytes([c[0], c[1]])).to_f32();
    }
}

fn bf16_kernel(data: &[u8], out: &mut [f32]) {
    for (c, y) in data.chunks_exact(2).zip(out.iter_mut()) {
        *y = f32::from_bits((u16::from_le_bytes([c[0], c[1]]) as u32) << 16);
    }
}

/// Q4_0: `d: f16, qs: [u8; 16]`; element j is the low nibble of qs[j], element j+16 the
/// high one; value `d * (q - 8)`.
fn q4_0(data: &[u8], out: &mut [f32]) {
    for (b, y) in data.chunks_exact(18).zip(out.chunks_exact_mut(32)) {
        let d = f16_at(b, 0);
        let qs = &b[2..18];
        for j in 0..16 {
            y[j] = d * ((qs[j] & 0x0F) as i32 - 8) as f32;
            y[j + 16] = d * ((qs[j] >> 4) as i32 - 8) as f32;
        }
    }
}

/// Q4_1: `d: f16, m: f16, qs: [u8; 16]`; value `d * q + m`.
fn q4_1(data: &[u8], out: &mut [f32]) {
    for (b, y) in data.chunks_exact(20).zip(out.chunks_exact_mut(32)) {
        let d = f16_at(b, 0);
        let m = f16_at(b, 2);
        let qs = &b[4..20];
        for j in 0..16 {
            y[j] = d * (qs[j] & 0x0F) as f32 + m;
            y[j + 16] = d * (qs[j] >> 4) as f32 + m;
        }
    }
}

/// Q5_0: `d: f16, qh: u32, qs: [u8; 16]`; bit j of qh is the fifth bit of element j;
/// value `d * (q - 16)`.
fn q5_0(data: &[u8], out: &mut [f32]) {
    for (b, y) in data.chunks_exact(22).zip(out.chunks_exact_mut(32)) {
        let d = f16_at(b, 0);
        let qh = u32::from_le_bytes([b[2], b[3], b[4], b[5]]);
        let qs = &b[6..22];
        for j in 0..16 {
            let h0 = ((qh >> j) & 1) as u8;
            let h1 = ((qh >> (j + 16)) & 1) as u8;
            y[j] = d * (((qs[j] & 0x0F) | (h0 << 4)) as i32 - 16) as f32;
            y[j + 16] = d * (((qs[j] >> 4) | (h1 << 4)) as i32 - 16) as f32;
        }
    }
}

/// Q5_1: `d: f16, m: f16, qh: u32, qs: [u8; 16]`; value `d * q + m`.
fn q5_1(data: &[u8], out: &mut [f32]) {
    for (b, y) in data.chunks_exact(24).zip(out.chunks_exact_mut(32)) {
        let d = f16_at(b, 0);
        let m = f16_at(b, 2);
        let qh = u32::from_le_bytes([b[4], b[5], b[6], b[7]]);
        let qs = &b[8..24];
        for j in 0..16 {
            let h0 = ((qh >> j) & 1) as u8;
            let h1 = ((qh >> (j + 16)) & 1) as u8;
            y[j] = d * ((qs[j] & 0x0F) | (h0 << 4)) as f32 + m;
            y[j + 16] = d * ((qs[j] >> 4) | (h1 << 4)) as f32 + m;
        }
    }
}

/// Q8_0: `d: f16, qs: [i8; 32]`; value `q * d`.
fn q8_0(data: &[u8], out: &mut [f32]) {
    for (b, y) in data.chunks_exact(34).zip(out.chunks_exact_mut(32)) {
        let d = f16_at(b, 0);
        for j in 0..32 {
            y[j] = (b[2 + j] as i8) as f32 * d;
        }
    }
}

/// Q2_K: `scales: [u8; 16], qs: [u8; 64], d: f16, dmin: f16`. Sixteen sub-blocks of 16;
/// scale byte low nibble × d is the scale, high nibble × dmin the min; 2-bit quants, element
/// e at bits 2·((e%128)/32) of qs[32·(e/128) + e%32]; value `(d·sc) * q - (dmin·m)`.
fn q2_k(data: &[u8], out: &mut [f32]) {
    for (b, y) in data.chunks_exact(84).zip(out.chunks_exact_mut(QK_K)) {
        let scales = &b[0..16];
        let qs = &b[16..80];
        let d = f16_at(b, 80);
        let dmin = f16_at(b, 82);
        for (e, ye) in y.iter_mut().enumerate() {
            let sc = scales[e / 16];
            let dl = d * (sc & 0x0F) as f32;
            let ml = dmin * (sc >> 4) as f32;
            let q = (qs[(e / 128) * 32 + e % 32] >> (2 * ((e % 128) / 32))) & 3;
            *ye = dl * q as f32 - ml;
        }
    }
}

/// Q3_K: `hmask: [u8; 32], qs: [u8; 64], scales: [u8; 12], d: f16`. Sixteen 6-bit signed
/// scales (low nibbles in bytes 0..8, high 2-bit pairs in bytes 8..12, minus 32); 2-bit
/// quants as in Q2_K, minus 4 where the hmask bit (bit e/32 of hmask[e%32]) is clear;
/// value `(d·sc) * q`.
fn q3_k(data: &[u8], out: &mut [f32]) {
    for (b, y) in data.chunks_exact(110).zip(out.chunks_exact_mut(QK_K)) {
        let hmask = &b[0..32];
        let qs = &b[32..96];
        let sc = &b[96..108];
        let d = f16_at(b, 108);
        let mut dl = [0f32; 16];
        for (i, dli) in dl.iter_mut().enumerate() {
            let lo = if i < 8 { sc[i] & 0x0F } else { sc[i - 8] >> 4 };
            let hi = (sc[8 + i % 4] >> (2 * (i / 4))) & 3;
            let s = (lo | (hi << 4)) as i32 - 32;
            *dli = d * s as f32;
        }
        for (e, ye) in y.iter_mut().enumerate() {
            let ql = ((qs[(e / 128) * 32 + e % 32] >> (2 * ((e % 128) / 32))) & 3) as i32;
            let h = ((hmask[e % 32] >> (e / 32)) & 1) as i32;
            let q = ql - ((h ^ 1) << 2);
            *ye = dl[e / 16] * q as f32;
        }
    }
}

/// The 6-bit scales and mins of Q4_K and Q5_K (`get_scale_min_k4`).
fn scale_min_k4(s: &[u8]) -> ([u8; 8], [u8; 8]) {
    let mut sc = [0u8; 8];
    let mut mn = [0u8; 8];
    for k in 0..4 {
        sc[k] = s[k] & 0x3F;
        mn[k] = s[k + 4] & 0x3F;
        sc[k + 4] = (s[k + 8] & 0x0F) | ((s[k] >> 2) & 0x30);
        mn[k + 4] = (s[k + 8] >> 4) | ((s[k + 4] >> 2) & 0x30);
    }
    (sc, mn)
}

/// Q4_K: `d: f16, dmin: f16, scales: [u8; 12], qs: [u8; 128]`. Eight sub-blocks of 32;
/// sub-block j uses the low (j even) or high (j odd) nibbles of qs[32·(j/2)..][..32];
/// value `(d·sc) * q - (dmin·m)`.
fn q4_k(data: &[u8], out: &mut [f32]) {
    for (b, y) in data.chunks_exact(144).zip(out.chunks_exact_mut(QK_K)) {
        let d = f16_at(b, 0);
        let dmin = f16_at(b, 2);
        let (sc, mn) = scale_min_k4(&b[4..16]);
        let qs = &b[16..144];
        for j in 0..8 {
            let dj = d * sc[j] as f32;
            let mj = dmin * mn[j] as f32;
            let src = &qs[32 * (j / 2)..32 * (j / 2) + 32];
            let shift = 4 * (j % 2);
            for l in 0..32 {
                y[32 * j + l] = dj * ((src[l] >> shift) & 0x0F) as f32 - mj;
            }
        }
    }
}

/// Q5_K: `d: f16, dmin: f16, scales: [u8; 12], qh: [u8; 32], qs: [u8; 128]`; as Q4_K with
/// the fifth bit of element 32·j + l at bit j of qh[l].
fn q5_k(data: &[u8], out: &mut [f32]) {
    for (b, y) in data.chunks_exact(176).zip(out.chunks_exact_mut(QK_K)) {
        let d = f16_at(b, 0);
        let dmin = f16_at(b, 2);
        let (sc, mn) = scale_min_k4(&b[4..16]);
        let qh = &b[16..48];
        let qs = &b[48..176];
        for j in 0..8 {
            let dj = d * sc[j] as f32;
            let mj = dmin * mn[j] as f32;
            let src = &qs[32 * (j / 2)..32 * (j / 2) + 32];
            let shift = 4 * (j % 2);
            for l in 0..32 {
                let q = ((src[l] >> shift) & 0x0F) | (((qh[l] >> j) & 1) << 4);
                y[32 * j + l] = dj * q as f32 - mj;
            }
        }
    }
}

/// Q6_K: `ql: [u8; 128], qh: [u8; 64], scales: [i8; 16], d: f16`. In each half h of 128
/// elements, element 64·n + l (n = 0, 1) takes nibble n of ql[64·h + l], and element
/// 32·s + l takes bits 2·s of qh[32·h + l] as its two high bits; value `(d·sc) * (q - 32)`.
fn q6_k(data: &[u8], out: &mut [f32]) {
    for (b, y) in data.chunks_exact(210).zip(out.chunks_exact_mut(QK_K)) {
        let ql = &b[0..128];
        let qh = &b[128..192];
        let scales = &b[192..208];
        let d = f16_at(b, 208);
        let mut dl = [0f32; 16];
        for (i, dli) in dl.iter_mut().enumerate() {
            *dli = d * (scales[i] as i8) as f32;
        }
        for (e, ye) in y.iter_mut().enumerate() {
            let (h, w) = (e / 128, e % 128);
            let lo = (ql[64 * h + w % 64] >> (4 * (w / 64))) & 0x0F;
            let hi = (qh[32 * h + w % 32] >> (2 * (w / 32))) & 3;
            let q = (lo | (hi << 4)) as i32 - 32;
            *ye = dl[e / 16] * q as f32;
        }
    }
}
