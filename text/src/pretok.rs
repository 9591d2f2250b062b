//! Pre-tokenizers for byte-level BPE vocabularies, keyed by GGUF's `tokenizer.ggml.pre`.
//!
//! A GGUF file does not carry its pre-tokenizer, only a name for it; llama.cpp
//! (`llama-vocab.cpp`) and transformers (`integrations/gguf`) each keep a table from that name
//! to the split regexes the vocabulary's merges were learned with. This is jetc's copy. Where
//! transformers has an entry, its regex (the one in the model's `tokenizer.json`) is used, so
//! that ids match transformers; the others follow llama.cpp's regex lists (applied one after
//! the other, each match isolated, as llama.cpp's `unicode_regex_split` does).
//!
//! An unknown or missing name falls back to the GPT-2 regex (what transformers does for any
//! name it does not know), with a warning.
use tokenizers::pre_tokenizers::byte_level::ByteLevel;
use tokenizers::pre_tokenizers::sequence::Sequence;
use tokenizers::pre_tokenizers::split::{Split, SplitPattern};
use tokenizers::pre_tokenizers::PreTokenizerWrapper;
use tokenizers::SplitDelimiterBehavior;

/// GPT-2's regex, as built into `tokenizers`' ByteLevel pre-tokenizer (llama.cpp's lacks the
/// final `|\s+`, which changes nothing: unmatched text stays a piece of its own there).
const GPT2: &str = r"'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+";
const LLAMA3: &str = r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";
const QWEN2: &str = r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";
const QWEN35: &str = r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?[\p{L}\p{M}]+|\p{N}| ?[^\s\p{L}\p{M}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";
const TEKKEN: &str = r"[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]*[\p{Ll}\p{Lm}\p{Lo}\p{M}]+|[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]+[\p{Ll}\p{Lm}\p{Lo}\p{M}]*|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n/]*|\s*[\r\n]+|\s+(?!\S)|\s+";
const GPT4O: &str = r"[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]*[\p{Ll}\p{Lm}\p{Lo}\p{M}]+(?i:'s|'t|'re|'ve|'m|'ll|'d)?|[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]+[\p{Ll}\p{Lm}\p{Lo}\p{M}]*(?i:'s|'t|'re|'ve|'m|'ll|'d)?|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n/]*|\s*[\r\n]+|\s+(?!\S)|\s+";
const DEEPSEEK_V3: &str = r"[!\x22#$%&'()*+,\-./:;<=>?@\[\\\]^_`{|}~][A-Za-z]+|[^\r\n\p{L}\p{P}\p{S}]?[\p{L}\p{M}]+| ?[\p{P}\p{S}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";
const BLOOM: &str = r" ?[^(\s|.,!?…。，、।۔،)]+";

/// How to pre-tokenize one vocabulary.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PreSpec {
    /// Regexes applied in turn, every match isolated into its own piece.
    pub splits: &'static [&'static str],
    /// Whether the byte-level step also splits with the GPT-2 regex (after `splits`).
    pub gpt2_regex: bool,
    /// BPE `ignore_merges`: a piece that is itself in the vocabulary is taken whole.
    pub ignore_merges: bool,
}

const fn spec(splits: &'static [&'static str], gpt2_regex: bool, ignore_merges: bool) -> PreSpec {
    PreSpec {
        splits,
        gpt2_regex,
        ignore_merges,
    }
}

/// The GPT-2 pre-tokenizer: the fallback for names not in [`TABLE`].
pub const FALLBACK: PreSpec = spec(&[], true, false);

/// `tokenizer.ggml.pre` names and their pre-tokenizers.
pub const TABLE: &[(&[&str], PreSpec)] = &[
    (
        &[
            "gpt-2",
            "gpt2",
            "phi-2",
            "jina-es",
            "jina-de",
            "gigachat",
            "jina-v2-es",
            "jina-v2-de",
            "a.x-4.0",
            "mellum",
            "modern-bert",
            "jina-v1-en",
            "jina-v2-code",
            "roberta-bpe",
            "mpt",
            "olmo",
            "jais",
            "exaone4",
            "trillion",
            "granite-docling",
        ],
        FALLBACK,
    ),
    // Single digits, then GPT-2 (SmolLM's tokenizer.json: Digits(individual) + ByteLevel).
    (
        &[
            "smollm",
            "starcoder",
            "refact",
            "command-r",
            "codeshell",
            "exaone",
            "minerva-7b",
        ],
        spec(&[r"\p{N}"], true, false),
    ),
    (
        &[
            "llama3",
            "llama-v3",
            "llama-bpe",
            "falcon3",
            "falcon-h1",
            "pixtral",
            "midm-2.0",
            "lfm2",
            "jina-v5-nano",
        ],
        spec(&[LLAMA3], false, true),
    ),
    (
        &["dbrx", "smaug-bpe", "chatglm-bpe", "glm4"],
        spec(&[LLAMA3], false, false),
    ),
    (
        &[
            "qwen2",
            "deepseek-r1-qwen",
            "kormo",
            "f2llmv2",
            "megrez",
            "stablelm2",
            "hunyuan",
            "grok-2",
        ],
        spec(&[QWEN2], false, false),
    ),
    (&["qwen35"], spec(&[QWEN35], false, false)),
    (&["tekken"], spec(&[TEKKEN], false, true)),
    (
        &["gpt-4o", "llama4", "kanana2", "talkie", "minimax-m2"],
        spec(&[GPT4O], false, false),
    ),
    (
        &["deepseek-v3", "hunyuan-dense"],
        spec(
            &[r"\p{N}{1,3}", "[一-龥぀-ゟ゠-ヿ]+", DEEPSEEK_V3],
            false,
            false,
        ),
    ),
    (
        &["deepseek-coder"],
        spec(
            &[
                r"[\r\n]",
                r"\s?\p{L}+",
                r"\s?\p{P}+",
                "[一-龥ࠀ-一가-퟿]+",
                r"\p{N}",
            ],
            false,
            false,
        ),
    ),
    (
        &["falcon"],
        spec(
            &[r"[\p{P}\$\+<=>\^~\|`]+", GPT2, "[0-9][0-9][0-9]"],
            false,
            false,
        ),
    ),
    (
        &["bloom", "poro-chat", "gpt3-finnish"],
        spec(&[BLOOM], false, false),
    ),
    (&["viking"], spec(&[BLOOM, r"\p{N}"], false, false)),
    // llama.cpp's "default" list (also what it uses when the key is missing).
    (
        &["default"],
        spec(
            &[r"[\p{P}\$\+<=>\^~\|]+", GPT2, r"\p{N}+", "[0-9][0-9][0-9]"],
            false,
            false,
        ),
    ),
];

/// The pre-tokenizer for a `tokenizer.ggml.pre` name, if jetc knows it.
pub fn lookup(pre: &str) -> Option<PreSpec> {
    TABLE
        .iter()
        .find(|(names, _)| names.contains(&pre))
        .map(|(_, s)| *s)
}

/// Every name [`lookup`] knows.
pub fn known_names() -> impl Iterator<Item = &'static str> {
    TABLE.iter().flat_map(|(names, _)| names.iter().copied())
}

/// Builds the `tokenizers` pre-tokenizer: the splits, then the byte-level mapping.
pub fn build(spec: PreSpec) -> Result<PreTokenizerWrapper, String> {
    let mut seq: Vec<PreTokenizerWrapper> = Vec::with_capacity(spec.splits.len() + 1);
    for re in spec.splits {
        let split = Split::new(
            SplitPattern::Regex((*re).to_owned()),
            SplitDelimiterBehavior::Isolated,
            false,
        )
        .map_err(|e| format!("pre-tokenizer regex {re:?} does not compile: {e}"))?;
        seq.push(split.into());
    }
    seq.push(ByteLevel::new(false, true, spec.gpt2_regex).into());
    Ok(if seq.len() == 1 {
        seq.remove(0)
    } else {
        Sequence::new(seq).into()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_table_regex_compiles() {
        for (names, s) in TABLE {
            build(*s).unwrap_or_else(|e| panic!("{names:?}: {e}"));
        }
    }

    #[test]
    fn names_are_unique() {
        let mut seen = std::collections::HashSet::new();
        for n in known_names() {
            assert!(seen.insert(n), "{n} listed twice");
        }
        assert!(lookup("smollm").is_some() && lookup("nope").is_none());
    }
}
