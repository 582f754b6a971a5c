"""DPO preference pairs from a prepared dataset: `{prompt, chosen, rejected}` as item-token text, which TRL's
`DPOTrainer` takes directly.

The prompt is a user's training history (item tokens joined by single spaces), `chosen` the true next item and
`rejected` a dispreferred item, each with a leading space, so TRL's `prompt + chosen + eos_token` tokenizes to
`history + [item, <EOS>]`. `rejected_all` holds exactly `--num-rejected` rejected items (multi-negative S-DPO), best
first; `rejected` is its first. Rejected items come from one source:

- `low-rated`: items the user rated at most the `low_rating` of `prepare` (`low_rated.json`; needs ratings, and a
  `--min-rating` that kept those items out of the sequences), from the `pairs` part of `data_preprocess.dislikes`
  only: the `valid` and `test` dislikes stay held out for evaluation; a prompt whose user has none is dropped;
- `popular`: items drawn by training-split popularity;
- `hard`: the items nearest to the chosen one (cosine) in an item-embedding space: an `.npy` with one row per token id,
  or the output embeddings of a trained checkpoint.

A source with fewer candidates than `--num-rejected` is topped up with popularity draws (counted in the log). A
rejected item is never one the user interacted with in any split (nor the chosen item).

    python -m data_preprocess.preference --data data/ml-100k --output data/ml-100k-dpo --source popular
"""

from __future__ import annotations

import argparse
import json
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import numpy as np
from datasets import Dataset, DatasetDict, load_from_disk
from safetensors import safe_open
from transformers import PreTrainedTokenizerFast
from transformers.utils import SAFE_WEIGHTS_NAME

from .dislikes import LOW_RATED_FILE, load_dislikes
from .errors import PreprocessingError, cli_errors, logger, require_dataset_folder, setup_cli_output
from .item_tokenizer import NUM_SPECIAL_TOKENS
from .output import replace_folder

PROG = "python -m data_preprocess.preference"
SOURCES = ("low-rated", "popular", "hard")
MAX_REJECTED = 256
# Where a checkpoint keeps its output item embeddings: an untied head, else the input embeddings a tied head shares.
OUTPUT_EMBEDDINGS = ("lm_head.weight", "model.embed_tokens.weight")
# A rejected-item source: (user, chosen item) -> candidates the user never touched, best first.
Picker = Callable[[str, int], list[int]]


def _touched(data: DatasetDict) -> dict[str, set[int]]:
    """Every item of each user, over all splits."""
    touched: dict[str, set[int]] = {}
    for rows in data.values():
        for user, items in zip(rows["user_id"], rows["item_ids"], strict=True):
            touched.setdefault(user, set()).update(items)
    return touched


def _prompts(train: Dataset, all_positions: bool) -> list[tuple[str, list[int], int]]:
    """`(user, history, next item)` for each training row's last item, or for every position of it.

    A row of one item has no history to prompt with: it gives no prompt, and those rows are counted in the log.
    """
    prompts = []
    single_item_rows = 0
    for user, items in zip(train["user_id"], train["item_ids"], strict=True):
        single_item_rows += len(items) < 2
        for end in range(1 if all_positions else max(1, len(items) - 1), len(items)):
            prompts.append((user, items[:end], items[end]))
    if single_item_rows:
        logger.info("%d training rows of a single item give no prompt (no history)", single_item_rows)
    return prompts


def _low_rated_picker(data_dir: Path, touched: dict[str, set[int]], rng: np.random.Generator) -> Picker:
    low_rated = load_dislikes(data_dir, "pairs")
    if low_rated is None:
        raise FileNotFoundError(
            f"{data_dir / LOW_RATED_FILE}: the low-rated source needs a dataset prepared from a source with ratings"
        )

    def pick(user: str, chosen: int) -> list[int]:
        return [int(item) for item in rng.permutation(low_rated.get(user, [])) if item not in touched[user]]

    return pick


def _hard_picker(embeddings: np.ndarray, prompts: list, vocab_size: int, touched: dict[str, set[int]]) -> Picker:
    import faiss

    if embeddings.ndim != 2 or embeddings.shape[0] < vocab_size:
        raise PreprocessingError(
            f"item embeddings of shape {embeddings.shape}: expected one row per token id ({vocab_size})"
        )
    items = np.ascontiguousarray(embeddings[NUM_SPECIAL_TOKENS:vocab_size], dtype=np.float32)
    items /= np.maximum(np.linalg.norm(items, axis=1, keepdims=True), 1e-12)
    index = faiss.IndexFlatIP(items.shape[1])
    index.add(items)
    chosen = np.unique([prompt[2] for prompt in prompts])
    depth = min(len(items), max(len(seen) for seen in touched.values()) + MAX_REJECTED)
    _, neighbours = index.search(items[chosen - NUM_SPECIAL_TOKENS], depth)
    nearest = dict(zip(chosen.tolist(), (neighbours + NUM_SPECIAL_TOKENS).tolist(), strict=True))

    def pick(user: str, chosen: int) -> list[int]:
        return [item for item in nearest[chosen] if item not in touched[user]]

    return pick


def _no_candidates(user: str, chosen: int) -> list[int]:
    """The popular source: every rejected item comes from the popularity draws."""
    return []


class _Popularity:
    """Draws by training-split popularity among the items a user never touched."""

    def __init__(self, train: Dataset, vocab_size: int, rng: np.random.Generator) -> None:
        counts = np.bincount(
            np.concatenate([np.asarray(items, np.int64) for items in train["item_ids"]]), minlength=vocab_size
        )
        counts[:NUM_SPECIAL_TOKENS] = 0
        cumulative = np.cumsum(counts)
        self.cumulative = cumulative / cumulative[-1]  # ends at exactly 1, so a draw in [0, 1) is always an item
        self.most_popular = [item for item in np.argsort(-counts, kind="stable").tolist() if counts[item]]
        self.rng = rng

    def fill(self, picked: list[int], touched: set[int], size: int) -> list[int]:
        """`picked` topped up to `size` items: weighted draws, then (for users who touched most popular items) the
        most popular items left; shorter only if fewer items are left."""
        if len(picked) >= size:
            return picked
        candidates = (
            np.searchsorted(self.cumulative, self.rng.random(4 * size + 16), side="right").tolist(),
            self.most_popular,
        )
        for pool in candidates:
            for item in pool:
                if len(picked) == size:
                    return picked
                if item not in touched and item not in picked:
                    picked.append(item)
        return picked


def build_preference_pairs(
    data_dir: str | Path,
    source: str,
    num_rejected: int = 1,
    item_embeddings: np.ndarray | None = None,
    all_positions: bool = False,
    seed: int = 0,
) -> Dataset:
    """Preference pairs from the training split of a dataset saved by `prepare` (see the module docstring)."""
    if source not in SOURCES:
        raise PreprocessingError(f"unknown source {source!r}; expected one of {', '.join(SOURCES)}")
    if not 1 <= num_rejected <= MAX_REJECTED:
        raise PreprocessingError(f"num_rejected must be between 1 and {MAX_REJECTED}, got {num_rejected}")
    data_dir = require_dataset_folder(data_dir)
    data = load_from_disk(str(data_dir))
    tokenizer = PreTrainedTokenizerFast.from_pretrained(data_dir / "tokenizer")  # AutoTokenizer would load torch
    touched = _touched(data)
    prompts = _prompts(data["train"], all_positions)
    rng = np.random.default_rng(seed)
    popularity = _Popularity(data["train"], len(tokenizer), rng)
    if source == "low-rated":
        pick = _low_rated_picker(data_dir, touched, rng)
    elif source == "hard":
        if item_embeddings is None:
            raise PreprocessingError("the hard source needs item embeddings (--item-embeddings X.npy or --model PATH)")
        pick = _hard_picker(item_embeddings, prompts, len(tokenizer), touched)
    else:
        pick = _no_candidates
    columns: dict[str, list] = {"prompt": [], "chosen": [], "rejected": [], "rejected_all": [], "user_id": []}
    notes: Counter[str] = Counter()
    for user, history, chosen in prompts:
        rejected = pick(user, chosen)[:num_rejected]
        if source == "low-rated" and not rejected:
            notes["dropped: no low-rated item the user never touched"] += 1
            continue
        notes["topped up with popular items"] += 0 < len(rejected) < num_rejected
        rejected = popularity.fill(rejected, touched[user], num_rejected)
        if len(rejected) < num_rejected:
            notes["dropped: fewer untouched items than --num-rejected"] += 1
            continue
        rejected_tokens = [" " + token for token in tokenizer.convert_ids_to_tokens(rejected)]
        columns["prompt"].append(" ".join(tokenizer.convert_ids_to_tokens(history)))
        columns["chosen"].append(" " + tokenizer.convert_ids_to_tokens(chosen))
        columns["rejected"].append(rejected_tokens[0])
        columns["rejected_all"].append(rejected_tokens)
        columns["user_id"].append(user)
    for note, count in (+notes).items():
        logger.info("%d of %d prompts %s", count, len(prompts), note)
    if not columns["prompt"]:
        hint = " (prepare with --min-rating: low-rated items must stay out of the sequences)" * (source == "low-rated")
        raise PreprocessingError(f"no preference pair could be built from {data_dir} with the {source} source{hint}")
    logger.info("%d preference pairs from %d prompts (%s source)", len(columns["prompt"]), len(prompts), source)
    return Dataset.from_dict(columns)


def save_preference_pairs(pairs: Dataset, output: str | Path) -> None:
    """Save `pairs` to the folder `output` as a whole: a failure leaves the previous pairs (or none), never a part.

    An existing `output` must be empty or hold pairs saved before (`state.json`); it is replaced.
    """
    with replace_folder(output, ("state.json", "dataset_info.json"), PROG) as folder:
        pairs.save_to_disk(str(folder))
    logger.info("saved %d pairs to %s", len(pairs), output)


def model_item_embeddings(model_path: str | Path) -> np.ndarray:
    """The output item embeddings of a trained hf_sasrec checkpoint folder: `[vocab_size, hidden_size]`, float32.

    Read from its `model.safetensors` without loading the model (no model code, no torch): `lm_head.weight` when the
    head is untied, else `model.embed_tokens.weight`, which a tied head shares (and which is then saved alone).
    """
    path = Path(model_path) / SAFE_WEIGHTS_NAME
    if not path.is_file():
        raise PreprocessingError(f"{path} not found: --model takes a checkpoint folder saved by hf_sasrec training")
    config_path = Path(model_path) / "config.json"
    if config_path.is_file() and json.loads(config_path.read_text(encoding="utf-8")).get("item_features"):
        raise PreprocessingError(
            f"{model_path} scores items by their features: its item vectors are computed by the model, not stored; "
            "use hf_sasrec.checkpoint_loading.checkpoint_item_vectors (as hf_sasrec.dpo and hf_sasrec.semantic_ids do)"
        )
    with safe_open(path, framework="numpy") as weights:
        stored = set(weights.keys())
        name = next((name for name in OUTPUT_EMBEDDINGS if name in stored), None)
        if name is None:
            raise PreprocessingError(f"{path} holds none of {', '.join(OUTPUT_EMBEDDINGS)}: not an hf_sasrec model")
        if weights.get_slice(name).get_dtype() != "BF16":
            return weights.get_tensor(name).astype(np.float32)
    with safe_open(path, framework="pt") as weights:  # numpy has no bfloat16: such weights are read through torch
        return weights.get_tensor(name).float().numpy()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog=PROG,
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--data", required=True, help="a dataset folder written by `python -m data_preprocess`")
    parser.add_argument("--output", required=True, help="where to save the preference dataset")
    parser.add_argument("--source", required=True, choices=SOURCES)
    parser.add_argument("--num-rejected", type=int, default=1, help="rejected items per prompt (default 1)")
    embeddings = parser.add_mutually_exclusive_group()
    embeddings.add_argument("--item-embeddings", help="hard source: .npy with one row per token id")
    embeddings.add_argument("--model", help="hard source: a trained hf_sasrec checkpoint folder")
    parser.add_argument("--all-positions", action="store_true", help="a prompt for every position, not only the last")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    setup_cli_output()
    with cli_errors(PROG):
        vectors = None
        if args.item_embeddings:
            vectors = np.load(args.item_embeddings)
        elif args.model:
            vectors = model_item_embeddings(args.model)
        pairs = build_preference_pairs(
            args.data, args.source, args.num_rejected, vectors, args.all_positions, args.seed
        )
        save_preference_pairs(pairs, args.output)


if __name__ == "__main__":
    main()
