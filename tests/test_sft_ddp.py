"""Two CPU processes (gloo) through `torchrun` or `accelerate launch`: DDP via Trainer shards the data and saves
once; torch's FSDP2 shards the item table and trains as one process does."""

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from fsdp_reference import STEPS, global_batch, optimizer_for, step_loss
from model_helpers import VOCAB_SIZE, tiny_model
from sft_helpers import tiny_run_arguments, write_tiny_dataset

TESTS = Path(__file__).parent
TORCHRUN = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2"]


def run_to_completion(command: list[str], timeout: int = 120) -> None:
    """Run `command` (a launcher and its workers, in their own session) and fail with its stderr if it fails."""
    environment = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(TESTS)}
    process = subprocess.Popen(
        command, env=environment, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True
    )
    try:
        _, stderr = process.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)  # the launcher and its workers
        raise
    assert process.returncode == 0, stderr[-3000:]


@pytest.mark.ddp  # deselect with -m 'not ddp'
@pytest.mark.parametrize(
    ("launcher", "sampling"),
    [
        (TORCHRUN, "random"),
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
    run_to_completion(command)
    ranks = [json.loads((output_dir / f"rank{rank}.json").read_text()) for rank in (0, 1)]
    users = [set(rank["users"]) for rank in ranks]
    # 48 users, 8 a batch and 2 processes: 3 steps, each process trains on its own 24 users.
    assert len(users[0]) == len(users[1]) == 24
    assert not users[0] & users[1]
    assert ranks[0]["saves"] >= 1 and ranks[1]["saves"] == 0
    assert len(list(output_dir.glob("model.safetensors"))) == 1
    assert json.loads((output_dir / "trainer_state.json").read_text())["global_step"] == 3


@pytest.mark.ddp
@pytest.mark.parametrize("variant", ["sasrec", "sasrec_rope", "mhc"])
def test_fsdp_shards_the_item_table_and_trains_as_one_process(tmp_path, variant):
    """torch's FSDP2 (`fully_shard` on each block and on the model, gloo) over 2 processes, each on half of every
    global batch: each process holds half the item table's rows, and the losses and trained weights equal those of
    one process on the whole batches. (`--fsdp` through Trainer is not this: on CPU accelerate keeps DDP, README
    "Scaling out".) The full softmax: a sampled loss draws its negatives in each process, so it cannot match one
    process draw for draw, and `sasrec_moe`'s load-balancing loss reads the router statistics of each process's
    half batch."""
    run_to_completion([*TORCHRUN, str(TESTS / "fsdp_worker.py"), str(tmp_path), variant, "ce"])
    ranks = [json.loads((tmp_path / f"rank{rank}.json").read_text()) for rank in (0, 1)]
    for step in range(STEPS):
        local = [rank["local_rows"][step] for rank in ranks]
        assert sum(local) == VOCAB_SIZE and max(local) == (VOCAB_SIZE + 1) // 2

    model = tiny_model(variant, loss_type="ce").train()
    optimizer = optimizer_for(model)
    losses = []
    for step in range(STEPS):
        batch = global_batch(step)
        loss = step_loss(model, batch, int(batch["shift_labels"].ge(0).sum()))
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
        losses.append(loss.item())
    assert ranks[0]["losses"] == pytest.approx(losses, rel=1e-5)
    assert ranks[1]["losses"] == ranks[0]["losses"]
    assert losses[2] < losses[0]  # the first batch again, after training
    weights = json.loads((tmp_path / "weights.json").read_text())
    for name, parameter in model.named_parameters():
        torch.testing.assert_close(torch.tensor(weights[name]), parameter.detach(), rtol=1e-4, atol=1e-5, msg=name)
