#!/usr/bin/env python3
"""Greedy generation throughput of onnxruntime on a decoder with a KV cache, to compare with
`jetc generate --json` (same prompt ids, same number of new tokens, batch 1).

Usage: bench_ort_decode.py MODEL.onnx --ids 1,2,3 [--tokens 128] [--threads 2] [--opt all|none]
Prefill runs the prompt with empty caches (positions 0..T-1, an all-ones mask if the model
takes one), then each step feeds the argmax token and the `present*` outputs back as the
`past*` inputs. Prints one JSON object: prefill and decode seconds and tokens/s, and the
generated ids (to check they are jetc's).
"""
import argparse
import time

import numpy as np
import onnxruntime as ort

from decode_report import print_report


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("model")
    ap.add_argument("--ids", required=True, help="comma-separated prompt token ids")
    ap.add_argument("--tokens", type=int, default=128)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--opt", choices=["all", "none"], default="all")
    a = ap.parse_args()
    so = ort.SessionOptions()
    so.intra_op_num_threads = a.threads
    so.graph_optimization_level = (
        ort.GraphOptimizationLevel.ORT_ENABLE_ALL if a.opt == "all" else ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    )
    t0 = time.perf_counter()
    sess = ort.InferenceSession(a.model, so, providers=["CPUExecutionProvider"])
    load = time.perf_counter() - t0
    inputs = {i.name: i for i in sess.get_inputs()}
    outputs = [o.name for o in sess.get_outputs()]
    pasts = [n for n in inputs if n.startswith("past")]

    def past_of(out):
        rest = out[len("present"):]
        for cand in ("past" + rest, "past_key_values" + rest):
            if cand in inputs:
                return cand
        return None

    caches = {}
    for n in pasts:
        dims = [d if isinstance(d, int) else (1 if i == 0 else 0) for i, d in enumerate(inputs[n].shape)]
        caches[n] = np.zeros(dims, dtype=np.float32)

    def step(ids, start):
        feed = dict(caches)
        feed["input_ids"] = np.array([ids], dtype=np.int64)
        if "position_ids" in inputs:
            feed["position_ids"] = np.arange(start, start + len(ids), dtype=np.int64)[None]
        if "attention_mask" in inputs:
            feed["attention_mask"] = np.ones((1, start + len(ids)), dtype=np.int64)
        res = dict(zip(outputs, sess.run(None, feed)))
        for o, v in res.items():
            p = past_of(o) if o.startswith("present") else None
            if p:
                caches[p] = v
        return int(np.argmax(res["logits"][0, -1]))

    prompt = [int(x) for x in a.ids.split(",")]
    t0 = time.perf_counter()
    nxt = step(prompt, 0)
    prefill = time.perf_counter() - t0
    ids = [nxt]
    t0 = time.perf_counter()
    while len(ids) < a.tokens:
        nxt = step([nxt], len(prompt) + len(ids) - 1)
        ids.append(nxt)
    decode = time.perf_counter() - t0
    print_report(load, len(prompt), prefill, decode, ids)


if __name__ == "__main__":
    main()
