#!/usr/bin/env python3
"""Prefill throughput of onnxruntime on a decoder, to compare with jetc's examples/prefill.rs.

Usage: bench_ort.py MODEL.onnx [--tokens 512] [--batch 1] [--runs 3] [--threads 2] [--opt all|none]
Feeds random token ids, positions 0..T-1, an all-ones mask and empty past caches.
"""
import argparse
import time

import numpy as np
import onnxruntime as ort


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("model")
    ap.add_argument("--tokens", type=int, default=512)
    ap.add_argument("--batch", type=int, default=1)
    ap.add_argument("--runs", type=int, default=3)
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
    rng = np.random.default_rng(0)
    feeds = {}
    for i in sess.get_inputs():
        dims = []
        for d in i.shape:
            if isinstance(d, int):
                dims.append(d)
            elif "past" in str(d):
                dims.append(0)
            elif "batch" in str(d):
                dims.append(a.batch)
            else:
                dims.append(a.tokens)
        if "int64" in i.type:
            if "position" in i.name:
                feeds[i.name] = np.tile(np.arange(a.tokens), (a.batch, 1)).astype(np.int64)
            elif "mask" in i.name:
                feeds[i.name] = np.ones(dims, np.int64)
            else:
                feeds[i.name] = rng.integers(0, 1000, dims).astype(np.int64)
        else:
            feeds[i.name] = np.zeros(dims, np.float32)
    times = []
    for _ in range(a.runs):
        t = time.perf_counter()
        sess.run(None, feeds)
        times.append(time.perf_counter() - t)
    med = sorted(times)[len(times) // 2]
    print(f"| onnxruntime {ort.__version__} opt={a.opt} threads={a.threads} | batch {a.batch} | tokens {a.tokens} "
          f"| load {load:.2f} s | median {med:.3f} s | {a.batch * a.tokens / med:.1f} tok/s |")


if __name__ == "__main__":
    main()
