//! Run-time values. Floats of every width are computed in f32 (the dtype tag remembers the
//! declared type, and casts to f16/bf16 round through it); integers of every width are kept
//! as i64; booleans as bool.
use ndarray::ArrayD;

use jetc_ir::{DType, Tensor};

#[derive(Clone, Debug, PartialEq)]
pub enum Data {
    F(ArrayD<f32>),
    I(ArrayD<i64>),
    B(ArrayD<bool>),
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
        }
    }

    pub fn len(&self) -> usize {
        self.shape().iter().product()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn as_f32(&self) -> Option<&ArrayD<f32>> {
        match &self.data {
            Data::F(a) => Some(a),
            _ => None,
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
