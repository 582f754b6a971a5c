"""The unlikelihood term on disliked items: its value, its effect on a training step, and its data path."""

import math

import pytest
import torch
from conftest import data_write_movielens
from model_helpers import random_items, tiny_model
from sft_helpers import tiny_run_arguments

from data_preprocess import prepare
from hf_sasrec import sft
from hf_sasrec.losses import unlikelihood_loss

NUM_SPECIAL = 5


def test_unlikelihood_is_minus_log_one_minus_the_probability_averaged_over_dislikes():
    generator = torch.Generator().manual_seed(0)
    hidden, weight = torch.randn(2, 4, generator=generator), torch.randn(9, 4, generator=generator)
    disliked = torch.tensor([[6, 8], [0, 7]])  # the second user has one dislike and a pad
    probs = (hidden @ weight[NUM_SPECIAL:].T).softmax(-1)
    first = -(math.log(1 - probs[0, 1]) + math.log(1 - probs[0, 3])) / 2
    second = -math.log(1 - probs[1, 2])
    got = unlikelihood_loss(hidden, disliked, weight, NUM_SPECIAL)
    assert got.item() == pytest.approx((first + second) / 2, rel=1e-5)
    nothing = unlikelihood_loss(hidden, torch.zeros(2, 0, dtype=torch.long), weight, NUM_SPECIAL)
    assert nothing.item() == pytest.approx(0.0)


def disliked_log_prob(model, input_ids, item: int) -> float:
    with torch.no_grad():
        return (
            model(input_ids=input_ids).logits[:, -1, NUM_SPECIAL:].log_softmax(-1)[:, item - NUM_SPECIAL].mean().item()
        )


def test_a_step_with_the_term_lowers_the_disliked_items_more():
    input_ids = random_items(4, 6)
    disliked = torch.full((4, 1), 11)
    moved = {}
    for weight in (0.0, 5.0):
        model = tiny_model("sasrec", unlikelihood_weight=weight).train()
        before = disliked_log_prob(model, input_ids, 11)
        optimizer = torch.optim.SGD(model.parameters(), lr=0.5)
        model(input_ids=input_ids, labels=input_ids, disliked_ids=disliked).loss.backward()
        optimizer.step()
        moved[weight] = disliked_log_prob(model, input_ids, 11) - before
    assert moved[5.0] < moved[0.0] - 0.05


def test_training_with_the_term_reads_the_pairs_part_and_needs_ratings(tmp_path, caplog):
    log_file = data_write_movielens(tmp_path / "ml") / "u.data"
    prepare(log_file, tmp_path / "rated", features=None, min_rating=3)
    caplog.set_level("INFO", logger="hf_sasrec.processed_data")
    metrics = sft.main(tiny_run_arguments(tmp_path / "rated", tmp_path / "run", unlikelihood_weight=1.0))
    assert "Unlikelihood: " in caplog.text and "the pairs part" in caplog.text
    assert math.isfinite(metrics["train_loss"])
    (tmp_path / "Beauty.txt").write_text("1 a b c d\n2 b c e f\n3 a c e f\n", encoding="utf-8")
    prepare(tmp_path / "Beauty.txt", tmp_path / "unrated")
    with pytest.raises(ValueError, match=r"unlikelihood_weight needs dislikes: .* has no low_rated\.json"):
        sft.main(tiny_run_arguments(tmp_path / "unrated", tmp_path / "run2", unlikelihood_weight=1.0))
