#!/usr/bin/env bash
# Align an SFT model with DPO (TRL's DPOTrainer):
#
#   bash scripts/dpo.sh                                                # train_configs/dpo/dislikes.yaml
#   bash scripts/dpo.sh --config train_configs/dpo/novelty.yaml        # another config
#   bash scripts/dpo.sh --beta=0.5 --num_train_epochs 6 --output_dir outputs/dpo/dislikes_6   # any field, as --key value
#
# The arguments go to `python -m hf_sasrec.dpo` unchanged, after `--config train_configs/dpo/dislikes.yaml` when they
# name no config: the recipe that does best on the default data (README, "Alignment with a purpose"): rejected = the
# user's own dislikes (ratings <= 2), chosen = the next liked item, for a model trained on liked items only. Builds the
# preference pairs when absent, trains, prints the before/after table (goal metric first, 95% intervals) and writes
# outputs/dpo/<run>/ (model, tokenizer, metrics.json, TensorBoard logs). The SFT run a config reads is trained first
# when it is one of the two this script knows and is absent: outputs/sft/ml100k_liked (MovieLens-100K prepared with
# --min-rating 3 into data/ml-100k-liked, which is prepared too) or outputs/sft/default.
set -euo pipefail
cd "$(dirname "$0")/.."
export OMP_NUM_THREADS="${OMP_NUM_THREADS:-1}"
export HF_HUB_OFFLINE="${HF_HUB_OFFLINE:-1}" HF_HUB_DISABLE_TELEMETRY=1 TOKENIZERS_PARALLELISM=false
DEFAULT_SFT="outputs/sft/default"
LIKED_SFT="outputs/sft/ml100k_liked"
LIKED_DATA="data/ml-100k-liked"

arguments=("$@")
has_config=false
for argument in "$@"; do
    [[ "$argument" == --config || "$argument" == --config=* ]] && has_config=true
done
if [[ "$has_config" == false ]]; then
    arguments=(--config train_configs/dpo/dislikes.yaml "$@")
fi

# Which SFT run the config reads matters only while one of the two this script can train is missing.
sft_dir=""
if [[ ! -f "$DEFAULT_SFT/config.json" || ! -f "$LIKED_SFT/config.json" ]]; then
    sft_dir=$(python -c 'import sys
from hf_sasrec.dpo import make_parser
print(make_parser().parse_args_and_config(sys.argv[1:])[0].sft_dir)' "${arguments[@]}" 2>/dev/null || true)
fi
if [[ -n "$sft_dir" && ! -f "$sft_dir/config.json" ]]; then  # else hf_sasrec.dpo reports a missing model or bad argument
    if [[ "$sft_dir" == "$DEFAULT_SFT" ]]; then
        echo "No SFT model in $DEFAULT_SFT: running scripts/sft.sh first." >&2
        bash scripts/sft.sh
    elif [[ "$sft_dir" == "$LIKED_SFT" ]]; then
        if [[ ! -f "$LIKED_DATA/dataset_dict.json" ]]; then
            echo "Preparing MovieLens-100K with ratings >= 3 as sequences and the rest as dislikes: $LIKED_DATA." >&2
            python -m data_preprocess --output "$LIKED_DATA" --min-rating 3
        fi
        echo "No SFT model in $LIKED_SFT: training it on $LIKED_DATA first." >&2
        bash scripts/sft.sh --data_dir "$LIKED_DATA" --output_dir "$LIKED_SFT"
    fi
fi

python -m hf_sasrec.dpo "${arguments[@]}"
