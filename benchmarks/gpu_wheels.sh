#!/usr/bin/env bash
# Fetch, on a machine that reaches PyPI, what benchmarks/gpu_check.sh needs on the GPU machine, which reaches nothing:
# wheels for CPython 3.12 on manylinux x86-64 of the packages its image lacks or holds too old, and the Games log.
#
#     bash benchmarks/gpu_wheels.sh [DIR]      # DIR defaults to .gpu-wheels (ignored through .git/info/exclude)
#
# The GPU machine's image (see the device notes) has torch 2.11 (CUDA 13), transformers 5.17 (setup.py asks for
# >=5.23), accelerate, huggingface-hub 1.33, tokenizers, safetensors, numpy, pandas, pyarrow, xxhash, fsspec,
# pytest, but no datasets, trl or faiss. The versions below are the floors of .ci/constraints-floor.txt where they
# exist (tested with the package, and older datasets accepts the image's huggingface-hub 1.x), with the dill and
# multiprocess that datasets 4.7 accepts. Everything is fetched with --no-deps: each needed wheel is named here.
#
# Not fetched, because it cannot travel: faiss-gpu. faiss-gpu-cu12 (46 MiB) needs nvidia-cublas-cu12 (554 MiB for
# 12.9), and the image's cuBLAS is CUDA 13's; everything that travels must fit in 64 MiB. faiss-cpu travels instead
# (hf_sasrec.retrieval imports faiss), so gpu_check.py records "faiss has no GPU support" and skips the GPU indexes.
# flash-attn is published as source only (its build needs far longer than a lease), so flash_attention_2 is
# recorded as unavailable unless the image ever ships flash_attn.
set -euo pipefail
cd "$(dirname "$0")/.."

dir="${1:-.gpu-wheels}"
limit_mib=55
wheels=(
    transformers==5.23.0
    trl==1.16.0
    datasets==4.7.0
    dill==0.4.0
    multiprocess==0.70.18
    faiss-cpu==1.15.1
)

if [ "$dir" = ".gpu-wheels" ] && ! git check-ignore -q .gpu-wheels/x.whl; then
    mkdir -p "$(git rev-parse --git-path info)"
    echo "/.gpu-wheels/" >>"$(git rev-parse --git-path info/exclude)"
fi
mkdir -p "$dir"
rm -f "$dir"/*.whl
python -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
    --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 --platform manylinux_2_17_x86_64 \
    --platform manylinux2014_x86_64 --platform manylinux1_x86_64 -d "$dir" "${wheels[@]}"

games=../shared/data/amazon-games/Video.txt
if [ -f "$games" ]; then
    gzip -9 -c "$games" >"$dir/amazon-games-Video.txt.gz"
else
    echo "note: $games is absent; gpu_check.py will train on synthetic Games-shaped sequences" >&2
fi

echo "carried in $dir:"
du -b "$dir"/* | sort -n | awk '{printf "  %8.2f MiB  %s\n", $1 / 1048576, $2}'
total=$(du -cb "$dir"/* | tail -1 | cut -f1)
tree=$(git ls-files -co --exclude-standard -z | xargs -0 du -cb 2>/dev/null | tail -1 | cut -f1)
awk -v t="$total" -v r="$tree" 'BEGIN {printf "total %.2f MiB carried + %.2f MiB working tree = %.2f MiB (limit 64)\n",
    t / 1048576, r / 1048576, (t + r) / 1048576}'
if [ "$total" -gt $((limit_mib * 1048576)) ]; then
    echo "error: $dir holds more than $limit_mib MiB" >&2
    exit 1
fi
