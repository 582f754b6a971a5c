"""Shared fixtures. Those of the data tests are prefixed `data_`."""

import random
from pathlib import Path

import pytest

DATA_SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "data"


def data_random_log(seed: int = 0, users: int = 30, items: int = 25) -> list[tuple[str, str, int, int]]:
    """`(user, item, rating, time)` rows in a shuffled order: 3 to 12 distinct items a user, some equal times."""
    rng = random.Random(seed)
    rows = []
    for user in range(1, users + 1):
        chosen = rng.sample(range(1, items + 1), rng.randint(3, 12))
        start = rng.randint(0, 10_000)
        for step, item in enumerate(chosen):
            rows.append((str(user), str(item), rng.randint(1, 5), start + 10 * (step // 2)))  # pairs share a time
    rng.shuffle(rows)
    return rows


def data_write_movielens(folder: Path) -> Path:
    """Write a small ML-100K-style folder: `u.data` (tab-separated) and a Latin-1 `u.item`."""
    folder.mkdir(parents=True, exist_ok=True)
    rows = data_random_log()
    (folder / "u.data").write_text("".join(f"{u}\t{i}\t{r}\t{t}\n" for u, i, r, t in rows), encoding="utf-8")
    genres = "|".join(["0"] * 19)
    lines = [f"{item}|Movie {item} (199{item % 10})|01-Jan-1995||http://x|{genres}" for item in range(1, 26)]
    lines[0] = "1|Amélie (2001)|01-Jan-2001||http://x|0|0|0|0|0|1|0|0|1|0|0|0|0|0|1|0|0|0|0"
    (folder / "u.item").write_bytes("\n".join(lines).encode("latin-1"))
    return folder


@pytest.fixture
def data_movielens_dir(tmp_path) -> Path:
    """A small ML-100K-style folder (see `data_write_movielens`)."""
    return data_write_movielens(tmp_path / "ml-tiny")
