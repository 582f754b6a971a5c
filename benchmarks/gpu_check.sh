#!/usr/bin/env bash
# Run benchmarks/gpu_check.py on a fresh GPU machine that reaches no package registry.
#
#     bash benchmarks/gpu_check.sh OUTPUT_DIR [gpu_check.py options]
#
# Installs the wheels that benchmarks/gpu_wheels.sh fetched into $GPU_WHEELS (default .gpu-wheels) into a --target
# folder put first on PYTHONPATH (so they shadow the image's older transformers; nothing else of the image changes),
# puts the repository itself on PYTHONPATH instead of installing it, and trains on the carried Games log when
# gpu_wheels.sh packed one. Without a wheels folder it runs in the current environment as it is.
set -uo pipefail
cd "$(dirname "$0")/.."

out="${1:?usage: bash benchmarks/gpu_check.sh OUTPUT_DIR [gpu_check.py options]}"
shift
python="${PYTHON:-python3}"
wheels="${GPU_WHEELS:-.gpu-wheels}"
site="${GPU_SITE:-/tmp/gpu-check-site}"
mkdir -p "$out"

if compgen -G "$wheels/*.whl" >/dev/null; then
    if ! "$python" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target "$site" \
        "$wheels"/*.whl >"$out/install.log" 2>&1; then
        echo "installing the wheels of $wheels failed; see $out/install.log" >&2
        cat "$out/install.log" >&2
        exit 1
    fi
    export PYTHONPATH="$site${PYTHONPATH:+:$PYTHONPATH}"
fi
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 TOKENIZERS_PARALLELISM=false

data=()
if [ -f "$wheels/amazon-games-Video.txt.gz" ]; then
    data=(--data "$wheels/amazon-games-Video.txt.gz")
fi
"$python" -c 'import torch, transformers; print("torch", torch.__version__, "cuda", torch.cuda.is_available(),
    "transformers", transformers.__version__, transformers.__file__)'
exec "$python" benchmarks/gpu_check.py --output "$out" "${data[@]}" "$@"
