"""The table every reader produces: one row per interaction, in source order, keys as strings."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import TypedDict

import numpy as np
import pandas as pd


class ItemInfo(TypedDict):
    """What a side file (or a title column) says about an item."""

    title: str
    genres: list[str]


@dataclass
class Interactions:
    """An interaction log as read.

    `frame` has columns `user` and `item` (raw keys, str), `timestamp` (int64; the source order where the source has
    no times, see `has_timestamps`) and, where the source has ratings, `rating` (float64, NaN where missing). Its index
    is the source order, which breaks ties between equal timestamps.
    """

    frame: pd.DataFrame
    has_timestamps: bool
    items: dict[str, ItemInfo] = field(default_factory=dict)
    dropped: Counter[str] = field(default_factory=Counter)

    @property
    def has_ratings(self) -> bool:
        """Whether the source carries ratings."""
        return "rating" in self.frame


def make_interactions(
    users: list[str] | pd.Series,
    items: list[str] | pd.Series,
    timestamps: list[int] | np.ndarray | None = None,
    ratings: list[float] | np.ndarray | None = None,
) -> Interactions:
    """Build `Interactions` from parallel columns; without timestamps the source order stands in."""
    columns: dict[str, object] = {
        "user": pd.Series(users).reset_index(drop=True),
        "item": pd.Series(items).reset_index(drop=True),
        "timestamp": np.arange(len(users), dtype=np.int64) if timestamps is None else np.asarray(timestamps, np.int64),
    }
    if ratings is not None:
        columns["rating"] = np.asarray(ratings, dtype=np.float64)
    return Interactions(pd.DataFrame(columns), has_timestamps=timestamps is not None)


def key_text(value: object) -> str:
    """A raw user or item key as text: integers (also integral floats from JSON or Parquet) without a decimal point."""
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return value if isinstance(value, str) else str(value)


def natural_key(key: str) -> tuple[int, int, str]:
    """A sort key that orders numeric keys by value ("2" before "10") and before the other keys."""
    if key.isascii() and key.isdigit():
        return (0, int(key), key)
    return (1, 0, key)


@dataclass(frozen=True)
class Columns:
    """Column names in a tabular log; `None` means the format's default name, used only where the file has it."""

    user: str | None = None
    item: str | None = None
    time: str | None = None
    rating: str | None = None
    title: str | None = None


DEFAULT_COLUMNS = Columns()


__all__ = ["Columns"]
