//! Training text: files and directories of `.txt`/`.md`, and JSONL with a `text` field,
//! tokenized with the model's own tokenizer, EOS between documents, packed into windows of
//! `seq_len` tokens, split into train and held-out windows, and shuffled by seed.
//!
//! A missing, empty, non-UTF-8 or wrong-schema file is an error naming the file; nothing is
//! skipped silently.
use std::path::{Path, PathBuf};

use rand::seq::SliceRandom;
use rand::SeedableRng;

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

/// Packed token windows of one corpus.
#[derive(Clone, Debug, PartialEq)]
pub struct Windows {
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
) -> Result<Windows> {
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
    Ok(Windows { seq_len, train, heldout, tokens, documents })
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
