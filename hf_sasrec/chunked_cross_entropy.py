"""Full-softmax cross-entropy over a large catalog without the `[num_targets, num_items]` logits.

The plain loss builds every target's scores over the whole catalog, and autograd keeps them (and their softmax) for
the backward pass: `num_targets * num_items` floats, 25 GB for 6,400 targets over a million items. Here the catalog
is walked in chunks of `chunk_size` items, as Cut Cross-Entropy and Liger's fused linear cross-entropy do: the
forward pass keeps only each target's running log-sum-exp, and the backward pass computes each chunk's scores again
and turns them into the gradients of the hidden states and of the item vectors right away. Memory: one
`[num_targets, chunk_size]` block at a time; arithmetic: the scores twice (forward and backward), plus the two
gradient products the plain loss also does.

    per_target = ChunkedCrossEntropy.apply(hidden, item_vectors, targets, 65536, None)   # [num_targets]
"""

import torch


class ChunkedCrossEntropy(torch.autograd.Function):
    """`logsumexp_j(hidden @ item_vectors[j]) - hidden @ item_vectors[target]` per target, computed chunk by chunk
    over the items (accumulated in float32, or float64 for float64 inputs), with the items marked in `excluded`
    (`[num_items]` bool, or `None`) left out of the softmax.

    Args of `apply`:
        hidden: `[num_targets, hidden]`.
        item_vectors: `[num_items, hidden]`, the candidates (special tokens already removed).
        targets: `[num_targets]`, indices into `item_vectors`.
        chunk_size: items scored at once.
        excluded: `[num_items]` bool or `None`.

    Returns: `[num_targets]`, each target's cross-entropy.
    """

    @staticmethod
    def forward(ctx, hidden, item_vectors, targets, chunk_size: int, excluded):
        dtype = accumulation_dtype(hidden)
        log_normalizer = torch.full((len(hidden),), float("-inf"), dtype=dtype, device=hidden.device)
        for start in range(0, len(item_vectors), chunk_size):
            scores = chunk_scores(hidden, item_vectors, start, chunk_size, excluded)
            log_normalizer = torch.logaddexp(log_normalizer, scores.logsumexp(dim=1))
        target_scores = (hidden.to(dtype) * item_vectors[targets].to(dtype)).sum(-1)
        ctx.save_for_backward(hidden, item_vectors, targets, log_normalizer)
        ctx.chunk_size, ctx.excluded = chunk_size, excluded
        return log_normalizer - target_scores

    @staticmethod
    def backward(ctx, grad_output):
        hidden, item_vectors, targets, log_normalizer = ctx.saved_tensors
        dtype = accumulation_dtype(hidden)
        grad_output, states = grad_output.to(dtype), hidden.to(dtype)
        grad_hidden = torch.zeros(hidden.shape, dtype=dtype, device=hidden.device)
        grad_items = torch.zeros(item_vectors.shape, dtype=dtype, device=item_vectors.device)
        for start in range(0, len(item_vectors), ctx.chunk_size):
            scores = chunk_scores(hidden, item_vectors, start, ctx.chunk_size, ctx.excluded)
            weights = (scores - log_normalizer[:, None]).exp() * grad_output[:, None]  # softmax times the upstream
            grad_hidden += weights @ item_vectors[start : start + ctx.chunk_size].to(dtype)
            grad_items[start : start + ctx.chunk_size] = weights.T @ states
        grad_hidden -= grad_output[:, None] * item_vectors[targets].to(dtype)
        grad_items.index_add_(0, targets, -grad_output[:, None] * states)
        return grad_hidden.to(hidden.dtype), grad_items.to(item_vectors.dtype), None, None, None


def accumulation_dtype(hidden: torch.Tensor) -> torch.dtype:
    """float32, or the inputs' dtype when wider (float64)."""
    return torch.promote_types(hidden.dtype, torch.float32)


def chunk_scores(
    hidden: torch.Tensor, item_vectors: torch.Tensor, start: int, chunk_size: int, excluded: torch.Tensor | None
) -> torch.Tensor:
    """`[num_targets, chunk]` scores of the items `start:start + chunk_size` (in [`accumulation_dtype`]), excluded
    ones at `-inf`."""
    scores = (hidden @ item_vectors[start : start + chunk_size].T).to(accumulation_dtype(hidden))
    if excluded is not None:
        scores = scores.masked_fill(excluded[start : start + chunk_size], float("-inf"))
    return scores


__all__ = ["ChunkedCrossEntropy"]
