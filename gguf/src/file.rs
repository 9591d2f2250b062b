//! The GGUF container: header parsing, metadata getters, tensor access.
use std::collections::{BTreeMap, HashSet};
use std::path::Path;
use std::sync::Arc;

use jetc_ir::{DType, Tensor};
use memmap2::Mmap;

use crate::error::{GgufError, Result};
use crate::meta::{MetaArray, MetaType, MetaValue};
use crate::quant;
use crate::types::GgmlType;

/// The default `general.alignment`.
pub const DEFAULT_ALIGNMENT: u64 = 32;
/// ggml's `GGML_MAX_DIMS`: a GGUF tensor has at most this many dimensions.
pub const MAX_DIMS: u32 = 4;
/// How deeply metadata arrays may nest (arrays of arrays of ...).
pub const MAX_ARRAY_DEPTH: u32 = 16;

const MAGIC: &[u8; 4] = b"GGUF";
/// Fewest bytes of one metadata entry: key length (8), value type (4), a one-byte value.
const MIN_KV_BYTES: u64 = 8 + 4 + 1;
/// Fewest bytes of one tensor info: name length (8), n_dims (4), type (4), offset (8).
const MIN_TENSOR_INFO_BYTES: u64 = 8 + 4 + 4 + 8;

/// One tensor's entry in the header.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TensorInfo {
    pub name: String,
    /// Dimensions in GGUF order: `dims[0]` (ggml's `ne[0]`) is the innermost, fastest-varying
    /// one, the row length. [`TensorInfo::shape`] gives the row-major (IR) order.
    pub dims: Vec<u64>,
    pub ggml_type: GgmlType,
    /// Byte offset of the data, relative to the start of the data section
    /// ([`GgufFile::data_offset`]).
    pub offset: u64,
    /// Bytes of data (whole blocks).
    pub byte_len: u64,
}

impl TensorInfo {
    /// The number of elements (the product of the dims; `u64::MAX` if that overflows, which
    /// [`GgufFile::open`] never lets through).
    pub fn n_elements(&self) -> u64 {
        self.dims
            .iter()
            .try_fold(1u64, |a, &d| a.checked_mul(d))
            .unwrap_or(u64::MAX)
    }

    /// The row-major shape used by jetc's IR: the GGUF dims reversed.
    pub fn shape(&self) -> Vec<usize> {
        self.dims
            .iter()
            .rev()
            .map(|&d| usize::try_from(d).unwrap_or(usize::MAX))
            .collect()
    }
}

/// An opened GGUF file: the parsed header and the memory-mapped bytes.
pub struct GgufFile {
    /// The file's path as given (used in error messages).
    pub path: String,
    /// GGUF version (2 or 3).
    pub version: u32,
    pub metadata: BTreeMap<String, MetaValue>,
    /// Tensors in file order.
    pub tensors: Vec<TensorInfo>,
    /// `general.alignment`, or 32.
    pub alignment: u64,
    /// Absolute offset of the data section.
    pub data_offset: u64,
    map: Arc<Mmap>,
}

impl std::fmt::Debug for GgufFile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GgufFile")
            .field("path", &self.path)
            .field("version", &self.version)
            .field("metadata_keys", &self.metadata.len())
            .field("tensors", &self.tensors.len())
            .field("alignment", &self.alignment)
            .field("data_offset", &self.data_offset)
            .finish()
    }
}

impl GgufFile {
    /// Memory-maps `path` and parses its header. Every count, length and offset is checked
    /// against the bytes actually in the file before anything is allocated for it.
    pub fn open(path: impl AsRef<Path>) -> Result<GgufFile> {
        let path = path.as_ref();
        let name = path.display().to_string();
        let io = |source| GgufError::Io {
            file: name.clone(),
            source,
        };
        let file = std::fs::File::open(path).map_err(io)?;
        // SAFETY: the map is read-only; like every mmap-based model loader, this assumes the
        // file is not truncated or rewritten while it is in use.
        let map = unsafe { Mmap::map(&file) }.map_err(io)?;
        Self::from_map(name, Arc::new(map))
    }

    /// Parses a GGUF image held in memory (copied into an anonymous map, so that tensors can
    /// be handed out as for a file); `name` stands for the file in error messages.
    pub fn from_bytes(name: impl Into<String>, bytes: &[u8]) -> Result<GgufFile> {
        let name = name.into();
        // Parse first: a malformed image is rejected before the copy (and an image that
        // parses is never empty, which an anonymous map could not be).
        let header = parse_header(&name, bytes)?;
        let io = |source| GgufError::Io {
            file: name.clone(),
            source,
        };
        let mut map = memmap2::MmapMut::map_anon(bytes.len()).map_err(io)?;
        map.copy_from_slice(bytes);
        let map = map.make_read_only().map_err(io)?;
        Ok(header.into_file(name, Arc::new(map)))
    }

    fn from_map(name: String, map: Arc<Mmap>) -> Result<GgufFile> {
        let header = parse_header(&name, &map)?;
        Ok(header.into_file(name, map))
    }

    /// The whole file.
    pub fn bytes(&self) -> &[u8] {
        &self.map
    }

    // ------------------------------------------------------------------ metadata

    /// The value of `key`, if present.
    pub fn get(&self, key: &str) -> Option<&MetaValue> {
        self.metadata.get(key)
    }

    /// The value of `key`; an error naming the key if it is missing.
    pub fn require(&self, key: &str) -> Result<&MetaValue> {
        self.metadata.get(key).ok_or_else(|| GgufError::MissingKey {
            file: self.path.clone(),
            key: key.into(),
        })
    }

    fn key_type(&self, key: &str, expected: &str, found: &MetaValue) -> GgufError {
        GgufError::KeyType {
            file: self.path.clone(),
            key: key.into(),
            expected: expected.into(),
            found: found.describe(),
        }
    }

    fn integer<T: TryFrom<i128>>(&self, key: &str, expected: &str) -> Result<T> {
        let v = self.require(key)?;
        v.as_integer()
            .and_then(|i| T::try_from(i).ok())
            .ok_or_else(|| self.key_type(key, expected, v))
    }

    /// An integer value of any integer type (GGUF writers differ in the width they pick)
    /// that fits in u32.
    pub fn get_u32(&self, key: &str) -> Result<u32> {
        self.integer(key, "an integer that fits in u32")
    }

    /// An integer value of any integer type that fits in u64.
    pub fn get_u64(&self, key: &str) -> Result<u64> {
        self.integer(key, "an integer that fits in u64")
    }

    /// An integer value of any integer type that fits in i64.
    pub fn get_i64(&self, key: &str) -> Result<i64> {
        self.integer(key, "an integer that fits in i64")
    }

    /// A FLOAT32 value (a FLOAT64 one is rounded to f32).
    pub fn get_f32(&self, key: &str) -> Result<f32> {
        match self.require(key)? {
            MetaValue::F32(v) => Ok(*v),
            MetaValue::F64(v) => Ok(*v as f32),
            v => Err(self.key_type(key, "FLOAT32", v)),
        }
    }

    /// A FLOAT64 or FLOAT32 value.
    pub fn get_f64(&self, key: &str) -> Result<f64> {
        match self.require(key)? {
            MetaValue::F32(v) => Ok(*v as f64),
            MetaValue::F64(v) => Ok(*v),
            v => Err(self.key_type(key, "FLOAT64", v)),
        }
    }

    pub fn get_bool(&self, key: &str) -> Result<bool> {
        match self.require(key)? {
            MetaValue::Bool(v) => Ok(*v),
            v => Err(self.key_type(key, "BOOL", v)),
        }
    }

    pub fn get_str(&self, key: &str) -> Result<&str> {
        match self.require(key)? {
            MetaValue::String(v) => Ok(v),
            v => Err(self.key_type(key, "STRING", v)),
        }
    }

    pub fn get_array(&self, key: &str) -> Result<&MetaArray> {
        match self.require(key)? {
            MetaValue::Array(a) => Ok(a),
            v => Err(self.key_type(key, "ARRAY", v)),
        }
    }

    /// An ARRAY of STRING (e.g. `tokenizer.ggml.tokens`, `tokenizer.ggml.merges`).
    pub fn get_str_array(&self, key: &str) -> Result<&[String]> {
        match self.require(key)? {
            MetaValue::Array(MetaArray::String(v)) => Ok(v),
            v => Err(self.key_type(key, "ARRAY of STRING", v)),
        }
    }

    /// An ARRAY of FLOAT32 (e.g. `tokenizer.ggml.scores`).
    pub fn get_f32_array(&self, key: &str) -> Result<&[f32]> {
        match self.require(key)? {
            MetaValue::Array(MetaArray::F32(v)) => Ok(v),
            v => Err(self.key_type(key, "ARRAY of FLOAT32", v)),
        }
    }

    /// An ARRAY of INT32 (e.g. `tokenizer.ggml.token_type`).
    pub fn get_i32_array(&self, key: &str) -> Result<&[i32]> {
        match self.require(key)? {
            MetaValue::Array(MetaArray::I32(v)) => Ok(v),
            v => Err(self.key_type(key, "ARRAY of INT32", v)),
        }
    }

    /// `general.architecture` (`llama`, `qwen2`, ...).
    pub fn architecture(&self) -> Result<&str> {
        self.get_str("general.architecture")
    }

    // ------------------------------------------------------------------ tensors

    /// The tensor named `name`, if any.
    pub fn tensor(&self, name: &str) -> Option<&TensorInfo> {
        self.tensors.iter().find(|t| t.name == name)
    }

    fn tensor_err(&self, info: &TensorInfo, msg: String) -> GgufError {
        GgufError::Tensor {
            file: self.path.clone(),
            tensor: info.name.clone(),
            msg,
        }
    }

    /// The raw bytes of a tensor (still quantized). The info is checked again against the
    /// file, so one built by hand or taken from another file gives an error, not a panic.
    pub fn tensor_data(&self, info: &TensorInfo) -> Result<&[u8]> {
        let (start, len) = check_tensor(
            &self.path,
            info,
            self.data_offset,
            self.alignment,
            self.map.len() as u64,
        )?;
        Ok(&self.map[start..start + len])
    }

    /// De-quantizes a tensor to f32, in row-major order (element `i` of the result is
    /// element `i` of the ggml tensor).
    pub fn dequantize(&self, info: &TensorInfo) -> Result<Vec<f32>> {
        let data = self.tensor_data(info)?;
        self.check_dequantizable(info)?;
        let n = usize::try_from(info.n_elements())
            .map_err(|_| self.tensor_err(info, "too many elements".into()))?;
        let mut out = vec![0f32; n];
        quant::dequantize_into(info.ggml_type, data, &mut out)
            .map_err(|m| self.tensor_err(info, m))?;
        Ok(out)
    }

    fn check_dequantizable(&self, info: &TensorInfo) -> Result<()> {
        if info.ggml_type.can_dequantize() {
            Ok(())
        } else {
            Err(GgufError::UnsupportedType {
                file: self.path.clone(),
                tensor: info.name.clone(),
                ty: info.ggml_type,
            })
        }
    }

    /// Rows `rows` of a 2-D tensor kept in its stored precision, borrowing the mapped file
    /// (nothing is de-quantized or copied): the matrix itself, `[rows, cols]`, or with
    /// `transposed` its transpose, `[cols, rows]`, the way `x @ W` reads a linear layer's
    /// weight. `None` for an f32 tensor, one that is not 2-D, and a type without kernels.
    pub fn to_stored_tensor(&self, info: &TensorInfo, rows: std::ops::Range<usize>, transposed: bool) -> Result<Option<Tensor>> {
        let shape = info.shape();
        let (Some(format), &[n, cols]) = (quant::block_format(info.ggml_type), shape.as_slice()) else {
            return Ok(None);
        };
        if rows.start > rows.end || rows.end > n {
            return Err(self.tensor_err(info, format!("rows {}..{} asked of a matrix of {n} rows", rows.start, rows.end)));
        }
        let row_bytes = format
            .row_bytes(cols)
            .ok_or_else(|| self.tensor_err(info, format!("a row of {cols} is not a whole number of {format} blocks")))?;
        let (start, len) = check_tensor(&self.path, info, self.data_offset, self.alignment, self.map.len() as u64)?;
        if n.checked_mul(row_bytes) != Some(len) {
            return Err(self.tensor_err(info, format!("{len} bytes for {n} rows of {row_bytes}")));
        }
        let t = Tensor::from_stored_mapped(
            format,
            rows.len(),
            cols,
            transposed,
            self.map.clone(),
            start + rows.start * row_bytes,
            rows.len() * row_bytes,
        )
        .map_err(|source| GgufError::Ir { file: self.path.clone(), tensor: info.name.clone(), source })?;
        Ok(Some(t))
    }

    /// The tensor as a jetc IR constant of dtype f32 and row-major shape (the GGUF dims
    /// reversed). F32 tensors borrow the mapped file (no copy); the others are de-quantized
    /// into owned memory.
    pub fn to_ir_tensor(&self, info: &TensorInfo) -> Result<Tensor> {
        let ir = |source| GgufError::Ir {
            file: self.path.clone(),
            tensor: info.name.clone(),
            source,
        };
        let (start, len) = check_tensor(
            &self.path,
            info,
            self.data_offset,
            self.alignment,
            self.map.len() as u64,
        )?;
        if info.ggml_type == GgmlType::F32 {
            return Tensor::from_mapped(DType::F32, info.shape(), self.map.clone(), start, len)
                .map_err(ir);
        }
        self.check_dequantizable(info)?;
        let n = usize::try_from(info.n_elements())
            .map_err(|_| self.tensor_err(info, "too many elements".into()))?;
        let nbytes = n
            .checked_mul(4)
            .ok_or_else(|| self.tensor_err(info, "too many elements".into()))?;
        let data = &self.map[start..start + len];
        // De-quantize straight into the byte buffer the tensor will own when the allocator
        // hands back 4-byte-aligned memory (it always does in practice); copy otherwise.
        let mut bytes = vec![0u8; nbytes];
        match bytemuck::try_cast_slice_mut::<u8, f32>(&mut bytes) {
            Ok(out) => quant::dequantize_into(info.ggml_type, data, out)
                .map_err(|m| self.tensor_err(info, m))?,
            Err(_) => {
                let mut out = vec![0f32; n];
                quant::dequantize_into(info.ggml_type, data, &mut out)
                    .map_err(|m| self.tensor_err(info, m))?;
                bytes.copy_from_slice(bytemuck::cast_slice(&out));
            }
        }
        Tensor::from_bytes(DType::F32, info.shape(), bytes).map_err(ir)
    }
}

/// Checks a tensor info against the layout rules and the file; returns the absolute start
/// and the length of its data.
fn check_tensor(
    file: &str,
    info: &TensorInfo,
    data_offset: u64,
    alignment: u64,
    file_len: u64,
) -> Result<(usize, usize)> {
    let err = |msg: String| GgufError::Tensor {
        file: file.into(),
        tensor: info.name.clone(),
        msg,
    };
    let byte_len = tensor_byte_len(info.ggml_type, &info.dims).map_err(err)?;
    if byte_len != info.byte_len {
        return Err(err(format!(
            "{} dims {:?} take {byte_len} bytes, not the {} the info claims",
            info.ggml_type, info.dims, info.byte_len
        )));
    }
    if info.offset % alignment != 0 {
        return Err(err(format!(
            "data offset {} is not a multiple of the alignment {alignment}",
            info.offset
        )));
    }
    let start = data_offset.checked_add(info.offset);
    let end = start.and_then(|s| s.checked_add(byte_len));
    match (start, end) {
        (_, _) if byte_len == 0 => Ok((0, 0)),
        (Some(s), Some(e)) if e <= file_len => Ok((s as usize, byte_len as usize)),
        _ => Err(err(format!(
            "data of {byte_len} bytes at offset {} of the data section (which starts at {data_offset}) \
             lies outside the file ({file_len} bytes)",
            info.offset
        ))),
    }
}

/// The bytes a tensor of this type and these dims takes, or why it cannot exist.
fn tensor_byte_len(ty: GgmlType, dims: &[u64]) -> std::result::Result<u64, String> {
    if dims.len() > MAX_DIMS as usize {
        return Err(format!(
            "{} dimensions, GGUF allows at most {MAX_DIMS}",
            dims.len()
        ));
    }
    let n = dims
        .iter()
        .try_fold(1u64, |a, &d| a.checked_mul(d))
        .ok_or_else(|| format!("dims {dims:?} have more elements than fit in 64 bits"))?;
    let (bs, ts) = (ty.block_size() as u64, ty.type_size() as u64);
    let row = dims.first().copied().unwrap_or(1);
    if row % bs != 0 {
        return Err(format!(
            "row length {row} (dims[0]) is not a multiple of the {ty} block size {bs}"
        ));
    }
    (n / bs)
        .checked_mul(ts)
        .ok_or_else(|| format!("{ty} dims {dims:?} take more bytes than fit in 64 bits"))
}

// ---------------------------------------------------------------------- header parsing

struct Header {
    version: u32,
    metadata: BTreeMap<String, MetaValue>,
    tensors: Vec<TensorInfo>,
    alignment: u64,
    data_offset: u64,
}

impl Header {
    fn into_file(self, path: String, map: Arc<Mmap>) -> GgufFile {
        GgufFile {
            path,
            version: self.version,
            metadata: self.metadata,
            tensors: self.tensors,
            alignment: self.alignment,
            data_offset: self.data_offset,
            map,
        }
    }
}

/// A cursor over the file's bytes; every read is bounds-checked.
struct Cursor<'a> {
    file: &'a str,
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Cursor<'a> {
    fn remaining(&self) -> u64 {
        (self.buf.len() - self.pos) as u64
    }

    fn malformed(&self, what: String, msg: String) -> GgufError {
        GgufError::Malformed {
            file: self.file.into(),
            what,
            msg,
        }
    }

    fn take(&mut self, n: u64, what: &dyn Fn() -> String) -> Result<&'a [u8]> {
        if n > self.remaining() {
            return Err(GgufError::Truncated {
                file: self.file.into(),
                what: what(),
                offset: self.pos as u64,
                need: n,
                remaining: self.remaining(),
            });
        }
        let s = &self.buf[self.pos..self.pos + n as usize];
        self.pos += n as usize;
        Ok(s)
    }

    fn array<const N: usize>(&mut self, what: &dyn Fn() -> String) -> Result<[u8; N]> {
        let s = self.take(N as u64, what)?;
        let mut a = [0u8; N];
        a.copy_from_slice(s);
        Ok(a)
    }

    fn u32(&mut self, what: &dyn Fn() -> String) -> Result<u32> {
        Ok(u32::from_le_bytes(self.array(what)?))
    }

    fn u64(&mut self, what: &dyn Fn() -> String) -> Result<u64> {
        Ok(u64::from_le_bytes(self.array(what)?))
    }

    /// Checks that `count` items of at least `min_size` bytes each can fit in the rest of
    /// the file, before anything is allocated for them.
    fn check_count(
        &self,
        count: u64,
        min_size: u64,
        what: &dyn Fn() -> String,
        items: &str,
    ) -> Result<()> {
        let fits = count
            .checked_mul(min_size)
            .is_some_and(|n| n <= self.remaining());
        if fits {
            Ok(())
        } else {
            Err(self.malformed(
                what(),
                format!(
                    "claims {count} {items}, at least {min_size} bytes each, but only {} bytes remain in the file",
                    self.remaining()
                ),
            ))
        }
    }

    fn string(&mut self, what: &dyn Fn() -> String) -> Result<String> {
        let len = self.u64(&|| format!("length of {}", what()))?;
        let start = self.pos as u64;
        let bytes = self.take(len, what)?;
        match std::str::from_utf8(bytes) {
            Ok(s) => Ok(s.to_owned()),
            Err(e) => Err(self.malformed(
                what(),
                format!("string at offset {start} is not valid UTF-8 ({e})"),
            )),
        }
    }

    fn value(&mut self, ty: MetaType, what: &dyn Fn() -> String, depth: u32) -> Result<MetaValue> {
        Ok(match ty {
            MetaType::U8 => MetaValue::U8(u8::from_le_bytes(self.array(what)?)),
            MetaType::I8 => MetaValue::I8(i8::from_le_bytes(self.array(what)?)),
            MetaType::U16 => MetaValue::U16(u16::from_le_bytes(self.array(what)?)),
            MetaType::I16 => MetaValue::I16(i16::from_le_bytes(self.array(what)?)),
            MetaType::U32 => MetaValue::U32(u32::from_le_bytes(self.array(what)?)),
            MetaType::I32 => MetaValue::I32(i32::from_le_bytes(self.array(what)?)),
            MetaType::F32 => MetaValue::F32(f32::from_le_bytes(self.array(what)?)),
            MetaType::U64 => MetaValue::U64(u64::from_le_bytes(self.array(what)?)),
            MetaType::I64 => MetaValue::I64(i64::from_le_bytes(self.array(what)?)),
            MetaType::F64 => MetaValue::F64(f64::from_le_bytes(self.array(what)?)),
            MetaType::Bool => MetaValue::Bool(self.bool(what)?),
            MetaType::String => MetaValue::String(self.string(what)?),
            MetaType::Array => MetaValue::Array(self.meta_array(what, depth)?),
        })
    }

    fn bool(&mut self, what: &dyn Fn() -> String) -> Result<bool> {
        let offset = self.pos;
        match self.take(1, what)?[0] {
            0 => Ok(false),
            1 => Ok(true),
            b => Err(self.malformed(
                what(),
                format!("BOOL byte at offset {offset} is {b}, not 0 or 1"),
            )),
        }
    }

    fn meta_array(&mut self, what: &dyn Fn() -> String, depth: u32) -> Result<MetaArray> {
        if depth >= MAX_ARRAY_DEPTH {
            return Err(self.malformed(
                what(),
                format!("arrays nested more than {MAX_ARRAY_DEPTH} deep"),
            ));
        }
        let type_id = self.u32(&|| format!("element type of {}", what()))?;
        let ty = MetaType::from_id(type_id).ok_or_else(|| {
            self.malformed(what(), format!("unknown array element type id {type_id}"))
        })?;
        let count = self.u64(&|| format!("element count of {}", what()))?;
        self.check_count(
            count,
            ty.min_encoded_size(),
            what,
            &format!("{ty} array elements"),
        )?;
        // From here `count` is bounded by the bytes left in the file.
        let n = count as usize;
        macro_rules! numeric {
            ($variant:ident, $t:ty) => {{
                let size = std::mem::size_of::<$t>();
                let bytes = self.take(count * size as u64, what)?;
                MetaArray::$variant(
                    bytes
                        .chunks_exact(size)
                        .map(|c| <$t>::from_le_bytes(c.try_into().unwrap_or_default()))
                        .collect(),
                )
            }};
        }
        Ok(match ty {
            MetaType::U8 => MetaArray::U8(self.take(count, what)?.to_vec()),
            MetaType::I8 => numeric!(I8, i8),
            MetaType::U16 => numeric!(U16, u16),
            MetaType::I16 => numeric!(I16, i16),
            MetaType::U32 => numeric!(U32, u32),
            MetaType::I32 => numeric!(I32, i32),
            MetaType::F32 => numeric!(F32, f32),
            MetaType::U64 => numeric!(U64, u64),
            MetaType::I64 => numeric!(I64, i64),
            MetaType::F64 => numeric!(F64, f64),
            MetaType::Bool => {
                let mut v = Vec::with_capacity(n);
                for i in 0..n {
                    v.push(self.bool(&|| format!("element {i} of {}", what()))?);
                }
                MetaArray::Bool(v)
            }
            MetaType::String => {
                let mut v = Vec::with_capacity(n);
                for i in 0..n {
                    v.push(self.string(&|| format!("element {i} of {}", what()))?);
                }
                MetaArray::String(v)
            }
            MetaType::Array => {
                let mut v = Vec::with_capacity(n);
                for i in 0..n {
                    v.push(self.meta_array(&|| format!("element {i} of {}", what()), depth + 1)?);
                }
                MetaArray::Array(v)
            }
        })
    }
}

fn parse_header(file: &str, buf: &[u8]) -> Result<Header> {
    let mut c = Cursor { file, buf, pos: 0 };
    let magic: [u8; 4] = c.array(&|| "the magic \"GGUF\"".into())?;
    if &magic != MAGIC {
        return Err(GgufError::BadMagic {
            file: file.into(),
            found: magic.escape_ascii().to_string(),
        });
    }
    let version = c.u32(&|| "the version".into())?;
    if version != 2 && version != 3 {
        let note = if (1..=3).contains(&version.swap_bytes()) {
            " (this looks like a big-endian file, which jetc-gguf does not read)"
        } else if version == 1 {
            " (version 1 had 32-bit counts and lengths; re-convert the model with a current llama.cpp)"
        } else {
            ""
        };
        return Err(GgufError::UnsupportedVersion {
            file: file.into(),
            version,
            note,
        });
    }
    let tensor_count = c.u64(&|| "the tensor count".into())?;
    let kv_count = c.u64(&|| "the metadata count".into())?;

    c.check_count(
        kv_count,
        MIN_KV_BYTES,
        &|| "metadata count".into(),
        "metadata entries",
    )?;
    let mut metadata = BTreeMap::new();
    for i in 0..kv_count {
        let key = c.string(&|| format!("key of metadata entry {i}"))?;
        let what = || format!("metadata key `{key}`");
        let type_id = c.u32(&|| format!("value type of {}", what()))?;
        let ty = MetaType::from_id(type_id)
            .ok_or_else(|| c.malformed(what(), format!("unknown value type id {type_id}")))?;
        let value = c.value(ty, &what, 0)?;
        if metadata.contains_key(&key) {
            return Err(c.malformed(what(), "appears twice".into()));
        }
        metadata.insert(key, value);
    }

    let alignment = match metadata.get("general.alignment") {
        None => DEFAULT_ALIGNMENT,
        Some(MetaValue::U32(a)) if a.is_power_of_two() => *a as u64,
        Some(v) => {
            return Err(c.malformed(
                "metadata key `general.alignment`".into(),
                format!("must be a UINT32 power of two, found {}", v.describe()),
            ))
        }
    };

    c.check_count(
        tensor_count,
        MIN_TENSOR_INFO_BYTES,
        &|| "tensor count".into(),
        "tensor infos",
    )?;
    let mut tensors = Vec::with_capacity(tensor_count as usize);
    let mut names = HashSet::new();
    for i in 0..tensor_count {
        let name = c.string(&|| format!("name of tensor {i}"))?;
        let tensor_err = |msg: String| GgufError::Tensor {
            file: file.into(),
            tensor: name.clone(),
            msg,
        };
        let n_dims = c.u32(&|| format!("dimension count of tensor `{name}`"))?;
        if n_dims > MAX_DIMS {
            return Err(tensor_err(format!(
                "{n_dims} dimensions, GGUF allows at most {MAX_DIMS}"
            )));
        }
        let mut dims = Vec::with_capacity(n_dims as usize);
        for d in 0..n_dims {
            dims.push(c.u64(&|| format!("dimension {d} of tensor `{name}`"))?);
        }
        let type_id = c.u32(&|| format!("type of tensor `{name}`"))?;
        let ggml_type = GgmlType::from_id(type_id).ok_or_else(|| GgufError::UnknownType {
            file: file.into(),
            tensor: name.clone(),
            type_id,
        })?;
        let offset = c.u64(&|| format!("data offset of tensor `{name}`"))?;
        let byte_len = tensor_byte_len(ggml_type, &dims).map_err(tensor_err)?;
        if !names.insert(name.clone()) {
            return Err(tensor_err("appears twice in the header".into()));
        }
        tensors.push(TensorInfo {
            name,
            dims,
            ggml_type,
            offset,
            byte_len,
        });
    }

    let header_end = c.pos as u64;
    let data_offset = header_end.div_ceil(alignment) * alignment;
    for t in &tensors {
        check_tensor(file, t, data_offset, alignment, buf.len() as u64)?;
    }
    Ok(Header {
        version,
        metadata,
        tensors,
        alignment,
        data_offset,
    })
}
