"""A `DatasetDict` folder written one shard at a time: what `DatasetDict.save_to_disk(..., num_shards=N)` writes
(`load_from_disk` reads it, and `hf_sasrec.streaming` streams it shard by shard), without ever holding a whole split.

Shard `k` of every split is given as a small `DatasetDict` (the rows of one part of the users); each is saved with
`Dataset.save_to_disk` beside the split and its Arrow file moved in as `data-0000k-of-0000N.arrow`. `close` writes
each split's `state.json` naming its shards (and `dataset_info.json`, the same for every shard) and
`dataset_dict.json`.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

from datasets import DatasetDict

SINGLE_SHARD = "data-00000-of-00001.arrow"


class ShardedSplitsWriter:
    """Write the splits `names` under `folder` as `num_shards` shards each, given in order by `write`."""

    def __init__(self, folder: Path, names: tuple[str, ...], num_shards: int) -> None:
        self.folder, self.names, self.num_shards = folder, names, num_shards
        self.written = 0
        self.fingerprints: dict[str, list[str]] = {name: [] for name in names}

    def shard_name(self, index: int) -> str:
        return f"data-{index:05d}-of-{self.num_shards:05d}.arrow"

    def write(self, parts: DatasetDict) -> None:
        """Add the next shard of every split: `parts[name]` (its rows in order, possibly none)."""
        if self.written == self.num_shards:
            raise ValueError(f"all {self.num_shards} shards are written already")
        for name in self.names:
            staging = self.folder / f".{name}-shard"
            parts[name].save_to_disk(str(staging))
            target = self.folder / name
            if self.written == 0:
                staging.rename(target)
                (target / SINGLE_SHARD).rename(target / self.shard_name(0))
            else:
                (staging / SINGLE_SHARD).rename(target / self.shard_name(self.written))
                shutil.rmtree(staging)
            self.fingerprints[name].append(parts[name]._fingerprint)
        self.written += 1

    def close(self) -> None:
        """Name every split's shards in its `state.json`; write `dataset_dict.json`."""
        if self.written != self.num_shards:
            raise ValueError(f"{self.written} of {self.num_shards} shards written")
        for name in self.names:
            path = self.folder / name / "state.json"
            state = json.loads(path.read_text())
            state["_data_files"] = [{"filename": self.shard_name(index)} for index in range(self.num_shards)]
            state["_fingerprint"] = hashlib.sha256("".join(self.fingerprints[name]).encode()).hexdigest()[:16]
            path.write_text(json.dumps(state, indent=2, sort_keys=True))
        (self.folder / "dataset_dict.json").write_text(json.dumps({"splits": list(self.names)}))
