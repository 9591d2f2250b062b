#!/usr/bin/env bash
# Alternates jetc's prefill benchmark and onnxruntime's on one model, ROUNDS times, and
# prints each engine's median, min and max tokens/s. On a shared machine, whose speed drifts
# between minutes, only figures taken in alternation like this compare.
#   bash scripts/bench_prefill_ab.sh MODEL.onnx [ROUNDS] [TOKENS] [JETC_PREFILL_BINARY...]
# Binaries default to target/release/examples/prefill (cargo build --release -p jetc
# --examples); onnxruntime runs from .venv (scripts/requirements-test.txt), 2 threads.
set -euo pipefail
cd "$(dirname "$0")/.."
model=${1:?usage: bench_prefill_ab.sh MODEL.onnx [ROUNDS] [TOKENS] [BINARY...]}
rounds=${2:-5}
tokens=${3:-512}
shift $(( $# < 3 ? $# : 3 ))
bins=("$@")
[ ${#bins[@]} -gt 0 ] || bins=(target/release/examples/prefill)
engines=("${bins[@]}" ort)
declare -A got
for _ in $(seq "$rounds"); do
    for e in "${engines[@]}"; do
        if [ "$e" = ort ]; then
            v=$(.venv/bin/python scripts/bench_ort.py "$model" --tokens "$tokens" --runs 3 --threads 2 | awk -F'|' '{print $7}' | awk '{print $1}')
        else
            v=$("$e" "$model" --tokens "$tokens" --runs 3 | tail -1 | awk -F'|' '{print $8}' | tr -d ' ')
        fi
        got[$e]="${got[$e]:-} $v"
    done
done
for e in "${engines[@]}"; do
    echo "$e: $(echo ${got[$e]} | tr ' ' '\n' | sort -n | awk '{a[NR]=$1} END {print "median", a[int((NR+1)/2)], "min", a[1], "max", a[NR], "tok/s over", NR, "rounds"}')"
done
