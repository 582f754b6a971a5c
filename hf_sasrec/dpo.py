"""Align a trained recommender with DPO: `python -m hf_sasrec.dpo --config FILE.yaml [--key value ...]`.

    python -m hf_sasrec.dpo --config train_configs/dpo/default.yaml
    python -m hf_sasrec.dpo --config train_configs/dpo/softmax_dpo.yaml --beta=0.5 --output_dir outputs/dpo/b05

A key is a field of [`DPOScriptArguments`] (which SFT run, which preference pairs) or of [`RecommenderDPOConfig`]
(every `trl.DPOConfig` field, `TrainingArguments` included); the YAML file sets defaults, the command line overrides
them, and any other key is an error.

The script loads the SFT run (`sft_dir`: model and item tokenizer, checked by `load_checkpoint`; code saved in the
folder runs only with `trust_remote_code=true`, for a `model_type` this package lacks), checks that its data folder's
tokenizer is the same item vocabulary, builds the preference pairs from the training split when `preference_dir` is
absent (`data_preprocess.preference`), ranks `eval_split` before DPO, trains [`RecommenderDPOTrainer`] with the
frozen SFT model as reference, ranks again, and writes the model, the tokenizer, `metrics.json` (both rankings side
by side) and `run_info.json` to `output_dir`, which is refused when it already holds a run unless
`overwrite_output_dir=true`.
"""

import copy
import logging
import math
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from datasets import Dataset, load_from_disk
from torch import nn
from transformers import PreTrainedConfig

from data_preprocess.atomic_files import atomic_directory, atomic_write_json
from data_preprocess.preference import build_preference_pairs

from .argument_parser import ArgumentError, RecommenderArgumentParser
from .checkpoint_loading import check_item_vocabulary, checkpoint_item_vectors, load_checkpoint
from .checkpoints import OutputDirError, check_output_dir
from .dpo_config import RecommenderDPOConfig
from .dpo_trainer import RecommenderDPOTrainer
from .evaluation import coverage_interval, evaluate_users, mean_with_interval, paired_difference
from .item_tokenizer import save_item_tokenizer
from .processed_data import beyond_accuracy_inputs, load_processed_data
from .run_info import RunInfo

logger = logging.getLogger(__name__)

PREFERENCE_SOURCES = ("low-rated", "popular", "hard")


@dataclass
class DPOScriptArguments:
    """What `python -m hf_sasrec.dpo` aligns, and with which preference pairs."""

    sft_dir: str = field(default="outputs/sft/default", metadata={"help": "SFT run folder (model + tokenizer)."})
    data_dir: str | None = field(
        default=None, metadata={"help": "Processed data folder; defaults to the SFT run's run_info.json data_dir."}
    )
    source: str = field(
        default="hard",
        metadata={"help": "Rejected-item source of the preference builder.", "choices": PREFERENCE_SOURCES},
    )
    num_rejected: int = field(default=1, metadata={"help": "Rejected items per prompt (softmax DPO uses them all)."})
    all_positions: bool = field(
        default=False, metadata={"help": "A preference pair for every training position, not only the last one."}
    )
    pair_seed: int = field(default=0, metadata={"help": "Seed of the preference builder's sampling."})
    preference_dir: str | None = field(
        default=None,
        metadata={
            "help": "Preference pairs; built when absent. Default: outputs/preferences/<sft run>-<source>-k<K>[-all]."
        },
    )
    eval_split: str = field(default="test", metadata={"help": "Split ranked before and after DPO."})
    eval_batch_size: int = field(default=512, metadata={"help": "Batch size of the ranking evaluation."})


def make_parser() -> RecommenderArgumentParser:
    """The parser of `--config FILE.yaml` and `--key value` overrides into (`DPOScriptArguments`,
    `RecommenderDPOConfig`)."""
    return RecommenderArgumentParser((DPOScriptArguments, RecommenderDPOConfig))


def build_preferences(script_args: DPOScriptArguments, data_dir: str, output_dir: Path) -> Dataset:
    """Preference pairs of the data issue's builder (`data_preprocess.preference`) from the training split, saved to
    `output_dir`; hard negatives are the nearest items in the SFT model's item-embedding space."""
    embeddings = checkpoint_item_vectors(script_args.sft_dir) if script_args.source == "hard" else None
    logger.info("Building %s preference pairs from %s into %s", script_args.source, data_dir, output_dir)
    pairs = build_preference_pairs(
        data_dir,
        script_args.source,
        num_rejected=script_args.num_rejected,
        item_embeddings=embeddings,
        all_positions=script_args.all_positions,
        seed=script_args.pair_seed,
    )
    with atomic_directory(output_dir) as folder:
        pairs.save_to_disk(str(folder))
    return pairs


# The metric each rejected-item source aims at, shown first in the before/after table.
GOAL_METRICS = {"low-rated": "full/disliked@10", "popular": "full/popularity_percentile@10", "hard": "full/ndcg@10"}


def comparison_row(
    sft: tuple[float, float], dpo: tuple[float, float], change: tuple[float, float]
) -> dict[str, float]:
    """One metric's row of `side_by_side` from its three (value, half-width of the 95% interval) pairs."""
    pairs = {"sft": sft, "dpo": dpo, "change": change}
    return {name + suffix: pair[index] for name, pair in pairs.items() for index, suffix in enumerate(("", "_ci95"))}


def side_by_side(
    before: tuple[dict[str, torch.Tensor], torch.LongTensor],
    after: tuple[dict[str, torch.Tensor], torch.LongTensor],
    goal: str,
    config: PreTrainedConfig,
) -> dict[str, dict[str, float]]:
    """`{metric: {"sft", "sft_ci95", "dpo", "dpo_ci95", "change", "change_ci95"}}` from the per-user values and the
    top-10 lists of both evaluations (`evaluate_users` on the same users): each mean with the half-width of its 95%
    interval, the change as the paired difference over users with its own; coverage@10 (of the model of `config`'s
    catalog) with its bootstrap interval, the change on the same resamples (`coverage_interval`). `goal` comes
    first."""
    (before_values, before_lists), (after_values, after_lists) = before, after
    table = {
        f"full/{name}": comparison_row(
            mean_with_interval(before_values[name]),
            mean_with_interval(after_values[name]),
            paired_difference(after_values[name], before_values[name]),
        )
        for name in before_values
    }
    catalog = (config.vocab_size, config.num_special_tokens)
    table["full/coverage@10"] = comparison_row(
        coverage_interval(before_lists, *catalog),
        coverage_interval(after_lists, *catalog),
        coverage_interval(after_lists, *catalog, baseline=before_lists),
    )
    return {name: table[name] for name in sorted(table, key=lambda name: name != goal)}


def format_side_by_side(table: dict[str, dict[str, float]]) -> str:
    """The before/after table as aligned text lines, each value `mean ± half-width` of its 95% interval."""

    def cell(row: dict[str, float], key: str, sign: str = "") -> str:
        half_width = row.get(f"{key}_ci95", math.nan)
        return f"{row[key]:{sign}.4f}" + ("" if math.isnan(half_width) else f" ± {half_width:.4f}")

    lines = [f"{'metric':<32}{'sft':>18}{'dpo':>18}{'change (paired)':>20}"]
    lines += [
        f"{name:<32}{cell(row, 'sft'):>18}{cell(row, 'dpo'):>18}{cell(row, 'change', '+'):>20}"
        for name, row in table.items()
    ]
    return "\n".join(lines)


def main(script_args: DPOScriptArguments, training_args: RecommenderDPOConfig) -> dict[str, Any]:
    """Align the SFT model, rank `eval_split` before and after, save everything to `training_args.output_dir`;
    returns the metrics written to `metrics.json`."""

    check_output_dir(training_args.output_dir, training_args.overwrite_output_dir, resume_from=None, resumable=False)
    sft_dir = Path(script_args.sft_dir)
    if not (sft_dir / "config.json").exists():
        raise FileNotFoundError(f"No SFT model in {script_args.sft_dir}: run `bash scripts/sft.sh` first.")
    sft_info = RunInfo.load(sft_dir)
    data_dir = script_args.data_dir or sft_info.data_dir
    if data_dir is None:
        raise ValueError(f"{sft_dir} records no data_dir in its run_info.json: pass --data_dir FOLDER.")
    max_length = sft_info.max_length
    if max_length is not None and (training_args.max_length is None or training_args.max_length > max_length):
        logger.info("max_length %s -> %s, the SFT run's history length.", training_args.max_length, max_length)
        training_args.max_length = max_length

    _, model, tokenizer = load_checkpoint(sft_dir, trust_remote_code=training_args.trust_remote_code)
    ref_model = copy.deepcopy(model).eval().requires_grad_(False)
    splits, _, data_tokenizer = load_processed_data(data_dir)
    check_item_vocabulary(model.config, data_tokenizer, sft_dir, Path(data_dir) / "tokenizer")

    preference_dir = Path(
        script_args.preference_dir
        or f"outputs/preferences/{sft_dir.name}-{script_args.source}-k{script_args.num_rejected}"
        + "-all" * script_args.all_positions
    )
    if preference_dir.exists():
        preferences = load_from_disk(str(preference_dir))
    else:
        preferences = build_preferences(script_args, data_dir, preference_dir)
    eval_split = splits[script_args.eval_split]
    extras = beyond_accuracy_inputs(data_dir, script_args.eval_split, splits["train"], model.config.vocab_size)

    def rank(ranked_model: nn.Module) -> tuple[dict[str, torch.Tensor], torch.LongTensor]:
        values, _, lists = evaluate_users(
            ranked_model,
            eval_split,
            protocol="full",
            k_values=(10,),
            batch_size=script_args.eval_batch_size,
            max_length=max_length,
            **extras,
        )
        return values, lists

    before = rank(model)
    trainer = RecommenderDPOTrainer(
        model, ref_model=ref_model, args=training_args, train_dataset=preferences, processing_class=tokenizer
    )
    train_result = trainer.train()
    trainer.save_model(training_args.output_dir)
    trainer.save_state()
    output_dir = Path(training_args.output_dir)
    save_item_tokenizer(tokenizer, output_dir)
    after = rank(trainer.model)

    dpo_logs = [entry for entry in trainer.state.log_history if "rewards/margins" in entry]
    metrics = {
        script_args.eval_split: side_by_side(before, after, GOAL_METRICS[script_args.source], model.config),
        "train": train_result.metrics,
        "dpo_last_log": dpo_logs[-1] if dpo_logs else {},
        "num_pairs": len(preferences),
    }
    RunInfo(
        model_type=model.config.model_type,
        max_length=max_length,
        dataset=sft_info.dataset,
        split=sft_info.split,
        data_dir=data_dir,
        eval_protocol="full",
        exclude_history=True,
        sft_dir=str(sft_dir),
        preference_dir=str(preference_dir),
        preference_source=script_args.source,
        num_rejected=script_args.num_rejected,
        dpo_loss_type=training_args.loss_type,
        dpo_beta=training_args.beta,
    ).save(output_dir)
    atomic_write_json(output_dir / "metrics.json", metrics)
    print(format_side_by_side(metrics[script_args.eval_split]))
    print(f"saved to {output_dir}")
    return metrics


def run_from_command_line(argv: list[str] | None = None) -> None:
    """`python -m hf_sasrec.dpo`: a configuration error (exit 2) or an `output_dir` that cannot be used as asked
    (exit 1) is one line on stderr, without a traceback."""
    try:
        script_args, training_args = make_parser().parse_args_and_config(argv)
    except ArgumentError as error:
        print(f"hf_sasrec.dpo: {error}", file=sys.stderr)
        sys.exit(2)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    try:
        main(script_args, training_args)
    except OutputDirError as error:
        sys.exit(f"hf_sasrec.dpo: {error}")


if __name__ == "__main__":
    run_from_command_line()
