"""Training rows streamed from the processed shards, in length-bucketed batches built in a bounded buffer.

The map-style path memory-maps a split and draws an epoch's order over all its rows (`LengthBucketSampler`). A
stream never holds the split: `stream_split` reads the Arrow shards that `python -m data_preprocess` wrote
(`{data_dir}/{split}/data-*.arrow`) as a `datasets.IterableDataset`, and [`LengthBucketedStream`] shuffles them with
datasets' bounded shuffle buffer (shard order and a buffer of rows, reseeded every epoch), takes windows of
`buffer_batches` batches of rows, sorts each window by history length, cuts it into batches and yields the rows batch
after batch, the window's batches in random order. `Trainer`'s `DataLoader` groups consecutive rows by the batch
size, so it sees the bucketed batches; memory holds one window and the shuffle buffer, whatever the split's size.
"""

import logging
import random
from collections.abc import Iterator
from pathlib import Path

import torch
from datasets import Dataset, IterableDataset, load_dataset

from .length_bucket_sampler import BATCHES_PER_BUCKET, window_lengths

logger = logging.getLogger(__name__)


def trainable_counts(split: Dataset, max_length: int) -> tuple[int, int]:
    """The rows of a (memory-mapped) split with at least two items and their training targets (`min(len - 1,
    max_length)` a row), counted from the Arrow list offsets only."""
    windows = window_lengths(split, max_length)
    trainable = windows[windows >= 1]
    return len(trainable), int(trainable.sum())


def stream_split(data_dir: str | Path, split: str = "train") -> IterableDataset:
    """The rows of a processed split, read shard by shard from its Arrow files (`FileNotFoundError` naming the
    folder when it holds none)."""
    shards = sorted(str(path) for path in (Path(data_dir) / split).glob("data-*.arrow"))
    if not shards:
        raise FileNotFoundError(
            f"No Arrow shards (data-*.arrow) in {Path(data_dir) / split}: prepare the data with "
            "python -m data_preprocess."
        )
    return load_dataset("arrow", data_files=shards, split="train", streaming=True)


class LengthBucketedStream(torch.utils.data.IterableDataset):
    """The rows of `rows`, shuffled, in batches of similar history length for a `DataLoader` of `batch_size` rows
    (`bucketed=False`: shuffled only, the streamed counterpart of random batches).

    Args:
        rows: the stream (`stream_split`); rows with fewer than two items are skipped and counted in the log.
        num_rows: the rows of the stream with at least two items (`trainable_counts`): the length `Trainer` counts
            an epoch's steps by.
        num_targets: their training targets (`trainable_counts`), which `NextItemTrainer` normalises bucketed
            steps by.
        batch_size: rows per batch (per process times gradient-accumulation steps, as `LengthBucketSampler`'s).
        max_length: history items the model reads; the length a row is sorted by is its window, `min(len - 1,
            max_length)`.
        buffer_batches: batches a window holds (the buffer that is sorted); the shuffle buffer holds as many rows.
        seed: the seed of epoch 0; epoch `e` uses `seed + e` (`set_epoch`, which `Trainer` calls).
        bucketed: sort the windows into length buckets (else the rows keep the shuffled order).
    """

    def __init__(
        self,
        rows: IterableDataset,
        num_rows: int,
        num_targets: int,
        batch_size: int,
        max_length: int,
        buffer_batches: int = BATCHES_PER_BUCKET,
        seed: int = 0,
        bucketed: bool = True,
    ):
        if batch_size < 1 or buffer_batches < 1:
            raise ValueError(f"batch_size and buffer_batches must be at least 1, got {batch_size}, {buffer_batches}.")
        self.rows = rows
        self.num_rows = num_rows
        self.num_targets = num_targets
        self.batch_size = batch_size
        self.max_length = max_length
        self.window_rows = batch_size * buffer_batches
        self.seed = seed
        self.bucketed = bucketed
        self.epoch = 0

    def __len__(self) -> int:
        return self.num_rows

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __iter__(self) -> Iterator[dict]:
        shuffled = self.rows.shuffle(seed=self.seed, buffer_size=self.window_rows)
        shuffled.set_epoch(self.epoch)
        generator = random.Random(self.seed + self.epoch)
        window, skipped = [], 0
        for row in shuffled:
            if len(row["item_ids"]) < 2:
                skipped += 1
            elif not self.bucketed:
                yield row
            else:
                window.append(row)
                if len(window) == self.window_rows:
                    yield from self.in_buckets(window, generator)
                    window = []
        yield from self.in_buckets(window, generator)
        if skipped:
            logger.warning("Streamed epoch %d: skipped %d rows with fewer than two items.", self.epoch, skipped)

    def in_buckets(self, window: list[dict], generator: random.Random) -> Iterator[dict]:
        """The window's rows sorted by window length, cut into batches, the full batches in random order and a short
        one (the end of the epoch only) last, so that the `DataLoader`'s batches are these."""
        window = sorted(window, key=lambda row: min(len(row["item_ids"]) - 1, self.max_length))
        batches = [window[start : start + self.batch_size] for start in range(0, len(window), self.batch_size)]
        short = batches.pop() if batches and len(batches[-1]) < self.batch_size else None
        generator.shuffle(batches)
        for batch in [*batches, *([short] if short else [])]:
            yield from batch
