//! Constant tensors (weights, folded constants). The bytes are little-endian, either owned or
//! borrowed from a memory-mapped file, so that importing a large model does not copy its
//! weights.
//!
//! A 2-D f32 weight can also be kept in a stored-precision format ([`Stored`]: f16, bf16 or a
//! ggml block quantization, as a GGUF file holds it). Such a tensor is f32 to everything that
//! reads it: [`Tensor::bytes`] de-quantizes on first use and keeps the result. The executor's
//! matmuls read the stored blocks instead ([`Tensor::stored`]), so that a model run from a
//! quantized file never holds an f32 copy of its weights.
use std::fmt;
use std::sync::{Arc, OnceLock};

use half::{bf16, f16};

use crate::blocks::BlockFormat;
use crate::dtype::DType;
use crate::error::{IrError, Result};

#[derive(Clone)]
enum Bytes {
    Owned(Arc<[u8]>),
    Mapped { map: Arc<memmap2::Mmap>, offset: usize, len: usize },
    /// A stored-precision matrix; its f32 bytes are made on first use.
    Stored { stored: Stored, f32: Arc<OnceLock<Arc<[u8]>>> },
}

impl Bytes {
    /// The bytes as held: owned, mapped, or the stored blocks.
    fn held(&self) -> &[u8] {
        match self {
            Bytes::Owned(b) => b,
            Bytes::Mapped { map, offset, len } => &map[*offset..*offset + *len],
            Bytes::Stored { stored, .. } => stored.bytes(),
        }
    }
}

/// A matrix of `rows` rows of `cols` elements in a stored-precision format, each row a whole
/// number of blocks (ggml's layout). The tensor it backs is either the matrix, `[rows, cols]`
/// (an embedding table), or its transpose, `[cols, rows]` (a linear layer's weight as
/// `x @ W` reads it, from ggml's rows of input features).
#[derive(Clone)]
pub struct Stored {
    format: BlockFormat,
    rows: usize,
    cols: usize,
    transposed: bool,
    bytes: Arc<StoredBytes>,
}

enum StoredBytes {
    Owned(Vec<u8>),
    Mapped { map: Arc<memmap2::Mmap>, offset: usize, len: usize },
}

impl Stored {
    pub fn format(&self) -> BlockFormat {
        self.format
    }

    /// Rows of the stored matrix.
    pub fn rows(&self) -> usize {
        self.rows
    }

    /// Elements per stored row.
    pub fn cols(&self) -> usize {
        self.cols
    }

    /// Whether the tensor is the transpose of the stored matrix.
    pub fn transposed(&self) -> bool {
        self.transposed
    }

    /// The stored blocks, row after row.
    pub fn bytes(&self) -> &[u8] {
        match &*self.bytes {
            StoredBytes::Owned(b) => b,
            StoredBytes::Mapped { map, offset, len } => &map[*offset..*offset + *len],
        }
    }

    /// The tensor's shape.
    fn shape(&self) -> Vec<usize> {
        if self.transposed {
            vec![self.cols, self.rows]
        } else {
            vec![self.rows, self.cols]
        }
    }

    /// The tensor's f32 values, row-major in its own shape (the reference de-quantization).
    pub fn to_f32(&self) -> Vec<f32> {
        let mut m = vec![0.0f32; self.rows * self.cols];
        self.format.decode(self.bytes(), &mut m);
        if !self.transposed {
            return m;
        }
        let mut t = vec![0.0f32; m.len()];
        for (r, row) in m.chunks_exact(self.cols.max(1)).enumerate() {
            for (c, &v) in row.iter().enumerate() {
                t[c * self.rows + r] = v;
            }
        }
        t
    }
}

/// A constant tensor with a concrete shape.
#[derive(Clone)]
pub struct Tensor {
    dtype: DType,
    shape: Vec<usize>,
    bytes: Bytes,
}

impl Tensor {
    /// Builds a tensor from owned little-endian bytes; checks that the size fits the shape.
    pub fn from_bytes(dtype: DType, shape: Vec<usize>, bytes: Vec<u8>) -> Result<Tensor> {
        let want = checked_numel(&shape)
            .and_then(|n| n.checked_mul(dtype.size_bytes()))
            .ok_or_else(|| IrError::Other(format!("tensor shape {shape:?} overflows")))?;
        if bytes.len() != want {
            return Err(IrError::Other(format!(
                "tensor of {dtype} {shape:?} needs {want} bytes, got {}",
                bytes.len()
            )));
        }
        Ok(Tensor { dtype, shape, bytes: Bytes::Owned(bytes.into()) })
    }

    /// Borrows `len` bytes at `offset` of a mapped file (external data).
    pub fn from_mapped(
        dtype: DType,
        shape: Vec<usize>,
        map: Arc<memmap2::Mmap>,
        offset: usize,
        len: usize,
    ) -> Result<Tensor> {
        let want = checked_numel(&shape)
            .and_then(|n| n.checked_mul(dtype.size_bytes()))
            .ok_or_else(|| IrError::Other(format!("tensor shape {shape:?} overflows")))?;
        let end = offset.checked_add(len).filter(|&e| e <= map.len());
        if want != len || end.is_none() {
            return Err(IrError::Other(format!(
                "mapped tensor of {dtype} {shape:?} needs {want} bytes at offset {offset}, \
                 the region has {len} and the file {}",
                map.len()
            )));
        }
        Ok(Tensor { dtype, shape, bytes: Bytes::Mapped { map, offset, len } })
    }

    /// A 2-D f32 tensor kept as `rows` rows of `cols` elements in `format` (owned `bytes`), the
    /// matrix itself or, with `transposed`, its transpose.
    pub fn from_stored(format: BlockFormat, rows: usize, cols: usize, transposed: bool, bytes: Vec<u8>) -> Result<Tensor> {
        Tensor::stored_with(format, rows, cols, transposed, StoredBytes::Owned(bytes))
    }

    /// [`Tensor::from_stored`] on `len` bytes at `offset` of a mapped file.
    pub fn from_stored_mapped(
        format: BlockFormat,
        rows: usize,
        cols: usize,
        transposed: bool,
        map: Arc<memmap2::Mmap>,
        offset: usize,
        len: usize,
    ) -> Result<Tensor> {
        if offset.checked_add(len).is_none_or(|e| e > map.len()) {
            return Err(IrError::Other(format!("stored {format} matrix at offset {offset} (+{len}) is outside the file of {}", map.len())));
        }
        Tensor::stored_with(format, rows, cols, transposed, StoredBytes::Mapped { map, offset, len })
    }

    fn stored_with(format: BlockFormat, rows: usize, cols: usize, transposed: bool, bytes: StoredBytes) -> Result<Tensor> {
        let stored = Stored { format, rows, cols, transposed, bytes: Arc::new(bytes) };
        let want = format.row_bytes(cols).and_then(|b| b.checked_mul(rows));
        if want != Some(stored.bytes().len()) {
            return Err(IrError::Other(format!(
                "a stored {format} matrix of {rows} x {cols} needs {} bytes, got {}",
                want.map_or("a whole number of blocks per row and".to_string(), |w| w.to_string()),
                stored.bytes().len()
            )));
        }
        Ok(Tensor { dtype: DType::F32, shape: stored.shape(), bytes: Bytes::Stored { stored, f32: Arc::new(OnceLock::new()) } })
    }

    /// The stored-precision matrix behind this tensor, if it has one.
    pub fn stored(&self) -> Option<&Stored> {
        match &self.bytes {
            Bytes::Stored { stored, .. } => Some(stored),
            _ => None,
        }
    }

    /// The transpose of a stored-precision tensor, sharing its blocks (a tied LM head reads
    /// the embedding table this way); `None` for other tensors.
    pub fn stored_transpose(&self) -> Option<Tensor> {
        let mut stored = self.stored()?.clone();
        stored.transposed = !stored.transposed;
        Some(Tensor { dtype: DType::F32, shape: stored.shape(), bytes: Bytes::Stored { stored, f32: Arc::new(OnceLock::new()) } })
    }

    pub fn from_f32(shape: Vec<usize>, data: &[f32]) -> Result<Tensor> {
        Tensor::from_bytes(DType::F32, shape, bytemuck::cast_slice(data).to_vec())
    }

    pub fn from_i64(shape: Vec<usize>, data: &[i64]) -> Result<Tensor> {
        Tensor::from_bytes(DType::I64, shape, bytemuck::cast_slice(data).to_vec())
    }

    pub fn from_bool(shape: Vec<usize>, data: &[bool]) -> Result<Tensor> {
        Tensor::from_bytes(DType::Bool, shape, data.iter().map(|&b| b as u8).collect())
    }

    pub fn scalar_f32(v: f32) -> Tensor {
        // A scalar f32 always has exactly 4 bytes.
        Tensor { dtype: DType::F32, shape: vec![], bytes: Bytes::Owned(v.to_le_bytes().to_vec().into()) }
    }

    pub fn scalar_i64(v: i64) -> Tensor {
        Tensor { dtype: DType::I64, shape: vec![], bytes: Bytes::Owned(v.to_le_bytes().to_vec().into()) }
    }

    pub fn dtype(&self) -> DType {
        self.dtype
    }

    pub fn shape(&self) -> &[usize] {
        &self.shape
    }

    pub fn numel(&self) -> usize {
        self.shape.iter().product()
    }

    pub fn is_mapped(&self) -> bool {
        match &self.bytes {
            Bytes::Mapped { .. } => true,
            Bytes::Stored { stored, .. } => matches!(*stored.bytes, StoredBytes::Mapped { .. }),
            Bytes::Owned(_) => false,
        }
    }

    /// The little-endian bytes of the tensor's dtype, row-major (a stored-precision tensor is
    /// de-quantized to f32 on the first call, and the result kept).
    pub fn bytes(&self) -> &[u8] {
        match &self.bytes {
            Bytes::Stored { stored, f32 } => f32.get_or_init(|| bytemuck::cast_slice::<f32, u8>(&stored.to_f32()).into()),
            held => held.held(),
        }
    }

    /// Whether a stored-precision tensor has been de-quantized to f32 bytes (by a call to
    /// [`Tensor::bytes`]); false for every other tensor.
    pub fn is_decoded(&self) -> bool {
        matches!(&self.bytes, Bytes::Stored { f32, .. } if f32.get().is_some())
    }

    /// Bytes this tensor keeps: the stored blocks for a stored-precision tensor, else its
    /// bytes (what a model's weights cost in memory and on disk).
    pub fn held_bytes(&self) -> usize {
        self.bytes.held().len()
    }

    /// Same values, new shape (same element count); a stored-precision tensor becomes a plain
    /// f32 one.
    pub fn reshaped(&self, shape: Vec<usize>) -> Result<Tensor> {
        if checked_numel(&shape) != Some(self.numel()) {
            return Err(IrError::Other(format!("cannot reshape {:?} to {shape:?}", self.shape)));
        }
        if self.stored().is_some() {
            return Tensor::from_bytes(self.dtype, shape, self.bytes().to_vec());
        }
        Ok(Tensor { dtype: self.dtype, shape, bytes: self.bytes.clone() })
    }

    /// Values converted to f32 (floats widened or narrowed, ints and bools converted).
    pub fn to_f32_vec(&self) -> Vec<f32> {
        let b = self.bytes();
        match self.dtype {
            DType::F32 => b.chunks_exact(4).map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]])).collect(),
            DType::F16 => b.chunks_exact(2).map(|c| f16::from_le_bytes([c[0], c[1]]).to_f32()).collect(),
            DType::BF16 => b.chunks_exact(2).map(|c| bf16::from_le_bytes([c[0], c[1]]).to_f32()).collect(),
            DType::F64 => b
                .chunks_exact(8)
                .map(|c| f64::from_le_bytes(c.try_into().unwrap_or([0; 8])) as f32)
                .collect(),
            _ => self.to_i64_vec().into_iter().map(|v| v as f32).collect(),
        }
    }

    /// Values converted to i64 (floats truncated toward zero).
    pub fn to_i64_vec(&self) -> Vec<i64> {
        let b = self.bytes();
        match self.dtype {
            DType::I64 => b.chunks_exact(8).map(|c| i64::from_le_bytes(c.try_into().unwrap_or([0; 8]))).collect(),
            DType::I32 => b.chunks_exact(4).map(|c| i32::from_le_bytes([c[0], c[1], c[2], c[3]]) as i64).collect(),
            DType::I16 => b.chunks_exact(2).map(|c| i16::from_le_bytes([c[0], c[1]]) as i64).collect(),
            DType::I8 => b.iter().map(|&v| v as i8 as i64).collect(),
            DType::U8 | DType::Bool => b.iter().map(|&v| v as i64).collect(),
            _ => self.to_f32_vec().into_iter().map(|v| v as i64).collect(),
        }
    }

    /// Content hash used to merge identical constants and to name weights stably (FNV-1a 64).
    pub fn content_hash(&self) -> u64 {
        let mut h: u64 = 0xcbf29ce484222325;
        let mut eat = |bytes: &[u8]| {
            for &b in bytes {
                h ^= b as u64;
                h = h.wrapping_mul(0x100000001b3);
            }
        };
        eat(&[self.dtype.to_onnx() as u8]);
        for d in &self.shape {
            eat(&(*d as u64).to_le_bytes());
        }
        // A stored-precision tensor hashes its blocks (without de-quantizing them): equal
        // blocks in one format and orientation are equal tensors.
        if let Some(s) = self.stored() {
            eat(s.format.name().as_bytes());
            eat(&[s.transposed as u8]);
            eat(s.bytes());
            return h;
        }
        eat(self.bytes());
        h
    }
}

fn checked_numel(shape: &[usize]) -> Option<usize> {
    shape.iter().try_fold(1usize, |acc, &d| acc.checked_mul(d))
}

impl fmt::Debug for Tensor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let stored = self.stored().map(|s| format!(" stored {}", s.format)).unwrap_or_default();
        write!(f, "Tensor({} {:?}{stored}{})", self.dtype, self.shape, if self.is_mapped() { " mapped" } else { "" })
    }
}

impl PartialEq for Tensor {
    fn eq(&self, other: &Self) -> bool {
        if let (Some(a), Some(b)) = (self.stored(), other.stored()) {
            if a.format == b.format && a.transposed == b.transposed && a.rows == b.rows {
                return a.bytes() == b.bytes();
            }
        }
        self.dtype == other.dtype && self.shape == other.shape && self.bytes() == other.bytes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A stored tensor reads as f32 exactly as its reference de-quantization, in both
    /// orientations, and hashes and compares by its blocks.
    #[test]
    fn stored_tensors_read_as_their_reference_f32() {
        let (rows, cols) = (3, 64);
        let values: Vec<f32> = (0..rows * cols).map(|i| (i % 17) as f32 / 8.0 - 1.0).collect();
        let blocks = BlockFormat::Q8_0.encode(&values).unwrap();
        let mut reference = vec![0.0f32; rows * cols];
        BlockFormat::Q8_0.decode(&blocks, &mut reference);

        let t = Tensor::from_stored(BlockFormat::Q8_0, rows, cols, false, blocks.clone()).unwrap();
        assert_eq!((t.dtype(), t.shape()), (DType::F32, &[rows, cols][..]));
        assert_eq!(t.to_f32_vec(), reference);
        assert_eq!(t.held_bytes(), blocks.len());

        let tt = t.stored_transpose().unwrap();
        assert_eq!(tt.shape(), &[cols, rows]);
        let got = tt.to_f32_vec();
        for r in 0..rows {
            for c in 0..cols {
                assert_eq!(got[c * rows + r], reference[r * cols + c], "({r}, {c})");
            }
        }
        assert!(tt.stored().unwrap().transposed());
        assert_ne!(t.content_hash(), tt.content_hash());
        let again = Tensor::from_stored(BlockFormat::Q8_0, rows, cols, false, blocks.clone()).unwrap();
        assert_eq!(t.content_hash(), again.content_hash());
        assert!(t == again);
        assert_eq!(t.reshaped(vec![cols, rows]).unwrap().to_f32_vec(), reference);

        let err = Tensor::from_stored(BlockFormat::Q8_0, rows, cols, false, blocks[..10].to_vec()).unwrap_err().to_string();
        assert!(err.contains("needs 204 bytes, got 10"), "{err}");
        let err = Tensor::from_stored(BlockFormat::Q8_0, 1, 31, false, vec![0; 34]).unwrap_err().to_string();
        assert!(err.contains("whole number of blocks"), "{err}");
    }
}
