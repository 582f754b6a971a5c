"""Does DPO improve the SFT model's NDCG@10? MovieLens-100K and Amazon Games, one run per rejected-item source.

For every data set: `python -m data_preprocess` on the raw files, an SFT run (`train_configs/sft/default.yaml`, with
`--sft-epochs`), then one DPO run per source (`low-rated`, `popular`, `hard`; `train_configs/dpo/default.yaml`,
pairwise `sigmoid` loss), one softmax-DPO run (S-DPO, `train_configs/dpo/softmax_dpo.yaml`, hard negatives, 3 rejected
per prompt) and one DPO + SFT run (`train_configs/dpo/rpo.yaml`).
Each DPO run ranks the test split (full ranking, history excluded) before and after alignment with the same
`evaluate_next_item`; the table records NDCG@10, HR@10 and MRR of both and the change. A source the data set cannot
provide (Games has no ratings, so no low-rated items) is recorded with the builder's error instead of a number.

    OMP_NUM_THREADS=1 python benchmarks/bench_dpo.py --data-root ../shared/data [--datasets ml-100k games]
        [--sft-args key=value ...] [--dpo-args key=value ...]

`--sft-args` and `--dpo-args` are given as `key=value` and passed to the training commands as `--key=value`.

Results go to `benchmarks/results/dpo.json` and `benchmarks/results/dpo.md`; the work folders to `--work-dir`.
"""

import argparse
import json
import logging
import os
import subprocess
import sys
import time
from pathlib import Path

logger = logging.getLogger("bench_dpo")
RESULTS = Path(__file__).parent / "results"
DATASETS = {
    "ml-100k": ["--input", "{root}/ml-100k", "--min-rating", "3"],
    "games": ["--input", "{root}/amazon-games/Video.txt", "--format", "sasrec", "--name", "games"],
}
# SFT overrides of `train_configs/sft/default.yaml` per data set: Games is cut to 4 epochs to fit a CPU budget.
SFT_ARGS = {
    "ml-100k": [],
    "games": [
        "max_length=50",
        "loss_type=sampled_softmax",
        "num_train_epochs=4",
        "per_device_train_batch_size=256",
        "early_stopping_patience=2",
    ],
}
# name: (DPO config, rejected-item source, rejected items per prompt)
RUNS = {
    "low-rated": ("train_configs/dpo/default.yaml", "low-rated", 1),
    "popular": ("train_configs/dpo/default.yaml", "popular", 1),
    "hard": ("train_configs/dpo/default.yaml", "hard", 1),
    "hard, S-DPO k=3": ("train_configs/dpo/softmax_dpo.yaml", "hard", 3),
    "hard, DPO+SFT": ("train_configs/dpo/rpo.yaml", "hard", 1),
}
REPORTED = ("full/ndcg@10", "full/hr@10", "full/mrr")


def options(overrides: list[str]) -> list[str]:
    """`key=value` overrides as the training commands' `--key=value` options."""
    return [f"--{override}" for override in overrides]


def run(command: list[str], log_file: Path) -> float:
    """Run `command`, its output appended to `log_file`; returns the seconds it took, raises on failure."""
    logger.info("%s", " ".join(command))
    start = time.perf_counter()
    with log_file.open("a") as log:
        result = subprocess.run(command, stdout=log, stderr=subprocess.STDOUT)
    if result.returncode != 0:
        tail = log_file.read_text().strip().splitlines()[-3:]
        raise RuntimeError(f"{command[2]} failed ({result.returncode}): {' | '.join(tail)}")
    return time.perf_counter() - start


def prepare(dataset: str, data_root: Path, work: Path, sft_args: list[str]) -> tuple[Path, Path, dict[str, float]]:
    """Processed data and SFT model of `dataset`, reused when `work` already holds them (`data/`, `sft/`)."""
    data_dir, sft_dir = work / "data", work / "sft"
    seconds = {}
    if not (data_dir / "dataset_dict.json").exists():
        arguments = [argument.format(root=data_root) for argument in DATASETS[dataset]]
        command = [sys.executable, "-m", "data_preprocess", *arguments, "--output", str(data_dir)]
        seconds["preprocess"] = run(command, work / "log.txt")
    if not (sft_dir / "run_info.json").exists():
        command = [sys.executable, "-m", "hf_sasrec.sft", "--config", "train_configs/sft/default.yaml"]
        command += options([f"data_dir={data_dir}", f"output_dir={sft_dir}", "report_to=none"])
        command += options([*SFT_ARGS[dataset], *sft_args])
        seconds["sft"] = run(command, work / "log.txt")
    return data_dir, sft_dir, seconds


def align(name: str, sft_dir: Path, data_dir: Path, work: Path, dpo_args: list[str], reuse: bool) -> dict:
    """One DPO run; its before/after metrics, or the error that stopped it. With `reuse`, a run whose folder already
    has `metrics.json` is read, not run again."""
    config, source, num_rejected = RUNS[name]
    output_dir = work / f"dpo-{Path(config).stem}-{source}-k{num_rejected}"
    pairs = work / (f"pairs-{source}-k{num_rejected}" + "-all" * ("all_positions=true" in dpo_args))
    command = [sys.executable, "-m", "hf_sasrec.dpo", "--config", config]
    command += options([f"sft_dir={sft_dir}", f"data_dir={data_dir}", f"output_dir={output_dir}"])
    command += options([f"preference_dir={pairs}", f"source={source}", f"num_rejected={num_rejected}"])
    command += options(["report_to=none", "overwrite_output_dir=true", *dpo_args])
    seconds = None
    if not (reuse and (output_dir / "metrics.json").exists()):
        try:
            seconds = round(run(command, work / "log.txt"), 1)
        except RuntimeError as error:
            return {"error": str(error)}
    metrics = json.loads((output_dir / "metrics.json").read_text())
    return {
        "command": " ".join(command[1:]),
        "seconds": seconds,
        "num_pairs": metrics["num_pairs"],
        "test": metrics["test"],
    }


def markdown(results: dict) -> str:
    """The results as a markdown table."""
    lines = [
        "| data set | rejected items | pairs | NDCG@10 SFT | NDCG@10 DPO | change | HR@10 SFT → DPO | MRR SFT → DPO "
        "| s |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for dataset, runs in results["datasets"].items():
        for name, result in runs["dpo"].items():
            if "error" in result:
                lines.append(f"| {dataset} | {name} | – | – | – | not run: {result['error'][-150:]} | | | |")
                continue
            ndcg, hr, mrr = (result["test"][metric] for metric in REPORTED)
            lines.append(
                f"| {dataset} | {name} | {result['num_pairs']} | {ndcg['sft']:.4f} | {ndcg['dpo']:.4f} | "
                f"{ndcg['change']:+.4f} ({ndcg['change'] / ndcg['sft']:+.1%}) | {hr['sft']:.4f} → {hr['dpo']:.4f} | "
                f"{mrr['sft']:.4f} → {mrr['dpo']:.4f} | {result['seconds'] or 'reused'} |"
            )
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-root", default="../shared/data", help="folder of the benchmark data sets")
    parser.add_argument("--datasets", nargs="+", default=list(DATASETS), choices=list(DATASETS))
    parser.add_argument("--runs", nargs="+", default=list(RUNS), choices=list(RUNS))
    parser.add_argument("--work-dir", default="outputs/bench_dpo", help="processed data, SFT and DPO runs")
    parser.add_argument("--sft-args", nargs="*", default=[], help="key=value overrides of the SFT runs")
    parser.add_argument("--dpo-args", nargs="*", default=[], help="key=value overrides of every DPO run")
    parser.add_argument("--reuse-runs", action="store_true", help="read DPO runs that already have metrics.json")
    parser.add_argument("--output", default=str(RESULTS / "dpo.json"))
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    data_root = Path(args.data_root)
    if not data_root.is_dir():
        logger.warning("No data in %s: nothing to benchmark.", data_root)
        return
    results = {
        "command": " ".join(sys.argv),
        "omp_num_threads": os.environ.get("OMP_NUM_THREADS"),
        "sft_args": args.sft_args,
        "dpo_args": args.dpo_args,
        "datasets": {},
    }
    for dataset in args.datasets:
        work = Path(args.work_dir) / dataset
        work.mkdir(parents=True, exist_ok=True)
        data_dir, sft_dir, seconds = prepare(dataset, data_root, work, args.sft_args)
        runs = {name: align(name, sft_dir, data_dir, work, args.dpo_args, args.reuse_runs) for name in args.runs}
        sft_command = json.loads((sft_dir / "run_info.json").read_text()).get("command")
        results["datasets"][dataset] = {"seconds": seconds, "sft_command": sft_command, "dpo": runs}
        Path(args.output).write_text(json.dumps(results, indent=2))
    Path(args.output).with_suffix(".md").write_text(markdown(results))
    print(markdown(results))


if __name__ == "__main__":
    main()
