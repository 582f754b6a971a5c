"""What spreading the lists over the catalog costs: exposure re-ranking (`hf_sasrec.reranking.ExposurePenalty`) of
trained runs, on their test split.

For each run folder (its data folder and history length from `run_info.json`) and each weight: NDCG@10 and HR@10
with the paired change against the same model without re-ranking (95% interval over users), and coverage@10 with
its bootstrap interval and relative change (`hf_sasrec.evaluation.coverage_interval`, same resamples); full
protocol (the whole catalog, history excluded), users in split order, as `python -m hf_sasrec.evaluate RUN
--exposure-weight W` ranks them. One JSON line per (run, weight) is appended to `--output`, and the table of the
latest line of each (run, weight) is written beside it (`.md`).

    OMP_NUM_THREADS=1 python benchmarks/bench_exposure.py --runs RUN [RUN ...] [--weights 0.2 0.5 1 2]
"""

import argparse
import json
import logging
from datetime import datetime, timezone
from pathlib import Path

from bench_item_features import code_version, write_summary

from hf_sasrec.checkpoint_loading import load_checkpoint
from hf_sasrec.evaluation import coverage, coverage_interval, evaluate_users, mean_with_interval, paired_difference
from hf_sasrec.feature_inputs import attach_user_features, model_user_values
from hf_sasrec.processed_data import drop_short_rows, load_processed_data
from hf_sasrec.reranking import ExposurePenalty
from hf_sasrec.run_info import RunInfo

logger = logging.getLogger("bench_exposure")
RESULTS = Path(__file__).parent / "results"
METRICS = ("ndcg@10", "hr@10")


def run_lines(run: Path, weights: list[float]) -> list[dict]:
    """One line per weight (and one for no re-ranking, weight 0) for the run folder `run`."""
    checkpoint, model, _ = load_checkpoint(run, require_tokenizer=False)
    info = RunInfo.load(checkpoint)
    splits, _, _ = load_processed_data(info.data_dir)
    test = drop_short_rows(splits["test"], "test")
    if model.config.user_features:
        test = attach_user_features(model, {"test": test}, model_user_values(model.config, info.data_dir))["test"]
    options = {"k_values": (10,), "max_length": info.max_length}
    base, _, base_lists = evaluate_users(model, test, **options)
    catalog = (model.config.vocab_size, model.config.num_special_tokens)
    base_coverage = coverage(base_lists, *catalog)
    lines = []
    for weight in [0.0, *weights]:
        values, lists = base, base_lists
        if weight:
            exposure = ExposurePenalty(model.config.vocab_size, weight)
            values, _, lists = evaluate_users(model, test, rerank=exposure, **options)
        covered, covered_ci = coverage_interval(lists, *catalog)
        change, change_ci = coverage_interval(lists, *catalog, baseline=base_lists)
        line = {
            "time": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "code": code_version(),
            "run": str(run),
            "data_dir": str(info.data_dir),
            "users": len(test),
            "items": model.config.vocab_size - model.config.num_special_tokens,
            "weight": weight,
            "coverage@10": covered,
            "coverage@10_ci95": covered_ci,
            "coverage_change": covered / base_coverage - 1,
            "coverage_change_ci95": change_ci / base_coverage,
        }
        for name in METRICS:
            mean, half_width = mean_with_interval(values[name])
            change, change_half_width = paired_difference(values[name], base[name])
            line[name] = {"mean": mean, "ci95": half_width, "change": change, "change_ci95": change_half_width}
        lines.append(line)
        logger.info("%s weight %s: NDCG@10 %.4f, coverage@10 %.4f", run, weight, line["ndcg@10"]["mean"], covered)
    return lines


def summary(lines: list[dict]) -> str:
    """The markdown table of the latest line of each (run, weight)."""
    latest = {(line["run"], line["weight"]): line for line in lines}
    out = [
        "# Exposure re-ranking: coverage against accuracy",
        "",
        f"`python benchmarks/bench_exposure.py`, code: {lines[-1]['code']}. Test split, full ranking over the whole "
        "catalog, history excluded, users in split order; changes are paired against the same model without "
        "re-ranking (weight 0), with their 95% interval over users; coverage ± its bootstrap interval, in brackets "
        "its change relative to weight 0 (± its paired bootstrap interval over the coverage at weight 0, where "
        "recorded; intervals that take each list as fixed, a rough guide for this order-dependent re-ranker).",
        "",
        "| run | users | items | weight | NDCG@10 | NDCG@10 change | HR@10 | HR@10 change | coverage@10 |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for (run, weight), line in latest.items():
        cells = [run, str(line["users"]), str(line["items"]), f"{weight:g}"]
        for name in METRICS:
            value = line[name]
            cells.append(f"{value['mean']:.4f} ± {value['ci95']:.4f}")
            cells.append(f"{value['change']:+.4f} ± {value['change_ci95']:.4f}")
        interval = f" ± {line['coverage@10_ci95']:.3f}" if "coverage@10_ci95" in line else ""
        relative = f" ± {line['coverage_change_ci95']:.0%}" if "coverage_change_ci95" in line else ""
        cells.append(f"{line['coverage@10']:.3f}{interval} ({line['coverage_change']:+.0%}{relative})")
        out.append("| " + " | ".join(cells) + " |")
    return "\n".join(out) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=Path, nargs="+", required=True, help="run folders of hf_sasrec.sft")
    parser.add_argument("--weights", type=float, nargs="+", default=[0.2, 0.5, 1.0, 2.0])
    parser.add_argument("--output", type=Path, default=RESULTS / "exposure.jsonl")
    args = parser.parse_args()
    logging.basicConfig(format="%(asctime)s %(message)s", level=logging.INFO)
    for run in args.runs:
        with args.output.open("a") as file:
            file.writelines(json.dumps(line) + "\n" for line in run_lines(run, args.weights))
    write_summary(args.output, summary)


if __name__ == "__main__":
    main()
