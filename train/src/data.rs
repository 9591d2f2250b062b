//! Training text: files and directories of `.txt`/`.md`, and JSONL with a `text` field,
//! tokenized with the model's own tokenizer, EOS between documents, packed into windows of
//! `seq_len` tokens, split into train and held-out windows, and shuffled by seed.
//!
//! The token stream is cached ([`tokenize_cached`]): `<cache>/<key>.tokens` (u32 little
//! endian) and `<key>.json`, keyed by the SHA-256 of the tokenizer and of every file's path,
//! size and modification time, and memory-mapped when read back, so a corpus is tokenized
//! once however many runs use it.
//!
//! A missing, empty, non-UTF-8 or wrong-schema file is an error naming the file; nothing is
//! skipped silently.
use std::path::{Path, PathBuf};

use rand::seq::SliceRandom;
use rand::SeedableRng;
use sha2::{Digest, Sha256};

use crate::error::{Result, TrainError};

fn err(path: &Path, msg: impl std::fmt::Display) -> TrainError {
    TrainError::Other(format!("{}: {msg}", path.display()))
}

/// The files under `paths` (directories walked in name order), text-like ones only.
pub fn list_files(paths: &[PathBuf]) -> Result<Vec<PathBuf>> {
    let mut out = Vec::new();
    for p in paths {
        if p.is_dir() {
            let mut stack = vec![p.clone()];
            let mut found = Vec::new();
            while let Some(d) = stack.pop() {
                let rd = std::fs::read_dir(&d).map_err(|e| err(&d, e))?;
                for entry in rd {
                    let path = entry.map_err(|e| err(&d, e))?.path();
                    if path.is_dir() {
                        stack.push(path);
                    } else if kind(&path).is_some() {
                        found.push(path);
                    }
                }
            }
            found.sort();
            if found.is_empty() {
                return Err(err(p, "the directory holds no .txt, .md or .jsonl file"));
            }
            out.extend(found);
        } else if p.is_file() {
            if kind(p).is_none() {
                return Err(err(p, "not a training text file (.txt, .md, .rst or .jsonl with a `text` field)"));
            }
            out.push(p.clone());
        } else {
            return Err(err(p, "no such file or directory"));
        }
    }
    if out.is_empty() {
        return Err(TrainError::Other("no training data given (--data)".into()));
    }
    Ok(out)
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    Text,
    Jsonl,
}

fn kind(p: &Path) -> Option<Kind> {
    match p.extension()?.to_str()? {
        "txt" | "md" | "rst" => Some(Kind::Text),
        "jsonl" => Some(Kind::Jsonl),
        _ => None,
    }
}

/// The documents of one file.
pub fn read_documents(path: &Path) -> Result<Vec<String>> {
    let bytes = std::fs::read(path).map_err(|e| err(path, e))?;
    if bytes.iter().all(|b| b.is_ascii_whitespace()) {
        return Err(err(path, "the file is empty"));
    }
    let text = String::from_utf8(bytes).map_err(|e| err(path, format!("not UTF-8 text (byte {})", e.utf8_error().valid_up_to())))?;
    match kind(path) {
        Some(Kind::Jsonl) => {
            let mut docs = Vec::new();
            for (i, line) in text.lines().enumerate() {
                if line.trim().is_empty() {
                    continue;
                }
                let v: serde_json::Value = serde_json::from_str(line).map_err(|e| err(path, format!("line {}: not JSON: {e}", i + 1)))?;
                let t = v.get("text").and_then(|t| t.as_str()).ok_or_else(|| err(path, format!("line {}: no string field `text`", i + 1)))?;
                docs.push(t.to_string());
            }
            Ok(docs)
        }
        _ => Ok(vec![text]),
    }
}

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

/// The cache key of a corpus: the tokenizer (its full description), EOS, and each file's
/// path, size and modification time.
pub fn cache_key(tokenizer: &str, eos: Option<u32>, files: &[PathBuf]) -> Result<String> {
    let mut h = Sha256::new();
    h.update(tokenizer.as_bytes());
    h.update(format!("eos={eos:?}").as_bytes());
    for f in files {
        let m = std::fs::metadata(f).map_err(|e| err(f, e))?;
        let mtime = m.modified().ok().and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok()).map_or(0, |d| d.as_nanos());
        h.update(format!("{}|{}|{mtime};", f.display(), m.len()).as_bytes());
    }
    Ok(h.finalize().iter().map(|b| format!("{b:02x}")).collect())
}

/// Tokenizes every document of `files` (EOS after each) into one stream.
pub fn tokenize(files: &[PathBuf], encode: &dyn Fn(&str) -> std::result::Result<Vec<u32>, String>, eos: Option<u32>) -> Result<(Vec<u32>, usize)> {
    let mut stream = Vec::new();
    let mut documents = 0;
    for f in files {
        for doc in read_documents(f)? {
            let ids = encode(&doc).map_err(|e| err(f, format!("tokenizing: {e}")))?;
            stream.extend_from_slice(&ids);
            if let Some(e) = eos {
                stream.push(e);
            }
            documents += 1;
        }
    }
    Ok((stream, documents))
}

/// The token stream of `files`, from `cache` when it holds this key (memory-mapped), else
/// tokenized and written there atomically. Returns (stream, documents, whether it was cached).
pub fn tokenize_cached(
    files: &[PathBuf],
    tokenizer: &str,
    encode: &dyn Fn(&str) -> std::result::Result<Vec<u32>, String>,
    eos: Option<u32>,
    cache: Option<&Path>,
) -> Result<(TokenStream, usize, bool)> {
    let Some(dir) = cache else {
        let (v, docs) = tokenize(files, encode, eos)?;
        return Ok((TokenStream::Owned(v), docs, false));
    };
    let key = cache_key(tokenizer, eos, files)?;
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
    let (v, documents) = tokenize(files, encode, eos)?;
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

/// Windows of one corpus as start offsets into its token stream.
pub struct Windows {
    pub stream: TokenStream,
    pub seq_len: usize,
    pub train: Vec<usize>,
    pub heldout: Vec<usize>,
    pub documents: usize,
}

impl Windows {
    pub fn tokens(&self) -> usize {
        self.stream.len()
    }

    /// The ids of train window `i` (cycling).
    pub fn train_window(&self, i: usize) -> Vec<i64> {
        self.stream.slice(self.train[i % self.train.len()], self.seq_len)
    }

    pub fn heldout_window(&self, i: usize) -> Vec<i64> {
        self.stream.slice(self.heldout[i], self.seq_len)
    }

    /// The largest token id of the corpus.
    pub fn max_id(&self) -> u32 {
        (0..self.stream.len()).map(|i| self.stream.get(i)).max().unwrap_or(0)
    }
}

/// Cuts `stream` into windows of `seq_len`; every `heldout_every`-th window (when > 0) is
/// held out; train windows are shuffled by `seed`.
pub fn windows(stream: TokenStream, documents: usize, seq_len: usize, heldout_every: usize, seed: u64) -> Result<Windows> {
    if seq_len == 0 {
        return Err(TrainError::Other("--seq-len must be at least 1".into()));
    }
    let n = stream.len() / seq_len;
    let mut train = Vec::new();
    let mut heldout = Vec::new();
    for i in 0..n {
        if heldout_every > 0 && i % heldout_every == heldout_every - 1 {
            heldout.push(i * seq_len);
        } else {
            train.push(i * seq_len);
        }
    }
    if train.is_empty() {
        return Err(TrainError::Other(format!(
            "the data holds {} tokens: not one training window of --seq-len {seq_len} (give more text or a shorter --seq-len)",
            stream.len()
        )));
    }
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    train.shuffle(&mut rng);
    Ok(Windows { stream, seq_len, train, heldout, documents })
}

/// Packed token windows of one corpus, in memory (see [`windows`] for the cached form).
#[derive(Clone, Debug, PartialEq)]
pub struct PackedWindows {
    pub seq_len: usize,
    pub train: Vec<Vec<i64>>,
    pub heldout: Vec<Vec<i64>>,
    /// Tokens read in all (before packing drops the tail).
    pub tokens: usize,
    pub documents: usize,
}

/// Tokenizes every document (`encode`), joins them with `eos` and cuts windows of
/// `seq_len`; every `heldout_every`-th window (when > 0) is held out. Train windows are
/// shuffled by `seed`.
pub fn pack(
    files: &[PathBuf],
    encode: &dyn Fn(&str) -> std::result::Result<Vec<u32>, String>,
    eos: Option<u32>,
    seq_len: usize,
    heldout_every: usize,
    seed: u64,
) -> Result<PackedWindows> {
    if seq_len == 0 {
        return Err(TrainError::Other("--seq-len must be at least 1".into()));
    }
    let mut stream: Vec<i64> = Vec::new();
    let mut documents = 0;
    for f in files {
        for doc in read_documents(f)? {
            let ids = encode(&doc).map_err(|e| err(f, format!("tokenizing: {e}")))?;
            stream.extend(ids.iter().map(|&i| i as i64));
            if let Some(e) = eos {
                stream.push(e as i64);
            }
            documents += 1;
        }
    }
    let tokens = stream.len();
    let mut train = Vec::new();
    let mut heldout = Vec::new();
    for (i, w) in stream.chunks_exact(seq_len).enumerate() {
        if heldout_every > 0 && i % heldout_every == heldout_every - 1 {
            heldout.push(w.to_vec());
        } else {
            train.push(w.to_vec());
        }
    }
    if train.is_empty() {
        return Err(TrainError::Other(format!(
            "the data holds {tokens} tokens: not one training window of --seq-len {seq_len} (give more text or a shorter --seq-len)"
        )));
    }
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    train.shuffle(&mut rng);
    Ok(PackedWindows { seq_len, train, heldout, tokens, documents })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tmp(name: &str, bytes: &[u8]) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("jetc-data-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let p = dir.join(name);
        std::fs::write(&p, bytes).unwrap();
        p
    }

    fn chars(s: &str) -> std::result::Result<Vec<u32>, String> {
        Ok(s.chars().map(|c| c as u32).collect())
    }

    #[test]
    fn packs_documents_with_eos_and_holds_out() {
        let a = tmp("a.txt", b"abcdef");
        let j = tmp("b.jsonl", b"{\"text\": \"xyz\"}\n\n{\"text\": \"uv\"}\n");
        let w = pack(&[a, j], &chars, Some(0), 4, 2, 1).unwrap();
        // a b c d | e f 0 x | y z 0 u | v 0 -> 3 windows, the 2nd held out.
        assert_eq!(w.tokens, 14);
        assert_eq!(w.documents, 3);
        assert_eq!(w.heldout, vec![vec!['e' as i64, 'f' as i64, 0, 'x' as i64]]);
        assert_eq!(w.train.len(), 2);
        let again = pack(&[tmp("a.txt", b"abcdef"), tmp("b.jsonl", b"{\"text\": \"xyz\"}\n\n{\"text\": \"uv\"}\n")], &chars, Some(0), 4, 2, 1).unwrap();
        assert_eq!(w, again, "shuffle is deterministic by seed");
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
        let (s1, d1, hit1) = tokenize_cached(&[a.clone()], "tok-A", &enc, Some(0), Some(&cache)).unwrap();
        let (s2, d2, hit2) = tokenize_cached(&[a.clone()], "tok-A", &enc, Some(0), Some(&cache)).unwrap();
        assert!(!hit1 && hit2 && matches!(s2, TokenStream::Mapped(_)));
        assert_eq!(calls.get(), 1, "tokenized once");
        assert_eq!((s1.slice(0, 9), d1), (s2.slice(0, 9), d2));
        // Another tokenizer or a changed file is another key.
        let (_, _, hit3) = tokenize_cached(&[a.clone()], "tok-B", &enc, Some(0), Some(&cache)).unwrap();
        assert!(!hit3);
        std::thread::sleep(std::time::Duration::from_millis(20));
        std::fs::write(&a, b"abcdefghij").unwrap();
        let (s4, _, hit4) = tokenize_cached(&[a], "tok-A", &enc, Some(0), Some(&cache)).unwrap();
        assert!(!hit4 && s4.len() == 11);
        let w = windows(s4, 1, 4, 0, 3).unwrap();
        assert_eq!(w.train.len(), 2);
        let _ = std::fs::remove_dir_all(&cache);
    }

    #[test]
    fn bad_files_are_named() {
        let empty = tmp("empty.txt", b"  \n");
        assert!(read_documents(&empty).unwrap_err().to_string().contains("empty.txt: the file is empty"));
        let bin = tmp("bin.txt", &[0x66, 0xff, 0xfe, 0x00]);
        assert!(read_documents(&bin).unwrap_err().to_string().contains("not UTF-8"));
        let schema = tmp("s.jsonl", b"{\"body\": \"x\"}\n");
        assert!(read_documents(&schema).unwrap_err().to_string().contains("no string field `text`"));
        let missing = PathBuf::from("/nonexistent/jetc.txt");
        assert!(list_files(&[missing]).unwrap_err().to_string().contains("no such file"));
        let short = tmp("short.txt", b"ab");
        assert!(pack(&[short], &chars, None, 8, 0, 0).unwrap_err().to_string().contains("not one training window"));
    }
}
