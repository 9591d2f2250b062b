#!/usr/bin/env bash
# Installs NVRTC, ptxas and the CUDA headers from PyPI (no GPU needed) into a venv, pinned to
# CUDA 13.0 (the lent H200's driver is 13.0: newer PTX ISA would not load there), and prints
# the environment that jetc's codegen needs:
#   LD_LIBRARY_PATH  += <venv>/.../nvidia/cu13/lib   (libnvrtc.so.13, dlopened by cudarc)
#   JETC_CUDA_INCLUDE = <venv>/.../nvidia/cu13/include (cuda_bf16.h, cuda_fp16.h for NVRTC)
#   JETC_PTXAS        = <venv>/.../nvidia/cu13/bin/ptxas (register/spill checks)
# Usage:  eval "$(bash scripts/install_cuda_tools.sh)"
# Wheels are cached in ~/.cache/jetc/wheels; the venv is ~/.cache/jetc/venv-cuda (override
# with JETC_CUDA_VENV). Everything it says besides the exports goes to stderr.
set -euo pipefail

venv="${JETC_CUDA_VENV:-${HOME}/.cache/jetc/venv-cuda}"
wheels="${HOME}/.cache/jetc/wheels"
pins=("nvidia-cuda-nvrtc==13.0.88" "nvidia-cuda-nvcc==13.0.88" "nvidia-cuda-runtime==13.0.*" "nvidia-cuda-crt==13.0.*"
      "nvidia-nvvm==13.0.88")  # nvcc pulls nvvm unpinned: keep it at 13.0 too
mkdir -p "$wheels"

if [ ! -x "$venv/bin/python" ]; then
    python3 -m venv "$venv" >&2
fi
# A marker with the pins makes a second run (and a changed pin list) cheap to check.
marker="$venv/.jetc-cuda-pins"
if [ "$(cat "$marker" 2>/dev/null)" != "${pins[*]}" ]; then
    "$venv/bin/pip" download -q -d "$wheels" "${pins[@]}" >&2 \
        || echo "install_cuda_tools: pip download failed; trying the wheel cache only" >&2
    "$venv/bin/pip" install -q --find-links "$wheels" "${pins[@]}" >&2
    echo "${pins[*]}" > "$marker"
fi

cu13="$(ls -d "$venv"/lib/python3*/site-packages/nvidia/cu13 2>/dev/null | head -n1)"
if [ -z "$cu13" ] || [ ! -e "$cu13/lib/libnvrtc.so.13" ]; then
    echo "install_cuda_tools: libnvrtc.so.13 not found under $venv" >&2
    exit 1
fi
ptxas="$cu13/bin/ptxas"
if [ ! -x "$ptxas" ]; then
    echo "install_cuda_tools: ptxas not found at $ptxas" >&2
    exit 1
fi
echo "install_cuda_tools: NVRTC + ptxas in $cu13 ($("$ptxas" --version | tail -n1))" >&2
echo "export LD_LIBRARY_PATH=\"$cu13/lib\${LD_LIBRARY_PATH:+:\$LD_LIBRARY_PATH}\""
echo "export JETC_CUDA_INCLUDE=\"$cu13/include\""
echo "export JETC_PTXAS=\"$ptxas\""
