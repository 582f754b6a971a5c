"""Never lose a run: a real training process killed with SIGKILL at seeded random points always leaves a complete
checkpoint to resume from, and the run resumed with `--resume_from_checkpoint auto` ends as an uninterrupted one; a
checkpoint counts only when complete; DPO, too, refuses to replace a run."""

import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file
from sft_helpers import cut_in_half, tiny_run_arguments, write_tiny_dataset
from transformers import AutoModelForCausalLM, TrainerControl, TrainerState, TrainingArguments

from hf_sasrec import sft
from hf_sasrec.checkpoints import (
    CheckpointManifestCallback,
    OutputDirError,
    check_output_dir,
    checkpoint_problem,
    find_resume_checkpoint,
    resolve_resume,
)
from hf_sasrec.dpo import DPOScriptArguments, main
from hf_sasrec.dpo_config import RecommenderDPOConfig

TESTS = Path(__file__).parent
KILL_SEED = 0
STEPS_PER_EPOCH = 6  # 48 users, batches of 8
EPOCHS = 4
RUN = {"num_train_epochs": EPOCHS, "hidden_dropout_prob": 0.3, "attention_dropout": 0.1}
CHECKPOINT_WRITES = ("weights", "optimizer", "state")


def kill_points(seed: int) -> list[tuple[str, int]]:
    """Seeded kill points in training order: a training step before the first checkpoint and one after it, a write
    of each kind into a different checkpoint, then the write of the final model."""
    rng = random.Random(seed)
    checkpoints = [STEPS_PER_EPOCH * epoch for epoch in range(1, EPOCHS + 1)]
    later_steps = [step for step in range(STEPS_PER_EPOCH + 1, EPOCHS * STEPS_PER_EPOCH) if step % STEPS_PER_EPOCH]
    points = [("step", rng.randrange(1, STEPS_PER_EPOCH)), ("step", rng.choice(later_steps))]
    points += list(zip(rng.sample(CHECKPOINT_WRITES, 3), rng.sample(checkpoints, 3), strict=True))
    return [*sorted(points, key=lambda point: point[1]), ("final", 0)]


def run_until_killed(point: tuple[str, int], arguments: list[str], work: Path) -> None:
    """Run `reliability_worker.py` until it reaches `point`, then kill it with SIGKILL."""
    ready, log = work / f"ready-{point[0]}-{point[1]}", work / f"log-{point[0]}-{point[1]}.txt"
    environment = {
        **os.environ,
        "OMP_NUM_THREADS": "1",
        "PYTHONPATH": os.pathsep.join([str(TESTS), os.environ.get("PYTHONPATH", "")]),
        "KILL_POINT": f"{point[0]}:{point[1]}",
        "READY_FILE": str(ready),
    }
    command = [sys.executable, str(TESTS / "reliability_worker.py"), *arguments]
    with open(log, "w") as output:
        process = subprocess.Popen(command, env=environment, stdout=output, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 240
    while not ready.exists() and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    process.send_signal(signal.SIGKILL)
    process.wait()
    assert ready.exists(), f"{point} not reached:\n{log.read_text()[-3000:]}"


def expected_resume_step(point: tuple[str, int]) -> int | None:
    """The step of the newest checkpoint completed before the kill at `point` (`None` before the first)."""
    kind, step = point
    if kind == "final":
        return EPOCHS * STEPS_PER_EPOCH
    done = step - STEPS_PER_EPOCH if kind in CHECKPOINT_WRITES else step - step % STEPS_PER_EPOCH
    return done or None


def test_sigkill_at_random_points_always_resumes_to_the_uninterrupted_result(tmp_path):
    data_dir = write_tiny_dataset(tmp_path / "data")
    straight = sft.main(tiny_run_arguments(data_dir, tmp_path / "straight", **RUN))
    output_dir = tmp_path / "killed"
    arguments = tiny_run_arguments(data_dir, output_dir, resume_from_checkpoint="auto", **RUN)
    points = kill_points(KILL_SEED)
    assert len(points) >= 5 and {kind for kind, _ in points} >= {"step", *CHECKPOINT_WRITES}
    for point in points:
        run_until_killed(point, arguments, tmp_path)
        found, skipped = find_resume_checkpoint(output_dir)
        expected = expected_resume_step(point)
        assert found == (None if expected is None else output_dir / f"checkpoint-{expected}"), point
        if point[0] in CHECKPOINT_WRITES:
            assert output_dir / f"checkpoint-{point[1]}" in skipped, point
        if found is not None:
            assert AutoModelForCausalLM.from_pretrained(found).config.model_type == "sasrec"
    resumed = sft.main(arguments)
    assert resumed["global_step"] == straight["global_step"] == EPOCHS * STEPS_PER_EPOCH
    assert json.loads((output_dir / "metrics.json").read_text()) == pytest.approx(resumed)
    for name, value in straight.items():
        if "/" in name:
            assert resumed[name] == pytest.approx(value, abs=1e-6), name
    straight_weights = AutoModelForCausalLM.from_pretrained(tmp_path / "straight").state_dict()
    for name, tensor in AutoModelForCausalLM.from_pretrained(output_dir).state_dict().items():
        torch.testing.assert_close(tensor, straight_weights[name], msg=name)


def write_checkpoint(folder: Path, step: int) -> Path:
    """A small checkpoint as `Trainer` writes one (weights, optimizer, trainer state), with its manifest."""
    folder.mkdir(parents=True)
    save_file({"weight": torch.arange(64.0)}, folder / "model.safetensors")
    torch.save({"state": {0: {"exp_avg": torch.ones(64)}}}, folder / "optimizer.pt")
    TrainerState(global_step=step).save_to_json(str(folder / "trainer_state.json"))
    args = TrainingArguments(output_dir=str(folder.parent), report_to="none")
    CheckpointManifestCallback().on_save(args, TrainerState(global_step=step), TrainerControl())
    return folder


@pytest.mark.parametrize(
    ("damage", "problem"),
    [
        (lambda folder: cut_in_half(folder / "model.safetensors"), "model.safetensors does not load"),
        (lambda folder: cut_in_half(folder / "optimizer.pt"), "optimizer.pt does not load"),
        (lambda folder: cut_in_half(folder / "trainer_state.json"), "trainer_state.json does not load"),
        (lambda folder: (folder / "trainer_state.json").unlink(), "no trainer_state.json"),
        (lambda folder: (folder / "optimizer.pt").unlink(), "optimizer.pt is missing"),
        # Another complete write of the same size replaced one file only (a rewrite of the folder stopped half way).
        (
            lambda folder: save_file({"weight": torch.arange(64.0) + 1}, folder / "model.safetensors"),
            "model.safetensors differs from the one checkpoint_manifest.json records",
        ),
    ],
    ids=["truncated-weights", "truncated-optimizer", "truncated-state", "no-state", "no-optimizer", "mixed-rewrite"],
)
def test_a_checkpoint_counts_only_when_complete(tmp_path, damage, problem):
    assert checkpoint_problem(write_checkpoint(tmp_path / "checkpoint-6", 6)) is None
    damage(write_checkpoint(tmp_path / "checkpoint-12", 12))
    assert problem in checkpoint_problem(tmp_path / "checkpoint-12")
    found, skipped = find_resume_checkpoint(tmp_path)
    assert found == tmp_path / "checkpoint-6" and list(skipped) == [tmp_path / "checkpoint-12"]
    with pytest.raises(OutputDirError, match=rf"--resume_from_checkpoint {tmp_path / 'checkpoint-12'} cannot be"):
        resolve_resume(str(tmp_path / "checkpoint-12"), tmp_path)


def test_output_dir_rules(tmp_path):
    """Absent or empty: fine. Anything else needs resuming or overwriting; `auto` without a complete checkpoint
    starts over beside logs and incomplete checkpoints, never over a finished run."""
    check_output_dir(tmp_path / "absent", overwrite=False, resume_from=None)
    check_output_dir(tmp_path, overwrite=False, resume_from=None)
    (tmp_path / "runs").mkdir()
    with pytest.raises(OutputDirError, match=r"already holds files \(runs\): resume its run with"):
        check_output_dir(tmp_path, overwrite=False, resume_from=None)
    check_output_dir(tmp_path, overwrite=False, resume_from=None, auto=True)
    check_output_dir(tmp_path, overwrite=True, resume_from=None)
    (tmp_path / "metrics.json").write_text("{}")
    with pytest.raises(OutputDirError, match=r"a finished run and no complete checkpoint to resume \(metrics.json\)"):
        check_output_dir(tmp_path, overwrite=False, resume_from=None, auto=True)
    with pytest.raises(OutputDirError, match="but --overwrite_output_dir replaces the run: keep one"):
        check_output_dir(tmp_path, overwrite=True, resume_from=str(tmp_path / "checkpoint-6"))


def test_dpo_refuses_an_output_dir_holding_a_run(tmp_path):
    (tmp_path / "dpo").mkdir()
    (tmp_path / "dpo" / "metrics.json").write_text("{}")
    args = RecommenderDPOConfig(output_dir=str(tmp_path / "dpo"), report_to="none", use_cpu=True)
    script_args = DPOScriptArguments(sft_dir=str(tmp_path / "absent-sft"))
    with pytest.raises(OutputDirError, match=r"replace it with --overwrite_output_dir, or choose another"):
        main(script_args, args)
    assert (tmp_path / "dpo" / "metrics.json").read_text() == "{}"
    args.overwrite_output_dir = True  # the check passes, and the run stops at the next one: no SFT model
    with pytest.raises(FileNotFoundError, match="No SFT model"):
        main(script_args, args)
