"""Training as if some items were not in the catalog yet (the cold-item protocol), and id dropout, which teaches a
model with item features to score an item by its content alone."""

import pytest
import torch
from conftest import data_write_movielens
from model_helpers import VOCAB_SIZE, tiny_config, tiny_model
from sft_helpers import tiny_run_arguments
from test_item_encoder import content_model
from transformers import AutoModelForCausalLM

from data_preprocess import prepare
from hf_sasrec import sft
from hf_sasrec.losses import full_softmax_loss, next_item_loss, unlikelihood_loss
from hf_sasrec.processed_data import cold_item_ids

NUM_SPECIAL = 5
EXCLUDED = [7, 19, 33]


def excluded_mask() -> torch.BoolTensor:
    mask = torch.zeros(VOCAB_SIZE, dtype=torch.bool)
    mask[EXCLUDED] = True
    return mask


def loss_and_gradient(loss_type: str, item_weight: torch.Tensor, excluded: torch.BoolTensor | None):
    """The loss of a fixed batch (targets never excluded) and its gradient on `item_weight`, with a fixed seed so
    that the sampled losses draw the same negatives."""
    generator = torch.Generator().manual_seed(0)
    targets = torch.tensor([item for item in range(NUM_SPECIAL, VOCAB_SIZE) if item not in EXCLUDED])
    input_ids = targets[torch.randint(len(targets), (4, 6), generator=generator)]
    shift_labels = torch.cat([input_ids[:, 1:], torch.full((4, 1), -100)], dim=1)
    hidden_states = torch.randn(4, 6, 16, generator=generator)
    item_weight = item_weight.clone().requires_grad_(True)
    torch.manual_seed(0)
    config = tiny_config("sasrec", loss_type=loss_type)
    loss = next_item_loss(hidden_states, shift_labels, item_weight, config, input_ids, excluded_items=excluded)
    loss.backward()
    return loss.detach(), item_weight.grad


@pytest.mark.parametrize("loss_type", ["ce", "sampled_softmax", "bce", "mixed_negatives"])
def test_excluded_items_neither_change_the_loss_nor_get_a_gradient(loss_type):
    weight = torch.randn(VOCAB_SIZE, 16, generator=torch.Generator().manual_seed(1))
    changed = weight.clone()
    changed[EXCLUDED] = weight[EXCLUDED] * 50 + 3  # what the excluded rows hold must not matter
    loss, gradient = loss_and_gradient(loss_type, weight, excluded_mask())
    changed_loss, _ = loss_and_gradient(loss_type, changed, excluded_mask())
    assert torch.equal(loss, changed_loss)
    assert gradient[EXCLUDED].abs().sum() == 0 and gradient[NUM_SPECIAL:].abs().sum() > 0
    # Without the mask the same rows move the loss, so the check above can fail.
    plain, plain_gradient = loss_and_gradient(loss_type, weight, None)
    assert not torch.equal(plain, loss_and_gradient(loss_type, changed, None)[0])
    assert plain_gradient[EXCLUDED].abs().sum() > 0


def test_the_full_softmax_without_excluded_items_is_the_cross_entropy_over_the_others():
    generator = torch.Generator().manual_seed(2)
    hidden, weight = torch.randn(6, 16, generator=generator), torch.randn(VOCAB_SIZE, 16, generator=generator)
    kept = [item for item in range(NUM_SPECIAL, VOCAB_SIZE) if item not in EXCLUDED]
    targets = torch.tensor(kept)[torch.randint(len(kept), (6,), generator=generator)]
    expected = torch.nn.functional.cross_entropy(
        hidden @ weight[kept].T, torch.tensor([kept.index(item) for item in targets.tolist()])
    )
    got = full_softmax_loss(hidden, targets, weight, NUM_SPECIAL, excluded_items=excluded_mask())
    torch.testing.assert_close(got, expected)


def test_an_excluded_item_keeps_a_zero_id_embedding_through_training_and_is_not_saved(tmp_path):
    model = tiny_model("sasrec").train()
    model.exclude_from_training(EXCLUDED)
    assert model.get_input_embeddings().weight[EXCLUDED].abs().sum() == 0
    optimizer = torch.optim.AdamW(model.parameters(), lr=0.05, weight_decay=0.1)
    kept = torch.tensor([item for item in range(NUM_SPECIAL, VOCAB_SIZE) if item not in EXCLUDED])
    before = model.get_input_embeddings().weight.detach().clone()
    for step in range(5):
        input_ids = kept[torch.randint(len(kept), (4, 6), generator=torch.Generator().manual_seed(step))]
        model(input_ids=input_ids, labels=input_ids).loss.backward()
        optimizer.step()
        optimizer.zero_grad()
    weight = model.get_input_embeddings().weight.detach()
    assert weight[EXCLUDED].abs().sum() == 0 and not torch.equal(weight[kept], before[kept])
    model.save_pretrained(tmp_path)
    loaded = AutoModelForCausalLM.from_pretrained(tmp_path)
    assert loaded.excluded_from_training is None
    torch.testing.assert_close(loaded.get_input_embeddings().weight, weight)


def test_id_dropout_leaves_some_items_to_their_content_in_training_only():
    model = content_model(item_id_dropout=0.5)
    encoder, ids = model.model.item_encoder, torch.arange(VOCAB_SIZE)
    content = sum(feature(ids) for feature in encoder.features.values())
    full = content + model.model.embed_tokens.weight
    torch.testing.assert_close(model.item_embeddings(), full)  # eval mode: every id embedding
    model.train()
    torch.manual_seed(0)
    vectors = model.item_embeddings()
    content_only = torch.isclose(vectors, content).all(-1)
    with_id = torch.isclose(vectors, full).all(-1)
    assert (content_only | with_id).all()
    assert 0.2 * VOCAB_SIZE < content_only.sum() < 0.8 * VOCAB_SIZE


def test_item_id_dropout_outside_zero_to_one_is_refused():
    with pytest.raises(ValueError, match=r"item_id_dropout must lie in \[0, 1\), got 1.0"):
        tiny_config("sasrec", item_id_dropout=1.0)


def test_a_cold_item_run_trains_without_the_held_out_items(tmp_path, caplog):
    data_dir = tmp_path / "data"
    prepare(data_write_movielens(tmp_path / "ml") / "u.data", data_dir, features=None, cold_items=0.2)
    cold = cold_item_ids(data_dir)
    caplog.set_level("INFO", logger="hf_sasrec.sft")
    metrics = sft.main(tiny_run_arguments(data_dir, tmp_path / "run", num_train_epochs=1))
    assert f"the {len(cold)} items held out of training are no candidates of the training loss" in caplog.text
    model = AutoModelForCausalLM.from_pretrained(tmp_path / "run")
    weight = model.get_input_embeddings().weight
    assert weight[cold].abs().sum() == 0 and weight[NUM_SPECIAL:].abs().sum() > 0
    assert "test_full_cold/num_users" in metrics
    with torch.no_grad():
        input_ids = torch.randint(NUM_SPECIAL, model.config.vocab_size, (2, 5), generator=torch.Generator())
        logits = model(input_ids=input_ids).logits[:, -1]
    assert (logits[:, cold] == 0).all()


def test_bce_adds_no_loss_for_an_excluded_negative_left_after_the_redraws():
    excluded = torch.ones(VOCAB_SIZE, dtype=torch.bool)
    excluded[[5, 6]] = False  # nearly every draw is excluded, so some stay excluded after every redraw
    hidden_states = torch.randn(3, 4, 16, generator=torch.Generator().manual_seed(0))
    shift_labels = torch.tensor([[5, 6, 5, -100]] * 3)
    weight = torch.randn(VOCAB_SIZE, 16, requires_grad=True)
    torch.manual_seed(0)
    config = tiny_config("sasrec", loss_type="bce")
    next_item_loss(
        hidden_states, shift_labels, weight, config, shift_labels.clamp(min=5), excluded_items=excluded
    ).backward()
    assert weight.grad[excluded].abs().sum() == 0


def test_the_unlikelihood_term_gives_excluded_items_no_gradient():
    generator = torch.Generator().manual_seed(1)
    hidden, weight = torch.randn(4, 16, generator=generator), torch.randn(VOCAB_SIZE, 16, generator=generator)
    weight.requires_grad_(True)
    disliked = torch.tensor([[8, 9]] * 4)
    unlikelihood_loss(hidden, disliked, weight, NUM_SPECIAL, excluded_items=excluded_mask()).backward()
    assert weight.grad[EXCLUDED].abs().sum() == 0 and weight.grad[[8, 9]].abs().sum() > 0
