#!/usr/bin/env bash
# Recommend the top-10 next items for every test user of the default SFT run:
#   bash scripts/inference.sh [--model DIR] [--history-file F.jsonl] [--top-k K] [--index-type flat|hnsw|ivf] ...
# Writes recommendations.jsonl, recommendations.csv and summary.json into outputs/infer/<model path below outputs/>
# (outputs/infer/sft/default, outputs/infer/dpo/default: two models never share a folder; python -m hf_sasrec.infer
# --help lists every option). Search is exact unless --index-type asks for an approximate index; a saved index never
# changes that. Trains the default SFT model first when it is absent.
set -euo pipefail
cd "$(dirname "$0")/.."
export OMP_NUM_THREADS="${OMP_NUM_THREADS:-1}"
export HF_HUB_OFFLINE="${HF_HUB_OFFLINE:-1}" HF_HUB_DISABLE_TELEMETRY=1 TOKENIZERS_PARALLELISM=false

model="outputs/sft/default"
for ((i = 1; i <= $#; i++)); do
    case "${!i}" in
        --model) next=$((i + 1)); model="${!next}" ;;
        --model=*) model="${!i#--model=}" ;;
    esac
done
if [[ "$model" == "outputs/sft/default" && ! -f "$model/config.json" ]]; then
    echo "No SFT model in $model: running scripts/sft.sh first." >&2
    bash scripts/sft.sh
elif [[ -d "$model" && ! -f "$model/config.json" ]]; then
    echo "No model in $model (config.json missing): train one first." >&2
    exit 1
fi

python -m hf_sasrec.infer "$@"
