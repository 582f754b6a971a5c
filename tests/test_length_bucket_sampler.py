"""`LengthBucketSampler`: every row once an epoch, batches of similar length, random batch order, per-epoch seeds."""

import itertools

import numpy as np
import pytest
import torch
from datasets import DatasetDict
from sft_helpers import tiny_run_arguments, write_tiny_dataset

from hf_sasrec.configuration_sasrec import SASRecConfig
from hf_sasrec.data_collator import NextItemCollator
from hf_sasrec.length_bucket_sampler import BATCHES_PER_BUCKET, LengthBucketSampler
from hf_sasrec.modeling_sasrec import SASRecForCausalLM
from hf_sasrec.sft_trainer import NextItemTrainer
from hf_sasrec.training_args import parse_sft_args


def skewed_lengths(count: int, seed: int = 0) -> list[int]:
    """History lengths shaped like Amazon data: mostly short, a long tail cut at 50."""
    return np.minimum(np.random.default_rng(seed).geometric(1 / 6, size=count), 50).tolist()


def batches_of(sampler: LengthBucketSampler) -> list[list[int]]:
    order = list(sampler)
    return [order[start : start + sampler.batch_size] for start in range(0, len(order), sampler.batch_size)]


def padded_cost(lengths: list[int], batches: list[list[int]]) -> int:
    """Positions computed when every batch is padded to its longest row."""
    return sum(max(lengths[index] for index in batch) * len(batch) for batch in batches)


def test_every_row_once_and_far_less_padding_than_random_batches():
    lengths = skewed_lengths(10_000)
    sampler = LengthBucketSampler(lengths, batch_size=128, seed=3)
    batches = batches_of(sampler)
    assert sorted(index for batch in batches for index in batch) == list(range(len(lengths)))
    random_order = torch.randperm(len(lengths), generator=torch.Generator().manual_seed(0)).tolist()
    random_batches = [random_order[start : start + 128] for start in range(0, len(lengths), 128)]
    real = sum(lengths)
    # Random batches of 128 pad nearly every row to the tail length; bucketed ones stay close to the real lengths.
    assert padded_cost(lengths, random_batches) > 4 * real
    assert padded_cost(lengths, batches) < 1.3 * real


def test_batch_order_is_shuffled_and_the_short_batch_is_last():
    lengths = skewed_lengths(BATCHES_PER_BUCKET * 16 * 3 + 5)
    batches = batches_of(LengthBucketSampler(lengths, batch_size=16, seed=0))
    assert len(batches[-1]) == 5 and all(len(batch) == 16 for batch in batches[:-1])
    longest = [max(lengths[index] for index in batch) for batch in batches[:-1]]
    # Not the longest-to-shortest runs of a sorted bucket: lengths go up between consecutive batches often.
    rises = sum(later > earlier for earlier, later in itertools.pairwise(longest))
    assert rises > len(longest) // 4


def test_order_depends_on_seed_and_epoch_only():
    lengths = skewed_lengths(2000)
    first, same = LengthBucketSampler(lengths, 32, seed=1), LengthBucketSampler(lengths, 32, seed=1)
    assert list(first) == list(same) == list(first)
    first.set_epoch(1)
    assert list(first) != list(same)
    assert list(LengthBucketSampler(lengths, 32, seed=2)) != list(same)


def test_bad_batch_size_is_refused():
    with pytest.raises(ValueError, match="batch_size must be at least 1, got 0"):
        LengthBucketSampler([1, 2], batch_size=0)


def bucketed_trainer(tmp_path) -> NextItemTrainer:
    """A `NextItemTrainer` with `train_sampling_strategy=group_by_length` over 200 tiny users (8 a batch), its model
    in eval mode (no dropout)."""
    data_dir = write_tiny_dataset(tmp_path / "data", num_users=200)
    _, data_args, training_args, _ = parse_sft_args(
        tiny_run_arguments(data_dir, tmp_path / "run", train_sampling_strategy="group_by_length")
    )
    train = DatasetDict.load_from_disk(str(data_dir))["train"]
    torch.manual_seed(0)
    return NextItemTrainer(
        model=SASRecForCausalLM(SASRecConfig(vocab_size=35, hidden_size=16, num_attention_heads=2)).eval(),
        args=training_args,
        train_dataset=train,
        eval_dataset=train,
        data_collator=NextItemCollator(data_args.max_length),
    )


def test_trainer_batches_by_history_length(tmp_path):
    """With train_sampling_strategy=group_by_length the trainer's loader pads each batch to rows of similar length."""
    trainer = bucketed_trainer(tmp_path)
    batches = list(trainer.get_train_dataloader())
    assert sum(len(batch["input_ids"]) for batch in batches) == len(trainer.train_dataset)
    padding = sum(int(batch["attention_mask"].eq(0).sum()) for batch in batches)
    tokens = sum(int(batch["attention_mask"].sum()) for batch in batches)
    assert padding < 0.1 * tokens
