"""A synthetic interaction log at any scale, for the scale benchmarks (issue 16): Zipf item popularity, users whose
histories follow latent item clusters (so that a model has something to learn and accuracy stays a sanity check),
increasing timestamps, written as Parquet shards of `user`, `item`, `timestamp` columns.

Each item belongs to one of `--clusters` clusters and has a Zipf weight `1 / (rank + 1) ** --zipf` (rank: a random
permutation). Each user has a home cluster; each interaction is drawn, with probability `--in-cluster`, from the
home cluster by weight, else from the whole catalog by weight. History lengths are log-normal around the mean that
`--interactions / --users` sets (at least 3). Users are generated `--chunk-users` at a time, so memory stays bounded
whatever the size; the shards hold consecutive users.

    python benchmarks/generate_scale_data.py --items 1000000 --users 1000000 --interactions 20000000 \
        --output /tmp/scale/log --shards 16
    python -m data_preprocess --input /tmp/scale/log/part-00000.parquet ...   # or a one-shard log (--shards 1)
"""

import argparse
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq


def item_tables(items: int, clusters: int, zipf: float, rng: np.random.Generator) -> tuple[np.ndarray, list]:
    """Every item's cumulative weight over the catalog `[items]`, and per cluster `(its items, their cumulative
    weights)`."""
    weights = 1.0 / (rng.permutation(items) + 1.0) ** zipf
    cluster_of = rng.integers(0, clusters, size=items)
    by_cluster = []
    for cluster in range(clusters):
        members = np.flatnonzero(cluster_of == cluster)
        cumulative = np.cumsum(weights[members])
        by_cluster.append((members, cumulative / cumulative[-1]))
    cumulative = np.cumsum(weights)
    return cumulative / cumulative[-1], by_cluster


def chunk(
    first_user: int,
    users: int,
    mean_length: float,
    catalog: np.ndarray,
    by_cluster: list,
    in_cluster: float,
    rng: np.random.Generator,
) -> pa.Table:
    """The interactions of users `first_user ... first_user + users - 1`."""
    sigma = 0.8
    lengths = np.maximum(3, rng.lognormal(np.log(mean_length) - sigma**2 / 2, sigma, size=users)).astype(np.int64)
    user = np.repeat(np.arange(first_user, first_user + users), lengths)
    home = np.repeat(rng.integers(0, len(by_cluster), size=users), lengths)
    item = np.searchsorted(catalog, rng.random(len(user)), side="right").clip(max=len(catalog) - 1)
    local = rng.random(len(user)) < in_cluster
    for cluster in np.unique(home[local]):
        rows = np.flatnonzero(local & (home == cluster))
        members, cumulative = by_cluster[cluster]
        if len(members):
            picks = np.searchsorted(cumulative, rng.random(len(rows)), side="right").clip(max=len(members) - 1)
            item[rows] = members[picks]
    starts = np.repeat(rng.integers(1_500_000_000, 1_600_000_000, size=users), lengths)
    offsets = np.arange(len(user)) - np.repeat(np.cumsum(lengths) - lengths, lengths)
    timestamp = starts + offsets * 3600
    return pa.table({"user": user.astype(str), "item": item.astype(str), "timestamp": timestamp})


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--items", type=int, default=1_000_000)
    parser.add_argument("--users", type=int, default=1_000_000)
    parser.add_argument("--interactions", type=int, default=20_000_000, help="about this many in all")
    parser.add_argument("--clusters", type=int, default=1000)
    parser.add_argument("--zipf", type=float, default=1.0)
    parser.add_argument("--in-cluster", type=float, default=0.8)
    parser.add_argument("--shards", type=int, default=16)
    parser.add_argument("--chunk-users", type=int, default=100_000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--output", type=Path, required=True, help="a folder for part-NNNNN.parquet")
    args = parser.parse_args()
    start = time.perf_counter()
    rng = np.random.default_rng(args.seed)
    catalog, by_cluster = item_tables(args.items, args.clusters, args.zipf, rng)
    args.output.mkdir(parents=True, exist_ok=True)
    users_per_shard = -(-args.users // args.shards)
    total = 0
    for shard in range(args.shards):
        first, last = shard * users_per_shard, min((shard + 1) * users_per_shard, args.users)
        with pq.ParquetWriter(args.output / f"part-{shard:05d}.parquet", chunk_schema()) as writer:
            for begin in range(first, last, args.chunk_users):
                count = min(args.chunk_users, last - begin)
                table = chunk(begin, count, args.interactions / args.users, catalog, by_cluster, args.in_cluster, rng)
                writer.write_table(table)
                total += table.num_rows
    print(
        f"{total:,} interactions of {args.users:,} users over {args.items:,} items in {args.shards} shards, "
        f"{time.perf_counter() - start:.1f} s: {args.output}"
    )


def chunk_schema() -> pa.Schema:
    """The columns of every shard."""
    return pa.schema([("user", pa.string()), ("item", pa.string()), ("timestamp", pa.int64())])


if __name__ == "__main__":
    main()
