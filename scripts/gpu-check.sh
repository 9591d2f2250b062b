#!/usr/bin/env bash
# One-call GPU check for a session that is lent the H200 (<= 8 minutes). Prepare here:
#   cargo build --release -p jetc-cli        # target/release/jetc, built on the CPU machine
#   mkdir -p .fla-wheels && pip download --no-deps -d .fla-wheels \
#       flash-linear-attention==0.6.0 fla-core==0.6.0         # pure-Python, for the peers
# then run on the device (carry the binary and the wheels):
#   run(command="bash scripts/gpu-check.sh", carry=["target/release/jetc", ".fla-wheels"], timeout_s=540)
# It writes under $OUT: nvidia-smi.txt, jetc-{2b,4b}.{txt,json} (every kernel vs the CPU
# reference on random inputs with NaN-poisoned outputs, then CUDA-event medians with an L2
# flush), peers.json (fla 0.6.0 Triton kernels and PyTorch, CUDA graphs) and table.md.
# Every step has its own timeout and the script goes on after a failure; the exit code is
# non-zero if any step failed.
set -uo pipefail
cd "$(dirname "$0")/.."
OUT="${OUT:-/tmp/jetc-gpu-check}"
mkdir -p "$OUT"
status=0
step() { # name, timeout seconds, command...
    local name="$1" t="$2"; shift 2
    echo "== $name" | tee -a "$OUT/log.txt"
    local s=$SECONDS
    timeout "$t" "$@" >>"$OUT/log.txt" 2>&1
    local rc=$?
    echo "== $name: rc=$rc in $((SECONDS - s)) s" | tee -a "$OUT/log.txt"
    [ "$rc" -eq 0 ] || status=1
}

nvidia-smi >"$OUT/nvidia-smi.txt" 2>&1 || true
export CUDA_HOME="${CUDA_HOME:-/usr/local/cuda}"
export JETC_KERNEL_CACHE="$OUT/kernel-cache"
export JETC_TUNING_DB="$OUT/tuning.json"
JETC=./target/release/jetc
if [ ! -x "$JETC" ]; then
    echo "target/release/jetc is missing: build it on the CPU machine and carry it" | tee -a "$OUT/log.txt"
    exit 1
fi

# 1. jetc: correctness vs the CPU reference + timing of every kernel instance.
step "jetc 2B" 200 "$JETC" gpu-bench jet-nemotron-2b --batch 1,8,64,256 --prefill-batch 1,8 --seq 4096 --json "$OUT/jetc-2b.json"
step "jetc 4B" 150 "$JETC" gpu-bench jet-nemotron-4b --batch 1,64,256 --prefill-batch 8 --seq 4096 --json "$OUT/jetc-4b.json"
cp "$OUT/log.txt" "$OUT/jetc.txt"

# 2. Peers: fla 0.6.0 (Triton) and PyTorch, CUDA graphs, same shapes.
if [ -d .fla-wheels ]; then
    step "install fla" 60 python3 -m pip install -q --no-deps --target "$OUT/pylib" .fla-wheels/*.whl
    export PYTHONPATH="$OUT/pylib${PYTHONPATH:+:$PYTHONPATH}"
else
    echo "no .fla-wheels: peers without fla" | tee -a "$OUT/log.txt"
fi
step "peers" 150 python3 scripts/gpu_peer_bench.py --out "$OUT/peers.json"

# 3. The table.
step "table" 20 python3 scripts/gpu_table.py "$OUT" --out "$OUT/table.md"
cat "$OUT/table.md" 2>/dev/null
exit $status
