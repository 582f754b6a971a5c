#!/usr/bin/env bash
# Train and evaluate next-item models with transformers.Trainer.
#
#   bash scripts/sft.sh                                  # sasrec_rope on MovieLens-100K (train_configs/sft/default.yaml)
#   bash scripts/sft.sh CONFIG.yaml [--key value ...]    # any TrainingArguments / SFT argument / model config field
#   bash scripts/sft.sh STAGE1.yaml STAGE2.yaml [--key value ...]   # several configs run in order (two-stage training)
#   NPROC=2 bash scripts/sft.sh ...                      # DDP through torchrun
#   NPROC=2 LAUNCHER=accelerate bash scripts/sft.sh ...  # DDP through accelerate launch (gloo on CPU)
#
# The leading .yaml arguments are configs; each runs `python -m hf_sasrec.sft --config CONFIG.yaml ARGS...` with the
# arguments that follow them (--help lists the keys). A run refuses an output_dir that already holds files: add
# --resume_from_checkpoint auto to resume it (the newest complete checkpoint) or --overwrite_output_dir to replace it.
# The embedded MovieLens-100K (data/ml-100k) and the item text embeddings DATA_DIR/item_text.npy (two-stage stage 1)
# are prepared on first use.
set -euo pipefail
cd "$(dirname "$0")/.."
export OMP_NUM_THREADS="${OMP_NUM_THREADS:-1}"
NPROC="${NPROC:-1}"
LAUNCHER="${LAUNCHER:-torchrun}"

configs=()
while [ "$#" -gt 0 ] && [[ "$1" == *.yaml || "$1" == *.yml ]]; do
  configs+=("$1")
  shift
done
if [ "${#configs[@]}" -eq 0 ]; then
  configs=("train_configs/sft/default.yaml")
fi

if [ "$NPROC" -gt 1 ] && [ "$LAUNCHER" = "accelerate" ]; then
  # --multi_gpu selects accelerate's torch.distributed launcher, which on a CPU-only machine starts NPROC gloo
  # processes; `--cpu` would select its single-process launcher.
  launcher=(accelerate launch --multi_gpu --num_processes "$NPROC" -m hf_sasrec.sft)
elif [ "$NPROC" -gt 1 ] && [ "$LAUNCHER" = "torchrun" ]; then
  launcher=(torchrun --standalone --nproc_per_node "$NPROC" -m hf_sasrec.sft)
elif [ "$NPROC" -gt 1 ]; then
  echo "sft.sh: LAUNCHER must be torchrun or accelerate, got $LAUNCHER" >&2
  exit 2
else
  launcher=(python -m hf_sasrec.sft)
fi

if [ "${#configs[@]}" -gt 1 ]; then
  # Each run refuses an output_dir that holds a run (unless resumed or overwritten); check them all before the first
  # trains, so that a refused second stage does not come after a finished first one.
  python -m hf_sasrec.checkpoints "${configs[@]}" "$@"
fi

for config in "${configs[@]}"; do
  echo "sft.sh: ${launcher[*]} --config $config $*"
  "${launcher[@]}" --config "$config" "$@"
done
