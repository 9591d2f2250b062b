//! jetc's GGUF reader.
//!
//! [`GgufFile::open`] memory-maps a GGUF file (versions 2 and 3, little-endian) and parses its
//! header: the metadata key/values ([`MetaValue`], with typed getters such as
//! [`GgufFile::get_u32`] and [`GgufFile::get_str_array`]) and the tensor infos
//! ([`TensorInfo`]: name, dims in GGUF order, [`GgmlType`], offset, byte length). Tensors are
//! de-quantized to f32 with [`GgufFile::dequantize`] (bit-identical to gguf-py's
//! `gguf.quants.dequantize`) or handed to the IR with [`GgufFile::to_ir_tensor`] (F32 tensors
//! borrow the map; the IR shape is row-major, the GGUF dims reversed).
//!
//! Every count, length and offset in the header is checked against the bytes left in the
//! file before anything is allocated for it, so a corrupt or hostile file gives an error
//! ([`GgufError`], naming the file, the key or tensor, and the problem), never a panic or a
//! huge allocation.
//!
//! Building the IR graph from a GGUF model (tensor-name mapping, raising, tokenizer) is not
//! done here.

// `x % n != 0` rather than `is_multiple_of` (Rust 1.87): the workspace targets Rust 1.85.
#![allow(clippy::manual_is_multiple_of)]

pub mod error;
pub mod file;
pub mod meta;
pub mod quant;
pub mod types;
pub mod write;

pub use error::{GgufError, Result};
pub use file::{GgufFile, TensorInfo, DEFAULT_ALIGNMENT};
pub use meta::{MetaArray, MetaType, MetaValue};
pub use types::{GgmlType, DEQUANTIZABLE, QK_K};
pub use write::GgufWriter;
