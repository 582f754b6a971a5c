"""SASRec with a mixture-of-experts MLP: each item position is routed to its top-k experts, and a load-balancing
loss keeps the experts evenly used."""

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn
from transformers import initialization as init
from transformers.modeling_outputs import MoEModelOutput
from transformers.utils import can_return_tuple
from transformers.utils.output_capturing import OutputRecorder

from .configuration_sasrec_moe import SASRecMoEConfig
from .modeling_sasrec import (
    SASRecAttention,
    SASRecBlock,
    SASRecCausalLMOutput,
    SASRecForCausalLM,
    SASRecMLP,
    SASRecModel,
    SASRecPreTrainedModel,
    real_item_mask,
)


class SASRecMoERouter(nn.Module):
    """Scores the experts for each position and keeps the top-k."""

    def __init__(self, config: SASRecMoEConfig):
        super().__init__()
        self.top_k = config.num_experts_per_tok
        self.norm_topk_prob = config.norm_topk_prob
        self.weight = nn.Parameter(torch.empty(config.num_experts, config.hidden_size))

    def forward(self, hidden_states: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.LongTensor]:
        """`hidden_states`: `[tokens, hidden]`. Returns the router logits `[tokens, num_experts]`, the routing
        weights `[tokens, top_k]` and the chosen experts `[tokens, top_k]`."""
        router_logits = F.linear(hidden_states, self.weight)
        probabilities = router_logits.float().softmax(dim=-1)
        weights, experts = probabilities.topk(self.top_k, dim=-1)
        if self.norm_topk_prob:
            weights = weights / weights.sum(dim=-1, keepdim=True)
        return router_logits, weights.to(hidden_states.dtype), experts


class SASRecMoEMLP(nn.Module):
    """Routed experts (SASRec MLPs), plus an always-on shared expert when `config.shared_expert`."""

    def __init__(self, config: SASRecMoEConfig):
        super().__init__()
        self.router = SASRecMoERouter(config)
        self.experts = nn.ModuleList(
            [SASRecMLP(config, config.moe_intermediate_size) for _ in range(config.num_experts)]
        )
        self.shared_expert = SASRecMLP(config, config.moe_intermediate_size) if config.shared_expert else None

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        """`[batch, length, hidden]` in and out; each position is computed by its top-k experts only."""
        tokens = hidden_states.reshape(-1, hidden_states.shape[-1])
        _, weights, experts = self.router(tokens)
        output = torch.zeros_like(tokens)
        for expert_index, expert in enumerate(self.experts):
            token_index, slot = (experts == expert_index).nonzero(as_tuple=True)
            if len(token_index) == 0:
                continue
            contribution = expert(tokens[token_index]) * weights[token_index, slot, None]
            output.index_add_(0, token_index, contribution)
        if self.shared_expert is not None:
            output = output + self.shared_expert(tokens)
        return output.view_as(hidden_states)


def load_balancing_loss(
    router_logits: tuple[torch.Tensor, ...], top_k: int, attention_mask: torch.Tensor | None
) -> torch.Tensor:
    """Switch-Transformer load-balancing loss, averaged over blocks and over real positions only.

    For each block, `num_experts * sum_e f_e * P_e`, where `f_e` is the share of routing slots that went to expert
    `e` and `P_e` its mean router probability. It is 1 for perfectly even routing and grows as routing concentrates.

    Args:
        router_logits: one `[batch * length, num_experts]` tensor per block.
        attention_mask: `[batch, length]`, 1 for real items (all positions count when `None`).
    """
    num_experts = router_logits[0].shape[-1]
    losses = []
    for logits in router_logits:
        probabilities = logits.float().softmax(dim=-1)
        chosen = F.one_hot(probabilities.topk(top_k, dim=-1).indices, num_experts).sum(1).float()
        if attention_mask is not None:
            keep = attention_mask.reshape(-1).bool()
            probabilities, chosen = probabilities[keep], chosen[keep]
        slot_share = chosen.mean(0) / top_k
        losses.append(num_experts * (slot_share * probabilities.mean(0)).sum())
    return torch.stack(losses).mean()


class SASRecMoEBlock(SASRecBlock):
    mlp_class = SASRecMoEMLP


class SASRecMoEPreTrainedModel(SASRecPreTrainedModel):
    config: SASRecMoEConfig
    config_class = SASRecMoEConfig
    _no_split_modules = ["SASRecMoEBlock"]
    _can_record_outputs = {
        "hidden_states": SASRecBlock,
        "attentions": SASRecAttention,
        "router_logits": OutputRecorder(SASRecMoERouter, index=0),
    }

    @torch.no_grad()
    def _init_weights(self, module: nn.Module) -> None:
        super()._init_weights(module)
        if isinstance(module, SASRecMoERouter):
            init.normal_(module.weight, mean=0.0, std=self.config.initializer_range)


class SASRecMoEModel(SASRecMoEPreTrainedModel, SASRecModel):
    """SASRec encoder with mixture-of-experts MLPs; see [`SASRecModel`]. With `output_router_logits=True` the output
    also holds `router_logits`, one `[batch * length, num_experts]` tensor per block."""

    block_class = SASRecMoEBlock
    output_class = MoEModelOutput


@dataclass
class SASRecMoECausalLMOutput(SASRecCausalLMOutput):
    r"""
    aux_loss: the load-balancing loss, already added to `loss` with weight `router_aux_loss_coef`.
    router_logits: one `[batch * length, num_experts]` tensor per block.
    """

    aux_loss: torch.FloatTensor | None = None
    router_logits: tuple[torch.FloatTensor, ...] | None = None


class SASRecMoEForCausalLM(SASRecMoEPreTrainedModel, SASRecForCausalLM):
    base_model_class = SASRecMoEModel

    @can_return_tuple
    def forward(
        self,
        *args,
        labels: torch.LongTensor | None = None,
        shift_labels: torch.LongTensor | None = None,
        output_router_logits: bool | None = None,
        **kwargs,
    ):
        r"""As [`SASRecForCausalLM.forward`]. With `labels` or `shift_labels`, the load-balancing loss times
        `router_aux_loss_coef` is added to the loss (as Mixtral does: not divided by `num_items_in_batch`), and
        returned alone as `aux_loss`; the router logits are returned when asked for."""
        if output_router_logits is None:
            output_router_logits = self.config.output_router_logits
        with_loss = labels is not None or shift_labels is not None
        return super().forward(
            *args,
            labels=labels,
            shift_labels=shift_labels,
            output_router_logits=output_router_logits or with_loss,
            **kwargs,
        )

    def causal_lm_output(
        self,
        outputs: MoEModelOutput,
        loss: torch.Tensor | None,
        logits: torch.Tensor,
        input_ids: torch.LongTensor | None = None,
        attention_mask: torch.Tensor | None = None,
    ) -> SASRecMoECausalLMOutput:
        aux_loss = None
        if outputs.router_logits:
            attention_mask = real_item_mask(input_ids, attention_mask, self.config.pad_token_id)
            aux_loss = load_balancing_loss(outputs.router_logits, self.config.num_experts_per_tok, attention_mask)
            if loss is not None:
                loss = loss + self.config.router_aux_loss_coef * aux_loss
        return SASRecMoECausalLMOutput(
            loss=loss,
            logits=logits,
            hidden_states=outputs.hidden_states,
            attentions=outputs.attentions,
            aux_loss=aux_loss,
            router_logits=outputs.router_logits,
        )


__all__ = ["SASRecMoEForCausalLM", "SASRecMoEModel", "SASRecMoEPreTrainedModel"]
