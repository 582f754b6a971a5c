"""`prepare`: from an interaction log to the `datasets` splits, the item tokenizer and the companion files."""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Literal

import numpy as np
import pandas as pd
from datasets import DatasetDict
from transformers import PreTrainedTokenizerFast

from .atomic_files import atomic_write_json
from .cold_items import COLD_ITEMS_FILE, hold_out_cold_items
from .errors import PreprocessingError, logger, record_drops
from .features import FEATURES_FOLDER, Features, FeatureSources, build_features, save_features
from .filtering import (
    apply_min_rating,
    drop_exact_duplicates,
    filter_until_stable,
    natural_codes,
    sort_chronologically,
)
from .formats import KNOWN_FILES, detect_format, embedded_movielens, read_interactions, resolve_input
from .interactions import DEFAULT_COLUMNS, Columns, Interactions, ItemInfo, natural_key
from .item_tokenizer import NUM_SPECIAL_TOKENS, build_item_tokenizer, save_item_tokenizer
from .output import carry_over, check_replaceable, replace_folder
from .split import Sequences, leave_one_out, time_cutoffs, time_split
from .text_formats import OnError

SPLITS = ("leave-one-out", "time")
# What `prepare` writes in its output folder, besides one folder per split; `MARKERS` are always there.
OUTPUT_ENTRIES = (
    "dataset_dict.json",
    "stats.json",
    "tokenizer",
    "item_titles.json",
    "low_rated.json",
    FEATURES_FOLDER,
    COLD_ITEMS_FILE,
)
MARKERS = ("dataset_dict.json", "stats.json")
WRITTEN_BY = "python -m data_preprocess"


def number_counted_items(counts: np.ndarray, keys: list[str]) -> tuple[list[str], np.ndarray]:
    """Number the items with a count by descending count, ties in natural key order, from `NUM_SPECIAL_TOKENS` on.

    `counts[code]` is the interaction count of `keys[code]`; returns the keys in id order and each code's token id
    (0 for an item without interactions).
    """
    ordered = sorted(np.flatnonzero(counts).tolist(), key=lambda code: (-counts[code], natural_key(keys[code])))
    token_ids = np.zeros(len(keys), dtype=np.int64)
    token_ids[ordered] = np.arange(NUM_SPECIAL_TOKENS, NUM_SPECIAL_TOKENS + len(ordered))
    return [keys[code] for code in ordered], token_ids


def number_items(item_codes: np.ndarray, keys: list[str]) -> tuple[list[str], np.ndarray]:
    """`number_counted_items` of the interactions `item_codes` (indices into `keys`); returns the keys in id order
    and each interaction's token id."""
    ordered, token_ids = number_counted_items(np.bincount(item_codes, minlength=len(keys)), keys)
    return ordered, token_ids[item_codes]


def low_rated_by_user(pairs: pd.DataFrame, users: np.ndarray, item2id: dict[str, int]) -> dict[str, list[int]]:
    """The token ids of the items in `pairs` (user, item), per user of `users`, sorted; unknown items left out."""
    ids = pairs["item"].map(item2id)
    keep = (ids.notna() & pairs["user"].isin(users)).to_numpy()
    if not keep.any():
        return {}
    codes, user_keys = pd.factorize(pairs["user"][keep])
    return items_by_user(codes, ids[keep].to_numpy(dtype=np.int64), np.asarray(user_keys))


def items_by_user(codes: np.ndarray, ids: np.ndarray, user_keys: np.ndarray) -> dict[str, list[int]]:
    """`{user_keys[code]: sorted distinct ids}` of the pairs `(codes[i], ids[i])`."""
    order = np.lexsort((ids, codes))
    codes, ids = codes[order], ids[order]
    first = np.r_[True, (codes[1:] != codes[:-1]) | (ids[1:] != ids[:-1])]
    codes, ids = codes[first], ids[first]
    starts = np.flatnonzero(np.r_[True, codes[1:] != codes[:-1]])
    groups = np.split(ids, starts[1:])
    return {user_keys[code]: group.tolist() for code, group in zip(codes[starts].tolist(), groups, strict=True)}


def interaction_stats(lengths: np.ndarray, num_items: int) -> dict[str, float | int]:
    """`stats.json`'s counts, from each user's number of interactions."""
    interactions = int(lengths.sum())
    return {
        "num_users": len(lengths),
        "num_items": num_items,
        "num_interactions": interactions,
        "mean_length": round(float(lengths.mean()), 4),
        "median_length": float(np.median(lengths)),
        "density": interactions / (len(lengths) * num_items),
    }


def recorded_args(path: str | Path, fmt: str, columns: Columns, item_file: str | Path | None, **options) -> dict:
    """`stats.json`'s `args`: the input, its format and columns as read, and the other `options` as given."""
    names = {key: value for key, value in vars(columns).items() if value}
    item_file = str(item_file) if item_file else None
    return {"input": str(path), "format": fmt, "columns": names, "item_file": item_file, **options}


def log_summary(stats: dict) -> None:
    """One line on the prepared data set."""
    logger.info(
        "%s: %d users, %d items, %d interactions; split rows %s",
        stats["dataset"],
        stats["num_users"],
        stats["num_items"],
        stats["num_interactions"],
        stats["splits"],
    )


def _check_read(log: Interactions, path: Path) -> None:
    """Refuse a source that gave no interaction at all (an empty file, a header alone, or every line dropped)."""
    if log.frame.empty:
        dropped = f"{sum(log.dropped.values())} rows dropped: {dict(log.dropped)}" if log.dropped else "no data line"
        raise PreprocessingError(f"no interaction could be read from {path} ({dropped})")


def _warn_if_vocabulary_changed(previous: Path, new: Path, kept: list[str]) -> None:
    """Files kept from a previous output (`item_text.npy`, ...) follow its token ids: say if those changed."""
    vocabulary = Path("tokenizer") / "id2item.json"
    old = previous / vocabulary
    if kept and (not old.is_file() or old.read_bytes() != (new / vocabulary).read_bytes()):
        logger.warning(
            "kept %s from the previous %s, made for its item ids, which changed: recompute or remove them",
            ", ".join(kept),
            previous,
        )


def _save(
    output: Path,
    splits: DatasetDict,
    tokenizer: PreTrainedTokenizerFast,
    stats: dict,
    titles: dict[int, ItemInfo],
    low_rated: dict[str, list[int]] | None,
    features: Features | None,
    cold_items: dict | None,
) -> None:
    """Write the output folder as a whole (see `data_preprocess.output`), keeping the entries of a previous output
    that `prepare` does not write."""
    with replace_folder(output, MARKERS, WRITTEN_BY) as folder:
        splits.save_to_disk(str(folder))
        save_item_tokenizer(tokenizer, folder / "tokenizer")
        if features is not None:
            save_features(features, folder / FEATURES_FOLDER)
        if titles:
            titles_by_id = {str(token_id): titles[token_id] for token_id in sorted(titles)}
            atomic_write_json(folder / "item_titles.json", titles_by_id, indent=None)
        if low_rated is not None:
            atomic_write_json(folder / "low_rated.json", low_rated, indent=None)
        if cold_items is not None:
            atomic_write_json(folder / COLD_ITEMS_FILE, cold_items, indent=None)
        atomic_write_json(folder / "stats.json", stats, indent=1)
        kept = carry_over(output, folder, (*OUTPUT_ENTRIES, *splits))
        _warn_if_vocabulary_changed(output, folder, kept)
    logger.info("saved to %s%s", output, f" (kept from before: {', '.join(kept)})" if kept else "")


def prepare(
    input: str | Path | None = None,
    output: str | Path | None = None,
    *,
    format: str = "auto",
    columns: Columns = DEFAULT_COLUMNS,
    item_file: str | Path | None = None,
    min_rating: float | None = None,
    low_rating: float = 2.0,
    k_core: int | None = None,
    keep_duplicates: bool = False,
    dedup_consecutive: bool = False,
    max_length: int = 50,
    split: str = "leave-one-out",
    valid_start: int | None = None,
    test_start: int | None = None,
    name: str | None = None,
    on_error: OnError = "raise",
    features: FeatureSources | Literal["auto"] | None = "auto",
    cold_items: float | None = None,
    cold_items_seed: int = 0,
) -> tuple[DatasetDict, PreTrainedTokenizerFast]:
    """Read an interaction log, filter it, number the items by popularity, split it, and save it all to `output`.

    With `input=None` the embedded MovieLens-100K (from the recbole wheel) is used. `min_rating` keeps interactions
    rated at least that (implicit feedback); items rated at most `low_rating` are kept aside, per user, for the DPO
    low-rated negatives. `k_core` drops users and items with fewer interactions until none is left. Exact duplicates
    (the same user, item, time and rating as an earlier line) are dropped and counted unless `keep_duplicates`; a
    source without times has none (positions stand in for times). `dedup_consecutive` drops an interaction repeating
    the user's previous item. `split="time"` splits at the global times `valid_start`/`test_start` (default: the 80%
    and 90% quantiles). Rows keep the last `max_length + 1` items.
    `on_error="skip"` counts malformed lines instead of raising `DataFormatError`. An input that gives no
    interaction, or an empty split, raises `PreprocessingError` naming the cause.
    `features`: item and user tables and modality embedding tables to write under `features/` (see
    `data_preprocess.feature_schema`); `"auto"` (the default) is MovieLens-100K's own features
    (`FeatureSources.movielens_100k()`) for the embedded data set, none for an `input`.
    `cold_items`: the fraction of the items held out of the train split (drawn with `cold_items_seed`), for the
    cold-item protocol (see `data_preprocess.cold_items`); written to `cold_items.json`.
    Saved to `output` (when given): the `DatasetDict`, `tokenizer/`, `stats.json`, `item_titles.json` where titles
    exist, `low_rated.json` where ratings exist and `features/` where features are given. The folder is replaced
    as a whole once complete (a failure leaves the previous one); an existing `output` must be empty or a previous
    output of `prepare`, whose other entries (such as `item_text.npy`) are kept.
    """
    if split not in SPLITS:
        raise PreprocessingError(f"unknown split {split!r}; expected one of {', '.join(SPLITS)}")
    if max_length < 1:
        raise PreprocessingError(f"max_length must be at least 1, got {max_length}")
    if output is not None:
        check_replaceable(Path(output), MARKERS, WRITTEN_BY)
    if isinstance(features, str):
        features = FeatureSources.movielens_100k() if input is None else None
    if features is not None and features.empty:
        features = None
    if input is None:
        path, fmt, default_name = embedded_movielens(), "atomic", "ml-100k"
    else:
        path = resolve_input(input)
        fmt = detect_format(path) if format == "auto" else format
        default_name = path.parent.name if path.name in KNOWN_FILES else path.stem
    name = name or default_name
    logger.info("reading %s (format %s)", path, fmt)
    log = read_interactions(path, fmt, columns, Path(item_file) if item_file else None, on_error)
    _check_read(log, path)
    dropped: Counter[str] = Counter()
    for reason, count in sorted(log.dropped.items()):
        record_drops(dropped, reason, count, f"reading {path.name}")
    if split == "time" and not log.has_timestamps:
        raise PreprocessingError(f"the time split needs timestamps, and {path} has none; use --split leave-one-out")
    frame = log.frame if keep_duplicates else drop_exact_duplicates(log.frame, dropped)
    low_rated_pairs = frame.loc[frame["rating"] <= low_rating, ["user", "item"]] if log.has_ratings else None
    if min_rating is not None:
        if not log.has_ratings:
            raise PreprocessingError(f"--min-rating needs ratings, and {path} has none")
        frame = apply_min_rating(frame, min_rating, dropped)
    item_codes, item_keys = pd.factorize(frame["item"])
    frame = frame.assign(user_code=natural_codes(frame["user"]), item_code=item_codes)
    frame = filter_until_stable(sort_chronologically(frame), k_core, dedup_consecutive, dropped)
    if frame.empty:
        raise PreprocessingError(f"no interaction left in {path} after filtering (dropped: {dict(dropped)})")

    keys, item_ids = number_items(frame["item_code"].to_numpy(), item_keys.tolist())
    tokenizer = build_item_tokenizer(keys, model_max_length=max_length + 2)
    sequences = Sequences.from_sorted(
        frame["user_code"].to_numpy(), frame["user"].to_numpy(), item_ids, frame["timestamp"].to_numpy()
    )
    if not log.has_timestamps:
        logger.warning(
            "%s has no timestamps: `timestamps` holds each item's position in its user's sequence (0, 1, ...), "
            "so TiSASRec's time intervals are position gaps",
            path,
        )
        sequences.timestamps = np.arange(len(frame)) - np.repeat(sequences.starts, sequences.lengths)
    args = recorded_args(
        path,
        fmt,
        columns,
        item_file,
        min_rating=min_rating,
        low_rating=low_rating,
        k_core=k_core,
        keep_duplicates=keep_duplicates,
        dedup_consecutive=dedup_consecutive,
        max_length=max_length,
        split=split,
        on_error=on_error,
        features=None if features is None else features.describe(),
        cold_items=cold_items,
        cold_items_seed=cold_items_seed,
    )
    if split == "time":
        args["valid_start"], args["test_start"] = time_cutoffs(sequences.timestamps, valid_start, test_start)
        splits = time_split(sequences, max_length, args["valid_start"], args["test_start"], dropped)
    else:
        splits = leave_one_out(sequences, max_length)
    cold = None
    if cold_items is not None:
        splits, cold_ids, cold_stats = hold_out_cold_items(
            splits, NUM_SPECIAL_TOKENS, len(tokenizer), cold_items, cold_items_seed
        )
        cold = {
            "fraction": cold_items,
            "seed": cold_items_seed,
            "token_ids": cold_ids,
            "items": [keys[token_id - NUM_SPECIAL_TOKENS] for token_id in cold_ids],
        }
    stats = {
        "dataset": name,
        **interaction_stats(sequences.lengths, len(keys)),
        "has_timestamps": log.has_timestamps,
        "has_ratings": log.has_ratings,
        "vocab_size": len(tokenizer),
        "num_special_tokens": NUM_SPECIAL_TOKENS,
        "splits": {split_name: len(rows) for split_name, rows in splits.items()},
        "train_only_users": int((sequences.lengths < 3).sum()) if split == "leave-one-out" else None,
        "dropped": dict(sorted(dropped.items())),
        "args": args,
    }
    if cold_items is not None:
        stats["cold_items"] = cold_stats
    built = None
    if output is not None and features is not None:
        built = build_features(features, tokenizer, sequences.user_keys.tolist(), on_error)
        stats["features"] = built.stats
    log_summary(stats)
    if output is not None:
        item2id = dict(zip(keys, range(NUM_SPECIAL_TOKENS, len(tokenizer)), strict=True))
        titles = {item2id[key]: info for key, info in log.items.items() if key in item2id}
        low_rated = None
        if low_rated_pairs is not None:
            low_rated = low_rated_by_user(low_rated_pairs, sequences.user_keys, item2id)
        _save(Path(output), splits, tokenizer, stats, titles, low_rated, built, cold)
    return splits, tokenizer


__all__ = ["prepare"]
