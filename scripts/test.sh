#!/usr/bin/env bash
# Sets up everything the tests need on a fresh machine, then runs them.
#   - a Python venv (.venv) with onnxruntime and numpy, the reference for exported models
#     (pip wheels are cached in ~/.cache/jetc/wheels between runs);
#   - cargo test --workspace, with JETC_PYTHON pointing at that venv (and JETC_TORCH_PYTHON at
#     the fixture venv ~/.cache/jetc/venv-export when it has torch: the PyTorch reference of
#     tests/jet_reference.rs; see scripts/requirements-fixtures.txt), and JETC_SMOLLM2_GGUF at
#     the SmolLM2-135M GGUF that scripts/fetch_smollm2.sh fetches (real-model tests).
set -euo pipefail
cd "$(dirname "$0")/.."

wheels="${HOME}/.cache/jetc/wheels"
mkdir -p "$wheels"
if [ ! -x .venv/bin/python ]; then
    python3 -m venv .venv
fi
if ! .venv/bin/python -c "import onnxruntime, numpy" 2>/dev/null; then
    .venv/bin/pip download -q -d "$wheels" -r scripts/requirements-test.txt \
        || echo "pip download failed; trying the wheel cache only" >&2
    .venv/bin/pip install -q --find-links "$wheels" -r scripts/requirements-test.txt
fi
export JETC_PYTHON="$PWD/.venv/bin/python"
torch_py=/root/.cache/jetc/venv-export/bin/python
if [ -x "$torch_py" ] && "$torch_py" -c "import torch, numpy" 2>/dev/null; then
    export JETC_TORCH_PYTHON="$torch_py"
fi

# The real-model tests (tests/smollm2.rs, cli/tests/generate_cli.rs): SmolLM2-135M's GGUF,
# fetched once into ~/.cache/jetc. Without it they skip, which CI does not accept.
if gguf=$(bash scripts/fetch_smollm2.sh | tail -n 1) && [ -s "$gguf" ]; then
    export JETC_SMOLLM2_GGUF="$gguf"
elif [ -n "${CI:-}" ]; then
    echo "CI: could not fetch SmolLM2 (scripts/fetch_smollm2.sh)" >&2
    exit 1
else
    echo "warning: SmolLM2 not available; the real-model tests will skip" >&2
fi

# NVRTC + ptxas + CUDA headers from PyPI (pinned 13.0; no GPU needed) for the codegen tests:
# every kernel instance compiles for sm_90 without spills (codegen/tests/compile.rs).
eval "$(bash scripts/install_cuda_tools.sh)"
export LD_LIBRARY_PATH JETC_CUDA_INCLUDE JETC_PTXAS

cargo test --workspace "$@"
