"""Faiss retrieval over a model's item embeddings.

A user's score for an item is the dot product of the user's representation (the encoder's hidden state at the last
real item) with the item's row of the output embedding, which is exactly the model's logit. An `ItemIndex` indexes
those rows with an inner-product Faiss index, exact (`"flat"`, default) or approximate (`"hnsw"`, `"ivf"`), so that
its top-K is the model's own top-K over the real items: special tokens are never indexed.

Saved beside a checkpoint, the index carries a fingerprint of the embeddings it was built from and the size and SHA-256
of its own file; `ItemIndex.load` checks both before Faiss reads a byte of the file (`StaleIndexError` for other
weights, `InvalidIndexError` for a file changed, cut short or unreadable), and `load_or_build_item_index` rebuilds the
index from the weights then.
"""

import dataclasses
import functools
import hashlib
import itertools
import json
import logging
import math
from collections.abc import Collection, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import faiss
import numpy as np
import torch

from data_preprocess.atomic_files import atomic_path, atomic_write_json

logger = logging.getLogger(__name__)

INDEX_FILE = "item_index.faiss"
INDEX_METADATA_FILE = "item_index.json"
INDEX_TYPES = ("flat", "hnsw", "ivf", "auto")
RECALL_AT = 10
METADATA_FIELDS = ("config", "fingerprint", "num_items", "num_special_tokens", "index_file")


class InvalidIndexError(RuntimeError):
    """A saved index cannot serve the model: its files are unreadable, were changed after they were saved, or do not
    match the model or the index asked for."""


class StaleIndexError(InvalidIndexError):
    """A saved index was built from item embeddings other than the model's current ones."""


@dataclass
class RetrievalConfig:
    """How to index the item embeddings.

    Args:
        index_type: `"flat"` (exact inner product), `"hnsw"` (graph), `"ivf"` (inverted lists over k-means cells) or
            `"auto"`: exact up to `exact_max_items` items, else IVF with the fewest cells visited (`ivf_nprobe`,
            doubled from 1) whose recall@10 against exact search reaches `target_recall` on tuning queries (see
            [`auto_index`]); the index records the type and `ivf_nprobe` chosen and the recall measured.
        hnsw_m: neighbours per node of the HNSW graph.
        hnsw_ef_construction: candidate list size while building the HNSW graph.
        hnsw_ef_search: candidate list size while searching (raised to the number of results asked for).
        ivf_nlist: k-means cells of the IVF index; `None` gives `sqrt(num_items)`.
        ivf_nprobe: cells visited per query. The IVF index holds each item vector with one more coordinate that
            gives every vector the same norm (see [`with_norm_coordinate`]); scores are unchanged.
        target_recall: `"auto"`: the recall@10 against exact search to reach.
        exact_max_items: `"auto"`: catalogs up to this size get the exact index.
        use_gpu: move `"flat"` and `"ivf"` indexes to the GPU; `None` does so when faiss-gpu sees a GPU. Faiss has
            no GPU HNSW, so `"hnsw"` stays on the CPU.
    """

    index_type: str = "flat"
    hnsw_m: int = 32
    hnsw_ef_construction: int = 200
    hnsw_ef_search: int = 128
    ivf_nlist: int | None = None
    ivf_nprobe: int = 32
    target_recall: float = 0.95
    exact_max_items: int = 100_000
    use_gpu: bool | None = None

    def __post_init__(self):
        if self.index_type not in INDEX_TYPES:
            raise ValueError(f"Unknown index_type {self.index_type!r}; expected one of {INDEX_TYPES}.")
        for name in ("hnsw_m", "hnsw_ef_construction", "hnsw_ef_search", "ivf_nprobe", "exact_max_items"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be a positive integer, got {getattr(self, name)}.")
        if not 0.0 < self.target_recall <= 1.0:
            raise ValueError(f"target_recall must lie in (0, 1], got {self.target_recall}.")
        if self.ivf_nlist is not None and self.ivf_nlist < 1:
            raise ValueError(f"ivf_nlist must be a positive integer or None, got {self.ivf_nlist}.")
        if self.use_gpu and not gpu_available():
            raise ValueError("use_gpu=True needs faiss-gpu and a visible GPU; install faiss-gpu or leave it None.")

    def nlist_for(self, num_items: int) -> int:
        """Number of IVF cells for `num_items` items: `ivf_nlist`, or `sqrt(num_items)`, at most `num_items`."""
        nlist = self.ivf_nlist or round(math.sqrt(num_items))
        return max(1, min(nlist, num_items))


def index_fields(config: RetrievalConfig) -> dict:
    """The fields that shape the index (all but `use_gpu`, which depends on the machine that loads it)."""
    fields = asdict(config)
    del fields["use_gpu"]
    return fields


def gpu_available() -> bool:
    """Whether the installed faiss is faiss-gpu and sees at least one GPU."""
    return hasattr(faiss, "StandardGpuResources") and faiss.get_num_gpus() > 0


def item_rows(item_embeddings: torch.Tensor, num_special_tokens: int) -> np.ndarray:
    """The real items' embeddings as a contiguous float32 array: `[vocab, hidden]` to `[vocab - special, hidden]`."""
    if item_embeddings.ndim != 2:
        raise ValueError(f"item_embeddings must be [vocab, hidden], got shape {tuple(item_embeddings.shape)}.")
    if not 0 <= num_special_tokens < item_embeddings.shape[0]:
        raise ValueError(
            f"num_special_tokens ({num_special_tokens}) leaves no item in a vocabulary of {item_embeddings.shape[0]}."
        )
    rows = item_embeddings[num_special_tokens:].detach().to("cpu", torch.float32)
    return np.ascontiguousarray(rows.numpy())


def squared_norms(rows: np.ndarray) -> np.ndarray:
    """`[num_items]`, the squared norm of each of `rows` `[num_items, hidden]` (float32, without a table-sized
    temporary)."""
    return np.einsum("ij,ij->i", rows, rows)


def with_norm_coordinate(rows: np.ndarray, squared: np.ndarray, norm_bound: float) -> np.ndarray:
    """`rows` `[num_items, hidden]` (their `squared_norms` given) with one more coordinate, `sqrt(norm_bound² -
    |row|²)` (0 for a row longer than `norm_bound`), `[num_items, hidden + 1]` float32.

    Every row then has the norm `norm_bound`, and a query whose extra coordinate is 0 keeps its inner product with
    every row, so the items of largest inner product are the query's nearest neighbours: the reduction of
    inner-product search to nearest-neighbour search (Bachrach et al., 2014), which is what k-means cells partition
    well. A trained model gives its popular items vectors many times longer than the rest; without the extra
    coordinate, IVF puts them in cells by direction among the short ones and the cells a query visits miss them.
    """
    widened = np.empty((len(rows), rows.shape[1] + 1), dtype=np.float32)
    widened[:, :-1] = rows
    widened[:, -1] = np.sqrt(np.clip(norm_bound**2 - squared, 0.0, None))
    return widened


def embedding_fingerprint(item_embeddings: torch.Tensor) -> str:
    """SHA-256 of the float32 item embeddings `[vocab, hidden]`: changes whenever any weight changes."""
    weights = np.ascontiguousarray(item_embeddings.detach().to("cpu", torch.float32).numpy())
    digest = hashlib.sha256(str(weights.shape).encode())
    digest.update(weights.tobytes())
    return digest.hexdigest()


def file_record(data: bytes) -> dict:
    """Size and SHA-256 of an index file's bytes, as `item_index.json` records them."""
    return {"size": len(data), "sha256": hashlib.sha256(data).hexdigest()}


def read_index_metadata(directory: Path) -> dict:
    """`item_index.json` of `directory`; `InvalidIndexError` when it is not JSON or lacks a field `load` checks."""
    path = directory / INDEX_METADATA_FILE
    try:
        metadata = json.loads(path.read_bytes())
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise InvalidIndexError(f"{path} is not valid JSON ({error}).") from error
    missing = [key for key in METADATA_FIELDS if not isinstance(metadata, dict) or key not in metadata]
    if missing:
        raise InvalidIndexError(f"{path} lacks {missing}: it was written by an older version or cut short.")
    return metadata


def verified_index_bytes(directory: Path, recorded: dict) -> bytes:
    """The bytes of `item_index.faiss` in `directory`, once their size and SHA-256 are those `recorded` at saving."""
    path = directory / INDEX_FILE
    data = path.read_bytes()
    if file_record(data) != recorded:
        raise InvalidIndexError(
            f"{path} ({len(data)} bytes) is not the file {INDEX_METADATA_FILE} records (size and SHA-256): it was "
            "replaced or cut short after it was saved."
        )
    return data


def parse_index(data: bytes, path: Path, num_items: int, hidden: int, norm_coordinate: bool) -> faiss.Index:
    """The Faiss index of verified bytes; `InvalidIndexError` unless it holds `num_items` vectors of size `hidden`
    (one more with the `norm_coordinate`)."""
    try:
        index = faiss.deserialize_index(np.frombuffer(data, dtype=np.uint8))
    except RuntimeError as error:
        raise InvalidIndexError(f"Faiss cannot read {path}: {str(error).strip().splitlines()[-1]}") from error
    if index.ntotal != num_items or index.d != hidden + norm_coordinate:
        widened = " (plus the norm coordinate)" if norm_coordinate else ""
        raise InvalidIndexError(
            f"{path} holds {index.ntotal} vectors of size {index.d}; the model has {num_items} items of size "
            f"{hidden}{widened}."
        )
    return index


def new_faiss_index(rows: np.ndarray, config: RetrievalConfig) -> faiss.Index:
    """An empty (but trained) inner-product index of `config.index_type` for `rows` `[num_items, width]` (for IVF,
    rows with their norm coordinate: see [`with_norm_coordinate`])."""
    hidden = rows.shape[1]
    if config.index_type == "flat":
        return faiss.IndexFlatIP(hidden)
    if config.index_type == "hnsw":
        index = faiss.IndexHNSWFlat(hidden, config.hnsw_m, faiss.METRIC_INNER_PRODUCT)
        index.hnsw.efConstruction = config.hnsw_ef_construction
        return index
    quantizer = faiss.IndexFlatIP(hidden)
    index = faiss.IndexIVFFlat(quantizer, hidden, config.nlist_for(len(rows)), faiss.METRIC_INNER_PRODUCT)
    index.train(rows)
    index.nprobe = config.ivf_nprobe
    return index


def filled_index(rows: np.ndarray, config: RetrievalConfig) -> tuple[faiss.Index, float | None]:
    """An index of `config.index_type` holding `rows` `[num_items, hidden]`, and the norm bound of its rows: IVF
    holds them with their norm coordinate ([`with_norm_coordinate`]); the other types hold them as they are (`None`).
    """
    if config.index_type != "ivf":
        index = new_faiss_index(rows, config)
        index.add(rows)
        return index, None
    squared = squared_norms(rows)
    norm_bound = float(np.sqrt(squared.max()))
    widened = with_norm_coordinate(rows, squared, norm_bound)
    index = new_faiss_index(widened, config)
    index.add(widened)
    return index, norm_bound


def as_queries(user_states: np.ndarray, index: faiss.Index) -> np.ndarray:
    """`user_states` `[batch, hidden]` as queries of `index`: with a 0 coordinate appended when the index holds item
    vectors with their norm coordinate (one wider than the states), which leaves every inner product unchanged."""
    if index.d == user_states.shape[1] + 1:
        user_states = np.hstack([user_states, np.zeros((len(user_states), 1), dtype=user_states.dtype)])
    return np.ascontiguousarray(user_states, dtype=np.float32)


def default_tuning_queries(rows: np.ndarray, count: int = 1000, seed: int = 0) -> np.ndarray:
    """`count` stand-in user states: sums of two random item vectors (a user's state mixes the items it read)."""
    rng = np.random.default_rng(seed)
    pairs = rng.integers(0, len(rows), size=(count, 2))
    return np.ascontiguousarray(rows[pairs[:, 0]] + rows[pairs[:, 1]])


def recall_at(found: np.ndarray, exact: np.ndarray) -> float:
    """Mean share of each query's exact top-k ids (`[queries, k]`) that `found` (`[queries, k]`) holds."""
    return float(np.mean([len(set(row) & set(truth)) / len(truth) for row, truth in zip(found, exact, strict=True)]))


def auto_index(
    rows: np.ndarray, config: RetrievalConfig, queries: np.ndarray | None = None
) -> tuple[faiss.Index, RetrievalConfig, float, float | None]:
    """The index `"auto"` resolves to for `rows` `[num_items, hidden]` (filled), its config, its recall@10 and the
    norm bound of its rows (see [`filled_index`]).

    Up to `config.exact_max_items` items: exact (recall 1). Above: IVF over `nlist_for(num_items)` cells with the
    fewest cells visited (`nprobe`) whose recall@10 of the tuning `queries` `[count, hidden]` (default
    [`default_tuning_queries`]; pass real user states when there are some) against exact search reaches
    `config.target_recall`: `nprobe` doubles from 1 until it does (all cells at most, which is exact), then a
    bisection between the last value short of the target and the first one reaching it finds the smallest.
    """
    if len(rows) <= config.exact_max_items:
        index = faiss.IndexFlatIP(rows.shape[1])
        index.add(rows)
        return index, dataclasses.replace(config, index_type="flat"), 1.0, None
    queries = default_tuning_queries(rows) if queries is None else np.ascontiguousarray(queries, dtype=np.float32)
    _, truth = faiss.knn(queries, rows, RECALL_AT, metric=faiss.METRIC_INNER_PRODUCT)  # no second copy of rows
    ivf = dataclasses.replace(config, index_type="ivf")
    index, norm_bound = filled_index(rows, ivf)
    nlist = ivf.nlist_for(len(rows))
    index_queries = as_queries(queries, index)

    def recall_with(nprobe: int) -> float:
        _, found = index.search(index_queries, RECALL_AT, params=faiss.SearchParametersIVF(nprobe=nprobe))
        return recall_at(found, truth)

    short, nprobe = 0, 1
    recall = recall_with(nprobe)
    while recall < config.target_recall and nprobe < nlist:
        short, nprobe = nprobe, min(2 * nprobe, nlist)
        recall = recall_with(nprobe)
    while nprobe - short > 1:
        middle = (short + nprobe) // 2
        middle_recall = recall_with(middle)
        if middle_recall >= config.target_recall:
            nprobe, recall = middle, middle_recall
        else:
            short = middle
    index.nprobe = nprobe
    logger.info("auto index: IVF of %d cells, nprobe %d, tuned recall@10 %.4f", nlist, nprobe, recall)
    return index, dataclasses.replace(ivf, ivf_nprobe=nprobe), recall, norm_bound


def to_device(index: faiss.Index, config: RetrievalConfig) -> faiss.Index:
    """Move a CPU index to GPU 0 when the config asks for it (or leaves it to availability) and Faiss can."""
    use_gpu = gpu_available() if config.use_gpu is None else config.use_gpu
    if not use_gpu or config.index_type == "hnsw":
        return index
    return faiss.index_cpu_to_gpu(gpu_resources(), 0, index)


@functools.cache
def gpu_resources() -> "faiss.StandardGpuResources":
    """One set of Faiss GPU resources for the process, alive as long as the indexes that use it."""
    return faiss.StandardGpuResources()


def excluded_mask(candidates: np.ndarray, exclude: Sequence[Collection[int]]) -> np.ndarray:
    """`True` where `candidates[b, j]` (token ids, -1 for none, `[batch, fetched]`) is one of row `b`'s excluded ids.

    One `np.isin` over `(row, id)` pairs encoded as `row * span + id + 1`: memory grows with the candidates plus the
    excluded ids, not with their product.
    """
    lengths = [len(ids) for ids in exclude]
    excluded = np.fromiter(itertools.chain.from_iterable(exclude), dtype=np.int64, count=sum(lengths))
    span = int(max(candidates.max(initial=0), excluded.max(initial=0))) + 2
    excluded_keys = np.repeat(np.arange(len(exclude), dtype=np.int64), lengths) * span + excluded + 1
    candidate_keys = np.arange(len(candidates), dtype=np.int64)[:, None] * span + candidates + 1
    return np.isin(candidate_keys, excluded_keys)


class ItemIndex:
    """A Faiss inner-product index over the real items of a vocabulary.

    Faiss row `i` is the item of token id `i + num_special_tokens`; searches return token ids.
    """

    def __init__(
        self,
        index: faiss.Index,
        config: RetrievalConfig,
        num_special_tokens: int,
        fingerprint: str,
        requested: RetrievalConfig | None = None,
        tuned_recall: float | None = None,
        norm_bound: float | None = None,
    ) -> None:
        self.index = index
        self.norm_bound = norm_bound  # IVF: the norm its rows were widened to (see `with_norm_coordinate`)
        self.config = config  # what the index is; `requested` is what was asked for (an `"auto"` config)
        self.requested = requested or config
        self.tuned_recall = tuned_recall
        self.num_special_tokens = num_special_tokens
        self.fingerprint = fingerprint

    @classmethod
    def build(
        cls,
        item_embeddings: torch.Tensor,
        num_special_tokens: int,
        config: RetrievalConfig | None = None,
        tuning_queries: np.ndarray | None = None,
    ) -> "ItemIndex":
        """Index the rows of `item_embeddings` (`[vocab, hidden]`, the output layer) from `num_special_tokens` on;
        an `"auto"` config is tuned on `tuning_queries` `[count, hidden]` (see [`auto_index`])."""
        requested = config or RetrievalConfig()
        rows = item_rows(item_embeddings, num_special_tokens)
        fingerprint = embedding_fingerprint(item_embeddings)
        if requested.index_type == "auto":
            index, config, recall, norm_bound = auto_index(rows, requested, tuning_queries)
            index = to_device(index, config)
            return cls(index, config, num_special_tokens, fingerprint, requested, recall, norm_bound)
        index, norm_bound = filled_index(rows, requested)
        return cls(to_device(index, requested), requested, num_special_tokens, fingerprint, norm_bound=norm_bound)

    def add_items(self, item_embeddings: torch.Tensor) -> None:
        """Add the items of `item_embeddings` (`[vocab, hidden]`, the grown output layer) beyond those indexed, and
        take its fingerprint. The rows already indexed must be unchanged (new items do not move the others). In an
        IVF index, a new item longer than the norm bound the index was built with keeps its exact scores but is
        placed in a cell by direction only (logged with a count); rebuild the index when many are."""
        rows = item_rows(item_embeddings, self.num_special_tokens)
        if len(rows) < self.num_items:
            raise ValueError(f"{len(rows)} items, fewer than the {self.num_items} already indexed.")
        new_rows = np.ascontiguousarray(rows[self.num_items :])
        if self.norm_bound is not None:
            squared = squared_norms(new_rows)
            longer = int((squared > self.norm_bound**2).sum())
            if longer:
                logger.warning(
                    "%d of %d new items are longer than the index's norm bound %.4g: their scores stay exact, their "
                    "cells are chosen by direction only; rebuild the index if recall matters for them.",
                    longer,
                    len(new_rows),
                    self.norm_bound,
                )
            new_rows = with_norm_coordinate(new_rows, squared, self.norm_bound)
        self.index.add(new_rows)
        self.fingerprint = embedding_fingerprint(item_embeddings)

    @property
    def num_items(self) -> int:
        return self.index.ntotal

    @property
    def on_gpu(self) -> bool:
        return type(self.index).__name__.startswith("Gpu")

    def search_params(self, fetch: int) -> faiss.SearchParameters | None:
        """Per-search parameters from the config: the IVF cells to visit, or an HNSW candidate list at least as long
        as the results asked for."""
        if self.config.index_type == "hnsw":
            return faiss.SearchParametersHNSW(efSearch=max(self.config.hnsw_ef_search, fetch))
        if self.config.index_type == "ivf" and not self.on_gpu:
            return faiss.SearchParametersIVF(nprobe=self.config.ivf_nprobe)
        return None  # a GPU IVF index searches with the `nprobe` set when it was built

    def search(
        self, user_states: torch.Tensor, k: int, exclude: Sequence[Collection[int]] | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        """Top-`k` items by inner product for every user.

        Args:
            user_states: `[batch, hidden]` user representations.
            k: results a user.
            exclude: for each user, token ids that must not be returned (their history).

        Returns:
            Scores `[batch, k]` (float32, best first) and token ids `[batch, k]` (int64). Where fewer than `k` items
            are left (a user excluded nearly all of them, or an approximate index found too few), the row ends with
            id -1 and score -inf.
        """
        if not 1 <= k <= self.num_items:
            raise ValueError(f"k must lie in [1, {self.num_items}] (the number of indexed items), got {k}.")
        if exclude is not None and len(exclude) != len(user_states):
            raise ValueError(f"exclude has {len(exclude)} rows for {len(user_states)} users.")
        queries = as_queries(user_states.detach().to("cpu", torch.float32).numpy(), self.index)
        widest = max((len(row) for row in exclude), default=0) if exclude is not None else 0
        fetch = min(k + widest, self.num_items)
        scores, rows = self.index.search(queries, fetch, params=self.search_params(fetch))
        ids = np.where(rows >= 0, rows + self.num_special_tokens, -1)
        dropped = ids < 0
        if exclude is not None:
            dropped |= excluded_mask(ids, exclude)
        order = np.argsort(dropped, axis=1, kind="stable")[:, :k]
        kept_ids = np.take_along_axis(ids, order, axis=1)
        kept_scores = np.take_along_axis(scores, order, axis=1)
        missing = np.take_along_axis(dropped, order, axis=1)
        return np.where(missing, -np.inf, kept_scores).astype(np.float32), np.where(missing, -1, kept_ids)

    def save(self, directory: str | Path) -> None:
        """Write `item_index.faiss`, then `item_index.json` (config, weights fingerprint, item count, the index file's
        size and SHA-256) into `directory`, each atomically and the metadata last: a save cut short between them
        leaves a metadata that does not match the file, which `load` detects."""
        directory = Path(directory)
        index = faiss.index_gpu_to_cpu(self.index) if self.on_gpu else self.index
        data = faiss.serialize_index(index).tobytes()
        with atomic_path(directory / INDEX_FILE) as temporary:
            temporary.write_bytes(data)
        metadata = {
            "config": index_fields(self.config),
            "requested": index_fields(self.requested),
            "tuned_recall": self.tuned_recall,
            "norm_bound": self.norm_bound,
            "fingerprint": self.fingerprint,
            "num_items": self.num_items,
            "num_special_tokens": self.num_special_tokens,
            "index_file": file_record(data),
            "faiss_version": faiss.__version__,
        }
        atomic_write_json(directory / INDEX_METADATA_FILE, metadata)

    @classmethod
    def load(
        cls,
        directory: str | Path,
        item_embeddings: torch.Tensor,
        num_special_tokens: int,
        config: RetrievalConfig | None = None,
    ) -> "ItemIndex":
        """Read an index saved by `save`, after checking it against the model's current `item_embeddings` `[vocab,
        hidden]` and, when given, the `config` asked for (whose `use_gpu` it takes).

        The index file is read whole and its size and SHA-256 compared with those in `item_index.json` before Faiss
        parses a byte of it, and the parsed index must hold one vector per item: a downloaded index is never trusted
        without that check. Raises `FileNotFoundError` when there is no index, `StaleIndexError` when it was built
        from other weights, and `InvalidIndexError` when it is of another config or its files are unreadable, were
        changed after they were saved, or do not agree with the model.
        """
        directory = Path(directory)
        metadata = read_index_metadata(directory)
        if config is not None and metadata.get("requested", metadata["config"]) != index_fields(config):
            raise InvalidIndexError(
                f"The item index in {directory} is {metadata['config']}, not the {index_fields(config)} asked for."
            )
        fingerprint = embedding_fingerprint(item_embeddings)
        if metadata["fingerprint"] != fingerprint or metadata["num_special_tokens"] != num_special_tokens:
            raise StaleIndexError(
                f"The item index in {directory} was built from other item embeddings than the model's "
                f"(fingerprint {str(metadata['fingerprint'])[:12]}, model {fingerprint[:12]})."
            )
        data = verified_index_bytes(directory, metadata["index_file"])
        vocab, hidden = item_embeddings.shape
        norm_bound = metadata.get("norm_bound")  # absent from indexes saved before IVF held the norm coordinate
        index = parse_index(data, directory / INDEX_FILE, vocab - num_special_tokens, hidden, norm_bound is not None)
        try:
            saved_config = RetrievalConfig(**metadata["config"], use_gpu=config.use_gpu if config else None)
            requested = RetrievalConfig(**metadata.get("requested", metadata["config"]), use_gpu=saved_config.use_gpu)
        except (TypeError, ValueError) as error:
            raise InvalidIndexError(f"{directory / INDEX_METADATA_FILE} has an invalid config: {error}") from error
        return cls(
            to_device(index, saved_config),
            saved_config,
            num_special_tokens,
            fingerprint,
            requested,
            metadata.get("tuned_recall"),
            norm_bound,
        )


def index_exists(directory: str | Path) -> bool:
    """Whether `directory` holds a saved item index."""
    directory = Path(directory)
    return (directory / INDEX_FILE).is_file() and (directory / INDEX_METADATA_FILE).is_file()


def load_or_build_item_index(
    directory: str | Path,
    item_embeddings: torch.Tensor,
    num_special_tokens: int,
    config: RetrievalConfig | None = None,
    save: bool = True,
) -> ItemIndex:
    """An index of `config` (default exact) over `item_embeddings`, saved in `directory` when `save`.

    An exact (`"flat"`) index is always built from the weights, which takes no longer than reading it, so the default
    never parses a saved Faiss file. An approximate one saved in `directory` is reused only when it is of `config` and
    passes every check of `ItemIndex.load`; otherwise the reason is logged and the index rebuilt from the weights.
    What is saved never decides what a later call computes: that is `config` alone.
    """
    config = config or RetrievalConfig()
    if config.index_type != "flat" and index_exists(directory):
        try:
            return ItemIndex.load(directory, item_embeddings, num_special_tokens, config)
        except InvalidIndexError as error:
            logger.warning("%s Rebuilding the %s index from the model's weights.", error, config.index_type)
    index = ItemIndex.build(item_embeddings, num_special_tokens, config)
    if save:
        index.save(directory)
    return index


__all__ = [
    "INDEX_TYPES",
    "InvalidIndexError",
    "ItemIndex",
    "RetrievalConfig",
    "StaleIndexError",
    "auto_index",
    "embedding_fingerprint",
    "index_exists",
    "load_or_build_item_index",
]
