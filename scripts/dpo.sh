#!/usr/bin/env bash
# Align the default SFT model with DPO (TRL's DPOTrainer):
#
#   bash scripts/dpo.sh                                                # train_configs/dpo/default.yaml
#   bash scripts/dpo.sh --config train_configs/dpo/softmax_dpo.yaml    # another config
#   bash scripts/dpo.sh --beta=0.5 --loss_type ipo --output_dir outputs/dpo/ipo   # any field, as --key value
#
# The arguments go to `python -m hf_sasrec.dpo` unchanged, after `--config train_configs/dpo/default.yaml` when they
# name no config. Builds the preference pairs from the SFT run's training split when absent (hard negatives from its
# item embeddings by default), trains, and writes outputs/dpo/<run>/ (model, tokenizer, metrics.json, TensorBoard
# logs). The default SFT run (outputs/sft/default) is trained first when the config reads it and it is absent.
set -euo pipefail
cd "$(dirname "$0")/.."
export OMP_NUM_THREADS="${OMP_NUM_THREADS:-1}"
export HF_HUB_OFFLINE="${HF_HUB_OFFLINE:-1}" HF_HUB_DISABLE_TELEMETRY=1 TOKENIZERS_PARALLELISM=false
DEFAULT_SFT="outputs/sft/default"

arguments=("$@")
has_config=false
for argument in "$@"; do
    [[ "$argument" == --config || "$argument" == --config=* ]] && has_config=true
done
if [[ "$has_config" == false ]]; then
    arguments=(--config train_configs/dpo/default.yaml "$@")
fi

if [[ ! -f "$DEFAULT_SFT/config.json" ]]; then
    sft_dir=$(python -c 'import sys
from hf_sasrec.dpo import make_parser
print(make_parser().parse_args_and_config(sys.argv[1:])[0].sft_dir)' "${arguments[@]}" 2>/dev/null || true)
    if [[ "$sft_dir" == "$DEFAULT_SFT" ]]; then  # else hf_sasrec.dpo reports the missing model or a bad argument
        echo "No SFT model in $DEFAULT_SFT: running scripts/sft.sh first." >&2
        bash scripts/sft.sh
    fi
fi

python -m hf_sasrec.dpo "${arguments[@]}"
