#!/usr/bin/env python3
"""Greedy decode of one GGUF by jetc, llama.cpp and onnxruntime, side by side, in one run.

Usage:
  bench_decode_peers.py MODEL.gguf [--jetc target/release/jetc] [--prompt TEXT]
      [--tokens 128] [--threads 2] [--rounds 3] [--ort-python .venv/bin/python]
      [--llama-python ~/.cache/jetc/venv-llama/bin/python] [--onnx DIR/model.onnx] [--json]

Each round runs every engine once, in turn, as its own process (so that each one's peak RSS
is its own): `jetc generate` with the weights in their stored precision (the default), with
`--weights f32` and with `--int8-dot` (8-bit activations, integer dots, as llama.cpp), llama.cpp through llama-cpp-python (bench_llama_decode.py) on the same
file, and onnxruntime (bench_ort_decode.py) on `jetc export` of the model (f32 weights; made
once, or given with --onnx). All get the prompt ids jetc's tokenizer made, the same number of
new tokens and threads, batch 1. Prints a table of medians over the rounds with the ratio of
jetc's decode tokens/s to each engine's, and whether each engine's greedy ids equal jetc's
f32 path. An engine whose interpreter lacks its package is reported as skipped.
"""
import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent


def run_json(cmd, env=None):
    out = subprocess.run(cmd, capture_output=True, text=True, env=env)
    if out.returncode != 0:
        raise RuntimeError(f"{' '.join(map(str, cmd))} failed ({out.returncode}):\n{out.stderr[-2000:]}")
    return json.loads(out.stdout)


def can_import(python, module):
    return subprocess.run([python, "-c", f"import {module}"], capture_output=True).returncode == 0


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("model")
    ap.add_argument("--jetc", default=str(HERE.parent / "target/release/jetc"))
    ap.add_argument("--prompt", default="The history of the city of Rome begins")
    ap.add_argument("--tokens", type=int, default=128)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--ort-python", default=str(HERE.parent / ".venv/bin/python"))
    ap.add_argument("--llama-python", default=os.path.expanduser("~/.cache/jetc/venv-llama/bin/python"))
    ap.add_argument("--onnx", help="an ONNX export of the model (default: made with `jetc export`)")
    ap.add_argument("--json", action="store_true")
    a = ap.parse_args()

    env = dict(os.environ, RAYON_NUM_THREADS=str(a.threads))
    jetc = [a.jetc, "generate", a.model, "--prompt", a.prompt, "--max-tokens", str(a.tokens), "--json"]
    first = run_json(jetc, env)
    ids = ",".join(map(str, first["prompt_ids"]))

    engines = {
        "jetc (stored weights)": jetc,
        "jetc (--weights f32)": jetc + ["--weights", "f32"],
        "jetc (--int8-dot)": jetc + ["--int8-dot"],
    }
    skipped = {}
    if os.path.exists(a.llama_python) and can_import(a.llama_python, "llama_cpp"):
        engines["llama.cpp"] = [a.llama_python, str(HERE / "bench_llama_decode.py"), a.model, "--ids", ids,
                                "--tokens", str(a.tokens), "--threads", str(a.threads)]
    else:
        skipped["llama.cpp"] = f"{a.llama_python} cannot import llama_cpp"
    tmp = tempfile.TemporaryDirectory()
    if os.path.exists(a.ort_python) and can_import(a.ort_python, "onnxruntime"):
        onnx = a.onnx
        if onnx is None:
            onnx = os.path.join(tmp.name, "model.onnx")
            subprocess.run([a.jetc, "export", a.model, "-o", onnx, "--external-data"], check=True, capture_output=True)
        engines["onnxruntime"] = [a.ort_python, str(HERE / "bench_ort_decode.py"), onnx, "--ids", ids,
                                  "--tokens", str(a.tokens), "--threads", str(a.threads)]
    else:
        skipped["onnxruntime"] = f"{a.ort_python} cannot import onnxruntime"

    results = {name: [] for name in engines}
    for r in range(a.rounds):
        for name, cmd in engines.items():
            res = run_json(cmd, env)
            results[name].append(res)
            print(f"round {r + 1}/{a.rounds} {name}: decode {res['decode_tokens_per_s']:.1f} tok/s", file=sys.stderr)

    reference = results["jetc (--weights f32)"][0]["ids"]
    ours = statistics.median(x["decode_tokens_per_s"] for x in results["jetc (stored weights)"])
    rows = []
    for name, runs in results.items():
        dec = statistics.median(x["decode_tokens_per_s"] for x in runs)
        rows.append({
            "engine": name,
            "rounds": len(runs),
            "decode_tokens_per_s": dec,
            "decode_min": min(x["decode_tokens_per_s"] for x in runs),
            "decode_max": max(x["decode_tokens_per_s"] for x in runs),
            "prefill_tokens_per_s": statistics.median(x["prefill_tokens_per_s"] for x in runs),
            "peak_rss_bytes": max(x.get("peak_rss_bytes", 0) for x in runs),
            "jetc_over_this": ours / dec if dec > 0 else float("nan"),
            "same_ids_as_jetc_f32": runs[0]["ids"][: len(reference)] == reference,
            "first_difference": next((i for i, (x, y) in enumerate(zip(runs[0]["ids"], reference)) if x != y), None),
        })
    summary = {
        "model": a.model,
        "model_bytes": os.path.getsize(a.model),
        "prompt_tokens": len(first["prompt_ids"]),
        "new_tokens": a.tokens,
        "threads": a.threads,
        "engines": rows,
        "skipped": skipped,
    }
    if a.json:
        print(json.dumps(summary, indent=2))
        return
    mb = 1 / 1e6
    print(f"{a.model} ({summary['model_bytes'] * mb:.0f} MB), {summary['prompt_tokens']} prompt tokens, "
          f"{a.tokens} new, {a.threads} threads, medians of {a.rounds} rounds")
    print("| engine | decode tok/s median [min, max] | prefill tok/s | peak RSS MB | jetc / engine | greedy ids = jetc f32 |")
    print("|---|---|---|---|---|---|")
    for x in rows:
        same = "yes" if x["same_ids_as_jetc_f32"] else f"no (from token {x['first_difference']})"
        print(f"| {x['engine']} | {x['decode_tokens_per_s']:.1f} [{x['decode_min']:.1f}, {x['decode_max']:.1f}] | "
              f"{x['prefill_tokens_per_s']:.0f} | {x['peak_rss_bytes'] * mb:.0f} | {x['jetc_over_this']:.2f} | {same} |")
    for name, why in skipped.items():
        print(f"skipped {name}: {why}")


if __name__ == "__main__":
    main()
