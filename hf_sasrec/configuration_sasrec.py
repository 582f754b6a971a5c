"""Configuration of SASRec, the base of every variant in this package."""

import re

from huggingface_hub.dataclasses import strict
from transformers import PreTrainedConfig

LOSS_TYPES = ("ce", "sampled_softmax", "bce", "infonce", "mixed_negatives")
NEGATIVE_SAMPLERS = ("uniform", "log_uniform")
ITEM_FEATURE_KINDS = ("categorical", "multi", "numeric", "embedding", "codes")
ITEM_FUSIONS = ("sum", "concat")


USER_FEATURE_KINDS = ("categorical", "multi", "numeric")


def check_feature_specs(specs: list[dict] | None, kinds: tuple[str, ...], what: str) -> None:
    """Raise `ValueError` naming the first feature of `specs` (the config's `what`) that cannot be built."""
    names = set()
    for spec in specs or []:
        name, kind = spec.get("name"), spec.get("kind")
        if not isinstance(name, str) or not re.fullmatch(r"[A-Za-z0-9_-]+", name) or name in names:
            raise ValueError(f"{what} {spec}: `name` must be unique, of letters, digits, '_' and '-'.")
        names.add(name)
        if kind not in kinds:
            raise ValueError(f"{what} {name!r}: unknown kind {kind!r}; expected one of {kinds}.")
        required = {"categorical": ("vocab_size",), "multi": ("vocab_size", "max_values"), "embedding": ("dim",)}
        for key in required.get(kind, ()):
            if not isinstance(spec.get(key), int) or spec[key] < 1:
                raise ValueError(f"{what} {name!r} ({kind}): `{key}` must be a positive integer.")
        if kind == "codes" and not (
            spec.get("level_sizes") and all(isinstance(size, int) and size > 0 for size in spec["level_sizes"])
        ):
            raise ValueError(f"{what} {name!r} (codes): `level_sizes` must list positive integers.")


@strict
class SASRecConfig(PreTrainedConfig):
    r"""
    Configuration of [`SASRecModel`] (Kang & McAuley, ICDM 2018) with modern defaults: RMSNorm, pre-norm blocks,
    learned absolute positions counted from the first real item of a sequence.

    Items are tokens of the item tokenizer: id `pad_token_id` (0) is padding and ids below `num_special_tokens` are
    special tokens (`<PAD>`, `<UNK>`, `<BOS>`, `<EOS>`, `<MASK>`) that are never scored as items.

    Args:
        vocab_size: number of item tokens, special tokens included.
        hidden_size: width of item embeddings and hidden states.
        num_hidden_layers: number of self-attention blocks.
        num_attention_heads: attention heads; must divide `hidden_size`.
        intermediate_size: width of the point-wise feed-forward layer (SASRec uses `hidden_size`).
        hidden_act: activation of the feed-forward layer.
        max_position_embeddings: longest history the model reads.
        hidden_dropout_prob: dropout on embeddings and on the output of every sublayer.
        attention_dropout: dropout on attention weights.
        rms_norm_eps: epsilon of RMSNorm.
        norm_first: pre-norm blocks (`True`) or post-norm blocks as in the original SASRec (`False`).
        scale_embeddings: multiply item embeddings by `sqrt(hidden_size)` as the original SASRec does.
        initializer_range: standard deviation of the normal weight initialisation.
        num_special_tokens: token ids below this are special tokens, excluded from losses and rankings.
        loss_type: `"ce"` (full softmax), `"sampled_softmax"`, `"bce"` (one negative a position, as in SASRec) or
            `"infonce"` (in-batch negatives) or `"mixed_negatives"` (the batch's targets and `num_negatives` uniform
            draws, `hf_sasrec.losses.mixed_negatives_loss`).
        ce_chunk_size: `"ce"` over a catalog larger than this is computed in chunks of this many items
            (`hf_sasrec.chunked_cross_entropy`: the same loss and gradients without the `[targets, items]` logits);
            `None`: always in one block.
        num_negatives: negatives a position for `"sampled_softmax"`; uniform draws of `"mixed_negatives"`.
        negative_sampler: `"uniform"` over items, or `"log_uniform"` (Zipfian over popularity-ordered ids).
        logq_correction: subtract the log sampling probability from the logits of sampled negatives (and, for
            `"mixed_negatives"`, of every candidate).
        temperature: logit temperature of `"infonce"`, `"sampled_softmax"` and `"mixed_negatives"`.
        item_features: the item features the item encoder reads (`None`: items are known by id alone), a list of
            dicts with `name` and `kind` (see `hf_sasrec.item_encoder`); set by training from the data's
            `features/` folder and semantic ids, their values saved with the weights. With item features, items are
            scored against their fused vectors and `tie_word_embeddings` is `False` (there is no separate head).
        item_fusion: how the item encoder fuses the id embedding and the features: `"sum"` or `"concat"` (a linear
            map of the concatenation).
        use_item_id: whether items have an id embedding; `False` (with `item_features`) gives a content-only model,
            which scores an item it never saw in training from its features.
        unlikelihood_weight: weight of the unlikelihood of the user's disliked items (`hf_sasrec.losses.
            unlikelihood_loss`) added to the next-item loss when a batch gives `disliked_ids`; 0 adds nothing.
        item_id_dropout: with item features and id embeddings, the probability that an item's id embedding is left
            out of its vector in a training step (not rescaled): the content parts then learn to score items alone,
            as they must for a new item, whose id embedding is zero.
        user_features: the user features the user encoder reads (`None`: none), dicts as `item_features` of the kinds
            `categorical`, `multi` and `numeric` (see `hf_sasrec.user_encoder`); set by training from the data's
            `features/` folder. Their values come with each batch (`user_features=`) and their embedding is added to
            every position's input.
    """

    model_type = "sasrec"

    vocab_size: int = 1024
    hidden_size: int = 64
    num_hidden_layers: int = 2
    num_attention_heads: int = 2
    intermediate_size: int | None = None
    hidden_act: str = "gelu"
    max_position_embeddings: int = 200
    hidden_dropout_prob: float | int = 0.2
    attention_dropout: float | int = 0.2
    rms_norm_eps: float | int = 1e-6
    norm_first: bool = True
    scale_embeddings: bool = True
    initializer_range: float | int = 0.02
    num_special_tokens: int = 5
    loss_type: str = "ce"
    ce_chunk_size: int | None = None
    num_negatives: int = 256
    negative_sampler: str = "uniform"
    logq_correction: bool = True
    temperature: float | int = 1.0
    unlikelihood_weight: float | int = 0.0
    item_features: list[dict] | None = None
    item_fusion: str = "sum"
    use_item_id: bool = True
    item_id_dropout: float | int = 0.0
    user_features: list[dict] | None = None
    pad_token_id: int | None = 0
    tie_word_embeddings: bool = True

    def __post_init__(self, **kwargs):
        if self.intermediate_size is None:
            self.intermediate_size = self.hidden_size
        if self.item_features:
            self.tie_word_embeddings = False
        self.check_values()
        super().__post_init__(**kwargs)

    def check_values(self) -> None:
        """Raise `ValueError` naming the first field whose value cannot build a model."""
        if self.hidden_size % self.num_attention_heads != 0:
            raise ValueError(
                f"hidden_size ({self.hidden_size}) must be divisible by num_attention_heads "
                f"({self.num_attention_heads})."
            )
        if self.loss_type not in LOSS_TYPES:
            raise ValueError(f"Unknown loss_type {self.loss_type!r}; expected one of {LOSS_TYPES}.")
        if self.negative_sampler not in NEGATIVE_SAMPLERS:
            raise ValueError(
                f"Unknown negative_sampler {self.negative_sampler!r}; expected one of {NEGATIVE_SAMPLERS}."
            )
        if self.pad_token_id != 0:
            raise ValueError(f"pad_token_id must be 0 (the item tokenizer's <PAD>), got {self.pad_token_id}.")
        if not 0 < self.num_special_tokens < self.vocab_size:
            raise ValueError(
                f"num_special_tokens ({self.num_special_tokens}) must be positive and below vocab_size "
                f"({self.vocab_size}): the vocabulary holds no item."
            )
        for name in (
            "hidden_size",
            "num_hidden_layers",
            "num_attention_heads",
            "intermediate_size",
            "max_position_embeddings",
            "num_negatives",
        ):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be a positive integer, got {getattr(self, name)}.")
        if self.ce_chunk_size is not None and self.ce_chunk_size < 1:
            raise ValueError(f"ce_chunk_size must be a positive integer or None, got {self.ce_chunk_size}.")
        for name in ("hidden_dropout_prob", "attention_dropout", "item_id_dropout"):
            if not 0.0 <= getattr(self, name) < 1.0:
                raise ValueError(f"{name} must lie in [0, 1), got {getattr(self, name)}.")
        if self.unlikelihood_weight < 0:
            raise ValueError(f"unlikelihood_weight must be non-negative, got {self.unlikelihood_weight}.")
        if self.temperature <= 0:
            raise ValueError(f"temperature must be positive, got {self.temperature}.")
        if self.item_fusion not in ITEM_FUSIONS:
            raise ValueError(f"Unknown item_fusion {self.item_fusion!r}; expected one of {ITEM_FUSIONS}.")
        if not self.use_item_id and not self.item_features:
            raise ValueError("use_item_id=False needs item_features: a model must know its items by id or by content.")
        check_feature_specs(self.item_features, ITEM_FEATURE_KINDS, "item feature")
        check_feature_specs(self.user_features, USER_FEATURE_KINDS, "user feature")

    @property
    def num_items(self) -> int:
        """Number of real items in the vocabulary."""
        return self.vocab_size - self.num_special_tokens


__all__ = ["SASRecConfig"]
