"""Peak memory and time of one loss step (forward and backward) over large catalogs: plain full-softmax CE, chunked
CE (`ce_chunk_size`), sampled softmax and mixed negatives (the batch's targets and uniform draws).

Each (catalog size, loss) runs in a fresh process that builds the item table `[items, hidden]` and the states of
`targets` positions `[targets, hidden]` (random, as a model's would be), runs `--steps` loss steps through
`hf_sasrec.losses.next_item_loss` and reports the seconds per step and its peak resident memory (`ru_maxrss`) above
the memory held after the inputs were built. The plain CE keeps `[targets, items]` logits and their softmax for the
backward pass (8 bytes a pair); a configuration whose plain logits alone would pass `--max-gib` is reported as not
run, with that estimate. One JSON line per run into `benchmarks/results/catalog_loss.jsonl`, a table into
`catalog_loss.md`.

    OMP_NUM_THREADS=1 python benchmarks/bench_catalog_loss.py [--items 100000 1000000] [--targets 6400]
"""

import argparse
import json
import resource
import subprocess
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

RESULTS = Path(__file__).parent / "results"
# loss name: the config fields it sets.
LOSSES = {
    "ce (plain)": {"loss_type": "ce"},
    "ce (chunked, 8192)": {"loss_type": "ce", "ce_chunk_size": 8192},
    "sampled_softmax (256)": {"loss_type": "sampled_softmax", "num_negatives": 256},
    "mixed_negatives (batch + 256)": {"loss_type": "mixed_negatives", "num_negatives": 256},
}


def one_run(items: int, targets: int, hidden: int, loss: str, steps: int) -> dict:
    """Run `steps` loss steps in this process; the record."""
    import torch

    from hf_sasrec import SASRecConfig
    from hf_sasrec.losses import next_item_loss

    torch.manual_seed(0)
    config = SASRecConfig(vocab_size=items + 5, hidden_size=hidden, **LOSSES[loss])
    # Drawn in place: a temporary copy of the table would raise the baseline peak above what a step adds.
    item_weight = torch.nn.Parameter(torch.empty(items + 5, hidden).normal_(std=0.05))
    states = torch.randn(targets, 1, hidden, requires_grad=True)
    labels = torch.randint(5, items + 5, (targets, 1))
    baseline = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    seconds = []
    for _ in range(steps):
        start = time.perf_counter()
        value = next_item_loss(states, labels, item_weight, config)
        value.backward()
        seconds.append(time.perf_counter() - start)
        item_weight.grad = states.grad = None
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return {"s_per_step": min(seconds), "peak_mib_above_inputs": (peak - baseline) / 1024, "loss_value": value.item()}


def measure(items: int, targets: int, hidden: int, loss: str, steps: int, max_gib: float) -> dict:
    """The record of one configuration, run in a fresh process unless the plain logits would not fit."""
    record = {"time": datetime.now(timezone.utc).isoformat(timespec="seconds"), "items": items, "targets": targets}
    record |= {"hidden": hidden, "loss": loss}
    logits_gib = 8 * targets * items / 2**30
    if loss == "ce (plain)" and logits_gib > max_gib:
        return record | {"not_run": f"its logits and their softmax need {logits_gib:.1f} GiB (> --max-gib {max_gib})"}
    command = [sys.executable, __file__, "--one", str(items), str(targets), str(hidden), loss, str(steps)]
    result = subprocess.run(command, capture_output=True, text=True, check=True)
    return record | json.loads(result.stdout.strip().splitlines()[-1])


def table(lines: list[dict]) -> str:
    """The markdown table of the latest record of each (items, targets, hidden, loss)."""
    latest = {(line["items"], line["targets"], line["hidden"], line["loss"]): line for line in lines}
    out = [
        "# One loss step over large catalogs (forward + backward, one thread)",
        "",
        "`python benchmarks/bench_catalog_loss.py`: random states and item table; peak resident memory above the "
        "inputs; the fastest of the steps.",
        "",
        "| items | targets | hidden | loss | s a step | peak MiB above inputs |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    for (items, targets, hidden, loss), line in sorted(latest.items()):
        if "not_run" in line:
            out.append(f"| {items:,} | {targets:,} | {hidden} | {loss} | not run: {line['not_run']} | |")
        else:
            out.append(
                f"| {items:,} | {targets:,} | {hidden} | {loss} | {line['s_per_step']:.2f} | "
                f"{line['peak_mib_above_inputs']:,.0f} |"
            )
    return "\n".join(out) + "\n"


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "--one":
        items, targets, hidden, loss, steps = sys.argv[2:7]
        print(json.dumps(one_run(int(items), int(targets), int(hidden), loss, int(steps))))
        return
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--items", type=int, nargs="+", default=[100_000, 1_000_000])
    parser.add_argument("--targets", type=int, default=6400, help="target positions a step (batch x length)")
    parser.add_argument("--hidden", type=int, default=64)
    parser.add_argument("--losses", nargs="+", choices=list(LOSSES), default=list(LOSSES))
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--max-gib", type=float, default=16.0)
    parser.add_argument("--output", type=Path, default=RESULTS / "catalog_loss.jsonl")
    args = parser.parse_args()
    for items in args.items:
        for loss in args.losses:
            record = measure(items, args.targets, args.hidden, loss, args.steps, args.max_gib)
            print(json.dumps(record), flush=True)
            with args.output.open("a") as file:
                file.write(json.dumps(record) + "\n")
    lines = [json.loads(text) for text in args.output.read_text().splitlines() if text.strip()]
    args.output.with_suffix(".md").write_text(table(lines))


if __name__ == "__main__":
    main()
