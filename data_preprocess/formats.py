"""Which reader a source needs: format names, detection from the file, and the embedded MovieLens-100K."""

from __future__ import annotations

import importlib.resources
from itertools import islice
from pathlib import Path

from .errors import PreprocessingError, require_file
from .interactions import DEFAULT_COLUMNS, Columns, Interactions
from .item_info import read_item_info
from .tabular import MOVIELENS_CSV_COLUMNS, read_history_csv, read_table
from .text_formats import OnError, iter_lines, read_atomic, read_rating_lines, read_sasrec, read_user_lines

FORMATS = [
    "auto",
    "ml-100k",
    "ml-1m",
    "ml-csv",
    "atomic",
    "sasrec",
    "user-lines",
    "csv",
    "jsonl",
    "parquet",
    "history-csv",
]
# Interaction files a directory is searched for, in order.
KNOWN_FILES = ("u.data", "ratings.dat", "ratings.csv")
# The MovieLens item file beside the ratings.
ITEM_FILES = {"ml-100k": "u.item", "ml-1m": "movies.dat", "ml-csv": "movies.csv"}


def embedded_movielens() -> Path:
    """RecBole's bundled ML-100K atomic file (`pip install --no-deps recbole==1.2.1`), found without importing it."""
    try:
        root = importlib.resources.files("recbole")
    except ModuleNotFoundError:
        raise FileNotFoundError(
            "the embedded MovieLens-100K comes from the recbole wheel: pip install --no-deps recbole==1.2.1"
        ) from None
    return require_file(Path(str(root / "dataset_example" / "ml-100k" / "ml-100k.inter")))


def resolve_input(path: str | Path) -> Path:
    """A file as is; a directory: the first MovieLens ratings file or RecBole `.inter` file in it."""
    path = Path(path)
    if not path.is_dir():
        return require_file(path)
    for name in KNOWN_FILES:
        if (path / name).is_file():
            return path / name
    inter = sorted(path.glob("*.inter"))
    if inter:
        return inter[0]
    raise FileNotFoundError(f"{path}: no u.data, ratings.dat, ratings.csv or *.inter in this directory")


def detect_format(path: Path) -> str:
    """Guess the format from the file name, the CSV header, or (for text) the number of fields on the first lines."""
    suffix = path.suffix.lower()
    if path.name == "u.data":
        return "ml-100k"
    if path.name == "ratings.dat" or suffix == ".dat":
        return "ml-1m"
    if suffix == ".inter":
        return "atomic"
    if suffix in (".jsonl", ".json", ".ndjson"):
        return "jsonl"
    if suffix in (".parquet", ".pq"):
        return "parquet"
    first_lines = list(islice((line for _, line in iter_lines(path) if line.strip()), 1000))
    if suffix in (".csv", ".tsv"):
        header = first_lines[0] if first_lines else ""
        if "history_item_id" in header:
            return "history-csv"
        return "ml-csv" if header.startswith("userId,movieId") else "csv"
    widths = {len(line.split()) for line in first_lines}
    if widths == {2}:
        return "sasrec"
    if widths == {4}:
        return "ml-100k"
    return "user-lines"


def default_item_file(path: Path, fmt: str) -> Path | None:
    """The item side file expected beside an interaction file, if it is there."""
    if fmt == "atomic":
        candidate = path.with_suffix(".item")
    elif fmt in ITEM_FILES:
        candidate = path.with_name(ITEM_FILES[fmt])
    else:
        return None
    return candidate if candidate.is_file() else None


def read_interactions(
    path: Path,
    fmt: str,
    columns: Columns = DEFAULT_COLUMNS,
    item_file: Path | None = None,
    on_error: OnError = "raise",
) -> Interactions:
    """Read an interaction log in format `fmt` (not "auto"), with titles from `item_file` or the default one beside."""
    if path.stat().st_size == 0:
        raise PreprocessingError(f"{path} is empty: there is no interaction to read")
    if fmt in ("ml-100k", "ml-1m"):
        log = read_rating_lines(path, None if fmt == "ml-100k" else "::", on_error)
    elif fmt == "ml-csv":
        log = read_table(path, "csv", columns, MOVIELENS_CSV_COLUMNS, on_error)
    elif fmt == "atomic":
        log = read_atomic(path, columns, on_error)
    elif fmt == "sasrec":
        log = read_sasrec(path, on_error)
    elif fmt == "user-lines":
        log = read_user_lines(path, on_error)
    elif fmt == "history-csv":
        log = read_history_csv(path, columns, on_error)
    elif fmt in ("csv", "jsonl", "parquet"):
        log = read_table(path, fmt, columns, on_error=on_error)
    else:
        raise PreprocessingError(f"unknown format {fmt!r}; expected one of {', '.join(FORMATS)}")
    item_file = item_file or default_item_file(path, fmt)
    if item_file is not None:
        items, dropped = read_item_info(item_file, on_error)
        log.items.update(items)
        log.dropped.update({f"item_file_{reason}": count for reason, count in dropped.items()})
    return log
