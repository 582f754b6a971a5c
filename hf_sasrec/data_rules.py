"""Settings that depend on the data, derived from its `stats.json` by written rules (`--data_rules true`).

A training recipe meant for any implicit-feedback log (`train_configs/sft/recommended.yaml`) cannot fix every setting:
some must follow the data. Each such setting is a [`DataRule`] here: a function of the statistics that
`python -m data_preprocess` writes (users, items, interactions, mean history length), with the reason it holds. The
rules give *defaults*: a value in the YAML file or on the command line wins over the rule (and a rule wins over a
`model_config` preset). `parse_sft_args` applies them, logs each value with its reason and `run_info.json` records
them (`data_rules`). The evidence behind each rule is in the README ("The recommended recipe").
"""

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

DATA_RULES_SOURCE = "the data rules (hf_sasrec.data_rules, from stats.json)"
# The statistics of `stats.json` that the rules read.
STATISTICS = ("num_items", "mean_length")
# Mean history length (items a user) from which a log counts as dense: MovieLens users (ML-100K 106, ML-1M 163) lie
# above it, the Amazon 5-core sets (Beauty 8.9, Games 9.3) far below.
DENSE_MEAN_LENGTH = 50
# Catalog size up to which the full softmax is used: its cost and memory grow with the catalog, the sampled softmax's
# do not.
FULL_SOFTMAX_MAX_ITEMS = 200_000


@dataclass(frozen=True)
class DataRule:
    """A setting derived from the data's statistics.

    Args:
        key: the training key it sets (a config field or a training argument).
        rule: the rule in words, for `--help` (the `data_rules` key lists every rule).
        value: the statistics (`stats.json`) to `(value, reason)`, the reason naming the statistic it read.
    """

    key: str
    rule: str
    value: Callable[[dict[str, Any]], tuple[Any, str]]


def dropout(stats: dict[str, Any]) -> tuple[float, str]:
    """0.2 on dense logs, 0.5 on sparse ones (the SASRec paper's settings for MovieLens-1M and for Amazon/Steam)."""
    mean_length = stats["mean_length"]
    dense = mean_length >= DENSE_MEAN_LENGTH
    reason = f"mean history {mean_length:.1f} items {'>=' if dense else '<'} {DENSE_MEAN_LENGTH}"
    return (0.2 if dense else 0.5), reason


def loss_type(stats: dict[str, Any]) -> tuple[str, str]:
    """The full softmax up to `FULL_SOFTMAX_MAX_ITEMS` items, the sampled softmax (with logQ correction) above."""
    items = stats["num_items"]
    full = items <= FULL_SOFTMAX_MAX_ITEMS
    return ("ce" if full else "sampled_softmax"), f"{items} items {'<=' if full else '>'} {FULL_SOFTMAX_MAX_ITEMS}"


DROPOUT_RULE = f"0.2 when the mean history is at least {DENSE_MEAN_LENGTH} items (dense), else 0.5 (sparse)"
RULES = (
    DataRule("hidden_dropout_prob", DROPOUT_RULE, dropout),
    DataRule("attention_dropout", DROPOUT_RULE, dropout),
    DataRule("loss_type", f"ce (full softmax) up to {FULL_SOFTMAX_MAX_ITEMS} items, else sampled_softmax", loss_type),
)


def rule_values(stats: dict[str, Any], keys: set[str] | None = None) -> dict[str, tuple[Any, str]]:
    """`key -> (value, reason)` of every rule (of those whose key is in `keys`, when given). `ValueError` naming the
    statistics that `stats` lacks (a data folder written before `stats.json` had them)."""
    missing = [name for name in STATISTICS if not isinstance(stats.get(name), int | float)]
    if missing:
        raise ValueError(
            f"data_rules need the data statistics {missing} of stats.json; prepare the data again with "
            "python -m data_preprocess."
        )
    return {rule.key: rule.value(stats) for rule in RULES if keys is None or rule.key in keys}
