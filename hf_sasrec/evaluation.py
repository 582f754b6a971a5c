"""Leave-one-out next-item evaluation: HR@K, NDCG@K, MRR and catalog coverage, under two protocols.

Every row of the evaluated split is a user's history followed by the target item (its last element). The model
scores every item from the state at the history's last position (left padding and `logits_to_keep=1`), and the
target is ranked

- `full`: against every item of the catalog (ids `>= num_special_tokens`); with `exclude_history` the items of the
  user's history (the whole row but the target, not only the part that fits in `max_length`) are removed from the
  ranking, the target never is;
- `sampled`: against `num_sampled_negatives` items drawn uniformly, with replacement, from the items the user never
  interacted with (neither history nor target), as in the SASRec paper;
  seeded per user, so reproducible whatever the batch size.

With `cold_items` (the items a model was trained without, `cold_items.json` of a data folder prepared with
`--cold-items`), the metrics are also reported over the users whose target is a cold item (`{protocol}_cold/...`)
and over the others (`{protocol}_warm/...`), ranked exactly as for all users.

Ties are counted pessimistically: the rank of the target is the number of other candidates scoring at least as high,
so a model that gives every item the same score ranks every target last. Users are scored in chunks of `batch_size`:
at most one `[batch_size, vocab_size]` score matrix exists at a time.
"""

import math
from collections.abc import Collection, Sequence

import torch
from accelerate.utils import send_to_device

from .data_collator import USER_FEATURES, NextItemCollator, model_uses_timestamps

PROTOCOLS = ("full", "sampled")
COVERAGE_K = 10


def rows_of(dataset, start: int, stop: int) -> list[dict]:
    """Rows `start:stop` of a `datasets.Dataset` (columnar slices) or of a sequence of dicts, as a list of dicts."""
    chunk = dataset[start:stop]
    if isinstance(chunk, dict):
        columns = [name for name in ("item_ids", "timestamps", "user_id", USER_FEATURES) if name in chunk]
        return [
            dict(zip(columns, values, strict=True)) for values in zip(*(chunk[name] for name in columns), strict=True)
        ]
    return list(chunk)


def interaction_mask(rows: Sequence[dict], vocab_size: int) -> torch.BoolTensor:
    """`[batch, vocab_size]`, True at every item of a row (history and target)."""
    mask = torch.zeros(len(rows), vocab_size, dtype=torch.bool)
    for index, row in enumerate(rows):
        mask[index, torch.as_tensor(row["item_ids"], dtype=torch.long)] = True
    return mask


def next_item_scores(model: torch.nn.Module, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    """Scores of every vocabulary entry for the item following each history: `[batch, vocab_size]`, float32."""
    device = next(model.parameters()).device
    inputs = send_to_device({name: value for name, value in batch.items() if name != "target_ids"}, device)
    return model(**inputs, logits_to_keep=1).logits[:, -1].float().cpu()


def full_ranking(
    scores: torch.Tensor, targets: torch.LongTensor, excluded: torch.BoolTensor
) -> tuple[torch.LongTensor, torch.LongTensor]:
    """Rank each target among the items not `excluded`.

    `scores` `[batch, vocab]`, `targets` `[batch]`, `excluded` `[batch, vocab]` (True for special tokens and, when
    the history is excluded, history items; never the target). Returns the 0-based pessimistic ranks `[batch]` and
    the top-`COVERAGE_K` item ids `[batch, COVERAGE_K]`.
    """
    scores = scores.masked_fill(excluded, -math.inf)
    target_scores = scores.gather(1, targets[:, None])
    ranks = (scores >= target_scores).sum(1) - 1
    top_items = scores.topk(min(COVERAGE_K, scores.shape[1]), dim=1).indices
    return ranks, top_items


def sample_negatives(
    interacted: torch.BoolTensor, num_special_tokens: int, num_samples: int, seed: int, first_user: int = 0
) -> torch.LongTensor:
    """`num_samples` item ids per row drawn uniformly, with replacement, among the items a row never interacted with.

    `interacted`: `[batch, vocab]`, row `i` being user number `first_user + i` of the split. Each user's draws come
    from a generator seeded with `(seed, user number)`, so they do not depend on how users are chunked. Draws that hit
    an interacted item are redrawn; a user who interacted with every item is an error. Returns `[batch, num_samples]`.
    """
    vocab_size = interacted.shape[1]
    full = interacted[:, num_special_tokens:].all(1)
    if full.any():
        raise ValueError(f"Rows {full.nonzero().flatten().tolist()} interacted with every item: nothing to sample.")
    samples = torch.empty(len(interacted), num_samples, dtype=torch.long)
    generator = torch.Generator()
    for row, user_interacted in enumerate(interacted):
        generator.manual_seed(hash((seed, first_user + row)) % 2**63)
        draws = torch.randint(num_special_tokens, vocab_size, (num_samples,), generator=generator)
        hits = user_interacted[draws]
        while hits.any():
            draws[hits] = torch.randint(num_special_tokens, vocab_size, (int(hits.sum()),), generator=generator)
            hits = user_interacted[draws]
        samples[row] = draws
    return samples


def sampled_ranking(
    scores: torch.Tensor, targets: torch.LongTensor, negatives: torch.LongTensor
) -> tuple[torch.LongTensor, torch.LongTensor]:
    """Rank each target among itself and its `negatives` `[batch, num_samples]`.

    Returns the 0-based pessimistic ranks `[batch]` and the top-`COVERAGE_K` candidate item ids `[batch, k]`.
    """
    candidates = torch.cat([targets[:, None], negatives], dim=1)
    candidate_scores = scores.gather(1, candidates)
    ranks = (candidate_scores[:, 1:] >= candidate_scores[:, :1]).sum(1)
    top = candidate_scores.topk(min(COVERAGE_K, candidates.shape[1]), dim=1).indices
    return ranks, candidates.gather(1, top)


def ranking_metrics(ranks: torch.LongTensor, k_values: Sequence[int], protocol: str) -> dict[str, float]:
    """HR@K, NDCG@K and MRR from 0-based ranks `[num_users]`, keyed `"{protocol}/hr@10"` etc."""
    ranks = ranks.double()
    metrics = {}
    for k in k_values:
        hit = (ranks < k).double()
        metrics[f"{protocol}/hr@{k}"] = hit.mean().item()
        metrics[f"{protocol}/ndcg@{k}"] = (hit / torch.log2(ranks + 2)).mean().item()
    metrics[f"{protocol}/mrr"] = (1 / (ranks + 1)).mean().item()
    return metrics


@torch.no_grad()
def evaluate_next_item(
    model: torch.nn.Module,
    dataset,
    *,
    protocol: str = "full",
    k_values: Sequence[int] = (1, 5, 10, 20),
    exclude_history: bool = True,
    num_sampled_negatives: int = 100,
    batch_size: int = 512,
    max_length: int | None = None,
    seed: int = 0,
    cold_items: Collection[int] | None = None,
) -> dict[str, float]:
    """Leave-one-out next-item metrics of `model` on `dataset` (see the module docstring for the protocols).

    Args:
        model: a `*ForCausalLM` of this package (its `config` gives `vocab_size` and `num_special_tokens`).
        dataset: a split whose rows have `item_ids` (history then target; at least two items) and, for models that
            take them, `timestamps`: a `datasets.Dataset` or a sequence of dicts.
        protocol: `"full"` or `"sampled"`.
        k_values: cut-offs of HR@K and NDCG@K.
        exclude_history: `full` protocol only: remove the user's history items from the ranking.
        num_sampled_negatives: `sampled` protocol only: negatives per user.
        batch_size: users scored at once; bounds memory to one `[batch_size, vocab_size]` score matrix.
        max_length: history items fed to the model (the last ones); default `config.max_position_embeddings`.
        seed: seed of the negative sampler.
        cold_items: token ids of items held out of training; adds the metrics of cold-target and warm-target users.

    Returns:
        `{"{protocol}/hr@K", "{protocol}/ndcg@K" for K in k_values, "{protocol}/mrr", "{protocol}/coverage@10",
        "{protocol}/num_users"}`, and with `cold_items` the same ranking metrics and `num_users` under
        `"{protocol}_cold/..."` and `"{protocol}_warm/..."` (only `num_users`, 0, for a group without users);
        coverage@10 is the share of the catalog that appears in at least one user's top 10 (of the catalog for
        `full`, of the user's candidates for `sampled`).
    """
    if protocol not in PROTOCOLS:
        raise ValueError(f"Unknown protocol {protocol!r}; expected one of {PROTOCOLS}.")
    if len(dataset) == 0:
        raise ValueError("Cannot evaluate on an empty dataset.")
    config = model.config
    vocab_size, num_special = config.vocab_size, config.num_special_tokens
    collator = NextItemCollator(
        max_length=max_length or config.max_position_embeddings,
        pad_token_id=config.pad_token_id,
        for_training=False,
        with_timestamps=model_uses_timestamps(model),
    )
    was_training = model.training
    model.eval()
    all_ranks, all_targets, recommended = [], [], torch.zeros(vocab_size, dtype=torch.bool)
    for start in range(0, len(dataset), batch_size):
        rows = rows_of(dataset, start, start + batch_size)
        batch = collator(rows)
        targets = batch["target_ids"]
        if (targets < num_special).any() or (targets >= vocab_size).any():
            raise ValueError(f"Targets must be item ids in [{num_special}, {vocab_size}); got {targets.tolist()}.")
        scores = next_item_scores(model, batch)
        interacted = interaction_mask(rows, vocab_size)
        if protocol == "full":
            excluded = interacted if exclude_history else torch.zeros_like(interacted)
            excluded[:, :num_special] = True
            excluded[torch.arange(len(rows)), targets] = False
            ranks, top_items = full_ranking(scores, targets, excluded)
        else:
            negatives = sample_negatives(interacted, num_special, num_sampled_negatives, seed, first_user=start)
            ranks, top_items = sampled_ranking(scores, targets, negatives)
        all_ranks.append(ranks)
        all_targets.append(targets)
        recommended[top_items.flatten()] = True
    model.train(was_training)
    ranks = torch.cat(all_ranks)
    metrics = ranking_metrics(ranks, k_values, protocol)
    metrics[f"{protocol}/coverage@{COVERAGE_K}"] = recommended[num_special:].sum().item() / (vocab_size - num_special)
    metrics[f"{protocol}/num_users"] = float(len(dataset))
    if cold_items is not None:
        cold = torch.isin(torch.cat(all_targets), torch.as_tensor(list(cold_items), dtype=torch.long))
        for group, members in ((f"{protocol}_cold", cold), (f"{protocol}_warm", ~cold)):
            if members.any():
                metrics.update(ranking_metrics(ranks[members], k_values, group))
            metrics[f"{group}/num_users"] = float(members.sum())
    return metrics


def metrics_table(metrics: dict[str, float], prefix: str = "") -> str:
    """A markdown table of the metrics named `"{prefix}{protocol}/{metric}"`: one row per protocol."""
    rows = {}
    for name, value in metrics.items():
        protocol, slash, metric = name.removeprefix(prefix).partition("/")
        if name.startswith(prefix) and slash and protocol.partition("_")[0] in PROTOCOLS:
            rows.setdefault(protocol, {})[metric] = value
    if not rows:
        return ""
    columns = list(dict.fromkeys(metric for values in rows.values() for metric in values if metric != "num_users"))
    lines = [
        "| protocol | users | " + " | ".join(columns) + " |",
        "| --- " * (len(columns) + 2) + "|",
    ]
    for protocol, values in rows.items():
        cells = [f"{values[metric]:.4f}" if metric in values else "" for metric in columns]
        lines.append(f"| {prefix}{protocol} | {int(values.get('num_users', 0))} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


__all__ = ["PROTOCOLS", "evaluate_next_item", "metrics_table"]
