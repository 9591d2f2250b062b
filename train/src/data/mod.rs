//! Training text: files and directories of `.txt`/`.md`/`.rst`, JSONL with a text field, and
//! Parquet with a text column (what Hugging Face datasets publish), tokenized with the model's
//! own tokenizer, EOS between documents, packed into windows of `seq_len` tokens, split into
//! train and held-out windows, and shuffled by seed.
//!
//! - [`list_files`] and [`for_each_document`]: which files, and the documents of each;
//! - [`parquet`]: the Parquet reader;
//! - [`cache`]: the token stream, tokenized once into a memory-mapped cache;
//! - [`windows`]: the stream cut into train and held-out windows.
//!
//! The text field (JSONL) or column (Parquet) is `text` unless the caller names another. A
//! missing, empty, non-UTF-8 or wrong-schema file, or a document that is not a string (a
//! null, a number), is an error naming the file and the line or row; nothing is skipped
//! silently.
pub mod cache;
pub mod parquet;
pub mod windows;

use std::path::{Path, PathBuf};

pub use cache::{cache_key, tokenize, tokenize_cached, TokenStream};
pub use windows::{heldout_windows, windows, Windows};

use crate::error::{Result, TrainError};

/// The field of a JSONL line, or the column of a Parquet file, that holds the text.
pub const DEFAULT_TEXT_FIELD: &str = "text";

pub(crate) fn err(path: &Path, msg: impl std::fmt::Display) -> TrainError {
    TrainError::Other(format!("{}: {msg}", path.display()))
}

/// The files under `paths` (directories walked in name order), training-data ones only.
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
                return Err(err(p, "the directory holds no .txt, .md, .rst, .jsonl or .parquet file"));
            }
            out.extend(found);
        } else if p.is_file() {
            if kind(p).is_none() {
                return Err(err(p, "not a training data file (.txt, .md, .rst, .jsonl or .parquet with a text field)"));
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
    Parquet,
}

fn kind(p: &Path) -> Option<Kind> {
    match p.extension()?.to_str()? {
        "txt" | "md" | "rst" => Some(Kind::Text),
        "jsonl" => Some(Kind::Jsonl),
        "parquet" => Some(Kind::Parquet),
        _ => None,
    }
}

/// Calls `f` with each document of one file, in order: the whole file for text, one line for
/// JSONL (its `field`), one row for Parquet (its column `field`).
pub fn for_each_document(path: &Path, field: &str, f: &mut dyn FnMut(&str) -> Result<()>) -> Result<()> {
    if kind(path) == Some(Kind::Parquet) {
        return parquet::for_each_text(path, field, f);
    }
    let bytes = std::fs::read(path).map_err(|e| err(path, e))?;
    if bytes.iter().all(|b| b.is_ascii_whitespace()) {
        return Err(err(path, "the file is empty"));
    }
    let text = String::from_utf8(bytes).map_err(|e| err(path, format!("not UTF-8 text (byte {})", e.utf8_error().valid_up_to())))?;
    if kind(path) != Some(Kind::Jsonl) {
        return f(&text);
    }
    for (i, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let v: serde_json::Value = serde_json::from_str(line).map_err(|e| err(path, format!("line {}: not JSON: {e}", i + 1)))?;
        let t = v.get(field).and_then(|t| t.as_str()).ok_or_else(|| err(path, format!("line {}: no string field `{field}`", i + 1)))?;
        f(t)?;
    }
    Ok(())
}

/// The documents of one file (see [`for_each_document`]).
pub fn read_documents(path: &Path, field: &str) -> Result<Vec<String>> {
    let mut docs = Vec::new();
    for_each_document(path, field, &mut |d| {
        docs.push(d.to_string());
        Ok(())
    })?;
    Ok(docs)
}

#[cfg(test)]
mod tests {
    use super::*;

    pub(crate) fn tmp(name: &str, bytes: &[u8]) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("jetc-data-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let p = dir.join(name);
        std::fs::write(&p, bytes).unwrap();
        p
    }

    #[test]
    fn bad_files_are_named() {
        let empty = tmp("empty.txt", b"  \n");
        assert!(read_documents(&empty, "text").unwrap_err().to_string().contains("empty.txt: the file is empty"));
        let bin = tmp("bin.txt", &[0x66, 0xff, 0xfe, 0x00]);
        assert!(read_documents(&bin, "text").unwrap_err().to_string().contains("not UTF-8"));
        let schema = tmp("s.jsonl", b"{\"body\": \"x\"}\n");
        assert!(read_documents(&schema, "text").unwrap_err().to_string().contains("line 1: no string field `text`"));
        assert_eq!(read_documents(&schema, "body").unwrap(), vec!["x".to_string()]);
        let missing = PathBuf::from("/nonexistent/jetc.txt");
        assert!(list_files(&[missing]).unwrap_err().to_string().contains("no such file"));
        let other = tmp("data.csv", b"a,b\n");
        assert!(list_files(&[other]).unwrap_err().to_string().contains("not a training data file"));
    }
}
