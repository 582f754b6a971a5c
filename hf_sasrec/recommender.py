"""`Recommender`: top-K next items for raw item histories, with the feel of a transformers pipeline.

```python
rec = Recommender.from_pretrained("outputs/sft/default")
rec(["1193", "661", "914"], top_k=10)  # {"items": [...], "scores": [...], "unknown_items": [], "fallback": None}
rec([["1193", "661"], ["914"]])  # one result a history, computed in batches
```

A history is a list of raw item keys in time order. Keys the tokenizer does not know are skipped, logged and returned
in `unknown_items`; a history left empty gets the most popular items (the lowest item ids: the tokenizer numbers items
by descending popularity) flagged `"fallback": "popularity"`, with no scores. Scores are the model's logits: the
encoder's state at the last real item dotted with the item embeddings, searched through a Faiss `ItemIndex`: exact
unless an approximate one is asked for. `top_k` above the number of items in the catalog is refused with a
`ValueError`; users for whom an approximate index finds fewer than `top_k` items are served exactly.

All but the Faiss search is `NextItemRecommender`'s (`hf_sasrec.recommendation`), which the `next-item-recommendation`
pipeline (`hf_sasrec.pipeline_next_item`) runs as well: the two give the same recommendations.
"""

import logging
from collections.abc import Collection, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from .checkpoint_loading import ITEM_VOCAB_FINGERPRINT, load_checkpoint
from .feature_encoding import encode_items, encode_users
from .item_tokenizer import build_item_tokenizer, item_keys, vocabulary_fingerprint
from .model_card import push_to_hub, save_for_hub
from .recommendation import POPULARITY_FALLBACK as POPULARITY_FALLBACK  # re-exported: callers import it from here
from .recommendation import ItemKeys, NextItemRecommender
from .recommendation import user_representations as user_representations  # re-exported as well
from .retrieval import (
    ItemIndex,
    RetrievalConfig,
    StaleIndexError,
    embedding_fingerprint,
    load_or_build_item_index,
)
from .run_info import RunInfo

logger = logging.getLogger(__name__)


def history_max_length(run_info: RunInfo, model: PreTrainedModel) -> int:
    """The training window of the run (`run_info.json`'s `max_length`), else the model's position limit."""
    if run_info.max_length:
        return min(int(run_info.max_length), model.config.max_position_embeddings)
    return model.config.max_position_embeddings


class Recommender(NextItemRecommender):
    """Next-item recommendations from a causal-LM checkpoint of this package and its item tokenizer, searched
    through a Faiss index (see `NextItemRecommender` for the rest).

    Args:
        model: a `*ForCausalLM` of this package (any variant; `tisasrec` needs timestamps).
        tokenizer: the item tokenizer of the checkpoint.
        index: a Faiss index over the model's item embeddings (`StaleIndexError` if it was built from other
            weights); by default an exact one is built in memory. Users for whom an approximate index finds fewer
            than `top_k` items are searched again exactly.
        max_length: history items the model reads (the last ones); default `config.max_position_embeddings`.
        batch_size: histories encoded at once.
        run_info: how the model was made (`run_info.json` of its run folder), carried into `save_pretrained`'s
            folder and model card.
    """

    def __init__(
        self,
        model: PreTrainedModel,
        tokenizer: PreTrainedTokenizerBase,
        index: ItemIndex | None = None,
        max_length: int | None = None,
        batch_size: int = 256,
        run_info: RunInfo | None = None,
    ) -> None:
        if len(tokenizer) != model.config.vocab_size:
            raise ValueError(
                f"The tokenizer has {len(tokenizer)} tokens but the model's vocab_size is {model.config.vocab_size}: "
                "they do not belong together."
            )
        keys = ItemKeys(item_keys(tokenizer), model.config.num_special_tokens)
        super().__init__(model, keys, max_length=max_length, batch_size=batch_size)
        self.tokenizer = tokenizer
        if index is not None and index.fingerprint != embedding_fingerprint(self.item_embeddings):
            raise StaleIndexError("The index was built from other item embeddings than this model's; rebuild it.")
        self.index = index or ItemIndex.build(self.item_embeddings, self.num_special_tokens)
        self.run_info = run_info or RunInfo()

    @classmethod
    def from_pretrained(
        cls,
        path: str | Path,
        *,
        index_config: RetrievalConfig | None = None,
        save_index: bool = False,
        device: str | torch.device | None = None,
        trust_remote_code: bool = False,
        **kwargs,
    ) -> "Recommender":
        """Load the model (`AutoModelForCausalLM`), the tokenizer and the item index of a checkpoint.

        The model and tokenizer come from `load_checkpoint`, which refuses a missing folder, a `model_type` whose code
        only the folder holds (unless `trust_remote_code`), non-finite weights and a tokenizer of another item
        vocabulary.

        The index is of `index_config` alone (default exact), whatever index the folder holds: an exact one is built
        from the weights; an approximate one saved in the folder is reused only when it is of `index_config` and
        passes the checks of `ItemIndex.load` (weights fingerprint, size and SHA-256 of the index file, checked
        before Faiss reads it, and item count), else it is rebuilt with a warning naming the reason. With
        `save_index`, the index is saved in the folder. `kwargs` go to the constructor (`max_length`, `batch_size`).
        """
        checkpoint, model, tokenizer = load_checkpoint(path, trust_remote_code=trust_remote_code, device=device)
        index = load_or_build_item_index(
            checkpoint,
            model.item_embeddings(),
            model.config.num_special_tokens,
            index_config,
            save=save_index,
        )
        run_info = RunInfo.load(checkpoint, missing_ok=True)
        kwargs.setdefault("max_length", history_max_length(run_info, model))
        return cls(model, tokenizer, index=index, run_info=run_info, **kwargs)

    def add_items(
        self,
        items: Mapping[str, Mapping[str, Any]],
        embeddings: Mapping[str, Mapping[str, Sequence[float]]] | None = None,
    ) -> list[int]:
        """Add items that arrived after training, without retraining: a model with item features scores them from
        their content (`hf_sasrec.feature_encoding` says which values a feature takes). They get the next token ids,
        in the order of `items`; the tokenizer, the model (its item encoder's rows and, with id embeddings, a zero id
        embedding each), the item-vocabulary fingerprint of its config and the Faiss index (with its weights
        fingerprint) grow with them. Returns their token ids.

        Args:
            items: raw item key -> `{feature: value}`; keys already in the catalog are refused.
            embeddings: modality name -> raw item key -> vector, for the model's modality tables.
        """
        if not items:
            raise ValueError("add_items needs at least one item.")
        present = sorted(str(key) for key in items if str(key) in self.item_keys.ids)
        if present:
            raise ValueError(f"Items already in the catalog: {present[:10]}.")
        if self.model.model.item_encoder is None:
            raise ValueError(
                "This model knows items by id only (no item_features): train it with --features to add items."
            )
        rows = encode_items(self.config.item_features, {str(key): value for key, value in items.items()}, embeddings)
        first = self.config.vocab_size
        self.model.model.add_items(rows)
        self.tokenizer = build_item_tokenizer(
            [*self.item_keys.keys, *map(str, items)], model_max_length=self.tokenizer.model_max_length
        )
        setattr(self.config, ITEM_VOCAB_FINGERPRINT, vocabulary_fingerprint(self.tokenizer))
        self.item_keys = ItemKeys(item_keys(self.tokenizer), self.num_special_tokens)
        self.refresh_item_embeddings()
        self.index.add_items(self.item_embeddings)
        logger.info("Added %d items (token ids %d to %d).", len(items), first, self.config.vocab_size - 1)
        return list(range(first, self.config.vocab_size))

    def encode_user_features(self, users: Sequence[Mapping[str, Any] | None]) -> dict[str, torch.Tensor]:
        """The raw user values encoded with the vocabularies and statistics of training (see
        `hf_sasrec.feature_encoding`)."""
        return encode_users(self.config.user_features, users)

    def search(
        self, user_states: torch.Tensor, top_k: int, exclude: Sequence[Collection[int]] | None
    ) -> tuple[np.ndarray, np.ndarray]:
        """`index.search`, where users for whom the index found fewer than `top_k` of the items left to them (an
        approximate index does not always reach every item) are searched again exactly (`NextItemRecommender`'s
        search), with a log line."""
        # Overridden: this class searches its Faiss index (exact by default, or approximate); the base class, exactly.
        scores, ids = self.index.search(user_states, top_k, exclude=exclude)
        left = [self.num_items - len(row) for row in exclude] if exclude is not None else [self.num_items] * len(ids)
        short = np.flatnonzero((ids >= 0).sum(axis=1) < np.minimum(top_k, left))
        if short.size:
            logger.info(
                "The %s index found fewer than top_k=%d items for %d of %d users; served them exactly.",
                self.index.config.index_type,
                top_k,
                short.size,
                len(ids),
            )
            short_exclude = [exclude[row] for row in short] if exclude is not None else None
            states = user_states[torch.from_numpy(short)]
            scores[short], ids[short] = super().search(states, top_k, short_exclude)
        return scores, ids

    def save_pretrained(self, path: str | Path, metrics: dict[str, float] | None = None, **card_fields) -> None:
        """Write what `push_to_hub` uploads: model, tokenizer, item index and model card (see `model_card`)."""
        save_for_hub(
            self.model,
            self.tokenizer,
            path,
            metrics=metrics,
            index=self.index,
            max_length=self.max_length,
            run_info=self.run_info,
            **card_fields,
        )

    def push_to_hub(self, repo_id: str, metrics: dict[str, float] | None = None, **kwargs):
        """Upload the `save_pretrained` folder to the Hub repository `repo_id` as one commit (needs network;
        `kwargs`: `dataset`, `private`, `token`, `commit_message`)."""
        return push_to_hub(
            self.model,
            self.tokenizer,
            repo_id,
            metrics=metrics,
            index=self.index,
            max_length=self.max_length,
            run_info=self.run_info,
            **kwargs,
        )


__all__ = ["Recommender"]
