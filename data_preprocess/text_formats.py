"""Line-oriented text formats.

MovieLens `u.data` (`user item rating time`, tab-separated) and `ratings.dat` (the same with `::`), the SASRec format
(`user item` a line, each user's lines in time order), the one-user-a-line format of S3-Rec/ICLRec
(`user item1 item2 ...`) and RecBole's atomic `.inter` files (a `name:type` header, tab-separated).
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Literal, TypeVar

from .errors import DataFormatError, logger, require_file
from .interactions import DEFAULT_COLUMNS, Columns, Interactions, make_interactions

OnError = Literal["raise", "skip"]
T = TypeVar("T")


def undecodable_line(path: Path, encoding: str) -> int:
    """The 1-based line of the first bytes of `path` that `encoding` cannot decode (0 if none)."""
    data = path.read_bytes()
    try:
        data.decode(encoding)
    except UnicodeDecodeError as error:
        return data.count(b"\n", 0, error.start) + 1
    return 0


def iter_lines(path: str | Path, encodings: tuple[str, ...] = ("utf-8-sig",)) -> Iterator[tuple[int, str]]:
    """Yield `(1-based line number, line)` without the line end (nor a UTF-8 byte-order mark); with several encodings,
    the first that decodes the whole file is used (MovieLens item files are Latin-1 or UTF-8)."""
    path = require_file(path)
    encoding = next((name for name in encodings[:-1] if not undecodable_line(path, name)), encodings[-1])
    try:
        with path.open(encoding=encoding, newline="\n") as handle:
            for number, line in enumerate(handle, 1):
                yield number, line.rstrip("\r\n")
    except UnicodeDecodeError:
        reason = f"not valid {encoding.removesuffix('-sig')}"
        raise DataFormatError(path, undecodable_line(path, encoding), reason) from None


def parse_lines(
    path: str | Path,
    parse: Callable[[str], T],
    on_error: OnError,
    dropped: Counter[str],
    skip_header: bool = False,
    encodings: tuple[str, ...] = ("utf-8-sig",),
) -> list[T]:
    """Parse every non-blank line; a line whose `parse` raises `ValueError` raises `DataFormatError` or is counted."""
    records = []
    for number, line in iter_lines(path, encodings):
        if (skip_header and number == 1) or not line.strip():
            continue
        try:
            records.append(parse(line))
        except ValueError as error:
            if on_error == "raise":
                raise DataFormatError(path, number, str(error), line) from None
            dropped["malformed_line"] += 1
            logger.debug("%s, line %d: skipped: %s", path, number, error)
    return records


def parse_number(text: str, what: str) -> float:
    """A finite float, or `ValueError` naming `what`."""
    try:
        value = float(text)
    except ValueError:
        raise ValueError(f"{what} {text!r} is not a number") from None
    if not math.isfinite(value):
        raise ValueError(f"{what} {text!r} is not finite")
    return value


def parse_integer(text: str, what: str) -> int:
    """An integer (an integral-valued float is accepted, as RecBole writes times), or `ValueError` naming `what`."""
    try:
        return int(text)
    except ValueError:
        return int(parse_number(text, what))


def transpose(rows: list[tuple], width: int) -> list[list]:
    """Rows of `width` fields as `width` column lists."""
    return [[row[index] for row in rows] for index in range(width)]


def read_rating_lines(path: str | Path, separator: str | None, on_error: OnError = "raise") -> Interactions:
    """`user item rating time` a line, split on `separator` (`None`: any whitespace, as in `u.data`)."""

    def parse(line: str) -> tuple[str, str, float, int]:
        fields = [field.strip() for field in line.split(separator)]
        if len(fields) != 4:
            raise ValueError(f"expected 4 fields (user, item, rating, timestamp), found {len(fields)}")
        user, item, rating, timestamp = fields
        if not user or not item:
            raise ValueError("empty user or item")
        return user, item, parse_number(rating, "rating"), parse_integer(timestamp, "timestamp")

    dropped: Counter[str] = Counter()
    users, items, ratings, times = transpose(parse_lines(path, parse, on_error, dropped), 4)
    log = make_interactions(users, items, times, ratings)
    log.dropped.update(dropped)
    return log


def read_sasrec(path: str | Path, on_error: OnError = "raise") -> Interactions:
    """The SASRec format: `user item` a line, each user's lines in time order; no times."""

    def parse(line: str) -> tuple[str, str]:
        fields = line.split()
        if len(fields) != 2:
            raise ValueError(f"expected 2 fields (user item), found {len(fields)}")
        return fields[0], fields[1]

    dropped: Counter[str] = Counter()
    users, items = transpose(parse_lines(path, parse, on_error, dropped), 2)
    log = make_interactions(users, items)
    log.dropped.update(dropped)
    return log


def read_user_lines(path: str | Path, on_error: OnError = "raise") -> Interactions:
    """One user a line, `user item1 item2 ...` in time order (S3-Rec/ICLRec); no times."""
    dropped: Counter[str] = Counter()
    users: list[str] = []
    items: list[str] = []
    for fields in parse_lines(path, str.split, on_error, dropped):
        if len(fields) == 1:
            dropped["empty_history"] += 1
        users.extend([fields[0]] * (len(fields) - 1))
        items.extend(fields[1:])
    log = make_interactions(users, items)
    log.dropped.update(dropped)
    return log


def read_atomic(path: str | Path, columns: Columns = DEFAULT_COLUMNS, on_error: OnError = "raise") -> Interactions:
    """A RecBole atomic `.inter` file: a tab-separated `name:type` header, then one interaction a line."""
    _, header = next(iter_lines(path), (1, ""))
    names = [field.split(":")[0] for field in header.split("\t")]

    def position(name: str | None, default: str, required: bool) -> int | None:
        wanted = name or default
        if wanted in names:
            return names.index(wanted)
        if required or name:
            raise DataFormatError(path, 1, f"no column {wanted!r} in the header (columns: {', '.join(names)})")
        return None

    user_at = position(columns.user, "user_id", True)
    item_at = position(columns.item, "item_id", True)
    time_at = position(columns.time, "timestamp", False)
    rating_at = position(columns.rating, "rating", False)

    def parse(line: str) -> tuple[str, str, int, float]:
        fields = line.split("\t")
        if len(fields) != len(names):
            raise ValueError(f"expected {len(names)} tab-separated fields, found {len(fields)}")
        user, item = fields[user_at].strip(), fields[item_at].strip()
        if not user or not item:
            raise ValueError("empty user or item")
        timestamp = 0 if time_at is None else parse_integer(fields[time_at], "timestamp")
        rating = math.nan if rating_at is None else parse_number(fields[rating_at], "rating")
        return user, item, timestamp, rating

    dropped: Counter[str] = Counter()
    users, items, times, ratings = transpose(parse_lines(path, parse, on_error, dropped, skip_header=True), 4)
    log = make_interactions(users, items, None if time_at is None else times, None if rating_at is None else ratings)
    log.dropped.update(dropped)
    return log
