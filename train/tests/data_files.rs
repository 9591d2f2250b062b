//! The training-data readers on files written by another implementation: Parquet shards
//! written by pyarrow (scripts/make_parquet_fixtures.py) in every layout HF datasets uses,
//! checked row by row against the JSONL that the same script wrote from the same texts.
use std::path::PathBuf;

use jetc_train::data::{list_files, read_documents, tokenize};

fn fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/data").join(name)
}

#[test]
fn parquet_rows_equal_the_jsonl_gold() {
    let gold = read_documents(&fixture("corpus.jsonl"), "text").unwrap();
    assert_eq!(gold.len(), 7);
    assert!(gold.iter().any(|d| d.is_empty()) && gold.iter().any(|d| d.contains('🦀')));
    for name in ["corpus-snappy.parquet", "corpus-zstd.parquet", "corpus-gzip.parquet"] {
        assert_eq!(read_documents(&fixture(name), "text").unwrap(), gold, "{name}");
    }
    assert_eq!(read_documents(&fixture("content-column.parquet"), "content").unwrap(), gold);
}

#[test]
fn a_directory_mixes_parquet_and_text_in_name_order() {
    let files = list_files(&[fixture("")]).unwrap();
    let names: Vec<String> = files.iter().map(|f| f.file_name().unwrap().to_string_lossy().into_owned()).collect();
    assert_eq!(names.first().map(String::as_str), Some("content-column.parquet"));
    assert!(names.contains(&"corpus.jsonl".to_string()) && names.contains(&"null-text.parquet".to_string()));
    // Byte-level "tokenizer": the stream is every document's bytes, EOS after each.
    let bytes = |s: &str| Ok(s.bytes().map(u32::from).collect());
    let (a, docs_a) = tokenize(&[fixture("corpus-snappy.parquet")], "text", &bytes, Some(999)).unwrap();
    let (b, docs_b) = tokenize(&[fixture("corpus.jsonl")], "text", &bytes, Some(999)).unwrap();
    assert_eq!((a, docs_a), (b, docs_b));
}

#[test]
fn bad_parquet_is_named_with_the_row_or_column() {
    let e = read_documents(&fixture("null-text.parquet"), "text").unwrap_err().to_string();
    assert!(e.contains("null-text.parquet") && e.contains("row 2 (from 0): `text` is null"), "{e}");
    let e = read_documents(&fixture("content-column.parquet"), "text").unwrap_err().to_string();
    assert!(e.contains("no column `text`") && e.contains("[\"content\"]") && e.contains("--text-field"), "{e}");
    let e = read_documents(&fixture("int-text.parquet"), "text").unwrap_err().to_string();
    assert!(e.contains("column `text` is INT64, not a string column"), "{e}");
    let fake = std::env::temp_dir().join(format!("jetc-fake-{}.parquet", std::process::id()));
    std::fs::write(&fake, b"this is not parquet at all").unwrap();
    let e = read_documents(&fake, "text").unwrap_err().to_string();
    assert!(e.contains("jetc-fake") && e.contains("not a readable Parquet file"), "{e}");
    let _ = std::fs::remove_file(&fake);
}
