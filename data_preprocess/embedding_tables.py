"""Precomputed item embeddings, one table per modality (title text, image, audio, ...), of any dimension each.

A table is `NAME=PATH[:IDS]` on the command line (`EmbeddingSource.parse`):

- an `.npy` matrix `[rows, dim]` with its item-id list `IDS`: a text file with one raw item id a line, or a JSON list
  (`null` for a row of no item) or object `{row: id}` such as a tokenizer's `id2item.json`. Without `IDS`, the `.npy`
  must lie in a `data_preprocess` output folder (as `data_preprocess.text_embeddings` writes `item_text.npy`): its
  rows are that folder's token ids, and its `tokenizer/id2item.json` gives their items;
- a Parquet file or a `datasets` folder with an item-id column and a column of vectors; `IDS` then names the vector
  column (default `embedding`, or the one list column).

Tables are matched to the items by raw id, so a table made for an earlier vocabulary still lands on the right rows.
A table whose rows do not match its ids, with an id twice, a NaN or an infinity, or of mixed widths, is refused
(`PreprocessingError` naming the table); a row for an item not in the log is counted and dropped; an item without a
row has a zero vector and `present = False`.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from .errors import DataFormatError, PreprocessingError, logger, require_file
from .feature_schema import check_name
from .interactions import key_text
from .text_formats import iter_lines

# Where a token-id-ordered `.npy` written into a dataset folder finds the item of each row.
ID2ITEM = Path("tokenizer") / "id2item.json"


@dataclass(frozen=True)
class EmbeddingSource:
    """A modality `name` read from `path`; `ids` is the item-id list of an `.npy`, `column` the vector column of a
    Parquet file or `datasets` folder."""

    name: str
    path: Path
    ids: Path | None = None
    column: str | None = None

    @classmethod
    def parse(cls, text: str) -> EmbeddingSource:
        """`NAME=PATH[:IDS]`: `IDS` is the id list of an `.npy`, or the vector column of a Parquet/`datasets` table."""
        name, equals, rest = text.partition("=")
        if not equals or not rest:
            raise PreprocessingError(
                f"--embedding {text!r}: expected NAME=PATH.npy[:IDS] or NAME=PATH.parquet[:COLUMN]"
            )
        path, _, extra = rest.partition(":")
        path = Path(path)
        if path.suffix.lower() == ".npy":
            return cls(check_name(name, "modality"), path, ids=Path(extra) if extra else None)
        return cls(check_name(name, "modality"), path, column=extra or None)

    @property
    def described(self) -> str:
        """The source as given on the command line (for `stats.json`)."""
        extra = self.ids or self.column
        return f"{self.name}={self.path}" + (f":{extra}" if extra else "")

    def error(self, reason: str) -> PreprocessingError:
        return PreprocessingError(f"embedding table {self.name!r} ({self.path}): {reason}")


@dataclass
class EmbeddingTable:
    """A table as read: `vectors` float32 `[rows, dim]`, and the raw item id of each row (`None`: no item)."""

    source: EmbeddingSource
    keys: list[str | None]
    vectors: np.ndarray


def read_item_ids(path: str | Path) -> list[str | None]:
    """The raw item id of each row of a table (`None`: a row of no item): a JSON list (`null` for a row of no item)
    or object `{row: id}` (such as a tokenizer's `id2item.json`), or a text file with one id a line."""
    path = require_file(path)
    if path.suffix.lower() == ".json":
        try:
            value = json.loads(path.read_text(encoding="utf-8-sig"))
        except json.JSONDecodeError as error:
            raise DataFormatError(path, error.lineno, f"not JSON ({error.msg})") from None
        if isinstance(value, dict):
            try:
                rows = {int(row): item for row, item in value.items()}
            except ValueError:
                raise PreprocessingError(f"{path}: an object of item ids must be keyed by row numbers") from None
            value = [rows.get(row) for row in range(max(rows, default=-1) + 1)]
        if not isinstance(value, list):
            raise PreprocessingError(f"{path}: expected a JSON list of item ids, or an object {{row: item id}}")
        return [None if item is None else key_text(item).strip() or None for item in value]
    ids = []
    for number, line in iter_lines(path):
        if not line.strip():
            raise DataFormatError(path, number, "an empty item id (one id a line, for each row of the table)")
        ids.append(line.strip())
    return ids


def _read_npy(source: EmbeddingSource) -> EmbeddingTable:
    path = require_file(source.path)
    try:
        matrix = np.load(path, mmap_mode="r", allow_pickle=False)
    except ValueError as error:
        raise source.error(f"not a numeric .npy file ({error})") from None
    if matrix.ndim != 2 or matrix.dtype.kind not in "fiu":
        raise source.error(f"expected a 2-D numeric matrix [rows, dim], found {matrix.dtype} {list(matrix.shape)}")
    ids_path = source.ids
    if ids_path is None:
        ids_path = path.parent / ID2ITEM
        if not ids_path.is_file():
            raise source.error(
                "no item-id list: give one (NAME=PATH.npy:IDS, a text file with one item id a line or a JSON list), "
                f"or keep the .npy in the dataset folder whose token ids are its rows (no {ids_path})"
            )
    keys = read_item_ids(ids_path)
    if len(keys) != len(matrix):
        raise source.error(f"{len(matrix)} rows, but {len(keys)} item ids in {ids_path}: the wrong row count")
    return EmbeddingTable(source, keys, np.array(matrix, dtype=np.float32))  # a copy: the file may be replaced


def _vector_column(source: EmbeddingSource, table: pa.Table, id_column: str) -> str:
    if source.column is not None or "embedding" in table.column_names:
        return source.column or "embedding"
    lists = [
        field.name
        for field in table.schema
        if field.name != id_column and (pa.types.is_list(field.type) or pa.types.is_fixed_size_list(field.type))
    ]
    if len(lists) != 1:
        raise source.error(f"name the vector column (NAME=PATH:COLUMN); columns: {', '.join(table.column_names)}")
    return lists[0]


def _read_arrow(source: EmbeddingSource, id_column: str) -> EmbeddingTable:
    """A Parquet file, or a `datasets` folder: an id column and a column of equal-length vectors."""
    if source.path.is_dir():
        from datasets import Dataset, load_from_disk

        dataset = load_from_disk(str(source.path))
        if not isinstance(dataset, Dataset):
            raise source.error(f"holds several splits ({', '.join(dataset)}); give the folder of one")
        table = dataset.with_format("arrow")[:]
    else:
        try:
            table = pq.read_table(require_file(source.path))
        except pa.ArrowInvalid as error:
            raise source.error(f"not a readable Parquet file: {error}") from None
    column = _vector_column(source, table, id_column)
    for name in (id_column, column):
        if name not in table.column_names:
            raise source.error(f"no column {name!r} (columns: {', '.join(table.column_names)})")
    vectors = table.column(column).combine_chunks()
    if not (pa.types.is_list(vectors.type) or pa.types.is_fixed_size_list(vectors.type)) or not (
        pa.types.is_floating(vectors.type.value_type) or pa.types.is_integer(vectors.type.value_type)
    ):
        raise source.error(f"column {column!r} holds {vectors.type}, not vectors of numbers")
    if vectors.null_count:
        raise source.error(f"row {int(np.argmax(vectors.is_null().to_numpy(zero_copy_only=False))) + 1} has no vector")
    lengths = pc.list_value_length(vectors).to_numpy()
    if len(lengths) and (lengths != lengths[0]).any():
        row = int(np.argmax(lengths != lengths[0]))
        raise source.error(f"row {row + 1} has {lengths[row]} values, row 1 has {lengths[0]}: vectors of mixed widths")
    values = vectors.flatten().to_numpy(zero_copy_only=False).astype(np.float32)
    matrix = values.reshape(len(vectors), int(lengths[0]) if len(lengths) else 0)
    keys = [None if key is None else key_text(key).strip() or None for key in table.column(id_column).to_pylist()]
    return EmbeddingTable(source, keys, matrix)


def _check(table: EmbeddingTable) -> None:
    """Refuse an empty table, an item id on two rows, or a NaN or infinite value."""
    source, matrix = table.source, table.vectors
    if not matrix.size:
        raise source.error(f"empty ({list(matrix.shape)})")
    rows_of: dict[str, int] = {}
    for row, key in enumerate(table.keys):
        if key is not None and rows_of.setdefault(key, row) != row:
            raise source.error(f"item {key!r} on row {rows_of[key] + 1} and again on row {row + 1}: a duplicate id")
    finite = np.isfinite(matrix).all(axis=1)
    if not finite.all():
        row = int(np.argmin(finite))
        raise source.error(
            f"row {row + 1} (item {table.keys[row]!r}) holds NaN or infinity: {int((~finite).sum())} such rows"
        )


def read_embedding_table(source: EmbeddingSource, id_column: str = "item_id") -> EmbeddingTable:
    """Read and check a modality table (see the module docstring)."""
    if source.path.suffix.lower() == ".npy":
        table = _read_npy(source)
    elif source.path.is_dir() or source.path.suffix.lower() in (".parquet", ".pq"):
        table = _read_arrow(source, id_column)
    else:
        raise source.error("expected an .npy (with an item-id list), a .parquet file or a datasets folder")
    _check(table)
    logger.info("embedding table %r: %d rows of dimension %d", source.name, *table.vectors.shape)
    return table


def align_embeddings(
    table: EmbeddingTable, row_of: dict[str, int], num_rows: int, first_row: int
) -> tuple[dict[str, np.ndarray], dict]:
    """The table in token-id order: `embedding` float32 `[num_rows, dim]` (zero rows where absent) and `present`
    bool `[num_rows]`, and its statistics (coverage over the items, rows dropped as not in the log)."""
    targets = [(row, row_of.get(key)) for row, key in enumerate(table.keys) if key is not None]
    kept = [(row, target) for row, target in targets if target is not None]
    pairs = np.array(kept, dtype=np.int64).reshape(-1, 2)
    source_rows, target_rows = pairs[:, 0], pairs[:, 1]
    embedding = np.zeros((num_rows, table.vectors.shape[1]), dtype=np.float32)
    embedding[target_rows] = table.vectors[source_rows]
    present = np.zeros(num_rows, dtype=bool)
    present[target_rows] = True
    items = num_rows - first_row
    not_in_log = len(targets) - len(kept)
    if not_in_log:
        logger.info("embedding table %r: %d rows for items not in the log dropped", table.source.name, not_in_log)
    stats = {
        "dim": int(table.vectors.shape[1]),
        "rows": len(table.keys),
        "coverage": round(len(kept) / max(items, 1), 4),
        "missing": items - len(kept),
        "dropped": {"item_not_in_log": not_in_log, "row_without_id": len(table.keys) - len(targets)},
        "source": table.source.described,
    }
    return {"embedding": embedding, "present": present}, stats


__all__ = ["EmbeddingSource"]
