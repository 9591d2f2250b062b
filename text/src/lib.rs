//! Text around a model: the tokenizer and the chat template.
//!
//! * [`Tokenizer`] turns text into token ids and back. It is built from a GGUF file's
//!   `tokenizer.ggml.*` metadata ([`Tokenizer::from_gguf`]: byte-level BPE with the
//!   pre-tokenizer named by `tokenizer.ggml.pre`, or SentencePiece-style BPE) or loaded from
//!   a Hugging Face `tokenizer.json` ([`Tokenizer::from_file`]); the BPE is Hugging Face's
//!   `tokenizers` crate, so ids match transformers'. It knows BOS and every id that ends
//!   generation ([`Tokenizer::eos_ids`]); [`StreamDecoder`] decodes generated ids as they
//!   come.
//! * [`ChatTemplate`] renders a conversation ([`Message`]s) with the model's Jinja chat
//!   template (GGUF `tokenizer.chat_template` or `tokenizer_config.json`), as transformers'
//!   `apply_chat_template` does.
//!
//! Errors ([`TextError`]) name the file and the metadata key concerned.

pub mod chat;
pub mod error;
pub mod gguf_vocab;
pub mod pretok;
pub mod tokenizer;

pub use chat::{ChatTemplate, Message};
pub use error::{Result, TextError};
pub use tokenizer::{StreamDecoder, Tokenizer};

/// A GGUF file's tokenizer and (if it has one) chat template.
pub fn from_gguf(file: &jetc_gguf::GgufFile) -> Result<(Tokenizer, Option<ChatTemplate>)> {
    let tok = Tokenizer::from_gguf(file)?;
    let template = ChatTemplate::from_gguf(file, &tok)?;
    Ok((tok, template))
}
