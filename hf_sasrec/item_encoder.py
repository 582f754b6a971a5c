"""The item encoder: an item's vector made of its id embedding and its content, for every variant.

A config's `item_features` lists the item features a model reads (each a dict with `name` and `kind`):

- `{"kind": "categorical", "vocab_size": V}`: one value id per item, embedded (id 1 = missing, 2 = unknown);
- `{"kind": "multi", "vocab_size": V, "max_values": M}`: up to `M` value ids per item, 0-padded, embedded and
  averaged (a bag mean);
- `{"kind": "numeric"}`: one standardised number per item, projected by a learned vector; a missing value has a
  learned embedding of its own;
- `{"kind": "embedding", "dim": D}`: a frozen modality table (text, image, ...) `[vocab_size, D]`, projected to the
  hidden size by a trained linear map; an item without a vector has a learned "missing" embedding;
- `{"kind": "codes", "level_sizes": [K_1, ..., K_L]}`: semantic ids, one code per level (-1 = missing), one
  embedding table per level, summed.

The value of each feature for every token id is a buffer of the model (saved in `model.safetensors` beside the
weights, row t = token id t), so a checkpoint scores items by their content without any data folder. The parts are
fused (`item_fusion`) by a sum or by a linear map of their concatenation; with `use_item_id=False` the id embedding
is left out and the model knows items by content alone, so an item never seen in training is scored like any other.
"""

import torch
from torch import nn

PADDING_VALUE = 0
MISSING_VALUE = 1


class CategoricalFeature(nn.Module):
    """One value id per item, embedded: `ids` `[vocab_size]`."""

    def __init__(self, spec: dict, vocab_size: int, hidden_size: int):
        super().__init__()
        self.register_buffer("ids", torch.full((vocab_size,), MISSING_VALUE, dtype=torch.long))
        self.embed = nn.Embedding(spec["vocab_size"], hidden_size)

    def forward(self, item_ids: torch.LongTensor) -> torch.Tensor:
        return self.embed(self.ids[item_ids])


class MultiValuedFeature(nn.Module):
    """Up to `max_values` value ids per item, 0-padded (`ids` `[vocab_size, max_values]`); the mean of their
    embeddings. A row without a value holds the missing id, so the mean is never empty."""

    def __init__(self, spec: dict, vocab_size: int, hidden_size: int):
        super().__init__()
        ids = torch.zeros(vocab_size, spec["max_values"], dtype=torch.long)
        ids[:, 0] = MISSING_VALUE
        self.register_buffer("ids", ids)
        self.embed = nn.Embedding(spec["vocab_size"], hidden_size, padding_idx=PADDING_VALUE)

    def forward(self, item_ids: torch.LongTensor) -> torch.Tensor:
        ids = self.ids[item_ids]
        present = (ids != PADDING_VALUE).unsqueeze(-1)
        total = (self.embed(ids) * present).sum(-2)
        return total / present.sum(-2).clamp(min=1)


class NumericFeature(nn.Module):
    """A standardised number per item (`value` `[vocab_size]`, `missing` `[vocab_size]` bool), times a learned
    vector; a missing value is a learned embedding of its own."""

    def __init__(self, spec: dict, vocab_size: int, hidden_size: int):
        super().__init__()
        self.register_buffer("value", torch.zeros(vocab_size))
        self.register_buffer("missing", torch.ones(vocab_size, dtype=torch.bool))
        self.project = nn.Linear(1, hidden_size)
        self.missing_embedding = nn.Embedding(1, hidden_size)

    def forward(self, item_ids: torch.LongTensor) -> torch.Tensor:
        projected = self.project(self.value[item_ids].unsqueeze(-1).to(self.project.weight.dtype))
        return torch.where(self.missing[item_ids].unsqueeze(-1), self.missing_embedding.weight[0], projected)


class ModalityFeature(nn.Module):
    """A frozen table of precomputed item vectors (`table` `[vocab_size, dim]`, `present` `[vocab_size]` bool),
    projected to the hidden size by a trained linear map; an item without a vector gets a learned embedding."""

    def __init__(self, spec: dict, vocab_size: int, hidden_size: int):
        super().__init__()
        self.register_buffer("table", torch.zeros(vocab_size, spec["dim"]))
        self.register_buffer("present", torch.zeros(vocab_size, dtype=torch.bool))
        self.project = nn.Linear(spec["dim"], hidden_size, bias=False)
        self.missing_embedding = nn.Embedding(1, hidden_size)

    def forward(self, item_ids: torch.LongTensor) -> torch.Tensor:
        projected = self.project(self.table[item_ids].to(self.project.weight.dtype))
        return torch.where(self.present[item_ids].unsqueeze(-1), projected, self.missing_embedding.weight[0])


class SemanticIdFeature(nn.Module):
    """Semantic ids (`codes` `[vocab_size, levels]`, -1 where missing): one embedding table per level, whose row 0
    is "missing", summed over the levels."""

    def __init__(self, spec: dict, vocab_size: int, hidden_size: int):
        super().__init__()
        level_sizes = spec["level_sizes"]
        self.register_buffer("codes", torch.full((vocab_size, len(level_sizes)), -1, dtype=torch.long))
        self.levels = nn.ModuleList([nn.Embedding(size + 1, hidden_size) for size in level_sizes])

    def forward(self, item_ids: torch.LongTensor) -> torch.Tensor:
        codes = self.codes[item_ids] + 1
        return sum(level(codes[..., index]) for index, level in enumerate(self.levels))


FEATURE_MODULES: dict[str, type[nn.Module]] = {
    "categorical": CategoricalFeature,
    "multi": MultiValuedFeature,
    "numeric": NumericFeature,
    "embedding": ModalityFeature,
    "codes": SemanticIdFeature,
}


class ItemEncoder(nn.Module):
    """Fuses an item's id embedding (when the model has one) with its features (`config.item_features`), by
    `config.item_fusion`: `"sum"` adds the parts, `"concat"` maps their concatenation to the hidden size."""

    def __init__(self, config):
        super().__init__()
        self.features = nn.ModuleDict(
            {
                spec["name"]: FEATURE_MODULES[spec["kind"]](spec, config.vocab_size, config.hidden_size)
                for spec in config.item_features
            }
        )
        num_parts = len(self.features) + int(config.use_item_id)
        self.fuse = (
            nn.Linear(num_parts * config.hidden_size, config.hidden_size, bias=False)
            if config.item_fusion == "concat"
            else None
        )

    def forward(self, item_ids: torch.LongTensor, id_embeddings: torch.Tensor | None) -> torch.Tensor:
        """`item_ids` `[...]` and their id embeddings `[..., hidden]` (or `None`) to item vectors `[..., hidden]`."""
        parts = [] if id_embeddings is None else [id_embeddings]
        parts += [feature(item_ids) for feature in self.features.values()]
        if self.fuse is None:
            return torch.stack(parts).sum(0)
        return self.fuse(torch.cat(parts, dim=-1))

    def check_tables(self, tables: dict[str, torch.Tensor], rows: int | None = None) -> None:
        """`ValueError` unless `tables` gives every buffer (`"<feature>.<buffer>"`) with its shape (with `rows` rows
        when given)."""
        buffers = dict(self.features.named_buffers())
        if set(tables) != set(buffers):
            raise ValueError(
                f"item feature tables {sorted(tables)} do not match the model's {sorted(buffers)}: missing "
                f"{sorted(set(buffers) - set(tables))}, unexpected {sorted(set(tables) - set(buffers))}."
            )
        for name, value in tables.items():
            expected = (len(buffers[name]) if rows is None else rows, *buffers[name].shape[1:])
            if tuple(value.shape) != expected:
                raise ValueError(
                    f"item feature table {name!r} has shape {tuple(value.shape)}; the model expects {expected}."
                )

    @torch.no_grad()
    def append_items(self, tables: dict[str, torch.Tensor]) -> None:
        """Add the rows of new items (token ids from `vocab_size` on) to every buffer: `tables` as in
        [`load_tables`], each with one row per new item."""
        rows = len(next(iter(tables.values())))
        self.check_tables(tables, rows)
        for name, value in tables.items():
            feature, buffer = name.rsplit(".", 1)
            module = self.features[feature]
            old = getattr(module, buffer)
            module.register_buffer(buffer, torch.cat([old, value.to(old.device, old.dtype)]))

    @torch.no_grad()
    def load_tables(self, tables: dict[str, torch.Tensor]) -> None:
        """Copy the feature values of every item, `{"<feature>.<buffer>": tensor}` (e.g. `"genres.ids"`), into the
        buffers; every buffer must be given, with its shape."""
        self.check_tables(tables)
        buffers = dict(self.features.named_buffers())
        for name, value in tables.items():
            buffers[name].copy_(value)


__all__ = ["ItemEncoder"]
