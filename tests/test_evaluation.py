"""The next-item metrics against a brute-force numpy reference, on random scores with ties and history masking."""

import math

import numpy as np
import pytest
import torch
from model_helpers import VOCAB_SIZE, tiny_model
from transformers import PretrainedConfig
from transformers.modeling_outputs import CausalLMOutput

from hf_sasrec.evaluation import evaluate_next_item, sample_negatives, sampled_ranking

NUM_SPECIAL = 5


class ScoreTable(torch.nn.Module):
    """A stand-in model that returns preset next-item scores, one row per user, in the order users are scored."""

    def __init__(self, scores: torch.Tensor):
        super().__init__()
        self.config = PretrainedConfig(vocab_size=scores.shape[1], pad_token_id=0, max_position_embeddings=8)
        self.config.num_special_tokens = NUM_SPECIAL
        self.scores = scores
        self.offset = 0
        self.anchor = torch.nn.Parameter(torch.zeros(1))

    def forward(self, input_ids, attention_mask, logits_to_keep):
        assert logits_to_keep == 1
        assert attention_mask[:, -1].all(), "histories must be left-padded"
        rows = self.scores[self.offset : self.offset + len(input_ids)]
        self.offset += len(input_ids)
        return CausalLMOutput(logits=rows[:, None, :])


def random_users(num_users: int, vocab_size: int, seed: int) -> list[dict]:
    rng = np.random.default_rng(seed)
    rows = []
    for user in range(num_users):
        length = int(rng.integers(2, 12))
        items = rng.integers(NUM_SPECIAL, vocab_size, size=length).tolist()
        rows.append({"user_id": str(user), "item_ids": items, "timestamps": list(range(length))})
    return rows


def tied_scores(num_users: int, vocab_size: int, seed: int) -> torch.Tensor:
    """Scores on a coarse grid, so that many items tie with the target."""
    rng = np.random.default_rng(seed)
    return torch.tensor(rng.integers(0, 6, size=(num_users, vocab_size)), dtype=torch.float32)


def reference_metrics(scores: np.ndarray, rows: list[dict], exclude_history: bool, ks=(1, 5, 10, 20)) -> dict:
    """Brute force: per user, the candidates are all items (minus the history if excluded, plus the target); the
    rank is the number of other candidates scoring >= the target."""
    ranks, top10 = [], set()
    for user_scores, row in zip(scores, rows, strict=True):
        target = row["item_ids"][-1]
        history = set(row["item_ids"][:-1]) if exclude_history else set()
        candidates = [item for item in range(NUM_SPECIAL, len(user_scores)) if item not in history or item == target]
        ranks.append(sum(user_scores[item] >= user_scores[target] for item in candidates if item != target))
        ordered = sorted(candidates, key=lambda item: -user_scores[item])
        top10.update(ordered[:10])
    ranks = np.array(ranks)
    metrics = {}
    for k in ks:
        metrics[f"full/hr@{k}"] = float(np.mean(ranks < k))
        metrics[f"full/ndcg@{k}"] = float(np.mean([1 / math.log2(r + 2) if r < k else 0.0 for r in ranks]))
    metrics["full/mrr"] = float(np.mean(1 / (ranks + 1)))
    return metrics, top10


@pytest.mark.parametrize("exclude_history", [True, False])
@pytest.mark.parametrize("batch_size", [4, 64])
def test_full_protocol_matches_brute_force(exclude_history, batch_size):
    rows = random_users(37, 30, seed=1)
    scores = tied_scores(37, 30, seed=2)
    metrics = evaluate_next_item(
        ScoreTable(scores), rows, protocol="full", exclude_history=exclude_history, batch_size=batch_size
    )
    expected, _ = reference_metrics(scores.numpy(), rows, exclude_history)
    for name, value in expected.items():
        assert metrics[name] == pytest.approx(value, abs=1e-12), name
    assert metrics["full/num_users"] == 37


def test_coverage_counts_distinct_top10_items():
    rows = random_users(20, 40, seed=3)
    scores = torch.randn(20, 40, generator=torch.Generator().manual_seed(4))  # continuous: no ties in the top 10
    metrics = evaluate_next_item(ScoreTable(scores), rows, exclude_history=True, batch_size=7)
    _, top10 = reference_metrics(scores.numpy(), rows, exclude_history=True)
    assert metrics["full/coverage@10"] == pytest.approx(len(top10) / (40 - NUM_SPECIAL))
    assert 0 < metrics["full/coverage@10_ci95"] < metrics["full/coverage@10"]  # its bootstrap interval


def test_ties_are_pessimistic():
    rows = random_users(10, 30, seed=5)
    metrics = evaluate_next_item(ScoreTable(torch.zeros(10, 30)), rows, exclude_history=False)
    assert metrics["full/hr@20"] == 0.0
    assert metrics["full/mrr"] == pytest.approx(1 / (30 - NUM_SPECIAL))


def test_special_tokens_never_ranked():
    rows = random_users(8, 30, seed=6)
    scores = torch.zeros(8, 30)
    scores[:, :NUM_SPECIAL] = 100.0
    for index, row in enumerate(rows):
        scores[index, row["item_ids"][-1]] = 1.0
    metrics = evaluate_next_item(ScoreTable(scores), rows)
    assert metrics["full/hr@1"] == 1.0


def test_sample_negatives_avoid_interactions_and_are_seeded():
    interacted = torch.zeros(50, 20, dtype=torch.bool)
    interacted[:, 5:18] = True  # only items 18 and 19 are left
    negatives = sample_negatives(interacted, NUM_SPECIAL, 100, seed=0)
    assert set(negatives.unique().tolist()) == {18, 19}
    assert torch.equal(negatives, sample_negatives(interacted, NUM_SPECIAL, 100, seed=0))
    assert not torch.equal(negatives, sample_negatives(interacted, NUM_SPECIAL, 100, seed=1))
    # A user's draws depend on its number in the split, not on the chunk it is scored in.
    assert torch.equal(negatives[10:], sample_negatives(interacted[10:], NUM_SPECIAL, 100, seed=0, first_user=10))
    interacted[3, 5:] = True
    with pytest.raises(ValueError, match="interacted with every item"):
        sample_negatives(interacted, NUM_SPECIAL, 10, seed=0)


def test_sampled_ranking_matches_brute_force():
    generator = torch.Generator().manual_seed(7)
    scores = torch.randint(0, 4, (30, 50), generator=generator).float()
    targets = torch.randint(NUM_SPECIAL, 50, (30,), generator=generator)
    negatives = torch.randint(NUM_SPECIAL, 50, (30, 100), generator=generator)
    ranks, _ = sampled_ranking(scores, targets, negatives)
    expected = [sum(scores[u, n] >= scores[u, targets[u]] for n in negatives[u]) for u in range(30)]
    assert ranks.tolist() == [int(value) for value in expected]


def test_sampled_protocol_end_to_end():
    rows = random_users(25, 300, seed=8)
    scores = torch.rand(25, 300, generator=torch.Generator().manual_seed(9))
    first = evaluate_next_item(ScoreTable(scores), rows, protocol="sampled", batch_size=10, seed=3)
    second = evaluate_next_item(ScoreTable(scores), rows, protocol="sampled", batch_size=7, seed=3)
    assert first == second
    assert set(first) >= {"sampled/hr@10", "sampled/ndcg@10", "sampled/mrr", "sampled/coverage@10"}
    # Random scores: the target's rank among 101 candidates is uniform, so HR@10 is about 10/101.
    assert 0.0 < first["sampled/hr@20"] < 0.6
    best = scores.clone()
    for index, row in enumerate(rows):
        best[index, row["item_ids"][-1]] = 2.0
    assert evaluate_next_item(ScoreTable(best), rows, protocol="sampled")["sampled/hr@1"] == 1.0


@pytest.mark.parametrize("variant", ["sasrec", "tisasrec"])
def test_real_model_scores_are_last_position_logits(variant):
    """On a real model, the metrics equal those computed from one-user-at-a-time logits, whatever the chunking."""
    model = tiny_model(variant)
    rows = random_users(12, VOCAB_SIZE, seed=10)
    single = []
    for row in rows:
        input_ids = torch.tensor([row["item_ids"][:-1]])
        extra = {"timestamps": torch.tensor([row["timestamps"][:-1]])} if variant == "tisasrec" else {}
        single.append(model(input_ids=input_ids, **extra).logits[0, -1])
    expected, _ = reference_metrics(torch.stack(single).detach().numpy(), rows, exclude_history=True)
    for batch_size in (5, 12):
        metrics = evaluate_next_item(model, rows, batch_size=batch_size)
        for name, value in expected.items():
            assert metrics[name] == pytest.approx(value, abs=1e-9), name


def test_bad_inputs():
    rows = random_users(4, 30, seed=11)
    with pytest.raises(ValueError, match="Unknown protocol"):
        evaluate_next_item(ScoreTable(torch.zeros(4, 30)), rows, protocol="popular")
    with pytest.raises(ValueError, match="at least two items"):
        evaluate_next_item(ScoreTable(torch.zeros(1, 30)), [{"user_id": "u", "item_ids": [7]}])
