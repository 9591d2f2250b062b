//! [`Tokenizer`]: text to token ids and back, for a GGUF model (from its metadata) or a
//! Hugging Face `tokenizer.json`, with the special ids generation needs (BOS, every
//! end-of-generation id). The BPE itself is Hugging Face's `tokenizers` crate, so ids match
//! transformers; this type adds the metadata reading, id checks and error context.
use std::path::{Path, PathBuf};

use jetc_gguf::GgufFile;
use serde_json::Value;

use crate::error::{Result, TextError};
use crate::gguf_vocab;

/// A tokenizer with its special ids.
#[derive(Clone)]
pub struct Tokenizer {
    inner: tokenizers::Tokenizer,
    /// The file it was built from (for error messages).
    source: String,
    n_vocab: usize,
    bos: Option<u32>,
    eos: Option<u32>,
    unk: Option<u32>,
    pad: Option<u32>,
    eog: Vec<u32>,
    /// BOS/EOS added by [`Tokenizer::encode`] itself (GGUF); a `tokenizer.json` adds its own
    /// through its post-processor.
    add_bos: bool,
    add_eos: bool,
    warnings: Vec<String>,
}

/// A summary: the derived form would print the whole vocabulary.
impl std::fmt::Debug for Tokenizer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tokenizer")
            .field("source", &self.source)
            .field("vocab_size", &self.n_vocab)
            .field("bos", &self.bos)
            .field("eos_ids", &self.eog)
            .field("add_bos", &self.add_bos)
            .finish_non_exhaustive()
    }
}

impl Tokenizer {
    /// Builds the tokenizer described by a GGUF file's `tokenizer.ggml.*` metadata
    /// (`tokenizer.ggml.model` "gpt2" or "llama"; see [`crate::gguf_vocab`]). Warnings (such as
    /// an unknown `tokenizer.ggml.pre`, which falls back to the GPT-2 regex) are printed to
    /// stderr once and kept in [`Tokenizer::warnings`].
    pub fn from_gguf(file: &GgufFile) -> Result<Tokenizer> {
        let v = gguf_vocab::build(file)?;
        for w in &v.warnings {
            eprintln!("warning: {w}");
        }
        Ok(Tokenizer {
            inner: v.tokenizer,
            source: file.path.clone(),
            n_vocab: v.n_tokens,
            bos: v.bos,
            eos: v.eos,
            unk: v.unk,
            pad: v.pad,
            eog: v.eog,
            add_bos: v.add_bos,
            add_eos: v.add_eos,
            warnings: v.warnings,
        })
    }

    /// Loads a Hugging Face `tokenizer.json` (or the one inside a directory). The special
    /// tokens come from the files transformers keeps beside it when they are there:
    /// `tokenizer_config.json` (`bos_token`, `eos_token`, `unk_token`, `pad_token`),
    /// `generation_config.json` and `config.json` (`eos_token_id`, a number or a list: every
    /// id that stops generation). Without them, well-known end-of-turn tokens are looked up.
    pub fn from_file(path: &Path) -> Result<Tokenizer> {
        let path: PathBuf = if path.is_dir() {
            path.join("tokenizer.json")
        } else {
            path.to_path_buf()
        };
        let name = path.display().to_string();
        let bytes = std::fs::read(&path).map_err(|e| TextError::io(&path, e))?;
        let inner =
            tokenizers::Tokenizer::from_bytes(&bytes).map_err(|e| TextError::Tokenizer {
                file: name.clone(),
                msg: format!("not a tokenizer.json this version of `tokenizers` reads: {e}"),
            })?;
        let n_vocab = inner
            .get_vocab(true)
            .values()
            .max()
            .map_or(0, |&m| m as usize + 1);
        let mut tok = Tokenizer {
            inner,
            source: name,
            n_vocab,
            bos: None,
            eos: None,
            unk: None,
            pad: None,
            eog: Vec::new(),
            add_bos: false,
            add_eos: false,
            warnings: Vec::new(),
        };
        let dir = path.parent().unwrap_or(Path::new("."));
        tok.read_hf_specials(dir)?;
        Ok(tok)
    }

    /// Fills the special ids from the JSON files beside a `tokenizer.json`.
    fn read_hf_specials(&mut self, dir: &Path) -> Result<()> {
        if let Some(cfg) = read_json_opt(&dir.join("tokenizer_config.json"))? {
            let id = |key: &str| {
                special_token_text(cfg.get(key)).and_then(|t| self.inner.token_to_id(&t))
            };
            self.bos = id("bos_token");
            self.eos = id("eos_token");
            self.unk = id("unk_token");
            self.pad = id("pad_token");
        }
        self.eog.extend(self.eos);
        for file in ["generation_config.json", "config.json"] {
            let p = dir.join(file);
            let Some(cfg) = read_json_opt(&p)? else {
                continue;
            };
            let ids: Vec<u64> = match cfg.get("eos_token_id") {
                Some(Value::Number(n)) => n.as_u64().into_iter().collect(),
                Some(Value::Array(a)) => a.iter().filter_map(Value::as_u64).collect(),
                _ => Vec::new(),
            };
            for id in ids {
                let Ok(id) = u32::try_from(id) else { continue };
                if (id as usize) < self.n_vocab && !self.eog.contains(&id) {
                    self.eog.push(id);
                }
            }
            if self.bos.is_none() {
                if let Some(id) = cfg.get("bos_token_id").and_then(Value::as_u64) {
                    self.bos = u32::try_from(id)
                        .ok()
                        .filter(|&i| (i as usize) < self.n_vocab);
                }
            }
        }
        if self.eog.is_empty() {
            // No metadata: the end-of-turn tokens llama.cpp would recognise by their text.
            for t in [
                "<|im_end|>",
                "<|eot_id|>",
                "<|endoftext|>",
                "<|end_of_text|>",
                "<end_of_turn>",
                "<|end|>",
                "</s>",
                "<eos>",
            ] {
                if let Some(id) = self.inner.token_to_id(t) {
                    if !self.eog.contains(&id) {
                        self.eog.push(id);
                    }
                }
            }
        }
        if self.eos.is_none() {
            self.eos = self.eog.first().copied();
        }
        Ok(())
    }

    fn tok_err(&self, e: impl std::fmt::Display) -> TextError {
        TextError::Tokenizer {
            file: self.source.clone(),
            msg: e.to_string(),
        }
    }

    /// Token ids of `text`. Special tokens written in the text (`<|im_start|>`) are matched
    /// as such; `add_special_tokens` adds what the model asks for around the text (e.g. BOS
    /// when `tokenizer.ggml.add_bos_token` is true).
    pub fn encode(&self, text: &str, add_special_tokens: bool) -> Result<Vec<u32>> {
        let enc = self
            .inner
            .encode(text, add_special_tokens)
            .map_err(|e| self.tok_err(e))?;
        let mut ids = Vec::with_capacity(enc.len() + 2);
        if add_special_tokens && self.add_bos {
            ids.extend(self.bos);
        }
        ids.extend_from_slice(enc.get_ids());
        if add_special_tokens && self.add_eos {
            ids.extend(self.eos);
        }
        Ok(ids)
    }

    /// The text of `ids`; with `skip_special_tokens`, special tokens are left out. An id
    /// outside the vocabulary is an error.
    pub fn decode(&self, ids: &[u32], skip_special_tokens: bool) -> Result<String> {
        self.check_ids(ids)?;
        self.inner
            .decode(ids, skip_special_tokens)
            .map_err(|e| self.tok_err(e))
    }

    fn check_ids(&self, ids: &[u32]) -> Result<()> {
        match ids.iter().find(|&&id| id as usize >= self.n_vocab) {
            Some(&id) => Err(TextError::BadTokenId {
                file: self.source.clone(),
                id,
                vocab_size: self.n_vocab,
            }),
            None => Ok(()),
        }
    }

    /// A decoder for one token at a time (streaming output): see [`StreamDecoder`].
    pub fn stream_decoder(&self, skip_special_tokens: bool) -> StreamDecoder<'_> {
        StreamDecoder {
            tok: self,
            inner: self.inner.decode_stream(skip_special_tokens),
        }
    }

    pub fn bos_id(&self) -> Option<u32> {
        self.bos
    }

    /// The end-of-sequence id (`tokenizer.ggml.eos_token_id` / `eos_token`).
    pub fn eos_id(&self) -> Option<u32> {
        self.eos
    }

    pub fn unk_id(&self) -> Option<u32> {
        self.unk
    }

    pub fn pad_id(&self) -> Option<u32> {
        self.pad
    }

    /// Every id that ends generation: EOS, the EOT/EOM ids the metadata names, and the
    /// end-of-turn tokens (`<|im_end|>`, `<|eot_id|>`, `<|endoftext|>`, ...) the vocabulary
    /// marks special, as llama.cpp does. EOS first.
    pub fn eos_ids(&self) -> Vec<u32> {
        self.eog.clone()
    }

    /// Whether `encode(.., true)` adds BOS.
    pub fn adds_bos(&self) -> bool {
        self.add_bos
    }

    /// The number of token ids (the largest id plus one).
    pub fn vocab_size(&self) -> usize {
        self.n_vocab
    }

    /// The id of a token as spelled in the vocabulary (byte-level vocabularies spell a space
    /// `Ġ`); special tokens by their text.
    pub fn token_to_id(&self, token: &str) -> Option<u32> {
        self.inner.token_to_id(token)
    }

    /// The vocabulary spelling of an id.
    pub fn id_to_token(&self, id: u32) -> Option<String> {
        self.inner.id_to_token(id)
    }

    /// The file this tokenizer was built from.
    pub fn source(&self) -> &str {
        &self.source
    }

    /// Problems noticed while building (already printed to stderr).
    pub fn warnings(&self) -> &[String] {
        &self.warnings
    }

    /// The underlying `tokenizers` tokenizer.
    pub fn inner(&self) -> &tokenizers::Tokenizer {
        &self.inner
    }

    /// Writes this tokenizer in the Hugging Face layout into `dir`: `tokenizer.json`,
    /// `tokenizer_config.json` (BOS/EOS spellings, `add_bos_token`, and the chat template when
    /// given) and `generation_config.json` (every stop id), which [`Tokenizer::from_file`] and
    /// [`crate::ChatTemplate::from_tokenizer_config`] read back, as transformers does. So a
    /// model converted from a GGUF carries its tokenizer with it.
    pub fn save_hf(&self, dir: &Path, chat_template: Option<&crate::ChatTemplate>) -> Result<()> {
        std::fs::create_dir_all(dir).map_err(|e| TextError::io(dir, e))?;
        let json = dir.join("tokenizer.json");
        self.inner.save(&json, false).map_err(|e| TextError::Tokenizer { file: json.display().to_string(), msg: e.to_string() })?;
        let spell = |id: Option<u32>| id.and_then(|i| self.id_to_token(i));
        let mut config = serde_json::json!({
            "tokenizer_class": "PreTrainedTokenizerFast",
            "bos_token": spell(self.bos),
            "eos_token": spell(self.eos),
            "unk_token": spell(self.unk),
            "pad_token": spell(self.pad),
            "add_bos_token": self.add_bos,
        });
        if let Some(t) = chat_template {
            config["chat_template"] = Value::String(t.source().to_string());
        }
        let generation = serde_json::json!({ "bos_token_id": self.bos, "eos_token_id": self.eog });
        for (name, value) in [("tokenizer_config.json", config), ("generation_config.json", generation)] {
            let path = dir.join(name);
            let text = serde_json::to_string_pretty(&value).map_err(|source| TextError::Json { file: path.display().to_string(), source })?;
            std::fs::write(&path, text).map_err(|e| TextError::io(&path, e))?;
        }
        Ok(())
    }
}

/// Turns a stream of generated ids into text pieces. Decoding ids one by one goes wrong
/// where a character spans several byte-level tokens (emoji, CJK) or where the decoder
/// strips or joins across tokens; this is `tokenizers`' `DecodeStream`, which re-decodes a
/// short window and emits only the new, complete text.
pub struct StreamDecoder<'a> {
    tok: &'a Tokenizer,
    inner: tokenizers::DecodeStream<
        'a,
        tokenizers::ModelWrapper,
        tokenizers::NormalizerWrapper,
        tokenizers::PreTokenizerWrapper,
        tokenizers::PostProcessorWrapper,
        tokenizers::DecoderWrapper,
    >,
}

impl StreamDecoder<'_> {
    /// Feeds one id; returns the text it completes, or `None` while a character is still
    /// incomplete.
    pub fn step(&mut self, id: u32) -> Result<Option<String>> {
        self.tok.check_ids(&[id])?;
        self.inner.step(id).map_err(|e| self.tok.tok_err(e))
    }
}

/// A JSON file, or `None` if there is no such file.
pub(crate) fn read_json_opt(path: &Path) -> Result<Option<Value>> {
    let bytes = match std::fs::read(path) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(TextError::io(path, e)),
    };
    serde_json::from_slice(&bytes)
        .map(Some)
        .map_err(|source| TextError::Json {
            file: path.display().to_string(),
            source,
        })
}

/// A special token in `tokenizer_config.json`: a string, or an AddedToken object with
/// `content`.
pub(crate) fn special_token_text(v: Option<&Value>) -> Option<String> {
    match v? {
        Value::String(s) => Some(s.clone()),
        Value::Object(o) => o.get("content")?.as_str().map(str::to_owned),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    /// Generation may run the tokenizer and template on another thread than the one that
    /// loaded them.
    #[test]
    fn tokenizer_and_template_are_send_and_sync() {
        fn check<T: Send + Sync>() {}
        check::<super::Tokenizer>();
        check::<crate::ChatTemplate>();
    }
}
