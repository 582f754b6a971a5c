"""Training from streamed Arrow shards: the same rows as the map-style split, length-bucketed within bounded
windows, reproducible per epoch, and a streamed `hf_sasrec.sft` run."""

import json
import logging
from collections import Counter
from itertools import pairwise

import pytest
from datasets import Dataset, DatasetDict
from sft_helpers import tiny_run_arguments, write_tiny_dataset

from hf_sasrec import sft
from hf_sasrec.streaming import LengthBucketedStream, stream_split, trainable_counts


def sharded_split(tmp_path, num_shards: int = 3):
    """The tiny train split written in `num_shards` Arrow shards, with two rows too short to train on."""
    train = DatasetDict.load_from_disk(str(write_tiny_dataset(tmp_path / "data", num_users=100)))["train"]
    short = Dataset.from_dict({"user_id": ["s1", "s2"], "item_ids": [[7], []], "timestamps": [[1], []]})
    rows = Dataset.from_list([*train, *short], features=train.features)
    rows.save_to_disk(str(tmp_path / "sharded" / "train"), num_shards=num_shards)
    return rows, tmp_path / "sharded"


def key(row: dict) -> tuple:
    return row["user_id"], tuple(row["item_ids"])


@pytest.mark.parametrize("bucketed", [True, False])
def test_a_streamed_epoch_yields_every_trainable_row_once(tmp_path, caplog, bucketed):
    rows, folder = sharded_split(tmp_path)
    trainable = [row for row in rows if len(row["item_ids"]) >= 2]
    targets = sum(min(len(row["item_ids"]) - 1, 5) for row in trainable)
    assert trainable_counts(rows, 5) == (len(trainable), targets) and len(trainable) == len(rows) - 2
    stream = LengthBucketedStream(
        stream_split(folder), len(trainable), targets, 8, 5, buffer_batches=3, bucketed=bucketed
    )
    with caplog.at_level(logging.WARNING, logger="hf_sasrec.streaming"):
        streamed = list(stream)
    assert Counter(map(key, streamed)) == Counter(map(key, trainable))
    assert "skipped 2 rows with fewer than two items" in caplog.text
    assert len(stream) == len(trainable)
    assert [key(row) for row in streamed] != [key(row) for row in trainable]  # shuffled


def test_bucketed_batches_are_contiguous_length_ranges_of_each_window(tmp_path):
    """Within a window of 3 batches of 8, the batches the DataLoader cuts hold non-overlapping ranges of window
    lengths; across the epoch, padding is far below that of the shuffled batches."""
    rows, folder = sharded_split(tmp_path)
    counts = trainable_counts(rows, 12)

    def batches(bucketed: bool) -> list[list[int]]:
        stream = LengthBucketedStream(stream_split(folder), *counts, 8, 12, buffer_batches=3, bucketed=bucketed)
        lengths = [min(len(row["item_ids"]) - 1, 12) for row in stream]
        return [lengths[start : start + 8] for start in range(0, len(lengths), 8)]

    bucketed = batches(True)
    for window in range(0, len(bucketed) - 3, 3):  # full windows
        ranges = sorted((min(batch), max(batch)) for batch in bucketed[window : window + 3])
        assert all(low[1] <= high[0] for low, high in pairwise(ranges))

    def padding(batches_: list[list[int]]) -> int:
        return sum(max(batch) * len(batch) - sum(batch) for batch in batches_)

    assert padding(bucketed) < padding(batches(False)) / 2


def test_the_order_is_a_function_of_seed_and_epoch(tmp_path):
    rows, folder = sharded_split(tmp_path)

    def order(seed: int, epoch: int) -> list[tuple]:
        stream = LengthBucketedStream(
            stream_split(folder), *trainable_counts(rows, 5), 8, 5, buffer_batches=3, seed=seed
        )
        stream.set_epoch(epoch)
        return [key(row) for row in stream]

    assert order(0, 1) == order(0, 1)
    assert order(0, 1) != order(0, 2)
    assert order(0, 1) != order(1, 1)


def test_a_folder_without_shards_is_named(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"No Arrow shards .*train"):
        stream_split(tmp_path)


def test_streamed_sft_run_trains_its_epochs_and_refuses_what_it_cannot_stream(tmp_path):
    data_dir = write_tiny_dataset(tmp_path / "data", num_users=64)
    arguments = tiny_run_arguments(data_dir, tmp_path / "run", streaming=True, stream_buffer_batches=2)
    arguments.append("--train_sampling_strategy=group_by_length")
    sft.main(arguments)
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert metrics["epochs"] == 2 and metrics["global_step"] == 16  # 64 rows, 8 a batch
    assert not metrics["stopped_early"]
    assert 0 < metrics["test_full/ndcg@10"] <= 1
    refused = tiny_run_arguments(data_dir, tmp_path / "refused", streaming=True, sliding_window=True)
    with pytest.raises(ValueError, match=r"streaming does not support \['sliding_window'\]"):
        sft.main(refused)
