#!/usr/bin/env python3
"""Self-distillation chat data: the teacher's own answers to chat prompts drawn from the corpus.

The training corpus (scripts/build_corpus.py) is documentation prose: it never shows a model
the chat template, so a student distilled on it alone learns nothing about what the teacher
does after "<|im_start|>assistant". This script asks the teacher (any model `jetc generate`
runs, with a chat template) questions built from the corpus' own section titles and
paragraphs, and writes each whole exchange (the rendered template, the answer, the end of
turn) as one JSONL document that `jetc distill --data` trains on beside the prose.

    python3 scripts/build_chat_corpus.py MODEL.gguf [--prompts 64] [--max-tokens 128]
        [--corpus ~/.cache/jetc/corpus] [--out CORPUS/chat.jsonl] [--jetc target/release/jetc]

Prompts come from the train split only, so the held-out split stays unseen. Generation is
greedy and the prompts are drawn with a fixed seed, so a rebuild gives the same file. Each
answer is appended as it comes; a rerun with the same settings reuses what is there and
generates only what is missing (an interrupted build resumes).

Output, one JSON object per line: text (the transcript), prompt, source (the corpus
document's package and path), stop (eos or max_tokens), generated_tokens. A
chat.meta.json beside it records the model, the settings and the counts.
"""
import argparse
import hashlib
import json
import os
import random
import re
import subprocess
import sys
import time

TEMPLATES_TITLE = [
    "What is {title}?",
    "Explain {title} in simple terms.",
    "Write a short paragraph about {title}.",
    "What should a beginner know about {title}?",
]
TEMPLATES_TEXT = [
    "Summarize the following text in two sentences.\n\n{text}",
    "What is the main point of this passage?\n\n{text}",
]
# Titles too generic to ask about on their own.
GENERIC = {"description", "introduction", "overview", "example", "examples", "name", "synopsis", "notes", "note",
           "see also", "references", "return value", "errors", "usage", "summary", "contents", "todo", "authors",
           "credits", "license", "prev", "next", "arguments", "parameters", "options", "background"}
UNDERLINE = re.compile(r"^([=\-~^*#+])\1{2,}\s*$")
NUMBERED_TITLE = re.compile(r"^\d+(\.\d+)*\.?\s+\S")


def english(s):
    """Mostly ASCII: the corpus also holds the kernel documentation's translations."""
    return sum(c.isascii() for c in s) >= 0.97 * len(s)


def titles_of(text):
    """Section titles: reStructuredText titles (a line over or under a run of =, -, ~...)
    and numbered headings (the handbook's "4.2.1. Booting and Starting the Installer")."""
    lines = [l.rstrip() for l in text.splitlines()]
    out = []
    for i, line in enumerate(lines):
        s = line.strip()
        if not s or UNDERLINE.match(s) or len(s) > 70 or len(s) < 4:
            continue
        below = lines[i + 1].strip() if i + 1 < len(lines) else ""
        if UNDERLINE.match(below) and len(below) >= len(s):
            out.append(s)
        elif NUMBERED_TITLE.match(s) and len(s.split()) <= 10:
            out.append(re.sub(r"^\d+(\.\d+)*\.?\s+", "", s).replace("\xa0", " ").strip())
    bad = re.compile(r"[`:_\\|<>{}\[\]]|^\.\.|SPDX")
    return [t for t in out if not bad.search(t) and re.search(r"[A-Za-z]{3}", t) and english(t) and t.lower() not in GENERIC]


def paragraphs_of(text):
    """Plain paragraphs of 200-700 characters: prose, not code, tables or markup."""
    out = []
    for p in re.split(r"\n\s*\n", text):
        p = " ".join(l.strip() for l in p.splitlines())
        if not (200 <= len(p) <= 700):
            continue
        letters = sum(c.isalpha() or c == " " for c in p)
        if letters / len(p) < 0.9 or not english(p) or p.startswith(("..", "::", "*", "|", "+")):
            continue
        out.append(p)
    return out


def draw_prompts(train_path, count, seed):
    docs = [json.loads(l) for l in open(train_path, encoding="utf-8")]
    rng = random.Random(seed)
    order = list(range(len(docs)))
    rng.shuffle(order)
    prompts = []
    for i in order:
        if len(prompts) >= count:
            break
        d = docs[i]
        source = f"{d.get('source', '?')}:{d.get('path', i)}"
        # Alternate the two kinds, so the set mixes questions and passage tasks.
        if len(prompts) % 2 == 0:
            titles = titles_of(d["text"])
            if titles:
                t = rng.choice(titles)
                prompts.append({"prompt": rng.choice(TEMPLATES_TITLE).format(title=t), "source": source})
        else:
            paras = paragraphs_of(d["text"])
            if paras:
                prompts.append({"prompt": rng.choice(TEMPLATES_TEXT).format(text=rng.choice(paras)), "source": source})
    return prompts


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("model")
    ap.add_argument("--corpus", default=os.path.expanduser("~/.cache/jetc/corpus"))
    ap.add_argument("--out")
    ap.add_argument("--prompts", type=int, default=64)
    ap.add_argument("--max-tokens", type=int, default=128)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--jetc", default=os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "target", "release", "jetc"))
    a = ap.parse_args()
    out = a.out or os.path.join(a.corpus, "chat.jsonl")
    train = os.path.join(a.corpus, "train.jsonl")
    if not os.path.isfile(train):
        sys.exit(f"{train}: no corpus there; run scripts/build_corpus.py first")
    if not os.access(a.jetc, os.X_OK):
        sys.exit(f"{a.jetc}: no jetc binary; run `cargo build --release -p jetc-cli` or give --jetc")
    model_id = f"{os.path.basename(a.model)}:{os.path.getsize(a.model)}"
    settings = {"model": model_id, "max_tokens": a.max_tokens, "seed": a.seed, "train_sha1": hashlib.sha1(open(train, "rb").read()).hexdigest()}
    meta_path = os.path.splitext(out)[0] + ".meta.json"
    done = []
    if os.path.isfile(out) and os.path.isfile(meta_path):
        meta = json.load(open(meta_path))
        if meta.get("settings") == settings:
            done = [json.loads(l) for l in open(out, encoding="utf-8") if l.strip()]
    prompts = draw_prompts(train, a.prompts, a.seed)
    have = {d["prompt"] for d in done}
    todo = [p for p in prompts if p["prompt"] not in have]
    if not todo:
        print(f"{out}: {len(done)} exchanges, up to date")
        return
    json.dump({"settings": settings}, open(meta_path, "w"), indent=1)
    mode = "a" if done else "w"
    t0 = time.time()
    tokens = 0
    with open(out, mode, encoding="utf-8") as f:
        for k, p in enumerate(todo):
            r = subprocess.run([a.jetc, "generate", a.model, "--chat", p["prompt"], "--max-tokens", str(a.max_tokens), "--json"],
                               capture_output=True, text=True)
            if r.returncode != 0:
                sys.exit(f"jetc generate failed on prompt {k} ({p['source']}): {r.stderr.strip()}")
            g = json.loads(r.stdout)
            if not g.get("transcript"):
                sys.exit(f"{a.jetc}: its --json output has no transcript (an older jetc?)")
            rec = {"text": g["transcript"], "prompt": p["prompt"], "source": p["source"], "stop": g["stop"], "generated_tokens": g["generated_tokens"]}
            f.write(json.dumps(rec, ensure_ascii=False) + "\n")
            f.flush()
            tokens += g["prompt_tokens"] + g["generated_tokens"]
            el = time.time() - t0
            print(f"[{len(done) + k + 1}/{len(prompts)}] {g['generated_tokens']} tokens ({g['stop']}), {tokens / el:.0f} tok/s overall, {el:.0f} s", file=sys.stderr)
    total = len(done) + len(todo)
    json.dump({"settings": settings, "exchanges": total, "prompts_drawn": len(prompts)}, open(meta_path, "w"), indent=1)
    print(f"{out}: {total} exchanges ({len(todo)} new, {tokens} tokens in {time.time() - t0:.0f} s)")


if __name__ == "__main__":
    main()
