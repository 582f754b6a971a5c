"""Filtering and ordering: exact duplicates, rating threshold, chronological order, repeats, k-core.

Every function takes and returns a frame with integer columns `user_code` (users in natural key order) and
`item_code`, besides the `Interactions` columns; its index is the source order. Dropped rows are counted by reason.
"""

from __future__ import annotations

from collections import Counter

import numpy as np
import pandas as pd

from .errors import record_drops
from .interactions import natural_key


def natural_codes(keys: pd.Series) -> np.ndarray:
    """Integer codes of `keys` that sort like `natural_key` ("2" before "10")."""
    codes, uniques = pd.factorize(keys)
    uniques = uniques.tolist()
    rank = np.empty(len(uniques), dtype=np.int64)
    rank[sorted(range(len(uniques)), key=lambda index: natural_key(uniques[index]))] = np.arange(len(uniques))
    return rank[codes]


def apply_min_rating(frame: pd.DataFrame, min_rating: float, dropped: Counter[str]) -> pd.DataFrame:
    """Keep interactions rated at least `min_rating` (implicit feedback from explicit ratings)."""
    missing = frame["rating"].isna()
    below = frame["rating"] < min_rating
    record_drops(dropped, "missing_rating", int(missing.sum()), f"--min-rating {min_rating}")
    record_drops(dropped, "below_min_rating", int(below.sum()), f"rating < {min_rating}")
    return frame[~(missing | below)]


def sort_chronologically(frame: pd.DataFrame) -> pd.DataFrame:
    """Order a frame in source order by user, then time; equal times keep the source order (a stable sort)."""
    users, times = frame["user_code"].to_numpy(), frame["timestamp"].to_numpy()
    span = int(times.max()) - int(times.min()) + 1 if len(times) else 1
    if (int(users.max(initial=0)) + 1) * span < 2**62:  # one key: a single stable sort, faster than lexsort
        order = np.argsort(users * span + (times - times.min(initial=0)), kind="stable")
    else:
        order = np.lexsort((times, users))
    return frame.iloc[order]


def drop_exact_duplicates(frame: pd.DataFrame, dropped: Counter[str]) -> pd.DataFrame:
    """Drop an interaction identical to an earlier line in user, item, time and (where present) rating.

    Without times in the source, `timestamp` holds each line's position, so no two lines are identical: repeats
    there are only dropped on request, by `drop_consecutive_repeats`.
    """
    duplicate = frame.duplicated([column for column in ("user", "item", "timestamp", "rating") if column in frame])
    detail = "same user, item, time and rating as an earlier line; --keep-duplicates keeps them"
    record_drops(dropped, "duplicate_interaction", int(duplicate.sum()), detail)
    return frame[~duplicate.to_numpy()]


def drop_consecutive_repeats(frame: pd.DataFrame, dropped: Counter[str]) -> pd.DataFrame:
    """Drop an interaction that repeats the user's previous item (the frame must be sorted)."""
    users, items = frame["user_code"].to_numpy(), frame["item_code"].to_numpy()
    repeat = np.r_[False, (users[1:] == users[:-1]) & (items[1:] == items[:-1])]
    record_drops(dropped, "consecutive_repeat", int(repeat.sum()))
    return frame[~repeat]


def k_core_pass(frame: pd.DataFrame, k: int, dropped: Counter[str]) -> pd.DataFrame:
    """One pass of k-core filtering: drop items, then users, with fewer than `k` interactions."""
    for column, reason in (("item_code", "k_core_item"), ("user_code", "k_core_user")):
        codes = frame[column].to_numpy()
        rare = np.bincount(codes)[codes] < k
        record_drops(dropped, reason, int(rare.sum()), f"fewer than {k} interactions")
        frame = frame[~rare]
    return frame


def filter_until_stable(frame: pd.DataFrame, k_core: int | None, dedup: bool, dropped: Counter[str]) -> pd.DataFrame:
    """Repeat de-duplication and k-core passes until nothing changes (a k-core pass can bring repeats together)."""
    while True:
        size = len(frame)
        if dedup:
            frame = drop_consecutive_repeats(frame, dropped)
        if k_core:
            frame = k_core_pass(frame, k_core, dropped)
        if len(frame) == size:
            return frame
