"""`python -m data_preprocess`: prepare a dataset; with no `--input`, MovieLens-100K from the recbole wheel."""

from __future__ import annotations

import argparse

from .errors import setup_cli_output
from .formats import FORMATS
from .interactions import Columns
from .pipeline import SPLITS, prepare


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m data_preprocess", description=__doc__)
    parser.add_argument("--input", help="interaction file or directory (default: the embedded MovieLens-100K)")
    parser.add_argument("--output", default="data/ml-100k", help="output directory (default: %(default)s)")
    parser.add_argument("--format", default="auto", choices=FORMATS, help="input format (default: from the file)")
    parser.add_argument("--name", help="dataset name in stats.json (default: from the file name)")
    parser.add_argument("--item-file", help="titles/genres file (default: u.item, movies.dat, ... beside the input)")
    parser.add_argument("--min-rating", type=float, help="keep interactions rated at least this")
    parser.add_argument("--low-rating", type=float, default=2.0, help="ratings at most this are DPO negatives")
    parser.add_argument("--k-core", type=int, help="drop users and items with fewer interactions, until stable")
    parser.add_argument("--dedup-consecutive", action="store_true", help="drop repeats of the previous item")
    parser.add_argument("--max-length", type=int, default=50, help="history length kept (default: %(default)s)")
    parser.add_argument("--split", default="leave-one-out", choices=SPLITS)
    parser.add_argument("--valid-start", type=int, help="time split: start of the valid window (unix time)")
    parser.add_argument("--test-start", type=int, help="time split: start of the test window (unix time)")
    parser.add_argument("--on-error", default="raise", choices=("raise", "skip"), help="on a malformed line")
    mapping = parser.add_argument_group("column mapping (csv, jsonl, parquet, history-csv, atomic)")
    mapping.add_argument("--user-col", help="user column (default user_id; userId for MovieLens CSV)")
    mapping.add_argument("--item-col", help="item column (default item_id; history_item_id for history-csv)")
    mapping.add_argument("--time-col", help="time column, unix seconds or ISO dates (default timestamp, if present)")
    mapping.add_argument("--rating-col", help="rating column (default rating, if present)")
    mapping.add_argument("--title-col", help="item title column (history-csv default: history_item_title)")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    setup_cli_output()
    prepare(
        args.input,
        args.output,
        format=args.format,
        columns=Columns(args.user_col, args.item_col, args.time_col, args.rating_col, args.title_col),
        item_file=args.item_file,
        min_rating=args.min_rating,
        low_rating=args.low_rating,
        k_core=args.k_core,
        dedup_consecutive=args.dedup_consecutive,
        max_length=args.max_length,
        split=args.split,
        valid_start=args.valid_start,
        test_start=args.test_start,
        name=args.name,
        on_error=args.on_error,
    )


if __name__ == "__main__":
    main()
