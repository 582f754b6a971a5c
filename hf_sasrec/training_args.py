"""Arguments of `python -m hf_sasrec.sft --config FILE.yaml [--key value ...]`, parsed by
[`RecommenderArgumentParser`].

A key is a field of [`ModelArguments`], of [`DataArguments`], of [`SFTTrainingArguments`] (every
`transformers.TrainingArguments` field and the evaluation settings), or a field of the chosen variant's config
(`hidden_size`, `loss_type`, ...: [`config_arguments`]). Any other key is an error. Config fields are layered: the
variant's defaults, then `model_config` (a preset JSON file, e.g. `model_configs/sasrec/paper.json`), then the YAML
file, then the command line.
"""

import dataclasses
import functools
import inspect
import json
import logging
import types
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Union, get_args, get_origin

from huggingface_hub.errors import StrictDataclassFieldValidationError
from transformers import IntervalStrategy, TrainingArguments
from transformers.trainer_utils import SaveStrategy

from .argument_parser import COMMAND_LINE, ArgumentError, RecommenderArgumentParser, closest_key, type_name
from .configuration_sasrec import SASRecConfig
from .data_rules import DATA_RULES_SOURCE, RULES, rule_values
from .evaluation import PROTOCOLS
from .length_bucket_sampler import BATCHES_PER_BUCKET
from .registry import VARIANTS

logger = logging.getLogger(__name__)

DEFAULT_MODEL_TYPE = "sasrec_rope"


@dataclass
class ModelArguments:
    """Which model to train and how its weights start."""

    model_type: str | None = field(
        default=None,
        metadata={"help": f"One of {list(VARIANTS)}; default: that of model_config, else {DEFAULT_MODEL_TYPE}."},
    )
    model_config: str | None = field(
        default=None,
        metadata={"help": "A preset: a JSON file of config fields (model_configs/...), read before the YAML file."},
    )
    init_from: str | None = field(
        default=None, metadata={"help": "A saved model whose weights start training (stage 2 of two-stage)."}
    )
    item_embeddings: str | None = field(
        default=None,
        metadata={"help": ".npy of item vectors, [vocab_size or num_items, width], token-id order (PCA to hidden)."},
    )
    freeze_item_embeddings: bool = field(default=False, metadata={"help": "Do not train the item embeddings."})
    attn_implementation: str | None = field(default=None, metadata={"help": "sdpa, eager or flash_attention_2."})
    features: str | None = field(
        default=None,
        metadata={
            "help": "Item features the item encoder reads from DATA_DIR/features: comma-separated names (columns of "
            "the item table, modality tables) or 'all'; default: none (items known by id)."
        },
    )
    semantic_ids: str | None = field(
        default=None,
        metadata={"help": "A python -m hf_sasrec.semantic_ids output folder whose codes become an item feature."},
    )
    user_features: str | None = field(
        default=None,
        metadata={
            "help": "User features the user encoder reads from DATA_DIR/features: comma-separated names (columns "
            "of the user table) or 'all'; default: none."
        },
    )


@dataclass
class DataArguments:
    """Where the processed data is and how its sequences are cut."""

    data_dir: str = field(default="data/ml-100k", metadata={"help": "Output folder of `python -m data_preprocess`."})
    max_length: int = field(default=50, metadata={"help": "History items the model reads (the last ones)."})
    sliding_window: bool = field(
        default=False, metadata={"help": "Train on every max_length window of long sequences, not only the last."}
    )
    streaming: bool = field(
        default=False,
        metadata={
            "help": "Stream the train split from its Arrow shards (hf_sasrec.streaming): rows shuffled in a bounded "
            "buffer and length-bucketed within windows of stream_buffer_batches batches (group_by_length), never the "
            "whole split in memory."
        },
    )
    stream_buffer_batches: int = field(
        default=BATCHES_PER_BUCKET, metadata={"help": "streaming: batches a shuffle and bucketing window holds."}
    )
    data_rules: bool = field(
        default=False,
        metadata={
            "help": "Derive these settings from the data's stats.json where the YAML file and the command line do "
            "not give them: " + "; ".join(f"{rule.key}: {rule.rule}" for rule in RULES) + "."
        },
    )
    # Set by `parse_sft_args`: the settings the data rules gave this run, `key -> (value, reason)`.
    applied_data_rules: dict[str, tuple[Any, str]] = field(init=False, default_factory=dict)

    def __post_init__(self):
        if self.max_length < 1:
            raise ValueError(f"max_length must be at least 1, got {self.max_length}.")


@dataclass
class SFTTrainingArguments(TrainingArguments):
    """`TrainingArguments` with the defaults of next-item training, and how [`NextItemTrainer`] evaluates.

    Args:
        eval_protocol: protocol of the evaluations during training (`"full"` or `"sampled"`); they log
            `eval_{eval_protocol}/ndcg@10`, ..., which `metric_for_best_model` must name.
        test_protocols: protocols of the final evaluation of the valid and test splits.
        exclude_history: `full` protocol: drop the user's history items from the ranking.
        num_sampled_negatives: `sampled` protocol: negatives ranked with the target, per user.
        eval_max_users: the evaluations during training rank a fixed random sample of this many users (the final
            evaluation ranks all, unless `test_max_users`).
        test_max_users: the final evaluation of the valid and test splits ranks a fixed random sample of this many
            users of each (stated in the metrics: `num_users`, `users_sampled_from`); for catalogs and user bases
            where ranking every user against every item would take hours.
        early_stopping_patience: stop after this many evaluations without a better `metric_for_best_model`.
    """

    output_dir: str = field(default="outputs/sft/default", metadata={"help": "The run folder."})
    overwrite_output_dir: bool = field(
        default=False,
        metadata={"help": "Replace the run in output_dir (a non-empty output_dir is refused otherwise)."},
    )
    remove_unused_columns: bool = field(
        default=True, metadata={"help": "Drop the data columns that NextItemCollator does not read (its `columns`)."}
    )
    train_sampling_strategy: str = field(
        default="group_by_length",
        metadata={
            "help": "Training batches: 'group_by_length' (length-bucketed, LengthBucketSampler; the default: as "
            "accurate as random batches and up to 4x faster on short histories), 'random', 'sequential'.",
            "choices": ["random", "sequential", "group_by_length"],
        },
    )
    eval_strategy: IntervalStrategy | str = field(
        default="epoch", metadata={"help": "When to evaluate on the valid split."}
    )
    save_strategy: SaveStrategy | str = field(default="epoch", metadata={"help": "When to save checkpoints."})
    save_total_limit: int | None = field(default=2, metadata={"help": "Checkpoints kept (best and last)."})
    metric_for_best_model: str | None = field(default="full/ndcg@10", metadata={"help": "Selects the best model."})
    load_best_model_at_end: bool = field(default=True, metadata={"help": "Finish with the best checkpoint."})
    logging_steps: float = field(default=20, metadata={"help": "Log the training loss every this many steps."})
    eval_protocol: str = field(default="full", metadata={"help": "Validation protocol: full or sampled."})
    test_protocols: list[str] = field(
        default_factory=lambda: ["full", "sampled"], metadata={"help": "Protocols of the final test evaluation."}
    )
    exclude_history: bool = field(default=True, metadata={"help": "full protocol: drop history items from rankings."})
    num_sampled_negatives: int = field(default=100, metadata={"help": "sampled protocol: negatives per user."})
    eval_max_users: int | None = field(
        default=None,
        metadata={"help": "Validate during training on a fixed random sample of this many users (default: all)."},
    )
    test_max_users: int | None = field(
        default=None,
        metadata={"help": "Final evaluation on a fixed random sample of this many users a split (default: all)."},
    )
    early_stopping_patience: int | None = field(
        default=None, metadata={"help": "Stop after this many evaluations without a better metric_for_best_model."}
    )

    def __post_init__(self):
        unknown = [name for name in [self.eval_protocol, *self.test_protocols] if name not in PROTOCOLS]
        if unknown:
            raise ValueError(f"Unknown protocol(s) {unknown}; expected {PROTOCOLS}.")
        for name in ("eval_max_users", "test_max_users"):
            if getattr(self, name) is not None and getattr(self, name) < 1:
                raise ValueError(f"{name} must be a positive number of users, got {getattr(self, name)}.")
        metric = self.metric_for_best_model
        if metric and not metric.removeprefix("eval_").startswith(f"{self.eval_protocol}/"):
            raise ValueError(
                f"metric_for_best_model {metric!r} is not logged: evaluation logs {self.eval_protocol}/hr@10, "
                f"{self.eval_protocol}/ndcg@10, ... (eval_protocol={self.eval_protocol})."
            )
        super().__post_init__()


def config_class(model_type: str) -> type[SASRecConfig]:
    """The config class of `model_type`; `ArgumentError` listing the valid types for any other name."""
    if model_type not in VARIANTS:
        raise ArgumentError(f"Unknown model_type {model_type!r}; expected one of {list(VARIANTS)}.")
    return VARIANTS[model_type][0]


def is_union(annotation: Any) -> bool:
    """`X | Y` or `Union[X, Y]`."""
    return get_origin(annotation) in (Union, types.UnionType)


def argument_type(annotation: Any) -> Any:
    """The type a command-line argument of a config field has: `float | int` fields take floats (the parser takes one
    type), and every field is optional (`None`: not set)."""
    kinds = [kind for kind in get_args(annotation) if kind is not type(None)] if is_union(annotation) else [annotation]
    return (float if float in kinds else kinds[0]) | None


# Config fields a run derives from the data rather than taking as keys: `item_features` from --features and
# --semantic_ids, `user_features` from --user_features (the names of the features to read).
FIELDS_FROM_DATA = ("item_features", "user_features")


@functools.cache
def config_arguments(model_type: str) -> type:
    """A dataclass of the config fields of `model_type` that a run may set: those that the classes of this package
    declare (`SASRecConfig`'s and the variant's, not `PreTrainedConfig`'s), in that order.

    Every field defaults to `None`, "not set", so that only the values given (preset, YAML file, command line) reach
    the config and the others keep the variant's defaults, shown in the help (unset, `vocab_size` and
    `max_position_embeddings` come from the data: see `hf_sasrec.sft.build_config`). The config class itself is not
    given to the parser: `HfArgumentParser` rewrites the types of the fields it parses, and takes one type per field.
    """
    target = config_class(model_type)
    annotations = {}
    for owner in reversed(target.__mro__):
        if issubclass(owner, SASRecConfig):
            annotations.update(inspect.get_annotations(owner))
    defaults = {item.name: item.default for item in dataclasses.fields(target)}
    fields = [
        (
            name,
            argument_type(annotation),
            field(default=None, metadata={"help": f"{target.__name__}'s default: {defaults[name]} (None: not set)."}),
        )
        for name, annotation in annotations.items()
        if name not in FIELDS_FROM_DATA
    ]
    arguments = dataclasses.make_dataclass(f"{target.__name__}Fields", fields)
    arguments._argument_group_name = f"the {model_type} config ({target.__name__})"
    return arguments


def read_model_config(path: str) -> dict[str, Any]:
    """The fields of the preset JSON file `path`."""
    if not Path(path).is_file():
        raise ArgumentError(f"model_config {path!r}: no such file; presets are JSON files, e.g. under model_configs/.")
    try:
        values = json.loads(Path(path).read_text())
    except json.JSONDecodeError as error:
        raise ArgumentError(f"model_config {path}: not valid JSON ({error}).") from None
    if not isinstance(values, dict):
        raise ArgumentError(f"model_config {path}: expected a JSON object of config fields.")
    return values


def preset_fields(preset: dict[str, Any], model_type: str, path: str) -> dict[str, Any]:
    """The fields of the preset `path` that `model_type` has. A `model_type` other than the preset's re-targets it,
    dropping (and logging) the fields the new type lacks; any other unknown field is an error."""
    fields = {name: value for name, value in preset.items() if name != "model_type"}
    valid = {item.name: type_name(item.type) for item in dataclasses.fields(config_arguments(model_type))}
    unknown = sorted(set(fields) - set(valid))
    preset_type = preset.get("model_type", model_type)
    if preset_type != model_type:
        logger.warning(
            "model_type %s overrides %s of model_config %s; its fields that %s lacks are ignored: %s.",
            model_type,
            preset_type,
            path,
            model_type,
            unknown,
        )
    elif unknown:
        raise ArgumentError(f"{path}: unknown {model_type} config field(s) {unknown}{closest_key(unknown[0], valid)}")
    return {name: value for name, value in fields.items() if name in valid}


def check_config_fields(
    model_type: str, fields: dict[str, Any], sources: dict[str, str], with_item_features: bool = False
) -> None:
    """Build the config once so that a value of the wrong type or out of range fails now, naming its source.
    `with_item_features`: the data will give the model item features (their specs stand in as one numeric feature
    until the data is read)."""
    stand_in = {"item_features": [{"name": "from_data", "kind": "numeric"}]} if with_item_features else {}
    try:
        config_class(model_type)(**fields, **stand_in)
    except StrictDataclassFieldValidationError as error:
        key = next((name for name in fields if f"'{name}'" in str(error)), None)
        raise ArgumentError(
            f"{sources.get(key, COMMAND_LINE)}: {key}: {str(error).splitlines()[-1].strip()}"
        ) from None
    except ValueError as error:
        raise ArgumentError(str(error)) from None


def parse_sft_args(
    args: list[str] | None = None, data_stats: dict[str, Any] | None = None
) -> tuple[ModelArguments, DataArguments, SFTTrainingArguments, dict[str, Any]]:
    """Parse `[--config FILE.yaml] [--key value ...]` into the three argument dataclasses and the config fields set.

    A first pass reads `model_type` and `model_config`: the variant decides which config fields are keys. With
    `data_stats` (the data's `stats.json`) and `data_rules` set, the values of [`hf_sasrec.data_rules`] are layered
    over the preset and under the YAML file; those that neither the file nor the command line override are logged and
    listed in `DataArguments.applied_data_rules`. Raises
    [`ArgumentError`] (a `ValueError`) naming the source (YAML file, command line or preset) and the key for an
    unknown key (with the closest valid one), a value of the wrong type, an unknown model type or inconsistent
    settings.
    """
    first_pass = RecommenderArgumentParser((ModelArguments, DataArguments), add_help=False)
    model_args, data_args, _ = first_pass.parse_args_and_config(args, return_remaining_strings=True)
    preset = read_model_config(model_args.model_config) if model_args.model_config else {}
    model_type = model_args.model_type or preset.get("model_type") or DEFAULT_MODEL_TYPE
    try:
        fields_class = config_arguments(model_type)
    except ArgumentError as error:
        raise ArgumentError(f"{first_pass.sources.get('model_type', model_args.model_config)}: {error}") from None
    parser = RecommenderArgumentParser((ModelArguments, DataArguments, SFTTrainingArguments, fields_class))
    parser.set_defaults_with_config(model_type=model_type)
    if preset:
        parser.set_defaults_from(preset_fields(preset, model_type, model_args.model_config), model_args.model_config)
    rules = {}
    if data_stats is not None and data_args.data_rules:
        rules = rule_values(data_stats, set(parser.keys))
        parser.set_defaults_from({key: value for key, (value, _) in rules.items()}, DATA_RULES_SOURCE)
    model_args, data_args, training_args, config_args = parser.parse_args_and_config(args)
    if data_args.data_rules:
        data_args.applied_data_rules = {
            key: rule for key, rule in rules.items() if parser.sources.get(key) == DATA_RULES_SOURCE
        }
        for key, (value, reason) in data_args.applied_data_rules.items():
            logger.info("Data rule: %s = %s (%s).", key, value, reason)
    config_fields = {name: value for name, value in dataclasses.asdict(config_args).items() if value is not None}
    with_item_features = bool(model_args.features or model_args.semantic_ids)
    check_config_fields(model_type, config_fields, parser.sources, with_item_features)
    return model_args, data_args, training_args, config_fields
