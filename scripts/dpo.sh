#!/usr/bin/env bash
# Align the default SFT model with DPO (TRL's DPOTrainer): bash scripts/dpo.sh [CONFIG.yaml] [key=value ...]
# Builds the preference pairs from the SFT run's training split when absent (hard negatives from its item
# embeddings by default), trains, and writes outputs/dpo/<run>/ (model, tokenizer, metrics.json, TensorBoard logs).
set -euo pipefail
cd "$(dirname "$0")/.."
export OMP_NUM_THREADS="${OMP_NUM_THREADS:-1}"
export HF_HUB_OFFLINE="${HF_HUB_OFFLINE:-1}" HF_HUB_DISABLE_TELEMETRY=1 TOKENIZERS_PARALLELISM=false

config="train_configs/dpo/default.yaml"
if [[ $# -gt 0 && "$1" != *=* ]]; then
    config="$1"
    shift
fi

sft_dir="outputs/sft/default"
for override in "$@"; do
    [[ "$override" == sft_dir=* ]] && sft_dir="${override#sft_dir=}"
done
if [[ ! -f "$sft_dir/config.json" ]]; then
    if [[ "$sft_dir" != "outputs/sft/default" ]]; then
        echo "No SFT model in $sft_dir (config.json missing): train one first." >&2
        exit 1
    fi
    echo "No SFT model in $sft_dir: running scripts/sft.sh first." >&2
    bash scripts/sft.sh
fi

python -m hf_sasrec.dpo "$config" "$@"
