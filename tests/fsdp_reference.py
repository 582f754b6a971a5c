"""The training of the FSDP test, shared by its 2-process worker (`fsdp_worker.py`) and its one-process reference:
the global batches, the optimizer and the loss of a step."""

import torch
from model_helpers import random_items

STEPS, GLOBAL_BATCH, LENGTH = 4, 8, 6


def global_batch(step: int) -> dict[str, torch.Tensor]:
    """The training batch of `step` (one of two, in turn): 8 left-padded histories of up to 6 items, with their
    shifted targets."""
    items = random_items(GLOBAL_BATCH, LENGTH + 1, seed=step % 2)  # two batches, in turn
    lengths = torch.arange(GLOBAL_BATCH) % LENGTH + 1  # 1 to 6 targets a row: rows differ in their target counts
    real = torch.arange(LENGTH) >= LENGTH - lengths[:, None]
    input_ids = items[:, :-1].masked_fill(~real, 0)
    return {"input_ids": input_ids, "shift_labels": items[:, 1:].masked_fill(~real, -100)}


def optimizer_for(model: torch.nn.Module) -> torch.optim.Optimizer:
    """Plain SGD: Adam would blow float noise in a gradient that is 0 in exact arithmetic (a key bias) up to whole
    steps."""
    return torch.optim.SGD(model.parameters(), lr=0.5)


def step_loss(model: torch.nn.Module, batch: dict[str, torch.Tensor], targets: int) -> torch.Tensor:
    """The batch's summed next-item loss over the `targets` of the global batch."""
    return model(**batch, num_items_in_batch=targets, logits_to_keep=torch.empty(0, dtype=torch.long)).loss
