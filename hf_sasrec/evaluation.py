"""Leave-one-out next-item evaluation: HR@K, NDCG@K, MRR, catalog coverage and beyond-accuracy metrics, under two
protocols, each with a 95% confidence interval.

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

Beyond accuracy (`full` protocol, over each user's top 10, when their inputs are given):
- `popularity_percentile@10` (`item_counts`, the training-split count of every token id): the mean popularity
  percentile of the recommended items (0 the least popular item, 1 the most popular; ties share their mean rank), a
  novelty measure: lower is more novel;
- `diversity@10` (`item_categories`, e.g. a movie's genres): intra-list diversity, the mean over the pairs of
  recommended items of one minus the Jaccard similarity of their category sets;
- `disliked@10` and `disliked_count@10` (`disliked_items`, held-out disliked items per user id): the share of the
  users with at least one held-out dislike who get one of them in their top 10, and the mean number they get;
  `disliked_users` counts those users.

Intervals: every metric that is a mean over users also reports `{metric}_ci95`, the half-width of its 95% confidence
interval under the normal approximation over users (1.96 standard errors: the users are the independent units).
Coverage is a property of the whole set of lists, not a mean over users: its `coverage@10_ci95` is 1.96 times its
bootstrap standard error over users (`COVERAGE_RESAMPLES` resamples of the users with replacement, seeded), around
the observed coverage ([`coverage_interval`]). It is an approximation: a resample repeats some users and leaves
others out, so its coverage is lower than the observed one (hence the interval sits around the observed value, not at
the resamples' percentiles), and each user's list is taken as fixed, which is not the variability of a re-ranker
whose lists depend on the users ranked before (`ExposurePenalty`). [`evaluate_users`] returns the per-user values
and lists, so that two models evaluated on the same users compare by their paired difference
([`paired_difference`]; for coverage, `coverage_interval(lists, baseline=...)` on the same resamples), whose
interval is far narrower than the two intervals side by side.

Ties are counted pessimistically: the rank of the target is the number of other candidates scoring at least as high,
so a model that gives every item the same score ranks every target last. Users are scored in chunks of `batch_size`:
at most one `[batch_size, vocab_size]` score matrix exists at a time.
"""

import math
from collections.abc import Callable, Collection, Mapping, Sequence
from itertools import chain

import torch
from accelerate.utils import send_to_device

from data_preprocess.feature_schema import FIRST_VALUE_ID

from .data_collator import USER_FEATURES, NextItemCollator, model_uses_timestamps

PROTOCOLS = ("full", "sampled")
COVERAGE_K = 10
K_VALUES = (1, 5, 10, 20)
Z_95 = 1.959963984540054  # the standard normal quantile of 0.975
CI_SUFFIX = "_ci95"
COVERAGE_RESAMPLES = 200
# bootstrap of coverage: resamples drawn at once, so that a `[resamples, vocab_size]` block and the weights of the
# list entries `[resamples, num_users * k]` hold about this many numbers (one resample a block at least).
COVERAGE_BLOCK = 20_000_000


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
    lengths = torch.tensor([len(row["item_ids"]) for row in rows], dtype=torch.long)
    items = torch.tensor(list(chain.from_iterable(row["item_ids"] for row in rows)), dtype=torch.long)
    mask = torch.zeros(len(rows), vocab_size, dtype=torch.bool)
    mask[torch.arange(len(rows)).repeat_interleave(lengths), items] = True
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


def ranking_values(ranks: torch.LongTensor, k_values: Sequence[int]) -> dict[str, torch.Tensor]:
    """Per-user HR@K, NDCG@K and reciprocal rank from 0-based ranks `[num_users]`: `{"hr@10": [num_users], ...}`."""
    ranks = ranks.double()
    values = {}
    for k in k_values:
        hit = (ranks < k).double()
        values[f"hr@{k}"] = hit
        values[f"ndcg@{k}"] = hit / torch.log2(ranks + 2)
    values["mrr"] = 1 / (ranks + 1)
    return values


def mean_with_interval(values: torch.Tensor) -> tuple[float, float]:
    """The mean of per-user `values` `[num_users]` (NaN entries, users without a value, left out) and the half-width
    of its 95% confidence interval (normal approximation: 1.96 sample standard deviations over the square root of
    the number of users; NaN for fewer than two users)."""
    values = values[~values.isnan()].double()
    if len(values) == 0:
        return math.nan, math.nan
    if len(values) < 2:
        return values.mean().item(), math.nan
    return values.mean().item(), Z_95 * values.std().item() / math.sqrt(len(values))


def paired_difference(first: torch.Tensor, second: torch.Tensor) -> tuple[float, float]:
    """`first - second` for per-user values of two models on the same users (`[num_users]` each, same order): the
    mean difference and the half-width of its 95% interval (see [`mean_with_interval`]). Users without a value in
    either are left out. The difference of a model with itself is 0 with an interval of width 0."""
    if first.shape != second.shape:
        raise ValueError(
            f"Paired values must cover the same users: shapes {tuple(first.shape)} and {tuple(second.shape)}."
        )
    return mean_with_interval(first.double() - second.double())


def coverage(lists: torch.LongTensor, vocab_size: int, num_special_tokens: int) -> float:
    """The share of the catalog (the ids from `num_special_tokens` to `vocab_size`) in at least one of the users'
    `lists` `[num_users, k]`."""
    recommended = torch.zeros(vocab_size, dtype=torch.bool)
    recommended[lists.flatten()] = True
    return recommended[num_special_tokens:].sum().item() / (vocab_size - num_special_tokens)


def coverage_interval(
    lists: torch.LongTensor,
    vocab_size: int,
    num_special_tokens: int,
    baseline: torch.LongTensor | None = None,
    resamples: int = COVERAGE_RESAMPLES,
    seed: int = 0,
) -> tuple[float, float]:
    """The coverage of `lists` `[num_users, k]` (see [`coverage`]), or with `baseline` (the other model's lists of
    the same users, same shape) the difference `coverage(lists) - coverage(baseline)`, and the half-width of its 95%
    interval: 1.96 standard deviations of the statistic over `resamples` bootstrap resamples of the users (the same
    resamples for both lists; drawn with `seed`). A model compared with itself gets 0 with an interval of width 0."""
    groups = [lists] if baseline is None else [lists, baseline]
    if resamples < 2:
        raise ValueError(f"coverage_interval needs at least 2 resamples, got {resamples}.")
    if baseline is not None and baseline.shape != lists.shape:
        raise ValueError(
            f"Paired lists must cover the same users: shapes {tuple(lists.shape)}, {tuple(baseline.shape)}."
        )
    observed = [coverage(group, vocab_size, num_special_tokens) for group in groups]
    value = observed[0] - (observed[1] if baseline is not None else 0.0)
    num_users = len(lists)
    if num_users < 2:
        return value, math.nan
    generator = torch.Generator().manual_seed(seed)
    resampled = []
    block = max(1, COVERAGE_BLOCK // max(vocab_size, lists.numel()))
    for start in range(0, resamples, block):
        size = min(block, resamples - start)
        drawn = torch.randint(num_users, (size, num_users), generator=generator)
        weights = torch.zeros(size, num_users).scatter_add_(1, drawn, torch.ones(size, num_users))  # [size, users]
        covered = []
        for group in groups:
            # how often each item is listed in a resample: [size, vocab_size]
            listed = torch.zeros(size, vocab_size).index_add_(
                1, group.flatten(), weights.repeat_interleave(group.shape[1], 1)
            )
            covered.append((listed[:, num_special_tokens:] > 0).sum(1).double() / (vocab_size - num_special_tokens))
        resampled.append(covered[0] - (covered[1] if baseline is not None else 0.0))
    return value, Z_95 * torch.cat(resampled).std().item()


def summarize(values: Mapping[str, torch.Tensor], group: str) -> dict[str, float]:
    """`{"{group}/{name}": mean, "{group}/{name}_ci95": half-width}` of per-user `values`."""
    metrics = {}
    for name, per_user in values.items():
        mean, half_width = mean_with_interval(per_user)
        metrics[f"{group}/{name}"] = mean
        metrics[f"{group}/{name}{CI_SUFFIX}"] = half_width
    return metrics


def popularity_percentiles(item_counts: torch.Tensor, num_special_tokens: int) -> torch.Tensor:
    """`[vocab_size]`: each item's popularity percentile among the items (0 least, 1 most popular, ties sharing
    their mean rank); special tokens get NaN."""
    counts = item_counts[num_special_tokens:].double()
    order = counts.argsort()
    ranks = torch.empty_like(counts)
    ranks[order] = torch.arange(len(counts), dtype=torch.double)
    unique, inverse = counts.unique(return_inverse=True)
    mean_rank = torch.zeros(len(unique), dtype=torch.double).index_add_(0, inverse, ranks)
    mean_rank /= torch.bincount(inverse, minlength=len(unique)).double()
    percentiles = torch.full((len(item_counts),), math.nan, dtype=torch.double)
    percentiles[num_special_tokens:] = mean_rank[inverse] / max(len(counts) - 1, 1)
    return percentiles


def list_diversity(top_items: torch.LongTensor, item_categories: torch.LongTensor) -> torch.Tensor:
    """Intra-list diversity `[batch]` of the lists `top_items` `[batch, k]`: the mean over pairs of recommended items
    of `1 - |A ∩ B| / |A ∪ B|` for their category sets; `item_categories` `[vocab_size, max_values]` holds each
    item's category ids as the data step writes them: ids below `FIRST_VALUE_ID` (padding, missing, unknown) are no
    category, so an item without a known category shares nothing with any item."""
    categories = item_categories[top_items]  # [batch, k, m]
    num_categories = int(item_categories.max()) + 1
    sets = torch.zeros(*top_items.shape, num_categories, dtype=torch.double)
    sets.scatter_(2, categories, 1.0)
    sets[..., :FIRST_VALUE_ID] = 0.0
    shared = sets @ sets.transpose(1, 2)  # [batch, k, k]
    sizes = sets.sum(-1)
    union = sizes[:, :, None] + sizes[:, None, :] - shared
    similarity = shared / union.clamp(min=1)  # 0 where neither item has a category
    k = top_items.shape[1]
    other = ~torch.eye(k, dtype=torch.bool)
    return (1 - similarity)[:, other].sum(1) / max(k * (k - 1), 1)


def disliked_hits(
    top_items: torch.LongTensor, rows: Sequence[dict], disliked_items: Mapping[str, Sequence[int]]
) -> torch.Tensor:
    """`[batch]`: how many of each row's user's held-out disliked items are in its list `top_items` `[batch, k]`;
    NaN for a user without a held-out dislike (or a row without `user_id`)."""
    hits = torch.full((len(rows),), math.nan, dtype=torch.double)
    for index, row in enumerate(rows):
        disliked = disliked_items.get(str(row.get("user_id")), ())
        if disliked:
            hits[index] = torch.isin(top_items[index], torch.as_tensor(list(disliked))).sum().double()
    return hits


def user_sample(dataset, max_users: int | None, seed: int):
    """`dataset`, or a fixed random sample of `max_users` of its rows (in their order) when it has more."""
    if max_users is None or len(dataset) <= max_users:
        return dataset
    if max_users < 1:
        raise ValueError(f"max_users must be positive, got {max_users}.")
    chosen = sorted(torch.randperm(len(dataset), generator=torch.Generator().manual_seed(seed))[:max_users].tolist())
    return dataset.select(chosen) if hasattr(dataset, "select") else [dataset[index] for index in chosen]


@torch.no_grad()
def evaluate_users(
    model: torch.nn.Module,
    dataset,
    *,
    protocol: str = "full",
    k_values: Sequence[int] = K_VALUES,
    exclude_history: bool = True,
    num_sampled_negatives: int = 100,
    batch_size: int = 512,
    max_length: int | None = None,
    seed: int = 0,
    item_counts: torch.Tensor | None = None,
    item_categories: torch.LongTensor | None = None,
    disliked_items: Mapping[str, Sequence[int]] | None = None,
    rerank: Callable[[torch.Tensor, Sequence[dict]], torch.Tensor] | None = None,
    max_users: int | None = None,
) -> tuple[dict[str, torch.Tensor], torch.LongTensor, torch.LongTensor]:
    """Rank every user of `dataset` (see the module docstring for the protocols) and return the per-user values
    behind [`evaluate_next_item`].

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
        item_counts: `[vocab_size]`, each token id's count in the training split; adds `popularity_percentile@10`.
        item_categories: `[vocab_size, max_values]` category ids of each item, 0-padded; adds `diversity@10`.
        disliked_items: user id -> held-out disliked token ids (rows need `user_id`); adds `disliked@10`,
            `disliked_count@10` and `disliked_users`.
        rerank: adjusts each batch's scores `[batch, vocab_size]` given its rows before ranking (see
            `hf_sasrec.reranking`); under `full`, the excluded items (special tokens, and the history with
            `exclude_history`) come to it at `-inf`, so that the top of each row is the list the user gets.
        max_users: evaluate a fixed random sample of this many users (drawn with `seed`, the same in every call)
            instead of all of them, when the split has more.

    Returns:
        `({metric: [num_users]}, targets [num_users], lists [num_users, 10])`: the values in the order of `dataset`
        (or of the sample; NaN where a user has none, e.g. `disliked@10` for a user without a held-out dislike), and
        each user's top 10 (item ids; of its candidates under `sampled`), whose [`coverage`] is coverage@10.
    """
    if protocol not in PROTOCOLS:
        raise ValueError(f"Unknown protocol {protocol!r}; expected one of {PROTOCOLS}.")
    if len(dataset) == 0:
        raise ValueError("Cannot evaluate on an empty dataset.")
    dataset = user_sample(dataset, max_users, seed)
    config = model.config
    vocab_size, num_special = config.vocab_size, config.num_special_tokens
    collator = NextItemCollator(
        max_length=max_length or config.max_position_embeddings,
        pad_token_id=config.pad_token_id,
        for_training=False,
        with_timestamps=model_uses_timestamps(model),
    )
    beyond_accuracy = protocol == "full"
    percentiles = None
    if beyond_accuracy and item_counts is not None:
        percentiles = popularity_percentiles(torch.as_tensor(item_counts)[:vocab_size], num_special)
    was_training = model.training
    model.eval()
    ranks, targets, lists, extra = [], [], [], {}
    for start in range(0, len(dataset), batch_size):
        rows = rows_of(dataset, start, start + batch_size)
        batch = collator(rows)
        batch_targets = batch["target_ids"]
        if (batch_targets < num_special).any() or (batch_targets >= vocab_size).any():
            raise ValueError(
                f"Targets must be item ids in [{num_special}, {vocab_size}); got {batch_targets.tolist()}."
            )
        scores = next_item_scores(model, batch)
        interacted = interaction_mask(rows, vocab_size)
        if protocol == "full":
            excluded = interacted if exclude_history else torch.zeros_like(interacted)
            excluded[:, :num_special] = True
            excluded[torch.arange(len(rows)), batch_targets] = False
            if rerank is not None:  # it sees the excluded items at -inf, so it knows each user's real list
                scores = rerank(scores.masked_fill(excluded, -math.inf), rows)
            batch_ranks, top_items = full_ranking(scores, batch_targets, excluded)
        else:
            if rerank is not None:
                scores = rerank(scores, rows)
            negatives = sample_negatives(interacted, num_special, num_sampled_negatives, seed, first_user=start)
            batch_ranks, top_items = sampled_ranking(scores, batch_targets, negatives)
        ranks.append(batch_ranks)
        targets.append(batch_targets)
        lists.append(top_items)
        if percentiles is not None:
            extra.setdefault(f"popularity_percentile@{COVERAGE_K}", []).append(percentiles[top_items].mean(1))
        if beyond_accuracy and item_categories is not None:
            extra.setdefault(f"diversity@{COVERAGE_K}", []).append(list_diversity(top_items, item_categories))
        if beyond_accuracy and disliked_items is not None:
            hits = disliked_hits(top_items, rows, disliked_items)
            extra.setdefault(f"disliked@{COVERAGE_K}", []).append(
                (hits > 0).double().masked_fill(hits.isnan(), math.nan)
            )
            extra.setdefault(f"disliked_count@{COVERAGE_K}", []).append(hits)
    model.train(was_training)
    values = ranking_values(torch.cat(ranks), k_values)
    values.update({name: torch.cat(parts) for name, parts in extra.items()})
    return values, torch.cat(targets), torch.cat(lists)


def evaluate_next_item(
    model: torch.nn.Module,
    dataset,
    *,
    protocol: str = "full",
    cold_items: Collection[int] | None = None,
    **options,
) -> dict[str, float]:
    """Leave-one-out next-item metrics of `model` on `dataset`, each mean over users with its 95% interval.

    Args:
        model, dataset, protocol, options: those of [`evaluate_users`] (`k_values`, `exclude_history`,
            `num_sampled_negatives`, `batch_size`, `max_length`, `seed`, `item_counts`, `item_categories`,
            `disliked_items`, `rerank`, `max_users`).
        cold_items: token ids of items held out of training; adds the metrics of cold-target and warm-target users.

    Returns:
        `{"{protocol}/hr@K", "{protocol}/ndcg@K" for K in k_values, "{protocol}/mrr", "{protocol}/coverage@10",
        "{protocol}/num_users"}` (with `max_users`, the users evaluated, and `"{protocol}/users_sampled_from"` the
        split's), the beyond-accuracy metrics whose inputs are given (with `disliked_users`),
        `"..._ci95"` beside every mean over users, and with `cold_items` the same ranking metrics and `num_users`
        under `"{protocol}_cold/..."` and `"{protocol}_warm/..."` (only `num_users`, 0, for a group without users);
        coverage@10 is the share of the catalog that appears in at least one user's top 10 (of the catalog for
        `full`, of the user's candidates for `sampled`), with its bootstrap interval ([`coverage_interval`]).
    """
    values, targets, lists = evaluate_users(model, dataset, protocol=protocol, **options)
    metrics = summarize(values, protocol)
    name = f"{protocol}/coverage@{COVERAGE_K}"
    metrics[name], metrics[name + CI_SUFFIX] = coverage_interval(
        lists, model.config.vocab_size, model.config.num_special_tokens
    )
    metrics[f"{protocol}/num_users"] = float(len(targets))
    if len(targets) < len(dataset):
        metrics[f"{protocol}/users_sampled_from"] = float(len(dataset))
    if f"disliked@{COVERAGE_K}" in values:
        metrics[f"{protocol}/disliked_users"] = float((~values[f"disliked@{COVERAGE_K}"].isnan()).sum())
    if cold_items is not None:
        cold = torch.isin(targets, torch.as_tensor(list(cold_items), dtype=torch.long))
        ranking = ranking_values(torch.zeros(0, dtype=torch.long), options.get("k_values", K_VALUES)).keys()
        for group, members in ((f"{protocol}_cold", cold), (f"{protocol}_warm", ~cold)):
            if members.any():
                metrics.update(summarize({name: values[name][members] for name in ranking}, group))
            metrics[f"{group}/num_users"] = float(members.sum())
    return metrics


def format_cell(values: dict[str, float], metric: str) -> str:
    """`metric`'s value, with ` ± ` its interval's half-width when known; empty when absent."""
    if metric not in values:
        return ""
    half_width = values.get(metric + CI_SUFFIX, math.nan)
    if metric.endswith("_users") or metric == "users_sampled_from":
        return f"{values[metric]:.0f}"
    return f"{values[metric]:.4f}" + ("" if math.isnan(half_width) else f" ± {half_width:.4f}")


def metrics_table(metrics: dict[str, float], prefix: str = "") -> str:
    """A markdown table of the metrics named `"{prefix}{protocol}/{metric}"`: one row per protocol, each mean over
    users followed by the half-width of its 95% interval (`0.0850 ± 0.0110`) where the metrics have it."""
    rows = {}
    for name, value in metrics.items():
        protocol, slash, metric = name.removeprefix(prefix).partition("/")
        if name.startswith(prefix) and slash and protocol.partition("_")[0] in PROTOCOLS:
            rows.setdefault(protocol, {})[metric] = value
    if not rows:
        return ""
    columns = list(
        dict.fromkeys(
            metric
            for values in rows.values()
            for metric in values
            if metric != "num_users" and not metric.endswith(CI_SUFFIX)
        )
    )
    lines = [
        "| protocol | users | " + " | ".join(columns) + " |",
        "| --- " * (len(columns) + 2) + "|",
    ]
    for protocol, values in rows.items():
        cells = [format_cell(values, metric) for metric in columns]
        users = format_cell(values, "num_users")  # empty where not recorded (a DPO run's before/after table)
        lines.append(f"| {prefix}{protocol} | {users} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


__all__ = [
    "PROTOCOLS",
    "coverage",
    "coverage_interval",
    "evaluate_next_item",
    "evaluate_users",
    "mean_with_interval",
    "metrics_table",
    "paired_difference",
]
