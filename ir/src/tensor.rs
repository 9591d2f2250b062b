//! Constant tensors (weights, folded constants). The bytes are little-endian, either owned or
//! borrowed from a memory-mapped file, so that importing a large model does not copy its
//! weights.
use std::fmt;
use std::sync::Arc;

use half::{bf16, f16};

use crate::dtype::DType;
use crate::error::{IrError, Result};

#[derive(Clone)]
enum Bytes {
    Owned(Arc<[u8]>),
    Mapped { map: Arc<memmap2::Mmap>, offset: usize, len: usize },
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
        matches!(self.bytes, Bytes::Mapped { .. })
    }

    pub fn bytes(&self) -> &[u8] {
        match &self.bytes {
            Bytes::Owned(b) => b,
            Bytes::Mapped { map, offset, len } => &map[*offset..*offset + *len],
        }
    }

    /// Same bytes, new shape (same element count).
    pub fn reshaped(&self, shape: Vec<usize>) -> Result<Tensor> {
        if checked_numel(&shape) != Some(self.numel()) {
            return Err(IrError::Other(format!("cannot reshape {:?} to {shape:?}", self.shape)));
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
        eat(self.bytes());
        h
    }
}

fn checked_numel(shape: &[usize]) -> Option<usize> {
    shape.iter().try_fold(1usize, |acc, &d| acc.checked_mul(d))
}

impl fmt::Debug for Tensor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Tensor({} {:?}{})", self.dtype, self.shape, if self.is_mapped() { " mapped" } else { "" })
    }
}

impl PartialEq for Tensor {
    fn eq(&self, other: &Self) -> bool {
        self.dtype == other.dtype && self.shape == other.shape && self.bytes() == other.bytes()
    }
}
