"""The chunked full-softmax cross-entropy gives the plain loss and its gradients without the full logits."""

import pytest
import torch
from model_helpers import random_items, tiny_model

from hf_sasrec.chunked_cross_entropy import ChunkedCrossEntropy
from hf_sasrec.losses import full_softmax_loss, mixed_negatives_loss

NUM_SPECIAL = 5


def loss_and_gradients(chunk_size, excluded=None, num_items_in_batch=None):
    generator = torch.Generator().manual_seed(0)
    hidden = torch.randn(12, 8, generator=generator, requires_grad=True)
    weight = torch.randn(NUM_SPECIAL + 37, 8, generator=generator, requires_grad=True)
    targets = torch.tensor([5, 6, 9, 41, 41, 12, 20, 30, 7, 8, 40, 22])
    loss = full_softmax_loss(hidden, targets, weight, NUM_SPECIAL, num_items_in_batch, excluded, chunk_size)
    loss.backward()
    return loss.detach(), hidden.grad, weight.grad


@pytest.mark.parametrize("chunk_size", [1, 5, 10, 36])
@pytest.mark.parametrize("num_items_in_batch", [None, 30])
def test_chunks_give_the_plain_loss_and_gradients(chunk_size, num_items_in_batch):
    plain = loss_and_gradients(None, num_items_in_batch=num_items_in_batch)
    chunked = loss_and_gradients(chunk_size, num_items_in_batch=num_items_in_batch)
    for got, expected in zip(chunked, plain, strict=True):
        torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-5)


def test_excluded_items_are_left_out_in_chunks_as_in_one_block():
    excluded = torch.zeros(NUM_SPECIAL + 37, dtype=torch.bool)
    excluded[[11, 13, 35]] = True
    plain = loss_and_gradients(None, excluded)
    chunked = loss_and_gradients(4, excluded)
    for got, expected in zip(chunked, plain, strict=True):
        torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-5)
    assert chunked[2][[11, 13, 35]].abs().sum() == 0


def test_the_chunked_gradients_pass_gradcheck():
    generator = torch.Generator().manual_seed(1)
    hidden = torch.randn(4, 3, dtype=torch.double, generator=generator, requires_grad=True)
    items = torch.randn(9, 3, dtype=torch.double, generator=generator, requires_grad=True)
    targets = torch.tensor([0, 8, 3, 3])

    def loss(hidden, items):
        return ChunkedCrossEntropy.apply(hidden, items, targets, 4, None).double()

    assert torch.autograd.gradcheck(loss, (hidden, items), eps=1e-6, atol=1e-5)


def test_a_model_with_chunks_trains_as_the_plain_one():
    input_ids = random_items(3, 6)
    losses, grads = [], []
    for chunk_size in (None, 7):
        model = tiny_model("sasrec", ce_chunk_size=chunk_size).train()
        loss = model(input_ids=input_ids, labels=input_ids).loss
        loss.backward()
        losses.append(loss.detach())
        grads.append(model.get_input_embeddings().weight.grad)
    torch.testing.assert_close(losses[1], losses[0], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(grads[1], grads[0], atol=1e-5, rtol=1e-5)
    with pytest.raises(ValueError, match="ce_chunk_size must be a positive integer or None, got 0"):
        tiny_model("sasrec", ce_chunk_size=0)


def test_mixed_negatives_is_the_softmax_over_batch_targets_and_uniform_draws():
    generator = torch.Generator().manual_seed(3)
    hidden, weight = torch.randn(5, 4, generator=generator), torch.randn(NUM_SPECIAL + 30, 4, generator=generator)
    targets = torch.tensor([7, 9, 7, 20, 9])
    torch.manual_seed(0)
    got = mixed_negatives_loss(hidden, targets, weight, NUM_SPECIAL, 6, True, 1.0)
    torch.manual_seed(0)
    uniform = torch.randint(NUM_SPECIAL, NUM_SPECIAL + 30, (6,))  # the draws the loss made
    candidates = torch.cat([torch.tensor([7, 9, 20]), uniform])
    # expected count under the mixed sampling (count among the targets + 6 uniform draws over 30 items) over the
    # times drawn (that count for a target, 1 for a uniform draw)
    counts = torch.tensor([2.0, 2.0, 1.0])
    correction = torch.cat([(counts + 6 / 30) / counts, torch.full((6,), 6 / 30)])
    logits = hidden @ weight[candidates].T - correction.log()
    duplicate = torch.isin(uniform, torch.tensor([7, 9, 20]))
    logits[:, 3:][:, duplicate] = float("-inf")
    expected = torch.nn.functional.cross_entropy(logits, torch.tensor([0, 1, 0, 2, 1]))
    torch.testing.assert_close(got, expected)
    model = tiny_model("sasrec", loss_type="mixed_negatives").train()
    input_ids = random_items(3, 6)
    model(input_ids=input_ids, labels=input_ids).loss.backward()
    assert model.get_input_embeddings().weight.grad.abs().sum() > 0


def test_mixed_negatives_estimates_the_full_softmax():
    generator = torch.Generator().manual_seed(4)
    num_items, hidden_size = 3000, 8
    weight = torch.randn(NUM_SPECIAL + num_items, hidden_size, generator=generator)
    hidden = 0.4 * torch.randn(256, hidden_size, generator=generator)  # scores of a few units, as trained models give
    popularity = 1.0 / torch.arange(1, num_items + 1).float()  # Zipf targets, as real batches are
    targets = torch.multinomial(popularity, 256, replacement=True, generator=generator) + NUM_SPECIAL
    full = full_softmax_loss(hidden, targets, weight, NUM_SPECIAL).item()
    estimates = []
    for seed in range(10):
        torch.manual_seed(seed)
        estimates.append(mixed_negatives_loss(hidden, targets, weight, NUM_SPECIAL, 256, True, 1.0).item())
    assert sum(estimates) / len(estimates) == pytest.approx(full, abs=0.1)
