"""Preprocessing at scale (issue 16): wall time and peak resident memory of `python -m data_preprocess` on generated
logs of growing size, in memory (`prepare`) and streamed (`--streaming`, `data_preprocess.streamed`).

Each size is a log of `benchmarks/generate_scale_data.py` (users and items both 1/20 of the interactions: 20M
interactions = 1M users, 1M items; one Parquet shard), generated under `--work` unless already there. Each run is
its own process, one thread; its peak RSS is the kernel's (`os.wait4`), its CPU time user + system. Records are
appended to `benchmarks/results/scale_preprocess.jsonl`; the table of the latest record of each (size, pipeline)
goes to `benchmarks/results/scale_preprocess.md`.

    OMP_NUM_THREADS=1 python benchmarks/bench_scale_preprocess.py [--sizes 2000000 20000000]
        [--pipelines streamed in-memory] [--work /tmp/scale-bench]
"""

import argparse
import json
import os
import subprocess
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
PIPELINES = {"in-memory": [], "streamed": ["--streaming"]}


def run(command: list[str]) -> dict:
    """Run `command`; its wall time, CPU time and peak RSS (bytes), or its error."""
    start = time.perf_counter()
    process = subprocess.Popen(command, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    _, status, usage = os.wait4(process.pid, 0)
    wall = time.perf_counter() - start
    error = process.stderr.read()
    process.stderr.close()
    record = {"wall_s": round(wall, 2), "cpu_s": round(usage.ru_utime + usage.ru_stime, 2)}
    record["peak_rss_bytes"] = usage.ru_maxrss * 1024
    if os.waitstatus_to_exitcode(status) != 0:
        record["error"] = error.strip().splitlines()[-1] if error.strip() else f"exit status {status}"
    return record


def log_for(size: int, work: Path) -> Path:
    """The generated log of `size` interactions (generated once)."""
    folder = work / f"log-{size}"
    if not (folder / "part-00000.parquet").is_file():
        population = str(max(1, size // 20))
        sizes = ["--interactions", str(size), "--users", population, "--items", population, "--shards", "1"]
        command = [sys.executable, "benchmarks/generate_scale_data.py", *sizes, "--output", str(folder)]
        subprocess.run(command, cwd=ROOT, check=True)
    return folder


def table(records: list[dict]) -> str:
    latest = {(record["size"], record["pipeline"]): record for record in records}
    lines = [
        "| requested | interactions | users | items | pipeline | wall s | CPU s | peak RSS GiB | shards |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for (size, pipeline), record in sorted(latest.items()):
        if "error" in record:
            lines.append(f"| {size:,} | | | | {pipeline} | failed: {record['error']} | | | |")
            continue
        lines.append(
            f"| {size:,} | {record['interactions']:,} | {record['users']:,} | {record['items']:,} | {pipeline} | "
            f"{record['wall_s']:.1f} | {record['cpu_s']:.1f} | {record['peak_rss_bytes'] / 2**30:.2f} | "
            f"{record['shards']} |"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", nargs="+", type=int, default=[2_000_000, 5_000_000, 10_000_000, 20_000_000])
    parser.add_argument("--pipelines", nargs="+", choices=list(PIPELINES), default=list(PIPELINES))
    parser.add_argument("--work", type=Path, default=Path("/tmp/scale-bench"))
    parser.add_argument("--output", type=Path, default=RESULTS / "scale_preprocess.jsonl")
    args = parser.parse_args()
    for size in args.sizes:
        log = log_for(size, args.work)
        for pipeline in args.pipelines:
            output = args.work / f"data-{size}-{pipeline}"
            command = [sys.executable, "-m", "data_preprocess", "--input", str(log / "part-00000.parquet")]
            command += ["--user-col", "user", "--item-col", "item", "--time-col", "timestamp", "--output", str(output)]
            record = {"time": datetime.now(timezone.utc).isoformat(timespec="seconds"), "size": size}
            record |= {"pipeline": pipeline, **run(command + PIPELINES[pipeline])}
            if "error" not in record:
                stats = json.loads((output / "stats.json").read_text())
                record |= {key: stats[f"num_{key}"] for key in ("interactions", "users", "items")}
                record["shards"] = len(list((output / "train").glob("data-*.arrow")))
            record["load_average_1min"] = os.getloadavg()[0]
            print(json.dumps(record), flush=True)
            with args.output.open("a") as handle:
                handle.write(json.dumps(record) + "\n")
    records = [json.loads(line) for line in args.output.read_text().splitlines()]
    text = (
        "# Preprocessing at scale: in memory against streamed\n\n"
        f"`python {' '.join(sys.argv)}`; one thread, 2-core machine. Logs from `benchmarks/generate_scale_data.py` "
        "(users = items = interactions / 20, one Parquet shard); each run a fresh process, peak RSS from the "
        "kernel.\n\n" + table(records) + "\n"
    )
    args.output.with_suffix(".md").write_text(text)
    print(text)


if __name__ == "__main__":
    main()
