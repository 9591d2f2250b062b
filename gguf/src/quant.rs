//! De-quantization of ggml blocks to f32: the reference kernels of
//! [`jetc_ir::blocks::BlockFormat`] (bit-identical to gguf-py's `gguf.quants.dequantize`),
//! split over rayon's pool for large tensors.
use jetc_ir::blocks::BlockFormat;
use rayon::prelude::*;

use crate::types::GgmlType;

/// The stored-precision format of a ggml type, or `None` for f32, the integer types and the
/// types without a kernel (Q8_1, Q8_K, the i-quants).
pub fn block_format(ty: GgmlType) -> Option<BlockFormat> {
    Some(match ty {
        GgmlType::F16 => BlockFormat::F16,
        GgmlType::BF16 => BlockFormat::BF16,
        GgmlType::Q4_0 => BlockFormat::Q4_0,
        GgmlType::Q4_1 => BlockFormat::Q4_1,
        GgmlType::Q5_0 => BlockFormat::Q5_0,
        GgmlType::Q5_1 => BlockFormat::Q5_1,
        GgmlType::Q8_0 => BlockFormat::Q8_0,
        GgmlType::Q2_K => BlockFormat::Q2_K,
        GgmlType::Q3_K => BlockFormat::Q3_K,
        GgmlType::Q4_K => BlockFormat::Q4_K,
        GgmlType::Q5_K => BlockFormat::Q5_K,
        GgmlType::Q6_K => BlockFormat::Q6_K,
        _ => return None,
    })
}

/// Blocks per parallel work item (and the minimum for going parallel at all).
const PAR_BLOCKS: usize = 4096;

/// De-quantizes whole blocks of type `ty` from `data` into `out`.
///
/// `data` must hold a whole number of blocks and `out` exactly their elements; errors (as
/// a plain message) for a type without a kernel or mismatched lengths. Large inputs are
/// split over rayon's pool.
pub fn dequantize_into(ty: GgmlType, data: &[u8], out: &mut [f32]) -> Result<(), String> {
    let format = match (ty, block_format(ty)) {
        (GgmlType::F32, _) => None,
        (_, Some(format)) => Some(format),
        _ => return Err(format!("no de-quantization kernel for ggml type {ty}")),
    };
    let kernel = |d: &[u8], o: &mut [f32]| match format {
        Some(format) => format.decode(d, o),
        None => f32_kernel(d, o),
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

fn f32_kernel(data: &[u8], out: &mut [f32]) {
    for (c, y) in data.chunks_exact(4).zip(out.iter_mut()) {
        *y = f32::from_le_bytes([c[0], c[1], c[2], c[3]]);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The IR's block formats and ggml's type table agree on every block's size and bytes.
    #[test]
    fn block_formats_match_ggml_types() {
        let mut seen = 0;
        for id in 0..64 {
            let Some(ty) = GgmlType::from_id(id) else { continue };
            if let Some(f) = block_format(ty) {
                assert_eq!((f.block_size(), f.block_bytes(), f.name()), (ty.block_size(), ty.type_size(), ty.name()), "{ty}");
                seen += 1;
            }
        }
        assert_eq!(seen, BlockFormat::ALL.len());
    }
}
