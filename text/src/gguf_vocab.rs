//! Building a `tokenizers` tokenizer from a GGUF file's `tokenizer.ggml.*` metadata.
//!
//! A GGUF carries no `tokenizer.json`: only the vocabulary, the merges, per-token types, the
//! special ids and a pre-tokenizer name. This module rebuilds the tokenizer the way
//! transformers' GGUF loader does (so ids match it), with llama.cpp's behaviour where
//! transformers has none:
//!
//! * `gpt2`: byte-level BPE; the pre-tokenizer comes from `tokenizer.ggml.pre` ([`crate::pretok`]).
//! * `llama`: SentencePiece-style BPE (`▁` for spaces, byte fallback `<0xNN>`), merges from
//!   the file or, when it has none, derived from the token scores as transformers does.
//!
//! Control tokens (type 3) become special added tokens and user-defined ones (type 4) plain
//! added tokens, so that both are matched whole in the input text.
use std::collections::{HashMap, HashSet};

use jetc_gguf::{GgufFile, MetaArray, MetaValue};
use tokenizers::decoders::byte_fallback::ByteFallback;
use tokenizers::decoders::byte_level::ByteLevel as ByteLevelDecoder;
use tokenizers::decoders::fuse::Fuse;
use tokenizers::decoders::sequence::Sequence as DecoderSequence;
use tokenizers::decoders::strip::Strip;
use tokenizers::decoders::DecoderWrapper;
use tokenizers::models::bpe::{Vocab, BPE};
use tokenizers::normalizers::Replace;
use tokenizers::pre_tokenizers::metaspace::{Metaspace, PrependScheme};
use tokenizers::AddedToken;

use crate::error::{Result, TextError};
use crate::pretok;

pub const KEY_MODEL: &str = "tokenizer.ggml.model";
pub const KEY_PRE: &str = "tokenizer.ggml.pre";
pub const KEY_TOKENS: &str = "tokenizer.ggml.tokens";
pub const KEY_MERGES: &str = "tokenizer.ggml.merges";
pub const KEY_TYPES: &str = "tokenizer.ggml.token_type";
pub const KEY_SCORES: &str = "tokenizer.ggml.scores";

/// `tokenizer.ggml.token_type` values (llama.cpp's `llama_token_type`).
pub mod token_type {
    pub const NORMAL: i32 = 1;
    pub const UNKNOWN: i32 = 2;
    pub const CONTROL: i32 = 3;
    pub const USER_DEFINED: i32 = 4;
    pub const UNUSED: i32 = 5;
    pub const BYTE: i32 = 6;
}

/// Token texts llama.cpp treats as end-of-generation when the vocabulary has them.
const EOG_TEXTS: &[&str] = &[
    "<|eot_id|>",
    "<|im_end|>",
    "<|end|>",
    "<|return|>",
    "<|call|>",
    "<end_of_turn>",
    "<|endoftext|>",
    "<|eom_id|>",
    "<EOT>",
    "_<EOT>",
    "<|end_of_text|>",
    "<end_of_utterance>",
];

/// What [`build`] reads from the metadata besides the tokenizer itself.
pub struct GgufVocab {
    pub tokenizer: tokenizers::Tokenizer,
    pub n_tokens: usize,
    pub bos: Option<u32>,
    pub eos: Option<u32>,
    pub unk: Option<u32>,
    pub pad: Option<u32>,
    pub eog: Vec<u32>,
    pub add_bos: bool,
    pub add_eos: bool,
    pub warnings: Vec<String>,
}

struct Meta<'a> {
    file: &'a GgufFile,
    n_tokens: usize,
    warnings: Vec<String>,
}

impl Meta<'_> {
    fn path(&self) -> &str {
        &self.file.path
    }

    fn err(&self, key: &str, msg: impl Into<String>) -> TextError {
        TextError::meta(self.path(), key, msg)
    }

    fn opt_bool(&self, key: &str) -> Result<Option<bool>> {
        match self.file.get(key) {
            None => Ok(None),
            Some(_) => Ok(Some(self.file.get_bool(key)?)),
        }
    }

    /// An optional token id; one outside the vocabulary is an error (a warning for `lenient`
    /// keys, whose bad values llama.cpp also ignores).
    fn opt_id(&mut self, key: &str, lenient: bool) -> Result<Option<u32>> {
        let Some(v) = self.file.get(key) else {
            return Ok(None);
        };
        // Some converters write -1 (as a signed int) for "none".
        if v.as_integer().is_some_and(|i| i < 0) {
            return Ok(None);
        }
        let id = self.file.get_u32(key)?;
        if (id as usize) < self.n_tokens {
            return Ok(Some(id));
        }
        let msg = format!(
            "token id {id} is outside the vocabulary ({} tokens)",
            self.n_tokens
        );
        if lenient {
            self.warnings
                .push(format!("{}: {key}: {msg}; ignored", self.path()));
            Ok(None)
        } else {
            Err(self.err(key, msg))
        }
    }

    /// `tokenizer.ggml.token_type`, or all NORMAL when absent. Writers use INT32, but accept
    /// any integer array.
    fn token_types(&self) -> Result<Vec<i32>> {
        let Some(v) = self.file.get(KEY_TYPES) else {
            return Ok(vec![token_type::NORMAL; self.n_tokens]);
        };
        let types: Vec<i32> = match v {
            MetaValue::Array(MetaArray::I32(t)) => t.clone(),
            MetaValue::Array(a) => a
                .to_integers()
                .and_then(|v| v.into_iter().map(|x| i32::try_from(x).ok()).collect())
                .ok_or_else(|| {
                    self.err(
                        KEY_TYPES,
                        format!("expected an array of INT32, found {}", v.describe()),
                    )
                })?,
            _ => self.file.get_i32_array(KEY_TYPES)?.to_vec(),
        };
        if types.len() != self.n_tokens {
            return Err(self.err(
                KEY_TYPES,
                format!(
                    "{} entries for {} tokens in {KEY_TOKENS}",
                    types.len(),
                    self.n_tokens
                ),
            ));
        }
        Ok(types)
    }

    fn merges(&self) -> Result<Option<Vec<(String, String)>>> {
        if self.file.get(KEY_MERGES).is_none() {
            return Ok(None);
        }
        let raw = self.file.get_str_array(KEY_MERGES)?;
        raw.iter()
            .enumerate()
            .map(|(i, m)| {
                // As llama.cpp: split at the first space after the first byte.
                m.bytes()
                    .skip(1)
                    .position(|b| b == b' ')
                    .map(|p| (m[..p + 1].to_owned(), m[p + 2..].to_owned()))
                    .ok_or_else(|| {
                        self.err(
                            KEY_MERGES,
                            format!("entry {i} ({m:?}) is not two tokens separated by a space"),
                        )
                    })
            })
            .collect::<Result<Vec<_>>>()
            .map(Some)
    }
}

/// Reads the `tokenizer.ggml.*` metadata of `file` and builds its tokenizer.
pub fn build(file: &GgufFile) -> Result<GgufVocab> {
    let model = file.get_str(KEY_MODEL)?;
    let tokens = file.get_str_array(KEY_TOKENS)?;
    if tokens.is_empty() {
        return Err(TextError::meta(
            &file.path,
            KEY_TOKENS,
            "the vocabulary is empty",
        ));
    }
    if u32::try_from(tokens.len()).is_err() {
        return Err(TextError::meta(
            &file.path,
            KEY_TOKENS,
            "more tokens than fit in u32 ids",
        ));
    }
    let mut m = Meta {
        file,
        n_tokens: tokens.len(),
        warnings: Vec::new(),
    };
    let types = m.token_types()?;
    let bos = m.opt_id("tokenizer.ggml.bos_token_id", false)?;
    let eos = m.opt_id("tokenizer.ggml.eos_token_id", false)?;
    let unk = m.opt_id("tokenizer.ggml.unknown_token_id", true)?;
    let pad = m.opt_id("tokenizer.ggml.padding_token_id", true)?;
    let eot = m.opt_id("tokenizer.ggml.eot_token_id", true)?;
    let eom = m.opt_id("tokenizer.ggml.eom_token_id", true)?;

    let (mut tokenizer, default_add_bos) = match model {
        "gpt2" => (byte_level(&mut m, tokens, &types)?, false),
        "llama" => (sentencepiece(&mut m, tokens, &types, unk)?, true),
        other => {
            return Err(TextError::UnsupportedModel {
                file: file.path.clone(),
                model: other.into(),
            })
        }
    };

    // Special (control, and the named bos/eos/unk/pad) and user-defined added tokens, in id
    // order. They are already in the model's vocabulary, so they keep their ids.
    let named: HashSet<u32> = [bos, eos, unk, pad, eot, eom]
        .into_iter()
        .flatten()
        .collect();
    let mut special = Vec::new();
    let mut user = Vec::new();
    for (id, (tok, &ty)) in tokens.iter().zip(&types).enumerate() {
        if tok.is_empty() {
            continue;
        }
        if ty == token_type::CONTROL || named.contains(&(id as u32)) {
            special.push(AddedToken::from(tok.clone(), true).normalized(false));
        } else if ty == token_type::USER_DEFINED {
            user.push(AddedToken::from(tok.clone(), false).normalized(false));
        }
    }
    tokenizer.add_special_tokens(&special);
    tokenizer.add_tokens(&user);

    // End of generation: eos, eot, eom, and the special tokens llama.cpp recognises by text.
    let mut eog: Vec<u32> = [eos, eot, eom].into_iter().flatten().collect();
    for (id, (tok, &ty)) in tokens.iter().zip(&types).enumerate() {
        let id = id as u32;
        let marked =
            ty == token_type::CONTROL || ty == token_type::USER_DEFINED || named.contains(&id);
        if marked && EOG_TEXTS.contains(&tok.as_str()) && !eog.contains(&id) {
            eog.push(id);
        }
    }

    let add_bos = m
        .opt_bool("tokenizer.ggml.add_bos_token")?
        .unwrap_or(default_add_bos);
    let add_eos = m.opt_bool("tokenizer.ggml.add_eos_token")?.unwrap_or(false);
    if add_bos && bos.is_none() {
        m.warnings.push(format!(
            "{}: tokenizer.ggml.add_bos_token is set but there is no tokenizer.ggml.bos_token_id; no BOS is added",
            file.path
        ));
    }
    Ok(GgufVocab {
        tokenizer,
        n_tokens: tokens.len(),
        bos,
        eos,
        unk,
        pad,
        eog,
        add_bos: add_bos && bos.is_some(),
        add_eos: add_eos && eos.is_some(),
        warnings: m.warnings,
    })
}

/// GPT-2's byte-to-character map (`bytes_to_unicode`): printable bytes stand for
/// themselves, the others for the characters from U+0100 on.
pub fn bytes_to_unicode() -> [char; 256] {
    let mut map = ['\0'; 256];
    let mut n = 0u32;
    for b in 0..=255u8 {
        let printable = matches!(b, b'!'..=b'~' | 0xA1..=0xAC | 0xAE..=0xFF);
        map[b as usize] = if printable {
            b as char
        } else {
            n += 1;
            char::from_u32(255 + n).unwrap_or('\u{FFFD}')
        };
    }
    map
}

/// The vocabulary map, warning about (and dropping) duplicate spellings: the first id wins.
fn vocab_map(m: &mut Meta, spelled: impl Iterator<Item = String>) -> HashMap<String, u32> {
    let mut vocab = HashMap::with_capacity(m.n_tokens);
    let mut dups = Vec::new();
    for (id, tok) in spelled.enumerate() {
        if let Some(first) = vocab.get(&tok) {
            dups.push(format!("{id} ({tok:?}, same as {first})"));
        } else {
            vocab.insert(tok, id as u32);
        }
    }
    if !dups.is_empty() {
        let n = dups.len();
        dups.truncate(5);
        m.warnings.push(format!(
            "{}: {KEY_TOKENS}: {n} duplicate token(s), which can never be produced by encode: {}",
            m.path(),
            dups.join(", ")
        ));
    }
    vocab
}

fn byte_level(m: &mut Meta, tokens: &[String], types: &[i32]) -> Result<tokenizers::Tokenizer> {
    let pre_name = match m.file.get(KEY_PRE) {
        None => None,
        Some(_) => Some(m.file.get_str(KEY_PRE)?),
    };
    let spec = match pre_name.and_then(pretok::lookup) {
        Some(s) => s,
        None => {
            let what = match pre_name {
                Some(p) => format!("unknown pre-tokenizer \"{p}\""),
                None => "no pre-tokenizer named".to_string(),
            };
            m.warnings.push(format!(
                "{}: {KEY_PRE}: {what}; using the GPT-2 regex (ids may differ from the model's own tokenizer)",
                m.path()
            ));
            pretok::FALLBACK
        }
    };
    let pre = pretok::build(spec).map_err(|e| m.err(KEY_PRE, e))?;

    // Tokens are stored in the byte alphabet; one that is not (a control or user-defined
    // token, or a converter's slip) is kept as written for the former and re-spelled
    // byte by byte for the latter, as transformers does.
    let map = bytes_to_unicode();
    let alphabet: HashSet<char> = map.iter().copied().collect();
    let spelled = tokens.iter().zip(types).map(|(t, &ty)| {
        let raw = ty == token_type::CONTROL || ty == token_type::USER_DEFINED;
        if raw || t.chars().all(|c| alphabet.contains(&c)) {
            t.clone()
        } else {
            t.bytes().map(|b| map[b as usize]).collect()
        }
    });
    let vocab = vocab_map(m, spelled);
    let merges = m.merges()?.ok_or_else(|| {
        m.err(
            KEY_MERGES,
            "missing (a gpt2 BPE vocabulary needs its merges)",
        )
    })?;
    let bpe = BPE::builder()
        .vocab_and_merges(vocab.into_iter().collect::<Vocab>(), merges)
        .ignore_merges(spec.ignore_merges)
        .build()
        .map_err(|e| m.err(KEY_MERGES, e.to_string()))?;
    let mut tok = tokenizers::Tokenizer::new(bpe);
    tok.with_pre_tokenizer(Some(pre));
    tok.with_decoder(Some(ByteLevelDecoder::new(false, true, true)));
    Ok(tok)
}

fn sentencepiece(
    m: &mut Meta,
    tokens: &[String],
    types: &[i32],
    unk: Option<u32>,
) -> Result<tokenizers::Tokenizer> {
    let vocab = vocab_map(m, tokens.iter().cloned());
    let merges = match m.merges()? {
        Some(merges) => merges,
        None => {
            let scores = m.file.get_f32_array(KEY_SCORES).map_err(|_| {
                m.err(
                    KEY_MERGES,
                    format!("missing, and no {KEY_SCORES} to derive the merges from"),
                )
            })?;
            if scores.len() != tokens.len() {
                return Err(m.err(
                    KEY_SCORES,
                    format!("{} scores for {} tokens", scores.len(), tokens.len()),
                ));
            }
            merges_from_scores(tokens, scores, &vocab)
        }
    };
    let add_prefix = m
        .opt_bool("tokenizer.ggml.add_space_prefix")?
        .unwrap_or(true);
    let unk_token = unk
        .or_else(|| {
            types
                .iter()
                .position(|&t| t == token_type::UNKNOWN)
                .map(|i| i as u32)
        })
        .map(|i| tokens[i as usize].clone());
    let mut builder = BPE::builder()
        .vocab_and_merges(vocab.into_iter().collect::<Vocab>(), merges)
        .byte_fallback(true)
        .fuse_unk(true);
    if let Some(u) = unk_token {
        builder = builder.unk_token(u);
    }
    let bpe = builder
        .build()
        .map_err(|e| m.err(KEY_MERGES, e.to_string()))?;
    let mut tok = tokenizers::Tokenizer::new(bpe);
    let scheme = if add_prefix {
        PrependScheme::First
    } else {
        PrependScheme::Never
    };
    tok.with_pre_tokenizer(Some(Metaspace::new('▁', scheme, false)));
    let replace = Replace::new("▁", " ").map_err(|e| m.err(KEY_MODEL, e.to_string()))?;
    let mut steps: Vec<DecoderWrapper> = vec![
        replace.into(),
        ByteFallback::new().into(),
        Fuse::new().into(),
    ];
    if add_prefix {
        steps.push(Strip::new(' ', 1, 0).into());
    }
    tok.with_decoder(Some(DecoderSequence::new(steps)));
    Ok(tok)
}

/// Merges implied by a SentencePiece vocabulary: every split of a token into two tokens,
/// best score first (transformers' `generate_merges` with scores, so ranks match it).
pub fn merges_from_scores(
    tokens: &[String],
    scores: &[f32],
    vocab: &HashMap<String, u32>,
) -> Vec<(String, String)> {
    let mut merges: Vec<(String, String, f32)> = Vec::new();
    for (tok, &score) in tokens.iter().zip(scores) {
        let mut local: Vec<(&str, &str, u32, u32)> = tok
            .char_indices()
            .skip(1)
            .filter_map(|(i, _)| {
                let (l, r) = tok.split_at(i);
                Some((l, r, *vocab.get(l)?, *vocab.get(r)?))
            })
            .collect();
        local.sort_by_key(|&(_, _, a, b)| (a, b));
        merges.extend(
            local
                .into_iter()
                .map(|(l, r, _, _)| (l.to_owned(), r.to_owned(), score)),
        );
    }
    // Stable, descending on (score, chars of left, chars of right), like Python's
    // `sorted(..., reverse=True)`.
    merges.sort_by(|a, b| {
        b.2.partial_cmp(&a.2)
            .unwrap_or(std::cmp::Ordering::Equal)
            .then_with(|| b.0.chars().count().cmp(&a.0.chars().count()))
            .then_with(|| b.1.chars().count().cmp(&a.1.chars().count()))
    });
    merges.into_iter().map(|(l, r, _)| (l, r)).collect()
}
