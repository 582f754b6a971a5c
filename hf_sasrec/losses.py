"""Next-item losses shared by every variant.

Labels follow transformers' causal LMs (`ForCausalLMLoss`): `labels` are aligned with `input_ids` and shifted here,
so that position `t` predicts `labels[b, t + 1]`; `shift_labels`, the targets of each position, are used as given.
Every loss takes the hidden states of the positions that predict an item and the item embedding table the scores
come from (the output layer), and ignores targets that are `-100` or a special token (padding included). Each loss
is the mean over the batch's targets, or, given `num_items_in_batch` (the targets of the whole optimizer step, which
`Trainer` counts), their sum divided by it, as transformers' `fixed_cross_entropy` does.

Items marked in `excluded_items` (`[vocab_size]` bool) are no candidates: the full, sampled and mixed softmax give
them no probability and `"bce"` never draws them as negatives, so that training behaves as if they were not in the
catalog yet (the cold-item protocol: items that arrive after training). In-batch negatives are other training
targets and need no mask.
"""

import math

import torch
import torch.nn.functional as F
from transformers.loss.loss_utils import fixed_cross_entropy

from .chunked_cross_entropy import ChunkedCrossEntropy

IGNORE_INDEX = -100
BCE_RESAMPLE_ROUNDS = 4


def next_item_targets(
    labels: torch.LongTensor | None, shift_labels: torch.LongTensor | None, attention_mask: torch.BoolTensor
) -> torch.LongTensor:
    """The item each position predicts, `[batch, length]`: `shift_labels` when given, else `labels` shifted left by
    one with `-100` at the last position (as `ForCausalLMLoss`). Padding positions predict nothing (`-100`): their
    state holds no history.

    Args:
        labels: `[batch, length]`, aligned with `input_ids` (`labels=input_ids` trains next-item prediction).
        shift_labels: `[batch, length]`, already the targets: `shift_labels[b, t]` is the item after position `t`.
        attention_mask: `[batch, length]` bool, `True` at real items.
    """
    if shift_labels is None:
        shift_labels = F.pad(labels, (0, 1), value=IGNORE_INDEX)[..., 1:]
    return shift_labels.masked_fill(~attention_mask, IGNORE_INDEX)


def select_targets(
    hidden_states: torch.Tensor, labels: torch.LongTensor, num_special_tokens: int
) -> tuple[torch.Tensor, torch.LongTensor, torch.BoolTensor]:
    """Keep the positions that have an item to predict.

    Args:
        hidden_states: `[batch, length, hidden]`.
        labels: `[batch, length]`, the item that follows each position, `-100` or a special id where none does.

    Returns:
        `([num_targets, hidden], [num_targets], [batch, length] bool)`: the kept states, their items, the mask.
    """
    mask = labels >= num_special_tokens
    return hidden_states[mask], labels[mask], mask


def average_over_targets(
    per_target_loss: torch.Tensor, num_items_in_batch: torch.Tensor | int | None = None
) -> torch.Tensor:
    """`[num_targets]` to a scalar: the mean, or the sum over `num_items_in_batch` when given (the reduction of
    `fixed_cross_entropy`, for a loss that is not a cross-entropy)."""
    if num_items_in_batch is None:
        return per_target_loss.mean()
    if torch.is_tensor(num_items_in_batch):
        num_items_in_batch = num_items_in_batch.to(per_target_loss.device)
    return per_target_loss.sum() / num_items_in_batch


def sample_items(
    shape: tuple[int, ...], num_special_tokens: int, vocab_size: int, sampler: str, device: torch.device
) -> torch.LongTensor:
    """Draw item ids in `[num_special_tokens, vocab_size)`.

    `"uniform"` draws every item alike; `"log_uniform"` draws rank `r` (0 = most popular item) with probability
    `log((r + 2) / (r + 1)) / log(num_items + 1)`, a Zipfian proxy of popularity, since the item tokenizer numbers
    items by descending popularity.
    """
    num_items = vocab_size - num_special_tokens
    if sampler == "uniform":
        return torch.randint(num_special_tokens, vocab_size, shape, device=device)
    uniform = torch.rand(shape, device=device)
    ranks = (torch.exp(uniform * math.log(num_items + 1)) - 1).long().clamp_(0, num_items - 1)
    return ranks + num_special_tokens


def sampling_log_prob(items: torch.LongTensor, num_special_tokens: int, vocab_size: int, sampler: str) -> torch.Tensor:
    """Log probability that one draw of `sample_items` returns `items`."""
    num_items = vocab_size - num_special_tokens
    if sampler == "uniform":
        return torch.full(items.shape, -math.log(num_items), device=items.device)
    ranks = (items - num_special_tokens).double()
    return (torch.log((ranks + 2) / (ranks + 1)) / math.log(num_items + 1)).log().float()


def full_softmax_loss(
    hidden: torch.Tensor,
    targets: torch.LongTensor,
    item_weight: torch.Tensor,
    num_special_tokens: int,
    num_items_in_batch: torch.Tensor | int | None = None,
    excluded_items: torch.BoolTensor | None = None,
    chunk_size: int | None = None,
) -> torch.Tensor:
    """Cross-entropy over every item (but `excluded_items`). `hidden`: `[num_targets, hidden]`, `targets`:
    `[num_targets]`. With `chunk_size` smaller than the catalog, the same loss and gradients come from
    [`ChunkedCrossEntropy`], which never holds the `[num_targets, num_items]` logits."""
    candidates = item_weight[num_special_tokens:]
    if chunk_size is not None and chunk_size < len(candidates):
        # The whole table, its special tokens excluded, rather than the `candidates` slice: the gradient of a slice
        # is copied into a second table-sized tensor. float32 and outside autocast, so that the backward's
        # recomputed scores are those of the forward.
        excluded = torch.zeros(len(item_weight), dtype=torch.bool, device=item_weight.device)
        if excluded_items is not None:
            excluded |= excluded_items
        excluded[:num_special_tokens] = True
        with torch.autocast(device_type=hidden.device.type, enabled=False):
            per_target = ChunkedCrossEntropy.apply(hidden.float(), item_weight.float(), targets, chunk_size, excluded)
        return average_over_targets(per_target, num_items_in_batch)
    excluded = None if excluded_items is None else excluded_items[num_special_tokens:]
    logits = hidden @ candidates.T
    if excluded is not None:
        logits = logits.masked_fill(excluded, float("-inf"))
    return fixed_cross_entropy(logits.float(), targets - num_special_tokens, num_items_in_batch)


def sampled_softmax_loss(
    hidden: torch.Tensor,
    targets: torch.LongTensor,
    item_weight: torch.Tensor,
    num_special_tokens: int,
    num_negatives: int,
    sampler: str,
    logq_correction: bool,
    temperature: float,
    num_items_in_batch: torch.Tensor | int | None = None,
    excluded_items: torch.BoolTensor | None = None,
) -> torch.Tensor:
    """Softmax over each target and `num_negatives` negatives shared by the batch.

    A negative that equals the target, or is one of `excluded_items`, is masked out. With `logq_correction`, the
    logit of each negative is lowered by the log of its expected count in the sample, so that the loss estimates the
    full softmax.
    """
    vocab_size = item_weight.shape[0]
    negatives = sample_items((num_negatives,), num_special_tokens, vocab_size, sampler, hidden.device)
    # One lookup for both: each indexing of the table makes its backward build a table-sized gradient.
    positive_rows, negative_rows = item_weight[torch.cat([targets, negatives])].split([len(targets), num_negatives])
    positive_logits = (hidden * positive_rows).sum(-1, keepdim=True)
    negative_logits = hidden @ negative_rows.T
    if logq_correction:
        expected_count = math.log(num_negatives) + sampling_log_prob(
            negatives, num_special_tokens, vocab_size, sampler
        )
        negative_logits = negative_logits - expected_count * temperature
    masked = negatives[None, :] == targets[:, None]
    if excluded_items is not None:
        masked = masked | excluded_items[negatives][None, :]
    negative_logits = negative_logits.masked_fill(masked, float("-inf"))
    logits = torch.cat([positive_logits, negative_logits], dim=-1).float() / temperature
    return fixed_cross_entropy(logits, torch.zeros_like(targets), num_items_in_batch)


def mixed_negatives_loss(
    hidden: torch.Tensor,
    targets: torch.LongTensor,
    item_weight: torch.Tensor,
    num_special_tokens: int,
    num_negatives: int,
    logq_correction: bool,
    temperature: float,
    num_items_in_batch: torch.Tensor | int | None = None,
    excluded_items: torch.BoolTensor | None = None,
) -> torch.Tensor:
    """Mixed negative sampling (Yang et al., 2020): softmax over the batch's distinct targets (in-batch negatives,
    drawn as often as items are popular) and `num_negatives` uniform draws shared by the batch (which reach the long
    tail that batches rarely hold). Each target is the positive among them; a uniform draw that is already a
    candidate (the batch's targets include every row's own), or one of `excluded_items`, is masked out. With
    `logq_correction`, each candidate's logit is lowered by the log of its expected count under the mixed sampling
    over the times it was drawn: for a target of the batch, (its count among the targets + `num_negatives /
    num_items`) / that count, close to 1 for popular items; for a uniform draw, `num_negatives / num_items`; so that
    the loss estimates the full softmax (tested against it on a Zipf batch)."""
    vocab_size = item_weight.shape[0]
    in_batch, counts = targets.unique(return_counts=True)
    uniform = sample_items((num_negatives,), num_special_tokens, vocab_size, "uniform", hidden.device)
    candidates = torch.cat([in_batch, uniform])
    logits = hidden @ item_weight[candidates].T
    if logq_correction:
        uniform_count = num_negatives / (vocab_size - num_special_tokens)
        drawn = torch.cat([counts.float(), torch.ones(num_negatives, device=counts.device)])
        expected = torch.cat([counts.float(), torch.zeros(num_negatives, device=counts.device)]) + uniform_count
        logits = logits - (expected / drawn).log() * temperature
    duplicates = torch.isin(uniform, in_batch)
    masked = torch.cat([torch.zeros(len(in_batch), dtype=torch.bool, device=hidden.device), duplicates])
    if excluded_items is not None:
        masked = masked | excluded_items[candidates]
    logits = logits.masked_fill(masked[None, :], float("-inf")).float() / temperature
    return fixed_cross_entropy(logits, torch.searchsorted(in_batch, targets), num_items_in_batch)


def binary_cross_entropy_loss(
    hidden_states: torch.Tensor,
    shift_labels: torch.LongTensor,
    input_ids: torch.LongTensor,
    item_weight: torch.Tensor,
    num_special_tokens: int,
    num_items_in_batch: torch.Tensor | int | None = None,
    excluded_items: torch.BoolTensor | None = None,
) -> torch.Tensor:
    """The original SASRec loss: each target against one negative the user never interacted with in this row.

    `hidden_states`, `shift_labels` (the targets of each position), `input_ids`: `[batch, length, ...]`. Negatives
    that fall on an item of the row (or on one of `excluded_items`) are drawn again a few times; the rare one left
    after that is kept (the row holds a tiny share of the catalog), but an excluded one adds no loss.
    """
    mask = shift_labels >= num_special_tokens
    seen = torch.cat([input_ids, shift_labels.clamp(min=0)], dim=1)
    shape, vocab_size, device = shift_labels.shape, item_weight.shape[0], shift_labels.device
    negatives = sample_items(shape, num_special_tokens, vocab_size, "uniform", device)
    for _ in range(BCE_RESAMPLE_ROUNDS):
        collides = (negatives[:, :, None] == seen[:, None, :]).any(-1)
        if excluded_items is not None:
            collides |= excluded_items[negatives]
        if not collides.any():
            break
        fresh = sample_items(shape, num_special_tokens, vocab_size, "uniform", device)
        negatives = torch.where(collides, fresh, negatives)
    hidden = hidden_states[mask]
    positive_rows, negative_rows = item_weight[torch.cat([shift_labels[mask], negatives[mask]])].chunk(2)
    positive_logits = (hidden * positive_rows).sum(-1).float()
    negative_logits = (hidden * negative_rows).sum(-1).float()
    negative_loss = F.binary_cross_entropy_with_logits(
        negative_logits, torch.zeros_like(negative_logits), reduction="none"
    )
    if excluded_items is not None:  # an excluded item left after the redraws is no negative at all
        negative_loss = negative_loss.masked_fill(excluded_items[negatives[mask]], 0.0)
    per_target_loss = (
        F.binary_cross_entropy_with_logits(positive_logits, torch.ones_like(positive_logits), reduction="none")
        + negative_loss
    )
    return average_over_targets(per_target_loss, num_items_in_batch)


def in_batch_softmax_loss(
    hidden: torch.Tensor,
    targets: torch.LongTensor,
    item_weight: torch.Tensor,
    temperature: float,
    num_items_in_batch: torch.Tensor | int | None = None,
) -> torch.Tensor:
    """InfoNCE: each target against the targets of every other position in the batch.

    Another position with the same target item is not a negative and is masked out.
    """
    candidates = item_weight[targets]
    logits = (hidden @ candidates.T).float() / temperature
    same_item = targets[:, None] == targets[None, :]
    same_item.fill_diagonal_(False)
    logits = logits.masked_fill(same_item, float("-inf"))
    return fixed_cross_entropy(logits, torch.arange(len(targets), device=targets.device), num_items_in_batch)


def unlikelihood_loss(
    hidden: torch.Tensor,
    disliked_ids: torch.LongTensor,
    item_weight: torch.Tensor,
    num_special_tokens: int,
    num_items_in_batch: torch.Tensor | int | None = None,
    excluded_items: torch.BoolTensor | None = None,
) -> torch.Tensor:
    """Unlikelihood of disliked items (Welleck et al., 2020): at each target position, the mean over the user's
    disliked items `d` of `-log(1 - p(d | history))`, `p` the full softmax over items whatever `loss_type` is (it costs
    a second `[num_targets, num_items]` product), averaged over targets as the next-item loss is.

    Args:
        hidden: `[num_targets, hidden]`, the states of the positions that have a target.
        disliked_ids: `[num_targets, num_disliked]`, the disliked items of each position's user, padded with ids below
            `num_special_tokens` (a user without one adds 0).
        item_weight: `[vocab_size, hidden]`.
        excluded_items: `[vocab_size]` bool, items out of the softmax (see the module docstring).
    """
    logits = (hidden @ item_weight[num_special_tokens:].T).float()
    if excluded_items is not None:
        logits = logits.masked_fill(excluded_items[num_special_tokens:], float("-inf"))
    log_probs = logits.log_softmax(-1)
    disliked = disliked_ids >= num_special_tokens
    chosen = log_probs.gather(1, (disliked_ids - num_special_tokens).clamp(min=0))
    per_item = -torch.log1p(-chosen.exp().clamp(max=1 - 1e-6)) * disliked
    per_target = per_item.sum(-1) / disliked.sum(-1).clamp(min=1)
    return average_over_targets(per_target, num_items_in_batch)


def next_item_loss(
    hidden_states: torch.Tensor,
    shift_labels: torch.LongTensor,
    item_weight: torch.Tensor,
    config,
    input_ids: torch.LongTensor | None = None,
    num_items_in_batch: torch.Tensor | int | None = None,
    excluded_items: torch.BoolTensor | None = None,
) -> torch.Tensor:
    """The loss named by `config.loss_type`.

    Args:
        hidden_states: `[batch, length, hidden]`, the final hidden states.
        shift_labels: `[batch, length]`, the targets of each position ([`next_item_targets`]): `shift_labels[b, t]`
            is the item that follows position `t`, `-100` or a special id where there is none.
        item_weight: `[vocab_size, hidden]`, the output item embeddings.
        config: the model's [`SASRecConfig`].
        input_ids: `[batch, length]`, needed by `"bce"` to keep negatives out of the user's row.
        num_items_in_batch: the number of targets the loss is averaged over (`Trainer` passes those of the whole
            optimizer step, all accumulated batches and processes); the batch's own targets when `None`.
        excluded_items: `[vocab_size]` bool, items that are no candidates (see the module docstring).

    Returns:
        The scalar loss, 0 (with a gradient path) when the batch has no target.
    """
    num_special = config.num_special_tokens
    if config.loss_type == "bce":
        if input_ids is None:
            raise ValueError("loss_type='bce' needs input_ids to draw negatives outside the user's history.")
        if not (shift_labels >= num_special).any():
            return hidden_states.sum() * 0.0
        return binary_cross_entropy_loss(
            hidden_states, shift_labels, input_ids, item_weight, num_special, num_items_in_batch, excluded_items
        )
    hidden, targets, _ = select_targets(hidden_states, shift_labels, num_special)
    if len(targets) == 0:
        return hidden_states.sum() * 0.0
    if config.loss_type == "ce":
        return full_softmax_loss(
            hidden, targets, item_weight, num_special, num_items_in_batch, excluded_items, config.ce_chunk_size
        )
    if config.loss_type == "sampled_softmax":
        return sampled_softmax_loss(
            hidden,
            targets,
            item_weight,
            num_special,
            config.num_negatives,
            config.negative_sampler,
            config.logq_correction,
            config.temperature,
            num_items_in_batch,
            excluded_items,
        )
    if config.loss_type == "mixed_negatives":
        return mixed_negatives_loss(
            hidden,
            targets,
            item_weight,
            num_special,
            config.num_negatives,
            config.logq_correction,
            config.temperature,
            num_items_in_batch,
            excluded_items,
        )
    return in_batch_softmax_loss(hidden, targets, item_weight, config.temperature, num_items_in_batch)
