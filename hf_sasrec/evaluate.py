"""Evaluate a saved next-item model on a processed split.

    python -m hf_sasrec.evaluate CKPT [--data DIR] [--split test] [--protocol full|sampled ...] [--include-history]
                                 [--trust-remote-code]

`CKPT` is a run folder of `hf_sasrec.sft` (or any `save_pretrained` folder of this package's models, or a Hub
repository id). The data folder and history length default to the run's `run_info.json`. The model is loaded and
checked by `load_checkpoint` (no code from the folder runs without `--trust-remote-code`), and the data folder's
tokenizer must be the model's item vocabulary. A data folder prepared with `--cold-items` adds the metrics of
cold-target and warm-target users; one with ratings adds `disliked@10` over the split's held-out dislikes, one with a
multi-valued item feature (genres) `diversity@10` (see `hf_sasrec.evaluation`). `--exposure-weight W` (full protocol)
ranks the lists of `hf_sasrec.reranking.ExposurePenalty` instead, re-ranked over the whole catalog in split order
(`hf_sasrec.infer --exposure-weight` re-ranks each user's best `--exposure-candidates` items, in input order).
Prints the metrics table; `--output` writes the metrics as JSON.
"""

import argparse
import logging
import math
from pathlib import Path

from data_preprocess.atomic_files import atomic_write_json

from .checkpoint_loading import check_item_vocabulary, load_checkpoint
from .evaluation import PROTOCOLS, evaluate_next_item, metrics_table
from .feature_inputs import attach_user_features, model_user_values
from .processed_data import beyond_accuracy_inputs, cold_item_ids, drop_short_rows, load_processed_data
from .reranking import ExposurePenalty
from .run_info import RunInfo

logger = logging.getLogger("hf_sasrec.evaluate")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m hf_sasrec.evaluate", description=__doc__)
    parser.add_argument("checkpoint", help="a saved model folder (e.g. outputs/sft/default)")
    parser.add_argument("--data", help="processed data folder (default: data_dir of the run's run_info.json)")
    parser.add_argument("--split", default="test", choices=("valid", "test"))
    parser.add_argument("--protocol", nargs="+", default=["full"], choices=PROTOCOLS)
    parser.add_argument("--include-history", action="store_true", help="full protocol: rank history items too")
    parser.add_argument("--num-sampled-negatives", type=int, default=100)
    parser.add_argument("--max-length", type=int, help="history items read (default: the run's max_length)")
    parser.add_argument("--batch-size", type=int, default=512)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--max-users", type=int, help="rank a fixed random sample of this many users (seeded)")
    parser.add_argument(
        "--exposure-weight",
        type=float,
        help="full protocol: re-rank with hf_sasrec.reranking.ExposurePenalty, this much score off every item an "
        "earlier user's list holds (users in split order), to measure what spreading the lists over the catalog costs",
    )
    parser.add_argument("--output", help="write the metrics to this JSON file")
    parser.add_argument(
        "--trust-remote-code",
        action="store_true",
        help="allow a model_type that only the checkpoint's own code implements (runs that code)",
    )
    args = parser.parse_args(argv)
    if args.exposure_weight is not None:
        if args.protocol != ["full"]:
            parser.error("--exposure-weight re-ranks whole lists: it goes with --protocol full only")
        if not 0 <= args.exposure_weight < math.inf:
            parser.error(f"--exposure-weight must be finite and at least 0, got {args.exposure_weight}")
    return args


def main(argv: list[str] | None = None) -> dict[str, float]:
    args = parse_args(argv)
    logging.basicConfig(format="%(levelname)s %(name)s: %(message)s", level=logging.INFO)
    checkpoint, model, _ = load_checkpoint(
        args.checkpoint, trust_remote_code=args.trust_remote_code, require_tokenizer=False
    )
    info = RunInfo.load(checkpoint, missing_ok=True)
    data_dir = args.data or info.data_dir
    if data_dir is None:
        raise ValueError(f"{checkpoint} records no data_dir (run_info.json): pass --data.")
    splits, _, data_tokenizer = load_processed_data(data_dir)
    extras = beyond_accuracy_inputs(data_dir, args.split, splits["train"], model.config.vocab_size)
    check_item_vocabulary(model.config, data_tokenizer, checkpoint, Path(data_dir) / "tokenizer")
    split = drop_short_rows(splits[args.split], args.split)
    if model.config.user_features:
        split = attach_user_features(model, {args.split: split}, model_user_values(model.config, data_dir))[args.split]
    metrics = {}
    for protocol in args.protocol:
        exposure = (
            None if args.exposure_weight is None else ExposurePenalty(model.config.vocab_size, args.exposure_weight)
        )
        scores = evaluate_next_item(
            model,
            split,
            protocol=protocol,
            exclude_history=not args.include_history,
            num_sampled_negatives=args.num_sampled_negatives,
            batch_size=args.batch_size,
            max_length=args.max_length or info.max_length,
            seed=args.seed,
            max_users=args.max_users,
            cold_items=cold_item_ids(data_dir),
            rerank=exposure,
            **extras,
        )
        metrics.update({f"{args.split}_{name}": value for name, value in scores.items()})
    print(metrics_table(metrics, prefix=f"{args.split}_"))
    if args.output:
        atomic_write_json(args.output, metrics)
    return metrics


if __name__ == "__main__":
    main()
