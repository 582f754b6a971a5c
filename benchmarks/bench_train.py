"""Accuracy benchmark: train variants and losses with `hf_sasrec.sft`, one JSON line of results per run.

    OMP_NUM_THREADS=1 nohup python benchmarks/bench_train.py --dataset games \
        --runs sasrec:bce sasrec:ce sasrec_rope:ce > /tmp/train_games.log 2>&1 &

Each run is `python -m hf_sasrec.sft --config CONFIG.yaml --model_type=... --loss_type=... --num_train_epochs=...` in
a subprocess (`--extra key=value ...` adds `--key=value` to every run); its metrics (test split, the dataset's
protocol, each test metric with its `_ci95`: the half-width of its 95% interval over the test users), epochs and wall
time are appended to `benchmarks/results/train_{dataset}.jsonl` as soon as it ends, so finished runs survive an
interrupted benchmark.
"""

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
CONFIGS = {
    "games": "train_configs/sft/games_paper.yaml",
    "beauty": "train_configs/sft/beauty_full.yaml",
    "ml-100k": "train_configs/sft/default.yaml",
}
PROTOCOLS = {"games": "sampled", "beauty": "full", "ml-100k": "full"}


def run_one(dataset: str, model_type: str, loss_type: str, extra: list[str], tag: str = "") -> dict:
    """Train and test one (variant, loss) on `dataset`; returns the benchmark record."""
    output_dir = f"outputs/bench/{dataset}_{model_type}_{loss_type}{tag}"
    command = [
        sys.executable,
        "-m",
        "hf_sasrec.sft",
        "--config",
        CONFIGS[dataset],
        f"--model_type={model_type}",
        f"--loss_type={loss_type}",
        f"--output_dir={output_dir}",
        "--disable_tqdm=true",
        *[f"--{override}" for override in extra],
    ]
    if not any(override.startswith("resume_from_checkpoint=") for override in extra):
        command.append("--overwrite_output_dir")  # a benchmark run replaces the previous one
    start = time.time()
    result = subprocess.run(command, cwd=ROOT, capture_output=True, text=True)
    wall = time.time() - start
    record = {"dataset": dataset, "model_type": model_type, "loss_type": loss_type, "command": " ".join(command[1:])}
    if result.returncode != 0:
        return {**record, "error": result.stderr.strip().splitlines()[-1], "wall_s": round(wall, 1)}
    metrics = json.loads((ROOT / output_dir / "metrics.json").read_text())
    protocol = PROTOCOLS[dataset]
    state = json.loads((ROOT / output_dir / "trainer_state.json").read_text())
    return {
        **record,
        "protocol": protocol,
        "hr@10": metrics[f"test_{protocol}/hr@10"],
        "hr@10_ci95": metrics.get(f"test_{protocol}/hr@10_ci95"),
        "ndcg@10": metrics[f"test_{protocol}/ndcg@10"],
        "ndcg@10_ci95": metrics.get(f"test_{protocol}/ndcg@10_ci95"),
        "valid_ndcg@10": metrics[f"valid_{protocol}/ndcg@10"],
        "full_hr@10": metrics.get("test_full/hr@10"),
        "full_hr@10_ci95": metrics.get("test_full/hr@10_ci95"),
        "full_ndcg@10": metrics.get("test_full/ndcg@10"),
        "full_ndcg@10_ci95": metrics.get("test_full/ndcg@10_ci95"),
        "epochs": metrics["epochs"],
        "best_epoch": next(
            (e["epoch"] for e in state["log_history"] if e.get(f"eval_{protocol}/ndcg@10") == state["best_metric"]),
            None,
        ),
        "train_runtime_s": metrics["train_runtime"],
        "wall_s": round(wall, 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dataset", choices=sorted(CONFIGS), required=True)
    parser.add_argument("--runs", nargs="+", required=True, help="model_type:loss_type pairs, run in order")
    parser.add_argument("--extra", nargs="*", default=[], help="key=value overrides for every run (as --key=value)")
    parser.add_argument("--tag", default="", help="suffix of the runs' output folders, to keep earlier runs")
    args = parser.parse_args()
    data_dir = ROOT / "data" / args.dataset
    if not data_dir.is_dir():
        sys.exit(f"{data_dir} is absent: prepare it with python -m data_preprocess (see {CONFIGS[args.dataset]}).")
    results = ROOT / "benchmarks" / "results" / f"train_{args.dataset}.jsonl"
    for run in args.runs:
        model_type, loss_type = run.split(":")
        record = run_one(args.dataset, model_type, loss_type, args.extra, args.tag)
        with results.open("a") as file:
            file.write(json.dumps(record) + "\n")
        print(json.dumps(record), flush=True)


if __name__ == "__main__":
    main()
