"""Speed benchmark: training throughput (sequences/s) and peak memory of each variant, evaluation throughput.

    OMP_NUM_THREADS=1 python benchmarks/bench_train_speed.py --data data/games --steps 50 \
        [--sampling group_by_length] [--reference]

Every variant is built with the SASRec paper's Games config (maxlen 50, hidden 50, 2 blocks, 1 head, dropout 0.5,
batch 128, Adam lr 1e-3) and trained for `--steps` steps on batches of the real Games train split (collated once,
outside the timing; random rows, or length-bucketed with `--sampling group_by_length`) with the given loss and
Trainer's default fused AdamW, in its own subprocess so that peak RSS (`ru_maxrss`) is its own. The
evaluation benchmark scores the test split with `evaluate_next_item` (full ranking, all users, all items).

`--reference` also times the training step of `ReferenceSASRec` (`benchmarks/reference_sasrec.py`): a
re-implementation of the reference PyTorch SASRec's model (pmixer/SASRec.pytorch), BCE on one sampled negative a
position, on the same random batches (padded to their longest row).

`--trainer-epochs N` also times whole `Trainer` epochs, data loading and collation included: `python -m
hf_sasrec.sft` with `train_configs/sft/games_paper.yaml` (sasrec, bce) for N epochs without evaluation or saving, on
random and on length-bucketed batches; its record is the trainer's `train_runtime` over N. `--before DIR` runs the
same jobs from another checkout of the project (e.g. `git worktree add /tmp/before <commit>`), so that code before
and after a change is timed in one run.
Results are appended to `benchmarks/results/train_speed.jsonl`.
"""

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
from datasets import DatasetDict
from reference_sasrec import ReferenceSASRec, reference_inputs
from transformers import AutoConfig, AutoModelForCausalLM

import hf_sasrec
from hf_sasrec.data_collator import NextItemCollator, model_uses_timestamps
from hf_sasrec.evaluation import evaluate_next_item
from hf_sasrec.length_bucket_sampler import LengthBucketSampler, window_lengths
from hf_sasrec.sft_trainer import NO_POSITIONS

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmarks" / "results" / "train_speed.jsonl"
PAPER = {
    "hidden_size": 50,
    "intermediate_size": 50,
    "num_hidden_layers": 2,
    "num_attention_heads": 1,
    "max_position_embeddings": 50,
    "hidden_dropout_prob": 0.5,
    "attention_dropout": 0.5,
}
BATCH, MAX_LENGTH, WARMUP = 128, 50, 5
SAMPLINGS = ("random", "group_by_length")


def training_batches(data_dir: str, steps: int, with_timestamps: bool, sampling: str = "random") -> list[dict]:
    """`steps + WARMUP` batches of the Games train split: random rows, or the first batches of an epoch of
    `LengthBucketSampler` (what `train_sampling_strategy=group_by_length` trains on; its batch order is shuffled,
    so the first batches are a fair sample of the epoch)."""
    train = DatasetDict.load_from_disk(data_dir)["train"].filter(lambda row: len(row["item_ids"]) >= 2)
    count = BATCH * (steps + WARMUP)
    if sampling == "group_by_length":
        rows = train.select(list(LengthBucketSampler(window_lengths(train, MAX_LENGTH), BATCH, seed=0))[:count])
    else:
        rows = train.shuffle(seed=0).select(range(count))
    collator = NextItemCollator(MAX_LENGTH, with_timestamps=with_timestamps)
    return [collator([rows[i] for i in range(start, start + BATCH)]) for start in range(0, len(rows), BATCH)]


def time_steps(step, batches: list[dict]) -> float:
    """Sequences per second of `step(batch)` over the batches after `WARMUP`."""
    for batch in batches[:WARMUP]:
        step(batch)
    start = time.perf_counter()
    for batch in batches[WARMUP:]:
        step(batch)
    return BATCH * (len(batches) - WARMUP) / (time.perf_counter() - start)


def bench_variant(data_dir: str, model_type: str, loss_type: str, steps: int, sampling: str) -> dict:
    stats = json.loads((Path(data_dir) / "stats.json").read_text())
    torch.manual_seed(0)
    config = AutoConfig.for_model(model_type, vocab_size=stats["vocab_size"], loss_type=loss_type, **PAPER)
    model = AutoModelForCausalLM.from_config(config).train()
    batches = training_batches(data_dir, steps, model_uses_timestamps(model), sampling)
    # Trainer's default optimizer (`adamw_torch_fused`); weight decay 0 makes it Adam.
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3, betas=(0.9, 0.98), weight_decay=0.0, fused=True)

    def step(batch: dict) -> None:
        optimizer.zero_grad()
        model(**batch, logits_to_keep=NO_POSITIONS).loss.backward()  # as NextItemTrainer trains
        optimizer.step()

    return {
        "model_type": model_type,
        "loss_type": loss_type,
        "sampling": sampling,
        "mean_padded_length": sum(batch["input_ids"].shape[1] for batch in batches) / len(batches),
        "train_seq_per_s": time_steps(step, batches),
    }


def bench_reference(data_dir: str, steps: int) -> dict:
    stats = json.loads((Path(data_dir) / "stats.json").read_text())
    num_special = stats["num_special_tokens"]
    torch.manual_seed(0)
    model = ReferenceSASRec(stats["num_items"]).train()
    batches = training_batches(data_dir, steps, with_timestamps=False)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3, betas=(0.9, 0.98))

    def step(batch: dict) -> None:
        seqs = reference_inputs(batch["input_ids"], num_special)
        positives = reference_inputs(batch["shift_labels"], num_special)
        negatives = torch.randint(1, stats["num_items"] + 1, positives.shape) * positives.ne(0)
        optimizer.zero_grad()
        model.loss(seqs, positives, negatives).backward()
        optimizer.step()

    return {
        "model_type": "reference_sasrec_reimplementation",
        "loss_type": "bce",
        "sampling": "random",
        "train_seq_per_s": time_steps(step, batches),
    }


def bench_evaluation(data_dir: str) -> dict:
    stats = json.loads((Path(data_dir) / "stats.json").read_text())
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(AutoConfig.for_model("sasrec", vocab_size=stats["vocab_size"], **PAPER))
    test = DatasetDict.load_from_disk(data_dir)["test"]
    start = time.perf_counter()
    evaluate_next_item(model, test, protocol="full", batch_size=512, max_length=MAX_LENGTH)
    elapsed = time.perf_counter() - start
    return {
        "model_type": "sasrec",
        "eval_protocol": "full",
        "eval_users": len(test),
        "eval_users_per_s": len(test) / elapsed,
    }


def bench_trainer_epochs(data_dir: str, epochs: int, sampling: str, checkout: Path) -> dict:
    """Whole Trainer epochs of sasrec (bce, the paper's Games configuration) run from `checkout`: seconds an epoch."""
    with tempfile.TemporaryDirectory() as output_dir:
        command = [sys.executable, "-m", "hf_sasrec.sft", "--config", "train_configs/sft/games_paper.yaml"]
        command += ["--data_dir", str(Path(data_dir).resolve()), "--output_dir", output_dir, "--overwrite_output_dir"]
        command += ["--train_sampling_strategy", sampling, "--num_train_epochs", str(epochs), "--eval_strategy", "no"]
        command += ["--save_strategy", "no", "--load_best_model_at_end", "false", "--early_stopping_patience", "0"]
        command += ["--test_protocols", "sampled", "--report_to", "none", "--disable_tqdm", "true"]
        environment = {**os.environ, "PYTHONPATH": str(checkout)}
        subprocess.run(command, cwd=checkout, env=environment, check=True, capture_output=True)
        metrics = json.loads((Path(output_dir) / "metrics.json").read_text())
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=checkout, capture_output=True, text=True)
    return {
        "model_type": "sasrec",
        "loss_type": "bce",
        "sampling": sampling,
        "trainer_epochs": epochs,
        "trainer_s_per_epoch": metrics["train_runtime"] / epochs,
        "train_loss": metrics["train_loss"],
        "checkout": str(checkout),
        "commit": commit.stdout.strip(),
    }


def child(args: argparse.Namespace) -> None:
    """Run one measurement in this process and print its record with the peak RSS."""
    if args.what == "reference":
        record = bench_reference(args.data, args.steps)
    elif args.what == "evaluation":
        record = bench_evaluation(args.data)
    elif args.what.startswith("trainer:"):
        _, sampling, checkout = args.what.split(":", 2)
        record = bench_trainer_epochs(args.data, args.trainer_epochs, sampling, Path(checkout))
    else:
        model_type, loss_type = args.what.split(":")
        record = bench_variant(args.data, model_type, loss_type, args.steps, args.sampling)
    record["peak_rss_mib"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps(record))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", default="data/games")
    parser.add_argument("--steps", type=int, default=50)
    parser.add_argument("--losses", nargs="+", default=["bce"])
    parser.add_argument("--variants", nargs="+", default=list(hf_sasrec.VARIANTS))
    parser.add_argument(
        "--sampling",
        choices=SAMPLINGS,
        default="random",
        help="batches of the variants: random rows (as the reference) or length-bucketed (LengthBucketSampler)",
    )
    parser.add_argument("--reference", action="store_true", help="also time the reference re-implementation")
    parser.add_argument("--skip-evaluation", action="store_true", help="only the training throughput")
    parser.add_argument("--repeats", type=int, default=1, help="measure the list this many times, interleaved")
    parser.add_argument("--trainer-epochs", type=int, default=0, help="also time this many whole Trainer epochs")
    parser.add_argument(
        "--before",
        type=Path,
        help="another checkout (e.g. a git worktree of an older commit) whose jobs run as well",
    )
    parser.add_argument("--what", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.what:
        return child(args)
    if not Path(args.data).is_dir():
        sys.exit(
            f"{args.data} is absent: prepare it with python -m data_preprocess (train_configs/sft/games_paper.yaml)."
        )
    checkouts = [ROOT] + ([args.before.resolve()] if args.before else [])
    jobs = [f"{variant}:{loss}" for loss in args.losses for variant in args.variants] + ["reference"] * args.reference
    jobs = [(job, checkout) for job in jobs for checkout in checkouts]  # before and after side by side
    if args.trainer_epochs:  # run by this script, from either checkout
        jobs += [(f"trainer:{sampling}:{checkout}", ROOT) for sampling in SAMPLINGS for checkout in checkouts]
    evaluations = [("evaluation", checkout) for checkout in checkouts] * (not args.skip_evaluation)
    for job, checkout in jobs * args.repeats + evaluations:
        script = checkout / "benchmarks" / Path(__file__).name
        command = [sys.executable, str(script), "--data", str(Path(args.data).resolve()), "--steps", str(args.steps)]
        command += ["--what", job, "--sampling", args.sampling]
        command += ["--trainer-epochs", str(args.trainer_epochs)] if job.startswith("trainer:") else []
        environment = {**os.environ, "PYTHONPATH": str(checkout)}
        result = subprocess.run(command, capture_output=True, text=True, cwd=checkout, env=environment)
        if result.returncode != 0:
            record = {"job": job, "error": result.stderr.strip().splitlines()[-1]}
        else:
            record = json.loads(result.stdout.strip().splitlines()[-1])
        record.update({"data": args.data, "steps": args.steps, "batch": BATCH, "command": " ".join(command[1:])})
        record.setdefault("checkout", str(checkout))
        with RESULTS.open("a") as file:
            file.write(json.dumps(record) + "\n")
        print(json.dumps(record), flush=True)


if __name__ == "__main__":
    main()
