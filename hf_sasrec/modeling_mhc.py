"""SASRec with manifold-constrained hyper-connections (mHC, arXiv:2512.24880; hyper-connections, arXiv:2409.19606).

The residual stream is widened to `n = expansion_rate` streams `x` of shape `[n, hidden]` at each position. Around
each sublayer `F` (attention, MLP) a hyper-connection computes, from the position's own streams,

    x' = RMSNorm(flatten(x))                                   # [n * hidden]
    H_pre  = sigmoid(a_pre * x' W_pre + b_pre)                 # [n], reads the streams into F
    H_post = 2 sigmoid(a_post * x' W_post + b_post)            # [n], writes F's output back
    H_res  = SinkhornKnopp(a_res * x' W_res + b_res)           # [n, n], doubly stochastic
    x <- H_res x + H_post^T F(H_pre x)

The doubly stochastic `H_res` keeps the mean of the streams: mixing neither amplifies nor vanishes the signal however
deep the stack. Initialisation: the static parts read the mean of the streams (`H_pre = 1/n`), write to every stream
(`H_post = 1`) and mix close to the identity, and the gates `a` start at `gate_init`, so a fresh model computes
almost exactly SASRec on the streams' mean. The streams start as the embedding plus learned zero-mean per-stream
offsets rather than n identical copies: identical streams would stay identical, and then the mixing matrices (whose
rows Sinkhorn normalises) would receive no gradient.
"""

import math

import torch
from torch import nn
from transformers import initialization as init

from .configuration_mhc import MHCConfig
from .modeling_sasrec import SASRecBlock, SASRecForCausalLM, SASRecModel, SASRecPreTrainedModel, SASRecRMSNorm

RESIDUAL_DIAGONAL_LOGIT = 2.0


def sinkhorn(logits: torch.Tensor, iterations: int) -> torch.Tensor:
    """Sinkhorn-Knopp projection of `exp(logits)` onto the doubly stochastic matrices.

    `logits`: `[..., n, n]`. Rows and columns are normalised alternately, in log space for stability; the result has
    non-negative entries and rows and columns that sum to 1 (to the precision `iterations` reaches).
    """
    log_matrix = logits.float()
    for _ in range(iterations):
        log_matrix = log_matrix - log_matrix.logsumexp(dim=-1, keepdim=True)
        log_matrix = log_matrix - log_matrix.logsumexp(dim=-2, keepdim=True)
    return log_matrix.exp().to(logits.dtype)


class MHCHyperConnection(nn.Module):
    """The manifold-constrained hyper-connection around one sublayer."""

    def __init__(self, config: MHCConfig):
        super().__init__()
        self.expansion_rate = n = config.expansion_rate
        self.sinkhorn_iters = config.sinkhorn_iters
        self.norm = SASRecRMSNorm(n * config.hidden_size, eps=config.rms_norm_eps)
        self.dynamic_proj = nn.Linear(n * config.hidden_size, 2 * n + n * n, bias=False)
        # The gates are scalars held as 1-element vectors: FSDP2 (`fully_shard`) shards no 0-d parameter.
        self.gate_pre = nn.Parameter(torch.empty(1))
        self.gate_post = nn.Parameter(torch.empty(1))
        self.gate_res = nn.Parameter(torch.empty(1))
        self.static_pre = nn.Parameter(torch.empty(n))
        self.static_post = nn.Parameter(torch.empty(n))
        self.static_res = nn.Parameter(torch.empty(n, n))

    def mappings(self, streams: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """`streams`: `[batch, length, n, hidden]`. Returns `H_pre` `[batch, length, n]`, `H_post`
        `[batch, length, n]` and the doubly stochastic `H_res` `[batch, length, n, n]`."""
        n = self.expansion_rate
        dynamic = self.dynamic_proj(self.norm(streams.flatten(-2)))
        dynamic_pre, dynamic_post, dynamic_res = dynamic.split([n, n, n * n], dim=-1)
        pre = torch.sigmoid(self.gate_pre * dynamic_pre + self.static_pre)
        post = 2 * torch.sigmoid(self.gate_post * dynamic_post + self.static_post)
        residual_logits = self.gate_res * dynamic_res.unflatten(-1, (n, n)) + self.static_res
        return pre, post, sinkhorn(residual_logits, self.sinkhorn_iters)

    def forward(self, streams: torch.Tensor, sublayer) -> torch.Tensor:
        """`streams`: `[batch, length, n, hidden]`; `sublayer` maps `[batch, length, hidden]` to the same shape."""
        pre, post, residual = self.mappings(streams)
        sublayer_output = sublayer(torch.einsum("bln,blnd->bld", pre, streams))
        mixed = torch.einsum("blij,bljd->blid", residual, streams)
        return mixed + post[..., None] * sublayer_output[..., None, :]


class MHCStreamExpansion(nn.Module):
    """Widens `[batch, length, hidden]` to `[batch, length, n, hidden]`: the input plus zero-mean learned offsets."""

    def __init__(self, config: MHCConfig):
        super().__init__()
        self.offsets = nn.Parameter(torch.empty(config.expansion_rate, config.hidden_size))

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        offsets = self.offsets - self.offsets.mean(dim=0, keepdim=True)
        return hidden_states[..., None, :] + offsets


class MHCBlock(SASRecBlock):
    """A pre-norm SASRec block whose two residual connections are hyper-connections over the streams."""

    def __init__(self, config: MHCConfig, layer_idx: int):
        super().__init__(config, layer_idx)
        self.attention_connection = MHCHyperConnection(config)
        self.mlp_connection = MHCHyperConnection(config)

    def forward(self, hidden_states: torch.Tensor, attention_mask: torch.Tensor, **kwargs) -> torch.Tensor:
        """`hidden_states`: the streams, `[batch, length, n, hidden]` in and out."""
        hidden_states = self.attention_connection(
            hidden_states, lambda states: self.attend(self.attention_norm(states), attention_mask, **kwargs)
        )
        return self.mlp_connection(hidden_states, lambda states: self.feed_forward(self.mlp_norm(states)))


class MHCPreTrainedModel(SASRecPreTrainedModel):
    config: MHCConfig
    config_class = MHCConfig
    _no_split_modules = ["MHCBlock"]

    @torch.no_grad()
    def _init_weights(self, module: nn.Module) -> None:
        super()._init_weights(module)
        if isinstance(module, MHCHyperConnection):
            n = module.expansion_rate
            for gate in (module.gate_pre, module.gate_post, module.gate_res):
                init.constant_(gate, self.config.gate_init)
            init.constant_(module.static_pre, -math.log(n - 1) if n > 1 else 10.0)
            init.zeros_(module.static_post)
            init.copy_(module.static_res, torch.eye(n) * RESIDUAL_DIAGONAL_LOGIT)
        elif isinstance(module, MHCStreamExpansion):
            # As large as the scaled item embeddings, so the streams differ from the start.
            init.normal_(module.offsets, mean=0.0, std=self.config.initializer_range * self.config.hidden_size**0.5)


class MHCModel(MHCPreTrainedModel, SASRecModel):
    """SASRec encoder with mHC residual streams; see [`SASRecModel`] for inputs and outputs. The streams are
    averaged before the final norm, so `last_hidden_state` is `[batch, length, hidden]`; the per-block
    `hidden_states`, when requested, are the streams `[batch, length, n, hidden]`."""

    block_class = MHCBlock

    def add_input_modules(self, config: MHCConfig) -> None:
        super().add_input_modules(config)
        self.stream_expansion = MHCStreamExpansion(config)

    def run_blocks(self, hidden_states: torch.Tensor, attention_mask: torch.Tensor, **layer_kwargs) -> torch.Tensor:
        streams = super().run_blocks(self.stream_expansion(hidden_states), attention_mask, **layer_kwargs)
        return streams.mean(dim=-2)


class MHCForCausalLM(MHCPreTrainedModel, SASRecForCausalLM):
    base_model_class = MHCModel


__all__ = ["MHCForCausalLM", "MHCModel", "MHCPreTrainedModel", "sinkhorn"]
