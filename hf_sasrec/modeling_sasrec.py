"""SASRec: self-attentive sequential recommendation (Kang & McAuley, ICDM 2018) as a transformers model.

Every variant of this package subclasses the modules below and replaces only the part its idea changes: the
input encoding (`add_input_modules`, `embed`, `layer_inputs`), the attention or MLP class of a block, or the
residual wiring (`run_blocks`).
"""

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn
from transformers import PreTrainedModel
from transformers.activations import ACT2FN
from transformers.modeling_layers import GradientCheckpointingLayer
from transformers.modeling_outputs import BaseModelOutput, ModelOutput
from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS, slice_logits_to_keep
from transformers.utils import can_return_tuple
from transformers.utils.output_capturing import capture_outputs

from .configuration_sasrec import SASRecConfig
from .item_encoder import ItemEncoder
from .losses import next_item_loss, next_item_targets, unlikelihood_loss
from .user_encoder import UserEncoder


class SASRecRMSNorm(nn.Module):
    """Root-mean-square layer norm with a learned scale, computed in float32."""

    def __init__(self, hidden_size: int, eps: float = 1e-6):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(hidden_size))
        self.variance_epsilon = eps

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        normalized = nn.functional.rms_norm(hidden_states.float(), hidden_states.shape[-1:], eps=self.variance_epsilon)
        return self.weight * normalized.to(hidden_states.dtype)


class SASRecDropout(nn.Dropout):
    """`nn.Dropout` whose mask, on CPU, is a uniform draw compared with `p` instead of `bernoulli_` (what
    `F.dropout` runs): the same distribution (each entry kept with probability `1 - p`, kept ones scaled by
    `1 / (1 - p)`) for a third of the time, since `bernoulli_` costs 3-4 times a uniform draw on CPU and dropout was
    the second-largest operator of a paper-configuration training step (`benchmarks/results/step_profile_sasrec.txt`).
    Elsewhere, and in evaluation, it is `nn.Dropout`."""

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        if not self.training or self.p == 0 or hidden_states.device.type != "cpu":
            return super().forward(hidden_states)
        kept = torch.rand_like(hidden_states) >= self.p
        return hidden_states * kept.to(hidden_states.dtype) * (1.0 / (1.0 - self.p))


def real_item_mask(
    input_ids: torch.LongTensor | None, attention_mask: torch.Tensor | None, pad_token_id: int
) -> torch.BoolTensor:
    """`[batch, length]`, `True` at real items: `attention_mask`, or `input_ids != pad_token_id` when it is omitted."""
    if attention_mask is not None:
        return attention_mask.bool()
    if input_ids is None:
        raise ValueError("attention_mask is required with inputs_embeds: padding cannot be read from it.")
    return input_ids.ne(pad_token_id)


def positions_from_mask(attention_mask: torch.BoolTensor) -> torch.LongTensor:
    """Position ids that count from each row's first real item: `[batch, length]`, 0 on left padding."""
    return (attention_mask.long().cumsum(-1) - 1).clamp(min=0)


def build_attention_mask(attention_mask: torch.BoolTensor, attn_implementation: str) -> torch.Tensor:
    """The mask every attention implementation of this package takes.

    Flash attention takes the `[batch, length]` padding mask and applies causality itself. The others take a boolean
    `[batch, 1, length, length]` mask, `True` where query `i` may attend to key `j`: `j <= i` and `j` is a real item.
    A padding query also attends to itself, so that its row is never empty (its output is discarded anyway): this
    keeps softmax finite with left padding.
    """
    if attn_implementation.startswith("flash"):
        return attention_mask
    length = attention_mask.shape[-1]
    causal = torch.ones(length, length, dtype=torch.bool, device=attention_mask.device).tril()
    allowed = causal[None, :, :] & attention_mask[:, None, :]
    allowed = allowed | torch.eye(length, dtype=torch.bool, device=attention_mask.device)
    return allowed[:, None, :, :]


def eager_attention_forward(
    module: nn.Module,
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    attention_mask: torch.Tensor | None,
    scaling: float,
    dropout: float = 0.0,
    **kwargs,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Attention in plain torch ops.

    `query`, `key`, `value`: `[batch, heads, length, head_dim]`; `attention_mask`: boolean `[batch, 1, length,
    length]`. Returns the output `[batch, length, heads, head_dim]` and the weights `[batch, heads, length, length]`.
    """
    attn_weights = torch.matmul(query, key.transpose(2, 3)) * scaling
    if attention_mask is not None:
        attn_weights = attn_weights.masked_fill(~attention_mask, torch.finfo(attn_weights.dtype).min)
    attn_weights = nn.functional.softmax(attn_weights, dim=-1, dtype=torch.float32).to(query.dtype)
    attn_weights = nn.functional.dropout(attn_weights, p=dropout, training=module.training)
    attn_output = torch.matmul(attn_weights, value).transpose(1, 2).contiguous()
    return attn_output, attn_weights


class SASRecAttention(nn.Module):
    """Causal multi-head self-attention, dispatched to the implementation named by `config._attn_implementation`."""

    def __init__(self, config: SASRecConfig, layer_idx: int):
        super().__init__()
        self.config = config
        self.layer_idx = layer_idx
        self.num_heads = config.num_attention_heads
        self.head_dim = config.hidden_size // config.num_attention_heads
        self.scaling = self.head_dim**-0.5
        self.attention_dropout = config.attention_dropout
        self.is_causal = True
        self.q_proj = nn.Linear(config.hidden_size, config.hidden_size)
        self.k_proj = nn.Linear(config.hidden_size, config.hidden_size)
        self.v_proj = nn.Linear(config.hidden_size, config.hidden_size)
        self.o_proj = nn.Linear(config.hidden_size, config.hidden_size)

    def split_heads(self, states: torch.Tensor) -> torch.Tensor:
        """`[batch, length, hidden]` to `[batch, heads, length, head_dim]`."""
        return states.view(*states.shape[:-1], self.num_heads, self.head_dim).transpose(1, 2)

    def project(self, hidden_states: torch.Tensor, **kwargs) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Queries, keys and values, each `[batch, heads, length, head_dim]`."""
        return (
            self.split_heads(self.q_proj(hidden_states)),
            self.split_heads(self.k_proj(hidden_states)),
            self.split_heads(self.v_proj(hidden_states)),
        )

    def forward(
        self, hidden_states: torch.Tensor, attention_mask: torch.Tensor, **kwargs
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """`hidden_states`: `[batch, length, hidden]`. Returns the output `[batch, length, hidden]` and the attention
        weights `[batch, heads, length, length]` where the implementation provides them."""
        query, key, value = self.project(hidden_states, **kwargs)
        attention_interface: Callable = ALL_ATTENTION_FUNCTIONS.get_interface(
            self.config._attn_implementation, eager_attention_forward
        )
        attn_output, attn_weights = attention_interface(
            self,
            query,
            key,
            value,
            attention_mask,
            dropout=self.attention_dropout if self.training else 0.0,
            scaling=self.scaling,
        )
        attn_output = attn_output.reshape(*hidden_states.shape[:-1], -1)
        return self.o_proj(attn_output), attn_weights


class SASRecMLP(nn.Module):
    """SASRec's point-wise feed-forward network: `W_2 dropout(act(W_1 x))`."""

    def __init__(self, config: SASRecConfig, intermediate_size: int | None = None):
        super().__init__()
        intermediate_size = intermediate_size or config.intermediate_size
        self.up_proj = nn.Linear(config.hidden_size, intermediate_size)
        self.down_proj = nn.Linear(intermediate_size, config.hidden_size)
        self.act_fn = ACT2FN[config.hidden_act]
        self.dropout = SASRecDropout(config.hidden_dropout_prob)

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        return self.down_proj(self.dropout(self.act_fn(self.up_proj(hidden_states))))


class SASRecBlock(GradientCheckpointingLayer):
    """Self-attention then MLP, each with a residual connection, pre-norm (`config.norm_first`) or post-norm."""

    attention_class: type[nn.Module] = SASRecAttention
    mlp_class: type[nn.Module] = SASRecMLP

    def __init__(self, config: SASRecConfig, layer_idx: int):
        super().__init__()
        self.norm_first = config.norm_first
        self.self_attn = self.attention_class(config, layer_idx)
        self.mlp = self.mlp_class(config)
        self.attention_norm = SASRecRMSNorm(config.hidden_size, eps=config.rms_norm_eps)
        self.mlp_norm = SASRecRMSNorm(config.hidden_size, eps=config.rms_norm_eps)
        self.dropout = SASRecDropout(config.hidden_dropout_prob)

    def attend(self, hidden_states: torch.Tensor, attention_mask: torch.Tensor, **kwargs) -> torch.Tensor:
        """The attention sublayer without its residual: `[batch, length, hidden]` in and out."""
        attn_output, _ = self.self_attn(hidden_states, attention_mask=attention_mask, **kwargs)
        return self.dropout(attn_output)

    def feed_forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        """The MLP sublayer without its residual: `[batch, length, hidden]` in and out."""
        return self.dropout(self.mlp(hidden_states))

    def forward(self, hidden_states: torch.Tensor, attention_mask: torch.Tensor, **kwargs) -> torch.Tensor:
        if self.norm_first:
            hidden_states = hidden_states + self.attend(self.attention_norm(hidden_states), attention_mask, **kwargs)
            return hidden_states + self.feed_forward(self.mlp_norm(hidden_states))
        hidden_states = self.attention_norm(hidden_states + self.attend(hidden_states, attention_mask, **kwargs))
        return self.mlp_norm(hidden_states + self.feed_forward(hidden_states))


class SASRecPreTrainedModel(PreTrainedModel):
    config: SASRecConfig
    config_class = SASRecConfig
    base_model_prefix = "model"
    supports_gradient_checkpointing = True
    _no_split_modules = ["SASRecBlock"]
    _supports_flash_attn = True
    _supports_sdpa = True
    _supports_attention_backend = True
    _can_record_outputs = {"hidden_states": SASRecBlock, "attentions": SASRecAttention}


class SASRecModel(SASRecPreTrainedModel):
    """The SASRec encoder: item (and position) embeddings, causal self-attention blocks, a final RMSNorm.

    Its `last_hidden_state` at a user's last real position is the user representation that scores every item
    against the item embeddings. An item's vector is its id embedding (`embed_tokens`), fused with its features by
    the item encoder when the config has `item_features` (see `hf_sasrec.item_encoder`); `embed_tokens` is `None`
    for a content-only model (`use_item_id=False`).
    """

    block_class: type[SASRecBlock] = SASRecBlock
    output_class: type[BaseModelOutput] = BaseModelOutput

    def __init__(self, config: SASRecConfig):
        super().__init__(config)
        self.embed_tokens = (
            nn.Embedding(config.vocab_size, config.hidden_size, padding_idx=config.pad_token_id)
            if config.use_item_id
            else None
        )
        self.item_encoder = ItemEncoder(config) if config.item_features else None
        self.user_encoder = UserEncoder(config) if config.user_features else None
        self.embedding_scale = config.hidden_size**0.5 if config.scale_embeddings else 1.0
        self.add_input_modules(config)
        self.embedding_dropout = SASRecDropout(config.hidden_dropout_prob)
        self.layers = nn.ModuleList([self.block_class(config, i) for i in range(config.num_hidden_layers)])
        self.norm = SASRecRMSNorm(config.hidden_size, eps=config.rms_norm_eps)
        self.gradient_checkpointing = False
        self.post_init()

    def add_input_modules(self, config: SASRecConfig) -> None:
        """Modules between the item embeddings and the first block: learned absolute positions for SASRec."""
        self.embed_positions = nn.Embedding(config.max_position_embeddings, config.hidden_size)

    def get_input_embeddings(self) -> nn.Embedding | None:
        return self.embed_tokens

    def set_input_embeddings(self, value: nn.Embedding) -> None:
        self.embed_tokens = value

    def embed_items(self, item_ids: torch.LongTensor) -> torch.Tensor:
        """The vectors of `item_ids` (`[...]` to `[..., hidden]`): id embeddings, fused with the items' features when
        the model has an item encoder."""
        id_embeddings = None if self.embed_tokens is None else self.embed_tokens(item_ids)
        if self.item_encoder is None:
            return id_embeddings
        return self.item_encoder(item_ids, id_embeddings)

    @torch.no_grad()
    def add_items(self, tables: dict[str, torch.Tensor]) -> None:
        """Grow the vocabulary by new items, scored from their features without retraining: `tables` holds their
        item encoder rows (see `ItemEncoder.append_items`), one per new item, whose token ids follow the current
        ones. A new item's id embedding is zero, so its vector is made of its content alone."""
        if self.item_encoder is None:
            raise ValueError(
                "This model knows items by id only (no item_features): it cannot score an item it was not trained on."
            )
        count = len(next(iter(tables.values())))
        self.item_encoder.append_items(tables)
        if self.embed_tokens is not None:
            old = self.embed_tokens.weight
            grown = nn.Embedding(len(old) + count, old.shape[1], padding_idx=self.config.pad_token_id)
            grown = grown.to(old.device, old.dtype)
            grown.weight.copy_(torch.cat([old, old.new_zeros(count, old.shape[1])]))
            self.embed_tokens = grown
        self.config.vocab_size += count

    def item_table(self) -> torch.Tensor:
        """The vector of every token id, `[vocab_size, hidden]`: the id embedding table, or the item encoder's output
        for every item (computed anew, so that gradients reach the encoder)."""
        if self.item_encoder is None:
            return self.embed_tokens.weight
        device = next(self.item_encoder.parameters()).device
        return self.embed_items(torch.arange(self.config.vocab_size, device=device))

    def embed(self, inputs_embeds: torch.Tensor, position_ids: torch.LongTensor) -> torch.Tensor:
        """Input of the first block: scaled item embeddings plus position embeddings, `[batch, length, hidden]`."""
        return inputs_embeds * self.embedding_scale + self.embed_positions(position_ids)

    def layer_inputs(self, hidden_states: torch.Tensor, position_ids: torch.LongTensor, **kwargs) -> dict:
        """Extra keyword inputs every block receives (none for SASRec)."""
        return {}

    def run_blocks(self, hidden_states: torch.Tensor, attention_mask: torch.Tensor, **layer_kwargs) -> torch.Tensor:
        """Apply the blocks in order: `[batch, length, hidden]` in and out."""
        for block in self.layers:
            hidden_states = block(hidden_states, attention_mask, **layer_kwargs)
        return hidden_states

    @capture_outputs
    def forward(
        self,
        input_ids: torch.LongTensor | None = None,
        attention_mask: torch.Tensor | None = None,
        position_ids: torch.LongTensor | None = None,
        inputs_embeds: torch.Tensor | None = None,
        user_features: dict[str, torch.Tensor] | None = None,
        **kwargs,
    ) -> BaseModelOutput:
        r"""
        Args:
            input_ids: `[batch, length]` item token ids, 0 for padding; left or right padding.
            attention_mask: `[batch, length]`, 1 for real items; derived from `input_ids != 0` when omitted.
            position_ids: `[batch, length]`; by default they count from each row's first real item, so that the
                same history gives the same outputs whatever its padding.
            inputs_embeds: `[batch, length, hidden]` item embeddings to use instead of `input_ids`.
            user_features: for a model with `user_features`, the users' feature values, `"<feature>.<value>"` ->
                `[batch, ...]` (see `hf_sasrec.user_encoder`); their embedding is added to every position's input.

        Returns:
            [`BaseModelOutput`] whose `last_hidden_state` is `[batch, length, hidden]`.
        """
        if (input_ids is None) == (inputs_embeds is None):
            raise ValueError("Pass exactly one of input_ids or inputs_embeds.")
        if inputs_embeds is None:
            inputs_embeds = self.embed_items(input_ids)
        attention_mask = real_item_mask(input_ids, attention_mask, self.config.pad_token_id)
        if position_ids is None:
            position_ids = positions_from_mask(attention_mask)
        hidden_states = self.embed(inputs_embeds, position_ids)
        if self.user_encoder is not None:
            users = self.user_encoder(user_features, len(hidden_states), hidden_states.device)
            hidden_states = hidden_states + users[:, None]
        elif user_features is not None:
            raise ValueError("user_features were given, but this model reads none (its config has no user_features).")
        hidden_states = self.embedding_dropout(hidden_states) * attention_mask[..., None]
        mask = build_attention_mask(attention_mask, self.config._attn_implementation)
        layer_kwargs = self.layer_inputs(hidden_states, position_ids, attention_mask=attention_mask, **kwargs)
        hidden_states = self.run_blocks(hidden_states, mask, **layer_kwargs)
        return self.output_class(last_hidden_state=self.norm(hidden_states))


def last_real_states(hidden_states: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
    """The state at each row's last real item, the user representation: `[batch, length, hidden]` to
    `[batch, hidden]`. Works for left and right padding; a row without any item is an error."""
    attention_mask = attention_mask.bool()
    empty = ~attention_mask.any(-1)
    if empty.any():
        raise ValueError(f"Empty history at batch rows {empty.nonzero().flatten().tolist()}: nothing to represent.")
    length = attention_mask.shape[-1]
    positions = torch.arange(length, device=attention_mask.device).expand_as(attention_mask)
    last = positions.masked_fill(~attention_mask, -1).amax(-1)
    return hidden_states[torch.arange(len(last), device=last.device), last]


@dataclass
class SASRecCausalLMOutput(ModelOutput):
    r"""
    loss: scalar next-item loss when `labels` or `shift_labels` are given: the mean over the batch's targets, or
        their sum divided by `num_items_in_batch` when given; plus any auxiliary loss of the variant.
    logits: `[batch, kept_positions, vocab_size]` item scores at the positions `logits_to_keep` selects.
    hidden_states: per-block hidden states when requested.
    attentions: per-block attention weights `[batch, heads, length, length]` when requested.
    """

    loss: torch.FloatTensor | None = None
    logits: torch.FloatTensor | None = None
    hidden_states: tuple[torch.FloatTensor, ...] | None = None
    attentions: tuple[torch.FloatTensor, ...] | None = None


@dataclass
class SASRecCompletionLogProbsOutput(ModelOutput):
    r"""
    What `forward(..., fused_lm_head=True)` returns in place of logits: the fields of TRL's `FusedCausalLMOutput`,
    which TRL's preference trainers read. Each per-position field is `[batch, length - 1]` with `labels` (position
    `t` scores `labels[b, t + 1]`) or `[batch, length]` with `shift_labels`, and zero where there is no target.

    loss: minus the targets' summed log-probabilities over `num_items_in_batch` (their count when not given), plus
        the variant's auxiliary loss (mixture of experts: `router_aux_loss_coef` times `aux_loss`).
    log_probs: log-probability of each target item, normalised over items (special tokens excluded).
    entropy: entropy of the next-item distribution, without gradient.
    log_sum_sq_probs: `log sum_i p_i^2` of the next-item distribution, without gradient.
    mean_logits: mean item logit, without gradient.
    is_top1: whether the target is the highest-scoring item.
    label_mask: whether the position has a target.
    aux_loss: the variant's auxiliary loss alone, or `None`.
    """

    loss: torch.FloatTensor | None = None
    log_probs: torch.FloatTensor | None = None
    entropy: torch.FloatTensor | None = None
    log_sum_sq_probs: torch.FloatTensor | None = None
    mean_logits: torch.FloatTensor | None = None
    is_top1: torch.BoolTensor | None = None
    label_mask: torch.BoolTensor | None = None
    aux_loss: torch.FloatTensor | None = None


class SASRecForCausalLM(SASRecPreTrainedModel):
    """SASRec with its next-item head: item scores are dot products with the item vectors, [`item_embeddings`]: the
    (tied) id embeddings, or, with item features, the item encoder's vectors of every item, which then serve the
    input side as well (one encoding of the catalog a forward pass)."""

    base_model_class: type[SASRecModel] = SASRecModel
    _tied_weights_keys = {"lm_head.weight": "model.embed_tokens.weight"}

    def __init__(self, config: SASRecConfig):
        super().__init__(config)
        self.model = self.base_model_class(config)
        self.lm_head = None if config.item_features else nn.Linear(config.hidden_size, config.vocab_size, bias=False)
        self.register_buffer("excluded_from_training", None, persistent=False)
        self.post_init()
        # Tied weights are never saved; naming them lets Trainer's `load_best_model_at_end` re-tie them silently.
        self._keys_to_ignore_on_save = set(self.all_tied_weights_keys)

    def get_output_embeddings(self) -> nn.Linear | None:
        return self.lm_head

    def exclude_from_training(self, item_ids: Sequence[int]) -> None:
        """Make `item_ids` no candidates of the next-item loss (`excluded_items` in `hf_sasrec.losses`) and zero their
        id embeddings: this model trains as if they were not in the catalog yet and ends with them as
        [`SASRecModel.add_items`] would add them (the cold-item protocol: items that arrive after training). Items
        that are no candidate and no input get no gradient, so their id embeddings stay zero. The mask is not saved:
        a loaded model scores every item."""
        excluded = torch.zeros(self.config.vocab_size, dtype=torch.bool, device=self.device)
        excluded[torch.as_tensor(list(item_ids), dtype=torch.long)] = True
        self.excluded_from_training = excluded
        id_embeddings = self.get_input_embeddings()
        if id_embeddings is not None:
            with torch.no_grad():
                id_embeddings.weight[excluded] = 0.0

    def item_embeddings(self) -> torch.Tensor:
        """The vectors that score items, `[vocab_size, hidden]`: the head's weight (the tied id embeddings), or the
        item encoder's vector of every item for a model with item features."""
        return self.model.item_table() if self.lm_head is None else self.lm_head.weight

    def save_pretrained(self, save_directory, *args, **kwargs) -> None:
        """Save as transformers does, naming the encoder in `auto_map` too, so that both `AutoModel` and
        `AutoModelForCausalLM` load the checkpoint with `trust_remote_code=True` where this package is absent."""
        if self._auto_class is not None:
            encoder = self.base_model_class
            module = encoder.__module__.rsplit(".", 1)[-1]
            self.config.auto_map = {
                **(getattr(self.config, "auto_map", None) or {}),
                "AutoModel": f"{module}.{encoder.__name__}",
            }
        super().save_pretrained(save_directory, *args, **kwargs)

    def set_output_embeddings(self, new_embeddings: nn.Linear) -> None:
        self.lm_head = new_embeddings

    @can_return_tuple
    def forward(
        self,
        input_ids: torch.LongTensor | None = None,
        attention_mask: torch.Tensor | None = None,
        position_ids: torch.LongTensor | None = None,
        inputs_embeds: torch.Tensor | None = None,
        labels: torch.LongTensor | None = None,
        shift_labels: torch.LongTensor | None = None,
        num_items_in_batch: torch.Tensor | int | None = None,
        logits_to_keep: int | torch.Tensor = 0,
        fused_lm_head: bool = False,
        disliked_ids: torch.LongTensor | None = None,
        **kwargs,
    ) -> SASRecCausalLMOutput | SASRecCompletionLogProbsOutput:
        r"""
        Args:
            labels: `[batch, length]`, aligned with `input_ids` and shifted inside the model, as in every transformers
                causal LM: position `t` is trained to predict `labels[b, t + 1]`, so `labels=input_ids` trains
                next-item prediction. `-100` and special ids (padding included) are never targets, and padding
                positions predict nothing. The loss is `config.loss_type`.
            shift_labels: `[batch, length]`, the targets already shifted: `shift_labels[b, t]` is the item that
                follows position `t` (for the last position, the item after the window, which `labels` cannot
                hold). Used as given, instead of `labels`.
            num_items_in_batch: an int or a 0-d tensor, the number of targets the loss is averaged over: the loss is
                the sum over the batch's targets divided by it. `Trainer` passes the targets of the whole optimizer
                step (all accumulated batches and processes), so that every target of a step weighs the same; without
                it the loss is the mean over the batch's targets.
            logits_to_keep: compute logits only for the last `logits_to_keep` positions (an int; 0 keeps all), or
                for the positions a 1-D tensor of indices names. With left padding, 1 gives the scores of the next
                item for every user. The loss does not need logits and is computed from the hidden states.
            fused_lm_head: score only the targets of `labels` or `shift_labels`, each at its own position, and return
                their log-probabilities instead of logits: the call TRL's preference trainers make
                (`model(..., labels=..., fused_lm_head=True)`, trl>=1.15), answered here over items only, as the
                ranking evaluation scores them; see [`completion_log_probs`].
            disliked_ids: `[batch, num_disliked]`, each user's disliked items (padding below `num_special_tokens`):
                with `config.unlikelihood_weight > 0` and targets, adds that weight times their unlikelihood at every
                target position (`hf_sasrec.losses.unlikelihood_loss`) to the loss.

        Returns:
            [`SASRecCausalLMOutput`] with `logits` of shape `[batch, kept_positions, vocab_size]`, or, with
            `fused_lm_head`, [`SASRecCompletionLogProbsOutput`].
        """
        item_vectors = self.item_embeddings()
        real_items = real_item_mask(input_ids, attention_mask, self.config.pad_token_id)
        encoder_input_ids = input_ids
        if self.lm_head is None and inputs_embeds is None:  # the catalog is encoded once, for both sides
            encoder_input_ids, inputs_embeds, attention_mask = None, F.embedding(input_ids, item_vectors), real_items
        outputs = self.model(
            input_ids=encoder_input_ids,
            attention_mask=attention_mask,
            position_ids=position_ids,
            inputs_embeds=inputs_embeds,
            **kwargs,
        )
        hidden_states = outputs.last_hidden_state
        attention_mask = real_items
        targets = None
        if labels is not None or shift_labels is not None:
            targets = next_item_targets(labels, shift_labels, attention_mask)
        if fused_lm_head:
            if targets is None:
                raise ValueError("fused_lm_head=True scores targets: pass labels or shift_labels.")
            if shift_labels is None:  # the last position's target lies beyond `labels`
                hidden_states, targets = hidden_states[:, :-1], targets[:, :-1]
            scores = self.completion_log_probs(hidden_states, targets, item_vectors)
            count = scores["label_mask"].sum().clamp(min=1) if num_items_in_batch is None else num_items_in_batch
            head = self.causal_lm_output(
                outputs, -scores["log_probs"].sum() / count, None, input_ids=input_ids, attention_mask=attention_mask
            )
            return SASRecCompletionLogProbsOutput(loss=head.loss, aux_loss=getattr(head, "aux_loss", None), **scores)
        loss = None
        if targets is not None:
            loss = next_item_loss(
                hidden_states,
                targets,
                item_vectors,
                self.config,
                input_ids,
                num_items_in_batch,
                self.excluded_from_training,
            )
            has_target = targets >= self.config.num_special_tokens
            if disliked_ids is not None and self.config.unlikelihood_weight > 0 and has_target.any():
                loss = loss + self.config.unlikelihood_weight * unlikelihood_loss(
                    hidden_states[has_target],
                    disliked_ids[has_target.nonzero()[:, 0]],
                    item_vectors,
                    self.config.num_special_tokens,
                    num_items_in_batch,
                    self.excluded_from_training,
                )
        logits = F.linear(slice_logits_to_keep(hidden_states, logits_to_keep), item_vectors)
        return self.causal_lm_output(outputs, loss, logits, input_ids=input_ids, attention_mask=attention_mask)

    def completion_log_probs(
        self, hidden_states: torch.Tensor, targets: torch.LongTensor, item_vectors: torch.Tensor | None = None
    ) -> dict[str, torch.Tensor]:
        """Log-probability of each target item, normalised over items (special tokens excluded), computed at the
        positions that have a target only: a preference completion is one item or a few, so this costs a
        `[completion items, num_items]` product instead of `[batch, length, vocab_size]` logits.

        Args:
            hidden_states: `[batch, positions, hidden]`, the encoder's states.
            targets: `[batch, positions]`, the item each position predicts; `-100` or a special id where none.
            item_vectors: `[vocab_size, hidden]`, [`item_embeddings`] when already computed.

        Returns:
            `log_probs`, `entropy`, `log_sum_sq_probs`, `mean_logits` and `is_top1`, each `[batch, positions]` and
            zero where there is no target, and `label_mask` (`[batch, positions]` bool), as in
            [`SASRecCompletionLogProbsOutput`].
        """
        num_special_tokens = self.config.num_special_tokens
        mask = targets >= num_special_tokens
        if item_vectors is None:
            item_vectors = self.item_embeddings()
        logits = hidden_states[mask] @ item_vectors[num_special_tokens:].T  # [num_targets, num_items]
        log_probs = logits.float().log_softmax(-1)
        items = (targets[mask] - num_special_tokens)[:, None]
        with torch.no_grad():
            scores = {
                "entropy": -(log_probs.exp() * log_probs).sum(-1),
                "log_sum_sq_probs": torch.logsumexp(2 * log_probs, dim=-1),
                "mean_logits": logits.float().mean(-1),
                "is_top1": logits.argmax(-1) == items.squeeze(1),
            }
        scores["log_probs"] = log_probs.gather(1, items).squeeze(1)
        # `masked_scatter` keeps the result connected to the graph even when no position has a target.
        scores = {name: value.new_zeros(mask.shape).masked_scatter(mask, value) for name, value in scores.items()}
        return {**scores, "label_mask": mask}

    def causal_lm_output(
        self, outputs: BaseModelOutput, loss: torch.Tensor | None, logits: torch.Tensor, **inputs
    ) -> SASRecCausalLMOutput:
        """Gather the head's output from the encoder's output, the next-item loss and the logits."""
        return SASRecCausalLMOutput(
            loss=loss, logits=logits, hidden_states=outputs.hidden_states, attentions=outputs.attentions
        )


__all__ = [
    "SASRecCompletionLogProbsOutput",
    "SASRecForCausalLM",
    "SASRecModel",
    "SASRecPreTrainedModel",
    "last_real_states",
]
