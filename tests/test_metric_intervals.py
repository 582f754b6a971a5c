"""Confidence intervals, paired differences and the beyond-accuracy metrics of the evaluator, on hand-made cases."""

import math

import pytest
import torch
from model_helpers import tiny_model
from test_evaluation import ScoreTable, random_users

from hf_sasrec import evaluation
from hf_sasrec.evaluation import (
    Z_95,
    coverage,
    coverage_interval,
    evaluate_next_item,
    evaluate_users,
    list_diversity,
    mean_with_interval,
    metrics_table,
    paired_difference,
    popularity_percentiles,
)
from hf_sasrec.reranking import DislikeRatePenalty, DislikeSimilarityPenalty, ExposurePenalty, PopularityPenalty

NUM_SPECIAL = 5


def test_the_interval_is_the_normal_approximation_over_users():
    mean, half_width = mean_with_interval(torch.tensor([1.0, 0.0, 0.0, 1.0, math.nan]))
    # mean 0.5; sample standard deviation sqrt(4 * 0.25 / 3); the NaN user has no value
    assert mean == pytest.approx(0.5)
    assert half_width == pytest.approx(1.959964 * math.sqrt(1 / 3) / math.sqrt(4), rel=1e-6)
    assert math.isnan(mean_with_interval(torch.tensor([0.3]))[1])


def test_a_model_paired_with_itself_differs_by_exactly_zero():
    model = tiny_model("sasrec")
    users = random_users(30, model.config.vocab_size, seed=4)
    first, _, _ = evaluate_users(model, users)
    second, _, _ = evaluate_users(model, users)
    for name in ("ndcg@10", "hr@10", "mrr"):
        assert paired_difference(first[name], second[name]) == (0.0, 0.0)
    other = tiny_model("sasrec", seed=1)
    third, _, _ = evaluate_users(other, users)
    difference, half_width = paired_difference(third["mrr"], first["mrr"])
    assert difference == pytest.approx(third["mrr"].mean().item() - first["mrr"].mean().item())
    assert half_width > 0
    with pytest.raises(ValueError, match="same users"):
        paired_difference(first["mrr"], first["mrr"][:-1])


def test_the_coverage_interval_is_the_bootstrap_spread_over_users():
    # 50 users, lists of one item: user 0 alone lists item 5, every other user lists item 6; catalog of 10 items.
    # A resample covers item 6 (all but surely) and item 5 when it draws user 0, with probability
    # q = 1 - (1 - 1/50)^50: its coverage is (1 + Bernoulli(q)) / 10, of standard deviation sqrt(q (1 - q)) / 10.
    lists = torch.tensor([[5]] + [[6]] * 49)
    q = 1 - (1 - 1 / 50) ** 50
    value, half_width = coverage_interval(lists, vocab_size=15, num_special_tokens=5, resamples=4000)
    assert value == pytest.approx(2 / 10)
    assert half_width == pytest.approx(Z_95 * math.sqrt(q * (1 - q)) / 10, rel=0.08)
    # paired: the same lists with user 0 moved to item 6 differ by 1/10 in coverage, with the same spread
    baseline = torch.tensor([[6]] * 50)
    change, change_half_width = coverage_interval(lists, 15, 5, baseline=baseline, resamples=4000)
    assert change == pytest.approx(1 / 10)
    assert change_half_width == pytest.approx(half_width, rel=0.08)
    # a model against itself: exactly 0, width 0; every user with the same list: no spread either
    assert coverage_interval(lists, 15, 5, baseline=lists) == (0.0, 0.0)
    assert coverage_interval(baseline, 15, 5) == (pytest.approx(1 / 10), 0.0)
    # seeded: the same interval every call
    assert coverage_interval(lists, 15, 5) == coverage_interval(lists, 15, 5)
    with pytest.raises(ValueError, match="same users"):
        coverage_interval(lists, 15, 5, baseline=baseline[:-1])


@pytest.mark.parametrize("block", [None, 3 * 40])  # all resamples at once; 3 a block (vocab_size 40)
def test_the_coverage_bootstrap_resamples_whole_lists_of_users(block, monkeypatch):
    if block is not None:
        monkeypatch.setattr(evaluation, "COVERAGE_BLOCK", block)
    lists = torch.randint(NUM_SPECIAL, 40, (12, 4), generator=torch.Generator().manual_seed(1))
    baseline = torch.randint(NUM_SPECIAL, 40, (12, 4), generator=torch.Generator().manual_seed(2))
    # the resamples coverage_interval draws (seed 0), each one computed from the lists of the users it draws
    drawn = torch.randint(12, (50, 12), generator=torch.Generator().manual_seed(0))
    resampled = torch.tensor([coverage(lists[users], 40, NUM_SPECIAL) for users in drawn], dtype=torch.double)
    paired = resampled - torch.tensor([coverage(baseline[users], 40, NUM_SPECIAL) for users in drawn])
    value, half_width = coverage_interval(lists, 40, NUM_SPECIAL, resamples=50)
    assert value == coverage(lists, 40, NUM_SPECIAL) and half_width == pytest.approx(Z_95 * resampled.std().item())
    change, change_half_width = coverage_interval(lists, 40, NUM_SPECIAL, baseline=baseline, resamples=50)
    assert change == pytest.approx(value - coverage(baseline, 40, NUM_SPECIAL))
    assert change_half_width == pytest.approx(Z_95 * paired.std().item())
    with pytest.raises(ValueError, match="at least 2 resamples"):
        coverage_interval(lists, 40, NUM_SPECIAL, resamples=1)


def ranked_scores(rankings: list[list[int]], vocab_size: int) -> torch.Tensor:
    """Scores that put each user's listed items first, in order, and every other item below them."""
    scores = torch.zeros(len(rankings), vocab_size)
    for user, ranking in enumerate(rankings):
        scores[user, ranking] = torch.arange(len(ranking), 0, -1, dtype=torch.float)
    return scores


def test_disliked_at_10_counts_held_out_dislikes_in_each_top_10():
    vocab_size = 40
    rankings = [list(range(5, 15)), list(range(15, 25)), list(range(25, 35))]
    users = [{"user_id": str(user), "item_ids": [39, 38 - user]} for user in range(3)]  # targets outside the lists
    disliked = {"0": [7, 9, 30], "1": [5, 6], "2": []}  # user 0: two in its list; user 1: none; user 2: no dislike
    metrics = evaluate_next_item(
        ScoreTable(ranked_scores(rankings, vocab_size)), users, exclude_history=False, disliked_items=disliked
    )
    assert metrics["full/disliked_users"] == 2
    assert metrics["full/disliked@10"] == pytest.approx(0.5)
    assert metrics["full/disliked_count@10"] == pytest.approx(1.0)  # (2 + 0) / 2
    assert metrics["full/disliked@10_ci95"] == pytest.approx(1.959964 * math.sqrt(0.5) / math.sqrt(2), rel=1e-6)


def test_popularity_percentiles_rank_items_and_share_ties():
    counts = torch.tensor([0, 0, 0, 0, 0, 10, 3, 3, 0, 7])  # five special tokens, then five items
    percentiles = popularity_percentiles(counts, NUM_SPECIAL)
    assert percentiles[:NUM_SPECIAL].isnan().all()
    # item ranks (0 = least popular): 0 -> 0, 3 and 3 -> 1.5 each, 7 -> 3, 10 -> 4; over 4
    torch.testing.assert_close(
        percentiles[NUM_SPECIAL:], torch.tensor([1.0, 0.375, 0.375, 0.0, 0.75], dtype=torch.double)
    )


def test_diversity_is_one_minus_the_mean_pairwise_jaccard_of_categories():
    # ids from 3 on are categories; 1 (missing) and 2 (unknown) are none: items 0 and 4 have no category
    categories = torch.tensor([[1, 0], [3, 4], [3, 0], [5, 0], [2, 0]])
    lists = torch.tensor([[1, 2, 3], [1, 1, 1], [3, 4, 4]])
    # list 0: J(1,2) = 1/2, J(1,3) = 0, J(2,3) = 0 -> 1 - 1/6; list 1: identical items -> 0;
    # list 2: J(3,4) = 0 twice, J(4,4) = 0 (no category shared) -> 1
    torch.testing.assert_close(list_diversity(lists, categories), torch.tensor([5 / 6, 0.0, 1.0], dtype=torch.double))


def test_novelty_and_diversity_are_reported_with_their_intervals_and_tabled():
    vocab_size = 40
    rankings = [list(range(5, 15)), list(range(15, 25))]
    users = [{"user_id": str(user), "item_ids": [39, 38]} for user in range(2)]
    counts = torch.arange(vocab_size, dtype=torch.float)  # a higher id is more popular
    categories = torch.zeros(vocab_size, 1, dtype=torch.long)
    categories[5:15, 0] = 3  # the first list shares one category, the second has none
    metrics = evaluate_next_item(
        ScoreTable(ranked_scores(rankings, vocab_size)),
        users,
        exclude_history=False,
        item_counts=counts,
        item_categories=categories,
    )
    expected = [
        sum(item - NUM_SPECIAL for item in ranking) / 10 / (vocab_size - NUM_SPECIAL - 1) for ranking in rankings
    ]
    assert metrics["full/popularity_percentile@10"] == pytest.approx(sum(expected) / 2)
    assert metrics["full/diversity@10"] == pytest.approx(0.5)  # 0 and 1
    table = metrics_table(metrics)
    assert "popularity_percentile@10" in table and f"{metrics['full/ndcg@10']:.4f} ± " in table
    assert "_ci95" not in table


def test_rerankers_subtract_their_penalties():
    scores = torch.zeros(2, 8)
    counts = torch.tensor([0, 0, 0, 0, 0, 9, 0, 3])
    torch.testing.assert_close(
        PopularityPenalty(counts, 0.5)(scores, []), -0.5 * torch.log1p(counts.float()).expand(2, 8)
    )
    vectors = torch.tensor([[1.0, 0.0]] * 5 + [[1.0, 0.0], [0.0, 2.0], [1.0, 1.0]])
    rows = [{"user_id": "a"}, {"user_id": "b"}]
    adjusted = DislikeSimilarityPenalty(vectors, {"a": [6]}, weight=2.0)(scores, rows)
    # user a disliked item 6 (direction y): item 5 (x) is orthogonal, item 7 at 45 degrees; user b has no dislike
    torch.testing.assert_close(adjusted[0, 5:], torch.tensor([0.0, -2.0, -2.0 / math.sqrt(2)]))
    assert torch.equal(adjusted[1], scores[1])


def test_a_reranker_changes_what_the_evaluation_ranks():
    vocab_size = 40
    rankings = [list(range(5, 15))]
    users = [{"user_id": "0", "item_ids": [39, 20]}]
    table = ranked_scores(rankings, vocab_size)
    table[0, 20] = 0.5  # below the ten listed items, above the rest
    plain = evaluate_next_item(ScoreTable(table), users, exclude_history=False)
    demote = PopularityPenalty(torch.zeros(vocab_size).index_fill(0, torch.arange(5, 15), 1e6), 1.0)
    reranked = evaluate_next_item(ScoreTable(table), users, exclude_history=False, rerank=demote)
    assert plain["full/hr@10"] == pytest.approx(0.0) and reranked["full/ndcg@1"] == pytest.approx(1.0)  # 20 rises


def test_the_dislike_rate_penalty_is_the_smoothed_share_of_dislikes():
    counts = torch.tensor([0, 0, 0, 0, 0, 8, 1, 0])
    dislikes = {"a": [5, 6], "b": [6], "c": [7]}
    adjusted = DislikeRatePenalty(counts, dislikes, weight=3.0)(torch.zeros(1, 8), [])
    # item 5: 1 dislike, 8 interactions -> 2 / 11; item 6: 2 and 1 -> 3 / 5; item 7: 1 and 0 -> 2 / 3
    torch.testing.assert_close(adjusted[0, 5:], -3.0 * torch.tensor([2 / 11, 3 / 5, 2 / 3]))


def test_the_exposure_penalty_gives_later_users_items_no_list_held_yet():
    vocab_size, num_items = 40, 35
    table = ranked_scores([list(range(5, 25))] * 3, vocab_size)  # items 5..24 first, the same for everyone
    # user 0 watched item 5 (excluded from its list); the targets (score 0) stay out of every list
    users = [{"user_id": str(user), "item_ids": [history, 39 - user]} for user, history in enumerate((5, 30, 31))]
    plain = evaluate_next_item(ScoreTable(table), users, batch_size=2)
    spread = evaluate_next_item(
        ScoreTable(table), users, batch_size=2, rerank=ExposurePenalty(vocab_size, weight=100.0)
    )
    # plain: 6..15, then 5..14 twice (11 items). Spread: user 0 gets 6..15; user 1 gets 5 (never shown: user 0's
    # list did not hold it) and 16..24; user 2, in the next batch, ten items of score 0: 30 items in all
    assert plain["full/coverage@10"] == pytest.approx(11 / num_items)
    assert spread["full/coverage@10"] == pytest.approx(30 / num_items)
    # a weight below every score gap changes nothing
    small = evaluate_next_item(ScoreTable(table), users, batch_size=2, rerank=ExposurePenalty(vocab_size, 0.5))
    assert small["full/coverage@10"] == pytest.approx(11 / num_items)
    # a row with fewer finite scores than k shows those items only, never one at -inf
    penalty = ExposurePenalty(8, weight=1.0, k=3)
    penalty.adjust(torch.arange(8), torch.tensor([-math.inf] * 5 + [1.0, 2.0, -math.inf]), k=3)
    assert penalty.shown.nonzero().flatten().tolist() == [5, 6]
    with pytest.raises(ValueError, match="finite weight"):
        ExposurePenalty(8, weight=math.inf)


def test_a_user_sample_is_fixed_stated_and_ranked_as_those_users_alone():
    model = tiny_model("sasrec")
    users = random_users(40, model.config.vocab_size, seed=5)
    sampled = evaluate_next_item(model, users, max_users=15, seed=3)
    again = evaluate_next_item(model, users, max_users=15, seed=3)
    assert sampled == pytest.approx(again)  # the same sample of users each time
    assert sampled["full/num_users"] == 15 and sampled["full/users_sampled_from"] == 40
    chosen = sorted(torch.randperm(40, generator=torch.Generator().manual_seed(3))[:15].tolist())
    alone = evaluate_next_item(model, [users[index] for index in chosen], seed=3)
    assert alone["full/ndcg@10"] == pytest.approx(sampled["full/ndcg@10"]) and "full/users_sampled_from" not in alone
    assert evaluate_next_item(model, users, max_users=100)["full/num_users"] == 40
