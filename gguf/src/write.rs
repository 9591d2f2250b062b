//! A minimal GGUF v3 writer, for tests and tools that need small GGUF files (the real
//! converter is llama.cpp's). Tensor data is written as given, each tensor padded to the
//! alignment, as gguf-py's `GGUFWriter` does.
use crate::meta::{MetaArray, MetaValue};
use crate::types::GgmlType;

/// Builds a GGUF image in memory.
#[derive(Clone, Debug)]
pub struct GgufWriter {
    version: u32,
    alignment: u64,
    kvs: Vec<(String, MetaValue)>,
    tensors: Vec<(String, Vec<u64>, u32, Vec<u8>)>,
}

impl Default for GgufWriter {
    fn default() -> Self {
        GgufWriter {
            version: 3,
            alignment: crate::DEFAULT_ALIGNMENT,
            kvs: Vec::new(),
            tensors: Vec::new(),
        }
    }
}

impl GgufWriter {
    pub fn new() -> GgufWriter {
        GgufWriter::default()
    }

    /// The version field to write (default 3; the v2 layout is the same).
    pub fn version(mut self, version: u32) -> Self {
        self.version = version;
        self
    }

    /// Sets the data alignment and adds the `general.alignment` key for it.
    pub fn alignment(mut self, alignment: u32) -> Self {
        self.alignment = alignment.max(1) as u64;
        self.kvs
            .push(("general.alignment".into(), MetaValue::U32(alignment)));
        self
    }

    pub fn kv(mut self, key: impl Into<String>, value: MetaValue) -> Self {
        self.kvs.push((key.into(), value));
        self
    }

    /// Adds a tensor; `dims` in GGUF order (`dims[0]` innermost), `data` its raw bytes.
    pub fn tensor(
        self,
        name: impl Into<String>,
        dims: &[u64],
        ty: GgmlType,
        data: Vec<u8>,
    ) -> Self {
        self.tensor_raw(name, dims, ty.id(), data)
    }

    /// Adds a tensor with any type id (for testing unknown types).
    pub fn tensor_raw(
        mut self,
        name: impl Into<String>,
        dims: &[u64],
        type_id: u32,
        data: Vec<u8>,
    ) -> Self {
        self.tensors
            .push((name.into(), dims.to_vec(), type_id, data));
        self
    }

    /// Adds an F32 tensor from values.
    pub fn tensor_f32(self, name: impl Into<String>, dims: &[u64], values: &[f32]) -> Self {
        let data = values.iter().flat_map(|v| v.to_le_bytes()).collect();
        self.tensor(name, dims, GgmlType::F32, data)
    }

    pub fn to_bytes(&self) -> Vec<u8> {
        let pad = |n: u64| n.div_ceil(self.alignment) * self.alignment;
        let mut out = Vec::new();
        out.extend_from_slice(b"GGUF");
        out.extend_from_slice(&self.version.to_le_bytes());
        out.extend_from_slice(&(self.tensors.len() as u64).to_le_bytes());
        out.extend_from_slice(&(self.kvs.len() as u64).to_le_bytes());
        for (k, v) in &self.kvs {
            encode_str(k, &mut out);
            out.extend_from_slice(&v.meta_type().id().to_le_bytes());
            encode_value(v, &mut out);
        }
        let mut offset = 0u64;
        for (name, dims, ty, data) in &self.tensors {
            encode_str(name, &mut out);
            out.extend_from_slice(&(dims.len() as u32).to_le_bytes());
            for d in dims {
                out.extend_from_slice(&d.to_le_bytes());
            }
            out.extend_from_slice(&ty.to_le_bytes());
            out.extend_from_slice(&offset.to_le_bytes());
            offset += pad(data.len() as u64);
        }
        out.resize(pad(out.len() as u64) as usize, 0);
        for (_, _, _, data) in &self.tensors {
            out.extend_from_slice(data);
            out.resize(pad(out.len() as u64) as usize, 0);
        }
        out
    }
}

/// A GGUF string: u64 length, then the UTF-8 bytes.
pub fn encode_str(s: &str, out: &mut Vec<u8>) {
    out.extend_from_slice(&(s.len() as u64).to_le_bytes());
    out.extend_from_slice(s.as_bytes());
}

/// A metadata value without its leading type id.
pub fn encode_value(v: &MetaValue, out: &mut Vec<u8>) {
    match v {
        MetaValue::U8(x) => out.extend_from_slice(&x.to_le_bytes()),
        MetaValue::I8(x) => out.extend_from_slice(&x.to_le_bytes()),
        MetaValue::U16(x) => out.extend_from_slice(&x.to_le_bytes()),
        MetaValue::I16(x) => out.extend_from_slice(&x.to_le_bytes()),
        MetaValue::U32(x) => out.extend_from_slice(&x.to_le_bytes()),
        MetaValue::I32(x) => out.extend_from_slice(&x.to_le_bytes()),
        MetaValue::F32(x) => out.extend_from_slice(&x.to_le_bytes()),
        MetaValue::Bool(x) => out.push(*x as u8),
        MetaValue::String(s) => encode_str(s, out),
        MetaValue::Array(a) => encode_array(a, out),
        MetaValue::U64(x) => out.extend_from_slice(&x.to_le_bytes()),
        MetaValue::I64(x) => out.extend_from_slice(&x.to_le_bytes()),
        MetaValue::F64(x) => out.extend_from_slice(&x.to_le_bytes()),
    }
}

/// An array value: element type id, u64 count, the elements.
pub fn encode_array(a: &MetaArray, out: &mut Vec<u8>) {
    out.extend_from_slice(&a.elem_type().id().to_le_bytes());
    out.extend_from_slice(&(a.len() as u64).to_le_bytes());
    macro_rules! le {
        ($v:expr) => {
            for x in $v {
                out.extend_from_slice(&x.to_le_bytes());
            }
        };
    }
    match a {
        MetaArray::U8(v) => out.extend_from_slice(v),
        MetaArray::I8(v) => le!(v),
        MetaArray::U16(v) => le!(v),
        MetaArray::I16(v) => le!(v),
        MetaArray::U32(v) => le!(v),
        MetaArray::I32(v) => le!(v),
        MetaArray::F32(v) => le!(v),
        MetaArray::Bool(v) => out.extend(v.iter().map(|&b| b as u8)),
        MetaArray::String(v) => v.iter().for_each(|s| encode_str(s, out)),
        MetaArray::Array(v) => v.iter().for_each(|x| encode_array(x, out)),
        MetaArray::U64(v) => le!(v),
        MetaArray::I64(v) => le!(v),
        MetaArray::F64(v) => le!(v),
    }
}
