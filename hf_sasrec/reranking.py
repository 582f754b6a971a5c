"""Post-hoc re-ranking of next-item scores: the baselines an alignment method must beat, and usable on their own.

A re-ranker is called with the scores of a batch of users, `[batch, vocab_size]`, and their rows (dicts with
`user_id`, `item_ids`), and returns adjusted scores of the same shape; [`hf_sasrec.evaluation.evaluate_next_item`]
takes one as `rerank`. Each subtracts `weight` times a penalty from every item's score:

- [`PopularityPenalty`]: `log(1 + training count)` of the item (Steck's popularity-compensated ranking, in its
  simplest form): lower `weight` keeps accuracy, higher trades it for novelty and coverage;
- [`DislikeSimilarityPenalty`]: the item's largest cosine similarity to the items the user disliked (the dislikes
  that may train, `data_preprocess.dislikes` part `pairs`), in the model's own item-vector space;
- [`DislikeRatePenalty`]: the share of the item's ratings that are dislikes, over all users (smoothed: `(d + 1) /
  (d + n + 2)` for `d` dislikes of the `pairs` part and `n` training interactions): items that many people who
  watch them dislike;
- [`ExposurePenalty`]: `weight` on every item that a list made earlier by the same re-ranker already holds, so that
  later users get items no one was shown yet when their scores come close (greedy aggregate-diversity re-ranking, in
  the spirit of Adomavicius & Kwon, 2012): catalog coverage rises at little cost to accuracy, popularity barely
  moves. It keeps state, the items shown so far, and depends on the order of the users: one instance per pass.

    penalty = DislikeSimilarityPenalty(model.item_embeddings(), load_dislikes(data_dir, "pairs"), weight=2.0)
    metrics = evaluate_next_item(model, test, rerank=penalty, disliked_items=load_dislikes(data_dir, "test"))
"""

import math
from collections.abc import Mapping, Sequence

import torch
import torch.nn.functional as F


class ItemPenalty:
    """`score - penalty[item]`: one penalty per token id, `[vocab_size]`, the same for every user (kept on the CPU,
    where evaluation ranks the scores)."""

    def __init__(self, penalty: torch.Tensor):
        self.penalty = penalty.float().cpu()

    def __call__(self, scores: torch.Tensor, rows: Sequence[dict]) -> torch.Tensor:
        return scores - self.penalty[: scores.shape[1]]


class PopularityPenalty(ItemPenalty):
    """`score - weight * log(1 + count)`, `item_counts` `[vocab_size]` the training split's item counts."""

    def __init__(self, item_counts: torch.Tensor, weight: float):
        super().__init__(weight * torch.log1p(torch.as_tensor(item_counts, dtype=torch.float)))


class DislikeRatePenalty(ItemPenalty):
    """`score - weight * (d + 1) / (d + n + 2)`, `dislikes` (user id -> token ids) giving each item's dislike count
    `d` and `item_counts` `[vocab_size]` its training interactions `n`."""

    def __init__(self, item_counts: torch.Tensor, dislikes: Mapping[str, Sequence[int]], weight: float):
        counts = torch.as_tensor(item_counts, dtype=torch.float).cpu()
        disliked = torch.zeros_like(counts)
        for items in dislikes.values():
            disliked.index_add_(0, torch.as_tensor(list(items), dtype=torch.long), torch.ones(len(items)))
        super().__init__(weight * (disliked + 1) / (disliked + counts + 2))


class DislikeSimilarityPenalty:
    """`score - weight * max cosine(item, disliked item)` over the user's `dislikes` (user id -> token ids);
    `item_vectors` `[vocab_size, hidden]` (e.g. `model.item_embeddings()`). A user without dislikes keeps their
    scores."""

    def __init__(self, item_vectors: torch.Tensor, dislikes: Mapping[str, Sequence[int]], weight: float):
        self.vectors = F.normalize(item_vectors.detach().float().cpu(), dim=-1)  # scores are ranked on the CPU
        self.dislikes = dislikes
        self.weight = weight

    def __call__(self, scores: torch.Tensor, rows: Sequence[dict]) -> torch.Tensor:
        adjusted = scores.clone()
        for index, row in enumerate(rows):
            disliked = self.dislikes.get(str(row.get("user_id")), ())
            if disliked:
                similarity = self.vectors[: scores.shape[1]] @ self.vectors[list(disliked)].T
                adjusted[index] -= self.weight * similarity.max(dim=1).values
        return adjusted


class ExposurePenalty:
    """`score - weight` for each item already in an earlier list of this re-ranker. Users are taken in order; each
    one's list is the top `k` of their adjusted scores (excluded items should come at `-inf`, as
    [`hf_sasrec.evaluation.evaluate_users`] passes them), and its items are penalised for every user after.
    [`hf_sasrec.recommendation.NextItemRecommender.recommend_ids`] takes one as `exposure` and re-chooses each list
    among a user's retrieved candidates.

    Args:
        vocab_size: the number of token ids (every id scored must be below it: make a new instance after
            `Recommender.add_items`).
        weight: the score given up to show an item that no earlier list holds.
        k: the length of a list as evaluation cuts it (the cut-off of the metrics it serves).
        candidates: retrieval only: how many of a user's best items (by the model's score) a list is re-chosen
            from; evaluation re-ranks every item.
    """

    def __init__(self, vocab_size: int, weight: float, k: int = 10, candidates: int = 100):
        if not 0 <= weight < math.inf:
            raise ValueError(f"ExposurePenalty needs a finite weight of at least 0, got {weight}.")
        self.shown = torch.zeros(vocab_size, dtype=torch.bool)
        self.weight = weight
        self.k = k
        self.candidates = candidates

    def adjust(self, item_ids: torch.LongTensor, scores: torch.Tensor, k: int) -> torch.Tensor:
        """One user's `scores` of `item_ids` (both `[num_candidates]`) less the penalty; the top `k` of the adjusted
        scores (that user's list; never an item at `-inf`) join the items shown."""
        adjusted = torch.where(self.shown[item_ids], scores - self.weight, scores)
        top = adjusted.topk(min(k, len(adjusted)))
        self.shown[item_ids[top.indices[top.values > -math.inf]]] = True
        return adjusted

    def __call__(self, scores: torch.Tensor, rows: Sequence[dict]) -> torch.Tensor:
        items = torch.arange(scores.shape[1])
        return torch.stack([self.adjust(items, row, self.k) for row in scores]) if len(scores) else scores.clone()


__all__ = ["DislikeRatePenalty", "DislikeSimilarityPenalty", "ExposurePenalty", "ItemPenalty", "PopularityPenalty"]
