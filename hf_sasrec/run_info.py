"""`run_info.json`: what a run folder records about how its model was made, with one owner (`RunInfo`).

SFT (`hf_sasrec.sft`), DPO (`hf_sasrec.dpo`) and the Hub export (`save_for_hub`) write it; evaluation, inference, DPO
(the SFT run's data and history window), `Recommender.from_pretrained` and the model card read it, all through
`RunInfo.save` / `RunInfo.load`, as transformers' `TrainerState` is saved and loaded. The file carries a schema
`version`; a file without one was written by hf-sasrec 0.1.0 (version 0) and loads with its keys renamed.
"""

import dataclasses
import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from data_preprocess.atomic_files import atomic_write_json

logger = logging.getLogger(__name__)

RUN_INFO_FILE = "run_info.json"
RUN_INFO_VERSION = 1
# Keys of version 0 (hf-sasrec 0.1.0's DPO runs) that version 1 names apart from the SFT settings.
RENAMED_IN_VERSION_1 = {"source": "preference_source", "loss_type": "dpo_loss_type", "beta": "dpo_beta"}


@dataclass
class RunInfo:
    """The settings a run folder's model was made with; every field is optional (`None`: not recorded).

    Args:
        version: schema version of the file it was read from (`save` always writes `RUN_INFO_VERSION`).
        model_type: the variant (`sasrec`, `tisasrec`, ...).
        max_length: the history window the model was trained with (the most recent items it reads).
        dataset: the data set's name (`stats.json`'s `dataset`).
        split: how the data was split: `"leave-one-out"` or `"time"` (`stats.json`'s `args.split`).
        data_dir: the processed data folder (a local path).
        eval_protocol: the protocol of the evaluation that selected the model: `"full"` or `"sampled"`.
        exclude_history: whether the `full` protocol removed each user's history items from the ranking.
        num_sampled_negatives: negatives per user of the `sampled` protocol.
        data_rules: the settings that `hf_sasrec.data_rules` derived from the data (`--data_rules true`).
        command: the run's command-line arguments.
        sft_dir: DPO: the SFT run folder the model was aligned from.
        preference_dir: DPO: the preference pairs.
        preference_source: DPO: where the rejected items came from (`low-rated`, `popular`, `hard`).
        num_rejected: DPO: rejected items per prompt.
        dpo_loss_type: DPO: TRL's `loss_type` list, or `["softmax_dpo"]` (which hf-sasrec 0.1.0 wrote `["sdpo"]`).
        dpo_beta: DPO: TRL's `beta`.
    """

    version: int = RUN_INFO_VERSION
    model_type: str | None = None
    max_length: int | None = None
    dataset: str | None = None
    split: str | None = None
    data_dir: str | None = None
    eval_protocol: str | None = None
    exclude_history: bool | None = None
    num_sampled_negatives: int | None = None
    data_rules: dict[str, Any] | None = None
    command: list[str] | None = None
    sft_dir: str | None = None
    preference_dir: str | None = None
    preference_source: str | None = None
    num_rejected: int | None = None
    dpo_loss_type: list[str] | None = None
    dpo_beta: float | None = None

    def to_dict(self) -> dict[str, Any]:
        """The recorded fields (those not `None`), `version` first."""
        return {name: value for name, value in dataclasses.asdict(self).items() if value is not None}

    def save(self, folder: str | Path) -> None:
        """Write `folder/run_info.json` atomically, at the current schema version."""
        atomic_write_json(Path(folder) / RUN_INFO_FILE, dataclasses.replace(self, version=RUN_INFO_VERSION).to_dict())

    @classmethod
    def load(cls, folder: str | Path, *, missing_ok: bool = False) -> "RunInfo":
        """Read `folder/run_info.json`, of any version up to `RUN_INFO_VERSION` (keys of version 0 renamed).

        A missing file raises `FileNotFoundError`, or gives an empty `RunInfo` with `missing_ok`. Keys this version
        does not know are logged (with their count) and left out; a file of a newer version raises `ValueError`.
        """
        path = Path(folder) / RUN_INFO_FILE
        if not path.is_file():
            if missing_ok:
                return cls()
            raise FileNotFoundError(f"{path} not found: pass the run folder that training wrote.")
        values = json.loads(path.read_text(encoding="utf-8"))
        version = values.pop("version", 0)
        if version > RUN_INFO_VERSION:
            raise ValueError(
                f"{path} has version {version}, newer than this hf-sasrec reads ({RUN_INFO_VERSION}): upgrade "
                "hf-sasrec to read it."
            )
        if version == 0:
            values = {RENAMED_IN_VERSION_1.get(name, name): value for name, value in values.items()}
        known = {field.name for field in dataclasses.fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            logger.warning("%s: left out %d unknown keys: %s", path, len(unknown), ", ".join(unknown))
        return cls(version=version, **{name: value for name, value in values.items() if name in known})

    def without_local_paths(self) -> "RunInfo":
        """This record less what only means something on the machine that ran it (folders, the command line), as
        exported with a checkpoint for the Hub."""
        return dataclasses.replace(self, data_dir=None, command=None, sft_dir=None, preference_dir=None)


__all__ = ["RUN_INFO_FILE", "RunInfo"]
