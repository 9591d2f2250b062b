//! Errors. Every message names the file, then the metadata key (or JSON field) concerned,
//! then the problem, so that a user can tell which of their files is at fault.

pub type Result<T, E = TextError> = std::result::Result<T, E>;

#[derive(Debug, thiserror::Error)]
pub enum TextError {
    /// A GGUF metadata read failed (missing key, wrong type); the message names file and key.
    #[error(transparent)]
    Gguf(#[from] jetc_gguf::GgufError),

    #[error("{file}: {source}")]
    Io {
        file: String,
        #[source]
        source: std::io::Error,
    },

    #[error("{file}: invalid JSON: {source}")]
    Json {
        file: String,
        #[source]
        source: serde_json::Error,
    },

    /// A metadata value (GGUF key or JSON field) is present but unusable.
    #[error("{file}: {key}: {msg}")]
    Metadata {
        file: String,
        key: String,
        msg: String,
    },

    /// `tokenizer.ggml.model` names a tokenizer jetc cannot build.
    #[error(
        "{file}: tokenizer.ggml.model: unsupported tokenizer model \"{model}\" \
         (jetc-text builds \"gpt2\" byte-level BPE and \"llama\" SentencePiece-style BPE)"
    )]
    UnsupportedModel { file: String, model: String },

    /// The `tokenizers` library refused the tokenizer or failed on an input.
    #[error("{file}: tokenizer: {msg}")]
    Tokenizer { file: String, msg: String },

    /// A token id outside the vocabulary was given to `decode`.
    #[error("{file}: token id {id} is outside the vocabulary ({vocab_size} tokens)")]
    BadTokenId {
        file: String,
        id: u32,
        vocab_size: usize,
    },

    /// The chat template does not compile or failed to render (incl. `raise_exception`).
    #[error("{file}: {key}: {msg}")]
    Template {
        file: String,
        key: String,
        msg: String,
    },
}

impl TextError {
    pub(crate) fn meta(file: &str, key: &str, msg: impl Into<String>) -> TextError {
        TextError::Metadata {
            file: file.into(),
            key: key.into(),
            msg: msg.into(),
        }
    }

    pub(crate) fn io(file: &std::path::Path, source: std::io::Error) -> TextError {
        TextError::Io {
            file: file.display().to_string(),
            source,
        }
    }
}
