#!/usr/bin/env python3
"""Build jetc's offline training corpus from Debian packages (no install: `apt-get download`
+ `dpkg-deb -x`), as JSONL documents {"text", "source", "path"}:

    <out>/train.jsonl     the training documents
    <out>/heldout.jsonl   documents held out (by a hash of their path: never in train.jsonl)
    <out>/ci.jsonl        a small slice of train.jsonl (~200 KB) for quick runs and tests
    <out>/sources.json    every package: version, licence, files, documents, bytes

Sources (real English prose and technical text; licences as Debian records them):
    linux-doc-6.1      the kernel's Documentation/**/*.rst (gzipped in the package)  GPL-2.0
    python3.11-doc     the Python 3.11 documentation sources (html/_sources)     PSF-2.0
    debian-handbook    The Debian Administrator's Handbook, English HTML as text  GPL-2.0+ or CC-BY-SA-3.0

Documents are whole files, whitespace-normalized; exact duplicates (by SHA-256 of the
normalized text) and files under 200 characters are dropped. About 3% of documents are
held out, chosen by the SHA-256 of source + path, so the split is the same on every machine.

The downloads are cached in <out>/debs and the result is reused: a second run with the
output present does nothing (offline, instant). `--force` rebuilds.

    python3 scripts/build_corpus.py                 # -> ~/.cache/jetc/corpus
    python3 scripts/build_corpus.py --out DIR --force
"""
import argparse
import glob
import gzip
import hashlib
import html.parser
import json
import os
import re
import shutil
import subprocess
import sys

SOURCES = [
    {"package": "linux-doc-6.1", "licence": "GPL-2.0", "glob": "usr/share/doc/linux-doc-6.1/Documentation/**/*.rst.gz", "kind": "rst"},
    {"package": "python3.11-doc", "licence": "PSF-2.0", "glob": "usr/share/doc/python3.11/html/_sources/**/*.rst.txt", "kind": "rst"},
    {"package": "debian-handbook", "licence": "GPL-2.0+ or CC-BY-SA-3.0", "glob": "usr/share/doc/debian-handbook/html/en-US/*.html", "kind": "html"},
]
HELDOUT_PER_MILLE = 30
CI_BYTES = 200_000
MIN_CHARS = 200


class _Text(html.parser.HTMLParser):
    """The visible text of an HTML page, one line per block element."""

    BLOCKS = {"p", "div", "br", "li", "h1", "h2", "h3", "h4", "h5", "pre", "tr", "dt", "dd", "title"}

    def __init__(self):
        super().__init__()
        self.parts, self.skip = [], 0

    def handle_starttag(self, tag, attrs):
        if tag in ("script", "style"):
            self.skip += 1
        elif tag in self.BLOCKS:
            self.parts.append("\n")

    def handle_endtag(self, tag):
        if tag in ("script", "style") and self.skip:
            self.skip -= 1

    def handle_data(self, data):
        if not self.skip:
            self.parts.append(data)


def html_text(raw):
    p = _Text()
    p.feed(raw)
    return "".join(p.parts)


def normalize(text):
    lines = [re.sub(r"[ \t]+", " ", l).rstrip() for l in text.splitlines()]
    text = "\n".join(lines)
    return re.sub(r"\n{3,}", "\n\n", text).strip()


def download(package, debs):
    """The .deb of `package` in `debs`, fetched with apt-get download (each listed version
    in turn: a mirror may lack the newest)."""
    have = glob.glob(os.path.join(debs, f"{package}_*.deb"))
    if have:
        return have[0]
    os.makedirs(debs, exist_ok=True)
    versions = subprocess.run(["apt-cache", "madison", package], capture_output=True, text=True).stdout
    tried = []
    for line in versions.splitlines():
        v = line.split("|")[1].strip()
        if v in tried:
            continue
        tried.append(v)
        r = subprocess.run(["apt-get", "download", f"{package}={v}"], cwd=debs, capture_output=True, text=True)
        have = glob.glob(os.path.join(debs, f"{package}_*.deb"))
        if r.returncode == 0 and have:
            return have[0]
    sys.exit(f"build_corpus: could not download {package} (tried {tried or 'no version: apt-get update?'})")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default=os.path.expanduser("~/.cache/jetc/corpus"))
    ap.add_argument("--force", action="store_true")
    a = ap.parse_args()
    done = os.path.join(a.out, "sources.json")
    if os.path.exists(done) and not a.force:
        print(f"corpus already built: {a.out}")
        return
    debs, root = os.path.join(a.out, "debs"), os.path.join(a.out, "extract")
    seen, records, train, held = set(), [], [], []
    for src in SOURCES:
        deb = download(src["package"], debs)
        version = os.path.basename(deb).split("_")[1]
        dest = os.path.join(root, src["package"])
        shutil.rmtree(dest, ignore_errors=True)
        os.makedirs(dest, exist_ok=True)
        subprocess.run(["dpkg-deb", "-x", deb, dest], check=True)
        files = sorted(glob.glob(os.path.join(dest, src["glob"]), recursive=True))
        n_docs = n_bytes = n_dup = 0
        for f in files:
            raw = gzip.open(f, "rt", errors="replace").read() if f.endswith(".gz") else open(f, encoding="utf-8", errors="replace").read()
            text = normalize(html_text(raw) if src["kind"] == "html" else raw)
            if len(text) < MIN_CHARS:
                continue
            digest = hashlib.sha256(text.encode()).hexdigest()
            if digest in seen:
                n_dup += 1
                continue
            seen.add(digest)
            rel = os.path.relpath(f, dest)
            doc = {"text": text, "source": src["package"], "path": rel}
            pick = int(hashlib.sha256(f"{src['package']}/{rel}".encode()).hexdigest()[:8], 16) % 1000
            (held if pick < HELDOUT_PER_MILLE else train).append(doc)
            n_docs += 1
            n_bytes += len(text.encode())
        if n_docs == 0:
            sys.exit(f"build_corpus: {src['package']} {version}: no documents under {src['glob']}")
        records.append({"package": src["package"], "version": version, "licence": src["licence"], "files": len(files),
                        "documents": n_docs, "duplicates_dropped": n_dup, "bytes": n_bytes})
        print(f"{src['package']} {version}: {n_docs} documents, {n_bytes / 1e6:.1f} MB ({n_dup} duplicates dropped)")
    shutil.rmtree(root, ignore_errors=True)
    os.makedirs(a.out, exist_ok=True)

    def write(name, docs):
        with open(os.path.join(a.out, name), "w", encoding="utf-8") as f:
            for d in docs:
                f.write(json.dumps(d, ensure_ascii=False) + "\n")

    write("train.jsonl", train)
    write("heldout.jsonl", held)
    ci, size = [], 0
    for d in train[:: max(1, len(train) // 200)]:
        if size >= CI_BYTES:
            break
        ci.append(d)
        size += len(d["text"].encode())
    write("ci.jsonl", ci)
    summary = {"sources": records, "train_documents": len(train), "heldout_documents": len(held), "ci_documents": len(ci),
               "heldout_per_mille": HELDOUT_PER_MILLE, "min_chars": MIN_CHARS}
    with open(done, "w") as f:
        json.dump(summary, f, indent=2)
    print(f"train {len(train)} / held-out {len(held)} / ci {len(ci)} documents -> {a.out}")


if __name__ == "__main__":
    main()
