"""Item and user tables: one row per raw id, with feature columns.

Read from CSV/TSV (every cell as text), JSON Lines, Parquet, a `datasets` folder (`save_to_disk`), a RecBole atomic
`.item`/`.user` file (tab-separated, `name:type` header: `token` columns are categorical, `token_seq` columns
space-separated lists, `float` columns numbers), GroupLens ML-100K's `u.item`/`u.user` (with RecBole's column
names), or one JSON object `{id: {feature: value}}` (`.json`, as some competition data sets ship). Rows without an id
are dropped and counted; a second row for an id, or a malformed row, raises `DataFormatError` naming the file and the
line (the row, for Parquet and `datasets`), or is counted with `on_error="skip"`. Columns not declared are inferred
(`infer_specs`).
"""

from __future__ import annotations

import json
import math
import re
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from .errors import DataFormatError, PreprocessingError, logger, record_drops, require_file
from .feature_schema import FeatureSpec
from .interactions import key_text
from .item_info import MOVIELENS_ENCODINGS, parse_u_item_line, u_item_genres
from .tabular import READERS
from .text_formats import OnError, iter_lines, parse_number, undecodable_line

# RecBole atomic column types, and the feature kind each gives.
ATOMIC_KINDS = {"token": "categorical", "token_seq": "multi", "float": "numeric"}
_WHITESPACE = re.compile(r"\s*")
_TITLE_YEAR = re.compile(r"\((\d{4})\)\s*$")


@dataclass
class FeatureTable:
    """A table as read: `frame` holds the raw cells of the rows kept (its index is each row's 0-based position in
    the file, for error messages), `keys` their ids; `kinds` the feature kinds the file declares (atomic headers)."""

    path: Path
    frame: pd.DataFrame
    keys: pd.Series
    locate: Callable[[int], int]
    unit: str = "line"
    kinds: dict[str, str] = field(default_factory=dict)
    dropped: Counter[str] = field(default_factory=Counter)

    def error(self, position: int, reason: str) -> DataFormatError:
        """A `DataFormatError` naming the file and the line of the row at 0-based `position`."""
        return DataFormatError(self.path, self.locate(position), reason, unit=self.unit)

    def require_column(self, column: str) -> pd.Series:
        if column not in self.frame:
            columns = ", ".join(map(str, self.frame.columns))
            raise DataFormatError(self.path, 1, f"no column {column!r} (columns: {columns})", unit=self.unit)
        return self.frame[column]


def is_missing(value: object, missing_values: frozenset[str] = frozenset()) -> bool:
    """No value: `None`, NaN, an empty or blank string, or one of `missing_values`."""
    if value is None or value is pd.NA or (isinstance(value, float | np.floating) and math.isnan(value)):
        return True
    return isinstance(value, str) and (not value.strip() or value.strip() in missing_values)


def _json_object(path: Path, on_error: OnError, dropped: Counter[str], id_column: str) -> FeatureTable:
    """`{id: {feature: value}, ...}`, scanned value by value so that each record knows its line."""
    try:
        text = path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError:
        raise DataFormatError(path, undecodable_line(path, "utf-8"), "not valid utf-8") from None
    decoder = json.JSONDecoder()

    def line_at(position: int) -> int:
        return text.count("\n", 0, position) + 1

    def skip(position: int, expected: str) -> int:
        position = _WHITESPACE.match(text, position).end()
        if not text.startswith(expected, position):
            found = text[position : position + 20] or "the end of the file"
            raise DataFormatError(path, line_at(position), f"expected {expected!r}, found {found!r}")
        return _WHITESPACE.match(text, position + 1).end()

    records, lines = [], []
    try:
        position, first = skip(0, "{"), True
        while not text.startswith("}", position):
            position = position if first else skip(position, ",")
            first = False
            if not text.startswith('"', position):
                raise DataFormatError(path, line_at(position), "expected a string key", text[position : position + 20])
            key, position = decoder.raw_decode(text, position)
            start = skip(position, ":")
            value, position = decoder.raw_decode(text, start)
            position = _WHITESPACE.match(text, position).end()
            if isinstance(value, dict):
                records.append({**value, id_column: key})
                lines.append(line_at(start))
            elif on_error == "raise":
                reason = f"the value of {key!r} is not an object {{feature: value}}"
                raise DataFormatError(path, line_at(start), reason, json.dumps(value))
            else:
                dropped["malformed_line"] += 1
        if skip(position, "}") < len(text):
            raise DataFormatError(path, line_at(position), "extra data after the object")
    except json.JSONDecodeError as error:
        raise DataFormatError(path, error.lineno, f"not valid JSON: {error.msg}") from None
    return FeatureTable(path, pd.DataFrame.from_records(records), pd.Series(dtype=str), lines.__getitem__)


def _atomic_value(text: str, column: str, kind: str | None) -> object:
    if kind == "multi":
        return text.split()
    if kind == "numeric":
        return parse_number(text, f"column {column!r}: value") if text.strip() else math.nan
    return text


def _parsed_rows(
    path: Path, lines: Iterator[tuple[int, str]], parse: Callable[[str], list], on_error: OnError, dropped: Counter
) -> tuple[list[list], list[int]]:
    """`parse` every non-blank line (a `ValueError` raises `DataFormatError` naming the line, or is counted); the
    records and their line numbers."""
    records, numbers = [], []
    for number, line in lines:
        if not line.strip():
            continue
        try:
            records.append(parse(line))
            numbers.append(number)
        except ValueError as error:
            if on_error == "raise":
                raise DataFormatError(path, number, str(error), line) from None
            dropped["malformed_line"] += 1
    return records, numbers


def _atomic(path: Path, on_error: OnError, dropped: Counter[str], id_column: str) -> FeatureTable:
    """A RecBole `.item`/`.user` file; `float_seq` and other vector columns are read as text and left to declare."""
    lines = iter_lines(path)
    _, header = next(lines, (1, ""))
    names, types = zip(*(field.partition(":")[::2] for field in header.split("\t")), strict=True)
    kinds = {name: ATOMIC_KINDS[kind] for name, kind in zip(names, types, strict=True) if kind in ATOMIC_KINDS}

    def parse(line: str) -> list:
        fields = line.split("\t")
        if len(fields) != len(names):
            raise ValueError(f"expected {len(names)} tab-separated fields, found {len(fields)}")
        return [_atomic_value(cell, name, kinds.get(name)) for name, cell in zip(names, fields, strict=True)]

    records, numbers = _parsed_rows(path, lines, parse, on_error, dropped)
    frame = pd.DataFrame.from_records(records, columns=list(names))
    return FeatureTable(path, frame, pd.Series(dtype=str), numbers.__getitem__, kinds=kinds)


def _u_item(path: Path, on_error: OnError, dropped: Counter[str], id_column: str) -> FeatureTable:
    """GroupLens ML-100K `u.item` (no header), with RecBole's column names: `item_id`, `movie_title`,
    `release_year` (the film's year, from its title, `Heat (1995)`; else from the release date, `01-Jan-1995`, which
    is often a later re-release) and `class` (the flagged genres)."""
    genres = u_item_genres(path)

    def parse(line: str) -> list:
        fields, flagged = parse_u_item_line(line, genres)
        title_year = _TITLE_YEAR.search(fields[1])
        year = title_year.group(1) if title_year else fields[2].rpartition("-")[2]
        return [fields[0], fields[1], year, flagged]

    records, numbers = _parsed_rows(path, iter_lines(path, MOVIELENS_ENCODINGS), parse, on_error, dropped)
    frame = pd.DataFrame.from_records(records, columns=[id_column, "movie_title", "release_year", "class"])
    kinds = {"release_year": "categorical", "class": "multi"}
    return FeatureTable(path, frame, pd.Series(dtype=str), numbers.__getitem__, kinds=kinds)


def _u_user(path: Path, on_error: OnError, dropped: Counter[str], id_column: str) -> FeatureTable:
    """GroupLens ML-100K `u.user`: `user|age|gender|occupation|zip`, no header; columns named as RecBole's."""
    names = [id_column, "age", "gender", "occupation", "zip_code"]

    def parse(line: str) -> list:
        fields = line.split("|")
        if len(fields) != len(names):
            raise ValueError(f"expected {len(names)} '|'-separated fields, found {len(fields)}")
        return fields

    records, numbers = _parsed_rows(path, iter_lines(path, MOVIELENS_ENCODINGS), parse, on_error, dropped)
    frame = pd.DataFrame.from_records(records, columns=names)
    return FeatureTable(path, frame, pd.Series(dtype=str), numbers.__getitem__)


def _datasets_folder(path: Path, on_error: OnError, dropped: Counter[str], id_column: str) -> FeatureTable:
    from datasets import Dataset, load_from_disk

    dataset = load_from_disk(str(path))
    if not isinstance(dataset, Dataset):
        raise PreprocessingError(f"{path} holds several splits ({', '.join(dataset)}); give the folder of one")
    return FeatureTable(path, dataset.to_pandas(), pd.Series(dtype=str), lambda row: row + 1, unit="row")


def _shared_reader(kind: str) -> Callable[[Path, OnError, Counter[str], str], FeatureTable]:
    """The interaction logs' CSV, JSON Lines and Parquet readers, giving a `FeatureTable`."""

    def read(path: Path, on_error: OnError, dropped: Counter[str], id_column: str) -> FeatureTable:
        table = READERS[kind](path, on_error, dropped)
        return FeatureTable(path, table.frame, pd.Series(dtype=str), table.locate, unit=table.unit)

    return read


TABLE_READERS = {
    ".csv": _shared_reader("csv"),
    ".tsv": _shared_reader("csv"),
    ".tab": _shared_reader("csv"),
    ".jsonl": _shared_reader("jsonl"),
    ".ndjson": _shared_reader("jsonl"),
    ".parquet": _shared_reader("parquet"),
    ".pq": _shared_reader("parquet"),
    ".json": _json_object,
    ".item": _atomic,
    ".user": _atomic,
}
MOVIELENS_TABLES = {"u.item": _u_item, "u.user": _u_user}


def _keep_one_row_per_id(table: FeatureTable, id_column: str, on_error: OnError) -> None:
    """Set `table.keys`; drop rows without an id (counted) and second rows for an id (an error, or counted)."""
    keys = table.require_column(id_column).map(lambda value: "" if is_missing(value) else key_text(value).strip())
    missing = keys.eq("").to_numpy()
    repeated = keys.duplicated().to_numpy() & ~missing
    if repeated.any() and on_error == "raise":
        position = int(np.argmax(repeated))
        first = int(np.argmax(keys.eq(keys.iloc[position]).to_numpy()))
        where = f"{table.unit} {table.locate(first)}"
        raise table.error(position, f"a second row for {id_column} {keys.iloc[position]!r} (first on {where})")
    record_drops(table.dropped, "missing_id", int(missing.sum()), f"{table.path.name}: no {id_column}")
    record_drops(table.dropped, "duplicate_id", int(repeated.sum()), f"{table.path.name}: a second row")
    keep = ~(missing | repeated)
    table.frame, table.keys = table.frame[keep], keys[keep]


def read_feature_table(path: str | Path, id_column: str, on_error: OnError = "raise") -> FeatureTable:
    """Read an item or user table keyed by `id_column` (a JSON object is keyed by its own keys)."""
    path = Path(path)
    if path.is_dir():
        reader = _datasets_folder
    else:
        require_file(path)
        reader = MOVIELENS_TABLES.get(path.name) or TABLE_READERS.get(path.suffix.lower())
        if reader is None:
            raise PreprocessingError(
                f"{path}: unknown table format; expected a .csv, .tsv, .jsonl, .json ({{id: {{feature: value}}}}), "
                ".parquet, RecBole .item/.user file, ML-100K u.item/u.user, or a datasets folder"
            )
        if path.stat().st_size == 0:
            raise PreprocessingError(f"{path} is empty: there is no row to read")
    dropped: Counter[str] = Counter()
    table = reader(path, on_error, dropped, id_column)
    if table.frame.empty:
        raise PreprocessingError(f"{path}: no row to read ({dropped['malformed_line']} malformed)")
    table.frame = table.frame.reset_index(drop=True)
    record_drops(table.dropped, "malformed_line", dropped["malformed_line"], table.path.name)
    _keep_one_row_per_id(table, id_column, on_error)
    logger.info("%s: %d rows, one per %s", path, len(table.keys), id_column)
    return table


def _kind_of(values: pd.Series) -> str | None:
    """The kind of a column's present values: lists are multi-valued, numbers (or text that parses as them) numeric,
    other scalars categorical; `None` for anything else (objects, mixed lists and scalars) or a categorical column
    whose values are all different (an identifier, a title: it would only repeat the item id)."""
    if values.map(lambda value: isinstance(value, list | tuple | np.ndarray)).all():
        return "multi"
    if not values.map(lambda value: isinstance(value, str | int | float | np.generic)).all():
        return None
    flags = values.map(lambda value: isinstance(value, bool | np.bool_)).any()
    if not flags and pd.to_numeric(values, errors="coerce").notna().all():
        return "numeric"
    return "categorical" if values.map(key_text).nunique() < len(values) else None


def infer_specs(table: FeatureTable, id_column: str) -> tuple[FeatureSpec, ...]:
    """A declaration for every column but the id: the kind its file declares, else the kind of its values (see
    `_kind_of`); columns of another shape, or empty, are left out (logged)."""
    specs = []
    for column in table.frame.columns:
        if column == id_column:
            continue
        values = table.frame[column][~table.frame[column].map(is_missing)]
        kind = table.kinds.get(column) or (_kind_of(values) if len(values) else None)
        name = re.sub(r"[^A-Za-z0-9_-]", "_", str(column))
        if kind is None:
            logger.warning(
                "%s: column %r left out (empty, all values different, or not scalars nor lists); declare it to use it",
                table.path,
                column,
            )
            continue
        specs.append(FeatureSpec(name=name, kind=kind, column=str(column)))
    logger.info("%s: inferred features %s", table.path, ", ".join(f"{spec.name}:{spec.kind}" for spec in specs))
    return tuple(specs)
