"""Train and evaluate a next-item model with `transformers.Trainer`.

    python -m hf_sasrec.sft [--config CONFIG.yaml] [--key value | --key=value ...]

Keys are those of `hf_sasrec.training_args` (`--help` lists them). The embedded MovieLens-100K is prepared when
`data_dir` is `data/ml-100k` and absent, and the item text embeddings when `item_embeddings` is
`DATA_DIR/item_text.npy` and absent (by the main process, before the others go on). Every check that can fail
(unknown keys, data folder, vocabulary, timestamps, item embeddings) runs before the first training step.

The run folder (`output_dir`) ends with the model (safetensors, config with `auto_map`, code), the item tokenizer,
`metrics.json` (with the best evaluation and whether early stopping ended training), `trainer_state.json`,
`run_info.json` and TensorBoard logs.

A non-empty `output_dir` is refused before the data is loaded, unless `--resume_from_checkpoint` resumes its run or
`--overwrite_output_dir` replaces it (see `hf_sasrec.checkpoints`, which also defines which checkpoints count as
complete).
"""

import logging
import sys
from pathlib import Path
from typing import Any

from datasets import Dataset, DatasetDict
from transformers import (
    AutoConfig,
    AutoModelForCausalLM,
    PreTrainedModel,
    PreTrainedTokenizerBase,
    TrainerCallback,
    set_seed,
)

from data_preprocess.atomic_files import atomic_write_json
from data_preprocess.pipeline import prepare
from data_preprocess.text_embeddings import embed_items, load_encoder, save_embeddings

from .argument_parser import ArgumentError, split_config_argument
from .checkpoint_loading import ITEM_VOCAB_FINGERPRINT
from .checkpoints import CheckpointManifestCallback, OutputDirError, prepare_resume, remove_checkpoints, set_aside
from .data_collator import NextItemCollator, model_uses_timestamps
from .evaluation import evaluate_next_item, metrics_table
from .feature_inputs import attach_user_features, read_item_features, read_user_features
from .item_embedding_init import load_item_embeddings
from .item_tokenizer import save_item_tokenizer, vocabulary_fingerprint
from .processed_data import (
    SPLITS,
    attach_dislikes,
    beyond_accuracy_inputs,
    cold_item_ids,
    drop_short_rows,
    load_processed_data,
)
from .run_info import RunInfo
from .sequence_windows import sliding_windows
from .sft_trainer import LoggingEarlyStoppingCallback, NextItemTrainer, best_evaluation, describe_best
from .streaming import LengthBucketedStream, stream_split, trainable_counts
from .training_args import DataArguments, ModelArguments, SFTTrainingArguments, parse_sft_args

logger = logging.getLogger("hf_sasrec.sft")

EMBEDDED_DATA_DIR = Path("data/ml-100k")
ITEM_TEXT_FILE = "item_text.npy"


def build_config(
    model_args: ModelArguments, config_fields: dict[str, Any], tokenizer: PreTrainedTokenizerBase, max_length: int
):
    """The model config: the variant's defaults, then `config_fields`; the vocabulary must be the tokenizer's, whose
    fingerprint the config records (`item_vocab_fingerprint`) so that loading refuses any other tokenizer."""
    vocab_size = len(tokenizer)
    fields = {
        "vocab_size": vocab_size,
        "max_position_embeddings": max(max_length, 1),
        **config_fields,
        ITEM_VOCAB_FINGERPRINT: vocabulary_fingerprint(tokenizer),
    }
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
    fingerprint = getattr(config, ITEM_VOCAB_FINGERPRINT)
    if getattr(model.config, ITEM_VOCAB_FINGERPRINT, fingerprint) != fingerprint:
        raise ValueError(
            f"init_from {model_args.init_from} was trained on another item vocabulary (other items or another order) "
            "than the data's tokenizer: start from a model trained on data processed with that tokenizer."
        )
    setattr(model.config, ITEM_VOCAB_FINGERPRINT, fingerprint)
    return model


def read_run_item_features(
    model_args: ModelArguments, data_args: DataArguments, tokenizer: PreTrainedTokenizerBase
) -> tuple[list[dict], dict[str, Any]]:
    """The item features of `--features` and `--semantic_ids` (specs and value tables; empty without them). A model
    started from `init_from` keeps its own features."""
    if model_args.init_from and (model_args.features or model_args.semantic_ids or model_args.user_features):
        raise ValueError(
            "features, semantic_ids and user_features build new encoders; a model from init_from keeps its own."
        )
    if not (model_args.features or model_args.semantic_ids):
        return [], {}
    return read_item_features(
        data_args.data_dir, model_args.features, model_args.semantic_ids, vocabulary_fingerprint(tokenizer)
    )


def clear_output_dir(training_args: SFTTrainingArguments, skipped: dict[Path, str]) -> None:
    """Before training (main process): delete the previous run's checkpoints with `overwrite_output_dir`, else move
    the skipped incomplete checkpoints aside."""
    if not training_args.should_save:
        return
    if training_args.overwrite_output_dir:
        remove_checkpoints(training_args.output_dir)
    else:
        set_aside(skipped)


def prepare_missing_inputs(model_args: ModelArguments, data_args: DataArguments) -> None:
    """Write what a run reads and this package can make: the embedded MovieLens-100K when `data_dir` is
    `data/ml-100k` and absent, and the item text embeddings (the default sentence-transformers model) when
    `item_embeddings` is `DATA_DIR/item_text.npy` and absent."""
    data_dir = Path(data_args.data_dir)
    if data_dir == EMBEDDED_DATA_DIR and not data_dir.exists():
        logger.info("Preparing %s (the embedded MovieLens-100K).", data_dir)
        prepare(output=data_dir)
    text_file = data_dir / ITEM_TEXT_FILE
    if model_args.item_embeddings and Path(model_args.item_embeddings) == text_file and not text_file.exists():
        logger.info("Encoding the item titles of %s into %s.", data_dir, text_file)
        save_embeddings(embed_items(data_dir, load_encoder()), text_file)


def training_callbacks(training_args: SFTTrainingArguments) -> list[TrainerCallback]:
    """The checkpoint manifest, and early stopping (logged) when `early_stopping_patience` is set."""
    callbacks = [CheckpointManifestCallback()]
    if training_args.early_stopping_patience:
        callbacks.append(LoggingEarlyStoppingCallback(training_args.early_stopping_patience))
    return callbacks


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


def streamed_train_split(
    data_args: DataArguments,
    training_args: SFTTrainingArguments,
    split: Dataset,
    user_specs: list,
    unlikelihood_weight: float,
) -> LengthBucketedStream:
    """The train split as a [`LengthBucketedStream`] (`--streaming true`): its Arrow shards, streamed; `split`, the
    same split memory-mapped, only gives its row and target counts (from the Arrow offsets, `trainable_counts`).
    `ValueError` for what a stream cannot carry: user features, dislikes (`unlikelihood_weight`) and sliding windows
    join or expand rows of the whole split."""
    unsupported = [
        name
        for name, used in (
            ("user_features", bool(user_specs)),
            ("unlikelihood_weight", unlikelihood_weight > 0),
            ("sliding_window", data_args.sliding_window),
        )
        if used
    ]
    if unsupported:
        raise ValueError(f"streaming does not support {unsupported}: train without --streaming.")
    batch_size = training_args.train_batch_size * training_args.gradient_accumulation_steps
    counts = trainable_counts(split, data_args.max_length)
    logger.info("Streaming %d training rows from %s/train.", counts[0], data_args.data_dir)
    return LengthBucketedStream(
        stream_split(data_args.data_dir, "train"),
        *counts,
        batch_size * training_args.world_size,
        data_args.max_length,
        buffer_batches=data_args.stream_buffer_batches,
        seed=training_args.seed,
        bucketed=training_args.train_sampling_strategy == "group_by_length",
    )


def write_run_folder(
    output_dir: str,
    tokenizer: PreTrainedTokenizerBase,
    model_args: ModelArguments,
    data_args: DataArguments,
    training_args: SFTTrainingArguments,
    metrics: dict[str, Any],
    argv: list[str],
    stats: dict[str, Any] | None = None,
) -> None:
    """The tokenizer, `run_info.json` and, last, `metrics.json` beside the saved model (each written atomically);
    `stats` is the data folder's `stats.json`, whose data set name and split `run_info.json` records."""
    path = Path(output_dir)
    stats = stats or {}
    save_item_tokenizer(tokenizer, path)
    RunInfo(
        model_type=model_args.model_type,
        max_length=data_args.max_length,
        dataset=stats.get("dataset"),
        split=stats.get("args", {}).get("split"),
        data_dir=str(Path(data_args.data_dir).resolve()),
        eval_protocol=training_args.eval_protocol,
        exclude_history=training_args.exclude_history,
        num_sampled_negatives=training_args.num_sampled_negatives,
        data_rules={key: value for key, (value, _) in data_args.applied_data_rules.items()} or None,
        command=argv,
    ).save(path)
    atomic_write_json(path / "metrics.json", metrics)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    """Run the training described by `argv` (`[--config CONFIG.yaml] [--key value ...]`) and return the final
    metrics."""
    argv = sys.argv[1:] if argv is None else argv
    model_args, data_args, training_args, config_fields = parse_sft_args(argv)
    logging.basicConfig(format="%(asctime)s %(levelname)s %(name)s: %(message)s", level=logging.INFO)
    resume, skipped = prepare_resume(
        training_args.output_dir, training_args.resume_from_checkpoint, training_args.overwrite_output_dir
    )
    if resume:
        logger.info("Resuming from %s.", resume)
    with training_args.main_process_first(desc="preparing missing inputs"):
        prepare_missing_inputs(model_args, data_args)
    splits, stats, tokenizer = load_processed_data(data_args.data_dir, split_config_argument(argv)[0])
    if data_args.data_rules:
        model_args, data_args, training_args, config_fields = parse_sft_args(argv, stats)
    feature_specs, feature_tables = read_run_item_features(model_args, data_args, tokenizer)
    if feature_specs:
        config_fields = {**config_fields, "item_features": feature_specs}
    user_specs, values_by_user = [], {}
    if model_args.user_features:
        user_specs, values_by_user = read_user_features(data_args.data_dir, model_args.user_features)
        config_fields = {**config_fields, "user_features": user_specs}
    config = build_config(model_args, config_fields, tokenizer, data_args.max_length)
    set_seed(training_args.seed)
    model = build_model(model_args, config)
    if feature_tables:
        model.model.item_encoder.load_tables(feature_tables)
    check_data_fits_model(model, splits, stats)
    if (model_args.item_embeddings or model_args.freeze_item_embeddings) and model.get_input_embeddings() is None:
        raise ValueError("item_embeddings and freeze_item_embeddings act on item id embeddings; use_item_id is false.")
    if model_args.item_embeddings:
        load_item_embeddings(model, model_args.item_embeddings)
    if model_args.freeze_item_embeddings:
        model.get_input_embeddings().weight.requires_grad_(False)
    cold_items = cold_item_ids(data_args.data_dir)
    if cold_items:
        model.exclude_from_training(cold_items)
        logger.info(
            "Cold-item protocol: the %d items held out of training are no candidates of the training loss either "
            "(trained as if they arrived after training); evaluation ranks every item.",
            len(cold_items),
        )
    train, valid, test = (drop_short_rows(splits[name], name) for name in SPLITS)
    if data_args.streaming:
        train = streamed_train_split(
            data_args, training_args, splits["train"], user_specs, model.config.unlikelihood_weight
        )
    if user_specs:
        attached = attach_user_features(model, dict(zip(SPLITS, (train, valid, test), strict=True)), values_by_user)
        train, valid, test = (attached[name] for name in SPLITS)
    if model.config.unlikelihood_weight > 0:
        train = attach_dislikes(train, data_args.data_dir)
    if data_args.sliding_window:
        train = sliding_windows(train, data_args.max_length)
    trainer = NextItemTrainer(
        model=model,
        args=training_args,
        train_dataset=train,
        eval_dataset=valid,
        data_collator=NextItemCollator(data_args.max_length, with_timestamps=model_uses_timestamps(model)),
        callbacks=training_callbacks(training_args),
    )
    clear_output_dir(training_args, skipped)
    train_result = trainer.train(resume_from_checkpoint=resume)
    trainer.save_model()
    metrics = {
        f"train_{name}" if not name.startswith("train") else name: v for name, v in train_result.metrics.items()
    }
    metrics["epochs"] = trainer.state.epoch
    metrics["global_step"] = trainer.state.global_step
    metrics.update(best_evaluation(trainer.state, training_args))
    logger.info(
        "Training %s at epoch %g (step %d); best evaluation: %s; the model saved is that of step %d.",
        "stopped early" if metrics["stopped_early"] else "ran all its steps",
        metrics["epochs"],
        metrics["global_step"],
        describe_best(metrics),
        metrics["model_step"],
    )
    extras = {  # read once per split, not once per protocol
        name: beyond_accuracy_inputs(data_args.data_dir, name, splits["train"], model.config.vocab_size)
        for name in ("valid", "test")
    }
    for protocol in training_args.test_protocols:
        for split_name, split in (("valid", valid), ("test", test)):
            scores = evaluate_next_item(
                trainer.accelerator.unwrap_model(trainer.model),
                split,
                protocol=protocol,
                exclude_history=training_args.exclude_history,
                num_sampled_negatives=training_args.num_sampled_negatives,
                batch_size=training_args.per_device_eval_batch_size,
                max_length=data_args.max_length,
                seed=training_args.seed,
                max_users=training_args.test_max_users,
                cold_items=cold_items,
                **extras[split_name],
            )
            metrics.update({f"{split_name}_{name}": value for name, value in scores.items()})
    if trainer.is_world_process_zero():
        trainer.save_state()
        write_run_folder(
            training_args.output_dir, tokenizer, model_args, data_args, training_args, metrics, argv, stats
        )
        print(metrics_table(metrics, prefix="test_"))
    return metrics


def run_from_command_line() -> None:
    """`python -m hf_sasrec.sft`: a configuration error (exit 2) or an `output_dir` that cannot be used as asked
    (exit 1) is one line on stderr, without a traceback."""
    try:
        main()
    except ArgumentError as error:
        print(f"hf_sasrec.sft: {error}", file=sys.stderr)
        sys.exit(2)
    except OutputDirError as error:
        sys.exit(f"hf_sasrec.sft: {error}")


if __name__ == "__main__":
    run_from_command_line()
