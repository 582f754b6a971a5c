"""Markdown table of the accuracy benchmark records (`benchmarks/results/train_{dataset}.jsonl`).

    python benchmarks/summarize_train.py --dataset games [--baseline-ndcg 0.5360] [--latest]

One row per record that finished, in file order (with `--latest`: only the last record of each variant, model
overrides, loss and kind of batches, ordered by variant, overrides, loss and batches): variant (with the model config
overrides of its command), loss, batches (random, length-bucketed or streamed, read from the record's command), test
HR@10 and NDCG@10 under the dataset's protocol (Games: `sampled`, with the `full` figures beside; Beauty: `full`),
epochs, best epoch, wall time, and NDCG@10 relative to `--baseline-ndcg` (default: the paper's 0.5360 on Games, the
best `sasrec` + `bce` record elsewhere). An HR@10 or NDCG@10 cell reads `value ± half-width of its 95% interval over
the test users` when the record holds that interval (`hr@10_ci95` etc.; records made before `bench_train.py` kept them
have the value alone).
"""

import argparse
import json
from pathlib import Path

import hf_sasrec

RESULTS = Path(__file__).resolve().parent / "results"
PAPER_GAMES_NDCG = 0.5360
# Model config fields of any variant; `loss_type` has its own column.
MODEL_FIELDS = {name for config, *_ in hf_sasrec.VARIANTS.values() for name in config.__annotations__} - {"loss_type"}


def batches_of(record: dict) -> str:
    """Bucketed runs name the strategy on their command line or, when their YAML sets it, use `--tag _bucketed`;
    streamed runs (`streaming=true`, bucketed in the shuffle buffer) are a kind of their own."""
    command = record.get("command", "")
    if "streaming=true" in command:
        return "streamed"
    return "bucketed" if "train_sampling_strategy=group_by_length" in command or "_bucketed" in command else "random"


def model_overrides(record: dict) -> str:
    """Model config overrides on the record's command line (e.g. `hidden_size=100`, `hidden_act=relu`), shown beside
    the variant."""
    words = record.get("command", "").split()
    return " ".join(word for word in words if word.split("=")[0] in MODEL_FIELDS)


def latest_per_run_kind(records: list[dict]) -> list[dict]:
    """The last record of each (variant, model overrides, loss, batches), sorted by variant, overrides, then `ce`
    before `bce`, random batches first."""
    latest = {(r["model_type"], model_overrides(r), r["loss_type"], batches_of(r)): r for r in records}
    order = list(hf_sasrec.VARIANTS)
    keys = sorted(latest, key=lambda k: (order.index(k[0]), k[1], k[2] != "ce", k[3] != "random"))
    return [latest[key] for key in keys]


def cell(record: dict, metric: str) -> str:
    """`metric`'s value, with `± {metric}_ci95` when the record has the interval."""
    ci95 = record.get(f"{metric}_ci95")
    return f"{record[metric]:.4f}" + (f" ± {ci95:.4f}" if ci95 is not None else "")


def table(records: list[dict], baseline: float, with_full: bool) -> str:
    """`with_full`: add the `full`-ranking figures of runs whose main protocol is `sampled`."""
    full_columns = ["full HR@10", "full NDCG@10"] if with_full else []
    columns = ["variant", "loss", "batches", "HR@10", "NDCG@10", "vs baseline", *full_columns]
    columns += ["epochs", "best epoch", "wall time"]
    lines = ["| " + " | ".join(columns) + " |", "|" + " --- |" * len(columns)]
    for record in records:
        variant = " ".join([f"`{record['model_type']}`", model_overrides(record)]).strip()
        cells = [variant, f"`{record['loss_type']}`", batches_of(record)]
        cells += [cell(record, "hr@10"), cell(record, "ndcg@10"), f"{record['ndcg@10'] / baseline - 1:+.1%}"]
        if with_full:
            cells += [cell(record, "full_hr@10"), cell(record, "full_ndcg@10")]
        cells += [f"{record['epochs']:g}", f"{record['best_epoch']:g}", f"{record['wall_s'] / 60:.0f} min"]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dataset", choices=["games", "beauty", "ml-100k"], required=True)
    parser.add_argument("--baseline-ndcg", type=float, help="NDCG@10 the relative column compares with")
    parser.add_argument(
        "--latest", action="store_true", help="one row per variant, model overrides, loss and batches: the last run"
    )
    args = parser.parse_args()
    lines = (RESULTS / f"train_{args.dataset}.jsonl").read_text().splitlines()
    records = [record for record in map(json.loads, lines) if "ndcg@10" in record and record.get("best_epoch")]
    baseline = args.baseline_ndcg
    if baseline is None and args.dataset == "games":
        baseline = PAPER_GAMES_NDCG
    if baseline is None:
        baseline = max(r["ndcg@10"] for r in records if r["model_type"] == "sasrec" and r["loss_type"] == "bce")
    if args.latest:
        records = latest_per_run_kind(records)
    print(table(records, baseline, with_full=args.dataset == "games"))


if __name__ == "__main__":
    main()
