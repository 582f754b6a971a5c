"""Left-padded batches with labels and shifted labels, windows of long sequences."""

import pytest
import torch
from datasets import Dataset
from model_helpers import tiny_model

from hf_sasrec.data_collator import IGNORE_INDEX, NextItemCollator
from hf_sasrec.sequence_windows import sliding_windows, window_ends

ROWS = [
    {"user_id": "a", "item_ids": [5, 6, 7, 8, 9, 10], "timestamps": [1, 2, 3, 4, 5, 6]},
    {"user_id": "b", "item_ids": [11, 12], "timestamps": [7, 9]},
]


def test_training_batch_is_left_padded_with_labels_and_shifted_labels():
    batch = NextItemCollator(max_length=4, with_timestamps=True)(ROWS)
    # Row a keeps its last 5 items: inputs 6..9, targets 7..10; row b: input 11, target 12.
    assert batch["input_ids"].tolist() == [[6, 7, 8, 9], [0, 0, 0, 11]]
    assert batch["labels"].tolist() == [[6, 7, 8, 9], [IGNORE_INDEX] * 3 + [11]]
    assert batch["shift_labels"].tolist() == [[7, 8, 9, 10], [IGNORE_INDEX] * 3 + [12]]
    assert batch["attention_mask"].tolist() == [[1, 1, 1, 1], [0, 0, 0, 1]]
    assert batch["timestamps"].tolist() == [[2, 3, 4, 5], [7, 7, 7, 7]]


def test_evaluation_batch_holds_history_and_target():
    batch = NextItemCollator(max_length=3, for_training=False)(ROWS)
    assert batch["input_ids"].tolist() == [[7, 8, 9], [0, 0, 11]]
    assert batch["target_ids"].tolist() == [10, 12]
    assert {"labels", "shift_labels", "timestamps"}.isdisjoint(batch)


def test_training_batch_gives_the_model_loss_of_unpadded_rows():
    """Padding changes nothing: the loss of the padded batch equals the mean over each row's own positions."""
    model = tiny_model("sasrec")
    batch = NextItemCollator(max_length=8)(ROWS)
    padded = model(**batch, logits_to_keep=1).loss
    per_row = [model(**NextItemCollator(max_length=8)([row])).loss for row in ROWS]
    counts = torch.tensor([5.0, 1.0])
    assert padded.item() == pytest.approx((torch.stack(per_row) * counts).sum().item() / counts.sum().item(), rel=1e-5)


def test_short_rows_are_an_error():
    with pytest.raises(ValueError, match=r"at least two items.*\['c'\]"):
        NextItemCollator(max_length=4)([*ROWS, {"user_id": "c", "item_ids": [5]}])
    with pytest.raises(ValueError, match="no `timestamps`"):
        NextItemCollator(max_length=4, with_timestamps=True)([{"item_ids": [5, 6]}])


def test_sliding_windows_cover_every_target_once():
    items = list(range(5, 5 + 23))
    dataset = Dataset.from_dict({"user_id": ["u"], "item_ids": [items], "timestamps": [list(range(23))]})
    windows = sliding_windows(dataset, max_length=5)
    assert window_ends(23, 5) == [23, 18, 13, 8, 3]
    targets = [item for row in windows["item_ids"] for item in row[1:]]
    assert sorted(targets) == items[1:]
    assert all(len(row) <= 6 for row in windows["item_ids"])
    assert windows["user_id"] == ["u"] * 5
    assert [times[0] for times in windows["timestamps"]] == [row[0] - 5 for row in windows["item_ids"]]
