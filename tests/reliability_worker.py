"""Entry point of the kill test: `hf_sasrec.sft` that stops at one chosen point and waits there to be killed.

`KILL_POINT` is `KIND:STEP`; at that point the process writes the file `READY_FILE` and sleeps, and the test sends
SIGKILL. Kinds:

- `step:K`: during training step K + 1 (after K steps).
- `weights:N`, `optimizer:N`, `state:N`: while `model.safetensors`, `optimizer.pt` or `trainer_state.json` of
  `checkpoint-N` is written (only the first half of its bytes is on disk).
- `final:0`: while the run folder's own `model.safetensors` is written, after training.
"""

import os
import sys
import time
from pathlib import Path

import torch
import transformers.modeling_utils
from sft_helpers import cut_in_half
from transformers import TrainerState

from hf_sasrec import sft
from hf_sasrec.sft_trainer import NextItemTrainer

KIND, STEP = os.environ["KILL_POINT"].split(":")
OUTPUT_DIR = Path(next(argument.split("=", 1)[1] for argument in sys.argv if argument.startswith("--output_dir=")))
READY_FILE = Path(os.environ["READY_FILE"])
ORIGINAL = {
    "training_step": NextItemTrainer.training_step,
    "safe_save_file": transformers.modeling_utils.safe_save_file,
    "torch_save": torch.save,
    "save_to_json": TrainerState.save_to_json,
}


def wait_to_be_killed() -> None:
    """Tell the test that the point is reached, then wait for SIGKILL."""
    READY_FILE.write_text(os.environ["KILL_POINT"])
    time.sleep(600)
    sys.exit("reliability_worker: not killed within 600 s")


def cut_in_half_then_wait(path: str | os.PathLike) -> None:
    """Keep the first half of the file just written (a write cut short by the kill), then wait to be killed."""
    cut_in_half(Path(path))
    wait_to_be_killed()


def is_target(path: str | os.PathLike, kind: str) -> bool:
    """Whether `path` is the file that a kill point of `kind` interrupts."""
    folder = OUTPUT_DIR if kind == "final" else OUTPUT_DIR / f"checkpoint-{STEP}"
    return kind == KIND and Path(path).parent.resolve() == folder.resolve()


def training_step(trainer, *args, **kwargs):
    if KIND == "step" and trainer.state.global_step == int(STEP):
        wait_to_be_killed()
    return ORIGINAL["training_step"](trainer, *args, **kwargs)


def safe_save_file(tensors, filename, metadata=None):
    ORIGINAL["safe_save_file"](tensors, filename, metadata=metadata)
    if is_target(filename, "weights") or is_target(filename, "final"):
        cut_in_half_then_wait(filename)


def torch_save(obj, f, *args, **kwargs):
    ORIGINAL["torch_save"](obj, f, *args, **kwargs)
    if isinstance(f, (str, os.PathLike)) and Path(f).name == "optimizer.pt" and is_target(f, "optimizer"):
        cut_in_half_then_wait(f)


def save_to_json(state, json_path):
    ORIGINAL["save_to_json"](state, json_path)
    if is_target(json_path, "state"):
        cut_in_half_then_wait(json_path)


if __name__ == "__main__":
    NextItemTrainer.training_step = training_step
    transformers.modeling_utils.safe_save_file = safe_save_file
    torch.save = torch_save
    TrainerState.save_to_json = save_to_json
    sft.main(sys.argv[1:])
