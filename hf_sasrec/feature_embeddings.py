"""One module per feature kind, turning a feature's values into a `[..., hidden]` vector; the item encoder and the
user encoder are made of them.

Each module names its values (`value_names`) and embeds them with `embed(**values)`, every value shaped `[...]` (or
`[..., width]`). Built with `num_rows`, it also holds the values of every row as buffers of those names (the item
tables: row t = token id t) and `forward(rows)` embeds the values of `rows`; built without, its values come with
each batch (user features).

- `categorical` (`ids`): one value id, embedded (id 1 = missing, 2 = unknown);
- `multi` (`ids` `[..., max_values]`): value ids, 0-padded, embedded and averaged (a bag mean);
- `numeric` (`value`, `missing`): a standardised number times a learned vector, plus a bias; a missing value has a
  learned embedding of its own;
- `embedding` (`table` `[..., dim]`, `present`): a frozen vector (text, image, ...) projected to the hidden size by
  a trained linear map; a row without a vector has a learned embedding;
- `codes` (`codes` `[..., levels]`, -1 = missing): semantic ids, one embedding table per level (row 0 = missing),
  summed.
"""

import torch
from torch import nn

PADDING_VALUE = 0
MISSING_VALUE = 1


class FeatureEmbedding(nn.Module):
    """A feature's embedding; subclasses define `value_names`, `value_buffers` (the buffers of `num_rows` rows) and
    `embed`."""

    value_names: tuple[str, ...] = ()

    def __init__(self, num_rows: int | None):
        super().__init__()
        if num_rows is not None:
            for name, buffer in self.value_buffers(num_rows).items():
                self.register_buffer(name, buffer)

    def value_buffers(self, num_rows: int) -> dict[str, torch.Tensor]:
        """The buffers of `num_rows` rows, each filled with the feature's "missing" value."""
        raise NotImplementedError

    def embed(self, **values: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def forward(self, rows: torch.LongTensor) -> torch.Tensor:
        """The vectors `[..., hidden]` of the rows `rows` `[...]` of the buffers."""
        return self.embed(**{name: getattr(self, name)[rows] for name in self.value_names})


class CategoricalFeature(FeatureEmbedding):
    value_names = ("ids",)

    def __init__(self, spec: dict, hidden_size: int, num_rows: int | None = None):
        super().__init__(num_rows)
        self.embedding = nn.Embedding(spec["vocab_size"], hidden_size)

    def value_buffers(self, num_rows: int) -> dict[str, torch.Tensor]:
        return {"ids": torch.full((num_rows,), MISSING_VALUE, dtype=torch.long)}

    def embed(self, ids: torch.LongTensor) -> torch.Tensor:
        return self.embedding(ids)


class MultiValuedFeature(FeatureEmbedding):
    value_names = ("ids",)

    def __init__(self, spec: dict, hidden_size: int, num_rows: int | None = None):
        self.max_values = spec["max_values"]
        super().__init__(num_rows)
        self.embedding = nn.Embedding(spec["vocab_size"], hidden_size, padding_idx=PADDING_VALUE)

    def value_buffers(self, num_rows: int) -> dict[str, torch.Tensor]:
        ids = torch.zeros(num_rows, self.max_values, dtype=torch.long)
        ids[:, 0] = MISSING_VALUE
        return {"ids": ids}

    def embed(self, ids: torch.LongTensor) -> torch.Tensor:
        present = (ids != PADDING_VALUE).unsqueeze(-1)
        return (self.embedding(ids) * present).sum(-2) / present.sum(-2).clamp(min=1)


class NumericFeature(FeatureEmbedding):
    value_names = ("value", "missing")

    def __init__(self, spec: dict, hidden_size: int, num_rows: int | None = None):
        super().__init__(num_rows)
        self.project = nn.Linear(1, hidden_size)
        self.missing_embedding = nn.Embedding(1, hidden_size)

    def value_buffers(self, num_rows: int) -> dict[str, torch.Tensor]:
        return {"value": torch.zeros(num_rows), "missing": torch.ones(num_rows, dtype=torch.bool)}

    def embed(self, value: torch.Tensor, missing: torch.BoolTensor) -> torch.Tensor:
        projected = self.project(value.unsqueeze(-1).to(self.project.weight.dtype))
        return torch.where(missing.unsqueeze(-1), self.missing_embedding.weight[0], projected)


class ModalityFeature(FeatureEmbedding):
    value_names = ("table", "present")

    def __init__(self, spec: dict, hidden_size: int, num_rows: int | None = None):
        self.dim = spec["dim"]
        super().__init__(num_rows)
        self.project = nn.Linear(self.dim, hidden_size, bias=False)
        self.missing_embedding = nn.Embedding(1, hidden_size)

    def value_buffers(self, num_rows: int) -> dict[str, torch.Tensor]:
        return {"table": torch.zeros(num_rows, self.dim), "present": torch.zeros(num_rows, dtype=torch.bool)}

    def embed(self, table: torch.Tensor, present: torch.BoolTensor) -> torch.Tensor:
        projected = self.project(table.to(self.project.weight.dtype))
        return torch.where(present.unsqueeze(-1), projected, self.missing_embedding.weight[0])


class SemanticIdFeature(FeatureEmbedding):
    value_names = ("codes",)

    def __init__(self, spec: dict, hidden_size: int, num_rows: int | None = None):
        self.num_levels = len(spec["level_sizes"])
        super().__init__(num_rows)
        self.levels = nn.ModuleList([nn.Embedding(size + 1, hidden_size) for size in spec["level_sizes"]])

    def value_buffers(self, num_rows: int) -> dict[str, torch.Tensor]:
        return {"codes": torch.full((num_rows, self.num_levels), -1, dtype=torch.long)}

    def embed(self, codes: torch.LongTensor) -> torch.Tensor:
        codes = codes + 1
        return sum(level(codes[..., index]) for index, level in enumerate(self.levels))


FEATURE_MODULES: dict[str, type[FeatureEmbedding]] = {
    "categorical": CategoricalFeature,
    "multi": MultiValuedFeature,
    "numeric": NumericFeature,
    "embedding": ModalityFeature,
    "codes": SemanticIdFeature,
}


def feature_modules(specs: list[dict], hidden_size: int, num_rows: int | None = None) -> nn.ModuleDict:
    """The modules of the features `specs` (a config's `item_features` or `user_features`), by name."""
    return nn.ModuleDict({spec["name"]: FEATURE_MODULES[spec["kind"]](spec, hidden_size, num_rows) for spec in specs})


__all__ = ["FEATURE_MODULES", "feature_modules"]
