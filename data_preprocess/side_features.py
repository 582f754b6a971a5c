"""Encode declared feature columns into tensors, one row per item token id (or per user), as `feature_schema` lays
them out: categorical and multi-valued columns through a vocabulary, numeric columns standardised (and bucketed).

A cell without a value (`None`, NaN, blank, or one of `missing_values`) is `MISSING_ID` (numeric: the missing mask),
never an error; a cell of the wrong shape (a list for a categorical feature, text that is not a number for a numeric
one, an infinite number) raises `DataFormatError` naming the file, the line and the column, or with
`on_error="skip"` is counted as `malformed` and taken as missing.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from .errors import logger
from .feature_schema import (
    FIRST_VALUE_ID,
    MISSING_ID,
    PADDING_ID,
    UNKNOWN_ID,
    FeatureSpec,
    feature_schema,
)
from .feature_tables import FeatureTable, is_missing
from .interactions import key_text, natural_key
from .text_formats import OnError, parse_number

Vocabulary = list[str | None]  # index = id; `None` at the reserved ids


@dataclass
class EncodedFeatures:
    """The tensors of one entity's features (`[num_rows, ...]` each), with their schema entries, vocabularies and
    statistics, by feature name."""

    tensors: dict[str, np.ndarray] = field(default_factory=dict)
    schema: dict[str, dict] = field(default_factory=dict)
    vocabularies: dict[str, Vocabulary] = field(default_factory=dict)
    stats: dict[str, dict] = field(default_factory=dict)


@dataclass(frozen=True)
class Rows:
    """Where a table's rows go: `rows[i]` is the output row of the table's `i`-th kept row; `num_rows` rows in all,
    the entities' from `first_entity_row` on (the item tokenizer's special tokens come first)."""

    rows: np.ndarray
    num_rows: int
    first_entity_row: int = 0

    @property
    def num_entities(self) -> int:
        return self.num_rows - self.first_entity_row


def _is_list(value: object) -> bool:
    return isinstance(value, list | tuple | np.ndarray)


def category_values(cell: object, spec: FeatureSpec, missing_values: frozenset[str]) -> list[str]:
    """A cell's values as strings, in order, without repeats; `[]` where missing. `ValueError` on a wrong shape."""
    if isinstance(cell, dict):
        raise ValueError("expected a value, found an object")
    if _is_list(cell):
        if spec.kind == "categorical":
            raise ValueError("expected one value, found a list (declare the feature multi)")
        parts = list(cell)
    elif is_missing(cell, missing_values):
        return []
    elif spec.kind == "multi" and isinstance(cell, str):
        parts = cell.split(spec.separator)
    else:
        parts = [cell]
    values: list[str] = []
    for part in parts:
        if _is_list(part) or isinstance(part, dict):
            raise ValueError("a value inside the list is itself a list or an object")
        text = "" if is_missing(part, missing_values) else key_text(part).strip()
        if text and text not in values:
            values.append(text)
    return values


def number_value(cell: object, spec: FeatureSpec, missing_values: frozenset[str]) -> float:
    """A cell's number; NaN where missing. `ValueError` for a list, text that is not a number, or infinity."""
    if is_missing(cell, missing_values):
        return math.nan
    if _is_list(cell) or isinstance(cell, dict):
        raise ValueError("expected a number, found a list or an object")
    if isinstance(cell, str):
        return parse_number(cell.strip(), "value")
    value = float(cell)
    if not math.isfinite(value):
        raise ValueError(f"value {value} is not finite")
    return value


def _parse_column(
    table: FeatureTable,
    spec: FeatureSpec,
    parse: Callable[[object, FeatureSpec, frozenset[str]], object],
    missing_values: frozenset[str],
    on_error: OnError,
    malformed: dict,
) -> list:
    """`parse(cell, spec, missing_values)` for every kept row; a `ValueError` names the file, line and column, or
    (skip) is counted in `malformed["malformed"]` and gives a missing value."""
    cells = table.require_column(spec.column)
    parsed = []
    for position, cell in zip(cells.index, cells, strict=True):
        try:
            parsed.append(parse(cell, spec, missing_values))
        except ValueError as error:
            if on_error == "raise":
                raise table.error(position, f"column {spec.column!r}: {error}") from None
            malformed["malformed"] = malformed.get("malformed", 0) + 1
            parsed.append(math.nan if spec.kind == "numeric" else [])
    return parsed


def build_vocabulary(per_row: list[list[str]], min_count: int) -> Vocabulary:
    """Values seen in at least `min_count` rows, by descending count (ties: numeric values by value, then text),
    after the reserved ids."""
    counts = Counter(value for values in per_row for value in values)
    kept = sorted(
        (value for value, count in counts.items() if count >= min_count), key=lambda v: (-counts[v], natural_key(v))
    )
    return [None] * FIRST_VALUE_ID + kept


def _coverage(present: int, rows: Rows) -> dict:
    missing = rows.num_entities - present
    return {"coverage": round(present / max(rows.num_entities, 1), 4), "missing": missing}


def encode_categorical(
    per_row: list[list[str]], spec: FeatureSpec, rows: Rows, min_count: int
) -> tuple[np.ndarray, Vocabulary, dict]:
    """`categorical`: ids `[num_rows]`; `multi`: ids `[num_rows, max_values]`, padded with `PADDING_ID`, a row
    without a value `[MISSING_ID, 0, ...]`. Returns the tensor, the vocabulary and the statistics."""
    vocabulary = build_vocabulary(per_row, min_count)
    ids_of = {value: index for index, value in enumerate(vocabulary) if value is not None}
    width = max(max(map(len, per_row), default=0), 1) if spec.kind == "multi" else 1
    ids = np.full((rows.num_rows, width), PADDING_ID, dtype=np.int64)
    ids[:, 0] = MISSING_ID
    unknown = present = 0
    for row, values in zip(rows.rows, per_row, strict=True):
        if values:
            encoded = [ids_of.get(value, UNKNOWN_ID) for value in values]
            ids[row, : len(encoded)] = encoded
            unknown += encoded.count(UNKNOWN_ID)
            present += 1
    stats = {"kind": spec.kind, "vocab_size": len(vocabulary), **_coverage(present, rows), "unknown": unknown}
    if spec.kind == "multi":
        stats["max_values"] = width
        stats["mean_values"] = round(sum(map(len, per_row)) / max(present, 1), 4)
        return ids, vocabulary, stats
    return ids[:, 0], vocabulary, stats


def bucket_edges(values: np.ndarray, spec: FeatureSpec) -> tuple[float, ...]:
    """The declared edges, or the distinct `1/k, ..., (k-1)/k` quantiles of the present values."""
    if spec.bucket_edges is not None or not len(values):
        return spec.bucket_edges or ()
    edges = np.unique(np.quantile(values, np.arange(1, spec.buckets) / spec.buckets))
    if len(edges) + 1 < spec.buckets:
        logger.info("feature %r: %d buckets, not %d (tied quantiles)", spec.name, len(edges) + 1, spec.buckets)
    return tuple(edges.tolist())


def encode_numeric(numbers: list[float], spec: FeatureSpec, rows: Rows) -> tuple[dict[str, np.ndarray], dict, dict]:
    """The standardised values `[num_rows]` (0 where missing), the missing mask and, with buckets, the bucket ids;
    returns the tensors, the schema details (mean, std, edges) and the statistics."""
    raw = np.full(rows.num_rows, np.nan)
    raw[rows.rows] = numbers
    missing = np.isnan(raw)
    values = raw[~missing]
    mean = float(values.mean()) if len(values) else 0.0
    std = float(values.std()) if len(values) else 0.0
    if std == 0.0:
        logger.warning("feature %r: no spread (%d values), standardised with std 1", spec.name, len(values))
        std = 1.0
    tensors = {
        spec.name: np.where(missing, 0.0, (raw - mean) / std).astype(np.float32),
        f"{spec.name}.missing": missing,
    }
    details: dict = {"mean": mean, "std": std}
    stats = {"kind": "numeric", **_coverage(len(values), rows), "unknown": 0}
    if len(values):
        stats.update(min=float(values.min()), max=float(values.max()), mean=mean, std=std)
    if spec.buckets is not None or spec.bucket_edges is not None:
        edges = bucket_edges(values, spec)
        bucket = FIRST_VALUE_ID + np.searchsorted(np.asarray(edges, dtype=np.float64), raw, side="right")
        tensors[f"{spec.name}.bucket"] = np.where(missing, MISSING_ID, bucket).astype(np.int64)
        details.update(bucket_edges=list(edges), vocab_size=FIRST_VALUE_ID + len(edges) + 1)
        stats["buckets"] = len(edges) + 1
    return tensors, details, stats


def encode_features(
    table: FeatureTable,
    specs: tuple[FeatureSpec, ...],
    rows: Rows,
    entity: str,
    min_count: int = 1,
    missing_values: frozenset[str] = frozenset(),
    on_error: OnError = "raise",
) -> EncodedFeatures:
    """Encode the `specs` columns of `table` (its kept rows go to `rows.rows`); rows without a table row are missing.

    `entity` ("items" or "users") names the vocabulary folder in the schema.
    """
    encoded = EncodedFeatures()
    for spec in specs:
        malformed: dict = {}
        if spec.kind == "numeric":
            numbers = _parse_column(table, spec, number_value, missing_values, on_error, malformed)
            tensors, details, stats = encode_numeric(numbers, spec, rows)
        else:
            per_row = _parse_column(table, spec, category_values, missing_values, on_error, malformed)
            ids, vocabulary, stats = encode_categorical(per_row, spec, rows, min_count)
            tensors, details = {spec.name: ids}, {"vocab_size": len(vocabulary)}
            if spec.kind == "multi":
                details["max_values"] = int(ids.shape[1])
            encoded.vocabularies[spec.name] = vocabulary
        encoded.tensors.update(tensors)
        encoded.schema[spec.name] = feature_schema(spec, entity, **details)
        encoded.stats[spec.name] = {**stats, **malformed}
    return encoded
