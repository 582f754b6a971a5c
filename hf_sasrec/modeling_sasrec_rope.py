"""SASRec with rotary position embeddings: positions rotate queries and keys instead of being added to the input."""

import torch
from torch import nn

from .configuration_sasrec_rope import SASRecRopeConfig
from .modeling_sasrec import SASRecAttention, SASRecBlock, SASRecForCausalLM, SASRecModel, SASRecPreTrainedModel


class SASRecRopeRotaryEmbedding(nn.Module):
    """Cosines and sines of the rotary angles `position * theta^(-2i / head_dim)`."""

    def __init__(self, config: SASRecRopeConfig):
        super().__init__()
        self.head_dim = config.hidden_size // config.num_attention_heads
        self.rope_theta = config.rope_theta

    @torch.no_grad()
    def forward(self, position_ids: torch.LongTensor, dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
        """`position_ids`: `[batch, length]`. Returns `(cos, sin)`, each `[batch, 1, length, head_dim]`."""
        exponents = torch.arange(0, self.head_dim, 2, device=position_ids.device, dtype=torch.float32) / self.head_dim
        inverse_frequencies = self.rope_theta**-exponents
        angles = position_ids[..., None].float() * inverse_frequencies
        angles = torch.cat([angles, angles], dim=-1)[:, None]
        return angles.cos().to(dtype), angles.sin().to(dtype)


def rotate_half(states: torch.Tensor) -> torch.Tensor:
    """`[x1, x2]` to `[-x2, x1]` on the last dimension."""
    first, second = states.chunk(2, dim=-1)
    return torch.cat([-second, first], dim=-1)


def apply_rotary(states: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotate `[batch, heads, length, head_dim]` states by the angles whose cosines and sines are given."""
    return states * cos + rotate_half(states) * sin


class SASRecRopeAttention(SASRecAttention):
    """Self-attention whose queries and keys are rotated by their positions."""

    def project(
        self, hidden_states: torch.Tensor, position_embeddings: tuple[torch.Tensor, torch.Tensor], **kwargs
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        query, key, value = super().project(hidden_states)
        cos, sin = position_embeddings
        return apply_rotary(query, cos, sin), apply_rotary(key, cos, sin), value


class SASRecRopeBlock(SASRecBlock):
    attention_class = SASRecRopeAttention


class SASRecRopePreTrainedModel(SASRecPreTrainedModel):
    config: SASRecRopeConfig
    config_class = SASRecRopeConfig
    _no_split_modules = ["SASRecRopeBlock"]


class SASRecRopeModel(SASRecRopePreTrainedModel, SASRecModel):
    """SASRec encoder with rotary positions; see [`SASRecModel`] for inputs and outputs."""

    block_class = SASRecRopeBlock

    def add_input_modules(self, config: SASRecRopeConfig) -> None:
        self.rotary_emb = SASRecRopeRotaryEmbedding(config)

    def embed(self, inputs_embeds: torch.Tensor, position_ids: torch.LongTensor) -> torch.Tensor:
        return inputs_embeds * self.embedding_scale

    def layer_inputs(self, hidden_states: torch.Tensor, position_ids: torch.LongTensor, **kwargs) -> dict:
        return {"position_embeddings": self.rotary_emb(position_ids, hidden_states.dtype)}


class SASRecRopeForCausalLM(SASRecRopePreTrainedModel, SASRecForCausalLM):
    base_model_class = SASRecRopeModel


__all__ = ["SASRecRopeForCausalLM", "SASRecRopeModel", "SASRecRopePreTrainedModel"]
