#!/usr/bin/env python3
"""Generate the Parquet fixtures of jetc's training-data reader (train/tests/data_files.rs),
written by pyarrow the way Hugging Face datasets writes its shards, with the same texts as
JSONL beside them (the gold the reader is checked against).

Setup and run (pyarrow only; a few seconds):

    python3 -m venv /tmp/venv-pyarrow && /tmp/venv-pyarrow/bin/pip install pyarrow
    /tmp/venv-pyarrow/bin/python scripts/make_parquet_fixtures.py --out train/tests/fixtures/data

Files:
    corpus.jsonl               the texts, one {"text": ...} per line (gold)
    corpus-snappy.parquet      id, text, source; snappy (HF's default); 2 row groups
    corpus-zstd.parquet        the same, zstd, `text` as large_string, no dictionary
    corpus-gzip.parquet        the same, gzip, data page v2, 3 rows per group
    content-column.parquet     the texts in a column `content` (no `text`)
    null-text.parquet          row 3's text is null
    int-text.parquet           `text` is an int64 column
"""
import argparse
import json
import os

import pyarrow as pa
import pyarrow.parquet as pq

TEXTS = [
    "The quick brown fox jumps over the lazy dog.",
    "Zwölf Boxkämpfer jagen Viktor quer über den großen Sylter Deich.",
    "line one\nline two\n\n  indented\tand tabbed",
    "",
    "数学は美しい。 emoji: 🦀 and a \"quoted\" word, plus a backslash \\ too.",
    "short",
    "A longer paragraph " * 20,
]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", required=True)
    a = ap.parse_args()
    os.makedirs(a.out, exist_ok=True)
    with open(os.path.join(a.out, "corpus.jsonl"), "w", encoding="utf-8") as f:
        for t in TEXTS:
            f.write(json.dumps({"text": t}, ensure_ascii=False) + "\n")
    ids = pa.array(range(len(TEXTS)), pa.int64())
    source = pa.array([f"doc-{i}" for i in range(len(TEXTS))])
    table = pa.table({"id": ids, "text": pa.array(TEXTS), "source": source})
    pq.write_table(table, os.path.join(a.out, "corpus-snappy.parquet"), compression="snappy", row_group_size=4)
    large = pa.table({"id": ids, "source": source, "text": pa.array(TEXTS, pa.large_string())})
    pq.write_table(large, os.path.join(a.out, "corpus-zstd.parquet"), compression="zstd", use_dictionary=False)
    pq.write_table(table, os.path.join(a.out, "corpus-gzip.parquet"), compression="gzip",
                   row_group_size=3, data_page_version="2.0")
    pq.write_table(pa.table({"content": pa.array(TEXTS)}), os.path.join(a.out, "content-column.parquet"))
    nulls = [t if i != 2 else None for i, t in enumerate(TEXTS)]
    pq.write_table(pa.table({"text": pa.array(nulls)}), os.path.join(a.out, "null-text.parquet"))
    pq.write_table(pa.table({"text": pa.array([1, 2, 3], pa.int64())}), os.path.join(a.out, "int-text.parquet"))


if __name__ == "__main__":
    main()
