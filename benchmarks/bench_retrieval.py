"""Top-10 retrieval: exact Faiss, HNSW, IVF and a plain `torch.topk` over the score matmul.

Part 1, Amazon Games (23.7K items, 31K users): the representations of every user (the training sequence of the
`train` split, last `--max-length` items) and the item embeddings of a checkpoint trained on Games (`--model`), or of
a randomly initialised `sasrec` when none is given. Part 2, scale: `--scale-items` random item embeddings and
`--scale-queries` random users (no model involved), or with `--scale-model` a checkpoint's item embeddings and the
states of `--scale-queries` users of its data's test split (the `auto` index tuned on 1,000 other users').

For every method (and every `--ef-search` / `--nprobe` value of a sweep): build time, single-user latency (p50 /
p99 over `--latency-queries` users searched one at a time), throughput (users a second when all users are searched in
batches of `--batch-size`) and recall@10 against the exact top-10 (`torch.topk`). Threads: `OMP_NUM_THREADS` (1
recommended on shared machines) for torch and Faiss alike.

    OMP_NUM_THREADS=1 python benchmarks/bench_retrieval.py --data ../shared/data [--model outputs/sft/games]
"""

import argparse
import json
import logging
import os
import platform
import tempfile
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import faiss
import numpy as np
import torch
from transformers import AutoConfig, AutoModelForCausalLM

import hf_sasrec  # noqa: F401  (registers the model types)
from data_preprocess import prepare
from hf_sasrec.processed_data import load_processed_data
from hf_sasrec.recommender import user_representations
from hf_sasrec.retrieval import ItemIndex, RetrievalConfig

logger = logging.getLogger("bench_retrieval")
NUM_SPECIAL = 5
RESULTS = Path(__file__).parent / "results"

Search = Callable[[torch.Tensor], np.ndarray]


def games_histories(data_root: Path, processed: str | None) -> tuple[list[list[int]], int]:
    """Every Games user's history (the `train` split: all 31K users) as token ids, and the number of items.

    `processed` is a folder written by `python -m data_preprocess --input <data>/amazon-games/Video.txt`; without
    it the raw file is processed into a temporary folder.
    """
    if processed is None:
        processed = tempfile.mkdtemp(prefix="games-")
        prepare(str(data_root / "amazon-games" / "Video.txt"), processed)
    splits, stats, _ = load_processed_data(processed)
    return splits["train"]["item_ids"], stats["num_items"]


def games_model(checkpoint: str | None, num_items: int, hidden_size: int) -> torch.nn.Module:
    """The `--model` checkpoint (checked against the item count), or a random `sasrec` of the Games vocabulary."""
    if checkpoint:
        model = AutoModelForCausalLM.from_pretrained(checkpoint).eval()
        if model.config.num_items != num_items:
            raise ValueError(f"{checkpoint} has {model.config.num_items} items; Games has {num_items}.")
        return model
    torch.manual_seed(0)
    config = AutoConfig.for_model("sasrec", vocab_size=num_items + NUM_SPECIAL, hidden_size=hidden_size)
    return AutoModelForCausalLM.from_config(config).eval()


def user_states(model: torch.nn.Module, histories: list[list[int]], max_length: int) -> torch.Tensor:
    """`[users, hidden]` representations, computed in chunks of 1024 users."""
    chunks = [
        user_representations(model, histories[start : start + 1024], max_length=max_length)
        for start in range(0, len(histories), 1024)
    ]
    return torch.cat(chunks)


def torch_top_k(items: torch.Tensor, k: int) -> Search:
    """Exact top-`k` token ids by `torch.topk` over `users @ items.T`; `items`: real items `[num_items, hidden]`."""

    def search(users: torch.Tensor) -> np.ndarray:
        return (users @ items.T).topk(k, dim=1).indices.numpy() + NUM_SPECIAL

    return search


def faiss_top_k(index: ItemIndex, k: int) -> Search:
    def search(users: torch.Tensor) -> np.ndarray:
        return index.search(users, k)[1]

    return search


def recall(found: np.ndarray, exact: np.ndarray) -> float:
    """Mean share of the exact top-k that `found` retrieves: both `[users, k]`."""
    hits = (found[:, :, None] == exact[:, None, :]).any(-1).sum(1)
    return float(hits.mean() / exact.shape[1])


def measure(search: Search, users: torch.Tensor, exact: np.ndarray, batch_size: int, latency_queries: int) -> dict:
    """Latency of one-user searches, throughput of batched searches over all users, and recall@k against `exact`."""
    latencies = []
    for row in range(min(latency_queries, len(users))):
        start = time.perf_counter()
        search(users[row : row + 1])
        latencies.append(time.perf_counter() - start)
    start = time.perf_counter()
    found = np.concatenate([search(users[i : i + batch_size]) for i in range(0, len(users), batch_size)])
    seconds = time.perf_counter() - start
    return {
        "latency_p50_ms": 1000 * float(np.percentile(latencies, 50)),
        "latency_p99_ms": 1000 * float(np.percentile(latencies, 99)),
        "throughput_users_per_s": len(users) / seconds,
        "batched_total_s": seconds,
        f"recall@{exact.shape[1]}": recall(found, exact),
    }


def compare(
    item_embeddings: torch.Tensor,
    users: torch.Tensor,
    args: argparse.Namespace,
    index_types: list[str],
    tuning_queries: np.ndarray | None = None,
) -> dict:
    """Every method on `users` `[n, hidden]` against `item_embeddings` `[vocab, hidden]` (specials first):
    `{"distinct_items_in_exact_top_k": ..., "methods": {method: measurements}}`. The `auto` index is tuned on
    `tuning_queries` (other users than `users`; default: its stand-in queries)."""
    items = item_embeddings[NUM_SPECIAL:]
    exact_search = torch_top_k(items, args.k)
    exact = np.concatenate(
        [exact_search(users[i : i + args.batch_size]) for i in range(0, len(users), args.batch_size)]
    )
    results = {
        "torch.topk": {"build_s": 0.0, **measure(exact_search, users, exact, args.batch_size, args.latency_queries)}
    }
    for index_type in index_types:
        start = time.perf_counter()
        config = RetrievalConfig(index_type, target_recall=args.target_recall, exact_max_items=args.exact_max_items)
        index = ItemIndex.build(item_embeddings, NUM_SPECIAL, config, tuning_queries)
        build_s = time.perf_counter() - start
        search = faiss_top_k(index, args.k)
        if index_type == "auto":
            chosen = index.config
            index_type = f"auto ({chosen.index_type}{f', nprobe {chosen.ivf_nprobe}' * (chosen.index_type == 'ivf')})"
        results[f"faiss-{index_type}"] = {
            "build_s": build_s,
            **measure(search, users, exact, args.batch_size, args.latency_queries),
        }
        logger.info("%s: %s", index_type, results[f"faiss-{index_type}"])
        for name, swept in sweep(index, args):
            results[name] = {
                "build_s": build_s,
                **measure(faiss_top_k(swept, args.k), users, exact, args.batch_size, args.latency_queries),
            }
            logger.info("%s: %s", name, results[name])
    return {"distinct_items_in_exact_top_k": len(np.unique(exact)), "methods": results}


def sweep(index: ItemIndex, args: argparse.Namespace) -> list[tuple[str, ItemIndex]]:
    """The same approximate index searched with the `--ef-search` / `--nprobe` values of the sweep."""
    field, values = {"hnsw": ("hnsw_ef_search", args.ef_search), "ivf": ("ivf_nprobe", args.nprobe)}.get(
        index.config.index_type, (None, [])
    )
    return [
        (
            f"faiss-{index.config.index_type} {field}={value}",
            ItemIndex(index.index, replace(index.config, **{field: value}), NUM_SPECIAL, index.fingerprint),
        )
        for value in values
    ]


def games_part(args: argparse.Namespace) -> dict:
    games_data = args.games_data
    if games_data is None and args.model:
        games_data = json.loads((Path(args.model) / "run_info.json").read_text())["data_dir"]
    histories, num_items = games_histories(Path(args.data), games_data)
    model = games_model(args.model, num_items, args.hidden_size)
    start = time.perf_counter()
    users = user_states(model, histories, args.max_length)
    encode_s = time.perf_counter() - start
    weights = model.item_embeddings().detach().float()
    return {
        "items": num_items,
        "users": len(histories),
        "hidden_size": weights.shape[1],
        "model": args.model or "random-init sasrec (untrained)",
        "encode_all_users_s": encode_s,
        **compare(weights, users, args, ["flat", "hnsw", "ivf"]),
    }


def trained_scale_part(args: argparse.Namespace) -> dict:
    """`--scale-model`: its item embeddings, and the states of `--scale-queries` users of its data's test split
    (their histories, target left out) measured, of 1,000 others the `auto` index is tuned on."""
    model = AutoModelForCausalLM.from_pretrained(args.scale_model).eval()
    data_dir = args.scale_data or json.loads((Path(args.scale_model) / "run_info.json").read_text())["data_dir"]
    test = load_processed_data(data_dir)[0]["test"]
    chosen = torch.randperm(len(test), generator=torch.Generator().manual_seed(0))[: args.scale_queries + 1000]
    histories = [row[:-1] for row in test.select(chosen.tolist())["item_ids"]]
    start = time.perf_counter()
    states = user_states(model, histories, args.max_length)
    weights = model.item_embeddings().detach().float()
    return {
        "items": weights.shape[0] - NUM_SPECIAL,
        "users": args.scale_queries,
        "hidden_size": weights.shape[1],
        "model": args.scale_model,
        "encode_all_users_s": time.perf_counter() - start,
        **compare(weights, states[1000:], args, args.scale_index_types, states[:1000].numpy()),
    }


def scale_part(args: argparse.Namespace) -> dict:
    if args.scale_model:
        return trained_scale_part(args)
    generator = torch.Generator().manual_seed(0)
    items = torch.randn(args.scale_items + NUM_SPECIAL, args.hidden_size, generator=generator)
    users = torch.randn(args.scale_queries, args.hidden_size, generator=generator)
    return {
        "items": args.scale_items,
        "users": args.scale_queries,
        "hidden_size": args.hidden_size,
        "embeddings": "random normal",
        **compare(items, users, args, args.scale_index_types),
    }


def markdown(results: dict) -> str:
    lines = [
        f"Threads: {results['threads']}; {results['machine']}; faiss {results['faiss']}, torch {results['torch']}.",
        "",
    ]
    for part in ("games", "scale"):
        if part not in results:
            continue
        info = results[part]
        lines += [
            f"**{part}**: {info['items']:,} items, {info['users']:,} users, hidden {info['hidden_size']}"
            + (f", model: {info['model']}" if "model" in info else ", random embeddings")
            + (
                f"; {info['distinct_items_in_exact_top_k']:,} distinct items in the exact top-10s"
                if "distinct_items_in_exact_top_k" in info
                else ""
            ),
            "",
            "| method | build s | latency p50 ms | latency p99 ms | users/s (batched) | recall@10 vs exact |",
            "| --- | --- | --- | --- | --- | --- |",
        ]
        for method, row in info["methods"].items():
            lines.append(
                f"| {method} | {row['build_s']:.2f} | {row['latency_p50_ms']:.2f} | {row['latency_p99_ms']:.2f} | "
                f"{row['throughput_users_per_s']:,.0f} | {row['recall@10']:.4f} |"
            )
        lines.append("")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default=str(Path(__file__).resolve().parents[1].parent / "shared" / "data"))
    parser.add_argument(
        "--games-data",
        default=None,
        help="processed Games folder (default: the model's data_dir, or processed on the fly)",
    )
    parser.add_argument("--model", default=None, help="checkpoint trained on Games (default: random init)")
    parser.add_argument("--hidden-size", type=int, default=64)
    parser.add_argument("--max-length", type=int, default=50)
    parser.add_argument("--k", type=int, default=10)
    parser.add_argument("--batch-size", type=int, default=1024)
    parser.add_argument("--latency-queries", type=int, default=500)
    parser.add_argument("--scale-items", type=int, default=1_000_000)
    parser.add_argument("--scale-queries", type=int, default=2000)
    parser.add_argument("--scale-index-types", nargs="*", default=["flat", "hnsw", "ivf"])
    parser.add_argument("--scale-model", help="scale part: a checkpoint (and its data_dir) instead of random vectors")
    parser.add_argument("--scale-data", help="--scale-model's data folder (default: its run_info.json's data_dir)")
    parser.add_argument("--target-recall", type=float, default=0.95, help="the auto index's recall@10 target")
    parser.add_argument("--exact-max-items", type=int, default=100_000, help="auto: exact up to")
    parser.add_argument("--ef-search", type=int, nargs="*", default=[], help="HNSW efSearch values to sweep")
    parser.add_argument("--nprobe", type=int, nargs="*", default=[], help="IVF nprobe values to sweep")
    parser.add_argument("--skip-games", action="store_true")
    parser.add_argument("--skip-scale", action="store_true")
    parser.add_argument("--output", default=str(RESULTS / "retrieval"), help="writes OUTPUT.json and OUTPUT.md")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    threads = int(os.environ.get("OMP_NUM_THREADS", os.cpu_count()))
    torch.set_num_threads(threads)
    faiss.omp_set_num_threads(threads)
    results = {
        "threads": threads,
        "machine": f"{platform.machine()}, {os.cpu_count()} cores",
        "faiss": faiss.__version__,
        "torch": torch.__version__,
        "args": vars(args),
    }
    if not args.skip_games:
        if not (Path(args.data) / "amazon-games" / "Video.txt").is_file():
            raise SystemExit(f"No amazon-games/Video.txt under {args.data}; pass --data or --skip-games.")
        results["games"] = games_part(args)
    if not args.skip_scale:
        results["scale"] = scale_part(args)
    output = Path(args.output)
    output.parent.mkdir(parents=True, exist_ok=True)
    output.with_suffix(".json").write_text(json.dumps(results, indent=2) + "\n")
    output.with_suffix(".md").write_text(markdown(results))
    print(markdown(results))


if __name__ == "__main__":
    main()
