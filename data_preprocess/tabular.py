"""Tabular logs with a column mapping: CSV/TSV, JSON Lines and Parquet, and history-list CSVs.

Columns default to `user_id`, `item_id`, `timestamp`, `rating` (MovieLens `ratings.csv`: `userId`, `movieId`, ...);
the time and rating columns are used where present, and an explicitly named column must exist. Times are numbers
(unix seconds) or ISO-8601 dates. A history-list CSV has one user a row and Python-literal lists:
`user_id, history_item_id, history_item_title`.
"""

from __future__ import annotations

import ast
import contextlib
import csv
import json
import re
import warnings
from collections import Counter, defaultdict
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from .errors import DataFormatError, PreprocessingError, logger, require_file
from .interactions import DEFAULT_COLUMNS, Columns, Interactions, ItemInfo, key_text, make_interactions
from .text_formats import OnError, iter_lines, undecodable_line

LOG_COLUMNS = Columns(user="user_id", item="item_id", time="timestamp", rating="rating")
MOVIELENS_CSV_COLUMNS = Columns(user="userId", item="movieId", time="timestamp", rating="rating")
HISTORY_COLUMNS = Columns(user="user_id", item="history_item_id", title="history_item_title")

Locate = Callable[[int], int]  # row position -> 1-based line (or row) number


class _Table:
    """Raw columns as read, and how to name the place of a row in an error."""

    def __init__(self, path: Path, frame: pd.DataFrame, locate: Locate, unit: str = "line") -> None:
        self.path, self.frame, self.locate, self.unit = path, frame, locate, unit

    def column(self, name: str | None, default: str | None, required: bool) -> str | None:
        """The column to use: `name` (must exist), else `default` where present (must, if `required`)."""
        wanted = name or default
        if wanted in self.frame:
            return wanted
        if name or required:
            raise DataFormatError(
                self.path, 1, f"no column {wanted!r} (columns: {', '.join(map(str, self.frame.columns))})"
            )
        return None

    def error(self, row: int, reason: str) -> DataFormatError:
        return DataFormatError(self.path, self.locate(row), reason, unit=self.unit)


def _csv_locator(path: Path, separator: str) -> Locate:
    """Map a data row (0-based, blank lines skipped as pandas does) to its line; scans the file only when asked."""

    def locate(row: int) -> int:
        with path.open(encoding="utf-8-sig", newline="") as handle:
            reader = csv.reader(handle, delimiter=separator)
            next(reader, None)
            records = (reader.line_num for fields in reader if fields)
            return next((line for index, line in enumerate(records) if index == row), 0)

    return locate


def _csv_options(path: Path, on_error: OnError) -> dict:
    separator = "\t" if path.suffix in (".tsv", ".tab") else ","
    options = {"sep": separator, "keep_default_na": False, "encoding": "utf-8-sig"}
    options["on_bad_lines"] = "warn" if on_error == "skip" else "error"
    return options


@contextlib.contextmanager
def _csv_errors(path: Path, dropped: Counter[str]) -> Iterator[list]:
    """pandas' CSV errors as `DataFormatError`s naming the line; skipped bad lines (the warnings left in the list it
    yields) counted in `dropped`."""
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            yield caught
    except pd.errors.ParserError as error:
        found = re.search(r"Expected (\d+) fields", str(error))
        width = int(found.group(1)) if found else 0
        with path.open(encoding="utf-8-sig", newline="") as handle:
            reader = csv.reader(handle, delimiter=_csv_options(path, "raise")["sep"])
            line = next((reader.line_num for fields in reader if fields and len(fields) != width), 0)
        raise DataFormatError(path, line, f"expected {width} fields: {error}") from None
    except UnicodeDecodeError:
        raise DataFormatError(path, undecodable_line(path, "utf-8"), "not valid utf-8") from None
    except pd.errors.EmptyDataError:
        raise DataFormatError(path, 1, "no header line (the file holds only blank lines)") from None
    dropped.update(malformed_line=sum(str(warning.message).count("Skipping line") for warning in caught))


def _read_csv(path: Path, on_error: OnError, dropped: Counter[str], numeric: tuple[str | None, ...] = ()) -> _Table:
    """Read every column as text, except the `numeric` ones, read as floats where they all parse (the fast path)."""
    options = _csv_options(path, on_error)
    with _csv_errors(path, dropped) as caught:
        try:
            dtypes = defaultdict(lambda: str, {name: np.float64 for name in numeric if name})
            frame = pd.read_csv(path, dtype=dtypes, **options)
        except ValueError as error:
            if isinstance(error, pd.errors.ParserError | pd.errors.EmptyDataError):
                raise
            caught.clear()
            frame = pd.read_csv(path, dtype=str, **options)
    return _Table(path, frame, _csv_locator(path, options["sep"]))


def _csv_chunks(path: Path, on_error: OnError, dropped: Counter[str], rows: int) -> Iterator[_Table]:
    """`_read_csv` `rows` data rows at a time, every column as text."""
    options = _csv_options(path, on_error)
    locate, first = _csv_locator(path, options["sep"]), 0
    with _csv_errors(path, dropped), pd.read_csv(path, dtype=str, chunksize=rows, **options) as reader:
        for frame in reader:
            yield _Table(path, frame, lambda row, first=first: locate(first + row))
            first += len(frame)


def _read_jsonl(path: Path, on_error: OnError, dropped: Counter[str]) -> _Table:
    records, lines = [], []
    for number, line in iter_lines(path):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
            if not isinstance(record, dict):
                raise ValueError("a line must hold a JSON object")
        except ValueError as error:
            if on_error == "raise":
                raise DataFormatError(path, number, f"not a JSON object: {error}", line) from None
            dropped["malformed_line"] += 1
            continue
        records.append(record)
        lines.append(number)
    return _Table(path, pd.DataFrame.from_records(records), lines.__getitem__)


def _read_parquet(path: Path, on_error: OnError, dropped: Counter[str]) -> _Table:
    try:
        frame = pd.read_parquet(path)
    except pa.ArrowInvalid as error:
        raise PreprocessingError(f"{path} is not a readable Parquet file: {error}") from None
    return _Table(path, frame, lambda row: row + 1, unit="row")


def _parquet_chunks(path: Path, wanted: set[str], rows: int) -> Iterator[_Table]:
    """The `wanted` columns of a Parquet file (those it has), `rows` rows at a time."""
    try:
        source = pq.ParquetFile(path)
    except pa.ArrowInvalid as error:
        raise PreprocessingError(f"{path} is not a readable Parquet file: {error}") from None
    columns, first = [name for name in source.schema_arrow.names if name in wanted], 0
    for batch in source.iter_batches(batch_size=rows, columns=columns):
        yield _Table(path, batch.to_pandas(), lambda row, first=first: first + row + 1, unit="row")
        first += batch.num_rows


def _keys(series: pd.Series) -> pd.Series:
    """Raw keys as stripped strings; "" where missing."""
    missing = series.isna()
    if pd.api.types.is_float_dtype(series) and np.all(np.mod(series[~missing], 1) == 0):
        series = series.astype("Int64")
    if pd.api.types.is_string_dtype(series):
        text = series.fillna("")
    elif pd.api.types.is_integer_dtype(series):
        text = series.astype(str)
    else:
        text = series.map(lambda value: "" if value is None or value != value else key_text(value)).astype(str)
    return text.where(~missing, "").str.strip()


def _missing(series: pd.Series) -> pd.Series:
    if pd.api.types.is_numeric_dtype(series) or pd.api.types.is_datetime64_any_dtype(series):
        return series.isna()
    return series.isna() | series.astype(str).str.strip().eq("")


def _times(series: pd.Series) -> tuple[pd.Series, pd.Series]:
    """Times as float unix seconds (NaN where unparseable), and where the value is missing."""
    missing = _missing(series)
    if pd.api.types.is_datetime64_any_dtype(series):
        values = series.dt.tz_localize("UTC") if series.dt.tz is None else series
        return (values - pd.Timestamp(0, tz="UTC")) / pd.Timedelta(seconds=1), missing
    numbers = pd.to_numeric(series, errors="coerce")
    if numbers[~missing].isna().all() and (~missing).any():
        dates = pd.to_datetime(series.where(~missing), utc=True, errors="coerce", format="ISO8601")
        numbers = (dates - pd.Timestamp(0, tz="UTC")) / pd.Timedelta(seconds=1)
    return numbers, missing


def _check(table: _Table, bad: pd.Series, reason: str, values: pd.Series, on_error: OnError, dropped: Counter) -> None:
    if bad.any():
        if on_error == "raise":
            row = int(np.argmax(bad.to_numpy()))
            raise table.error(row, f"{reason}: {values.iloc[row]!r}")
        dropped["malformed_line"] += int(bad.sum())


def _to_interactions(table: _Table, columns: Columns, defaults: Columns, on_error: OnError) -> Interactions:
    frame, dropped = table.frame, Counter()
    user_col = table.column(columns.user, defaults.user, required=True)
    item_col = table.column(columns.item, defaults.item, required=True)
    time_col = table.column(columns.time, defaults.time, required=False)
    rating_col = table.column(columns.rating, defaults.rating, required=False)
    title_col = table.column(columns.title, defaults.title, required=False)
    users, items = _keys(frame[user_col]), _keys(frame[item_col])
    keep = pd.Series(True, index=frame.index)
    for name, missing in (("missing_user", users.eq("")), ("missing_item", items.eq(""))):
        dropped[name] += int((missing & keep).sum())
        keep &= ~missing
    times = ratings = None
    if time_col is not None:
        times, missing = _times(frame[time_col])
        not_a_time = keep & ~missing & times.isna()
        _check(table, not_a_time, "timestamp is neither a number nor a date", frame[time_col], on_error, dropped)
        dropped["missing_timestamp"] += int((keep & missing).sum())
        keep &= times.notna()
    if rating_col is not None:
        raw = frame[rating_col]
        unrated = _missing(raw)
        ratings = pd.to_numeric(raw.where(~unrated), errors="coerce")
        _check(table, keep & ~unrated & ratings.isna(), "rating is not a number", raw, on_error, dropped)
        keep &= ratings.notna() | unrated
    log = make_interactions(
        users[keep],
        items[keep],
        None if times is None else np.floor(times[keep].to_numpy()).astype(np.int64),
        None if ratings is None else ratings[keep].to_numpy(dtype=np.float64),
    )
    if title_col is not None:
        titles = frame[title_col].where(keep).fillna("").astype(str)
        has_title = titles.ne("")
        log.items = {
            item: ItemInfo(title=title, genres=[])
            for item, title in zip(items[has_title], titles[has_title], strict=True)
        }
    log.dropped.update(+dropped)
    return log


READERS = {"csv": _read_csv, "jsonl": _read_jsonl, "parquet": _read_parquet}


def read_table(
    path: str | Path,
    kind: str,
    columns: Columns = DEFAULT_COLUMNS,
    defaults: Columns = LOG_COLUMNS,
    on_error: OnError = "raise",
) -> Interactions:
    """Read a CSV/TSV (`kind="csv"`), JSON Lines or Parquet log with the given column mapping."""
    path = require_file(path)
    dropped: Counter[str] = Counter()
    if kind == "csv":
        table = _read_csv(path, on_error, dropped, (columns.time or defaults.time, columns.rating or defaults.rating))
    else:
        table = READERS[kind](path, on_error, dropped)
    if len(table.frame.columns):
        log = _to_interactions(table, columns, defaults, on_error)
    else:  # no record at all (JSON Lines of blank or skipped lines): nothing to map, `prepare` says so
        log = make_interactions([], [])
    log.dropped.update(+dropped)
    return log


def read_table_chunks(
    path: str | Path,
    kind: str,
    columns: Columns = DEFAULT_COLUMNS,
    defaults: Columns = LOG_COLUMNS,
    on_error: OnError = "raise",
    rows: int = 1_000_000,
) -> Iterator[Interactions]:
    """`read_table` of a CSV/TSV (`kind="csv"`) or Parquet log, `rows` source rows at a time, for logs larger than
    memory. Each chunk's `timestamp` without a time column is its rows' position in the whole log."""
    path, dropped = require_file(path), Counter()
    if kind == "csv":
        chunks = _csv_chunks(path, on_error, dropped, rows)
    elif kind == "parquet":
        chunks = _parquet_chunks(
            path, {name for name in (*vars(columns).values(), *vars(defaults).values()) if name}, rows
        )
    else:
        raise PreprocessingError(f"reading in chunks takes csv or parquet logs, not {kind}")
    kept = 0
    for table in chunks:
        log = _to_interactions(table, columns, defaults, on_error)
        if not log.has_timestamps:
            log.frame["timestamp"] += kept
        log.frame.index += kept
        kept += len(log.frame)
        log.dropped.update(+dropped)
        dropped.clear()
        yield log
    if dropped:  # lines skipped after the last chunk's rows
        log = make_interactions([], [])
        log.dropped.update(+dropped)
        yield log


def _literal_list(text: str, what: str) -> list:
    try:
        value = ast.literal_eval(text) if text.strip() else []
    except (ValueError, SyntaxError):
        raise ValueError(f"{what} is not a Python list literal") from None
    if not isinstance(value, list | tuple):
        raise ValueError(f"{what} is not a list")
    return list(value)


def read_history_csv(
    path: str | Path, columns: Columns = DEFAULT_COLUMNS, on_error: OnError = "raise"
) -> Interactions:
    """One user a row, with the history as a Python-literal list (and optionally a list of titles beside it).

    Histories are in time order; no times. A user on several rows keeps the longest history (sliding-window files
    repeat prefixes); the other rows are dropped and counted.
    """
    path = require_file(path)
    dropped: Counter[str] = Counter()
    table = _read_csv(path, on_error, dropped)
    user_col = table.column(columns.user, HISTORY_COLUMNS.user, required=True)
    item_col = table.column(columns.item, HISTORY_COLUMNS.item, required=True)
    title_col = table.column(columns.title, HISTORY_COLUMNS.title, required=False)
    histories: dict[str, list[str]] = {}
    items: dict[str, ItemInfo] = {}
    titles_column = table.frame[title_col] if title_col else [""] * len(table.frame)
    rows = zip(table.frame[user_col], table.frame[item_col], titles_column, strict=True)
    for row, (user, history_text, titles_text) in enumerate(rows):
        try:
            history = [key_text(item).strip() for item in _literal_list(history_text, item_col)]
            titles = _literal_list(titles_text, title_col) if title_col else []
            if titles and len(titles) != len(history):
                raise ValueError(f"{len(history)} items but {len(titles)} titles")
            if "" in history:
                raise ValueError("empty item key in the history")
        except ValueError as error:
            if on_error == "raise":
                raise table.error(row, str(error)) from None
            dropped["malformed_line"] += 1
            continue
        user = user.strip()
        if not user:
            dropped["missing_user"] += 1
        elif not history:
            dropped["empty_history"] += 1
        else:
            if user in histories:
                dropped["duplicate_user_row"] += 1
                logger.debug("%s: user %r on several rows; keeping the longest history", path, user)
            if len(history) > len(histories.get(user, ())):
                histories[user] = history
            titled = zip(history, map(str, titles), strict=False)
            items.update({item: ItemInfo(title=title, genres=[]) for item, title in titled if title.strip()})
    log = make_interactions(
        [user for user, history in histories.items() for _ in history],
        [item for history in histories.values() for item in history],
    )
    log.items = items
    log.dropped.update(+dropped)
    return log
