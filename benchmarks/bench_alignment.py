"""Does preference alignment beat the baselines a reviewer proposes first? MovieLens-100K with held-out dislikes.

Under `--work`, each step skipped when its output is already there:
- `data/ml-100k-liked`: `python -m data_preprocess --min-rating 3`: ratings of 2 or less are dislikes, kept out of
  the sequences and split by `data_preprocess.dislikes` into the part that may train (`pairs`, half), the part that
  selects (`valid`) and the part that is reported (`test`);
- `runs/sft-seed{S}`: `python -m hf_sasrec.sft --config train_configs/sft/default.yaml` on that data, seed S;
- per arm of `ARMS` and seed: a DPO config (`python -m hf_sasrec.dpo`, from that SFT model, its pairs under the
  run folder), SFT with an unlikelihood term on the `pairs` dislikes (`--unlikelihood_weight W`, trained anew), or a
  re-ranker of `hf_sasrec.reranking` over the SFT model's scores, whose weight is chosen on the validation split:
  the largest of `WEIGHTS` that keeps the validation NDCG@10 within 2% of the SFT model's.

Every arm is ranked on the test split in this process (`evaluate_users`: full ranking, history excluded) with its
goal metrics: NDCG@10, HR@10, disliked@10 (the test part of the dislikes), coverage@10, popularity percentile@10
(novelty: lower is more novel) and diversity@10 over genres, each with its 95% interval over users, and the paired
difference against the SFT model of the same seed; and its separation: how well the arm's demotion of items (the SFT
score minus the arm's) singles out the held-out dislikes the SFT model ranks high over the user's next item, an AUC
(`separation`). One JSON line per (arm, seed) goes to
`benchmarks/results/alignment_ml-100k.jsonl`; the summary (mean ± std over seeds; the mean paired change with the
interval of the mean of independent seeds, `sqrt(sum h_i^2) / n`) to `alignment_ml-100k.md`.

    OMP_NUM_THREADS=1 python benchmarks/bench_alignment.py [--seeds 0 1 2] [--arms ...] [--work DIR]
    OMP_NUM_THREADS=1 python benchmarks/bench_alignment.py --sweep     # the validation sweep behind dislikes.yaml
"""

import argparse
import json
import logging
import math
import sys
from datetime import datetime, timezone
from pathlib import Path

import torch
from bench_item_features import code_version, run, seeds_interval, write_summary
from transformers import AutoModelForCausalLM

from data_preprocess.dislikes import load_dislikes
from hf_sasrec.evaluation import (
    COVERAGE_K,
    coverage,
    coverage_interval,
    evaluate_users,
    mean_with_interval,
    paired_difference,
)
from hf_sasrec.processed_data import beyond_accuracy_inputs, drop_short_rows, load_processed_data
from hf_sasrec.reranking import DislikeRatePenalty, DislikeSimilarityPenalty, ExposurePenalty, PopularityPenalty

logger = logging.getLogger("bench_alignment")
ROOT = Path(__file__).resolve().parent.parent
RESULTS = Path(__file__).parent / "results"
SFT_CONFIG = "train_configs/sft/default.yaml"
# arm: ("dpo", its config, extra options), ("rerank", its re-ranker) or ("sft", the unlikelihood weight on the
# `pairs` dislikes); "sft" (weight None) is the model all arms start from and are compared with.
ARMS = {
    "sft": ("sft", None, []),
    "dpo-dislikes": ("dpo", "train_configs/dpo/dislikes.yaml", []),
    "sdpo-dislikes": ("dpo", "train_configs/dpo/dislikes.yaml", ["--loss_type", "softmax_dpo", "--num_rejected", "8"]),
    "sft-unlikelihood-1": ("sft", "1.0", []),
    "sft-unlikelihood-5": ("sft", "5.0", []),
    "rerank-dislikes": ("rerank", "dislike-similarity", []),
    "rerank-dislike-rate": ("rerank", "dislike-rate", []),
    "dpo-novelty": ("dpo", "train_configs/dpo/novelty.yaml", []),
    "sdpo-novelty": ("dpo", "train_configs/dpo/novelty.yaml", ["--loss_type", "softmax_dpo", "--num_rejected", "8"]),
    "rerank-popularity": ("rerank", "popularity", []),
    "rerank-exposure": ("rerank", "exposure", []),
}
# The validation sweep behind `train_configs/dpo/dislikes.yaml` (`--sweep`, seed 0): options added to that config.
SWEEP = {
    "3 epochs (the recipe)": [],
    "6 epochs": ["--num_train_epochs", "6"],
    "10 epochs": ["--num_train_epochs", "10"],
    "beta 0.01": ["--beta", "0.01"],
    "every position, 1 epoch": ["--all_positions", "true", "--num_train_epochs", "1"],
    "10 epochs + SFT loss (RPO)": [
        *("--loss_type", "sigmoid", "sft", "--loss_weights", "1.0", "1.0"),
        *("--num_train_epochs", "10"),
    ],
    "S-DPO 8 rejected, 3 epochs": ["--loss_type", "softmax_dpo", "--num_rejected", "8"],
    "S-DPO 8 rejected, 10 epochs": ["--loss_type", "softmax_dpo", "--num_rejected", "8", "--num_train_epochs", "10"],
}
WEIGHTS = (0.05, 0.1, 0.2, 0.5, 1.0, 2.0, 5.0)
SELECTION_TOLERANCE = 0.02
# separation: held-out dislikes ranked this high by the SFT model (history excluded) are compared with the next item.
SEPARATION_TOP = 50
# reported metric: its name in the per-user values ("coverage@10" is a property of all lists together).
REPORTED = ("ndcg@10", "hr@10", "disliked@10", "coverage@10", "popularity_percentile@10", "diversity@10")


def prepare_data(work: Path) -> Path:
    """The MovieLens-100K folder with dislikes kept apart (`--min-rating 3`), made unless already there."""
    data_dir = work / "data" / "ml-100k-liked"
    if not (data_dir / "dataset_dict.json").exists():
        command = [sys.executable, "-m", "data_preprocess", "--output", str(data_dir), "--min-rating", "3"]
        run(command, work / "prepare.log")
    return data_dir


def train_sft(data_dir: Path, work: Path, seed: int, arm: str = "sft", unlikelihood: str | None = None) -> Path:
    """The SFT run of `seed` (with `--unlikelihood_weight` when given), trained unless its `metrics.json` is there."""
    run_dir = work / "runs" / f"{arm}-seed{seed}"
    if not (run_dir / "metrics.json").exists():
        command = [sys.executable, "-m", "hf_sasrec.sft", "--config", SFT_CONFIG, "--data_dir", str(data_dir)]
        command += ["--output_dir", str(run_dir), "--seed", str(seed), "--overwrite_output_dir", "true"]
        command += ["--report_to", "none", "--disable_tqdm", "true"]
        command += ["--unlikelihood_weight", unlikelihood] if unlikelihood else []
        run(command, work / "runs" / f"{arm}-seed{seed}.log")
    return run_dir


def train_dpo(arm: str, config: str, options: list[str], sft_dir: Path, work: Path, seed: int) -> tuple[Path, float]:
    """The DPO run of `arm` from `sft_dir` (selection split: validation); its folder and seconds (0 when reused)."""
    run_dir = work / "runs" / f"{arm}-seed{seed}"
    if (run_dir / "metrics.json").exists():
        return run_dir, 0.0
    command = [sys.executable, "-m", "hf_sasrec.dpo", "--config", config, "--sft_dir", str(sft_dir)]
    command += ["--output_dir", str(run_dir), "--preference_dir", str(work / "pairs" / f"{arm}-seed{seed}")]
    command += ["--seed", str(seed), "--pair_seed", str(seed), "--eval_split", "valid", "--report_to", "none"]
    command += ["--overwrite_output_dir", "true", "--disable_tqdm", "true", *options]
    seconds, _ = run(command, work / "runs" / f"{arm}-seed{seed}.log")
    return run_dir, seconds


def reranker(kind: str, model, data_dir: Path, item_counts: torch.Tensor, weight: float):
    """The re-ranker `kind` of `hf_sasrec.reranking` with `weight`."""
    if kind == "popularity":
        return PopularityPenalty(item_counts, weight)
    if kind == "exposure":
        return ExposurePenalty(len(item_counts), weight)
    if kind == "dislike-rate":
        return DislikeRatePenalty(item_counts, load_dislikes(data_dir, "pairs"), weight)
    with torch.no_grad():
        vectors = model.item_embeddings()
    return DislikeSimilarityPenalty(vectors, load_dislikes(data_dir, "pairs"), weight)


def evaluate(model, split, inputs: dict, rerank=None) -> tuple[dict[str, torch.Tensor], torch.LongTensor]:
    """Per-user values and top-10 lists of `model` on `split` (full ranking, history excluded)."""
    values, _, lists = evaluate_users(model, split, k_values=(10,), rerank=rerank, **inputs)
    return values, lists


def catalog_coverage(model, lists: torch.LongTensor) -> float:
    """coverage@10 of `lists` over `model`'s catalog."""
    return coverage(lists, model.config.vocab_size, model.config.num_special_tokens)


class ScoreRecorder:
    """A re-ranker that applies `rerank` (if any) and keeps the scores it ranks by: those of every user
    (`[users, vocab_size]`, excluded items at -inf) and their rows, in the order evaluated."""

    def __init__(self, rerank=None):
        self.rerank = rerank
        self.batches: list[torch.Tensor] = []
        self.rows: list[dict] = []

    def __call__(self, scores: torch.Tensor, rows: list[dict]) -> torch.Tensor:
        if self.rerank is not None:
            scores = self.rerank(scores, rows)
        self.batches.append(scores)
        self.rows.extend(rows)
        return scores

    def scores(self) -> torch.Tensor:
        """Every user's scores so far, `[users, vocab_size]`."""
        return torch.cat(self.batches)


def separation(
    demotion: torch.Tensor, sft_scores: torch.Tensor, rows: list[dict], dislikes: dict, top: int = SEPARATION_TOP
) -> dict:
    """How well an arm's demotion (`[users, vocab_size]`: the SFT score minus the arm's) singles out what the user
    will dislike: over the pairs (held-out dislike ranked in the SFT model's `top`, the user's next
    item, which is liked), the share where the dislike is demoted more (ties count half): an AUC, 0.5 for no
    separation. Scores are compared within a user only, so a shift of a whole row does not count."""
    ranks = sft_scores.argsort(dim=1, descending=True).argsort(dim=1)
    wins = []
    for user, row in enumerate(rows):
        target = demotion[user, row["item_ids"][-1]]
        for item in dislikes.get(str(row["user_id"]), ()):
            if ranks[user, item] < top:
                wins.append(float(demotion[user, item] > target) + 0.5 * float(demotion[user, item] == target))
    return {"auc": sum(wins) / len(wins) if wins else math.nan, "pairs": len(wins)}


def choose_weight(kind: str, model, data_dir: Path, valid, inputs: dict) -> tuple[float, list[dict]]:
    """The largest weight of `WEIGHTS` whose validation NDCG@10 is within `SELECTION_TOLERANCE` of no re-ranking
    (0 if none is); also each weight's validation NDCG@10 and goal metric."""
    base = evaluate(model, valid, inputs)[0]["ndcg@10"].mean().item()
    chosen, trace = 0.0, []
    for weight in WEIGHTS:
        values, lists = evaluate(model, valid, inputs, reranker(kind, model, data_dir, inputs["item_counts"], weight))
        ndcg = values["ndcg@10"].mean().item()
        trace.append(
            {
                "weight": weight,
                "valid_ndcg@10": ndcg,
                "valid_disliked@10": values["disliked@10"].nanmean().item(),
                "valid_coverage@10": catalog_coverage(model, lists),
            }
        )
        if ndcg >= (1 - SELECTION_TOLERANCE) * base:
            chosen = weight
    return chosen, trace


def record(arm: str, seed: int, evaluated: tuple, sft: tuple, catalog: tuple[int, int], extra: dict) -> dict:
    """The JSON line of one arm and seed (`evaluate`'s values and lists, and the SFT model's; `catalog`: vocabulary
    size and special tokens): each metric's mean and interval, and its paired change against SFT (coverage@10: its
    bootstrap intervals, `coverage_interval`)."""
    (values, lists), (sft_values, sft_lists) = evaluated, sft
    line = {"time": datetime.now(timezone.utc).isoformat(timespec="seconds"), "arm": arm, "seed": seed}
    line["code"] = code_version()
    for name in REPORTED:
        if name == f"coverage@{COVERAGE_K}":
            mean, half_width = coverage_interval(lists, *catalog)
            change, change_half_width = coverage_interval(lists, *catalog, baseline=sft_lists)
        else:
            mean, half_width = mean_with_interval(values[name])
            change, change_half_width = paired_difference(values[name], sft_values[name])
        line[name] = {"mean": mean, "ci95": half_width, "change": change, "change_ci95": change_half_width}
    return line | extra


def summary(lines: list[dict]) -> str:
    """The markdown summary of the latest line of each (arm, seed)."""
    latest = {(line["arm"], line["seed"]): line for line in lines}
    arms = [arm for arm in ARMS if any(key[0] == arm for key in latest)]
    header = "| arm | seeds | " + " | ".join(REPORTED) + " |"
    out = [
        "# Preference alignment on MovieLens-100K with held-out dislikes",
        "",
        f"`python benchmarks/bench_alignment.py`, code: {lines[-1]['code']}. Data: `python -m data_preprocess "
        "--min-rating 3` (ratings ≤ 2 are dislikes: half may build pairs, a quarter selects, a quarter is "
        "reported). SFT: `train_configs/sft/default.yaml`. Test split, full ranking, history excluded.",
        "",
        "Each cell: mean ± standard deviation over seeds; below it, the paired change against the SFT model of the "
        "same seed, mean over seeds with its 95% interval (users are the unit; seeds combined as independent "
        "estimates). popularity_percentile@10: lower is more novel. coverage@10: bootstrap intervals over users.",
        "",
        header,
        "| --- " * (len(REPORTED) + 2) + "|",
    ]
    for arm in arms:
        rows = [line for key, line in sorted(latest.items()) if key[0] == arm]
        cells, changes = [], []
        for name in REPORTED:
            means = torch.tensor([row[name]["mean"] for row in rows], dtype=torch.double)
            std = means.std().item() if len(means) > 1 else 0.0
            cells.append(f"{means.mean().item():.4f} ± {std:.4f}")
            change = sum(row[name]["change"] for row in rows) / len(rows)
            if "change_ci95" in rows[0][name]:
                half_width = seeds_interval([row[name]["change_ci95"] for row in rows])
                changes.append(f"{change:+.4f} ± {half_width:.4f}")
            else:
                changes.append(f"{change:+.4f}")
        out.append(f"| {arm} | {len(rows)} | " + " | ".join(cells) + " |")
        if arm != "sft":
            out.append("| (change vs sft) | | " + " | ".join(changes) + " |")
    out += ["", "Issue 14 targets (relative changes: mean change over the SFT mean):", ""]
    base = {name: sum(line[name]["mean"] for key, line in latest.items() if key[0] == "sft") for name in REPORTED}
    base_seeds = sum(key[0] == "sft" for key in latest)
    for arm in arms[1:] if base_seeds else []:
        rows = [line for key, line in latest.items() if key[0] == arm]

        def relative(name: str, rows: list[dict] = rows) -> float:
            return sum(row[name]["change"] for row in rows) / len(rows) / (base[name] / base_seeds)

        ndcg = sum(row["ndcg@10"]["change"] for row in rows) / len(rows)
        ndcg_half = seeds_interval([row["ndcg@10"]["change_ci95"] for row in rows])
        if "dislike" in arm or "unlikelihood" in arm:
            met = relative("disliked@10") <= -0.30 and ndcg + ndcg_half >= 0
            out.append(
                f"- {arm}: disliked@10 {relative('disliked@10'):+.1%} (target −30%), NDCG@10 change {ndcg:+.4f} ± "
                f"{ndcg_half:.4f} (target: not significantly negative): {'met' if met else 'not met'}."
            )
        else:
            gain = max(relative("coverage@10"), -relative("popularity_percentile@10"))
            met = gain >= 0.20 and relative("ndcg@10") >= -0.02
            out.append(
                f"- {arm}: coverage@10 {relative('coverage@10'):+.1%}, popularity percentile "
                f"{relative('popularity_percentile@10'):+.1%} (target: +20% coverage or novelty), NDCG@10 "
                f"{relative('ndcg@10'):+.1%} (target: no more than −2%): {'met' if met else 'not met'}."
            )
    separated = [arm for arm in arms if any("separation" in line for key, line in latest.items() if key[0] == arm)]
    if separated:
        out += [
            "",
            f"Separation: how well each arm's demotion (the SFT score minus the arm's) singles out a held-out dislike "
            f"that the SFT model ranks in its top {SEPARATION_TOP} over the user's next (liked) item, as an AUC "
            "(0.5: no separation; 1: every such dislike demoted more than the next item). Mean over seeds (pairs "
            "per seed). Cutting dislikes at no cost in NDCG needs a demotion that separates well.",
            "",
        ]
        for arm in separated:
            rows = [
                line["separation"] for key, line in sorted(latest.items()) if key[0] == arm and "separation" in line
            ]
            auc = sum(row["auc"] for row in rows) / len(rows)
            out.append(f"- {arm}: {auc:.3f} ({', '.join(str(row['pairs']) for row in rows)} pairs)")
    weights = [line for line in latest.values() if "weight" in line]
    if weights:
        out += ["", "Re-ranker weights chosen on validation (largest within 2% of SFT's validation NDCG@10):", ""]
        out += [
            f"- {line['arm']} seed {line['seed']}: {line['weight']}"
            for line in sorted(weights, key=lambda line: (line["arm"], line["seed"]))
        ]
    return "\n".join(out) + "\n"


def sweep(work: Path, data_dir: Path, splits, valid, output: Path) -> None:
    """Run `SWEEP` from the seed-0 SFT model and write the validation changes against it to `output` (markdown)."""
    sft_dir = train_sft(data_dir, work, 0)
    sft_model = AutoModelForCausalLM.from_pretrained(sft_dir).eval()
    inputs = beyond_accuracy_inputs(data_dir, "valid", splits["train"], sft_model.config.vocab_size)
    base, base_lists = evaluate(sft_model, valid, inputs)
    base_coverage = catalog_coverage(sft_model, base_lists)
    out = [
        "# Validation sweep of the `dislikes` DPO recipe (MovieLens-100K, seed 0)",
        "",
        f"`python benchmarks/bench_alignment.py --sweep`, code: {code_version()}. Each variant adds its options to "
        "`train_configs/dpo/dislikes.yaml`; validation split (the `valid` dislikes), paired change against the SFT "
        "model with its 95% interval; relative change in brackets.",
        "",
        "| variant | NDCG@10 change | disliked@10 change | popularity percentile change | coverage@10 |",
        "| --- | --- | --- | --- | --- |",
    ]
    for number, (name, options) in enumerate(SWEEP.items()):
        run_dir, _ = train_dpo(f"sweep{number}", "train_configs/dpo/dislikes.yaml", options, sft_dir, work, 0)
        values, lists = evaluate(AutoModelForCausalLM.from_pretrained(run_dir).eval(), valid, inputs)
        coverage = catalog_coverage(sft_model, lists)
        cells = []
        for metric in ("ndcg@10", "disliked@10", "popularity_percentile@10"):
            change, half_width = paired_difference(values[metric], base[metric])
            relative = change / mean_with_interval(base[metric])[0]
            cells.append(f"{change:+.4f} ± {half_width:.4f} ({relative:+.0%})")
        out.append(f"| {name} | " + " | ".join(cells) + f" | {base_coverage:.3f} → {coverage:.3f} |")
        logger.info("sweep %s: %s", name, cells)
    output.write_text("\n".join(out) + "\n")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--arms", nargs="+", choices=list(ARMS), default=list(ARMS))
    parser.add_argument("--work", type=Path, default=ROOT / "outputs" / "bench" / "alignment")
    parser.add_argument("--output", type=Path, default=RESULTS / "alignment_ml-100k.jsonl")
    parser.add_argument("--sweep", action="store_true", help="run the validation sweep of the dislikes recipe only")
    parser.add_argument("--summarize", action="store_true", help="only write the summary of the results file")
    args = parser.parse_args()
    if args.summarize:
        write_summary(args.output, summary)
        return
    logging.basicConfig(format="%(asctime)s %(message)s", level=logging.INFO)
    (args.work / "runs").mkdir(parents=True, exist_ok=True)
    data_dir = prepare_data(args.work)
    splits, _, _ = load_processed_data(str(data_dir))
    valid, test = (drop_short_rows(splits[name], name) for name in ("valid", "test"))
    if args.sweep:
        sweep(args.work, data_dir, splits, valid, RESULTS / "alignment_sweep_ml-100k.md")
        return
    for seed in args.seeds:
        sft_dir = train_sft(data_dir, args.work, seed)
        sft_model = AutoModelForCausalLM.from_pretrained(sft_dir).eval()
        vocab_size = sft_model.config.vocab_size
        valid_inputs = beyond_accuracy_inputs(data_dir, "valid", splits["train"], vocab_size)
        test_inputs = beyond_accuracy_inputs(data_dir, "test", splits["train"], vocab_size)
        sft_recorder = ScoreRecorder()
        sft = evaluate(sft_model, test, test_inputs, sft_recorder)
        sft_scores, rows = sft_recorder.scores(), sft_recorder.rows
        for arm in args.arms:
            kind, spec, options = ARMS[arm]
            extra: dict = {}
            rerank = None
            if kind == "sft" and spec is None:
                evaluated = sft
            elif kind == "sft":
                model = AutoModelForCausalLM.from_pretrained(train_sft(data_dir, args.work, seed, arm, spec)).eval()
                extra = {"unlikelihood_weight": float(spec)}
            elif kind == "dpo":
                run_dir, seconds = train_dpo(arm, spec, options, sft_dir, args.work, seed)
                model = AutoModelForCausalLM.from_pretrained(run_dir).eval()
                extra = {"dpo_s": seconds, "config": spec, "options": options}
            else:
                weight, trace = choose_weight(spec, sft_model, data_dir, valid, valid_inputs)
                model, rerank = sft_model, reranker(spec, sft_model, data_dir, test_inputs["item_counts"], weight)
                extra = {"weight": weight, "selection": trace}
            if arm != "sft":
                recorder = ScoreRecorder(rerank)
                evaluated = evaluate(model, test, test_inputs, recorder)
                demotion = sft_scores - recorder.scores()
                extra["separation"] = separation(demotion, sft_scores, rows, test_inputs["disliked_items"])
            catalog = (vocab_size, sft_model.config.num_special_tokens)
            line = record(arm, seed, evaluated, sft, catalog, extra)
            with args.output.open("a") as file:
                file.write(json.dumps(line) + "\n")
            logger.info(
                "%s seed %d: NDCG@10 %.4f, disliked@10 %.4f",
                arm,
                seed,
                line["ndcg@10"]["mean"],
                line["disliked@10"]["mean"],
            )
    write_summary(args.output, summary)


if __name__ == "__main__":
    main()
