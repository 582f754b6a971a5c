"""A tiny processed dataset, written as `python -m data_preprocess` writes one, for the training tests, and their
other helpers."""

import json
from pathlib import Path

import numpy as np
from datasets import Dataset, DatasetDict

from hf_sasrec.item_tokenizer import build_item_tokenizer, save_item_tokenizer
from hf_sasrec.training_args import SFTTrainingArguments

NUM_SPECIAL = 5


def write_tiny_dataset(path: Path, num_users: int = 48, num_items: int = 30, seed: int = 0) -> Path:
    """Users walk through the catalog with small random steps (a learnable next-item pattern); every user has
    train/valid/test rows in the leave-one-out layout: train = sequence[:-2], valid = sequence[:-1], test = all."""
    rng = np.random.default_rng(seed)
    rows = []
    for user in range(num_users):
        length = int(rng.integers(6, 14))
        start = int(rng.integers(0, num_items))
        items = [NUM_SPECIAL + (start + step + int(rng.integers(0, 2))) % num_items for step in range(length)]
        times = np.cumsum(rng.integers(1, 100, size=length)).tolist()
        rows.append((str(user), items, times))
    splits = {
        name: Dataset.from_dict(
            {
                "user_id": [user for user, _, _ in rows],
                "item_ids": [items[: len(items) - cut] for _, items, _ in rows],
                "timestamps": [times[: len(times) - cut] for _, _, times in rows],
            }
        )
        for name, cut in (("train", 2), ("valid", 1), ("test", 0))
    }
    DatasetDict(splits).save_to_disk(str(path))
    save_item_tokenizer(build_item_tokenizer([f"item{index}" for index in range(num_items)]), path / "tokenizer")
    stats = {"dataset": "tiny", "num_items": num_items, "num_users": num_users, "has_timestamps": True}
    (path / "stats.json").write_text(json.dumps(stats))
    return path


def cut_in_half(path: Path) -> None:
    """Keep the first half of a file, as a write killed half way does."""
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


def tiny_run_arguments(data_dir: Path, output_dir: Path, **overrides) -> list[str]:
    """Command-line arguments (`--key=value`) of a fast run on the tiny dataset."""
    values = {
        "data_dir": data_dir,
        "output_dir": output_dir,
        "model_type": "sasrec",
        "hidden_size": 16,
        "num_attention_heads": 2,
        "max_length": 8,
        "per_device_train_batch_size": 8,
        "per_device_eval_batch_size": 16,
        "learning_rate": 0.01,
        "num_train_epochs": 2,
        "report_to": "none",
        "disable_tqdm": True,
        "use_cpu": True,
        "seed": 0,
        **overrides,
    }
    return [f"--{key}={value}" for key, value in values.items()]


def training_only_arguments(output_dir: Path, **overrides) -> SFTTrainingArguments:
    """`SFTTrainingArguments` of a training that neither evaluates nor saves, on CPU, without reports."""
    values = {"eval_strategy": "no", "save_strategy": "no", "load_best_model_at_end": False, "report_to": "none"}
    return SFTTrainingArguments(output_dir=str(output_dir), use_cpu=True, **{**values, **overrides})
