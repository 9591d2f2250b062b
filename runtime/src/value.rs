//! Run-time values. Floats of every width are computed in f32 (the dtype tag remembers the
//! declared type, and casts to f16/bf16 round through it); integers of every width are kept
//! as i64; booleans as bool.
//!
//! A weight kept in its stored precision (f16, bf16 or a ggml block format, see
//! [`jetc_ir::Stored`]) is a value of its own kind, [`Data::Q`]: the matmul and embedding
//! kernels read its blocks, and every other reader gets its f32 values, de-quantized once on
//! first use ([`Value::dense`]), so that no kernel has to know about the formats.
use std::sync::{Arc, OnceLock};

use ndarray::{ArrayD, IxDyn};
use rayon::prelude::*;

use jetc_ir::tensor::Stored;
use jetc_ir::{DType, Tensor};

use crate::quant::QuantMatrix;

#[derive(Clone, Debug, PartialEq)]
pub enum Data {
    F(ArrayD<f32>),
    I(ArrayD<i64>),
    B(ArrayD<bool>),
    /// A 2-D f32 weight in its stored precision (see [`StoredValue`]).
    Q(Arc<StoredValue>),
}

/// The error of a kernel that finds a stored-precision weight where the executor hands out
/// f32 values (it de-quantizes for every kernel that does not read blocks).
pub(crate) const NOT_DENSE: &str = "a stored-precision weight reached a kernel that reads f32 values";

/// A weight in its stored precision, with its f32 values made only if a kernel that cannot
/// read the blocks asks for them.
pub struct StoredValue {
    tensor: Tensor,
    stored: Stored,
    dense: OnceLock<Value>,
}

impl StoredValue {
    /// The value of a stored-precision tensor; `None` for any other tensor.
    pub fn new(tensor: &Tensor) -> Option<StoredValue> {
        let stored = tensor.stored()?.clone();
        Some(StoredValue { tensor: tensor.clone(), stored, dense: OnceLock::new() })
    }

    pub fn tensor(&self) -> &Tensor {
        &self.tensor
    }

    /// The stored matrix (its rows, their blocks, and whether the value is its transpose).
    pub fn stored(&self) -> &Stored {
        &self.stored
    }

    /// The stored matrix as the quantized kernels take it.
    pub fn matrix(&self) -> Result<QuantMatrix<'_>, String> {
        let s = &self.stored;
        QuantMatrix::new(s.format(), s.rows(), s.cols(), s.bytes())
    }

    /// Whether the f32 values have been made.
    pub fn is_dense(&self) -> bool {
        self.dense.get().is_some()
    }

    /// The f32 values as a plain value, de-quantized (with SIMD, bit-identical to the
    /// reference) on first use and kept.
    pub fn dense(&self) -> &Value {
        self.dense.get_or_init(|| {
            let s = &self.stored;
            let (rows, cols) = (s.rows(), s.cols());
            let mut m = vec![0.0f32; rows * cols];
            if let Ok(q) = self.matrix() {
                const ROWS: usize = 64;
                m.par_chunks_mut((ROWS * cols).max(1)).enumerate().for_each(|(i, out)| {
                    let r0 = i * ROWS;
                    q.decode_rows(r0, (r0 + ROWS).min(rows), out);
                });
            }
            let data = if s.transposed() {
                let mut t = vec![0.0f32; m.len()];
                t.par_chunks_mut(rows.max(1)).enumerate().for_each(|(c, dst)| {
                    for (r, v) in dst.iter_mut().enumerate() {
                        *v = m[r * cols + c];
                    }
                });
                t
            } else {
                m
            };
            let shape = IxDyn(self.tensor.shape());
            Value::f32(ArrayD::from_shape_vec(shape, data).unwrap_or_default())
        })
    }
}

impl std::fmt::Debug for StoredValue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "StoredValue({} {:?}, dense: {})", self.stored.format(), self.tensor.shape(), self.is_dense())
    }
}

impl PartialEq for StoredValue {
    fn eq(&self, other: &Self) -> bool {
        self.tensor == other.tensor
    }
}

#[derive(Clone, Debug, PartialEq)]
pub struct Value {
    pub dtype: DType,
    pub data: Data,
}

impl Value {
    pub fn f32(a: ArrayD<f32>) -> Value {
        Value { dtype: DType::F32, data: Data::F(a) }
    }

    pub fn i64(a: ArrayD<i64>) -> Value {
        Value { dtype: DType::I64, data: Data::I(a) }
    }

    pub fn bool(a: ArrayD<bool>) -> Value {
        Value { dtype: DType::Bool, data: Data::B(a) }
    }

    pub fn shape(&self) -> &[usize] {
        match &self.data {
            Data::F(a) => a.shape(),
            Data::I(a) => a.shape(),
            Data::B(a) => a.shape(),
            Data::Q(s) => s.tensor.shape(),
        }
    }

    pub fn len(&self) -> usize {
        self.shape().iter().product()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The f32 values (a stored-precision weight is de-quantized on first use).
    pub fn as_f32(&self) -> Option<&ArrayD<f32>> {
        match &self.data {
            Data::F(a) => Some(a),
            Data::Q(s) => s.dense().as_f32(),
            _ => None,
        }
    }

    /// The stored-precision weight behind this value, if it is one.
    pub fn stored(&self) -> Option<&StoredValue> {
        match &self.data {
            Data::Q(s) => Some(s),
            _ => None,
        }
    }

    /// This value with a stored-precision weight replaced by its f32 values (made once).
    pub fn dense(&self) -> &Value {
        match &self.data {
            Data::Q(s) => s.dense(),
            _ => self,
        }
    }

    pub fn as_i64(&self) -> Option<&ArrayD<i64>> {
        match &self.data {
            Data::I(a) => Some(a),
            _ => None,
        }
    }

    pub fn as_bool(&self) -> Option<&ArrayD<bool>> {
        match &self.data {
            Data::B(a) => Some(a),
            _ => None,
        }
    }

    /// Converts an IR constant to a run-time value (f16/bf16/f64 widened to f32).
    pub fn from_tensor(t: &Tensor) -> Value {
        if let Some(s) = StoredValue::new(t) {
            return Value { dtype: DType::F32, data: Data::Q(Arc::new(s)) };
        }
        let shape = ndarray::IxDyn(t.shape());
        let data = match t.dtype() {
            d if d.is_float() => Data::F(ArrayD::from_shape_vec(shape, t.to_f32_vec()).unwrap_or_default()),
            DType::Bool => Data::B(
                ArrayD::from_shape_vec(shape, t.bytes().iter().map(|&b| b != 0).collect()).unwrap_or_default(),
            ),
            _ => Data::I(ArrayD::from_shape_vec(shape, t.to_i64_vec()).unwrap_or_default()),
        };
        Value { dtype: t.dtype(), data }
    }

    /// Converts back to an IR tensor of the declared dtype.
    pub fn to_tensor(&self) -> jetc_ir::Result<Tensor> {
        let shape = self.shape().to_vec();
        match (&self.data, self.dtype) {
            (Data::Q(s), _) => Ok(s.tensor.clone()),
            (Data::F(a), DType::F32) => Tensor::from_f32(shape, &a.iter().copied().collect::<Vec<_>>()),
            (Data::F(a), DType::F16) => Tensor::from_bytes(
                DType::F16,
                shape,
                a.iter().flat_map(|&v| half::f16::from_f32(v).to_le_bytes()).collect(),
            ),
            (Data::F(a), DType::BF16) => Tensor::from_bytes(
                DType::BF16,
                shape,
                a.iter().flat_map(|&v| half::bf16::from_f32(v).to_le_bytes()).collect(),
            ),
            (Data::F(a), DType::F64) => {
                Tensor::from_bytes(DType::F64, shape, a.iter().flat_map(|&v| (v as f64).to_le_bytes()).collect())
            }
            (Data::I(a), d) => {
                let bytes: Vec<u8> = match d {
                    DType::I32 => a.iter().flat_map(|&v| (v as i32).to_le_bytes()).collect(),
                    DType::I16 => a.iter().flat_map(|&v| (v as i16).to_le_bytes()).collect(),
                    DType::I8 => a.iter().map(|&v| v as i8 as u8).collect(),
                    DType::U8 => a.iter().map(|&v| v as u8).collect(),
                    _ => a.iter().flat_map(|&v| v.to_le_bytes()).collect(),
                };
                let dtype = if d.is_int() { d } else { DType::I64 };
                Tensor::from_bytes(dtype, shape, bytes)
            }
            (Data::B(a), _) => Tensor::from_bool(shape, &a.iter().copied().collect::<Vec<_>>()),
            (Data::F(a), _) => Tensor::from_f32(shape, &a.iter().copied().collect::<Vec<_>>()),
        }
    }
}
