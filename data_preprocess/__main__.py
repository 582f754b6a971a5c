"""`python -m data_preprocess`: prepare a dataset; with no `--input`, MovieLens-100K from the recbole wheel.

User errors (a missing, empty or malformed input, options that give an empty split, ...) are one line on stderr.
"""

from __future__ import annotations

import argparse
import dataclasses
import re
from pathlib import Path

from .embedding_tables import EmbeddingSource
from .errors import PreprocessingError, cli_errors, setup_cli_output
from .feature_schema import parse_feature_specs
from .features import FeatureSources
from .formats import FORMATS
from .interactions import Columns
from .pipeline import SPLITS, prepare
from .streamed import prepare_streamed

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
    parser.add_argument(
        "--cold-items",
        type=float,
        metavar="FRACTION",
        help="hold this fraction of the items out of the train split (the cold-item protocol; cold_items.json)",
    )
    parser.add_argument("--cold-items-seed", type=int, default=0, help="seed of the cold items' draw (default 0)")
    streaming = parser.add_argument_group(
        "logs larger than memory (data_preprocess.streamed)",
        "--streaming reads a CSV/TSV or Parquet file, or a folder of them, a chunk at a time and writes each split "
        "in shards; leave-one-out only, no side features or cold items",
    )
    streaming.add_argument("--streaming", action="store_true", help="prepare in bounded memory")
    streaming.add_argument("--chunk-rows", type=int, default=1_000_000, help="rows read at a time (%(default)s)")
    streaming.add_argument(
        "--partition-rows", type=int, default=2_000_000, help="interactions of a part, one shard each (%(default)s)"
    )
    streaming.add_argument("--work-dir", help="folder for the intermediate files (default: the temporary folder)")
    mapping = parser.add_argument_group("column mapping (csv, jsonl, parquet, history-csv, atomic)")
    mapping.add_argument("--user-col", help="user column (default user_id; userId for MovieLens CSV)")
    mapping.add_argument("--item-col", help="item column (default item_id; history_item_id for history-csv)")
    mapping.add_argument("--time-col", help="time column, unix seconds or ISO dates (default timestamp, if present)")
    mapping.add_argument("--rating-col", help="rating column (default rating, if present)")
    mapping.add_argument("--title-col", help="item title column (history-csv default: history_item_title)")
    features = parser.add_argument_group(
        "side features, written to OUTPUT/features (layout: data_preprocess.feature_schema)",
        "Declarations are NAME[=COLUMN]:KIND[:OPTION], comma-separated: genres:multi:| (split on |), "
        "year=release_year:categorical, price:numeric, age:numeric:8 (8 quantile buckets) or age:numeric:18/25/35.",
    )
    features.add_argument(
        "--item-table",
        metavar="PATH",
        help="one row per item: .csv/.tsv, .jsonl, .json {id: {...}}, .parquet, a datasets folder, .item, u.item",
    )
    features.add_argument("--item-features", metavar="SPECS", help="item columns to use (default: all, inferred)")
    features.add_argument("--item-table-id-col", metavar="COL", help="the item table's id column (default item_id)")
    features.add_argument("--user-table", metavar="PATH", help="one row per user, same formats (.user, u.user)")
    features.add_argument("--user-features", metavar="SPECS", help="user columns to use (default: all, inferred)")
    features.add_argument("--user-table-id-col", metavar="COL", help="the user table's id column (default user_id)")
    features.add_argument(
        "--embedding",
        action="append",
        default=[],
        metavar="NAME=PATH[:IDS]",
        help="a modality table (repeatable): PATH.npy with IDS, its item-id list (text or JSON), or a .parquet or "
        "datasets folder with item_id and vector columns (IDS: the vector column)",
    )
    features.add_argument("--missing-values", metavar="VALUES", help="comma-separated values meaning missing (NA,?)")
    features.add_argument(
        "--feature-min-count", metavar="N", type=int, help="rarer categorical values are unknown (default 1)"
    )
    features.add_argument(
        "--feature-preset",
        default="auto",
        choices=("auto", "ml-100k", "none"),
        help="ml-100k: MovieLens-100K's own features (genres, year; age, gender, occupation), from the embedded "
        "files or from u.item and u.user beside an ML-100K --input; auto (default): ml-100k without --input, "
        "none with one",
    )
    return parser.parse_args(argv)


def feature_sources(args: argparse.Namespace) -> FeatureSources:
    """The features the options ask for: the preset's (MovieLens-100K's own, by default for the embedded data set),
    with the tables and declarations given replacing its, and the embedding tables added."""
    preset = args.feature_preset
    if preset == "auto":
        preset = "ml-100k" if args.input is None else "none"
    sources = FeatureSources()
    if preset == "ml-100k" and args.input is None:
        sources = FeatureSources.movielens_100k()
    elif preset == "ml-100k":
        sources = FeatureSources.movielens_100k(args.input if Path(args.input).is_dir() else Path(args.input).parent)
    changes: dict = {"embeddings": sources.embeddings + tuple(map(EmbeddingSource.parse, args.embedding))}
    for entity in ("item", "user"):
        if getattr(args, f"{entity}_table"):
            changes[f"{entity}_table"], changes[f"{entity}_features"] = Path(getattr(args, f"{entity}_table")), None
        if getattr(args, f"{entity}_features"):
            changes[f"{entity}_features"] = parse_feature_specs(getattr(args, f"{entity}_features"))
        if getattr(args, f"{entity}_table_id_col"):
            changes[f"{entity}_id_column"] = getattr(args, f"{entity}_table_id_col")
    if args.missing_values is not None:
        changes["missing_values"] = frozenset(value.strip() for value in args.missing_values.split(","))
    if args.feature_min_count is not None:
        changes["min_count"] = args.feature_min_count
    return dataclasses.replace(sources, **changes)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    setup_cli_output()
    with cli_errors(PROG):
        if args.input is None and not args.streaming:
            check_default_output(args.output)
        prepare_from_args(args)


def streamed_from_args(args: argparse.Namespace) -> None:
    """`prepare_streamed` with the command-line options; refuses by name the ones it does not take."""
    refused = {
        "--input (the embedded MovieLens-100K is small: prepare it without --streaming)": args.input is None,
        "--format other than csv or parquet": args.format not in ("auto", "csv", "parquet"),
        "--split time": args.split != "leave-one-out",
        "--cold-items": args.cold_items is not None,
        "side features (--item-table, --user-table, --embedding, --feature-preset ml-100k)": bool(
            args.item_table or args.user_table or args.embedding or args.feature_preset == "ml-100k"
        ),
    }
    for option, given in refused.items():
        if given:
            raise PreprocessingError(f"--streaming does not support {option}")
    prepare_streamed(
        args.input,
        args.output,
        **common_options(args),
        chunk_rows=args.chunk_rows,
        partition_rows=args.partition_rows,
        work_dir=args.work_dir,
    )


def common_options(args: argparse.Namespace) -> dict:
    """The options `prepare` and `prepare_streamed` both take."""
    return {
        "columns": Columns(args.user_col, args.item_col, args.time_col, args.rating_col, args.title_col),
        "item_file": args.item_file,
        "min_rating": args.min_rating,
        "low_rating": args.low_rating,
        "k_core": args.k_core,
        "keep_duplicates": args.keep_duplicates,
        "dedup_consecutive": args.dedup_consecutive,
        "max_length": args.max_length,
        "name": args.name,
        "on_error": args.on_error,
    }


def prepare_from_args(args: argparse.Namespace) -> None:
    """`prepare` with the command-line options."""
    if args.streaming:
        streamed_from_args(args)
        return
    prepare(
        args.input,
        args.output,
        format=args.format,
        **common_options(args),
        split=args.split,
        valid_start=args.valid_start,
        test_start=args.test_start,
        features=feature_sources(args),
        cold_items=args.cold_items,
        cold_items_seed=args.cold_items_seed,
    )


if __name__ == "__main__":
    main()
