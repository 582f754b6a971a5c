"""How much does MovieLens-100K say about which recommended films a user will dislike? The ceiling behind the
`dislikes` target of `bench_alignment.py`.

A demotion cuts held-out dislikes from the top 10 without costing next items only if it ranks those dislikes below
the user's next liked item: `bench_alignment.separation`, an AUC over (held-out dislike, next item) pairs of one
user. This benchmark measures that AUC for the signals a reviewer would reach for, on the SFT runs of
`bench_alignment.py` (trained there unless already under `--work`), over two sets of pairs of the test split:
`top 50` (dislikes the SFT model ranks in its top 50: the ones a demotion must move) and `all` (every held-out
dislike: whether the signal predicts dislikes at all). Signals, each a demotion (larger = more suspect):

- `popularity`: `log(1 + training count)` of the item (the best re-ranker of `bench_alignment.py`);
- `low item mean rating`: minus the item's mean training rating, shrunk to the global mean by `SHRINK` ratings;
- `rating model`: minus the rating predicted by a biased matrix factorisation (global mean, user and item biases,
  factors) fitted to the 1-5 ratings of the embedded MovieLens-100K of the data folder's users and items, except the
  validation and test targets and the held-out dislikes. A setting of `RATING_MODELS` (factors, L2 weight) counts
  only if it is a working rating model: fitted to nine tenths of those ratings, its RMSE on the last tenth must beat
  the item mean's; of those, the one with the best AUC on the validation `top 50` pairs of the same seed is kept.

One JSON line per (seed, signal) to `benchmarks/results/dislike_signal_ml-100k.jsonl`, the summary to `.md`.

    OMP_NUM_THREADS=1 python benchmarks/bench_dislike_signal.py [--seeds 0 1 2] [--work DIR]
"""

import argparse
import json
import logging
import statistics
from datetime import datetime, timezone
from pathlib import Path

import torch
from bench_alignment import ROOT, SEPARATION_TOP, ScoreRecorder, evaluate, prepare_data, separation, train_sft
from bench_item_features import code_version, write_summary
from datasets import Dataset
from transformers import AutoModelForCausalLM, PreTrainedModel, PreTrainedTokenizerFast

from data_preprocess.dislikes import load_dislikes
from data_preprocess.formats import embedded_movielens, read_interactions
from hf_sasrec.processed_data import beyond_accuracy_inputs, drop_short_rows, load_processed_data

logger = logging.getLogger("bench_dislike_signal")
RESULTS = Path(__file__).parent / "results"
SHRINK = 5.0
# rating model: (factors, L2 weight per rating) tried; fitted by full-batch Adam.
RATING_MODELS = ((8, 0.05), (8, 0.1), (32, 0.01), (32, 0.1), (64, 0.1), (64, 0.3))
RATING_STEPS = 300
RATING_LR = 0.02


# (user index, token id, rating) of each rating, three `[ratings]` tensors.
Ratings = tuple[torch.Tensor, torch.Tensor, torch.Tensor]


def training_ratings(
    rows: list[dict], valid_rows: list[dict], dislikes: dict[str, dict], tokenizer: PreTrainedTokenizerFast
) -> Ratings:
    """Every rating of the embedded MovieLens-100K a model may train on, users indexed as `rows` (the test split's):
    not a user's test target (the last item of its row in `rows`) or validation target (of `valid_rows`), not one of
    the held-out `dislikes` (`{part: {user: [token ids]}}`); ratings of users or items outside the data folder are
    left out, and counted in the log."""
    held_out = {(user, item) for part in dislikes.values() for user, items in part.items() for item in items}
    user_index = {str(row["user_id"]): index for index, row in enumerate(rows)}
    held_out |= {(str(row["user_id"]), row["item_ids"][-1]) for row in [*rows, *valid_rows]}
    frame = read_interactions(embedded_movielens(), "atomic").frame
    vocab = tokenizer.get_vocab()
    users, items, ratings, outside = [], [], [], 0
    for user, item, rating in zip(frame["user"], frame["item"], frame["rating"], strict=True):
        token = vocab.get(item)
        if user not in user_index or token is None:
            outside += 1
        elif (user, token) not in held_out:
            users.append(user_index[user])
            items.append(token)
            ratings.append(rating)
    logger.info(
        "%d training ratings; %d held out; %d of users or items outside the data",
        len(ratings),
        len(frame) - len(ratings) - outside,
        outside,
    )
    return torch.tensor(users), torch.tensor(items), torch.tensor(ratings, dtype=torch.float32)


def item_mean_rating(items: torch.Tensor, ratings: torch.Tensor, vocab_size: int) -> torch.Tensor:
    """Each item's mean rating shrunk to the global mean by `SHRINK` ratings, `[vocab_size]`."""
    total = torch.zeros(vocab_size).index_add_(0, items, ratings)
    count = torch.zeros(vocab_size).index_add_(0, items, torch.ones_like(ratings))
    return (total + SHRINK * ratings.mean()) / (count + SHRINK)


def fit_rating_model(ratings: Ratings, num_users: int, vocab_size: int, factors: int, l2: float) -> torch.Tensor:
    """The predicted rating of every (user, item) of a biased matrix factorisation fitted to `ratings` (squared
    error plus `l2` times the squared norms of each rating's parameters), `[num_users, vocab_size]`."""
    users, items, values = ratings
    mean = values.mean()
    user_factors = (0.01 * torch.randn(num_users, factors)).requires_grad_()
    item_factors = (0.01 * torch.randn(vocab_size, factors)).requires_grad_()
    user_bias = torch.zeros(num_users, requires_grad=True)
    item_bias = torch.zeros(vocab_size, requires_grad=True)
    optimizer = torch.optim.Adam([user_factors, item_factors, user_bias, item_bias], lr=RATING_LR)
    for _ in range(RATING_STEPS):
        predicted = mean + user_bias[users] + item_bias[items] + (user_factors[users] * item_factors[items]).sum(-1)
        penalty = user_factors[users].pow(2).sum(-1) + item_factors[items].pow(2).sum(-1)
        penalty = penalty + user_bias[users].pow(2) + item_bias[items].pow(2)
        loss = ((predicted - values).pow(2) + l2 * penalty).mean()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    with torch.no_grad():
        return mean + user_bias[:, None] + item_bias[None, :] + user_factors @ item_factors.T


def rmse(predicted: torch.Tensor, ratings: Ratings) -> float:
    """The RMSE of `predicted` (`[users, vocab_size]`) on `ratings`."""
    users, items, values = ratings
    return (predicted[users, items] - values).pow(2).mean().sqrt().item()


def tenth_split(ratings: Ratings) -> tuple[Ratings, Ratings]:
    """A random nine tenths of `ratings` and the tenth left."""
    order = torch.randperm(len(ratings[2]))
    rest, tenth = order[len(order) // 10 :], order[: len(order) // 10]
    return tuple(part[rest] for part in ratings), tuple(part[tenth] for part in ratings)


def ranked(model: PreTrainedModel, split: Dataset, inputs: dict) -> torch.Tensor:
    """The SFT model's scores of every user of `split`, in the split's order (`[users, vocab_size]`, excluded items
    at -inf)."""
    recorder = ScoreRecorder()
    evaluate(model, split, inputs, recorder)
    return recorder.scores()


def aligned(values: torch.Tensor, rows: list[dict], reference: list[dict]) -> torch.Tensor:
    """`values` (one row per user of `reference`) reordered to the users of `rows`."""
    index = {str(row["user_id"]): position for position, row in enumerate(reference)}
    return values[[index[str(row["user_id"])] for row in rows]]


def summary(lines: list[dict]) -> str:
    """Markdown: per signal, the mean ± std over seeds of each AUC (the latest line of each signal and seed)."""
    lines = list({(line["signal"], line["seed"]): line for line in lines}.values())
    signals = list(dict.fromkeys(line["signal"] for line in lines))
    seeds = sorted({line["seed"] for line in lines})
    out = [
        "# What MovieLens-100K says about dislikes: separation of held-out dislikes from the next liked item",
        "",
        f"`python benchmarks/bench_dislike_signal.py`; seeds {', '.join(map(str, seeds))}; code "
        f"{lines[-1]['code']}. AUC over (held-out test dislike, the user's next item) pairs: 0.5 no separation, "
        f"1 every dislike demoted more. `top {SEPARATION_TOP}`: dislikes the SFT model ranks in its top "
        f"{SEPARATION_TOP} (what a re-ranker must move); `all`: every held-out dislike. Mean ± std over seeds "
        "(pairs per seed).",
        "",
        f"| signal | top {SEPARATION_TOP} | all | chosen |",
        "| --- | --- | --- | --- |",
    ]
    for signal in signals:
        rows = [line for line in lines if line["signal"] == signal]
        cells = []
        for key in ("top", "all"):
            aucs = [row[key]["auc"] for row in rows]
            spread = statistics.stdev(aucs) if len(aucs) > 1 else 0.0
            pairs = statistics.mean(row[key]["pairs"] for row in rows)
            cells.append(f"{statistics.mean(aucs):.3f} ± {spread:.3f} ({pairs:.0f})")
        chosen = "; ".join(f"seed {row['seed']}: {row['chosen']}" for row in rows if row.get("chosen"))
        out.append(f"| {signal} | {cells[0]} | {cells[1]} | {chosen} |")
    return "\n".join(out) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--work", type=Path, default=ROOT / "outputs" / "bench" / "alignment")
    parser.add_argument("--output", type=Path, default=RESULTS / "dislike_signal_ml-100k.jsonl")
    args = parser.parse_args()
    logging.basicConfig(format="%(asctime)s %(message)s", level=logging.INFO)
    (args.work / "runs").mkdir(parents=True, exist_ok=True)
    data_dir = prepare_data(args.work)
    splits, _, _ = load_processed_data(str(data_dir))
    valid, test = (drop_short_rows(splits[name], name) for name in ("valid", "test"))
    tokenizer = PreTrainedTokenizerFast.from_pretrained(data_dir / "tokenizer")
    rows, valid_rows = list(test), list(valid)
    dislikes = {name: load_dislikes(data_dir, name) for name in ("valid", "test")}
    ratings = training_ratings(rows, valid_rows, dislikes, tokenizer)
    for seed in args.seeds:
        model = AutoModelForCausalLM.from_pretrained(train_sft(data_dir, args.work, seed)).eval()
        vocab_size = model.config.vocab_size
        inputs = {
            name: beyond_accuracy_inputs(data_dir, name, splits["train"], vocab_size) for name in ("valid", "test")
        }
        valid_scores, test_scores = (
            ranked(model, split, inputs[name]) for name, split in (("valid", valid), ("test", test))
        )
        counts = inputs["test"]["item_counts"].float()
        signals = {
            "popularity": (torch.log1p(counts).expand(len(rows), -1), ""),
            "low item mean rating": (
                (-item_mean_rating(ratings[1], ratings[2], vocab_size)).expand(len(rows), -1),
                "",
            ),
        }
        torch.manual_seed(seed)
        rest, tenth = tenth_split(ratings)
        item_mean = item_mean_rating(rest[1], rest[2], vocab_size).expand(len(rows), -1)
        baseline = rmse(item_mean, tenth)
        logger.info("seed %d: item mean RMSE %.3f on a tenth of the ratings", seed, baseline)
        best = None
        for factors, l2 in RATING_MODELS:
            error = rmse(fit_rating_model(rest, len(rows), vocab_size, factors, l2), tenth)
            if error >= baseline:
                logger.info("seed %d rating model %d factors, L2 %g: RMSE %.3f, not kept", seed, factors, l2, error)
                continue
            demotion = -fit_rating_model(ratings, len(rows), vocab_size, factors, l2)
            auc = separation(aligned(demotion, valid_rows, rows), valid_scores, valid_rows, dislikes["valid"])["auc"]
            logger.info(
                "seed %d rating model %d factors, L2 %g: RMSE %.3f, validation AUC %.3f", seed, factors, l2, error, auc
            )
            if best is None or auc > best[0]:
                best = (
                    auc,
                    demotion,
                    f"{factors} factors, L2 {l2}: RMSE {error:.3f} (item mean {baseline:.3f}), "
                    f"validation AUC {auc:.3f}",
                )
        if best is None:
            raise RuntimeError(f"seed {seed}: no setting of RATING_MODELS beats the item mean's RMSE {baseline:.3f}")
        signals["rating model"] = best[1:]
        for signal, (demotion, chosen) in signals.items():
            line = {
                "signal": signal,
                "seed": seed,
                "top": separation(demotion, test_scores, rows, dislikes["test"]),
                "all": separation(demotion, test_scores, rows, dislikes["test"], top=vocab_size),
                "chosen": chosen,
                "code": code_version(),
                "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            }
            logger.info("seed %d %s: top %.3f, all %.3f", seed, signal, line["top"]["auc"], line["all"]["auc"])
            with args.output.open("a") as file:
                file.write(json.dumps(line) + "\n")
    write_summary(args.output, summary)


if __name__ == "__main__":
    main()
