"""The conventions of every transformers causal LM: `labels=input_ids` shifted inside the model, `shift_labels` used
as given, and the loss normalised by `Trainer`'s `num_items_in_batch`, so that gradient accumulation changes no
gradient."""

import pytest
import torch
from datasets import DatasetDict
from model_helpers import VARIANT_NAMES, VOCAB_SIZE, extra_inputs, left_pad, random_items, tiny_config, tiny_model
from sft_helpers import NUM_SPECIAL, training_only_arguments, write_tiny_dataset
from transformers import AutoModelForCausalLM, TrainerCallback

from hf_sasrec.data_collator import NextItemCollator
from hf_sasrec.sft_trainer import NextItemTrainer

LOSS_TYPES = ["ce", "sampled_softmax", "bce", "infonce"]


def padded_batch(variant: str) -> tuple[torch.LongTensor, dict]:
    """Six rows of seven positions, two of them left-padded, and the variant's extra inputs."""
    input_ids = random_items(6, 7, seed=3)
    input_ids[:2, :3] = 0
    return input_ids, extra_inputs(variant, input_ids)


def seeded_loss(model, seed: int = 0, **inputs) -> torch.Tensor:
    """The model's loss, with the global generator seeded first, so that sampled negatives repeat."""
    torch.manual_seed(seed)
    return model(**inputs).loss


def next_item_part(model, output) -> torch.Tensor:
    """The next-item loss of an output: its loss without the MoE load-balancing term, which is not normalised by
    `num_items_in_batch` (as in Mixtral)."""
    aux_loss = getattr(output, "aux_loss", None)
    return output.loss if aux_loss is None else output.loss - model.config.router_aux_loss_coef * aux_loss


@pytest.mark.parametrize("loss_type", LOSS_TYPES)
@pytest.mark.parametrize("variant", VARIANT_NAMES)
def test_labels_are_shifted_inside_the_model(variant, loss_type):
    """`labels=x` gives the loss of `shift_labels=x` shifted left by one, `-100` appended, as `ForCausalLMLoss`."""
    model = tiny_model(variant, loss_type=loss_type)
    input_ids, inputs = padded_batch(variant)
    shifted = torch.nn.functional.pad(input_ids[:, 1:], (0, 1), value=-100)
    with torch.no_grad():
        from_labels = seeded_loss(model, input_ids=input_ids, labels=input_ids, **inputs)
        from_shifted = seeded_loss(model, input_ids=input_ids, shift_labels=shifted, **inputs)
        as_targets = seeded_loss(model, input_ids=input_ids, shift_labels=input_ids, **inputs)
    torch.testing.assert_close(from_labels, from_shifted, atol=1e-6, rtol=1e-6)
    assert (from_labels - as_targets).abs() > 1e-3  # the unshifted targets (a copy task) give another loss


def test_shift_labels_take_precedence_over_labels():
    model = tiny_model("sasrec")
    input_ids, _ = padded_batch("sasrec")
    targets = random_items(6, 7, seed=4).masked_fill(input_ids.eq(0), -100)
    with torch.no_grad():
        both = model(input_ids=input_ids, labels=input_ids, shift_labels=targets).loss
        alone = model(input_ids=input_ids, shift_labels=targets).loss
    torch.testing.assert_close(both, alone)


def test_labels_equal_to_input_ids_train_next_item_prediction_not_copying():
    """Every user walks the catalog one item at a time; trained with `labels=input_ids`, the model ranks the next
    item first, never the item it reads."""
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(tiny_config("sasrec", hidden_size=32)).train()
    num_items = VOCAB_SIZE - NUM_SPECIAL
    starts = torch.randint(0, num_items, (32, 1))
    input_ids = NUM_SPECIAL + (starts + torch.arange(7)) % num_items
    input_ids[:8, :2] = 0
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    for _ in range(60):
        optimizer.zero_grad()
        model(input_ids=input_ids, labels=input_ids).loss.backward()
        optimizer.step()
    with torch.no_grad():
        ranked_first = model.eval()(input_ids=input_ids).logits[..., NUM_SPECIAL:].argmax(-1) + NUM_SPECIAL
    predicted, read, following = ranked_first[:, 2:-1], input_ids[:, 2:-1], input_ids[:, 3:]
    assert (predicted == following).float().mean() > 0.9
    assert (predicted == read).float().mean() < 0.05


@pytest.mark.parametrize("loss_type", LOSS_TYPES)
@pytest.mark.parametrize("variant", VARIANT_NAMES)
def test_loss_is_the_sum_over_targets_divided_by_num_items_in_batch(variant, loss_type):
    model = tiny_model(variant, loss_type=loss_type)
    input_ids, inputs = padded_batch(variant)
    num_targets = int((input_ids[:, :-1].ne(0) & input_ids[:, 1:].ne(0)).sum())
    with torch.no_grad():
        torch.manual_seed(0)
        mean = next_item_part(model, model(input_ids=input_ids, labels=input_ids, **inputs))
        torch.manual_seed(0)
        output = model(input_ids=input_ids, labels=input_ids, num_items_in_batch=torch.tensor(100), **inputs)
    torch.testing.assert_close(next_item_part(model, output), mean * num_targets / 100, atol=1e-6, rtol=1e-5)


class GradientRecorder(TrainerCallback):
    """Keeps the accumulated gradients of the first optimizer step, as the optimizer is about to read them."""

    def __init__(self):
        self.gradients: dict[str, torch.Tensor] = {}

    def on_pre_optimizer_step(self, args, state, control, model=None, **kwargs):
        if not self.gradients:
            self.gradients = {name: param.grad.clone() for name, param in model.named_parameters()}


class RecordingCollator(NextItemCollator):
    """`NextItemCollator` that keeps the users and the number of targets of every batch it makes."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.batches: list[tuple[list[str], int]] = []

    def __call__(self, rows):
        batch = super().__call__(rows)
        self.batches.append(([row["user_id"] for row in rows], int(batch["shift_labels"].ne(-100).sum())))
        return batch


def first_step(variant: str, sampling: str, batch_size: int, accumulation: int, data_dir, output_dir):
    """Gradients of one optimizer step of `NextItemTrainer` (no dropout, no clipping), with the users and target
    counts of its batches."""
    model = tiny_model(variant, seed=1, vocab_size=NUM_SPECIAL + 30, max_position_embeddings=8).train()
    collator = RecordingCollator(8, with_timestamps=variant == "tisasrec")
    recorder = GradientRecorder()
    args = training_only_arguments(
        output_dir,
        per_device_train_batch_size=batch_size,
        gradient_accumulation_steps=accumulation,
        max_steps=1,
        max_grad_norm=0.0,
        train_sampling_strategy=sampling,
        disable_tqdm=True,
        seed=0,
    )
    trainer = NextItemTrainer(
        model=model,
        args=args,
        train_dataset=DatasetDict.load_from_disk(str(data_dir))["train"],
        data_collator=collator,
        callbacks=[recorder],
    )
    assert trainer.model_accepts_loss_kwargs
    trainer.train()
    return recorder.gradients, collator.batches[:accumulation]


@pytest.mark.parametrize(
    ("variant", "sampling"), [("sasrec", "random"), ("sasrec", "group_by_length"), ("tisasrec", "group_by_length")]
)
def test_gradient_accumulation_gives_the_gradients_of_one_large_batch(variant, sampling, tmp_path):
    """One step of 4 accumulated batches of 8 and one step of a batch of 32 read the same users and compute the same
    gradients, although the small batches hold different numbers of targets."""
    data_dir = write_tiny_dataset(tmp_path / "data", num_users=64)
    large, large_batches = first_step(variant, sampling, 32, 1, data_dir, tmp_path / "large")
    accumulated, small_batches = first_step(variant, sampling, 8, 4, data_dir, tmp_path / "accumulated")
    assert sorted(user for users, _ in small_batches for user in users) == sorted(large_batches[0][0])
    assert len({count for _, count in small_batches}) > 1
    assert sum(count for _, count in small_batches) == large_batches[0][1]
    assert large.keys() == accumulated.keys()
    assert max(gradient.abs().max() for gradient in large.values()) > 1e-3
    for name, gradient in large.items():
        torch.testing.assert_close(accumulated[name], gradient, atol=1e-6, rtol=0, msg=name)


def test_left_padding_changes_neither_targets_nor_loss():
    """A left-padded row with `labels=input_ids` has the targets and loss of the same row unpadded."""
    model = tiny_model("sasrec")
    input_ids = random_items(1, 5)
    with torch.no_grad():
        plain = model(input_ids=input_ids, labels=input_ids).loss
        padded = left_pad(input_ids, 3)
        padded_loss = model(input_ids=padded, labels=padded).loss
    torch.testing.assert_close(padded_loss, plain, atol=1e-6, rtol=1e-6)


@pytest.mark.parametrize("sampling", ["random", "group_by_length"])
def test_bucketed_steps_are_divided_by_the_targets_of_an_average_step(tmp_path, sampling):
    """Length-bucketed steps hold very different target counts: each is divided by the epoch's targets over its steps,
    so that every target weighs the same; random batches keep Trainer's own count of the step."""
    train = DatasetDict.load_from_disk(str(write_tiny_dataset(tmp_path / "data", num_users=60)))["train"]
    model = tiny_model("sasrec", vocab_size=NUM_SPECIAL + 30, max_position_embeddings=8)
    args = training_only_arguments(tmp_path / "run", per_device_train_batch_size=8, train_sampling_strategy=sampling)
    collator = NextItemCollator(5)
    trainer = NextItemTrainer(model=model, args=args, train_dataset=train, data_collator=collator)
    trainer.get_train_dataloader()
    batch = collator([train[index] for index in range(8)])
    count = int(batch["shift_labels"].ne(-100).sum())
    summed = model(**batch, num_items_in_batch=1).loss
    loss = trainer.compute_loss(model, batch, num_items_in_batch=torch.tensor(count))
    if sampling == "random":
        assert trainer.step_targets is None
        torch.testing.assert_close(loss, summed / count)
    else:
        targets = sum(min(len(row["item_ids"]) - 1, 5) for row in train)
        assert trainer.step_targets == pytest.approx(targets / 8)  # 60 rows, 8 a step: 8 steps
        assert trainer.step_targets != count
        torch.testing.assert_close(loss, summed / trainer.step_targets)
