"""Train and evaluate a next-item model with `transformers.Trainer`.

    python -m hf_sasrec.sft [CONFIG.yaml] [key=value ...]

Every check that can fail (unknown keys, data folder, vocabulary, timestamps, item embeddings) runs before the first
training step. The run folder (`output_dir`) ends with the model (safetensors, config with `auto_map`, code), the
item tokenizer, `metrics.json`, `trainer_state.json`, `run_info.json` and TensorBoard logs.
"""

import json
import logging
import sys
from pathlib import Path
from typing import Any

from datasets import DatasetDict
from transformers import (
    AutoConfig,
    AutoModelForCausalLM,
    EarlyStoppingCallback,
    PreTrainedModel,
    PreTrainedTokenizerBase,
    set_seed,
)
from transformers.trainer_utils import get_last_checkpoint

from .data_collator import NextItemCollator, model_uses_timestamps
from .evaluation import evaluate_next_item, metrics_table
from .item_embedding_init import load_item_embeddings
from .item_tokenizer import save_item_tokenizer
from .processed_data import SPLITS, drop_short_rows, load_processed_data
from .sequence_windows import sliding_windows
from .sft_trainer import NextItemTrainer
from .training_args import DataArguments, ModelArguments, SFTTrainingArguments, parse_sft_args

logger = logging.getLogger("hf_sasrec.sft")


def build_config(model_args: ModelArguments, config_fields: dict[str, Any], vocab_size: int, max_length: int):
    """The model config: the variant's defaults, then `config_fields`; the vocabulary must be the tokenizer's."""
    fields = {"vocab_size": vocab_size, "max_position_embeddings": max(max_length, 1), **config_fields}
    if fields["vocab_size"] != vocab_size:
        raise ValueError(
            f"vocab_size {fields['vocab_size']} differs from the tokenizer's vocabulary ({vocab_size} tokens)."
        )
    if fields["max_position_embeddings"] < max_length:
        raise ValueError(
            f"max_length {max_length} exceeds max_position_embeddings {fields['max_position_embeddings']}."
        )
    return AutoConfig.for_model(model_args.model_type, **fields)


def build_model(model_args: ModelArguments, config) -> PreTrainedModel:
    """A fresh model of `config`, or the weights of `init_from` (whose config must match the vocabulary)."""
    kwargs = {"attn_implementation": model_args.attn_implementation} if model_args.attn_implementation else {}
    if model_args.init_from is None:
        return AutoModelForCausalLM.from_config(config, **kwargs)
    model = AutoModelForCausalLM.from_pretrained(model_args.init_from, **kwargs)
    if model.config.vocab_size != config.vocab_size or model.config.model_type != config.model_type:
        raise ValueError(
            f"init_from {model_args.init_from}: a {model.config.model_type} over {model.config.vocab_size} tokens, "
            f"but this run trains a {config.model_type} over {config.vocab_size}."
        )
    return model


def resolve_resume(training_args: SFTTrainingArguments) -> str | bool | None:
    """`resume_from_checkpoint`: a path, `true` (the last checkpoint, which must exist), or `auto` (the last checkpoint
    of `output_dir` if there is one, else a fresh start)."""
    value = training_args.resume_from_checkpoint
    if value is None or value.lower() in ("false", "none", ""):
        return None
    if value.lower() in ("true", "auto"):
        last = get_last_checkpoint(training_args.output_dir) if Path(training_args.output_dir).is_dir() else None
        if last is None and value.lower() == "true":
            raise FileNotFoundError(f"resume_from_checkpoint=true but {training_args.output_dir} has no checkpoint.")
        return last
    return value


def check_data_fits_model(model: PreTrainedModel, splits: DatasetDict, stats: dict[str, Any]) -> None:
    """Timestamps for models that read them; every item id inside the vocabulary."""
    if model_uses_timestamps(model) and (
        not stats.get("has_timestamps", True) or "timestamps" not in splits["train"].column_names
    ):
        raise ValueError(
            f"{model.config.model_type} needs timestamps, but the dataset {stats.get('dataset', '')!r} has none "
            "(stats.json has_timestamps is false)."
        )
    largest = max(max(max(row) for row in splits[name]["item_ids"] if row) for name in SPLITS)
    if largest >= model.config.vocab_size:
        raise ValueError(
            f"Item id {largest} in the data is outside the model's vocabulary ({model.config.vocab_size})."
        )


def write_run_folder(
    output_dir: str,
    tokenizer: PreTrainedTokenizerBase,
    model_args: ModelArguments,
    data_args: DataArguments,
    metrics: dict[str, float],
    argv: list[str],
) -> None:
    """The tokenizer, `metrics.json` and `run_info.json` beside the saved model."""
    path = Path(output_dir)
    save_item_tokenizer(tokenizer, path)
    (path / "metrics.json").write_text(json.dumps(metrics, indent=2))
    run_info = {
        "data_dir": str(Path(data_args.data_dir).resolve()),
        "model_type": model_args.model_type,
        "max_length": data_args.max_length,
        "eval_protocol": data_args.eval_protocol,
        "exclude_history": data_args.exclude_history,
        "command": argv,
    }
    (path / "run_info.json").write_text(json.dumps(run_info, indent=2))


def main(argv: list[str] | None = None) -> dict[str, float]:
    """Run the training described by `argv` (`[CONFIG.yaml] key=value ...`) and return the final metrics."""
    argv = sys.argv[1:] if argv is None else argv
    model_args, data_args, training_args, config_fields = parse_sft_args(argv)
    logging.basicConfig(format="%(asctime)s %(levelname)s %(name)s: %(message)s", level=logging.INFO)
    splits, stats, tokenizer = load_processed_data(data_args.data_dir)
    config = build_config(model_args, config_fields, len(tokenizer), data_args.max_length)
    set_seed(training_args.seed)
    model = build_model(model_args, config)
    check_data_fits_model(model, splits, stats)
    if model_args.item_embeddings:
        load_item_embeddings(model, model_args.item_embeddings)
    if model_args.freeze_item_embeddings:
        model.get_input_embeddings().weight.requires_grad_(False)
    resume = resolve_resume(training_args)
    train, valid, test = (drop_short_rows(splits[name], name) for name in SPLITS)
    if data_args.sliding_window:
        train = sliding_windows(train, data_args.max_length)
    trainer = NextItemTrainer(
        model=model,
        args=training_args,
        train_dataset=train,
        eval_dataset=valid,
        data_collator=NextItemCollator(data_args.max_length, with_timestamps=model_uses_timestamps(model)),
        callbacks=[EarlyStoppingCallback(data_args.early_stopping_patience)]
        if data_args.early_stopping_patience
        else None,
        eval_protocol=data_args.eval_protocol,
        exclude_history=data_args.exclude_history,
        num_sampled_negatives=data_args.num_sampled_negatives,
        max_length=data_args.max_length,
    )
    train_result = trainer.train(resume_from_checkpoint=resume)
    trainer.save_model()
    metrics = {
        f"train_{name}" if not name.startswith("train") else name: v for name, v in train_result.metrics.items()
    }
    metrics["epochs"] = trainer.state.epoch
    metrics["global_step"] = trainer.state.global_step
    for protocol in data_args.test_protocols:
        for split_name, split in (("valid", valid), ("test", test)):
            scores = evaluate_next_item(
                trainer.accelerator.unwrap_model(trainer.model),
                split,
                protocol=protocol,
                exclude_history=data_args.exclude_history,
                num_sampled_negatives=data_args.num_sampled_negatives,
                batch_size=training_args.per_device_eval_batch_size,
                max_length=data_args.max_length,
                seed=training_args.seed,
            )
            metrics.update({f"{split_name}_{name}": value for name, value in scores.items()})
    if trainer.is_world_process_zero():
        trainer.save_state()
        write_run_folder(training_args.output_dir, tokenizer, model_args, data_args, metrics, argv)
        print(metrics_table(metrics, prefix="test_"))
    return metrics


if __name__ == "__main__":
    main()
