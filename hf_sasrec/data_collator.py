"""Batching of variable-length item histories into left-padded model inputs.

Rows follow the processed-data schema of `data_preprocess`: `item_ids: list[int]` (token ids in time order) and,
optionally, `timestamps: list[int]`, `user_id: str`, `user_features` (`{"<feature>.<value>": value}`, the user's
feature values, attached by `hf_sasrec.user_features` for a model that reads them) and, for training with an
unlikelihood term, `disliked_ids: list[int]` (the user's disliked items). Left padding puts every user's
last real item at the last position, so `logits_to_keep=1` gives next-item scores for the whole batch.
"""

import inspect
from collections.abc import Sequence
from dataclasses import dataclass
from itertools import chain

import torch

from .losses import IGNORE_INDEX

USER_FEATURES = "user_features"
DISLIKED_IDS = "disliked_ids"


def left_pad(sequences: Sequence[Sequence[int]], pad_value: int) -> torch.LongTensor:
    """Stack sequences into `[batch, longest]`, padding on the left with `pad_value`.

    One masked assignment of all the items: in row-major order, the positions at or after each row's padding take
    the concatenated sequences in order (a copy a row costs more than the whole batch at these lengths).
    """
    lengths = torch.tensor([len(sequence) for sequence in sequences], dtype=torch.long)
    length = int(lengths.max())
    padded = torch.full((len(sequences), length), pad_value, dtype=torch.long)
    real = torch.arange(length) >= (length - lengths).unsqueeze(1)
    padded[real] = torch.tensor(list(chain.from_iterable(sequences)), dtype=torch.long)
    return padded


def stack_user_features(users: Sequence[dict]) -> dict[str, torch.Tensor]:
    """The users' feature values (`{"<feature>.<value>": value}` a user, as a split's `user_features` column holds
    them) as the model's `user_features` input, `{name: tensor [batch, ...]}`."""
    return {name: torch.tensor([user[name] for user in users]) for name in users[0]}


def model_uses_timestamps(model: torch.nn.Module) -> bool:
    """Whether `model.forward` takes `timestamps` (TiSASRec)."""
    return "timestamps" in inspect.signature(model.forward).parameters


@dataclass
class NextItemCollator:
    """Collate processed-data rows into left-padded tensors.

    Training (`for_training=True`): a row's sequence `s` is cut to its last `max_length + 1` items and gives, each
    `[batch, length]`, `input_ids = s[:-1]`, `labels` (the inputs with `-100` on padding, as every transformers causal
    LM takes them) and `shift_labels = s[1:]` (`shift_labels[b, t]` is the item after position `t`; `-100` on
    padding). The model uses `shift_labels` instead of shifting `labels`: they also hold the target of the last
    position, the item after the window, so every position is a training target. `Trainer` counts
    `num_items_in_batch` from `shift_labels` (it counts only batches that hold `labels`).

    Evaluation (`for_training=False`): a row is a history followed by its target; the batch holds the history cut to
    its last `max_length` items as `input_ids` and the targets as `target_ids` `[batch]`.

    Both modes return `input_ids` and `attention_mask` `[batch, length]`, `timestamps` `[batch, length]` (aligned
    with `input_ids`, padded with the row's first time) when `with_timestamps`, and `user_features` (`{name: tensor
    [batch, ...]}`) when the rows have them.
    """

    max_length: int
    pad_token_id: int = 0
    for_training: bool = True
    with_timestamps: bool = False

    def __post_init__(self):
        if self.max_length < 1:
            raise ValueError(f"max_length must be at least 1, got {self.max_length}.")

    def __call__(self, rows: Sequence[dict]) -> dict[str, torch.Tensor]:
        short = [row.get("user_id", index) for index, row in enumerate(rows) if len(row["item_ids"]) < 2]
        if short:
            raise ValueError(
                f"Rows need at least two items (a history and a target); users {short[:10]} have fewer. "
                "Filter them out before batching."
            )
        input_ids = left_pad([self.inputs_of(row["item_ids"]) for row in rows], self.pad_token_id)
        batch = {"input_ids": input_ids, "attention_mask": input_ids.ne(self.pad_token_id).long()}
        if self.for_training:
            batch["labels"] = input_ids.masked_fill(batch["attention_mask"].eq(0), IGNORE_INDEX)
            batch["shift_labels"] = left_pad([row["item_ids"][1:][-self.max_length :] for row in rows], IGNORE_INDEX)
            if DISLIKED_IDS in rows[0]:
                batch[DISLIKED_IDS] = left_pad([row[DISLIKED_IDS] for row in rows], self.pad_token_id)
        else:
            batch["target_ids"] = torch.tensor([row["item_ids"][-1] for row in rows], dtype=torch.long)
        if self.with_timestamps:
            batch["timestamps"] = self.pad_timestamps(rows, input_ids.shape[1])
        if USER_FEATURES in rows[0]:
            batch[USER_FEATURES] = stack_user_features([row[USER_FEATURES] for row in rows])
        return batch

    @property
    def columns(self) -> list[str]:
        """The data columns this collator reads (those of them a split lacks are not needed)."""
        return ["item_ids", "user_id", USER_FEATURES, DISLIKED_IDS] + (["timestamps"] if self.with_timestamps else [])

    def inputs_of(self, sequence: Sequence) -> Sequence:
        """The input window of a row's sequence: all but its last element, cut to the last `max_length`."""
        return sequence[:-1][-self.max_length :]

    def pad_timestamps(self, rows: Sequence[dict], length: int) -> torch.LongTensor:
        """Each row's input-window times, left-padded with the window's first time: `[batch, length]`."""
        if any("timestamps" not in row for row in rows):
            raise ValueError("with_timestamps=True but the rows have no `timestamps` column.")
        padded = torch.empty(len(rows), length, dtype=torch.long)
        for index, row in enumerate(rows):
            times = torch.as_tensor(self.inputs_of(row["timestamps"]), dtype=torch.long)
            padded[index] = times[0]
            padded[index, length - len(times) :] = times
        return padded
