"""One run that exercises and measures the GPU paths of hf-sasrec, made to fit a short lease of a GPU machine.

On the GPU machine, after `bash benchmarks/gpu_wheels.sh` on a machine that reaches PyPI:

    bash benchmarks/gpu_check.sh OUTPUT_DIR [--steps 100] [--sections training retrieval] ...

A CPU smoke run of every section on tiny sizes (how the script is tested without a GPU):

    OMP_NUM_THREADS=1 python benchmarks/gpu_check.py --output /tmp/gpu-check --device cpu --quick

Sections, in this order; each is guarded (an error is recorded and the next section runs). Every record is appended
to OUTPUT_DIR/results.jsonl as soon as it is measured, and OUTPUT_DIR/results.md is rewritten after every section:

1. `environment`: package versions, the device, whether flash-attn and faiss-gpu are usable, the data trained on;
2. `pytest`: `pytest -m gpu tests/` in a subprocess, its output in OUTPUT_DIR/pytest_gpu.log;
3. `agreement`: the hidden states of eager, sdpa and flash_attention_2 on one batch, left- and right-padded, in fp32
   and bf16, against fp32 eager on the left-padded batch;
4. `training`: every variant in the paper configuration and a bigger one, with each attention implementation it
   supports, in fp32 and under bf16 autocast: full-softmax CE (`loss_type="ce"`), fused AdamW, the same batches of
   the Games train split (or synthetic Games-shaped sequences) for a fixed number of steps; sequences/s, real
   items/s, peak device memory and the loss;
5. `retrieval`: Faiss flat and IVF indexes (`hf_sasrec.retrieval.ItemIndex`) on random and clustered vectors: build
   time, queries/s and recall@10 against exact search (torch matmul + top-k on the device, also timed). Without a
   faiss that has GPU support the Faiss indexes are skipped on a GPU run (a recorded reason), unless `--faiss-cpu`.

`--deadline-s` bounds the whole run: training runs that would overrun it are recorded as skipped, not started.
"""

import argparse
import dataclasses
import gzip
import json
import platform
import subprocess
import sys
import time
import traceback
from collections.abc import Callable
from importlib import metadata
from pathlib import Path

import numpy as np
import torch
import transformers
from transformers import AutoConfig, AutoModelForCausalLM
from transformers.utils import is_flash_attn_2_available

import hf_sasrec
from data_preprocess.atomic_files import atomic_write_text
from hf_sasrec.data_collator import NextItemCollator, model_uses_timestamps
from hf_sasrec.sft_trainer import NO_POSITIONS

ROOT = Path(__file__).resolve().parent.parent
GAMES = ROOT.parent / "shared" / "data" / "amazon-games" / "Video.txt"
# Amazon Video Games as the SASRec paper prepared it (`user item` lines, each user's items in time order).
GAMES_USERS, GAMES_ITEMS, GAMES_MEAN_LENGTH, GAMES_MIN_LENGTH = 31013, 23715, 9.3, 5
NUM_SPECIAL_TOKENS = hf_sasrec.SASRecConfig.num_special_tokens
# SASRec's Games configuration: the `sasrec/paper.json` preset's sizes and dropout (its BCE loss aside: every run here
# trains with the full softmax), over histories of 50 items.
PAPER_PRESET = json.loads((ROOT / "model_configs" / "sasrec" / "paper.json").read_text())
CONFIGS = {
    "paper": {
        **{key: value for key, value in PAPER_PRESET.items() if key not in ("model_type", "loss_type")},
        "max_position_embeddings": 50,
    },
    "big": {
        "hidden_size": 256,
        "num_hidden_layers": 4,
        "num_attention_heads": 4,
        "max_position_embeddings": 200,
        "hidden_dropout_prob": 0.2,
        "attention_dropout": 0.2,
    },
}
# (attention implementation, precision) of the training runs, most wanted first, so that a deadline cuts the least
# useful ones; flash-attn computes in fp16/bf16 only, so it has no fp32 run. The agreement check makes the same runs,
# bf16 eager before the other bf16 ones: its error is their yardstick.
TRAINING_RUNS = [
    ("eager", "fp32"),
    ("sdpa", "bf16"),
    ("sdpa", "fp32"),
    ("eager", "bf16"),
    ("flash_attention_2", "bf16"),
]
AGREEMENT_RUNS = [
    ("eager", "fp32"),
    ("sdpa", "fp32"),
    ("eager", "bf16"),
    ("sdpa", "bf16"),
    ("flash_attention_2", "bf16"),
]
SUPPORT_FLAGS = {"sdpa": "_supports_sdpa", "flash_attention_2": "_supports_flash_attn"}
# Rough H200 figures for the plan printed before training: seconds to build a model, seconds a step.
SETUP_GUESS_S, STEP_GUESS_S = 1.0, {"paper": 0.01, "big": 0.04}
# Agreement limits against fp32 eager, on hidden states (RMS-normed, so of unit scale). fp32: the largest |difference|.
# bf16: the mean |difference|, which may be at most max(2 x that of bf16 eager, 0.005). The mean, not the largest,
# because sasrec_moe routes each item to its top experts, and bf16 rounding can flip a near-tie: one item then
# differs by O(1) in any implementation, which moves the largest difference but barely the mean.
FP32_TOLERANCE = 1e-4
BF16_SLACK, BF16_FLOOR = 2.0, 5e-3
TOP_K = 10
SECTIONS = ("environment", "pytest", "agreement", "training", "retrieval")


@dataclasses.dataclass(frozen=True)
class Sizes:
    """Everything the run's duration scales with; `QUICK` is the CPU smoke run."""

    batch: int = 128
    warmup: int = 5
    agreement_rows: int = 64
    vectors: int = 1_000_000
    queries: int = 1000
    dim: int = 64
    clusters: int = 1024
    synthetic_users: int = GAMES_USERS
    synthetic_items: int = GAMES_ITEMS
    pytest_paths: tuple[str, ...] = ("tests",)
    pytest_timeout_s: int = 180
    retrieval_reserve_s: int = 45


FULL = Sizes()
QUICK = Sizes(
    batch=8,
    warmup=1,
    agreement_rows=6,
    vectors=20_000,
    queries=100,
    clusters=64,
    synthetic_users=300,
    synthetic_items=200,
    pytest_paths=("tests/test_gpu.py",),
    pytest_timeout_s=120,
    retrieval_reserve_s=0,
)


class Report:
    """The run's records: each appended to `results.jsonl` (and printed) as it comes, all summed up in `results.md`,
    which is rewritten after every section. Also keeps the run's deadline."""

    def __init__(self, output: Path, deadline_s: float):
        self.output = output
        self.output.mkdir(parents=True, exist_ok=True)
        self.jsonl = output / "results.jsonl"
        self.jsonl.write_text("", encoding="utf-8")
        self.records: list[dict] = []
        self.start = time.monotonic()
        self.deadline_s = deadline_s

    def elapsed(self) -> float:
        return time.monotonic() - self.start

    def time_left(self) -> float:
        return self.deadline_s - self.elapsed()

    def add(self, section: str, **fields) -> dict:
        record = {"section": section, **fields, "elapsed_s": round(self.elapsed(), 1)}
        self.records.append(record)
        with self.jsonl.open("a", encoding="utf-8") as file:
            file.write(json.dumps(record) + "\n")
        print(json.dumps(record), flush=True)
        return record

    def run_section(self, section: str, function: Callable, *args) -> None:
        """Run `function(self, *args)`; an exception is recorded as the section's error, and the summary is written
        whatever happens."""
        try:
            function(self, *args)
        except Exception as error:
            self.add(section, status="error", error=f"{type(error).__name__}: {error}", trace=traceback.format_exc())
        finally:
            atomic_write_text(self.output / "results.md", markdown(self.records))


@dataclasses.dataclass
class Sequences:
    """Train-split item token ids and times a user: each user's last two items held out (leave-one-out) where the
    user has three or more, as SASRec's `data_partition`; users left with fewer than two items are dropped."""

    items: list[list[int]]
    times: list[list[int]]
    vocab_size: int
    source: str


def with_times(items: list[np.ndarray], rng: np.random.Generator, vocab_size: int, source: str) -> Sequences:
    """The train split of `items` (token ids a user), with synthetic times: increasing, in seconds, with repeated
    times and irregular gaps from a minute to a month (the logs carry none)."""
    train = [(sequence[:-2] if len(sequence) >= 3 else sequence).tolist() for sequence in items]
    train = [sequence for sequence in train if len(sequence) >= 2]
    times = []
    for sequence in train:
        gaps = rng.integers(0, 5, len(sequence)) * rng.choice([60, 3600, 86400, 2_592_000], len(sequence))
        times.append((1_300_000_000 + np.cumsum(gaps)).tolist())
    return Sequences(train, times, vocab_size, source)


def read_games(path: Path, rng: np.random.Generator) -> Sequences:
    """The Games log (`user item` integer lines, plain or gzipped, a user's lines together and in time order), items
    renumbered from `NUM_SPECIAL_TOKENS` on."""
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rt", encoding="utf-8") as file:
        values = np.array(file.read().split(), dtype=np.int64)
    if values.size == 0 or values.size % 2:
        raise ValueError(f"{path}: expected `user item` lines of two integers, got {values.size} numbers in all.")
    pairs = values.reshape(-1, 2)
    item_keys, tokens = np.unique(pairs[:, 1], return_inverse=True)
    user_starts = np.flatnonzero(np.diff(pairs[:, 0])) + 1
    items = np.split(tokens + NUM_SPECIAL_TOKENS, user_starts)
    return with_times(items, rng, len(item_keys) + NUM_SPECIAL_TOKENS, f"Games log {path}")


def synthetic_games(users: int, item_count: int, rng: np.random.Generator) -> Sequences:
    """Games-shaped sequences: lengths of at least 5 with about Games' mean and a long tail (5 plus a log-normal
    number, sigma 1.2, rounded down: a few users of some hundred items, as in Games, whose longest has 858) and
    items drawn with Zipf popularity (exponent 1)."""
    sigma = 1.2
    mu = np.log(GAMES_MEAN_LENGTH - GAMES_MIN_LENGTH + 0.5) - sigma**2 / 2  # + 0.5: rounding down loses about that
    lengths = GAMES_MIN_LENGTH + np.floor(rng.lognormal(mu, sigma, users)).astype(np.int64)
    popularity = 1.0 / np.arange(1, item_count + 1)
    tokens = rng.choice(item_count, lengths.sum(), p=popularity / popularity.sum()) + NUM_SPECIAL_TOKENS
    items = np.split(tokens, np.cumsum(lengths)[:-1])
    source = f"synthetic Games-shaped sequences ({users} users, {item_count} items, Zipf popularity)"
    return with_times(items, rng, item_count + NUM_SPECIAL_TOKENS, source)


def load_sequences(path: Path | None, sizes: Sizes, seed: int = 0) -> Sequences:
    rng = np.random.default_rng(seed)
    if path is not None and path.is_file():
        return read_games(path, rng)
    sequences = synthetic_games(sizes.synthetic_users, sizes.synthetic_items, rng)
    if path is not None:
        sequences.source += f"; {path} is absent"
    return sequences


def package_version(name: str) -> str | None:
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return None


def describe_environment(report: Report, device: torch.device, data: Sequences, args: argparse.Namespace) -> None:
    names = ["torch", "transformers", "datasets", "trl", "accelerate", "huggingface-hub", "tokenizers"]
    names += ["safetensors", "numpy", "pyarrow", "faiss-cpu", "faiss-gpu-cu12", "flash-attn"]
    gpu = {}
    if device.type == "cuda":
        properties = torch.cuda.get_device_properties(device)
        gpu = {
            "gpu": properties.name,
            "capability": f"{properties.major}.{properties.minor}",
            "gpu_memory_gib": round(properties.total_memory / 2**30, 1),
            "torch_cuda": torch.version.cuda,
            "tf32_matmul": torch.backends.cuda.matmul.allow_tf32,
        }
    lengths = [len(sequence) for sequence in data.items]
    report.add(
        "environment",
        python=platform.python_version(),
        packages={name: package_version(name) for name in names},
        transformers_from=str(Path(transformers.__file__).parent),
        device=str(device),
        **gpu,
        flash_attention_2=is_flash_attn_2_available(),
        data=data.source,
        users=len(data.items),
        vocab_size=data.vocab_size,
        mean_train_length=round(sum(lengths) / len(lengths), 2),
        timestamps="synthetic (for tisasrec)",
        arguments={key: str(value) for key, value in vars(args).items()},
    )


def run_pytest(report: Report, sizes: Sizes) -> None:
    """`pytest -m gpu` in a subprocess, its output in `pytest_gpu.log`; collection errors of modules that need what
    the machine lacks are logged without stopping the GPU tests."""
    log = report.output / "pytest_gpu.log"
    command = [sys.executable, "-m", "pytest", "-m", "gpu", "-q", "-rs", "-p", "no:cacheprovider"]
    command += ["--continue-on-collection-errors", *sizes.pytest_paths]
    timeout = max(30.0, min(sizes.pytest_timeout_s, report.time_left() - 120))
    with log.open("w", encoding="utf-8") as output:
        try:
            returncode = subprocess.run(
                command, cwd=ROOT, stdout=output, stderr=subprocess.STDOUT, timeout=timeout
            ).returncode
        except subprocess.TimeoutExpired:
            returncode = None
    lines = [line for line in log.read_text(encoding="utf-8").splitlines() if line.strip()]
    summary = lines[-1] if lines else ""
    if returncode is None:
        status = f"timed out after {timeout:.0f} s"
    elif " failed" in summary:
        status = "tests failed"
    elif " error" in summary:  # collection errors: pytest exits 1 even where every selected test passed
        status = "errors"
    else:
        status = {0: "passed", 5: "no test collected"}.get(returncode, f"exit code {returncode}")
    report.add("pytest", status=status, returncode=returncode, summary=summary, command=command[1:])


def supports(variant: str, implementation: str) -> bool:
    flag = SUPPORT_FLAGS.get(implementation)
    return flag is None or getattr(hf_sasrec.VARIANTS[variant][2], flag)


def available(runs: list[tuple[str, str]]) -> tuple[list[tuple[str, str]], str | None]:
    """The `runs` this machine can make, and why flash_attention_2 is left out (`None` when it is not)."""
    if is_flash_attn_2_available():
        return runs, None
    reason = "flash_attn is not importable (transformers.utils.is_flash_attn_2_available() is False)"
    return [run for run in runs if run[0] != "flash_attention_2"], reason


def build_model(variant: str, config_name: str, vocab_size: int, implementation: str, device: torch.device):
    """A freshly initialised causal LM of `variant` (seed 0, so every implementation starts from the same weights)."""
    torch.manual_seed(0)
    config = AutoConfig.for_model(variant, vocab_size=vocab_size, loss_type="ce", **CONFIGS[config_name])
    return AutoModelForCausalLM.from_config(config, attn_implementation=implementation).to(device)


def collate(data: Sequences, users: np.ndarray, max_length: int) -> dict[str, torch.Tensor]:
    """Left-padded training batch of `users` (`NextItemCollator`), with timestamps."""
    rows = [{"item_ids": data.items[user], "timestamps": data.times[user]} for user in users]
    return NextItemCollator(max_length, with_timestamps=True)(rows)


def model_inputs(model, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return batch if model_uses_timestamps(model) else {k: v for k, v in batch.items() if k != "timestamps"}


def right_padded(batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The same rows with their padding moved to the right: `[batch, length]` tensors, real items first."""
    order = torch.argsort(batch["attention_mask"].eq(0).long(), dim=1, stable=True)
    return {key: value.gather(1, order) for key, value in batch.items()}


def real_hidden_states(model, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    """The encoder's float32 output at the real items, `[real items, hidden]` in row order (the same order whatever
    the padding side)."""
    with torch.no_grad():
        hidden = model.model(**model_inputs(model, batch)).last_hidden_state
    return hidden[batch["attention_mask"].bool()].float()


def check_agreement(report: Report, data: Sequences, sizes: Sizes, device: torch.device, variants, configs) -> None:
    """Every implementation and precision against fp32 eager on the left-padded batch, on both padding sides."""
    runs, flash_missing = available(AGREEMENT_RUNS)
    if flash_missing:
        report.add("agreement", implementation="flash_attention_2", status="unavailable", reason=flash_missing)
    users = np.random.default_rng(1).integers(len(data.items), size=sizes.agreement_rows)
    for config_name in configs:
        collated = collate(data, users, CONFIGS[config_name]["max_position_embeddings"])
        left = {key: collated[key] for key in ("input_ids", "attention_mask", "timestamps")}
        layouts = {"left": left, "right": right_padded(left)}
        layouts = {side: {key: value.to(device) for key, value in batch.items()} for side, batch in layouts.items()}
        for variant in variants:
            reference_model = build_model(variant, config_name, data.vocab_size, "eager", device).eval()
            reference = real_hidden_states(reference_model, layouts["left"])
            state = reference_model.state_dict()
            errors = {}
            for implementation, precision in [run for run in runs if supports(variant, run[0])]:
                model = build_model(variant, config_name, data.vocab_size, implementation, device).eval()
                model.load_state_dict(state)
                if precision == "bf16":
                    model.to(torch.bfloat16)
                for side, batch in layouts.items():
                    difference = (real_hidden_states(model, batch) - reference).abs()
                    errors[implementation, precision, side] = difference.mean().item()
                    if precision == "fp32":
                        checked, limit = difference.max().item(), FP32_TOLERANCE
                    else:
                        checked = difference.mean().item()
                        limit = max(BF16_SLACK * errors["eager", "bf16", "left"], BF16_FLOOR)
                    report.add(
                        "agreement",
                        config=config_name,
                        variant=variant,
                        implementation=implementation,
                        precision=precision,
                        padding=side,
                        max_abs_error=difference.max().item(),
                        mean_abs_error=difference.mean().item(),
                        limit=limit,
                        ok=checked <= limit,
                    )
                del model
            del reference_model
            empty_cache(device)


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def empty_cache(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.empty_cache()


def train_run(
    variant: str,
    config_name: str,
    implementation: str,
    precision: str,
    vocab_size: int,
    batches: list[dict[str, torch.Tensor]],
    warmup: int,
    device: torch.device,
) -> dict:
    """Train a fresh model on `batches` (the first `warmup` untimed) and measure the timed steps. The peak memory is
    counted above what was allocated before the model was built (the batches, loaded once for every run)."""
    on_gpu = device.type == "cuda"
    if on_gpu:
        torch.cuda.reset_peak_memory_stats(device)
    allocated_before = torch.cuda.memory_allocated(device) if on_gpu else 0
    model = build_model(variant, config_name, vocab_size, implementation, device).train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3, betas=(0.9, 0.98), weight_decay=0.0, fused=True)
    inputs = [model_inputs(model, batch) for batch in batches]
    losses = []

    def step(batch: dict[str, torch.Tensor]) -> None:
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=precision == "bf16"):
            loss = model(**batch, logits_to_keep=NO_POSITIONS).loss
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        losses.append(loss.detach())

    for batch in inputs[:warmup]:
        step(batch)
    synchronize(device)
    start = time.perf_counter()
    for batch in inputs[warmup:]:
        step(batch)
    synchronize(device)
    seconds = time.perf_counter() - start
    timed = batches[warmup:]
    real_items = sum(int(batch["attention_mask"].sum()) for batch in timed)
    loss_values = torch.stack(losses).float().cpu()
    peak_memory = torch.cuda.max_memory_allocated(device) - allocated_before if on_gpu else None
    return {
        "parameters": sum(parameter.numel() for parameter in model.parameters()),
        "seq_per_s": sum(len(batch["input_ids"]) for batch in timed) / seconds,
        "items_per_s": real_items / seconds,
        "mean_padded_length": sum(batch["input_ids"].shape[1] for batch in timed) / len(timed),
        "peak_memory_mib": peak_memory / 2**20 if on_gpu else None,
        "loss_first": loss_values[0].item(),
        "loss_last": loss_values[-1].item(),
        "steps": len(loss_values),
        "finite": bool(torch.isfinite(loss_values).all()),
    }


def benchmark_training(
    report: Report, data: Sequences, sizes: Sizes, device: torch.device, steps: int, variants, configs
) -> None:
    runs, flash_missing = available(TRAINING_RUNS)
    if flash_missing:
        report.add("training", implementation="flash_attention_2", status="unavailable", reason=flash_missing)
    plan = [
        (implementation, precision, config_name, variant)
        for implementation, precision in runs
        for config_name in configs
        for variant in variants
        if supports(variant, implementation)
    ]
    guess = sum(SETUP_GUESS_S + (steps + sizes.warmup) * STEP_GUESS_S[plan_row[2]] for plan_row in plan)
    report.add("training", status="plan", runs=len(plan), steps=steps, batch=sizes.batch, h200_guess_s=round(guess))
    users = np.random.default_rng(2).integers(len(data.items), size=(steps + sizes.warmup, sizes.batch))
    batches = {}
    for config_name in configs:
        max_length = CONFIGS[config_name]["max_position_embeddings"]
        batches[config_name] = [
            {key: value.to(device) for key, value in collate(data, rows, max_length).items()} for rows in users
        ]
    reserve = sizes.retrieval_reserve_s
    last_duration = dict.fromkeys(configs, 5.0)
    for implementation, precision, config_name, variant in plan:
        fields = {"config": config_name, "variant": variant, "implementation": implementation, "precision": precision}
        if report.time_left() < reserve + 1.5 * last_duration[config_name]:
            report.add("training", **fields, status="skipped", reason="deadline")
            continue
        start = time.monotonic()
        try:
            measured = train_run(
                variant,
                config_name,
                implementation,
                precision,
                data.vocab_size,
                batches[config_name],
                sizes.warmup,
                device,
            )
            report.add("training", **fields, status="ok", **measured)
        except Exception as error:
            report.add("training", **fields, status="error", error=f"{type(error).__name__}: {error}")
        last_duration[config_name] = time.monotonic() - start
        empty_cache(device)


def vector_sets(sizes: Sizes, seed: int = 0) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    """`{name: (vectors [count, dim], queries [queries, dim])}`: standard normal vectors, and clustered ones shaped
    like trained item embeddings (Zipf-sized clusters, log-normal norms) with queries near popular clusters."""
    generator = torch.Generator().manual_seed(seed)
    count, dim = sizes.vectors, sizes.dim
    random_set = (torch.randn(count, dim, generator=generator), torch.randn(sizes.queries, dim, generator=generator))
    centers = torch.randn(sizes.clusters, dim, generator=generator)
    weights = 1.0 / torch.arange(1, sizes.clusters + 1)
    cells = torch.multinomial(weights, count, replacement=True, generator=generator)
    norms = torch.exp(0.3 * torch.randn(count, 1, generator=generator))
    vectors = (centers[cells] + 0.3 * torch.randn(count, dim, generator=generator)) * norms
    query_cells = torch.multinomial(weights, sizes.queries, replacement=True, generator=generator)
    queries = centers[query_cells] + 0.3 * torch.randn(sizes.queries, dim, generator=generator)
    return {"random": random_set, "clustered": (vectors, queries)}


def exact_top_k(vectors: torch.Tensor, queries: torch.Tensor, device: torch.device) -> tuple[np.ndarray, float]:
    """Exact inner-product top-`TOP_K` ids `[queries, TOP_K]` by matmul on `device`, and the search's seconds."""
    vectors, queries = vectors.to(device), queries.to(device)

    def search() -> torch.Tensor:
        return torch.cat([(chunk @ vectors.T).topk(TOP_K).indices for chunk in queries.split(256)])

    search()  # warm-up
    synchronize(device)
    start = time.perf_counter()
    ids = search()
    synchronize(device)
    return ids.cpu().numpy(), time.perf_counter() - start


def recall_at_k(found: np.ndarray, exact: np.ndarray) -> float:
    """Mean share of each query's exact top-k among the found ids (`[queries, k]` both)."""
    return float((found[:, :, None] == exact[:, None, :]).any(-1).mean())


def benchmark_retrieval(report: Report, sizes: Sizes, device: torch.device, faiss_on_cpu: bool) -> None:
    import faiss

    from hf_sasrec.retrieval import ItemIndex, RetrievalConfig, gpu_available

    use_gpu = device.type == "cuda" and gpu_available()
    if not (use_gpu or faiss_on_cpu):
        report.add(
            "retrieval",
            index="faiss",
            status="skipped",
            reason=f"faiss {faiss.__version__} has no GPU support here (no faiss-gpu, or it sees no GPU)",
        )
    for name, (vectors, queries) in vector_sets(sizes).items():
        exact, seconds = exact_top_k(vectors, queries, device)
        fields = {"vectors": name, "count": len(vectors), "dim": sizes.dim, "queries": len(queries)}
        queries_per_s = len(queries) / seconds
        report.add(
            "retrieval",
            **fields,
            index="exact (torch matmul + top-k)",
            device=str(device),
            queries_per_s=queries_per_s,
        )
        if not (use_gpu or faiss_on_cpu):
            continue
        for index_type in ("flat", "ivf"):
            config = RetrievalConfig(index_type=index_type, use_gpu=use_gpu)
            start = time.perf_counter()
            index = ItemIndex.build(vectors, 0, config)
            build_seconds = time.perf_counter() - start
            index.search(queries[:TOP_K], TOP_K)  # warm-up
            start = time.perf_counter()
            _, found = index.search(queries, TOP_K)
            search_seconds = time.perf_counter() - start
            report.add(
                "retrieval",
                **fields,
                index=f"faiss {index_type}",
                device="gpu" if index.on_gpu else "cpu",
                build_s=build_seconds,
                queries_per_s=len(queries) / search_seconds,
                recall_at_10=recall_at_k(found, exact),
                ivf_nlist=config.nlist_for(len(vectors)) if index_type == "ivf" else None,
                ivf_nprobe=config.ivf_nprobe if index_type == "ivf" else None,
            )
            del index


def table(header: list[str], rows: list[list]) -> list[str]:
    def cell(value) -> str:
        if isinstance(value, float):
            return f"{value:.3g}" if abs(value) < 100 else f"{value:,.0f}"
        return "" if value is None else str(value)

    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    return lines + ["| " + " | ".join(cell(value) for value in row) + " |" for row in rows]


def markdown(records: list[dict]) -> str:
    """The summary of the records so far."""
    by_section: dict[str, list[dict]] = {}
    for record in records:
        by_section.setdefault(record["section"], []).append(record)
    lines = ["# GPU check", ""]
    environment = by_section.get("environment", [{}])[0]
    keys = ["gpu", "capability", "gpu_memory_gib", "device", "torch_cuda", "python", "packages", "transformers_from"]
    for key in [*keys, "flash_attention_2", "data", "users", "mean_train_length"]:
        if key in environment:
            lines.append(f"- {key}: {environment[key]}")
    for record in by_section.get("pytest", []):
        lines += ["", "## pytest -m gpu", "", f"{record.get('status')}: `{record.get('summary', '')}`"]
    agreement = [record for record in by_section.get("agreement", []) if "max_abs_error" in record]
    if agreement:
        lines += ["", "## Attention implementations against fp32 eager (left-padded), hidden states", ""]
        lines += [
            "Limit: on the max |error| in fp32, on the mean |error| in bf16 (2 x bf16 eager's, at least 0.005).",
            "",
        ]
        keys = ["config", "variant", "implementation", "precision", "padding", "max_abs_error", "mean_abs_error"]
        keys += ["limit", "ok"]
        header = [key.replace("_", " ") for key in keys]
        lines += table(header, [[record[key] for key in keys] for record in agreement])
    training = [record for record in by_section.get("training", []) if record.get("status") == "ok"]
    users = environment.get("users")
    for config_name in dict.fromkeys(record["config"] for record in training):
        rows = [record for record in training if record["config"] == config_name]
        baseline = {
            row["variant"]: row["seq_per_s"]
            for row in rows
            if (row["implementation"], row["precision"]) == ("eager", "fp32")
        }
        lines += ["", f"## Training, {config_name} config ({CONFIGS[config_name]})", ""]
        header = ["variant", "attention", "precision", "seq/s", "items/s", "peak MiB", "loss first", "loss last"]
        header += ["x fp32 eager", f"epoch s ({users} seqs)"]
        lines += table(
            header,
            [
                [
                    row["variant"],
                    row["implementation"],
                    row["precision"],
                    row["seq_per_s"],
                    row["items_per_s"],
                    row["peak_memory_mib"],
                    row["loss_first"],
                    row["loss_last"],
                    row["seq_per_s"] / baseline[row["variant"]] if row["variant"] in baseline else None,
                    users / row["seq_per_s"] if users else None,
                ]
                for row in rows
            ],
        )
    retrieval = [record for record in by_section.get("retrieval", []) if "queries_per_s" in record]
    if retrieval:
        lines += ["", "## Retrieval (recall@10 against exact)", ""]
        keys = ["vectors", "count", "index", "device", "build_s", "queries_per_s", "recall_at_10"]
        lines += table(keys, [[record.get(key) for key in keys] for record in retrieval])
    notes = [
        record
        for record in records
        if record.get("status") in ("error", "skipped", "unavailable")
        or record.get("ok") is False
        or record.get("finite") is False
    ]
    if notes:
        lines += ["", "## Errors, failed checks, skips, unavailable", ""]
        for record in notes:
            what = {key: record[key] for key in ("config", "variant", "implementation", "precision") if key in record}
            reason = record.get("reason") or record.get("error") or "outside its limit, or a non-finite loss"
            lines.append(f"- {record['section']} {record.get('status', 'failed')} {what or ''}: {reason}")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--output", required=True, type=Path, help="folder for results.jsonl, results.md, logs")
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--steps", type=int, help="timed training steps a run (default 100; 2 with --quick)")
    parser.add_argument("--batch", type=int, help="training batch size (default 128, the paper's; 8 with --quick)")
    parser.add_argument("--quick", action="store_true", help="tiny sizes: a smoke run of every section on a CPU")
    parser.add_argument("--data", type=Path, default=GAMES, help="Games log (`user item` lines, .txt or .txt.gz)")
    parser.add_argument("--deadline-s", type=float, default=390.0, help="whole-run budget; later runs are skipped")
    parser.add_argument("--sections", nargs="+", default=list(SECTIONS), choices=SECTIONS)
    parser.add_argument("--variants", nargs="+", default=list(hf_sasrec.VARIANTS), choices=list(hf_sasrec.VARIANTS))
    parser.add_argument("--configs", nargs="+", default=list(CONFIGS), choices=list(CONFIGS))
    parser.add_argument("--faiss-cpu", action="store_true", help="build CPU Faiss indexes when faiss has no GPU")
    args = parser.parse_args()
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        sys.exit("--device cuda, but torch sees no CUDA device; pass --device cpu (with --quick for a smoke run).")
    sizes = QUICK if args.quick else FULL
    if args.batch:
        sizes = dataclasses.replace(sizes, batch=args.batch)
    steps = args.steps or (2 if args.quick else 100)
    report = Report(args.output, args.deadline_s)
    data = load_sequences(None if args.quick else args.data, sizes)
    sections = {
        "environment": (describe_environment, device, data, args),
        "pytest": (run_pytest, sizes),
        "agreement": (check_agreement, data, sizes, device, args.variants, args.configs),
        "training": (benchmark_training, data, sizes, device, steps, args.variants, args.configs),
        "retrieval": (benchmark_retrieval, sizes, device, args.faiss_cpu or args.quick),
    }
    for name, (function, *function_args) in sections.items():
        if name in args.sections:
            report.run_section(name, function, *function_args)
    report.add("done", total_s=round(report.elapsed(), 1))
    atomic_write_text(args.output / "results.md", markdown(report.records))


if __name__ == "__main__":
    main()
