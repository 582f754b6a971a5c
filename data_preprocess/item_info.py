"""Item side files: titles and genres from MovieLens `u.item`, `movies.dat`, `movies.csv` and RecBole `.item` files."""

from __future__ import annotations

import csv
from collections import Counter
from pathlib import Path

from .errors import DataFormatError, PreprocessingError, require_file
from .interactions import ItemInfo
from .text_formats import OnError, iter_lines, parse_lines

# ML-100K's genre flags, in `u.genre` order (used when `u.genre` is not beside `u.item`).
ML100K_GENRES = [
    "unknown",
    "Action",
    "Adventure",
    "Animation",
    "Children's",
    "Comedy",
    "Crime",
    "Documentary",
    "Drama",
    "Fantasy",
    "Film-Noir",
    "Horror",
    "Musical",
    "Mystery",
    "Romance",
    "Sci-Fi",
    "Thriller",
    "War",
    "Western",
]
# Older MovieLens files are Latin-1, newer ones UTF-8.
MOVIELENS_ENCODINGS = ("utf-8-sig", "latin-1")


def u_item_genres(path: Path) -> list[str]:
    """The genre names of a `u.item` file's flags: from `u.genre` beside it, else ML-100K's."""
    genre_file = path.with_name("u.genre")
    if not genre_file.is_file():
        return ML100K_GENRES
    return [line.split("|")[0] for _, line in iter_lines(genre_file, MOVIELENS_ENCODINGS) if line.strip()]


def parse_u_item_line(line: str, genres: list[str]) -> tuple[list[str], list[str]]:
    """A `u.item` line's fields and the names of its flagged genres; `ValueError` if malformed."""
    fields = line.split("|")
    if len(fields) != 5 + len(genres):
        raise ValueError(f"expected {5 + len(genres)} '|'-separated fields, found {len(fields)}")
    flags = fields[5:]
    if any(flag not in ("0", "1") for flag in flags):
        raise ValueError("genre flags must be 0 or 1")
    return fields, [genre for genre, flag in zip(genres, flags, strict=True) if flag == "1"]


def _u_item(path: Path, on_error: OnError, dropped: Counter[str]) -> dict[str, ItemInfo]:
    """`item|title|release date|video release date|URL|genre flags...`."""
    genres = u_item_genres(path)

    def parse(line: str) -> tuple[str, ItemInfo]:
        fields, genre_names = parse_u_item_line(line, genres)
        return fields[0], ItemInfo(title=fields[1], genres=genre_names)

    return dict(parse_lines(path, parse, on_error, dropped, encodings=MOVIELENS_ENCODINGS))


def _movies_dat(path: Path, on_error: OnError, dropped: Counter[str]) -> dict[str, ItemInfo]:
    """`item::title::genre1|genre2` (ML-1M, ML-10M)."""

    def parse(line: str) -> tuple[str, ItemInfo]:
        fields = line.split("::")
        if len(fields) != 3:
            raise ValueError(f"expected 3 '::'-separated fields (item, title, genres), found {len(fields)}")
        return fields[0], ItemInfo(title=fields[1], genres=_genres(fields[2]))

    return dict(parse_lines(path, parse, on_error, dropped, encodings=MOVIELENS_ENCODINGS))


def _movies_csv(path: Path, on_error: OnError, dropped: Counter[str]) -> dict[str, ItemInfo]:
    """`movieId,title,genres` with a header (ML-20M and later)."""
    items: dict[str, ItemInfo] = {}
    with path.open(encoding="utf-8-sig", newline="") as handle:
        reader = csv.reader(handle)
        header = next(reader, [])
        if header[:3] != ["movieId", "title", "genres"]:
            raise DataFormatError(path, 1, "expected the header movieId,title,genres", ",".join(header))
        for row in reader:
            if not row:
                continue
            if len(row) != 3:
                if on_error == "raise":
                    raise DataFormatError(path, reader.line_num, f"expected 3 fields, found {len(row)}", ",".join(row))
                dropped["malformed_line"] += 1
                continue
            items[row[0]] = ItemInfo(title=row[1], genres=_genres(row[2]))
    return items


def _atomic_item(path: Path, on_error: OnError, dropped: Counter[str]) -> dict[str, ItemInfo]:
    """RecBole `.item`: `item_id`, a title column (`movie_title` or `title`), optional `release_year` and `class`."""
    _, header = next(iter_lines(path), (1, ""))
    names = [field.split(":")[0] for field in header.split("\t")]
    title_name = next((name for name in ("movie_title", "title") if name in names), None)
    if "item_id" not in names or title_name is None:
        raise DataFormatError(path, 1, "expected item_id and movie_title (or title) columns", header)
    item_at, title_at = names.index("item_id"), names.index(title_name)
    year_at = names.index("release_year") if "release_year" in names else None
    class_at = names.index("class") if "class" in names else None

    def parse(line: str) -> tuple[str, ItemInfo]:
        fields = line.split("\t")
        if len(fields) != len(names):
            raise ValueError(f"expected {len(names)} tab-separated fields, found {len(fields)}")
        title = fields[title_at]
        if year_at is not None and fields[year_at]:
            title = f"{title} ({fields[year_at]})"
        genres = [] if class_at is None else fields[class_at].split()
        return fields[item_at], ItemInfo(title=title, genres=genres)

    return dict(parse_lines(path, parse, on_error, dropped, skip_header=True))


def _genres(text: str) -> list[str]:
    return [genre for genre in text.split("|") if genre and genre != "(no genres listed)"]


def read_item_info(path: str | Path, on_error: OnError = "raise") -> tuple[dict[str, ItemInfo], Counter[str]]:
    """Titles and genres by raw item key, and the lines dropped; the format follows the file name."""
    path = require_file(path)
    dropped: Counter[str] = Counter()
    if path.name == "u.item":
        reader = _u_item
    elif path.suffix == ".dat":
        reader = _movies_dat
    elif path.suffix == ".csv":
        reader = _movies_csv
    elif path.suffix == ".item":
        reader = _atomic_item
    else:
        raise PreprocessingError(
            f"{path}: unknown item file (expected u.item, movies.dat, movies.csv or a RecBole .item)"
        )
    return reader(path, on_error, dropped), dropped
