"""The shortcuts of a training step compute what the plain path computes: no logits built for the loss, batches
padded in one assignment, the bucketing lengths read from Arrow, only the collator's columns converted, and the
history mask of the evaluation built in one assignment."""

import pytest
import torch
from datasets import Dataset, DatasetDict
from model_helpers import VARIANT_NAMES, VOCAB_SIZE, extra_inputs, random_items, tiny_model
from sft_helpers import training_only_arguments, write_tiny_dataset

from hf_sasrec.data_collator import NextItemCollator, left_pad
from hf_sasrec.evaluation import interaction_mask
from hf_sasrec.sft_trainer import NO_POSITIONS, NextItemTrainer


def row_by_row_left_pad(sequences, pad_value):
    padded = torch.full((len(sequences), max(map(len, sequences))), pad_value, dtype=torch.long)
    for row, sequence in enumerate(sequences):
        if sequence:
            padded[row, -len(sequence) :] = torch.tensor(sequence)
    return padded


@pytest.mark.parametrize("variant", VARIANT_NAMES)
def test_no_logits_gives_the_loss_and_gradients_of_the_last_position_logits(variant):
    model = tiny_model(variant, hidden_dropout_prob=0.0, attention_dropout=0.0).train()
    input_ids = random_items(4, 7)
    inputs = {"input_ids": input_ids, "labels": input_ids, **extra_inputs(variant, input_ids)}
    results = []
    for logits_to_keep in (1, NO_POSITIONS):
        model.zero_grad()
        output = model(**inputs, logits_to_keep=logits_to_keep)
        output.loss.backward()
        gradients = {
            name: parameter.grad.clone() for name, parameter in model.named_parameters() if parameter.grad is not None
        }
        results.append((output, gradients))
    (with_logits, expected), (without_logits, gradients) = results
    assert with_logits.logits.shape == (4, 1, VOCAB_SIZE)
    assert without_logits.logits.shape == (4, 0, VOCAB_SIZE)
    torch.testing.assert_close(without_logits.loss, with_logits.loss, rtol=0, atol=1e-6)
    assert expected.keys() == gradients.keys() and max(g.abs().max() for g in expected.values()) > 0
    for name, gradient in expected.items():
        torch.testing.assert_close(gradients[name], gradient, rtol=0, atol=1e-6, msg=name)


def test_left_pad_equals_a_row_by_row_copy():
    generator = torch.Generator().manual_seed(0)
    sequences = [torch.randint(5, 99, (int(length),), generator=generator).tolist() for length in [3, 0, 7, 1, 7, 5]]
    for pad_value in (0, -100):
        assert torch.equal(left_pad(sequences, pad_value), row_by_row_left_pad(sequences, pad_value))
    assert left_pad([[], []], 0).shape == (2, 0)


def test_interaction_mask_marks_exactly_each_rows_items():
    rows = [{"item_ids": [5, 9, 9, 12]}, {"item_ids": [6]}, {"item_ids": [19, 5]}]
    mask = interaction_mask(rows, 20)
    assert mask.shape == (3, 20)
    assert [sorted(row.nonzero().flatten().tolist()) for row in mask] == [[5, 9, 12], [6], [5, 19]]


def trainer_for(variant: str, dataset: Dataset, tmp_path, **arguments) -> NextItemTrainer:
    args = training_only_arguments(tmp_path, per_device_train_batch_size=4, **arguments)
    collator = NextItemCollator(max_length=5, with_timestamps=variant == "tisasrec")
    return NextItemTrainer(model=tiny_model(variant), args=args, train_dataset=dataset, data_collator=collator)


def test_bucketing_lengths_follow_the_rows_of_a_selected_dataset(tmp_path):
    """Arrow's list lengths, read through the dataset's row selection (an indices mapping), as the rows give them."""
    train = DatasetDict.load_from_disk(str(write_tiny_dataset(tmp_path / "data")))["train"]
    selected = train.shuffle(seed=3).select(range(0, 40, 3))
    trainer = trainer_for("sasrec", train, tmp_path / "run", train_sampling_strategy="group_by_length")
    sampler = trainer._get_train_sampler(selected)
    assert sampler.lengths.tolist() == [min(len(row["item_ids"]) - 1, 5) for row in selected]


@pytest.mark.parametrize(
    ("variant", "columns"), [("sasrec", ["user_id", "item_ids"]), ("tisasrec", ["user_id", "item_ids", "timestamps"])]
)
def test_training_batches_convert_only_the_columns_the_collator_reads(variant, columns, tmp_path):
    """The train loader's rows keep the collator's columns only (`remove_unused_columns`, the default), and they make
    the batches the whole rows make."""
    train = DatasetDict.load_from_disk(str(write_tiny_dataset(tmp_path / "data")))["train"]
    train = train.add_column("rating", [4.0] * len(train))
    trainer = trainer_for(variant, train, tmp_path / "run")
    pruned = trainer.get_train_dataloader().dataset
    assert pruned.column_names == columns
    unpruned = trainer_for(variant, train, tmp_path / "all", remove_unused_columns=False)
    assert unpruned.get_train_dataloader().dataset.column_names == train.column_names
    rows = [0, 5, 9, 17]
    expected = trainer.data_collator(train.__getitems__(rows))
    batch = trainer.data_collator(pruned.__getitems__(rows))
    assert batch.keys() == expected.keys() and ("timestamps" in batch) == (variant == "tisasrec")
    for name, value in expected.items():
        assert torch.equal(batch[name], value), name
