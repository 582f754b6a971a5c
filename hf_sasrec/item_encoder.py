"""The item encoder: an item's vector made of its id embedding and its content, for every variant.

A config's `item_features` lists the item features a model reads, each a dict with `name` and `kind`:
`{"kind": "categorical", "vocab_size": V}`, `{"kind": "multi", "vocab_size": V, "max_values": M}`,
`{"kind": "numeric"}`, `{"kind": "embedding", "dim": D}` (a frozen modality table) or `{"kind": "codes",
"level_sizes": [K_1, ..., K_L]}` (semantic ids); `hf_sasrec.feature_embeddings` says how each is embedded. A spec may
also carry what encodes a new item's raw values (`vocab`, `mean`, `std`; see `hf_sasrec.feature_encoding`).

The value of each feature for every token id is a buffer of the model (saved in `model.safetensors` beside the
weights, row t = token id t), so a checkpoint scores items by their content without any data folder. The parts are
fused (`item_fusion`) by a sum or by a linear map of their concatenation; with `use_item_id=False` the id embedding
is left out and the model knows items by content alone, so an item never seen in training is scored like any other.
With `item_id_dropout`, training leaves an item's id embedding out of its vector at random, so that the content parts
learn to score an item alone, as they must for a new item (whose id embedding is zero).
"""

import torch
from torch import nn

from .feature_embeddings import feature_modules


class ItemEncoder(nn.Module):
    """Fuses an item's id embedding (when the model has one) with its features (`config.item_features`), by
    `config.item_fusion`: `"sum"` adds the parts, `"concat"` maps their concatenation to the hidden size."""

    def __init__(self, config):
        super().__init__()
        self.features = feature_modules(config.item_features, config.hidden_size, config.vocab_size)
        num_parts = len(self.features) + int(config.use_item_id)
        self.item_id_dropout = config.item_id_dropout
        self.fuse = (
            nn.Linear(num_parts * config.hidden_size, config.hidden_size, bias=False)
            if config.item_fusion == "concat"
            else None
        )

    def forward(self, item_ids: torch.LongTensor, id_embeddings: torch.Tensor | None) -> torch.Tensor:
        """`item_ids` `[...]` and their id embeddings `[..., hidden]` (or `None`) to item vectors `[..., hidden]`."""
        if id_embeddings is not None and self.training and self.item_id_dropout > 0:
            kept = torch.rand(item_ids.shape, device=item_ids.device) >= self.item_id_dropout
            id_embeddings = id_embeddings * kept.unsqueeze(-1).to(id_embeddings.dtype)
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
