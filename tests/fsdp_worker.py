"""`torchrun` entry point of the FSDP test: a tiny SASRec sharded with torch's FSDP2 (`fully_shard`, gloo on CPU)
trains on its half of each global batch; writes the loss of every step (summed over the processes) and the rows of
the item table this process holds, then the trained weights, to `OUTPUT_DIR/rank{RANK}.json`.

    torchrun --nproc_per_node 2 tests/fsdp_worker.py OUTPUT_DIR VARIANT LOSS_TYPE
"""

import json
import os
import sys
from pathlib import Path

import torch.distributed as dist
from fsdp_reference import STEPS, global_batch, optimizer_for, step_loss
from model_helpers import tiny_model
from torch.distributed.device_mesh import init_device_mesh
from torch.distributed.fsdp import fully_shard

if __name__ == "__main__":
    output_dir, variant, loss_type = Path(sys.argv[1]), sys.argv[2], sys.argv[3]
    dist.init_process_group("gloo")
    rank, world_size = dist.get_rank(), dist.get_world_size()
    mesh = init_device_mesh("cpu", (world_size,))
    model = tiny_model(variant, loss_type=loss_type).train()
    for block in model.model.layers:
        fully_shard(block, mesh=mesh)
    fully_shard(model, mesh=mesh)  # the rest, the item table and its tied head included
    optimizer = optimizer_for(model)
    record = {"losses": [], "local_rows": []}
    for step in range(STEPS):
        batch = global_batch(step)
        targets = int(batch["shift_labels"].ge(0).sum())  # of the whole global batch, as Trainer counts them
        half = {name: value.chunk(world_size)[rank] for name, value in batch.items()}
        # FSDP averages the gradients over the processes; each process's loss is its share of the global sum, so
        # it is scaled by their number (as Trainer scales it with `num_items_in_batch`).
        loss = step_loss(model, half, targets) * world_size
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
        summed = loss.detach() / world_size
        dist.all_reduce(summed)
        record["losses"].append(summed.item())
        record["local_rows"].append(model.model.embed_tokens.weight.to_local().shape[0])
    weights = {name: parameter.full_tensor().tolist() for name, parameter in model.named_parameters()}
    if rank == 0:
        (output_dir / "weights.json").write_text(json.dumps(weights))
    (output_dir / f"rank{rank}.json").write_text(json.dumps(record))
    dist.barrier()
    dist.destroy_process_group()
    # Python's own exit destroys gloo's threads in an order that aborts the process now and then ("terminate called
    # without an active exception"), after all the work is written: leave without it.
    os._exit(0)
