#!/usr/bin/env python3
"""Greedy generation throughput of llama.cpp (through PyPI's llama-cpp-python) on a GGUF, to
compare with `jetc generate --json` (same file, same prompt ids, same number of new tokens,
batch 1, same threads).

Usage: bench_llama_decode.py MODEL.gguf --ids 1,2,3 [--tokens 128] [--threads 2]
Prefill evaluates the prompt ids in one batch; each decode step evaluates the argmax token of
the previous logits (end-of-sequence is not special: exactly --tokens ids come out). Prints
one JSON object in the shape of bench_ort_decode.py's: load, prefill and decode seconds and
tokens/s, peak RSS, and the generated ids (to check they are jetc's).
"""
import argparse
import time

import llama_cpp
import numpy as np
from llama_cpp import Llama

from decode_report import print_report


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("model")
    ap.add_argument("--ids", required=True, help="comma-separated prompt token ids")
    ap.add_argument("--tokens", type=int, default=128)
    ap.add_argument("--threads", type=int, default=2)
    a = ap.parse_args()
    prompt = [int(x) for x in a.ids.split(",")]
    t0 = time.perf_counter()
    llm = Llama(
        model_path=a.model,
        n_ctx=len(prompt) + a.tokens + 8,
        n_batch=max(len(prompt), 8),
        n_threads=a.threads,
        n_threads_batch=a.threads,
        use_mmap=True,
        verbose=False,
    )
    load = time.perf_counter() - t0

    vocab = llm.n_vocab()

    def last_argmax() -> int:
        # The last evaluated token's logits, straight from llama.cpp's buffer (the wrapper
        # keeps them in `scores` only with logits_all).
        ptr = llama_cpp.llama_get_logits_ith(llm._ctx.ctx, -1)
        return int(np.argmax(np.ctypeslib.as_array(ptr, shape=(vocab,))))

    t0 = time.perf_counter()
    llm.eval(prompt)
    nxt = last_argmax()
    prefill = time.perf_counter() - t0
    ids = [nxt]
    t0 = time.perf_counter()
    while len(ids) < a.tokens:
        llm.eval([nxt])
        nxt = last_argmax()
        ids.append(nxt)
    decode = time.perf_counter() - t0
    print_report(load, len(prompt), prefill, decode, ids)


if __name__ == "__main__":
    main()
