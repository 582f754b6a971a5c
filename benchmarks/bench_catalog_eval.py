"""Full-ranking evaluation over large catalogs: users/s and peak memory of `evaluate_users` (every item ranked,
history excluded) for an untrained SASRec (hidden 64, 2 blocks) and random histories of 50 items.

Each catalog size runs in a fresh process; the record holds the users ranked a second, the batch size and the peak
resident memory above the memory held once the model and the histories exist. One JSON line per run into
`benchmarks/results/catalog_eval.jsonl`, a table into `catalog_eval.md`.

    OMP_NUM_THREADS=1 python benchmarks/bench_catalog_eval.py [--items 100000 1000000] [--users 2048]
        [--batch-size 256]
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


def one_run(items: int, users: int, batch_size: int) -> dict:
    """Rank `users` random histories over `items` items in this process; the record."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    from hf_sasrec.evaluation import evaluate_users

    torch.manual_seed(0)
    config = AutoConfig.for_model("sasrec", vocab_size=items + 5, hidden_size=64, max_position_embeddings=50)
    model = AutoModelForCausalLM.from_config(config).eval()
    histories = torch.randint(5, items + 5, (users, 51)).tolist()
    rows = [{"user_id": str(user), "item_ids": items_of_user} for user, items_of_user in enumerate(histories)]
    baseline = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    start = time.perf_counter()
    values, _, _ = evaluate_users(model, rows, k_values=(10,), batch_size=batch_size, max_length=50)
    seconds = time.perf_counter() - start
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return {
        "users_per_s": users / seconds,
        "seconds": seconds,
        "peak_mib_above_inputs": (peak - baseline) / 1024,
        "ndcg@10": values["ndcg@10"].mean().item(),
    }


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "--one":
        print(json.dumps(one_run(*(int(value) for value in sys.argv[2:5]))))
        return
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--items", type=int, nargs="+", default=[100_000, 1_000_000])
    parser.add_argument("--users", type=int, default=2048)
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--output", type=Path, default=RESULTS / "catalog_eval.jsonl")
    args = parser.parse_args()
    for items in args.items:
        command = [sys.executable, __file__, "--one", str(items), str(args.users), str(args.batch_size)]
        result = subprocess.run(command, capture_output=True, text=True, check=True)
        record = {"time": datetime.now(timezone.utc).isoformat(timespec="seconds"), "items": items}
        record |= {"users": args.users, "batch_size": args.batch_size}
        record |= json.loads(result.stdout.strip().splitlines()[-1])
        print(json.dumps(record), flush=True)
        with args.output.open("a") as file:
            file.write(json.dumps(record) + "\n")
    lines = [json.loads(text) for text in args.output.read_text().splitlines() if text.strip()]
    latest = {(line["items"], line["users"], line["batch_size"]): line for line in lines}
    table = [
        "# Full-ranking evaluation over large catalogs (one thread)",
        "",
        "`python benchmarks/bench_catalog_eval.py`: untrained SASRec (hidden 64, 2 blocks), random histories of 50 "
        "items, every item ranked, history excluded.",
        "",
        "| items | users | batch size | users/s | peak MiB above inputs |",
        "| --- | --- | --- | --- | --- |",
    ]
    for (items, users, batch_size), line in sorted(latest.items()):
        speed, memory = line["users_per_s"], line["peak_mib_above_inputs"]
        table.append(f"| {items:,} | {users:,} | {batch_size} | {speed:.1f} | {memory:,.0f} |")
    args.output.with_suffix(".md").write_text("\n".join(table) + "\n")


if __name__ == "__main__":
    main()
