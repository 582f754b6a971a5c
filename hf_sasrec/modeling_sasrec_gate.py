"""SASRec with the gated SiLU MLP of modern LLMs in place of the point-wise feed-forward layer."""

import torch
from torch import nn
from transformers.activations import ACT2FN

from .configuration_sasrec_gate import SASRecGateConfig
from .modeling_sasrec import SASRecBlock, SASRecDropout, SASRecForCausalLM, SASRecModel, SASRecPreTrainedModel


class SASRecGateMLP(nn.Module):
    """`W_d dropout(act(x W_g) * x W_u)`, `[batch, length, hidden]` in and out."""

    def __init__(self, config: SASRecGateConfig, intermediate_size: int | None = None):
        super().__init__()
        intermediate_size = intermediate_size or config.intermediate_size
        self.gate_proj = nn.Linear(config.hidden_size, intermediate_size, bias=False)
        self.up_proj = nn.Linear(config.hidden_size, intermediate_size, bias=False)
        self.down_proj = nn.Linear(intermediate_size, config.hidden_size, bias=False)
        self.act_fn = ACT2FN[config.hidden_act]
        self.dropout = SASRecDropout(config.hidden_dropout_prob)

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        gated = self.act_fn(self.gate_proj(hidden_states)) * self.up_proj(hidden_states)
        return self.down_proj(self.dropout(gated))


class SASRecGateBlock(SASRecBlock):
    mlp_class = SASRecGateMLP


class SASRecGatePreTrainedModel(SASRecPreTrainedModel):
    config: SASRecGateConfig
    config_class = SASRecGateConfig
    _no_split_modules = ["SASRecGateBlock"]


class SASRecGateModel(SASRecGatePreTrainedModel, SASRecModel):
    """SASRec encoder with gated MLPs; see [`SASRecModel`] for inputs and outputs."""

    block_class = SASRecGateBlock


class SASRecGateForCausalLM(SASRecGatePreTrainedModel, SASRecForCausalLM):
    base_model_class = SASRecGateModel


__all__ = ["SASRecGateForCausalLM", "SASRecGateModel", "SASRecGatePreTrainedModel"]
