"""What a training step costs in arithmetic and in operator calls, per variant (issue 15): counted, not timed.

For each variant in the SASRec paper's Games configuration (`bench_train_speed.PAPER`: hidden 50, 2 blocks, 1 head,
maxlen 50, batch 128) and each loss, on real Games batches (random rows, and length-bucketed ones), one training
step (forward, backward, Trainer's fused AdamW) is run under

- `torch.utils.flop_counter.FlopCounterMode`: the floating-point operations of the forward and backward passes
  (matrix products and attention; element-wise operations are not counted, so this is the arithmetic floor);
- a `TorchDispatchMode` that counts ATen operator calls: each is at least one kernel launch and its Python and
  dispatcher overhead, whatever its size.

Two machine constants turn them into seconds, measured here on one thread: the float32 matrix-product rate (GFLOP/s
of a 1024 x 1024 product) and the cost of a small operator call (an element-wise add on 64 x 50 floats). The epoch
estimates multiply the mean over `--batches` batches by the steps of a Games epoch (its training rows over 128);
`--profile` adds `torch.profiler`'s table of the top operators of sasrec and mhc (`step_profile_*.txt`). Results:
one JSON line per (variant, loss, batching) into `benchmarks/results/step_cost.jsonl` and `step_cost.md`. The
constants are measured in the same run; on a loaded machine they are lower bounds of what the core can do.

    OMP_NUM_THREADS=1 python benchmarks/bench_step_cost.py [--data data/games] [--variants sasrec mhc ...]
"""

import argparse
import json
import math
import time
from collections import Counter
from datetime import datetime, timezone
from pathlib import Path

import torch
from bench_item_features import write_summary
from bench_train_speed import BATCH, PAPER, training_batches
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils.flop_counter import FlopCounterMode
from transformers import AutoConfig, AutoModelForCausalLM

import hf_sasrec
from hf_sasrec.data_collator import model_uses_timestamps
from hf_sasrec.sft_trainer import NO_POSITIONS

RESULTS = Path(__file__).parent / "results"


class OperatorCounter(TorchDispatchMode):
    """Counts the ATen operators called while active, by name."""

    def __init__(self):
        super().__init__()
        self.calls: Counter[str] = Counter()

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        self.calls[str(func.overloadpacket)] += 1
        return func(*args, **(kwargs or {}))


def matmul_gflops(size: int = 1024, repeats: int = 5) -> float:
    """The best float32 matrix-product rate of `repeats` products of two `size x size` matrices, GFLOP/s."""
    left, right = torch.randn(size, size), torch.randn(size, size)
    best = math.inf
    for _ in range(repeats):
        start = time.perf_counter()
        left @ right
        best = min(best, time.perf_counter() - start)
    return 2 * size**3 / best / 1e9


def small_op_seconds(repeats: int = 20000) -> float:
    """The best per-call time of an element-wise add on a `[64, 50]` float tensor, over batches of calls."""
    tensor = torch.randn(64, 50)
    best = math.inf
    for _ in range(5):
        start = time.perf_counter()
        for _ in range(repeats):
            tensor.add(1.0)
        best = min(best, (time.perf_counter() - start) / repeats)
    return best


def step_cost(variant: str, loss_type: str, batches: list[dict], vocab_size: int) -> dict:
    """FLOPs and operator calls of a training step of `variant`, the mean over `batches`."""
    torch.manual_seed(0)
    config = AutoConfig.for_model(variant, vocab_size=vocab_size, loss_type=loss_type, **PAPER)
    model = AutoModelForCausalLM.from_config(config).train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3, fused=True)
    # A first step outside the counts (lazy initialisations); steps build no logits, as NextItemTrainer's.
    model(**batches[0], logits_to_keep=NO_POSITIONS).loss.backward()
    optimizer.step()
    optimizer.zero_grad()
    operators, total_flops, flops_by_operator = OperatorCounter(), 0, Counter()
    for batch in batches:
        with FlopCounterMode(display=False) as flops:  # counts anew each time it is entered
            model(**batch, logits_to_keep=NO_POSITIONS).loss.backward()
        total_flops += flops.get_total_flops()
        flops_by_operator.update({str(name): int(count) for name, count in flops.get_flop_counts()["Global"].items()})
        optimizer.zero_grad()
        with operators:
            model(**batch, logits_to_keep=NO_POSITIONS).loss.backward()
            optimizer.step()
        optimizer.zero_grad()
    targets = sum(int((batch["shift_labels"] >= config.num_special_tokens).sum()) for batch in batches)
    return {
        "flops": total_flops / len(batches),
        "flops_by_operator": {name: count // len(batches) for name, count in flops_by_operator.items()},
        "operator_calls": sum(operators.calls.values()) / len(batches),
        "top_operators": {name: count / len(batches) for name, count in operators.calls.most_common(8)},
        "targets": targets / len(batches),
        "batches": len(batches),
    }


def profile_table(variant: str, loss_type: str, batches: list[dict], vocab_size: int, rows: int = 15) -> str:
    """`torch.profiler`'s table of the top operators by self CPU time over training steps on `batches`."""
    torch.manual_seed(0)
    config = AutoConfig.for_model(variant, vocab_size=vocab_size, loss_type=loss_type, **PAPER)
    model = AutoModelForCausalLM.from_config(config).train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3, fused=True)
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as profiler:
        for batch in batches:
            model(**batch, logits_to_keep=NO_POSITIONS).loss.backward()
            optimizer.step()
            optimizer.zero_grad()
    return profiler.key_averages().table(sort_by="self_cpu_time_total", row_limit=rows)


def summary(lines: list[dict]) -> str:
    """The markdown table of the latest record of each (variant, loss, batching)."""
    latest = {(line["variant"], line["loss"], line["batching"]): line for line in lines}
    first = lines[-1]
    out = [
        "# The cost of a training step, counted (Games, the paper's configuration, batch 128)",
        "",
        f"`python benchmarks/bench_step_cost.py`: the mean of {first['batches']} batches. Machine constants of this "
        f"run (one thread): float32 matrix products {first['matmul_gflops']:.1f} GFLOP/s; a small operator call "
        f"{first['small_op_us']:.1f} µs. A Games epoch is {first['steps_per_epoch']} steps. FLOPs: forward + "
        "backward (matrix products and attention); operator calls: forward, backward and the fused AdamW step.",
        "",
        "| variant | loss | batches | targets a step | MFLOP a step | operator calls a step | epoch floor: "
        "arithmetic s | epoch floor: operator calls s |",
        "| --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for (variant, loss, batching), line in sorted(latest.items()):
        arithmetic = line["flops"] * line["steps_per_epoch"] / (line["matmul_gflops"] * 1e9)
        calls = line["operator_calls"] * line["steps_per_epoch"] * line["small_op_us"] / 1e6
        out.append(
            f"| {variant} | {loss} | {batching} | {line['targets']:,.0f} | {line['flops'] / 1e6:,.0f} | "
            f"{line['operator_calls']:,.0f} | {arithmetic:.2f} | {calls:.2f} |"
        )
    return "\n".join(out) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default="data/games")
    parser.add_argument("--variants", nargs="+", default=list(hf_sasrec.VARIANTS))
    parser.add_argument("--losses", nargs="+", default=["bce", "ce"])
    parser.add_argument("--batches", type=int, default=8, help="batches a count averages over")
    parser.add_argument("--profile", action="store_true", help="also write the profile of sasrec and mhc (bce)")
    parser.add_argument("--output", type=Path, default=RESULTS / "step_cost.jsonl")
    args = parser.parse_args()
    gflops, small_op = matmul_gflops(), small_op_seconds()
    stats = json.loads((Path(args.data) / "stats.json").read_text())
    rows = stats["splits"]["train"]
    steps_per_epoch = math.ceil(rows / BATCH)
    for variant in args.variants:
        for batching in ("random", "group_by_length"):
            batches = training_batches(args.data, args.batches - 5, model_uses_timestamps_for(variant), batching)
            for loss in args.losses:
                record = {"time": datetime.now(timezone.utc).isoformat(timespec="seconds"), "variant": variant}
                record |= {"loss": loss, "batching": batching, "steps_per_epoch": steps_per_epoch}
                record |= {"matmul_gflops": gflops, "small_op_us": small_op * 1e6}
                record |= step_cost(variant, loss, batches, stats["vocab_size"])
                print(json.dumps({key: value for key, value in record.items() if key != "flops_by_operator"}))
                with args.output.open("a") as file:
                    file.write(json.dumps(record) + "\n")
    write_summary(args.output, summary)
    if args.profile:
        for variant in ("sasrec", "mhc"):
            batches = training_batches(args.data, args.batches - 5, False, "group_by_length")
            table = profile_table(variant, "bce", batches, stats["vocab_size"])
            (RESULTS / f"step_profile_{variant}.txt").write_text(
                f"torch.profiler, {len(batches)} training steps of {variant} (bce, length-bucketed Games batches, "
                f"the paper's configuration), one thread, by self CPU time:\n\n{table}\n"
            )


def model_uses_timestamps_for(variant: str) -> bool:
    """Whether `variant` reads timestamps (asked of a tiny model of it)."""
    config = AutoConfig.for_model(variant, vocab_size=10, hidden_size=8, num_attention_heads=1)
    return model_uses_timestamps(AutoModelForCausalLM.from_config(config))


if __name__ == "__main__":
    main()
