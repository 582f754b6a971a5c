"""Two CPU processes (gloo) through `torchrun` or `accelerate launch`: DDP via Trainer shards the data and saves
once."""

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from sft_helpers import tiny_run_arguments, write_tiny_dataset

TESTS = Path(__file__).parent


@pytest.mark.ddp  # deselect with -m 'not ddp'
@pytest.mark.parametrize(
    ("launcher", "sampling"),
    [
        ([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2"], "random"),
        # The launcher of `LAUNCHER=accelerate bash scripts/sft.sh`, with length-bucketed batches.
        (
            [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2"],
            "group_by_length",
        ),
    ],
    ids=["torchrun", "accelerate"],
)
def test_two_processes_see_different_users_and_save_once(tmp_path, launcher, sampling):
    data_dir = write_tiny_dataset(tmp_path / "data")
    output_dir = tmp_path / "run"
    command = [
        *launcher,
        str(TESTS / "ddp_worker.py"),
        *tiny_run_arguments(
            data_dir, output_dir, num_train_epochs=1, ddp_backend="gloo", train_sampling_strategy=sampling
        ),
    ]
    environment = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(TESTS)}
    process = subprocess.Popen(
        command, env=environment, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True
    )
    try:
        _, stderr = process.communicate(timeout=120)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)  # torchrun and both workers
        raise
    assert process.returncode == 0, stderr[-3000:]
    ranks = [json.loads((output_dir / f"rank{rank}.json").read_text()) for rank in (0, 1)]
    users = [set(rank["users"]) for rank in ranks]
    # 48 users, 8 a batch and 2 processes: 3 steps, each process trains on its own 24 users.
    assert len(users[0]) == len(users[1]) == 24
    assert not users[0] & users[1]
    assert ranks[0]["saves"] >= 1 and ranks[1]["saves"] == 0
    assert len(list(output_dir.glob("model.safetensors"))) == 1
    assert json.loads((output_dir / "trainer_state.json").read_text())["global_step"] == 3
