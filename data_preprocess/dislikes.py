"""Held-out dislikes: a user's low-rated items (`low_rated.json` of a data folder prepared from rated data, kept out
of the sequences by `--min-rating`) split into a part that may train and parts that only evaluate.

Each (user, disliked item) falls in one part by a fixed hash of the two, so the split is random but the same in
every process and run: `pairs` (half: preference pairs, an unlikelihood term, anything that trains), `valid` (a
quarter: model selection) and `test` (a quarter: the reported `disliked@10`). A dislike of the `valid` or `test`
part never reaches training.

    from data_preprocess.dislikes import load_dislikes
    held_out = load_dislikes("data/ml-100k-liked", "test")   # {user id: [token ids]}
"""

import hashlib
import json
from pathlib import Path

LOW_RATED_FILE = "low_rated.json"
# part: its share of the dislikes; the parts take consecutive slices of [0, 1) in this order.
DISLIKE_PARTS = {"pairs": 0.5, "valid": 0.25, "test": 0.25}


def dislike_part(user: str, item: int) -> str:
    """The part of `DISLIKE_PARTS` the dislike (`user`, token id `item`) belongs to."""
    digest = hashlib.blake2b(f"{user}\t{item}".encode(), digest_size=8).digest()
    position = int.from_bytes(digest, "big") / 2**64
    end = 0.0
    for part, share in DISLIKE_PARTS.items():
        end += share
        if position < end:
            return part
    return part


def split_dislikes(low_rated: dict[str, list[int]], part: str) -> dict[str, list[int]]:
    """The dislikes of `part` (`"pairs"`, `"valid"` or `"test"`) per user: `{user: [token ids]}`, users without one
    left out."""
    if part not in DISLIKE_PARTS:
        raise ValueError(f"Unknown dislike part {part!r}; expected one of {', '.join(DISLIKE_PARTS)}.")
    kept = {user: [item for item in items if dislike_part(user, item) == part] for user, items in low_rated.items()}
    return {user: items for user, items in kept.items() if items}


def load_dislikes(data_dir: str | Path, part: str) -> dict[str, list[int]] | None:
    """The dislikes of `part` of a data folder's `low_rated.json`, or `None` when it has none (no ratings)."""
    path = Path(data_dir) / LOW_RATED_FILE
    if not path.is_file():
        return None
    return split_dislikes(json.loads(path.read_text(encoding="utf-8")), part)
