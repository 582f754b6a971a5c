"""Training batches of similar length, in random order, so that left padding wastes little compute.

Most users have short histories (Amazon Games: 5.9 input items on average, 46 in the longest of a random batch of
128), and a batch is padded to its longest row, so random batches spend most of their compute on padding. Because
position ids count from each row's first real item, padding changes no output: only which rows share a batch.
"""

from collections.abc import Iterator, Sequence

import numpy as np
import pyarrow.compute as pc
import torch
from datasets import Dataset
from torch.utils.data import Sampler

BATCHES_PER_BUCKET = 50


def window_lengths(split: Dataset, max_length: int) -> np.ndarray:
    """`[rows]`: each row's input window, `min(len(item_ids) - 1, max_length)` (its training targets, what a batch is
    padded to), read from the Arrow list offsets of the (memory-mapped) split, through its row selection if any."""
    lengths = pc.list_value_length(split.with_format("arrow")["item_ids"]).to_numpy()
    return np.minimum(lengths - 1, max_length)


class LengthBucketSampler(Sampler[int]):
    """Indices of a shuffled epoch, in which every run of `batch_size` indices has rows of similar length.

    The epoch's random permutation is cut into buckets of `BATCHES_PER_BUCKET * batch_size` rows; each bucket is
    sorted by length and cut into batches; the batches of all buckets are then shuffled, so that consecutive batches
    are not ordered by length (unlike `transformers`' `LengthGroupedSampler`, whose batches run longest to shortest
    inside each mega-batch). A short last batch stays last, so that the data loader's batches are these batches.

    The order depends only on `seed` and the epoch (`set_epoch`, which `Trainer` calls), so every process of a
    distributed run draws the same epoch and takes its own share of the batches, and a resumed run replays it.

    Args:
        lengths: the padded cost of each row, e.g. its input window length.
        batch_size: rows per batch (per process times gradient-accumulation steps).
        seed: the seed of epoch 0; epoch `e` uses `seed + e`.
    """

    def __init__(self, lengths: Sequence[int], batch_size: int, seed: int = 0):
        if batch_size < 1:
            raise ValueError(f"batch_size must be at least 1, got {batch_size}.")
        self.lengths = torch.as_tensor(lengths, dtype=torch.long)
        self.batch_size = batch_size
        self.seed = seed
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.lengths)

    def __iter__(self) -> Iterator[int]:
        generator = torch.Generator().manual_seed(self.seed + self.epoch)
        order = torch.randperm(len(self.lengths), generator=generator)
        bucket_size = BATCHES_PER_BUCKET * self.batch_size
        batches = []
        for bucket in order.split(bucket_size):
            by_length = bucket[torch.argsort(self.lengths[bucket], stable=True)]
            batches.extend(by_length.split(self.batch_size))
        last = batches.pop() if batches and len(batches[-1]) < self.batch_size else None
        for index in torch.randperm(len(batches), generator=generator).tolist():
            yield from batches[index].tolist()
        if last is not None:
            yield from last.tolist()
