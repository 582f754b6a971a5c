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
"""

import functools
import json
import logging
from collections.abc import Collection, Sequence
from pathlib import Path

import numpy as np
import torch
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from .checkpoint_loading import load_checkpoint
from .data_collator import left_pad, model_uses_timestamps
from .item_tokenizer import decode_items, encode_items
from .model_card import RUN_INFO_FILE, push_to_hub, save_for_hub
from .modeling_sasrec import last_real_states
from .retrieval import (
    ItemIndex,
    RetrievalConfig,
    StaleIndexError,
    embedding_fingerprint,
    load_or_build_item_index,
)

logger = logging.getLogger(__name__)

POPULARITY_FALLBACK = "popularity"


def history_max_length(checkpoint: Path, model: PreTrainedModel) -> int:
    """The training window of the run (`run_info.json`'s `max_length`), else the model's position limit."""
    run_info = checkpoint / RUN_INFO_FILE
    if run_info.is_file():
        max_length = json.loads(run_info.read_text()).get("max_length")
        if max_length:
            return min(int(max_length), model.config.max_position_embeddings)
    return model.config.max_position_embeddings


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
) -> torch.Tensor:
    """The encoder's state at the last real item of each history: `[batch, hidden]`, float32.

    Args:
        model: a `*ForCausalLM` of this package; its encoder `model.model` is the `AutoModel` of the checkpoint.
        histories: non-empty token-id histories in time order; only the last `max_length` items are read
            (default `config.max_position_embeddings`).
        timestamps: one integer time per history item, for models that take them (`tisasrec`).
    """
    config = model.config
    max_length = max_length or config.max_position_embeddings
    input_ids = left_pad([list(history)[-max_length:] for history in histories], config.pad_token_id)
    inputs = {"input_ids": input_ids, "attention_mask": input_ids.ne(config.pad_token_id)}
    if timestamps is not None:
        inputs["timestamps"] = left_pad([list(times)[-max_length:] for times in timestamps], 0)
    device = model.get_output_embeddings().weight.device
    inputs = {name: tensor.to(device) for name, tensor in inputs.items()}
    hidden = model.model(**inputs).last_hidden_state
    return last_real_states(hidden, inputs["attention_mask"]).float()


class Recommender:
    """Next-item recommendations from a causal-LM checkpoint of this package and its item tokenizer.

    Args:
        model: a `*ForCausalLM` of this package (any variant; `tisasrec` needs timestamps).
        tokenizer: the item tokenizer of the checkpoint.
        index: a Faiss index over the model's item embeddings (`StaleIndexError` if it was built from other
            weights); by default an exact one is built in memory. Users for whom an approximate index finds fewer
            than `top_k` items are searched again exactly.
        max_length: history items the model reads (the last ones); default `config.max_position_embeddings`.
        batch_size: histories encoded at once.
    """

    def __init__(
        self,
        model: PreTrainedModel,
        tokenizer: PreTrainedTokenizerBase,
        index: ItemIndex | None = None,
        max_length: int | None = None,
        batch_size: int = 256,
    ) -> None:
        self.model = model.eval()
        self.tokenizer = tokenizer
        self.config = model.config
        self.num_special_tokens = self.config.num_special_tokens
        if len(tokenizer) != self.config.vocab_size:
            raise ValueError(
                f"The tokenizer has {len(tokenizer)} tokens but the model's vocab_size is {self.config.vocab_size}: "
                "they do not belong together."
            )
        if index is not None and index.fingerprint != embedding_fingerprint(self.item_embeddings):
            raise StaleIndexError("The index was built from other item embeddings than this model's; rebuild it.")
        self.index = index or ItemIndex.build(self.item_embeddings, self.num_special_tokens)
        self.max_length = max_length or self.config.max_position_embeddings
        self.batch_size = batch_size
        self.uses_timestamps = model_uses_timestamps(model)

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
            model.get_output_embeddings().weight,
            model.config.num_special_tokens,
            index_config,
            save=save_index,
        )
        kwargs.setdefault("max_length", history_max_length(checkpoint, model))
        return cls(model, tokenizer, index=index, **kwargs)

    @property
    def item_embeddings(self) -> torch.Tensor:
        """The output layer the scores come from: `[vocab, hidden]`."""
        return self.model.get_output_embeddings().weight

    @property
    def num_items(self) -> int:
        """Items in the catalog: the vocabulary less the special tokens."""
        return self.config.vocab_size - self.num_special_tokens

    @functools.cached_property
    def exact_index(self) -> ItemIndex:
        """An exact index over the items: `index` when it is exact, else one built on first need."""
        if self.index.config.index_type == "flat":
            return self.index
        return ItemIndex.build(
            self.item_embeddings, self.num_special_tokens, RetrievalConfig(use_gpu=self.index.config.use_gpu)
        )

    def encode(self, history: Sequence[str]) -> tuple[list[int], list[bool]]:
        """Token ids of a history's keys (`<UNK>` for unknown ones) and whether each key is known."""
        ids = encode_items(self.tokenizer, [str(key) for key in history])
        return ids, [token_id >= self.num_special_tokens for token_id in ids]

    def user_states(
        self, histories: Sequence[Sequence[int]], timestamps: Sequence[Sequence[int]] | None = None
    ) -> torch.Tensor:
        """User representations `[batch, hidden]` of non-empty histories of token ids (see `user_representations`)."""
        return user_representations(
            self.model, histories, timestamps if self.uses_timestamps else None, self.max_length
        )

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
    ) -> list[tuple[list[int], list[float] | None]]:
        """Top-`top_k` item ids and scores for histories of token ids; an empty history gets the `top_k` most
        popular items and `None` scores. `top_k` above the catalog's item count raises `ValueError`; a history gets
        fewer than `top_k` items only when excluding it leaves fewer."""
        self.check_top_k(top_k)
        self.check_ids(histories, timestamps)
        popular = list(range(self.num_special_tokens, self.num_special_tokens + top_k))
        results: list[tuple[list[int], list[float] | None]] = [(popular, None)] * len(histories)
        rows = [row for row, history in enumerate(histories) if len(history)]
        for start in range(0, len(rows), self.batch_size):
            chunk = rows[start : start + self.batch_size]
            batch = [histories[row] for row in chunk]
            times = [timestamps[row] for row in chunk] if self.uses_timestamps else None
            exclude = [set(history) for history in batch] if exclude_history else None
            scores, ids = self.search(self.user_states(batch, times), top_k, exclude)
            for row, row_scores, row_ids in zip(chunk, scores, ids, strict=True):
                found = row_ids >= 0
                results[row] = (row_ids[found].tolist(), row_scores[found].tolist())
        return results

    def search(
        self, user_states: torch.Tensor, top_k: int, exclude: list[Collection[int]] | None
    ) -> tuple[np.ndarray, np.ndarray]:
        """`index.search`, where users for whom the index found fewer than `top_k` of the items left to them (an
        approximate index does not always reach every item) are searched again exactly, with a log line."""
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
            scores[short], ids[short] = self.exact_index.search(states, top_k, exclude=short_exclude)
        return scores, ids

    def __call__(
        self,
        histories: Sequence[str] | Sequence[Sequence[str]],
        top_k: int = 10,
        exclude_history: bool = True,
        timestamps: Sequence[int] | Sequence[Sequence[int]] | None = None,
    ) -> dict | list[dict]:
        """Recommend for one history (a list of raw item keys) or a list of histories.

        Args:
            histories: one history or a list of them, raw item keys in time order.
            top_k: items a history, at most the number of items in the catalog (`ValueError` above it).
            exclude_history: never recommend an item of the history.
            timestamps: `tisasrec` only: one integer time per history item, shaped as `histories`.

        Returns:
            For each history, `{"items": [keys], "scores": [floats] or None, "unknown_items": [keys], "fallback":
            None or "popularity"}`; a single dict for a single history.
        """
        single = is_single_history(histories)
        batch = [list(histories)] if single else [list(history) for history in histories]
        times = None
        if timestamps is not None:
            times = [list(timestamps)] if single else [list(row) for row in timestamps]
        ids, times, unknown = self.known_items(batch, times)
        results = self.recommend_ids(ids, top_k, exclude_history, times)
        outputs = [
            {
                "items": decode_items(self.tokenizer, item_ids),
                "scores": scores,
                "unknown_items": missing,
                "fallback": POPULARITY_FALLBACK if scores is None else None,
            }
            for (item_ids, scores), missing in zip(results, unknown, strict=True)
        ]
        return outputs[0] if single else outputs

    def known_items(
        self, histories: list[list], timestamps: list[list[int]] | None
    ) -> tuple[list[list[int]], list[list[int]] | None, list[list[str]]]:
        """Token ids of the known keys of every history, their timestamps, and the unknown keys (logged)."""
        if timestamps is not None and [len(row) for row in timestamps] != [len(row) for row in histories]:
            raise ValueError("timestamps must hold one time per history item, shaped as the histories.")
        ids, times, unknown = [], [] if timestamps is not None else None, []
        for row, history in enumerate(histories):
            token_ids, known = self.encode(history)
            ids.append([token_id for token_id, ok in zip(token_ids, known, strict=True) if ok])
            unknown.append([str(key) for key, ok in zip(history, known, strict=True) if not ok])
            if times is not None:
                times.append([time for time, ok in zip(timestamps[row], known, strict=True) if ok])
        skipped = sum(map(len, unknown))
        if skipped:
            users = sum(1 for row in unknown if row)
            logger.warning("Skipped %d unknown items in %d of %d histories.", skipped, users, len(histories))
        return ids, times, unknown

    def save_pretrained(self, path: str | Path, metrics: dict[str, float] | None = None, **card_fields) -> None:
        """Write what `push_to_hub` uploads: model, tokenizer, item index and model card (see `model_card`)."""
        save_for_hub(
            self.model,
            self.tokenizer,
            path,
            metrics=metrics,
            index=self.index,
            max_length=self.max_length,
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
            **kwargs,
        )


__all__ = ["POPULARITY_FALLBACK", "Recommender", "user_representations"]
