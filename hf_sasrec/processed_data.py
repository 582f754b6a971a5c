"""Reading the folder that `python -m data_preprocess --output DIR` writes: splits, `stats.json`, tokenizer."""

import json
import logging
from pathlib import Path
from typing import Any

import numpy as np
import torch
from datasets import Dataset, DatasetDict
from safetensors.torch import load_file
from transformers import AutoTokenizer, PreTrainedTokenizerBase

from data_preprocess.cold_items import COLD_ITEMS_FILE
from data_preprocess.dislikes import load_dislikes
from data_preprocess.features import FEATURES_FOLDER

from .data_collator import DISLIKED_IDS

logger = logging.getLogger(__name__)

SPLITS = ("train", "valid", "test")


def preparation_command(data_dir: str, config_file: str | None = None) -> str:
    """The command that writes `data_dir`: the `python -m data_preprocess ...` line of the training config's comments
    (with its continuation lines), else one with a placeholder `--input` (none for the embedded MovieLens-100K)."""
    if config_file and Path(config_file).is_file():
        lines = [line.lstrip("#").strip() for line in Path(config_file).read_text().splitlines()]
        starts = [row for row, line in enumerate(lines) if line.startswith("python -m data_preprocess ")]
        if starts:
            command = lines[starts[0]]
            for line in lines[starts[0] + 1 :]:
                if not command.endswith("\\"):
                    break
                command = f"{command[:-1].rstrip()} {line}"
            return command
    if Path(data_dir).name == "ml-100k":
        return f"python -m data_preprocess --output {data_dir}"
    return f"python -m data_preprocess --input YOUR_LOG_FILE --output {data_dir}"


def load_processed_data(
    data_dir: str, config_file: str | None = None
) -> tuple[DatasetDict, dict[str, Any], PreTrainedTokenizerBase]:
    """The splits, `stats.json` and tokenizer that `python -m data_preprocess --output data_dir` wrote.

    A missing folder raises `FileNotFoundError` with the command that prepares it (see [`preparation_command`]:
    `config_file` is the training config whose comments may name it).
    """
    path = Path(data_dir)
    if not path.is_dir():
        raise FileNotFoundError(
            f"Dataset path {data_dir!r} does not exist; create it with `{preparation_command(data_dir, config_file)}`."
        )
    splits = DatasetDict.load_from_disk(str(path))
    missing = [name for name in SPLITS if name not in splits]
    if missing:
        raise ValueError(f"{data_dir} lacks the split(s) {missing}; it has {list(splits)}.")
    stats_file = path / "stats.json"
    stats = json.loads(stats_file.read_text()) if stats_file.is_file() else {}
    tokenizer = AutoTokenizer.from_pretrained(str(path / "tokenizer"))
    return splits, stats, tokenizer


def cold_item_ids(data_dir: str | Path) -> list[int] | None:
    """The token ids of the items held out of training (`cold_items.json`, written by `python -m data_preprocess
    --cold-items FRACTION`), or `None` when the data folder has none."""
    path = Path(data_dir) / COLD_ITEMS_FILE
    return json.loads(path.read_text(encoding="utf-8"))["token_ids"] if path.is_file() else None


def item_counts(train: Dataset, vocab_size: int) -> torch.Tensor:
    """`[vocab_size]`: how often each token id occurs in the `item_ids` of `train`."""
    items = [np.asarray(row, dtype=np.int64) for row in train["item_ids"]]
    counts = np.bincount(np.concatenate(items) if items else np.zeros(0, np.int64), minlength=vocab_size)
    return torch.from_numpy(counts[:vocab_size])


def item_categories(data_dir: str | Path) -> torch.LongTensor | None:
    """The category ids `[vocab_size, max_values]` (0-padded) of the first multi-valued item feature of
    `data_dir/features/` (MovieLens' genres); `None` without one."""
    folder = Path(data_dir) / FEATURES_FOLDER
    if not (folder / "schema.json").is_file():
        return None
    items = json.loads((folder / "schema.json").read_text(encoding="utf-8")).get("items", {})
    multi = [(name, spec) for name, spec in items.get("features", {}).items() if spec["kind"] == "multi"]
    if not multi:
        return None
    _, spec = multi[0]
    return load_file(folder / items["file"])[spec["tensors"]["ids"]].long()


def beyond_accuracy_inputs(data_dir: str | Path, split_name: str, train: Dataset, vocab_size: int) -> dict[str, Any]:
    """The keyword inputs of `evaluate_next_item`'s beyond-accuracy metrics that a data folder gives for evaluating
    its split `split_name`: the training split's `item_counts` always; the held-out dislikes of that split's part
    (`data_preprocess.dislikes`: `valid` or `test`) where the data has ratings; the `item_categories` of its first
    multi-valued item feature where it has one."""
    inputs: dict[str, Any] = {"item_counts": item_counts(train, vocab_size)}
    dislikes = load_dislikes(data_dir, split_name) if split_name in ("valid", "test") else None
    if dislikes is not None:
        inputs["disliked_items"] = dislikes
    categories = item_categories(data_dir)
    if categories is not None:
        inputs["item_categories"] = categories
    return inputs


def attach_dislikes(train: Dataset, data_dir: str | Path) -> Dataset:
    """`train` with a `disliked_ids` column (the unlikelihood term's input): each user's dislikes of the `pairs` part
    of `data_preprocess.dislikes`, never those held out for validation and test. `ValueError` without ratings."""
    dislikes = load_dislikes(data_dir, "pairs")
    if dislikes is None:
        raise ValueError(
            f"unlikelihood_weight needs dislikes: {data_dir} has no low_rated.json (prepare rated data with "
            "python -m data_preprocess --min-rating R, so that low ratings stay out of the sequences)."
        )
    column = [dislikes.get(str(user), []) for user in train["user_id"]]
    logger.info(
        "Unlikelihood: %d of %d training rows have disliked items (%d in all, the pairs part).",
        sum(map(bool, column)),
        len(column),
        sum(map(len, column)),
    )
    return train.add_column(DISLIKED_IDS, column)


def drop_short_rows(split: Dataset, name: str) -> Dataset:
    """Rows with fewer than two items give no (history, target) pair: drop them, logging how many."""
    kept = split.filter(lambda row: len(row["item_ids"]) >= 2)
    if len(kept) < len(split):
        logger.warning(
            "%s: dropped %d of %d rows with fewer than two items.", name, len(split) - len(kept), len(split)
        )
    if len(kept) == 0:
        raise ValueError(f"The {name} split has no row with at least two items.")
    return kept
