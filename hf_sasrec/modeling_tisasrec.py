"""TiSASRec: time-interval aware self-attention for sequential recommendation (Li, Wang & McAuley, WSDM 2020).

The attention of item `i` on item `j` reads `q_i . (k_j + P^K_j + R^K_ij)` and gathers `v_j + P^V_j + R^V_ij`, where
`P` are absolute position embeddings and `R_ij` embeds the time interval between the two items, measured in units
of the user's smallest non-zero interval and clipped at `time_span`. The interval terms are computed bucket-wise
(`[batch, heads, length, time_span + 1]`) instead of materialising a `[batch, length, length, hidden]` tensor.
"""

import torch
from torch import nn
from transformers.utils import can_return_tuple

from .configuration_tisasrec import TiSASRecConfig
from .modeling_sasrec import (
    SASRecAttention,
    SASRecBlock,
    SASRecCausalLMOutput,
    SASRecForCausalLM,
    SASRecModel,
    SASRecPreTrainedModel,
)


def time_interval_buckets(timestamps: torch.Tensor, attention_mask: torch.Tensor, time_span: int) -> torch.LongTensor:
    """Relation matrix of TiSASRec.

    `r_ij = min(floor(|t_i - t_j| / r_min), time_span)`, where `r_min` is the smallest non-zero interval between two
    of the user's real items (1 if all its items share one time). Pairs involving padding get bucket 0.

    Args:
        timestamps: `[batch, length]` integer times (any unit).
        attention_mask: `[batch, length]`, 1 for real items.

    Returns:
        `[batch, length, length]` bucket ids in `[0, time_span]`.
    """
    times = timestamps.long()
    mask = attention_mask.bool()
    gaps = (times[:, :, None] - times[:, None, :]).abs()
    real_pair = mask[:, :, None] & mask[:, None, :]
    largest = torch.iinfo(gaps.dtype).max
    smallest_gap = gaps.masked_fill(~real_pair | (gaps == 0), largest).flatten(1).amin(-1)
    smallest_gap = smallest_gap.masked_fill(smallest_gap == largest, 1)
    buckets = torch.div(gaps, smallest_gap[:, None, None], rounding_mode="floor").clamp(max=time_span)
    return buckets.masked_fill(~real_pair, 0)


class TiSASRecAttention(SASRecAttention):
    """Self-attention with absolute-position and time-interval embeddings on keys and values (eager only: the
    interval term on the values needs the attention weights)."""

    def __init__(self, config: TiSASRecConfig, layer_idx: int):
        super().__init__(config, layer_idx)
        self.num_buckets = config.time_span + 1
        self.position_keys = nn.Embedding(config.max_position_embeddings, config.hidden_size)
        self.position_values = nn.Embedding(config.max_position_embeddings, config.hidden_size)
        self.interval_keys = nn.Embedding(self.num_buckets, config.hidden_size)
        self.interval_values = nn.Embedding(self.num_buckets, config.hidden_size)

    def bucket_table(self, embedding: nn.Embedding) -> torch.Tensor:
        """An interval embedding table split into heads: `[heads, buckets, head_dim]`."""
        return embedding.weight.view(self.num_buckets, self.num_heads, self.head_dim).transpose(0, 1)

    def forward(
        self,
        hidden_states: torch.Tensor,
        attention_mask: torch.Tensor,
        position_ids: torch.LongTensor,
        interval_buckets: torch.LongTensor,
        **kwargs,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """`hidden_states`: `[batch, length, hidden]`; `interval_buckets`: `[batch, length, length]`. Returns the
        output `[batch, length, hidden]` and the weights `[batch, heads, length, length]`."""
        query, key, value = self.project(hidden_states)
        key = key + self.split_heads(self.position_keys(position_ids))
        value = value + self.split_heads(self.position_values(position_ids))
        buckets = interval_buckets[:, None].expand(-1, self.num_heads, -1, -1)

        query_by_bucket = query @ self.bucket_table(self.interval_keys).transpose(1, 2)
        scores = (query @ key.transpose(2, 3) + query_by_bucket.gather(-1, buckets)) * self.scaling
        scores = scores.masked_fill(~attention_mask, torch.finfo(scores.dtype).min)
        weights = nn.functional.softmax(scores, dim=-1, dtype=torch.float32).to(query.dtype)
        weights = nn.functional.dropout(weights, p=self.attention_dropout, training=self.training)

        weight_by_bucket = torch.zeros_like(query_by_bucket).scatter_add_(-1, buckets, weights)
        attn_output = weights @ value + weight_by_bucket @ self.bucket_table(self.interval_values)
        attn_output = attn_output.transpose(1, 2).reshape(*hidden_states.shape[:-1], -1)
        return self.o_proj(attn_output), weights


class TiSASRecBlock(SASRecBlock):
    attention_class = TiSASRecAttention


class TiSASRecPreTrainedModel(SASRecPreTrainedModel):
    config: TiSASRecConfig
    config_class = TiSASRecConfig
    _no_split_modules = ["TiSASRecBlock"]
    _supports_flash_attn = False
    _supports_sdpa = False
    _supports_attention_backend = False


class TiSASRecModel(TiSASRecPreTrainedModel, SASRecModel):
    """TiSASRec encoder; as [`SASRecModel`] with `timestamps` beside `input_ids`."""

    block_class = TiSASRecBlock

    def add_input_modules(self, config: TiSASRecConfig) -> None:
        """None: positions and intervals enter each attention's keys and values, not the input."""

    def embed(self, inputs_embeds: torch.Tensor, position_ids: torch.LongTensor) -> torch.Tensor:
        return inputs_embeds * self.embedding_scale

    def layer_inputs(
        self,
        hidden_states: torch.Tensor,
        position_ids: torch.LongTensor,
        attention_mask: torch.Tensor,
        timestamps: torch.Tensor | None = None,
        **kwargs,
    ) -> dict:
        if timestamps is None:
            raise ValueError("tisasrec needs `timestamps` ([batch, length], one time per item) beside `input_ids`.")
        if timestamps.shape != attention_mask.shape:
            raise ValueError(
                f"timestamps {tuple(timestamps.shape)} must have the shape of input_ids {tuple(attention_mask.shape)}."
            )
        buckets = time_interval_buckets(timestamps, attention_mask, self.config.time_span)
        return {"position_ids": position_ids, "interval_buckets": buckets}

    def forward(self, input_ids: torch.LongTensor | None = None, timestamps: torch.Tensor | None = None, **kwargs):
        r"""As [`SASRecModel.forward`], plus `timestamps`: `[batch, length]` integer time of each item."""
        return super().forward(input_ids=input_ids, timestamps=timestamps, **kwargs)


class TiSASRecForCausalLM(TiSASRecPreTrainedModel, SASRecForCausalLM):
    base_model_class = TiSASRecModel

    @can_return_tuple
    def forward(
        self, input_ids: torch.LongTensor | None = None, timestamps: torch.Tensor | None = None, **kwargs
    ) -> SASRecCausalLMOutput:
        r"""As [`SASRecForCausalLM.forward`], plus `timestamps`: `[batch, length]` integer time of each item."""
        return super().forward(input_ids=input_ids, timestamps=timestamps, **kwargs)


__all__ = ["TiSASRecForCausalLM", "TiSASRecModel", "TiSASRecPreTrainedModel", "time_interval_buckets"]
