"""Checkpoints that count only when complete, and run folders that are never replaced without being asked.

`Trainer` writes `checkpoint-N` in place, one file after the other, `trainer_state.json` last. After it,
[`CheckpointManifestCallback`] writes `checkpoint_manifest.json` atomically: the size and SHA-256 of every file. A
checkpoint is complete when its `trainer_state.json` records step N, every file of a known kind loads (JSON parses,
the safetensors header covers the file, torch archives pass their CRC check) and, where the manifest exists, every
file it lists still has its size and hash; the manifest catches a rewrite of the folder stopped half way, where each
file alone loads but they come from two different writes.

`--resume_from_checkpoint auto` resumes from the newest complete checkpoint. Newer checkpoints that are not complete
are moved to `skipped-checkpoints/` with a log line saying why, so that `Trainer` (rotation, the best checkpoint of
`load_best_model_at_end`) never reads them.

    python -m hf_sasrec.checkpoints CONFIG.yaml [CONFIG.yaml ...] [--key value ...]

parses each configuration as `python -m hf_sasrec.sft --config CONFIG.yaml --key value ...` does and checks its
`output_dir`, before anything runs (used by `scripts/sft.sh`, so that the second stage of a two-stage run is refused,
or its configuration error reported, before the first one trains).
"""

import hashlib
import json
import logging
import os
import re
import shutil
import sys
import zipfile
from pathlib import Path
from typing import Any

from safetensors import safe_open
from transformers import TrainerCallback, TrainerControl, TrainerState, TrainingArguments
from transformers.trainer_utils import PREFIX_CHECKPOINT_DIR

from data_preprocess.atomic_files import atomic_write_json

logger = logging.getLogger(__name__)

MANIFEST_NAME = "checkpoint_manifest.json"
TRAINER_STATE_NAME = "trainer_state.json"
SKIPPED_DIR = "skipped-checkpoints"
FINISHED_RUN_FILES = ("config.json", "model.safetensors", "metrics.json")
CHECKPOINT_PATTERN = re.compile(rf"^{PREFIX_CHECKPOINT_DIR}-(\d+)$")
TORCH_ARCHIVE_SUFFIXES = (".pt", ".pth", ".bin")
HASH_CHUNK = 1 << 20


class OutputDirError(ValueError):
    """`output_dir` or `resume_from_checkpoint` cannot be used as asked; the message says how to go on."""


def file_record(path: Path) -> dict[str, Any]:
    """Size and SHA-256 of a file."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(HASH_CHUNK):
            digest.update(chunk)
    return {"size": path.stat().st_size, "sha256": digest.hexdigest()}


class CheckpointManifestCallback(TrainerCallback):
    """After `Trainer` saved `checkpoint-N`, record the size and hash of its files in `checkpoint_manifest.json`."""

    def on_save(self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kwargs):
        folder = Path(args.output_dir) / f"{PREFIX_CHECKPOINT_DIR}-{state.global_step}"
        if state.is_world_process_zero and folder.is_dir():
            files = sorted(path for path in folder.iterdir() if path.is_file() and not path.name.startswith("."))
            records = {path.name: file_record(path) for path in files if path.name != MANIFEST_NAME}
            atomic_write_json(folder / MANIFEST_NAME, {"global_step": state.global_step, "files": records})


def file_load_problem(path: Path) -> str | None:
    """Why a checkpoint file of a known kind (JSON, safetensors, torch archive) does not load, or `None`."""
    try:
        if path.suffix == ".json":
            json.loads(path.read_text())
        elif path.suffix == ".safetensors":
            with safe_open(path, "pt") as handle:
                handle.keys()
        elif path.suffix in TORCH_ARCHIVE_SUFFIXES:
            with zipfile.ZipFile(path) as archive:
                broken = archive.testzip()
            if broken is not None:
                return f"{path.name} does not load: member {broken} fails its CRC check"
    except Exception as error:  # any failure to read the file means the checkpoint cannot be used
        return f"{path.name} does not load ({type(error).__name__}: {str(error).splitlines()[0]})"
    return None


def manifest_problem(folder: Path) -> str | None:
    """Why the files of `folder` differ from its manifest (a rewrite stopped half way), or `None` (or no manifest)."""
    manifest = folder / MANIFEST_NAME
    if not manifest.is_file():
        return None
    for name, recorded in json.loads(manifest.read_text())["files"].items():
        path = folder / name
        if not path.is_file():
            return f"{name} is missing (listed in {MANIFEST_NAME})"
        if file_record(path) != recorded:
            return f"{name} differs from the one {MANIFEST_NAME} records (a rewrite of the folder was interrupted)"
    return None


def checkpoint_problem(folder: str | Path) -> str | None:
    """Why the checkpoint `folder` is not complete, or `None` when it is (see the module docstring)."""
    folder = Path(folder)
    for path in sorted(folder.iterdir()):
        problem = file_load_problem(path) if path.is_file() else None
        if problem:
            return problem
    state_file = folder / TRAINER_STATE_NAME
    if not state_file.is_file():
        return f"no {TRAINER_STATE_NAME}, the file Trainer writes last (the write was interrupted)"
    match = CHECKPOINT_PATTERN.match(folder.name)
    recorded_step = json.loads(state_file.read_text()).get("global_step")
    if match and recorded_step != int(match.group(1)):
        return f"{TRAINER_STATE_NAME} records step {recorded_step}, not {match.group(1)}"
    return manifest_problem(folder)


def checkpoints_newest_first(output_dir: str | Path) -> list[Path]:
    """The `checkpoint-N` folders of `output_dir`, highest N first."""
    folder = Path(output_dir)
    if not folder.is_dir():
        return []
    found = [path for path in folder.iterdir() if path.is_dir() and CHECKPOINT_PATTERN.match(path.name)]
    return sorted(found, key=lambda path: int(CHECKPOINT_PATTERN.match(path.name).group(1)), reverse=True)


def find_resume_checkpoint(output_dir: str | Path) -> tuple[Path | None, dict[Path, str]]:
    """The newest complete checkpoint of `output_dir` (or `None`), and the newer ones skipped, with why.

    The best checkpoint that the chosen one records (`best_model_checkpoint`, loaded at the end with
    `load_best_model_at_end`) is checked too, and skipped when not complete.
    """
    skipped = {}
    for folder in checkpoints_newest_first(output_dir):
        problem = checkpoint_problem(folder)
        if problem is None:
            best = json.loads((folder / TRAINER_STATE_NAME).read_text()).get("best_model_checkpoint")
            is_other = best and Path(best).is_dir() and not Path(best).samefile(folder)
            best_problem = checkpoint_problem(best) if is_other else None
            if best_problem:
                skipped[Path(best)] = f"{best_problem}; it was the best checkpoint recorded by {folder.name}"
            return folder, skipped
        skipped[folder] = problem
    return None, skipped


def set_aside(skipped: dict[Path, str]) -> None:
    """Move incomplete checkpoints to `skipped-checkpoints/` beside them (replacing an earlier one of that name)."""
    for folder, problem in skipped.items():
        target = folder.parent / SKIPPED_DIR / folder.name
        if target.exists():
            shutil.rmtree(target)
        target.parent.mkdir(exist_ok=True)
        os.replace(folder, target)
        logger.warning("Skipped %s: %s. Moved it to %s.", folder, problem, target)


def remove_checkpoints(output_dir: str | Path) -> None:
    """Delete the checkpoints (and skipped checkpoints) of the run that `--overwrite_output_dir` replaces."""
    folders = [*checkpoints_newest_first(output_dir), Path(output_dir) / SKIPPED_DIR]
    for folder in filter(Path.is_dir, folders):
        logger.info("overwrite_output_dir: deleting %s of the previous run.", folder)
        shutil.rmtree(folder)


def resolve_resume(value: str | None, output_dir: str | Path) -> tuple[str | None, dict[Path, str]]:
    """The checkpoint that `--resume_from_checkpoint value` resumes from (`None`: a fresh start), and the checkpoints
    skipped as incomplete, with why. `auto`: the newest complete checkpoint of `output_dir`, else a fresh start;
    `true`: the same, but one must exist; a path: it must be a complete checkpoint."""
    mode = (value or "").lower()
    if mode in ("", "false", "none"):
        return None, {}
    if mode in ("auto", "true"):
        found, skipped = find_resume_checkpoint(output_dir)
        if found is None and mode == "true":
            raise OutputDirError(
                f"--resume_from_checkpoint true but {output_dir} has no complete checkpoint"
                + "".join(f"; {folder.name}: {problem}" for folder, problem in skipped.items())
                + "."
            )
        return (None if found is None else str(found)), skipped
    problem = checkpoint_problem(value) if Path(value).is_dir() else "no such folder"
    if problem:
        raise OutputDirError(
            f"--resume_from_checkpoint {value} cannot be resumed: {problem}. Pass another checkpoint, or "
            "--resume_from_checkpoint auto for the newest complete one."
        )
    return value, {}


def check_output_dir(
    output_dir: str | Path, overwrite: bool, resume_from: str | None, auto: bool = False, resumable: bool = True
) -> None:
    """Refuse to train into an `output_dir` that holds a run, unless the user said to resume it or to replace it.

    An absent or empty folder, `overwrite` and resuming (`resume_from`, a checkpoint) are fine; `overwrite` with a
    checkpoint to resume is a contradiction. A fresh start refuses any non-empty folder, as transformers' example
    scripts do; with `auto` (`--resume_from_checkpoint auto` found no complete checkpoint) it refuses only a finished
    run (`config.json`, `model.safetensors` or `metrics.json`) and starts over beside the rest (logs, incomplete
    checkpoints of a run killed early). `resumable=False` (DPO) leaves resumption out of the message.
    """
    if overwrite and resume_from is not None:
        raise OutputDirError(
            f"--resume_from_checkpoint resumes {resume_from} but --overwrite_output_dir replaces the run: keep one "
            "(--resume_from_checkpoint false to replace it)."
        )
    folder = Path(output_dir)
    if overwrite or resume_from is not None or not folder.is_dir():
        return
    names = sorted(path.name for path in folder.iterdir())
    if auto:
        names = [name for name in names if name in FINISHED_RUN_FILES]
    if not names:
        return
    ways = "replace it with --overwrite_output_dir, or choose another output_dir"
    if resumable and not auto:
        ways = f"resume its run with --resume_from_checkpoint auto (or a checkpoint path), {ways}"
    held = "a finished run and no complete checkpoint to resume" if auto else "files"
    shown = ", ".join(names[:6]) + (", ..." if len(names) > 6 else "")
    raise OutputDirError(f"output_dir {str(folder)!r} already holds {held} ({shown}): {ways}.")


def prepare_resume(
    output_dir: str | Path, resume_from_checkpoint: str | None, overwrite: bool
) -> tuple[str | None, dict[Path, str]]:
    """[`resolve_resume`] then [`check_output_dir`]: the checkpoint to resume from and the skipped ones. Reads only."""
    resume_from, skipped = resolve_resume(resume_from_checkpoint, output_dir)
    auto = (resume_from_checkpoint or "").lower() == "auto"
    check_output_dir(output_dir, overwrite, resume_from, auto=auto)
    return resume_from, skipped


def main(argv: list[str]) -> None:
    """Check the `output_dir` of every `CONFIG.yaml` that starts `argv`, each with the `--key value` arguments that
    follow them (the arguments of `python -m hf_sasrec.sft --config CONFIG.yaml ...`)."""
    from .training_args import parse_sft_args

    count = next((index for index, argument in enumerate(argv) if not argument.endswith((".yaml", ".yml"))), len(argv))
    for config in argv[:count]:
        training_args = parse_sft_args(["--config", config, *argv[count:]])[2]
        prepare_resume(
            training_args.output_dir, training_args.resume_from_checkpoint, training_args.overwrite_output_dir
        )


if __name__ == "__main__":
    from .argument_parser import ArgumentError

    try:
        main(sys.argv[1:])
    except ArgumentError as error:
        print(f"hf_sasrec.checkpoints: {error}", file=sys.stderr)
        sys.exit(2)
    except OutputDirError as error:
        sys.exit(f"hf_sasrec.checkpoints: {error}")
