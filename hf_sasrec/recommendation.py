"""Next-item recommendation for histories of raw item keys: the code `Recommender` and the `next-item-recommendation`
pipeline share.

`NextItemRecommender` reads histories of raw item keys in time order (`ItemKeys`: keys it does not know are skipped,
logged and reported), encodes the known items with the model (the encoder's state at the last real item, over the
last `max_length` items), searches the `top_k` items of highest score exactly over the item embeddings, the history
left out, and gives a history left empty the most popular items (the lowest item ids: the tokenizer numbers items by
descending popularity) flagged `"fallback": "popularity"`, with no scores. Scores are the model's logits. One result
a history: `{"items": [keys], "scores": [floats] or None, "unknown_items": [keys], "fallback": None or "popularity"}`.
`Recommender` searches a Faiss index instead (`search` is the one method it overrides).

This module imports torch, numpy, transformers and the model's own modules (`data_collator`, `modeling_sasrec`, which
import nothing else) only: never `data_preprocess`, Faiss or the rest of hf_sasrec. `save_pipeline_code` copies it,
with the pipeline's module, beside an exported checkpoint, where it runs as remote code without hf-sasrec installed.
"""

import logging
from collections.abc import Collection, Iterable, Mapping, Sequence
from typing import Any, Protocol

import numpy as np
import torch
from transformers import PreTrainedModel

from .data_collator import left_pad, model_uses_timestamps
from .modeling_sasrec import last_real_states

logger = logging.getLogger(__name__)

POPULARITY_FALLBACK = "popularity"


class ListReranker(Protocol):
    """What `recommend_ids` needs of `hf_sasrec.reranking.ExposurePenalty` (not imported: this module runs
    without the rest of hf_sasrec): how many candidates to retrieve a user, and their adjusted scores."""

    candidates: int

    def adjust(self, item_ids: torch.LongTensor, scores: torch.Tensor, k: int) -> torch.Tensor: ...


def is_single_history(histories: Sequence) -> bool:
    """Whether `histories` is one history (a list of keys) rather than a list of histories."""
    if isinstance(histories, str):
        raise TypeError("A history is a list of item keys, not a string: pass ['1193', '661'], not '1193 661'.")
    keys = [isinstance(item, str | int) for item in histories]
    if any(keys) and not all(keys):
        raise TypeError("Pass one history (a list of item keys) or a list of histories, not a mix of keys and lists.")
    return all(keys)


@torch.no_grad()
def user_representations(
    model: PreTrainedModel,
    histories: Sequence[Sequence[int]],
    timestamps: Sequence[Sequence[int]] | None = None,
    max_length: int | None = None,
    user_features: dict[str, torch.Tensor] | None = None,
) -> torch.Tensor:
    """The encoder's state at the last real item of each history: `[batch, hidden]`, float32.

    Args:
        model: a `*ForCausalLM` of this package; its encoder `model.model` is the `AutoModel` of the checkpoint.
        histories: non-empty token-id histories in time order; only the last `max_length` items are read
            (default `config.max_position_embeddings`).
        timestamps: one integer time per history item, for models that take them (`tisasrec`).
        user_features: the users' feature values, for models that read them (see `hf_sasrec.user_encoder`).
    """
    config = model.config
    max_length = max_length or config.max_position_embeddings
    input_ids = left_pad([list(history)[-max_length:] for history in histories], config.pad_token_id)
    inputs = {"input_ids": input_ids, "attention_mask": input_ids.ne(config.pad_token_id)}
    if timestamps is not None:
        inputs["timestamps"] = left_pad([list(times)[-max_length:] for times in timestamps], 0)
    device = next(model.parameters()).device
    inputs = {name: tensor.to(device) for name, tensor in inputs.items()}
    if user_features is not None:
        inputs["user_features"] = {name: tensor.to(device) for name, tensor in user_features.items()}
    hidden = model.model(**inputs).last_hidden_state
    return last_real_states(hidden, inputs["attention_mask"]).float()


class ItemKeys:
    """The raw item keys of a vocabulary and their token ids: `keys[i]` is the item of id `num_special_tokens + i`.

    Args:
        keys: the raw item keys in id order (`item_keys(tokenizer)` of the item tokenizer).
        num_special_tokens: ids below it are special tokens, not items.
    """

    def __init__(self, keys: Sequence[str], num_special_tokens: int) -> None:
        self.keys = list(keys)
        self.num_special_tokens = num_special_tokens
        self.ids = {key: num_special_tokens + index for index, key in enumerate(self.keys)}

    @classmethod
    def from_item2id(cls, item2id: Mapping[str, int], num_special_tokens: int) -> "ItemKeys":
        """The keys of an `item2id.json` (raw key -> token id), which is saved beside the item tokenizer."""
        keys = sorted(item2id, key=item2id.__getitem__)
        if [item2id[key] for key in keys] != list(range(num_special_tokens, num_special_tokens + len(keys))):
            raise ValueError(
                f"item2id does not number its {len(keys)} items one after the other from {num_special_tokens}: it is "
                "not the item map of this package's tokenizer."
            )
        return cls(keys, num_special_tokens)

    def __len__(self) -> int:
        return len(self.keys)

    def decode(self, ids: Iterable[int]) -> list[str]:
        """The raw keys of item token ids."""
        return [self.keys[token_id - self.num_special_tokens] for token_id in ids]

    def known_items(
        self, histories: Sequence[Sequence], timestamps: Sequence[Sequence[int]] | None
    ) -> tuple[list[list[int]], list[list[int]] | None, list[list[str]]]:
        """Token ids of the known keys of every history, their timestamps, and the unknown keys (logged)."""
        if timestamps is not None and [len(row) for row in timestamps] != [len(row) for row in histories]:
            raise ValueError("timestamps must hold one time per history item, shaped as the histories.")
        ids, times, unknown = [], [] if timestamps is not None else None, []
        for row, history in enumerate(histories):
            token_ids = [self.ids.get(str(key)) for key in history]
            ids.append([token_id for token_id in token_ids if token_id is not None])
            unknown.append([str(key) for key, token_id in zip(history, token_ids, strict=True) if token_id is None])
            if times is not None:
                times.append(
                    [time for time, token_id in zip(timestamps[row], token_ids, strict=True) if token_id is not None]
                )
        skipped = sum(map(len, unknown))
        if skipped:
            users = sum(1 for row in unknown if row)
            logger.warning("Skipped %d unknown items in %d of %d histories.", skipped, users, len(histories))
        return ids, times, unknown


class NextItemRecommender:
    """Top-K next items for histories of raw item keys, by exact search over the model's item embeddings.

    Args:
        model: a `*ForCausalLM` of this package (any variant; `tisasrec` needs timestamps).
        item_keys: the raw keys of the model's items (`ValueError` when their number is not the model's).
        max_length: history items the model reads (the last ones); default `config.max_position_embeddings`.
        batch_size: histories encoded at once.

    ```python
    recommender = NextItemRecommender(model, ItemKeys(item_keys(tokenizer), model.config.num_special_tokens))
    recommender(["1193", "661", "914"], top_k=3)  # {"items": [3 keys], "scores": [3 floats], "unknown_items": [], ...}
    recommender([["1193", "661"], ["914", "no such item"]])  # one result a history; "no such item" in unknown_items
    ```
    """

    def __init__(
        self, model: PreTrainedModel, item_keys: ItemKeys, max_length: int | None = None, batch_size: int = 256
    ) -> None:
        self.model = model.eval()
        self.config = model.config
        self.num_special_tokens = self.config.num_special_tokens
        if len(item_keys) != self.num_items or item_keys.num_special_tokens != self.num_special_tokens:
            raise ValueError(
                f"{len(item_keys)} item keys from id {item_keys.num_special_tokens} on, but the model has "
                f"{self.num_items} items from id {self.num_special_tokens} on: they do not belong together."
            )
        self.item_keys = item_keys
        self.max_length = max_length or self.config.max_position_embeddings
        self.batch_size = batch_size
        self.uses_timestamps = model_uses_timestamps(model)
        self._item_embeddings: torch.Tensor | None = None

    @property
    def item_embeddings(self) -> torch.Tensor:
        """The output layer the scores come from: `[vocab, hidden]`. A model with item features encodes its whole
        catalog to get it, so it is computed once and kept; call [`refresh_item_embeddings`] after changing the
        model's weights or items."""
        if self._item_embeddings is None:
            with torch.no_grad():
                self._item_embeddings = self.model.item_embeddings().detach()
        return self._item_embeddings

    def refresh_item_embeddings(self) -> None:
        """Forget the kept output layer: the next use of `item_embeddings` computes it from the model again."""
        self._item_embeddings = None

    @property
    def num_items(self) -> int:
        """Items in the catalog: the vocabulary less the special tokens."""
        return self.config.vocab_size - self.num_special_tokens

    def user_states(
        self,
        histories: Sequence[Sequence[int]],
        timestamps: Sequence[Sequence[int]] | None = None,
        user_features: dict[str, torch.Tensor] | None = None,
    ) -> torch.Tensor:
        """User representations `[batch, hidden]` of non-empty histories of token ids (see `user_representations`),
        with their users' encoded feature values for a model that reads user features."""
        return user_representations(
            self.model, histories, timestamps if self.uses_timestamps else None, self.max_length, user_features
        )

    def encode_user_features(self, users: Sequence[Mapping[str, Any] | None]) -> dict[str, torch.Tensor]:
        """The `user_features` input of raw user values (`{feature: value}` a user, `None` for none). Encoding them
        needs the training vocabularies and `data_preprocess`'s value parsing: `hf_sasrec.Recommender` does it; this
        class, which runs where hf-sasrec may be absent (the pipeline's remote code), refuses them."""
        raise ValueError("Raw user features are served by hf_sasrec.Recommender (hf-sasrec installed).")

    def check_top_k(self, top_k: int) -> None:
        """Raise `ValueError` unless `top_k` lies between 1 and the number of items in the catalog."""
        if not 1 <= top_k <= self.num_items:
            raise ValueError(
                f"top_k must lie in [1, {self.num_items}] (the catalog has {self.num_items} items), got {top_k}."
            )

    def check_ids(self, histories: Sequence[Sequence[int]], timestamps: Sequence[Sequence[int]] | None) -> None:
        """Raise `ValueError` on ids outside the items of the vocabulary or timestamps that do not fit."""
        vocab = self.config.vocab_size
        for row, history in enumerate(histories):
            bad = [token_id for token_id in history if not self.num_special_tokens <= token_id < vocab]
            if bad:
                raise ValueError(
                    f"History {row} holds ids {bad[:5]} outside the items [{self.num_special_tokens}, {vocab})."
                )
        if not self.uses_timestamps:
            return
        if timestamps is None:
            raise ValueError(f"{self.config.model_type} needs timestamps: one per history item.")
        if len(timestamps) != len(histories):
            raise ValueError(f"Got {len(timestamps)} timestamp lists for {len(histories)} histories.")
        for row, (history, times) in enumerate(zip(histories, timestamps, strict=True)):
            if len(history) != len(times):
                raise ValueError(f"History {row} has {len(history)} items but {len(times)} timestamps.")

    def recommend_ids(
        self,
        histories: Sequence[Sequence[int]],
        top_k: int = 10,
        exclude_history: bool = True,
        timestamps: Sequence[Sequence[int]] | None = None,
        user_features: dict[str, torch.Tensor] | None = None,
        exposure: ListReranker | None = None,
    ) -> list[tuple[list[int], list[float] | None]]:
        """Top-`top_k` item ids and scores for histories of token ids (and their users' encoded feature values,
        `"<feature>.<value>"` -> `[num_histories, ...]`); an empty history gets the `top_k` most popular items and
        `None` scores. `top_k` above the catalog's item count raises `ValueError`; a history gets
        fewer than `top_k` items only when excluding it leaves fewer.

        With `exposure` (`hf_sasrec.reranking.ExposurePenalty`, kept across calls), each list is re-chosen, in the
        order of the histories, among the user's `exposure.candidates` best items by the adjusted score, so that
        items no earlier list holds reach later users; the scores stay the model's (a list is no longer sorted
        by them). Popularity fallbacks are left as they are."""
        self.check_top_k(top_k)
        self.check_ids(histories, timestamps)
        search_k = top_k if exposure is None else min(max(top_k, exposure.candidates), self.num_items)
        popular = list(range(self.num_special_tokens, self.num_special_tokens + top_k))
        results: list[tuple[list[int], list[float] | None]] = [(popular, None)] * len(histories)
        rows = [row for row, history in enumerate(histories) if len(history)]
        for start in range(0, len(rows), self.batch_size):
            chunk = rows[start : start + self.batch_size]
            batch = [histories[row] for row in chunk]
            times = [timestamps[row] for row in chunk] if self.uses_timestamps else None
            users = None
            if user_features is not None:
                users = {name: values[torch.tensor(chunk)] for name, values in user_features.items()}
            exclude = [set(history) for history in batch] if exclude_history else None
            scores, ids = self.search(self.user_states(batch, times, users), search_k, exclude)
            for row, row_scores, row_ids in zip(chunk, scores, ids, strict=True):
                found = row_ids >= 0
                item_ids, item_scores = torch.from_numpy(row_ids[found]), torch.from_numpy(row_scores[found])
                if exposure is not None:
                    adjusted = exposure.adjust(item_ids, item_scores, top_k)
                    chosen = adjusted.topk(min(top_k, len(adjusted))).indices
                    item_ids, item_scores = item_ids[chosen], item_scores[chosen]
                results[row] = (item_ids.tolist(), item_scores.tolist())
        return results

    @torch.no_grad()
    def search(
        self, user_states: torch.Tensor, top_k: int, exclude: Sequence[Collection[int]] | None
    ) -> tuple[np.ndarray, np.ndarray]:
        """The exact top-`top_k` items of every user: the highest inner products of `user_states` `[batch, hidden]`
        with the item embeddings (the model's logits), the ids of `exclude[b]` left out for user `b`.

        Returns:
            Scores `[batch, top_k]` (float32, best first) and token ids `[batch, top_k]` (int64); where fewer than
            `top_k` items are left, the row ends with id -1 and score -inf (as `ItemIndex.search`).
        """
        items = self.item_embeddings[self.num_special_tokens :].float()
        scores = user_states.to(items.device).float() @ items.T  # [batch, num_items]
        if exclude is not None:
            pairs = [(row, token_id - self.num_special_tokens) for row, ids in enumerate(exclude) for token_id in ids]
            if pairs:
                rows, columns = torch.tensor(pairs, device=scores.device).T
                scores[rows, columns] = -torch.inf
        top = scores.topk(top_k, dim=-1)
        ids = torch.where(top.values > -torch.inf, top.indices + self.num_special_tokens, -1)
        return top.values.cpu().numpy(), ids.cpu().numpy()

    def recommendation(self, item_ids: list[int], scores: list[float] | None, unknown_items: list[str]) -> dict:
        """One history's result: its items' raw keys and scores, its unknown keys and whether it fell back."""
        return {
            "items": self.item_keys.decode(item_ids),
            "scores": scores,
            "unknown_items": unknown_items,
            "fallback": POPULARITY_FALLBACK if scores is None else None,
        }

    def __call__(
        self,
        histories: Sequence[str] | Sequence[Sequence[str]],
        top_k: int = 10,
        exclude_history: bool = True,
        timestamps: Sequence[int] | Sequence[Sequence[int]] | None = None,
        user_features: Mapping[str, Any] | Sequence[Mapping[str, Any] | None] | None = None,
        exposure: ListReranker | None = None,
    ) -> dict | list[dict]:
        """Recommend for one history (a list of raw item keys) or a list of histories.

        Args:
            histories: one history or a list of them, raw item keys in time order.
            top_k: items a history, at most the number of items in the catalog (`ValueError` above it).
            exclude_history: never recommend an item of the history.
            timestamps: `tisasrec` only: one integer time per history item, shaped as `histories`.
            user_features: for a model that reads user features, the user's raw values (`{"age": 25, "gender":
                "F"}`; see `hf_sasrec.feature_encoding`), or one such dict (or `None`) per history; a user without
                them is served with every feature missing.
            exposure: spread the lists over the catalog (see `recommend_ids`).

        Returns:
            For each history, `{"items": [keys], "scores": [floats] or None, "unknown_items": [keys], "fallback":
            None or "popularity"}`; a single dict for a single history.
        """
        single = is_single_history(histories)
        batch = [list(histories)] if single else [list(history) for history in histories]
        times = None
        if timestamps is not None:
            times = [list(timestamps)] if single else [list(row) for row in timestamps]
        encoded = None
        if user_features is not None:
            users = [user_features] if single else list(user_features)
            if len(users) != len(batch):
                raise ValueError(f"Got {len(users)} user_features for {len(batch)} histories.")
            if not self.config.user_features:
                raise ValueError(
                    "user_features were given, but this model reads none (its config has no user_features)."
                )
            encoded = self.encode_user_features(users)
        ids, times, unknown = self.item_keys.known_items(batch, times)
        results = self.recommend_ids(ids, top_k, exclude_history, times, encoded, exposure)
        outputs = [
            self.recommendation(item_ids, scores, missing)
            for (item_ids, scores), missing in zip(results, unknown, strict=True)
        ]
        return outputs[0] if single else outputs


__all__ = ["POPULARITY_FALLBACK", "ItemKeys", "NextItemRecommender", "is_single_history", "user_representations"]
