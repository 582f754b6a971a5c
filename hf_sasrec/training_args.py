"""Arguments of `python -m hf_sasrec.sft`: one YAML file plus `key=value` overrides, parsed by `HfArgumentParser`.

A key is a field of [`ModelArguments`], of [`DataArguments`], of [`SFTTrainingArguments`] (every
`transformers.TrainingArguments` field), or a field of the chosen variant's config (`hidden_size`, `loss_type`, ...).
Any other key is an error. Config fields are layered: the variant's defaults, then `model_config` (a folder or
`config.json`, e.g. `model_configs/sasrec_rope`), then the YAML file, then the command line.
"""

import dataclasses
import difflib
import json
import logging
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from huggingface_hub.errors import StrictDataclassFieldValidationError
from transformers import HfArgumentParser, IntervalStrategy, TrainingArguments
from transformers.trainer_utils import SaveStrategy

from .evaluation import PROTOCOLS
from .registry import VARIANTS

logger = logging.getLogger(__name__)

DEFAULT_MODEL_TYPE = "sasrec_rope"
COMMAND_LINE = "the command line"


@dataclass
class ModelArguments:
    """Which model to train and how its weights start."""

    model_type: str | None = field(
        default=None,
        metadata={"help": f"One of {list(VARIANTS)}; default: that of model_config, else {DEFAULT_MODEL_TYPE}."},
    )
    model_config: str | None = field(
        default=None, metadata={"help": "A folder holding config.json, or a config.json, giving config fields."}
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


@dataclass
class DataArguments:
    """Where the processed data is and how it is cut and evaluated."""

    data_dir: str = field(default="data/ml-100k", metadata={"help": "Output folder of `python -m data_preprocess`."})
    max_length: int = field(default=50, metadata={"help": "History items the model reads (the last ones)."})
    sliding_window: bool = field(
        default=False, metadata={"help": "Train on every max_length window of long sequences, not only the last."}
    )
    eval_protocol: str = field(default="full", metadata={"help": "Validation protocol: full or sampled."})
    test_protocols: list[str] = field(
        default_factory=lambda: ["full", "sampled"], metadata={"help": "Protocols of the final test evaluation."}
    )
    exclude_history: bool = field(default=True, metadata={"help": "full protocol: drop history items from rankings."})
    num_sampled_negatives: int = field(default=100, metadata={"help": "sampled protocol: negatives per user."})
    early_stopping_patience: int | None = field(
        default=None, metadata={"help": "Stop after this many evaluations without a better metric_for_best_model."}
    )

    def __post_init__(self):
        unknown = [name for name in [self.eval_protocol, *self.test_protocols] if name not in PROTOCOLS]
        if unknown:
            raise ValueError(f"Unknown protocol(s) {unknown}; expected {PROTOCOLS}.")
        if self.max_length < 1:
            raise ValueError(f"max_length must be at least 1, got {self.max_length}.")


@dataclass
class SFTTrainingArguments(TrainingArguments):
    """`TrainingArguments` with the defaults of next-item training."""

    output_dir: str = field(default="outputs/sft/default", metadata={"help": "The run folder."})
    overwrite_output_dir: bool = field(
        default=False,
        metadata={"help": "Replace the run in output_dir (a non-empty output_dir is refused otherwise)."},
    )
    remove_unused_columns: bool = field(default=False, metadata={"help": "Rows are batched by NextItemCollator."})
    eval_strategy: IntervalStrategy | str = field(
        default="epoch", metadata={"help": "When to evaluate on the valid split."}
    )
    save_strategy: SaveStrategy | str = field(default="epoch", metadata={"help": "When to save checkpoints."})
    save_total_limit: int | None = field(default=2, metadata={"help": "Checkpoints kept (best and last)."})
    metric_for_best_model: str | None = field(default="full/ndcg@10", metadata={"help": "Selects the best model."})
    load_best_model_at_end: bool = field(default=True, metadata={"help": "Finish with the best checkpoint."})
    logging_steps: float = field(default=20, metadata={"help": "Log the training loss every this many steps."})


PARSED_DATACLASSES = (ModelArguments, DataArguments, SFTTrainingArguments)


class YamlLoader(yaml.SafeLoader):
    """YAML with the 1.2 scalars: only true/false are booleans (`eval_strategy: no` stays the string "no") and
    `1e-3` is a float."""


YamlLoader.yaml_implicit_resolvers = {
    first: [(tag, regexp) for tag, regexp in resolvers if tag != "tag:yaml.org,2002:bool"]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}
YamlLoader.add_implicit_resolver(
    "tag:yaml.org,2002:bool", re.compile(r"^(?:true|True|TRUE|false|False|FALSE)$"), list("tTfF")
)
YamlLoader.add_implicit_resolver(
    "tag:yaml.org,2002:float", re.compile(r"^[-+]?(?:\d+\.?\d*|\.\d+)[eE][-+]?\d+$"), list("-+0123456789.")
)


def load_yaml(text: str) -> Any:
    """Parse YAML text with [`YamlLoader`]."""
    return yaml.load(text, Loader=YamlLoader)


def read_model_config(path: str) -> dict[str, Any]:
    """The fields of a `config.json` (or of the one in folder `path`)."""
    file = Path(path)
    file = file / "config.json" if file.is_dir() else file
    if not file.is_file():
        raise FileNotFoundError(f"model_config {path!r}: no config.json there.")
    return json.loads(file.read_text())


class ArgumentError(ValueError):
    """A training configuration that cannot be parsed: the message names where the key came from (the YAML file or
    the command line), the key, and what was expected."""


class RaisingArgumentParser(HfArgumentParser):
    """`HfArgumentParser` that raises [`ArgumentError`] instead of printing the usage and exiting (argparse's
    documented `error` override)."""

    def error(self, message: str):
        raise ArgumentError(message)


def config_class(model_type: str) -> type:
    """The config class of `model_type`; `ArgumentError` listing the valid types for any other name."""
    if model_type not in VARIANTS:
        raise ArgumentError(f"Unknown model_type {model_type!r}; expected one of {list(VARIANTS)}.")
    return VARIANTS[model_type][0]


def config_field_names(model_type: str) -> set[str]:
    """Fields of the config of `model_type`."""
    return {item.name for item in dataclasses.fields(config_class(model_type))}


def split_command_line(argv: list[str]) -> tuple[str | None, dict[str, Any]]:
    """`[CONFIG.yaml] key=value ...` into the YAML path and the overrides (values parsed as YAML scalars)."""
    config_file = argv[0] if argv and argv[0].endswith((".yaml", ".yml")) else None
    overrides = {}
    for argument in argv[1:] if config_file else argv:
        key, equals, value = argument.partition("=")
        if not equals or not key:
            raise ArgumentError(f"Expected key=value on the command line, got {argument!r}.")
        overrides[key.lstrip("-")] = load_yaml(value)
    return config_file, overrides


def read_yaml(path: str) -> dict[str, Any]:
    """A YAML file whose top level is a mapping."""
    if not Path(path).is_file():
        raise FileNotFoundError(f"Training config {path!r} does not exist.")
    try:
        values = load_yaml(Path(path).read_text()) or {}
    except yaml.YAMLError as error:
        raise ArgumentError(f"{path} is not valid YAML: {error}") from None
    if not isinstance(values, dict):
        raise ArgumentError(f"{path}: the top level must be a mapping of key: value.")
    return values


def as_cli_arguments(values: dict[str, Any]) -> list[str]:
    """Turn a mapping into `--key value` arguments, so that `HfArgumentParser` converts the types."""
    arguments = []
    for key, value in values.items():
        if value is None:
            continue
        if isinstance(value, list):
            arguments += [f"--{key}", *map(str, value)]
        elif isinstance(value, dict):
            arguments += [f"--{key}", json.dumps(value)]
        else:
            arguments += [f"--{key}", str(value)]
    return arguments


def read_values(argv: list[str]) -> tuple[dict[str, Any], dict[str, str]]:
    """The YAML file's mapping updated with the command-line overrides, and where each key comes from (the YAML
    file's path or "the command line", for messages)."""
    config_file, overrides = split_command_line(argv)
    from_file = read_yaml(config_file) if config_file else {}
    sources = {key: config_file for key in from_file} | dict.fromkeys(overrides, COMMAND_LINE)
    return {**from_file, **overrides}, sources


def check_best_metric(metric: str | None, eval_protocol: str) -> None:
    """`metric_for_best_model` must be one the evaluation logs: `{eval_protocol}/...` (with or without `eval_`)."""
    if metric and not metric.removeprefix("eval_").startswith(f"{eval_protocol}/"):
        raise ArgumentError(
            f"metric_for_best_model {metric!r} is not logged: evaluation logs {eval_protocol}/hr@10, "
            f"{eval_protocol}/ndcg@10, ... (eval_protocol={eval_protocol})."
        )


def field_types(dataclass_types: tuple[type, ...]) -> dict[str, str]:
    """Field name to the name of its type, over dataclasses (argument classes and config classes alike)."""
    return {
        item.name: item.type if isinstance(item.type, str) else getattr(item.type, "__name__", str(item.type))
        for dataclass_type in dataclass_types
        for item in dataclasses.fields(dataclass_type)
    }


def closest_key(key: str, valid: dict[str, str]) -> str:
    """`"; did you mean 'x' (type)?"` for the valid key nearest to a mistyped one, or `"."`."""
    matches = difflib.get_close_matches(key, sorted(valid), n=1, cutoff=0.6)
    return f"; did you mean {matches[0]!r} ({valid[matches[0]]})?" if matches else "."


def check_known_keys(sources: dict[str, str], valid: dict[str, str], model_type: str) -> None:
    """`ArgumentError` for keys that are neither arguments nor config fields, naming the source and the closest valid
    key of the first."""
    unknown = sorted(set(sources) - set(valid))
    if unknown:
        key = unknown[0]
        raise ArgumentError(
            f"Unknown key(s) {unknown} in {sources[key]}{closest_key(key, valid)} Keys are TrainingArguments fields, "
            f"SFT arguments (ModelArguments, DataArguments in hf_sasrec/training_args.py) or {model_type} config "
            "fields."
        )


def model_type_and_config(values: dict[str, Any], sources: dict[str, str]) -> tuple[str, dict[str, Any]]:
    """The model type (`model_type`, else that of `model_config`, else the default) and the fields of `model_config`
    that this type has. A `model_type` that differs from the `model_config`'s re-targets its fields, dropping (and
    logging) those the new type lacks."""
    model_config = read_model_config(values["model_config"]) if values.get("model_config") else {}
    model_type = values.get("model_type") or model_config.get("model_type") or DEFAULT_MODEL_TYPE
    fields = config_field_names(model_type)
    preset_type = model_config.pop("model_type", model_type)
    dropped = sorted(set(model_config) - fields)
    if preset_type != model_type:
        logger.warning(
            "model_type %s (from %s) overrides %s of model_config %s; its fields that %s lacks are ignored: %s.",
            model_type,
            sources["model_type"],
            preset_type,
            values["model_config"],
            model_type,
            dropped,
        )
    return model_type, {key: value for key, value in model_config.items() if key in fields}


def check_config_fields(model_type: str, fields: dict[str, Any], sources: dict[str, str]) -> None:
    """Build the config once so that a value of the wrong type fails now, naming its source."""
    try:
        config_class(model_type)(**fields)
    except StrictDataclassFieldValidationError as error:
        key = next((name for name in fields if f"'{name}'" in str(error)), None)
        source = sources.get(key, "model_config")
        raise ArgumentError(f"{source}: {key}: {str(error).splitlines()[-1].strip()}") from None


def argparse_problem(message: str) -> tuple[str | None, str]:
    """The key an argparse message is about and the problem, from `argument --num_train_epochs/--num-train-epochs:
    invalid float value: 'thirty'`."""
    match = re.match(r"argument --([\w.]+)\S*: (.*)", message)
    return (match.group(1), match.group(2)) if match else (None, message)


def parse_sft_args(
    argv: list[str],
) -> tuple[ModelArguments, DataArguments, SFTTrainingArguments, dict[str, Any]]:
    """Parse `[CONFIG.yaml] key=value ...` into the three argument dataclasses and the model config fields.

    Raises [`ArgumentError`] (a `ValueError`) naming the source (YAML file or command line), the key and what was
    expected for an unknown key (with the closest valid one), a value of the wrong type, or an unknown model type.
    """
    values, sources = read_values(argv)
    model_type, preset = model_type_and_config(values, sources)
    config_fields = config_field_names(model_type)
    argument_types = field_types(PARSED_DATACLASSES)
    argument_fields = set(argument_types)
    check_known_keys(sources, argument_types | field_types((config_class(model_type),)), model_type)
    config_overrides = {**preset, **{key: value for key, value in values.items() if key in config_fields}}
    check_config_fields(model_type, config_overrides, sources)
    arguments = {key: value for key, value in values.items() if key in argument_fields}
    try:
        model_args, data_args, training_args = RaisingArgumentParser(PARSED_DATACLASSES).parse_args_into_dataclasses(
            args=as_cli_arguments({**arguments, "model_type": model_type})
        )
    except ArgumentError as error:
        key, problem = argparse_problem(str(error))
        raise ArgumentError(f"{sources.get(key, COMMAND_LINE)}: {key}: {problem}") from None
    check_best_metric(training_args.metric_for_best_model, data_args.eval_protocol)
    return model_args, data_args, training_args, config_overrides


if __name__ == "__main__":
    # `python -m hf_sasrec.training_args CONFIG.yaml key=value ...` prints the data folder the run reads and its
    # item_embeddings file (or "-"), for scripts/sft.sh; without building TrainingArguments, which would set up
    # distributed training.
    import sys

    values, _ = read_values(sys.argv[1:])
    print(values.get("data_dir", DataArguments.data_dir), values.get("item_embeddings") or "-")
