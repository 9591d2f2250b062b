#!/usr/bin/env python3
"""Prefill throughput of onnxruntime on a decoder, to compare with jetc's examples/prefill.rs.

Usage: bench_ort.py MODEL.onnx [--tokens 512] [--batch 1] [--runs 3] [--threads 2] [--opt all|none] [--profile]
Feeds random token ids, positions 0..T-1, an all-ones mask and empty past caches.
`--profile` also prints onnxruntime's time per op type over the timed runs (its own profiler),
to set beside jetc's `JETC_PROFILE=1` table.
"""
import argparse
import collections
import json
import os
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
    ap.add_argument("--profile", action="store_true", help="print the time per op type")
    a = ap.parse_args()
    so = ort.SessionOptions()
    if a.profile:
        so.enable_profiling = True
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
    if a.profile:
        print_profile(sess.end_profiling(), a.runs)


def print_profile(path: str, runs: int) -> None:
    """Milliseconds per op type per run, from onnxruntime's profile (Chrome trace JSON), over
    the runs after the first (which also sizes onnxruntime's memory arena)."""
    with open(path) as f:
        events = json.load(f)
    os.remove(path)
    spans = sorted((e["ts"], e["ts"] + e["dur"]) for e in events if e.get("name") == "model_run")
    kept = spans[1:] if len(spans) > 1 else spans
    runs = len(kept)
    per_op = collections.defaultdict(float)
    for e in events:
        if e.get("cat") == "Node" and e.get("name", "").endswith("_kernel_time"):
            if any(t0 <= e["ts"] <= t1 for t0, t1 in kept):
                per_op[e.get("args", {}).get("op_name", "?")] += e.get("dur", 0) / 1000.0
    total = sum(per_op.values())
    print("| op | ms per run | share |")
    print("|---|---:|---:|")
    for op, ms in sorted(per_op.items(), key=lambda kv: -kv[1]):
        print(f"| {op} | {ms / runs:.1f} | {100 * ms / total:.1f}% |")
    print(f"| total | {total / runs:.1f} | |")


if __name__ == "__main__":
    main()
