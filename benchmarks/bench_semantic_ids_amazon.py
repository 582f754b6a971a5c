"""Do semantic ids made from SASRec's own item embeddings help SASRec on Amazon Beauty and Games (no item metadata)?

Amazon Beauty and Games, as `../shared/data` holds them, have no item text or attributes: the only item embeddings are
those a recommender learns. Per dataset and seed, under `--work` (each step skipped when its output is already there):
- `data/{dataset}`: `python -m data_preprocess` on `../shared/data` (the commands of `beauty_full.yaml` and
  `games_paper.yaml`, maxlen 50);
- `runs/{dataset}/id-seed{seed}`: SASRec on item ids only, `train_configs/sft/beauty_full.yaml` (paper model, full
  softmax, full-ranking early stopping) for both datasets, so that one general recipe serves both;
- `semantic_ids/{dataset}-seed{seed}`: `python -m hf_sasrec.semantic_ids --embeddings RUN_DIR` on that model's output
  item embeddings (TIGER's 3 levels of 256 codes plus the de-duplication level);
- `runs/{dataset}/id+codes-seed{seed}`: the same recipe with `--semantic_ids` (item id + code embeddings);
- `runs/{dataset}/id-continued-seed{seed}` (with `--arms ... id-continued`): the control, the `id` model trained again
  by the same recipe (`--init_from`), ids only: as much prior training as `id+codes` gets, without the codes.

    OMP_NUM_THREADS=1 python benchmarks/bench_semantic_ids_amazon.py [--datasets beauty games] [--seeds 0]
        [--arms id id+codes id-continued] [--work outputs/bench/semantic_ids_amazon] [--num-train-epochs 40]
        [--reuse-runs]

Without `../shared/data` (`--shared`) the benchmark says so and exits. Each run is appended to
`benchmarks/results/semantic_ids_amazon.jsonl` as it ends (test split, full ranking over all items, history excluded:
NDCG@10, HR@10, MRR; epochs, best epoch, the trainer's runtime; the `id+codes` record adds the RQ-VAE report). The
summary, from the latest record of each (dataset, arm, seed) in that file, goes to
`benchmarks/results/semantic_ids_amazon.md`, with the relative change of `id+codes` against `id`.
"""

import argparse
import json
import logging
import sys
from datetime import datetime, timezone
from pathlib import Path

from bench_item_features import REPORTED, code_version, mean_std, run, semantic_ids_lines

logger = logging.getLogger("bench_semantic_ids_amazon")
ROOT = Path(__file__).resolve().parent.parent
RESULTS = Path(__file__).parent / "results"
CONFIG = "train_configs/sft/beauty_full.yaml"
# dataset: its file under `--shared` and its `data_preprocess --format`.
DATASETS = {"beauty": ("amazon-beauty/Beauty.txt", "user-lines"), "games": ("amazon-games/Video.txt", "sasrec")}
# arm: its `python -m hf_sasrec.sft` options; "{codes}" is the semantic-ids folder, "{id_run}" the `id` run's folder.
# `id-continued` is the control of `id+codes`, which builds on a trained `id` model too: that model trained again,
# ids only, by the same recipe.
ARMS = {
    "id": [],
    "id+codes": ["--semantic_ids", "{codes}"],
    "id-continued": ["--init_from", "{id_run}"],
}


def prepare_data(dataset: str, shared: Path, work: Path) -> Path:
    """The processed `dataset` under `work`, made from `shared` unless already there."""
    data_dir = work / "data" / dataset
    if not (data_dir / "dataset_dict.json").exists():
        source, file_format = DATASETS[dataset]
        command = [sys.executable, "-m", "data_preprocess", "--input", str(shared / source), "--format", file_format]
        command += ["--name", dataset, "--output", str(data_dir), "--max-length", "50"]
        run(command, work / "prepare.log")
    return data_dir


def make_codes(run_dir: Path, data_dir: Path, codes_dir: Path, seed: int, log_file: Path) -> tuple[dict, float | None]:
    """The RQ-VAE semantic ids of `run_dir`'s item embeddings, made unless already there; their report and the
    seconds it took (`None` when read back)."""
    seconds = None
    if not (codes_dir / "report.json").exists():
        command = [sys.executable, "-m", "hf_sasrec.semantic_ids", "--embeddings", str(run_dir)]
        command += ["--data", str(data_dir), "--output", str(codes_dir), "--seed", str(seed)]
        seconds = run(command, log_file)[0]
    return json.loads((codes_dir / "report.json").read_text()), seconds


def run_dir(work: Path, dataset: str, arm: str, seed: int) -> Path:
    """The output folder of a run."""
    return work / "runs" / dataset / f"{arm}-seed{seed}"


def train(arm: str, dataset: str, seed: int, data_dir: Path, codes_dir: Path | None, args: argparse.Namespace) -> dict:
    """One run of `arm` on `dataset`; its record. With `--reuse-runs`, a run folder that already holds its
    `metrics.json` is read back instead of trained again (record `reused`, `wall_s` unknown)."""
    output_dir = run_dir(Path(args.work), dataset, arm, seed)
    id_run = run_dir(Path(args.work), dataset, "id", seed)
    command = [sys.executable, "-m", "hf_sasrec.sft", "--config", CONFIG, "--data_dir", str(data_dir)]
    command += ["--output_dir", str(output_dir), "--seed", str(seed), "--overwrite_output_dir", "true"]
    command += ["--report_to", "none", "--disable_tqdm", "true", "--num_train_epochs", str(args.num_train_epochs)]
    command += [option.format(codes=codes_dir, id_run=id_run) for option in ARMS[arm]]
    reused = args.reuse_runs and (output_dir / "metrics.json").exists()
    wall = None if reused else round(run(command, output_dir.with_suffix(".log"))[0], 1)
    metrics = json.loads((output_dir / "metrics.json").read_text())
    return {
        "time": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "dataset": dataset,
        "arm": arm,
        "seed": seed,
        "code": code_version(),
        "command": " ".join(command[1:]),
        **{name: metrics[key] for name, key in REPORTED.items()},
        "valid_ndcg@10": metrics["valid_full/ndcg@10"],
        "epochs": metrics["epochs"],
        "best_epoch": metrics["best_epoch"],
        "stopped_early": metrics["stopped_early"],
        "train_runtime_s": metrics["train_runtime"],
        "wall_s": wall,
        "reused": reused,
    }


def append(record: dict, results: Path) -> dict:
    """Append `record` to the results file (one JSON line) unless it was read back; returns it."""
    if not record["reused"]:
        with results.open("a") as output:
            output.write(json.dumps(record) + "\n")
    return record


def latest_records(results: Path) -> dict[tuple[str, str, int], dict]:
    """The latest record of each (dataset, arm, seed) of the results file."""
    records = {}
    if results.exists():
        for line in results.read_text().splitlines():
            record = json.loads(line)
            records[record["dataset"], record["arm"], record["seed"]] = record
    return records


def epochs_cell(record: dict) -> str:
    """`"31 (26)"`: the epochs a run trained and its best one, marked `cap` when early stopping did not end it."""
    return f"{record['epochs']:g} ({record['best_epoch']:g})" + ("" if record["stopped_early"] else " cap")


def markdown(records: dict[tuple[str, str, int], dict], command: str) -> str:
    """Per dataset, the arms' numbers (mean ± std over seeds) with the change against `id`, and the RQ-VAE report of
    each seed's semantic ids."""
    lines = [
        "# Semantic ids from SASRec's own item embeddings, Amazon Beauty and Games",
        "",
        f"`{command}`. Recipe: `{CONFIG}` for both datasets (paper SASRec, full softmax, early stopping on the "
        "validation full-ranking NDCG@10), the epochs capped as each record's command says. Test split, full ranking "
        "over all items (history excluded); change = relative change of the mean against `id`; `cap`: the run "
        "reached the epoch cap (early stopping did not end it). Train s is the trainer's runtime (per-epoch "
        "evaluation included). The codes are an RQ-VAE (3 × 256 + de-duplication) trained on the item embeddings "
        "of the `id` run of the same seed; `id-continued`, the control, is that `id` model trained again by the same "
        "recipe, ids only.",
        "",
    ]
    for dataset in dict.fromkeys(key[0] for key in records):
        runs = {arm: [r for (d, a, _), r in records.items() if d == dataset and a == arm] for arm in ARMS}
        lines += [
            f"## {dataset}",
            "",
            "| arm | seeds | NDCG@10 | change | HR@10 | change | MRR | change | valid NDCG@10 | epochs (best) "
            "| train s |",
            "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
        ]
        base = {name: mean_std([r[name] for r in runs["id"]])[0] for name in REPORTED} if runs["id"] else None
        for arm, arm_runs in runs.items():
            if not arm_runs:
                continue
            cells = [arm, " ".join(str(r["seed"]) for r in arm_runs)]
            for name in REPORTED:
                mean, std = mean_std([r[name] for r in arm_runs])
                relative = f"{mean / base[name] - 1:+.1%}" if base and arm != "id" else "–"
                cells += [f"{mean:.4f} ± {std:.4f}", relative]
            cells.append(f"{mean_std([r['valid_ndcg@10'] for r in arm_runs])[0]:.4f}")
            cells.append(", ".join(epochs_cell(r) for r in arm_runs))
            cells.append(", ".join(f"{r['train_runtime_s']:.0f}" for r in arm_runs))
            lines.append("| " + " | ".join(cells) + " |")
        lines.append("")
        for record in runs["id+codes"]:
            lines += [f"Semantic ids of seed {record['seed']} (RQ-VAE on the `id` run's item embeddings):", ""]
            lines += semantic_ids_lines(record["semantic_ids"])
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--datasets", nargs="+", default=list(DATASETS), choices=list(DATASETS))
    parser.add_argument("--seeds", nargs="+", type=int, default=[0])
    parser.add_argument("--arms", nargs="+", default=["id", "id+codes"], choices=list(ARMS), help="id always runs")
    parser.add_argument("--shared", default=str(ROOT.parent / "shared" / "data"), help="the raw Amazon files")
    parser.add_argument("--work", default="outputs/bench/semantic_ids_amazon", help="data, runs and codes")
    parser.add_argument("--num-train-epochs", type=int, default=40, help="epoch cap of a run (early stopping ends it)")
    parser.add_argument("--reuse-runs", action="store_true", help="read back runs whose metrics.json is there")
    parser.add_argument("--output", default=str(RESULTS / "semantic_ids_amazon.jsonl"))
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    shared, work, results = Path(args.shared), Path(args.work), Path(args.output)
    missing = [DATASETS[dataset][0] for dataset in args.datasets if not (shared / DATASETS[dataset][0]).is_file()]
    if missing:
        print(f"Skipped: {', '.join(missing)} not found under {shared} (the raw Amazon data; see --shared).")
        return
    for dataset in args.datasets:
        (work / "runs" / dataset).mkdir(parents=True, exist_ok=True)
        data_dir = prepare_data(dataset, shared, work)
        for seed in args.seeds:
            base = append(train("id", dataset, seed, data_dir, None, args), results)["ndcg@10"]
            if "id+codes" in args.arms:
                codes_dir = work / "semantic_ids" / f"{dataset}-seed{seed}"
                id_run = run_dir(work, dataset, "id", seed)
                report, seconds = make_codes(id_run, data_dir, codes_dir, seed, work / "prepare.log")
                record = train("id+codes", dataset, seed, data_dir, codes_dir, args)
                append(record | {"semantic_ids": report, "semantic_ids_s": seconds}, results)
                logger.info(
                    "%s seed %d id+codes: NDCG@10 %+.1f%% vs id", dataset, seed, 100 * (record["ndcg@10"] / base - 1)
                )
            if "id-continued" in args.arms:
                record = append(train("id-continued", dataset, seed, data_dir, None, args), results)
                logger.info(
                    "%s seed %d id-continued: NDCG@10 %+.1f%% vs id",
                    dataset,
                    seed,
                    100 * (record["ndcg@10"] / base - 1),
                )
    text = markdown(latest_records(results), " ".join(["python", *sys.argv]))
    results.with_suffix(".md").write_text(text)
    print(text)


if __name__ == "__main__":
    main()
