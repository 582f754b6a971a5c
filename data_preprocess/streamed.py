"""`prepare_streamed`: `prepare` for Parquet and CSV logs larger than memory; the same output, its splits in shards.

The engine is pyarrow (Parquet record batches, Arrow IPC files on disk), already installed with `datasets`, rather
than polars or DuckDB: no new dependency, and every row is parsed by the same code as `prepare`'s
(`tabular.read_table_chunks`), so both paths give the same rows, keys and drop counts. Four passes:

1. Read the log a chunk at a time, number users and items by first appearance, and spill each chunk's coded rows
   (user, item, timestamp, rating, source row) to one Arrow file.
2. Order the users as `prepare` does (natural key order), cut them into `partitions` ranges of about
   `partition_rows` interactions each, and route the spilled rows to one Arrow file per range.
3. Each range alone: exact duplicates, low-rated pairs, `min_rating`, chronological order, repeats; `k_core` works
   across the ranges, pass by pass (its item counts are global); then the item counts.
4. Number the items over all ranges as `prepare` does, then each range alone: its sequences, its leave-one-out rows
   (one shard of each split, so the splits hold the users in `prepare`'s order), its low-rated items.

Memory holds one chunk, one range, and what grows with users and items rather than interactions: the key
dictionaries, the item counts, each user's range and length. Not supported here (refused by name): the time split,
side features and cold items; formats other than CSV/TSV and Parquet.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import logging
import math
import tempfile
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
from transformers import PreTrainedTokenizerFast

from .atomic_files import atomic_write_json
from .errors import PreprocessingError, logger, record_drops
from .filtering import (
    apply_min_rating,
    drop_consecutive_repeats,
    drop_exact_duplicates,
    filter_until_stable,
    natural_codes,
    sort_chronologically,
)
from .interactions import DEFAULT_COLUMNS, Columns, ItemInfo
from .item_info import read_item_info
from .item_tokenizer import NUM_SPECIAL_TOKENS, build_item_tokenizer, save_item_tokenizer
from .output import check_replaceable, replace_folder
from .pipeline import (
    MARKERS,
    WRITTEN_BY,
    interaction_stats,
    items_by_user,
    log_summary,
    number_counted_items,
    recorded_args,
)
from .sharded_splits import ShardedSplitsWriter
from .split import Sequences, leave_one_out_rows, require_leave_one_out_rows
from .tabular import read_table_chunks
from .text_formats import OnError

STREAMED_FORMATS = {".parquet": "parquet", ".pq": "parquet", ".csv": "csv", ".tsv": "csv", ".tab": "csv"}
SPLITS = ("train", "valid", "test")


def streamed_inputs(path: str | Path) -> tuple[list[Path], str]:
    """The files of a log and their format: one CSV/TSV or Parquet file, or a folder of shards (its `*.parquet`
    files, else its `*.csv`/`*.tsv` files, in name order: the source order)."""
    path = Path(path)
    if not path.is_dir():
        if not path.is_file():
            raise FileNotFoundError(f"{path}: no such file or directory")
        if path.suffix.lower() not in STREAMED_FORMATS:
            raise PreprocessingError(f"{path}: streamed preprocessing reads .parquet, .csv or .tsv files")
        return [path], STREAMED_FORMATS[path.suffix.lower()]
    for kind in ("parquet", "csv"):
        files = sorted(file for file in path.iterdir() if STREAMED_FORMATS.get(file.suffix.lower()) == kind)
        if files:
            return files, kind
    raise FileNotFoundError(f"{path}: no .parquet, .csv or .tsv file in this directory")


@dataclass
class KeyCodes:
    """Integer codes of keys, in order of first appearance."""

    codes: dict[str, int] = field(default_factory=dict)

    def encode(self, keys: pd.Series) -> np.ndarray:
        local, uniques = pd.factorize(keys)
        codes = self.codes
        mapped = np.fromiter((codes.setdefault(key, len(codes)) for key in uniques), np.int64, len(uniques))
        return mapped[local]

    def keys(self) -> list[str]:
        return list(self.codes)


@dataclass
class _Spill:
    """What pass 1 learnt besides the spilled rows."""

    users: KeyCodes = field(default_factory=KeyCodes)
    items: KeyCodes = field(default_factory=KeyCodes)
    user_counts: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))
    titles: dict[str, ItemInfo] = field(default_factory=dict)
    dropped: Counter[str] = field(default_factory=Counter)
    has_timestamps: bool | None = None
    has_ratings: bool = False
    rows: int = 0


@contextlib.contextmanager
def _per_part_drops_unlogged() -> Iterator[None]:
    """The filters log each drop; run on each part, they would log once a part: their totals are logged instead."""
    level = logger.level
    logger.setLevel(logging.WARNING)
    try:
        yield
    finally:
        logger.setLevel(level)


def _spill(files: list[Path], kind: str, columns: Columns, on_error: OnError, chunk_rows: int, path: Path) -> _Spill:
    """Pass 1: the log's rows, coded, into the Arrow file `path`."""
    spill, writer = _Spill(), None
    for file in files:
        first = spill.rows
        for log in read_table_chunks(file, kind, columns, on_error=on_error, rows=chunk_rows):
            spill.dropped.update(log.dropped)
            spill.titles.update(log.items)
            frame = log.frame
            if frame.empty:
                continue
            if spill.has_timestamps is None:
                spill.has_timestamps, spill.has_ratings = log.has_timestamps, log.has_ratings
            elif (log.has_timestamps, log.has_ratings) != (spill.has_timestamps, spill.has_ratings):
                raise PreprocessingError(f"{file} has other columns than the files before it (times, ratings)")
            users = spill.users.encode(frame["user"])
            counts = np.bincount(users)
            if len(counts) > len(spill.user_counts):
                spill.user_counts = np.pad(spill.user_counts, (0, len(counts) - len(spill.user_counts)))
            spill.user_counts[: len(counts)] += counts
            times = frame["timestamp"].to_numpy() + (0 if log.has_timestamps else first)
            batch = {
                "user": users,
                "item": spill.items.encode(frame["item"]),
                "timestamp": times,
                "row": frame.index.to_numpy() + first,
            }
            if log.has_ratings:
                batch["rating"] = frame["rating"].to_numpy()
            table = pa.table(batch)
            if writer is None:
                writer = pa.ipc.new_file(str(path), table.schema)
            writer.write_table(table)
            spill.rows = first + int(frame.index[-1]) + 1
    if writer is not None:
        writer.close()
    return spill


def _partition(spill: _Spill, spilled: Path, folder: Path, partition_rows: int) -> tuple[list[Path], np.ndarray]:
    """Pass 2: the spilled rows into parts of consecutive users in natural key order; returns the parts' files and
    each user code's rank in that order. Each row's `user` becomes its rank."""
    rank = natural_codes(pd.Series(spill.users.keys(), dtype=object))
    counts_by_rank = np.zeros(len(rank), np.int64)
    counts_by_rank[rank] = spill.user_counts
    total = int(counts_by_rank.sum())
    parts = max(1, math.ceil(total / partition_rows))
    part_of_rank = np.minimum((np.cumsum(counts_by_rank) - counts_by_rank) * parts // total, parts - 1)
    paths = [folder / f"part-{index:05d}.arrow" for index in range(parts)]
    with pa.ipc.open_file(str(spilled)) as source:
        writers = [pa.ipc.new_file(str(path), source.schema) for path in paths]
        for index in range(source.num_record_batches):
            batch = source.get_batch(index)
            ranks = rank[batch.column("user").to_numpy()]
            part = part_of_rank[ranks]
            order = np.argsort(part, kind="stable")
            batch = batch.set_column(0, "user", pa.array(ranks)).take(pa.array(order))
            bounds = np.searchsorted(part[order], np.arange(parts + 1))
            for target, (start, end) in enumerate(itertools.pairwise(bounds)):
                if end > start:
                    writers[target].write_batch(batch.slice(start, end - start))
        for writer in writers:
            writer.close()
    return paths, rank


def _read_part(path: Path) -> pd.DataFrame:
    with pa.memory_map(str(path)) as source:
        frame = pa.ipc.open_file(source).read_all().to_pandas()
    return frame.set_index("row") if "row" in frame else frame


def _write_part(frame: pd.DataFrame, path: Path) -> None:
    table = pa.table({name: frame[name].to_numpy() for name in ("user_code", "item_code", "timestamp")})
    with pa.ipc.new_file(str(path), table.schema) as writer:
        writer.write_table(table)


@dataclass
class _Options:
    min_rating: float | None
    low_rating: float
    k_core: int | None
    keep_duplicates: bool
    dedup_consecutive: bool


def _filter_part(path: Path, options: _Options, has_ratings: bool, dropped: Counter[str]) -> pd.DataFrame | None:
    """Pass 3 on one part: `prepare`'s filters up to k-core; writes the part's low-rated `(user, item)` codes beside
    it; returns the filtered, ordered rows (`user_code`, `item_code`, `timestamp`)."""
    frame = _read_part(path)
    if frame.empty:
        return frame.assign(user_code=frame["user"], item_code=frame["item"])
    frame = frame if options.keep_duplicates else drop_exact_duplicates(frame, dropped)
    if has_ratings:
        low = frame.loc[frame["rating"] <= options.low_rating, ["user", "item"]].to_numpy()
        np.save(path.with_suffix(".low.npy"), low)
        if options.min_rating is not None:
            frame = apply_min_rating(frame, options.min_rating, dropped)
    frame = sort_chronologically(frame.assign(user_code=frame["user"], item_code=frame["item"]))
    return filter_until_stable(frame, None, options.dedup_consecutive, dropped)


def _k_core(paths: list[Path], k: int, dedup: bool, num_items: int, dropped: Counter[str]) -> np.ndarray:
    """`filter_until_stable`'s k-core over all parts: dedup, drop rare items (global counts), then rare users (each
    user is in one part), until a round drops nothing; returns the item counts of that last round (the final ones)."""
    while True:
        before, counts = 0, np.zeros(num_items, np.int64)
        for path in paths:
            frame = _read_part(path)
            before += len(frame)
            if dedup:
                frame = drop_consecutive_repeats(frame, dropped)
                _write_part(frame, path)
            counts += np.bincount(frame["item_code"].to_numpy(), minlength=num_items)
        after = 0
        for path in paths:
            frame = _read_part(path)
            rare = counts[frame["item_code"].to_numpy()] < k
            record_drops(dropped, "k_core_item", int(rare.sum()), f"fewer than {k} interactions")
            frame = frame[~rare]
            users = frame["user_code"].to_numpy()
            rare = np.bincount(users)[users] < k if len(users) else np.zeros(0, bool)
            record_drops(dropped, "k_core_user", int(rare.sum()), f"fewer than {k} interactions")
            frame = frame[~rare]
            _write_part(frame, path)
            after += len(frame)
        if after == before:
            return counts


def _sequences(frame: pd.DataFrame, user_keys: np.ndarray, token_of_code: np.ndarray, has_timestamps: bool):
    """A part's `Sequences`: its rows' users as keys, items as token ids, and without times their positions."""
    users = frame["user_code"].to_numpy()
    if not len(users):
        empty = np.zeros(0, np.int64)
        return Sequences(np.zeros(0, object), empty, empty, empty, empty)
    sequences = Sequences.from_sorted(
        users, user_keys[users], token_of_code[frame["item_code"].to_numpy()], frame["timestamp"].to_numpy()
    )
    if not has_timestamps:
        sequences.timestamps = np.arange(len(users)) - np.repeat(sequences.starts, sequences.lengths)
    return sequences


def _low_rated_items(path: Path, users: np.ndarray, token_of_code: np.ndarray, user_keys: np.ndarray) -> dict:
    """The part's low-rated items as `prepare` writes them, for its users left after filtering (`users`, codes)."""
    pairs = np.load(path.with_suffix(".low.npy"))
    ids = token_of_code[pairs[:, 1]]
    keep = (ids > 0) & np.isin(pairs[:, 0], users)
    return items_by_user(pairs[keep, 0], ids[keep], user_keys)


@dataclass
class _Written:
    """What pass 4 wrote: each user's length, the split sizes."""

    lengths: np.ndarray
    sizes: Counter[str]

    @property
    def full_users(self) -> int:
        return int((self.lengths >= 3).sum())


def _write_splits(
    folder: Path, paths: list[Path], spill: _Spill, user_keys: np.ndarray, token_of_code: np.ndarray, max_length: int
) -> _Written:
    """Pass 4: each part's split rows (a shard of each split) and low-rated items (`low_rated.json`, written entry by
    entry); refuses a leave-one-out split without valid and test rows."""
    writer, lengths, sizes = ShardedSplitsWriter(folder, SPLITS, len(paths)), [], Counter()
    with contextlib.ExitStack() as stack:
        low_rated = stack.enter_context((folder / "low_rated.json").open("w")) if spill.has_ratings else None
        separator = "{"
        for path in paths:
            frame = _read_part(path)
            sequences = _sequences(frame, user_keys, token_of_code, spill.has_timestamps)
            parts = leave_one_out_rows(sequences, max_length)
            writer.write(parts)
            sizes.update({split: len(rows) for split, rows in parts.items()})
            lengths.append(sequences.lengths)
            if low_rated is not None and path.with_suffix(".low.npy").is_file():
                users = np.unique(frame["user_code"].to_numpy())
                for user, items in _low_rated_items(path, users, token_of_code, user_keys).items():
                    low_rated.write(f"{separator}{json.dumps(user)}:{json.dumps(items)}")
                    separator = ","
        if low_rated is not None:
            low_rated.write("{}" if separator == "{" else "}")
    written = _Written(np.concatenate(lengths), sizes)
    logger.info("%d users with fewer than 3 interactions go to train only", len(written.lengths) - written.full_users)
    require_leave_one_out_rows(written.full_users, len(written.lengths))
    writer.close()
    return written


def _filter_parts(paths: list[Path], spill: _Spill, options: _Options, dropped: Counter[str]) -> np.ndarray:
    """Pass 3 over every part, k-core included; returns the item counts after filtering."""
    num_items, part_drops = len(spill.items.codes), Counter()
    counts = np.zeros(num_items, np.int64)
    with _per_part_drops_unlogged():
        for path in paths:
            frame = _filter_part(path, options, spill.has_ratings, part_drops)
            _write_part(frame, path)
            if not options.k_core:
                counts += np.bincount(frame["item_code"].to_numpy(), minlength=num_items)
        if options.k_core:
            counts = _k_core(paths, options.k_core, options.dedup_consecutive, num_items, part_drops)
    for reason, count in sorted(part_drops.items()):
        record_drops(dropped, reason, count, "all parts")
    return counts


def prepare_streamed(
    input: str | Path,
    output: str | Path,
    *,
    columns: Columns = DEFAULT_COLUMNS,
    item_file: str | Path | None = None,
    min_rating: float | None = None,
    low_rating: float = 2.0,
    k_core: int | None = None,
    keep_duplicates: bool = False,
    dedup_consecutive: bool = False,
    max_length: int = 50,
    name: str | None = None,
    on_error: OnError = "raise",
    chunk_rows: int = 1_000_000,
    partition_rows: int = 2_000_000,
    work_dir: str | Path | None = None,
) -> PreTrainedTokenizerFast:
    """`prepare(input, output, ...)` (leave-one-out) in bounded memory: `input` is a CSV/TSV or Parquet file or a
    folder of them; read `chunk_rows` rows at a time, processed in parts of about `partition_rows` interactions, with
    the intermediate files under `work_dir` (default: the system's temporary folder). The output is `prepare`'s,
    with each split in one shard a part; `stats.json` records the `partitions`."""
    if max_length < 1:
        raise PreprocessingError(f"max_length must be at least 1, got {max_length}")
    if chunk_rows < 1 or partition_rows < 1:
        raise PreprocessingError(f"chunk_rows and partition_rows must be positive, got {chunk_rows}, {partition_rows}")
    check_replaceable(Path(output), MARKERS, WRITTEN_BY)
    files, kind = streamed_inputs(input)
    args = recorded_args(
        input,
        kind,
        columns,
        item_file,
        min_rating=min_rating,
        low_rating=low_rating,
        k_core=k_core,
        keep_duplicates=keep_duplicates,
        dedup_consecutive=dedup_consecutive,
        max_length=max_length,
        split="leave-one-out",
        on_error=on_error,
    )
    with tempfile.TemporaryDirectory(prefix="data_preprocess-", dir=work_dir) as work:
        spilled = Path(work) / "spill.arrow"
        logger.info("reading %d %s file(s) from %s, %d rows at a time", len(files), kind, input, chunk_rows)
        spill = _spill(files, kind, columns, on_error, chunk_rows, spilled)
        dropped: Counter[str] = Counter()
        for reason, count in sorted(spill.dropped.items()):
            record_drops(dropped, reason, count, f"reading {input}")
        if spill.has_timestamps is None:
            raise PreprocessingError(f"no interaction could be read from {input} (dropped: {dict(spill.dropped)})")
        if min_rating is not None and not spill.has_ratings:
            raise PreprocessingError(f"--min-rating needs ratings, and {input} has none")
        if not spill.has_timestamps:
            logger.warning("%s has no timestamps: `timestamps` holds each item's position in its user's list", input)
        paths, rank = _partition(spill, spilled, Path(work), partition_rows)
        spilled.unlink()
        logger.info("%d rows of %d users in %d parts", spill.rows, len(rank), len(paths))
        options = _Options(min_rating, low_rating, k_core, keep_duplicates, dedup_consecutive)
        keys, token_of_code = number_counted_items(_filter_parts(paths, spill, options, dropped), spill.items.keys())
        if not keys:
            raise PreprocessingError(f"no interaction left in {input} after filtering (dropped: {dict(dropped)})")
        tokenizer = build_item_tokenizer(keys, model_max_length=max_length + 2)
        user_keys = np.empty(len(rank), dtype=object)
        user_keys[rank] = spill.users.keys()
        with replace_folder(output, MARKERS, WRITTEN_BY) as folder:
            written = _write_splits(folder, paths, spill, user_keys, token_of_code, max_length)
            save_item_tokenizer(tokenizer, folder / "tokenizer")
            item2id = {key: NUM_SPECIAL_TOKENS + index for index, key in enumerate(keys)}
            titles = {**spill.titles, **(read_item_info(item_file, on_error)[0] if item_file else {})}
            titles = {str(item2id[key]): info for key, info in titles.items() if key in item2id}
            if titles:
                titles = dict(sorted(titles.items(), key=lambda entry: int(entry[0])))
                atomic_write_json(folder / "item_titles.json", titles, indent=None)
            stats = {
                "dataset": name or Path(input).stem,
                **interaction_stats(written.lengths, len(keys)),
                "has_timestamps": spill.has_timestamps,
                "has_ratings": spill.has_ratings,
                "vocab_size": len(tokenizer),
                "num_special_tokens": NUM_SPECIAL_TOKENS,
                "splits": {split: written.sizes[split] for split in SPLITS},
                "train_only_users": len(written.lengths) - written.full_users,
                "dropped": dict(sorted(dropped.items())),
                "args": {**args, "partitions": len(paths)},
            }
            atomic_write_json(folder / "stats.json", stats, indent=1)
    log_summary(stats)
    return tokenizer
