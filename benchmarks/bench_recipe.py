"""Issue 18: the recommended training recipe against each data set's old recipe, and the variations tried on the way.

    OMP_NUM_THREADS=1 python benchmarks/bench_recipe.py --datasets beauty ml-100k --arms old recommended --seeds 0 1
    python benchmarks/bench_recipe.py --summarize
    python benchmarks/bench_recipe.py --datasets beauty --seeds 0 --paired old recommended   # paired test change

An arm is a config file and the options given after it (`ARMS`); `{old}` stands for the data set's own config of
today (`OLD_CONFIGS`). Every run is `python -m hf_sasrec.sft --config ... --data_dir data/{dataset} --seed S` in a
subprocess, its folder `outputs/recipe/{dataset}/{arm}-seed{S}`; its record (test NDCG@10, HR@10 and MRR under the
full protocol and under the 100-sampled-negatives one, the validation metric the run was selected on, epochs, best
epoch, the trainer's runtime and the wall time) is appended to `benchmarks/results/recipe.jsonl` as it ends. Model
selection (early stopping, best checkpoint) uses the validation split only; test metrics are read, never compared
while choosing. `--summarize` (and the end of every benchmark) writes `benchmarks/results/recipe.md`: mean ± std over
seeds per data set and arm, from the latest record of each (dataset, arm, seed).

The data sets are prepared by `python -m data_preprocess` as their configs say (`data/beauty`, `data/games`; the
embedded MovieLens-100K is prepared by the first run). A data set whose folder is absent is skipped with a message.
"""

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmarks" / "results"
OLD_CONFIGS = {
    "beauty": "train_configs/sft/beauty_full.yaml",
    "games": "train_configs/sft/games_paper.yaml",
    "ml-100k": "train_configs/sft/default.yaml",
}
RECOMMENDED = "train_configs/sft/recommended.yaml"
PUBLISHED = ("--hidden_size", "256", "--intermediate_size", "256", "--num_hidden_layers", "1")
PUBLISHED += ("--hidden_dropout_prob", "0.2", "--attention_dropout", "0.2")
# The learning rate divided by 4 after 2 evaluations without a better validation metric.
PLATEAU = ("--lr_scheduler_type", "reduce_lr_on_plateau", "--lr_scheduler_kwargs")
PLATEAU += ('{"mode": "max", "factor": 0.25, "patience": 2}',)


def screen(*options: str) -> tuple[str, list[str]]:
    """A screening arm: the Beauty recipe (paper model, full softmax, bucketed batches) with `options`, patience 10."""
    return OLD_CONFIGS["beauty"], [*options, "--early_stopping_patience", "10"]


# arm -> (config, options). The variations tried on the way to the recommended recipe stay here, so that each line
# of the results file can be run again.
ARMS: dict[str, tuple[str, list[str]]] = {
    "old": ("{old}", []),
    "recommended": (RECOMMENDED, []),
    # The same recipe after length-bucketed steps were divided by the targets of an average step (commit 4eb4376);
    # "recommended" records the runs made before it.
    "recommended-step-targets": (RECOMMENDED, []),
    "ce-h128-p10": screen("--hidden_size", "128", "--intermediate_size", "128"),
    "ce-h256-p10": screen("--hidden_size", "256", "--intermediate_size", "256"),
    # The best published SASRec on Beauty (RecTools' SASRec in blondered/transformer_benchmark,
    # configs/paper/loo/s3_vanilla.yaml): 256 wide, one block, one head, dropout 0.2, sampled softmax of 256 negatives.
    "published-ss256": screen(*PUBLISHED, "--loss_type", "sampled_softmax", "--num_negatives", "256"),
    "published-ce": screen(*PUBLISHED),
    "ce-h256-1block": screen("--hidden_size", "256", "--intermediate_size", "256", "--num_hidden_layers", "1"),
    "ce-h128-plateau": screen("--hidden_size", "128", "--intermediate_size", "128", *PLATEAU),
    "ce-h256-1block-plateau": screen(
        *("--hidden_size", "256", "--intermediate_size", "256", "--num_hidden_layers", "1"), *PLATEAU
    ),
    "recommended-wd0.1": (RECOMMENDED, ["--weight_decay", "0.1"]),
    # The recipe against its dropout rule: the other dropout value.
    "recommended-dropout0.5": (RECOMMENDED, ["--hidden_dropout_prob", "0.5", "--attention_dropout", "0.5"]),
    "recommended-dropout0.2": (RECOMMENDED, ["--hidden_dropout_prob", "0.2", "--attention_dropout", "0.2"]),
    **{
        f"recommended-{variant}": (RECOMMENDED, ["--model_type", variant])
        for variant in ("sasrec_rope", "sasrec_gate", "sasrec_moe", "mhc", "tisasrec")
    },
    "ss256-h128-p10": screen(
        *("--hidden_size", "128", "--intermediate_size", "128", "--loss_type", "sampled_softmax"),
        *("--num_negatives", "256", "--negative_sampler", "uniform"),
    ),
}
NUMBERS = ["full/ndcg@10", "full/hr@10", "full/mrr", "sampled/ndcg@10", "sampled/hr@10", "full/ndcg@10_ci95"]


def run_arm(dataset: str, arm: str, seed: int, extra: list[str]) -> dict:
    """Train and test one arm on `dataset` with `seed`; returns its record (with `error` when the run failed)."""
    config, options = ARMS[arm]
    output_dir = f"outputs/recipe/{dataset}/{arm}-seed{seed}"
    command = [sys.executable, "-m", "hf_sasrec.sft", "--config", config.format(old=OLD_CONFIGS[dataset])]
    command += ["--data_dir", f"data/{dataset}", "--output_dir", output_dir, "--seed", str(seed)]
    command += ["--disable_tqdm", "true", "--report_to", "none", "--overwrite_output_dir", *options, *extra]
    log_file = ROOT / f"{output_dir}.log"
    log_file.parent.mkdir(parents=True, exist_ok=True)
    start = time.time()
    with log_file.open("w") as log:
        returncode = subprocess.run(command, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT).returncode
    record = {"dataset": dataset, "arm": arm, "seed": seed, "command": " ".join(command[1:])}
    record["wall_s"] = round(time.time() - start, 1)
    if returncode != 0:
        return {**record, "error": log_file.read_text().strip().splitlines()[-1]}
    metrics = json.loads((ROOT / output_dir / "metrics.json").read_text())
    tests = {name: metrics.get(f"test_{name}") for name in NUMBERS}
    rules = json.loads((ROOT / output_dir / "run_info.json").read_text()).get("data_rules")
    return {
        **record,
        **tests,
        "valid_selected_on": metrics["best_metric"],
        "epochs": metrics["epochs"],
        "best_epoch": metrics["best_epoch"],
        "train_runtime_s": metrics["train_runtime"],
        "data_rules": rules,
    }


def user_interval(record: dict) -> float | None:
    """The half-width of the 95% interval over users of a run's test full NDCG@10: from its record, or, for a run
    recorded before intervals existed, from its run folder's `metrics.json` or `evaluation_test.json` (`python -m
    hf_sasrec.evaluate RUN --output RUN/evaluation_test.json`, the saved model ranked again) when one holds it."""
    if record.get("full/ndcg@10_ci95") is not None:
        return record["full/ndcg@10_ci95"]
    folder = ROOT / "outputs" / "recipe" / record["dataset"] / f"{record['arm']}-seed{record['seed']}"
    for name in ("metrics.json", "evaluation_test.json"):
        if (folder / name).exists():
            value = json.loads((folder / name).read_text()).get("test_full/ndcg@10_ci95")
            if value is not None:
                return value
    return None


def mean_std(values: list[float]) -> str:
    """`mean ± std` (sample std; 0 for one value) with four decimals."""
    mean = sum(values) / len(values)
    std = (sum((value - mean) ** 2 for value in values) / (len(values) - 1)) ** 0.5 if len(values) > 1 else 0.0
    return f"{mean:.4f} ± {std:.4f}"


def summarize(records: list[dict]) -> str:
    """The markdown summary: a table per data set, an arm a row, the latest record of each (dataset, arm, seed)."""
    latest: dict[tuple[str, str, int], dict] = {}
    for record in records:
        if "error" not in record:
            latest[record["dataset"], record["arm"], record["seed"]] = record
    lines = [
        "# Training recipes (issue 18)",
        "",
        "`OMP_NUM_THREADS=1 python benchmarks/bench_recipe.py --datasets D... --arms A... --seeds S...` (one thread a "
        "run). Test split, leave-one-out; `full`: ranking over all items, history excluded; `sampled`: the target "
        "against 100 random unseen items (SASRec paper). Mean ± std over the seeds listed. Runs were selected on "
        "validation only (early stopping and best checkpoint); `valid` is the validation metric each run was "
        "selected on (its own protocol). `± 95% CI over users`: the mean over the seeds of each run's interval "
        "half-width over its test users (normal approximation; – for runs made before intervals were recorded). "
        "Arms: `benchmarks/bench_recipe.py` `ARMS`.",
    ]
    for dataset in sorted({key[0] for key in latest}):
        lines += ["", f"## {dataset}", ""]
        lines += [
            "| arm | seeds | full NDCG@10 | ± 95% CI over users | full HR@10 | full MRR | sampled NDCG@10 | valid | "
            "epochs (best) | train s |"
        ]
        lines += ["| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
        for arm in [name for name in ARMS if (dataset, name) in {(d, a) for d, a, _ in latest}]:
            runs = [latest[key] for key in sorted(latest) if key[:2] == (dataset, arm)]
            cells = [mean_std([run[name] for run in runs]) for name in ["full/ndcg@10", "full/hr@10", "full/mrr"]]
            intervals = [user_interval(run) for run in runs]
            known = [value for value in intervals if value is not None]
            cells.insert(1, f"{sum(known) / len(known):.4f}" if known else "–")
            cells.append(mean_std([run["sampled/ndcg@10"] for run in runs]))
            cells.append(mean_std([run["valid_selected_on"] for run in runs]))
            epochs = ", ".join(f"{run['epochs']:g} ({run['best_epoch']:g})" for run in runs)
            seconds = ", ".join(f"{run['train_runtime_s']:.0f}" for run in runs)
            seeds = ",".join(str(run["seed"]) for run in runs)
            lines.append(f"| {arm} | {seeds} | {' | '.join(cells)} | {epochs} | {seconds} |")
    return "\n".join(lines) + "\n"


def write_summary(results: Path) -> None:
    records = [json.loads(line) for line in results.read_text().splitlines()] if results.exists() else []
    (RESULTS / "recipe.md").write_text(summarize(records))


def paired_comparison(dataset: str, first: str, second: str, seed: int) -> dict:
    """`second - first` on the test split of `dataset` for the saved models of both arms' runs of `seed`: each test
    metric's paired difference over users with its 95% interval (`hf_sasrec.evaluation.paired_difference`)."""
    from transformers import AutoModelForCausalLM

    from hf_sasrec.evaluation import evaluate_users, paired_difference
    from hf_sasrec.processed_data import drop_short_rows, load_processed_data

    splits, _, _ = load_processed_data(str(ROOT / "data" / dataset))
    test = drop_short_rows(splits["test"], "test")
    values = {}
    for arm in (first, second):
        run_dir = ROOT / "outputs" / "recipe" / dataset / f"{arm}-seed{seed}"
        model = AutoModelForCausalLM.from_pretrained(run_dir).eval()
        max_length = json.loads((run_dir / "run_info.json").read_text())["max_length"]  # as the run evaluated
        values[arm] = evaluate_users(model, test, k_values=(10,), max_length=max_length)[0]
    record = {"dataset": dataset, "seed": seed, "first": first, "second": second}
    for name in ("ndcg@10", "hr@10", "mrr"):
        change, half_width = paired_difference(values[second][name], values[first][name])
        record[name] = {"change": change, "ci95": half_width, "first": values[first][name].mean().item()}
    return record


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--datasets", nargs="+", choices=sorted(OLD_CONFIGS), default=["ml-100k"])
    parser.add_argument("--arms", nargs="+", choices=list(ARMS), default=["old", "recommended"])
    parser.add_argument("--seeds", nargs="+", type=int, default=[0])
    parser.add_argument("--extra", nargs=argparse.REMAINDER, default=[], help="options added to every run")
    parser.add_argument("--summarize", action="store_true", help="only write recipe.md from recipe.jsonl")
    parser.add_argument(
        "--paired",
        nargs=2,
        metavar=("ARM_A", "ARM_B"),
        help="only compare two arms' saved models on the test split of --datasets, seed by seed (paired.jsonl)",
    )
    args = parser.parse_args()
    results = RESULTS / "recipe.jsonl"
    if args.paired:
        for dataset in args.datasets:
            for seed in args.seeds:
                record = paired_comparison(dataset, *args.paired, seed)
                with (RESULTS / "recipe_paired.jsonl").open("a") as file:
                    file.write(json.dumps(record) + "\n")
                print(json.dumps(record), flush=True)
        return
    if not args.summarize:
        os.environ.setdefault("OMP_NUM_THREADS", "1")
        for dataset in args.datasets:
            if dataset != "ml-100k" and not (ROOT / "data" / dataset).is_dir():
                print(f"data/{dataset} is absent: prepare it as {OLD_CONFIGS[dataset]} says; skipped.", flush=True)
                continue
            for seed in args.seeds:
                for arm in args.arms:
                    record = run_arm(dataset, arm, seed, args.extra)
                    with results.open("a") as file:
                        file.write(json.dumps(record) + "\n")
                    print(json.dumps(record), flush=True)
    write_summary(results)


if __name__ == "__main__":
    main()
