//! Errors. Every message names the file, then the key or tensor concerned, then the problem.
use crate::types::GgmlType;

pub type Result<T, E = GgufError> = std::result::Result<T, E>;

#[derive(Debug, thiserror::Error)]
pub enum GgufError {
    #[error("{file}: {source}")]
    Io {
        file: String,
        #[source]
        source: std::io::Error,
    },

    #[error("{file}: not a GGUF file (starts with \"{found}\", expected \"GGUF\")")]
    BadMagic { file: String, found: String },

    #[error("{file}: unsupported GGUF version {version} (jetc-gguf reads versions 2 and 3){note}")]
    UnsupportedVersion {
        file: String,
        version: u32,
        note: &'static str,
    },

    /// The header runs past the end of the file.
    #[error("{file}: truncated: {what} needs {need} bytes at offset {offset}, but only {remaining} remain")]
    Truncated {
        file: String,
        what: String,
        offset: u64,
        need: u64,
        remaining: u64,
    },

    /// The header is readable but wrong (absurd count, bad type id, invalid UTF-8, ...).
    #[error("{file}: {what}: {msg}")]
    Malformed {
        file: String,
        what: String,
        msg: String,
    },

    #[error("{file}: tensor `{tensor}`: unknown ggml type id {type_id}")]
    UnknownType {
        file: String,
        tensor: String,
        type_id: u32,
    },

    #[error(
        "{file}: tensor `{tensor}`: ggml type {ty} (id {}) cannot be de-quantized by jetc-gguf \
         (supported: F32 F16 BF16 Q4_0 Q4_1 Q5_0 Q5_1 Q8_0 Q2_K Q3_K Q4_K Q5_K Q6_K)",
        .ty.id()
    )]
    UnsupportedType {
        file: String,
        tensor: String,
        ty: GgmlType,
    },

    /// A tensor's shape, size or place in the file is wrong.
    #[error("{file}: tensor `{tensor}`: {msg}")]
    Tensor {
        file: String,
        tensor: String,
        msg: String,
    },

    #[error("{file}: metadata key `{key}` is missing")]
    MissingKey { file: String, key: String },

    #[error("{file}: metadata key `{key}`: expected {expected}, found {found}")]
    KeyType {
        file: String,
        key: String,
        expected: String,
        found: String,
    },

    #[error("{file}: tensor `{tensor}`: {source}")]
    Ir {
        file: String,
        tensor: String,
        #[source]
        source: jetc_ir::IrError,
    },
}
