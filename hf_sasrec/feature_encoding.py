"""Raw feature values encoded as the model's feature inputs, with the vocabularies and statistics of training that
the config keeps (`item_features`, `user_features`): the rows of items that arrive after training
(`Recommender.add_items`), and the features of the users being served.

An item or a user is `{feature: value}` over the features of the config, with the value types of the data step's
tables: a categorical value (any scalar; one unseen in training is "unknown"), a multi-valued one (a list, or a
string split on `|`), a number (standardised with the training mean and standard deviation), and, per modality table
of the items, a vector of the table's width. A feature left out or empty is "missing", as in training. Semantic ids
are the new item's codes, one per level (`hf_sasrec.semantic_ids.encode_items` computes them with the RQ-VAE that
made the training codes); its de-duplication code, which depends on the rest of the catalog, is missing unless
given as one more value.
"""

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch

from data_preprocess.feature_schema import MISSING_ID, PADDING_ID, UNKNOWN_ID, FeatureSpec
from data_preprocess.side_features import category_values, number_value

MULTI_VALUE_SEPARATOR = "|"


def value_ids(spec: dict, values: list[str]) -> list[int]:
    """The ids of `values` in the feature's training vocabulary (`UNKNOWN_ID` for a value it lacks)."""
    ids = {value: index for index, value in enumerate(spec["vocab"]) if value is not None}
    return [ids.get(value, UNKNOWN_ID) for value in values]


def encode_feature(
    spec: dict, items: Sequence[Mapping[str, Any]], modality: Mapping[str, Any] | None, keys: list[str]
) -> dict[str, torch.Tensor]:
    """The buffer rows of one feature for the new items `keys` (their values `items`, their vectors `modality` for
    a modality table): `{"<feature>.<buffer>": tensor [num_new, ...]}`."""
    name, kind = spec["name"], spec["kind"]
    needed = {"categorical": "vocab", "multi": "vocab", "numeric": "mean"}.get(kind)
    if needed and needed not in spec:
        raise ValueError(
            f"item feature {name!r} has no encoding of raw values in the config (a model trained before "
            "new items could be added): retrain it to add items."
        )
    cells = [item.get(name) for item in items]
    parse_spec = FeatureSpec(name, kind, name, MULTI_VALUE_SEPARATOR) if needed else None
    try:
        if kind == "categorical":
            ids = [value_ids(spec, category_values(cell, parse_spec, frozenset())) or [MISSING_ID] for cell in cells]
            return {f"{name}.ids": torch.tensor([row[0] for row in ids], dtype=torch.long)}
        if kind == "multi":
            rows = torch.full((len(cells), spec["max_values"]), PADDING_ID, dtype=torch.long)
            for row, cell in enumerate(cells):
                ids = value_ids(spec, category_values(cell, parse_spec, frozenset()))[: spec["max_values"]]
                rows[row, : max(len(ids), 1)] = torch.tensor(ids or [MISSING_ID])
            return {f"{name}.ids": rows}
        if kind == "numeric":
            numbers = np.array([number_value(cell, parse_spec, frozenset()) for cell in cells], dtype=np.float64)
            missing = np.isnan(numbers)
            values = np.where(missing, 0.0, (numbers - spec["mean"]) / (spec["std"] or 1.0))
            value = torch.tensor(values, dtype=torch.float32)
            return {f"{name}.value": value, f"{name}.missing": torch.from_numpy(missing)}
    except ValueError as error:
        raise ValueError(f"new item feature {name!r}: {error}") from None
    if kind == "embedding":
        table, present = torch.zeros(len(keys), spec["dim"]), torch.zeros(len(keys), dtype=torch.bool)
        for row, key in enumerate(keys):
            vector = (modality or {}).get(key)
            if vector is None:
                continue
            vector = torch.as_tensor(np.asarray(vector, dtype=np.float32))
            if vector.shape != (spec["dim"],) or not torch.isfinite(vector).all():
                raise ValueError(f"new item {key!r}: its {name!r} vector must be {spec['dim']} finite numbers.")
            table[row], present[row] = vector, True
        return {f"{name}.table": table, f"{name}.present": present}
    return {f"{name}.codes": encode_codes(spec, cells, keys)}


def encode_codes(spec: dict, cells: list, keys: list[str]) -> torch.LongTensor:
    """`[num_new, levels]` semantic-id rows: each item's codes (one per level but the last, or all of them), the
    levels not given missing (-1); a code outside its level is refused naming the item."""
    sizes = spec["level_sizes"]
    codes = torch.full((len(cells), len(sizes)), -1, dtype=torch.long)
    for row, (key, cell) in enumerate(zip(keys, cells, strict=True)):
        if cell is None or len(cell) == 0:
            continue
        if isinstance(cell, str) or not all(isinstance(value, int | np.integer) for value in cell):
            raise ValueError(f"new item {key!r}: {spec['name']!r} must be a list of integer codes, got {cell!r}.")
        values = [int(value) for value in cell]
        if len(values) not in (len(sizes) - 1, len(sizes)) or any(
            not 0 <= value < size for value, size in zip(values, sizes, strict=False)
        ):
            raise ValueError(
                f"new item {key!r}: {spec['name']!r} must be {len(sizes) - 1} codes (or {len(sizes)} with the "
                f"de-duplication code), each below its level's size {sizes}; got {values}."
            )
        codes[row, : len(values)] = torch.tensor(values)
    return codes


def check_feature_names(specs: list[dict], names: set[str], what: str) -> None:
    """A feature the model lacks is an error: it would be silently ignored otherwise."""
    known = {spec["name"] for spec in specs}
    if names - known:
        raise ValueError(f"the model has no {what} features {sorted(names - known)}; it has {sorted(known)}.")


def encode_items(
    item_features: list[dict],
    items: Mapping[str, Mapping[str, Any]],
    embeddings: Mapping[str, Mapping[str, Any]] | None = None,
) -> dict[str, torch.Tensor]:
    """The item encoder's rows of new items, in the order of `items` (raw key -> `{feature: value}`), with their
    vectors of each modality in `embeddings` (modality -> raw key -> vector)."""
    check_feature_names(
        item_features, {name for item in items.values() for name in item} | set(embeddings or {}), "item"
    )
    keys, rows = list(items), {}
    for spec in item_features:
        rows |= encode_feature(spec, list(items.values()), (embeddings or {}).get(spec["name"]), keys)
    return rows


def encode_users(user_features: list[dict], users: Sequence[Mapping[str, Any] | None]) -> dict[str, torch.Tensor]:
    """The `user_features` input of a batch of users, each `{feature: value}` (`None`: every feature missing)."""
    users = [user or {} for user in users]
    check_feature_names(user_features, {name for user in users for name in user}, "user")
    keys, values = [str(row) for row in range(len(users))], {}
    for spec in user_features:
        values |= encode_feature(spec, users, None, keys)
    return values


__all__ = ["encode_items", "encode_users"]
