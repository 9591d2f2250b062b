//! The token stream of a corpus: every document tokenized, EOS after each, and cached as
//! `<cache>/<key>.tokens` (u32 little endian) plus `<key>.json`. The key is the SHA-256 of
//! the tokenizer, EOS, the text field and every file's path, size and modification time; the
//! stream is memory-mapped when read back, so a corpus is tokenized once however many runs
//! use it.
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

use super::{err, for_each_document};
use crate::error::Result;

/// A corpus as one token stream: memory-mapped from the cache, or in memory.
pub enum TokenStream {
    Mapped(memmap2::Mmap),
    Owned(Vec<u32>),
}

impl TokenStream {
    pub fn len(&self) -> usize {
        match self {
            TokenStream::Mapped(m) => m.len() / 4,
            TokenStream::Owned(v) => v.len(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Token `i`.
    pub fn get(&self, i: usize) -> u32 {
        match self {
            TokenStream::Mapped(m) => u32::from_le_bytes([m[4 * i], m[4 * i + 1], m[4 * i + 2], m[4 * i + 3]]),
            TokenStream::Owned(v) => v[i],
        }
    }

    /// Tokens `start..start + n` as i64 ids.
    pub fn slice(&self, start: usize, n: usize) -> Vec<i64> {
        (start..start + n).map(|i| self.get(i) as i64).collect()
    }
}

/// What the cache JSON records beside the tokens.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
struct CacheMeta {
    tokens: usize,
    documents: usize,
    files: Vec<String>,
}

/// The cache key of a corpus: the tokenizer (its full description), EOS, the text field, and
/// each file's path, size and modification time.
pub fn cache_key(tokenizer: &str, eos: Option<u32>, field: &str, files: &[PathBuf]) -> Result<String> {
    let mut h = Sha256::new();
    h.update(tokenizer.as_bytes());
    h.update(format!("eos={eos:?} field={field:?}").as_bytes());
    for f in files {
        let m = std::fs::metadata(f).map_err(|e| err(f, e))?;
        let mtime = m.modified().ok().and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok()).map_or(0, |d| d.as_nanos());
        h.update(format!("{}|{}|{mtime};", f.display(), m.len()).as_bytes());
    }
    Ok(h.finalize().iter().map(|b| format!("{b:02x}")).collect())
}

/// Tokenizer of one document.
pub type Encode<'a> = &'a dyn Fn(&str) -> std::result::Result<Vec<u32>, String>;

/// Tokenizes every document of `files` (text in `field`, EOS after each) into one stream.
pub fn tokenize(files: &[PathBuf], field: &str, encode: Encode, eos: Option<u32>) -> Result<(Vec<u32>, usize)> {
    let mut stream = Vec::new();
    let mut documents = 0;
    for f in files {
        for_each_document(f, field, &mut |doc| {
            let ids = encode(doc).map_err(|e| err(f, format!("document {}: tokenizing: {e}", documents + 1)))?;
            stream.extend_from_slice(&ids);
            if let Some(e) = eos {
                stream.push(e);
            }
            documents += 1;
            Ok(())
        })?;
    }
    Ok((stream, documents))
}

/// The token stream of `files`, from `cache` when it holds this key (memory-mapped), else
/// tokenized and written there atomically. Returns (stream, documents, whether it was cached).
pub fn tokenize_cached(
    files: &[PathBuf],
    field: &str,
    tokenizer: &str,
    encode: Encode,
    eos: Option<u32>,
    cache: Option<&Path>,
) -> Result<(TokenStream, usize, bool)> {
    let Some(dir) = cache else {
        let (v, docs) = tokenize(files, field, encode, eos)?;
        return Ok((TokenStream::Owned(v), docs, false));
    };
    let key = cache_key(tokenizer, eos, field, files)?;
    let (bin, meta_path) = (dir.join(format!("{key}.tokens")), dir.join(format!("{key}.json")));
    if let (Ok(text), Ok(file)) = (std::fs::read(&meta_path), std::fs::File::open(&bin)) {
        if let Ok(meta) = serde_json::from_slice::<CacheMeta>(&text) {
            // SAFETY: the cache file is written once under its content key and never changed
            // in place (writes go to a temporary name and are renamed).
            if let Ok(map) = unsafe { memmap2::Mmap::map(&file) } {
                if map.len() == meta.tokens * 4 {
                    return Ok((TokenStream::Mapped(map), meta.documents, true));
                }
            }
        }
    }
    let (v, documents) = tokenize(files, field, encode, eos)?;
    std::fs::create_dir_all(dir).map_err(|e| err(dir, e))?;
    let bytes: Vec<u8> = v.iter().flat_map(|t| t.to_le_bytes()).collect();
    let tmp = bin.with_extension("tmp");
    std::fs::write(&tmp, &bytes).map_err(|e| err(&tmp, e))?;
    std::fs::rename(&tmp, &bin).map_err(|e| err(&bin, e))?;
    let meta = CacheMeta { tokens: v.len(), documents, files: files.iter().map(|f| f.display().to_string()).collect() };
    let json = serde_json::to_vec_pretty(&meta).map_err(|e| err(&meta_path, e))?;
    std::fs::write(&meta_path, json).map_err(|e| err(&meta_path, e))?;
    Ok((TokenStream::Owned(v), documents, false))
}


#[cfg(test)]
mod tests {
    use super::*;
    use crate::data::tests::tmp;
    use crate::data::windows;

    fn chars(s: &str) -> std::result::Result<Vec<u32>, String> {
        Ok(s.chars().map(|c| c as u32).collect())
    }

    #[test]
    fn packs_documents_with_eos_and_holds_out() {
        let a = tmp("a.txt", b"abcdef");
        let j = tmp("b.jsonl", b"{\"text\": \"xyz\"}\n\n{\"text\": \"uv\"}\n");
        let (stream, docs) = tokenize(&[a.clone(), j.clone()], "text", &chars, Some(0)).unwrap();
        // a b c d | e f 0 x | y z 0 u | v 0 -> 3 windows, the 2nd held out.
        assert_eq!((stream.len(), docs), (14, 3));
        let w = windows(TokenStream::Owned(stream.clone()), docs, 4, 2, 1).unwrap();
        assert_eq!(w.heldout.len(), 1);
        assert_eq!(w.heldout_window(0), vec!['e' as i64, 'f' as i64, 0, 'x' as i64]);
        assert_eq!(w.train.len(), 2);
        let again = windows(TokenStream::Owned(stream), docs, 4, 2, 1).unwrap();
        assert_eq!(w.train, again.train, "shuffle is deterministic by seed");
        let short = tmp("short.txt", b"ab");
        let (s, d) = tokenize(&[short], "text", &chars, None).unwrap();
        assert!(windows(TokenStream::Owned(s), d, 8, 0, 0).err().unwrap().to_string().contains("not one training window"));
    }

    #[test]
    fn the_token_cache_is_keyed_and_mapped() {
        let a = tmp("c.txt", b"abcdefgh");
        let cache = std::env::temp_dir().join(format!("jetc-tokcache-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&cache);
        let calls = std::cell::Cell::new(0);
        let enc = |s: &str| {
            calls.set(calls.get() + 1);
            chars(s)
        };
        let (s1, d1, hit1) = tokenize_cached(&[a.clone()], "text", "tok-A", &enc, Some(0), Some(&cache)).unwrap();
        let (s2, d2, hit2) = tokenize_cached(&[a.clone()], "text", "tok-A", &enc, Some(0), Some(&cache)).unwrap();
        assert!(!hit1 && hit2 && matches!(s2, TokenStream::Mapped(_)));
        assert_eq!(calls.get(), 1, "tokenized once");
        assert_eq!((s1.slice(0, 9), d1), (s2.slice(0, 9), d2));
        // Another tokenizer, another text field or a changed file is another key.
        let (_, _, hit3) = tokenize_cached(&[a.clone()], "text", "tok-B", &enc, Some(0), Some(&cache)).unwrap();
        assert!(!hit3);
        let (_, _, hit5) = tokenize_cached(&[a.clone()], "content", "tok-A", &enc, Some(0), Some(&cache)).unwrap();
        assert!(!hit5);
        std::thread::sleep(std::time::Duration::from_millis(20));
        std::fs::write(&a, b"abcdefghij").unwrap();
        let (s4, _, hit4) = tokenize_cached(&[a], "text", "tok-A", &enc, Some(0), Some(&cache)).unwrap();
        assert!(!hit4 && s4.len() == 11);
        let w = windows(s4, 1, 4, 0, 3).unwrap();
        assert_eq!(w.train.len(), 2);
        let _ = std::fs::remove_dir_all(&cache);
    }
}
