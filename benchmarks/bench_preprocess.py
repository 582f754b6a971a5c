"""Time the full preprocessing of the real data sets in `../shared/data` (target: under 10 s each on 2 cores).

For each data set: `prepare()` in process (read, filter, number, split, save; best and median of `--repeats` runs,
after the imports) and the command line end to end (`python -m data_preprocess`, interpreter start and imports
included, one run). Wall and CPU seconds are both recorded, with the load average: on a shared machine the CPU time
is the figure an idle machine's wall time approaches. Results go to `benchmarks/results/preprocess.json`.

    OMP_NUM_THREADS=1 python benchmarks/bench_preprocess.py [DATA_ROOT] [--repeats 3]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
DATA_SETS = {
    "amazon-games": "amazon-games/Video.txt",
    "amazon-beauty": "amazon-beauty/Beauty.txt",
    "ml-100k": "ml-100k",
}
TARGET_S = 10.0


def time_prepare(path: Path, repeats: int) -> tuple[list[float], list[float], dict]:
    """Wall and CPU seconds of each `prepare(path, tmp)` run, and the stats of the last one."""
    sys.path.insert(0, str(REPO))  # run from a checkout, installed or not
    from data_preprocess import prepare

    walls, cpus = [], []
    for _ in range(repeats):
        with tempfile.TemporaryDirectory() as output:
            wall, cpu = time.perf_counter(), time.process_time()
            prepare(path, output)
            walls.append(time.perf_counter() - wall)
            cpus.append(time.process_time() - cpu)
            stats = json.loads((Path(output) / "stats.json").read_text())
    return walls, cpus, stats


def children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def time_cli(path: Path) -> tuple[float, float]:
    """Wall and CPU seconds of `python -m data_preprocess --input path` in a fresh interpreter."""
    with tempfile.TemporaryDirectory() as output:
        wall, cpu = time.perf_counter(), children_cpu()
        command = [sys.executable, "-m", "data_preprocess", "--input", str(path), "--output", output]
        subprocess.run(command, cwd=REPO, check=True, capture_output=True)
        return time.perf_counter() - wall, children_cpu() - cpu


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("data_root", nargs="?", default=str(REPO.parent / "shared" / "data"))
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--output", default=str(REPO / "benchmarks" / "results" / "preprocess.json"))
    args = parser.parse_args()
    root = Path(args.data_root)
    if not root.is_dir():
        sys.exit(f"no data at {root}: pass the shared data folder")
    results = {}
    for name, relative in DATA_SETS.items():
        path = root / relative
        if not path.exists():
            print(f"{name}: {path} absent, skipped")
            continue
        walls, cpus, stats = time_prepare(path, args.repeats)
        cli_wall, cli_cpu = time_cli(path)
        results[name] = {
            "input": relative,
            "users": stats["num_users"],
            "items": stats["num_items"],
            "interactions": stats["num_interactions"],
            "prepare_wall_best_s": round(min(walls), 3),
            "prepare_wall_median_s": round(statistics.median(walls), 3),
            "prepare_cpu_median_s": round(statistics.median(cpus), 3),
            "cli_wall_s": round(cli_wall, 3),
            "cli_cpu_s": round(cli_cpu, 3),
            "load_average_1min": round(os.getloadavg()[0], 2),
        }
        print(
            f"{name}: {stats['num_interactions']} interactions; prepare {min(walls):.2f} s wall "
            f"({statistics.median(cpus):.2f} s CPU); CLI {cli_wall:.2f} s wall ({cli_cpu:.2f} s CPU)"
        )
    report = {
        "benchmark": "data_preprocess: full preprocessing (leave-one-out, max_length 50) of the shared data sets",
        "target_s": TARGET_S,
        "machine": {
            "cpus": os.cpu_count(),
            "python": platform.python_version(),
            "platform": platform.platform(),
            "omp_num_threads": os.environ.get("OMP_NUM_THREADS"),
        },
        "repeats": args.repeats,
        "results": results,
    }
    Path(args.output).parent.mkdir(parents=True, exist_ok=True)
    Path(args.output).write_text(json.dumps(report, indent=1) + "\n")
    print(f"written to {args.output}")


if __name__ == "__main__":
    main()
