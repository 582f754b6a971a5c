"""The cold-item protocol: a random fraction of the items is held out of training entirely, so that evaluation can
measure how a model ranks items it never saw as targets or inputs.

`hold_out_cold_items` removes the chosen items from every row of the `train` split (their timestamps with them) and
leaves the `valid` and `test` rows whole: at evaluation the histories still hold them, and a user whose target is a
held-out item is a cold-target user. The chosen token ids and raw items are written to `cold_items.json` in the
processed folder:

    {"fraction": 0.1, "seed": 0, "token_ids": [7, 12, ...], "items": ["50", "181", ...]}

and `stats.json` counts what the protocol removed (`cold_items`).
"""

import numpy as np
from datasets import Dataset, DatasetDict

from .errors import PreprocessingError, logger

COLD_ITEMS_FILE = "cold_items.json"


def choose_cold_items(num_special_tokens: int, vocab_size: int, fraction: float, seed: int) -> list[int]:
    """`round(fraction * num_items)` item token ids drawn uniformly without replacement (seeded), sorted."""
    if not 0.0 < fraction < 1.0:
        raise PreprocessingError(f"--cold-items must be a fraction in (0, 1), got {fraction}")
    num_items = vocab_size - num_special_tokens
    count = round(fraction * num_items)
    if count == 0:
        raise PreprocessingError(f"--cold-items {fraction} of {num_items} items holds out no item")
    chosen = np.random.default_rng(seed).choice(num_items, size=count, replace=False) + num_special_tokens
    return sorted(chosen.tolist())


def without_items(train: Dataset, items: list[int], vocab_size: int) -> tuple[Dataset, int, int]:
    """`train` with `items` removed from every row (timestamps kept aligned) and the rows left empty dropped; also
    the number of interactions removed and of rows dropped."""
    held_out = np.zeros(vocab_size, dtype=bool)
    held_out[items] = True

    def remove(row: dict) -> dict:
        keep = ~held_out[np.asarray(row["item_ids"], dtype=np.int64)]
        return {
            "item_ids": np.asarray(row["item_ids"])[keep].tolist(),
            "timestamps": np.asarray(row["timestamps"])[keep].tolist(),
        }

    before = sum(len(ids) for ids in train["item_ids"])
    cleaned = train.map(remove, desc="holding out the cold items")
    kept = cleaned.filter(lambda row: len(row["item_ids"]) > 0)
    removed = before - sum(len(ids) for ids in kept["item_ids"])
    return kept, removed, len(cleaned) - len(kept)


def hold_out_cold_items(
    splits: DatasetDict, num_special_tokens: int, vocab_size: int, fraction: float, seed: int
) -> tuple[DatasetDict, list[int], dict[str, int | float]]:
    """Hold `fraction` of the items out of the `train` split (see the module docstring). Returns the new splits, the
    cold token ids and the counts for `stats.json`."""
    cold = choose_cold_items(num_special_tokens, vocab_size, fraction, seed)
    train, removed, emptied = without_items(splits["train"], cold, vocab_size)
    if len(train) == 0:
        raise PreprocessingError(f"the train split would be empty: --cold-items {fraction} removed every row")
    cold_set = set(cold)
    targets = {name: sum(row[-1] in cold_set for row in splits[name]["item_ids"]) for name in ("valid", "test")}
    stats = {
        "fraction": fraction,
        "seed": seed,
        "num_cold_items": len(cold),
        "train_interactions_removed": removed,
        "train_rows_emptied": emptied,
        "valid_cold_targets": targets["valid"],
        "test_cold_targets": targets["test"],
    }
    logger.info(
        "cold items: %d items held out of training (%d training interactions removed, %d rows left empty and "
        "dropped); %d valid and %d test targets are cold",
        len(cold),
        removed,
        emptied,
        targets["valid"],
        targets["test"],
    )
    return DatasetDict(train=train, valid=splits["valid"], test=splits["test"]), cold, stats


__all__ = ["COLD_ITEMS_FILE", "hold_out_cold_items"]
