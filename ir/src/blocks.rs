//! Stored-precision weight formats: the half floats and ggml's block quantizations, with
//! their reference de-quantization.
//!
//! A weight kept in its stored precision is a sequence of rows, each a whole number of blocks
//! of [`BlockFormat::block_size`] elements in [`BlockFormat::block_bytes`] bytes. The IR holds
//! this list so that the GGUF reader, the executor's de-quantizing matmuls and their tests
//! agree on one definition. The reference kernels below follow gguf-py's `gguf/quants.py`
//! (which follows ggml's `dequantize_row_*`), including the order of the f32 operations
//! (`(d * scale) * q - (dmin * min)`), so that the results are bit-identical to
//! `gguf.quants.dequantize`. Rust never fuses a multiply and an add on its own, so
//! `a * b + c` rounds twice, as numpy does. The per-format kernels are public and
//! `#[inline(always)]` so that a caller compiled for a wider SIMD target (the executor's
//! de-quantizing matmuls) vectorizes the very same operations.
use half::f16;

/// Elements per super-block of the k-quants (ggml's `QK_K`).
pub const SUPER_BLOCK: usize = 256;

/// A stored-precision format of weights: half floats (blocks of one element) or a ggml block
/// quantization.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[allow(non_camel_case_types)]
pub enum BlockFormat {
    F16,
    BF16,
    Q4_0,
    Q4_1,
    Q5_0,
    Q5_1,
    Q8_0,
    Q2_K,
    Q3_K,
    Q4_K,
    Q5_K,
    Q6_K,
}

impl BlockFormat {
    /// Every format, in ggml's order.
    pub const ALL: [BlockFormat; 12] = [
        BlockFormat::F16,
        BlockFormat::BF16,
        BlockFormat::Q4_0,
        BlockFormat::Q4_1,
        BlockFormat::Q5_0,
        BlockFormat::Q5_1,
        BlockFormat::Q8_0,
        BlockFormat::Q2_K,
        BlockFormat::Q3_K,
        BlockFormat::Q4_K,
        BlockFormat::Q5_K,
        BlockFormat::Q6_K,
    ];

    /// The ggml name (`Q4_K`, `BF16`, ...).
    pub fn name(self) -> &'static str {
        match self {
            BlockFormat::F16 => "F16",
            BlockFormat::BF16 => "BF16",
            BlockFormat::Q4_0 => "Q4_0",
            BlockFormat::Q4_1 => "Q4_1",
            BlockFormat::Q5_0 => "Q5_0",
            BlockFormat::Q5_1 => "Q5_1",
            BlockFormat::Q8_0 => "Q8_0",
            BlockFormat::Q2_K => "Q2_K",
            BlockFormat::Q3_K => "Q3_K",
            BlockFormat::Q4_K => "Q4_K",
            BlockFormat::Q5_K => "Q5_K",
            BlockFormat::Q6_K => "Q6_K",
        }
    }

    /// Elements per block.
    pub fn block_size(self) -> usize {
        match self {
            BlockFormat::F16 | BlockFormat::BF16 => 1,
            BlockFormat::Q4_0 | BlockFormat::Q4_1 | BlockFormat::Q5_0 | BlockFormat::Q5_1 | BlockFormat::Q8_0 => 32,
            _ => SUPER_BLOCK,
        }
    }

    /// Bytes per block.
    pub fn block_bytes(self) -> usize {
        match self {
            BlockFormat::F16 | BlockFormat::BF16 => 2,
            BlockFormat::Q4_0 => 18,
            BlockFormat::Q4_1 => 20,
            BlockFormat::Q5_0 => 22,
            BlockFormat::Q5_1 => 24,
            BlockFormat::Q8_0 => 34,
            BlockFormat::Q2_K => 84,
            BlockFormat::Q3_K => 110,
            BlockFormat::Q4_K => 144,
            BlockFormat::Q5_K => 176,
            BlockFormat::Q6_K => 210,
        }
    }

    /// Bytes of a row of `cols` elements, or `None` when `cols` is not a whole number of blocks.
    pub fn row_bytes(self, cols: usize) -> Option<usize> {
        cols.is_multiple_of(self.block_size()).then(|| cols / self.block_size() * self.block_bytes())
    }

    /// De-quantizes whole blocks: `data` holds `out.len() / block_size` blocks. The lengths are
    /// the caller's to check ([`BlockFormat::row_bytes`]); a mismatch leaves the tail of `out`
    /// untouched.
    pub fn decode(self, data: &[u8], out: &mut [f32]) {
        let kernel: fn(&[u8], &mut [f32]) = match self {
            BlockFormat::F16 => f16_values,
            BlockFormat::BF16 => bf16_values,
            BlockFormat::Q4_0 => q4_0,
            BlockFormat::Q4_1 => q4_1,
            BlockFormat::Q5_0 => q5_0,
            BlockFormat::Q5_1 => q5_1,
            BlockFormat::Q8_0 => q8_0,
            BlockFormat::Q2_K => q2_k,
            BlockFormat::Q3_K => q3_k,
            BlockFormat::Q4_K => q4_k,
            BlockFormat::Q5_K => q5_k,
            BlockFormat::Q6_K => q6_k,
        };
        kernel(data, out)
    }
}

impl BlockFormat {
    /// Quantizes whole blocks of `values` as ggml's reference quantizers do
    /// (`quantize_row_*_ref`): f16, bf16, Q4_0, Q4_1 and Q8_0. Errors for the other formats
    /// and for a length that is not a whole number of blocks.
    pub fn encode(self, values: &[f32]) -> Result<Vec<u8>, String> {
        let bs = self.block_size();
        if !values.len().is_multiple_of(bs) {
            return Err(format!("{} values are not a whole number of {self} blocks of {bs}", values.len()));
        }
        let mut out = Vec::with_capacity(values.len() / bs * self.block_bytes());
        let half = |v: f32| f16::from_f32(v).to_le_bytes();
        match self {
            BlockFormat::F16 => values.iter().for_each(|&v| out.extend_from_slice(&half(v))),
            BlockFormat::BF16 => values.iter().for_each(|&v| out.extend_from_slice(&half::bf16::from_f32(v).to_le_bytes())),
            BlockFormat::Q8_0 => {
                for b in values.chunks_exact(32) {
                    let amax = b.iter().fold(0.0f32, |m, v| m.max(v.abs()));
                    let d = amax / 127.0;
                    let id = if d != 0.0 { 1.0 / d } else { 0.0 };
                    out.extend_from_slice(&half(d));
                    out.extend(b.iter().map(|&v| (v * id).round() as i8 as u8));
                }
            }
            BlockFormat::Q4_0 => {
                for b in values.chunks_exact(32) {
                    // The value of largest magnitude, with its sign, maps to -8.
                    let max = b.iter().fold(0.0f32, |m, &v| if v.abs() > m.abs() { v } else { m });
                    let d = max / -8.0;
                    let id = if d != 0.0 { 1.0 / d } else { 0.0 };
                    out.extend_from_slice(&half(d));
                    let q = |v: f32| ((v * id + 8.5) as i32).clamp(0, 15) as u8;
                    out.extend((0..16).map(|j| q(b[j]) | (q(b[j + 16]) << 4)));
                }
            }
            BlockFormat::Q4_1 => {
                for b in values.chunks_exact(32) {
                    let min = b.iter().fold(f32::INFINITY, |m, &v| m.min(v));
                    let max = b.iter().fold(f32::NEG_INFINITY, |m, &v| m.max(v));
                    let d = (max - min) / 15.0;
                    let id = if d != 0.0 { 1.0 / d } else { 0.0 };
                    out.extend_from_slice(&half(d));
                    out.extend_from_slice(&half(min));
                    let q = |v: f32| (((v - min) * id + 0.5) as i32).clamp(0, 15) as u8;
                    out.extend((0..16).map(|j| q(b[j]) | (q(b[j + 16]) << 4)));
                }
            }
            _ => return Err(format!("jetc has no {self} quantizer (it reads {self}, it does not write it)")),
        }
        Ok(out)
    }
}

impl std::fmt::Display for BlockFormat {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

#[inline(always)]
fn f16_at(b: &[u8], i: usize) -> f32 {
    f16::from_bits(u16::from_le_bytes([b[i], b[i + 1]])).to_f32()
}

/// F16: one IEEE half per element.
#[inline(always)]
pub fn f16_values(data: &[u8], out: &mut [f32]) {
    for (c, y) in data.chunks_exact(2).zip(out.iter_mut()) {
        *y = f16::from_bits(u16::from_le_bytes([c[0], c[1]])).to_f32();
    }
}

/// BF16: the high 16 bits of an f32 per element.
#[inline(always)]
pub fn bf16_values(data: &[u8], out: &mut [f32]) {
    for (c, y) in data.chunks_exact(2).zip(out.iter_mut()) {
        *y = f32::from_bits((u16::from_le_bytes([c[0], c[1]]) as u32) << 16);
    }
}

/// Q4_0: `d: f16, qs: [u8; 16]`; element j is the low nibble of qs[j], element j+16 the
/// high one; value `d * (q - 8)`.
#[inline(always)]
pub fn q4_0(data: &[u8], out: &mut [f32]) {
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
#[inline(always)]
pub fn q4_1(data: &[u8], out: &mut [f32]) {
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
#[inline(always)]
pub fn q5_0(data: &[u8], out: &mut [f32]) {
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
#[inline(always)]
pub fn q5_1(data: &[u8], out: &mut [f32]) {
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
#[inline(always)]
pub fn q8_0(data: &[u8], out: &mut [f32]) {
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
#[inline(always)]
pub fn q2_k(data: &[u8], out: &mut [f32]) {
    for (b, y) in data.chunks_exact(84).zip(out.chunks_exact_mut(SUPER_BLOCK)) {
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
#[inline(always)]
pub fn q3_k(data: &[u8], out: &mut [f32]) {
    for (b, y) in data.chunks_exact(110).zip(out.chunks_exact_mut(SUPER_BLOCK)) {
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
#[inline(always)]
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
#[inline(always)]
pub fn q4_k(data: &[u8], out: &mut [f32]) {
    for (b, y) in data.chunks_exact(144).zip(out.chunks_exact_mut(SUPER_BLOCK)) {
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
#[inline(always)]
pub fn q5_k(data: &[u8], out: &mut [f32]) {
    for (b, y) in data.chunks_exact(176).zip(out.chunks_exact_mut(SUPER_BLOCK)) {
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
#[inline(always)]
pub fn q6_k(data: &[u8], out: &mut [f32]) {
    for (b, y) in data.chunks_exact(210).zip(out.chunks_exact_mut(SUPER_BLOCK)) {
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

#[cfg(test)]
mod tests {
    use super::*;

    /// Encoding then decoding stays within half a quantization step of each value (the f16
    /// scales add a relative 2^-11); Q4_0 maps the value of largest magnitude to -8, so the
    /// opposite extreme can clip by a whole step (ggml's behaviour).
    #[test]
    fn encode_then_decode_is_within_half_a_step() {
        let values: Vec<f32> = (0..256).map(|i| ((i * 37 % 101) as f32 / 50.0 - 1.0) * if i < 128 { 1.0 } else { 3.0 }).collect();
        for (format, levels) in [(BlockFormat::Q8_0, 254.0), (BlockFormat::Q4_0, 8.0), (BlockFormat::Q4_1, 15.0), (BlockFormat::F16, 4096.0), (BlockFormat::BF16, 256.0)] {
            let bytes = format.encode(&values).unwrap();
            assert_eq!(bytes.len(), format.row_bytes(values.len()).unwrap(), "{format}");
            let mut back = vec![0.0f32; values.len()];
            format.decode(&bytes, &mut back);
            for blk in 0..values.len() / 32 {
                let b = &values[blk * 32..(blk + 1) * 32];
                let (lo, hi) = b.iter().fold((f32::INFINITY, f32::NEG_INFINITY), |(l, h), &v| (l.min(v), h.max(v)));
                let range = if format == BlockFormat::Q4_1 { hi - lo } else { 2.0 * lo.abs().max(hi.abs()) };
                for (l, (&v, &r)) in b.iter().zip(&back[blk * 32..]).enumerate() {
                    let tol = range / levels * 0.5 * 1.01 + v.abs() * 1e-3;
                    assert!((v - r).abs() <= tol, "{format} element {}: {v} -> {r} (tolerance {tol})", blk * 32 + l);
                }
            }
        }
        assert!(BlockFormat::Q4_K.encode(&values).unwrap_err().contains("no Q4_K quantizer"));
        assert!(BlockFormat::Q8_0.encode(&values[..31]).is_err());
    }
}
