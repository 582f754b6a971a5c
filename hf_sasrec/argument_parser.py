"""The command-line parser of the training commands: `--config FILE.yaml` then `--key value` (or `--key=value`)
overrides, as TRL's scripts, with errors that say where a bad value came from.

    parser = RecommenderArgumentParser((ModelArguments, SFTTrainingArguments))
    model_args, training_args = parser.parse_args_and_config(["--config", "run.yaml", "--num_train_epochs=3"])

A key is a field of one of the parser's dataclasses; the YAML file sets defaults and the command line overrides them.
Any problem raises [`ArgumentError`] (a `ValueError`) naming the source (the YAML file, the command line or a preset),
the key and what was expected, with the closest valid key for a mistyped one, instead of printing the usage and
exiting.
"""

import argparse
import dataclasses
import difflib
import re
import sys
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import yaml
from trl import TrlParser

COMMAND_LINE = "the command line"
CONFIG_FLAG = "--config"


class ArgumentError(ValueError):
    """A training configuration that cannot be parsed: the message names where the key came from (the YAML file or
    the command line), the key, and what was expected."""


def split_config_argument(args: list[str]) -> tuple[str | None, list[str]]:
    """`--config PATH` (or `--config=PATH`) out of `args`: the path (or `None`) and the other arguments."""
    for index, argument in enumerate(args):
        if argument == CONFIG_FLAG:
            if index + 1 == len(args):
                raise ArgumentError(f"{COMMAND_LINE}: {CONFIG_FLAG} needs a YAML file.")
            return args[index + 1], args[:index] + args[index + 2 :]
        if argument.startswith(f"{CONFIG_FLAG}="):
            return argument.partition("=")[2], args[:index] + args[index + 1 :]
    return None, args


def config_value(node: yaml.Node, loaded: Any) -> str | list[str] | dict | None:
    """The value of a top-level YAML key as the command line would give it: the text written for a scalar (`None`
    for null), the texts of a list of scalars, `loaded` (the `yaml.safe_load` value) for a mapping."""
    if isinstance(node, yaml.ScalarNode):
        return None if node.tag == "tag:yaml.org,2002:null" else node.value
    if isinstance(node, yaml.SequenceNode) and all(isinstance(item, yaml.ScalarNode) for item in node.value):
        return [item.value for item in node.value]
    return loaded


def read_config_file(path: str) -> dict[str, str | list[str] | dict | None]:
    """The top-level mapping of the YAML file `path`, each value as [`config_value`] gives it.

    A YAML value means what the same text means after `--key` on the command line. PyYAML reads YAML 1.1, whose
    implicit types disagree with the field types (`eval_strategy: no` would be `False`, `learning_rate: 1e-3` the
    string "1e-3", `hub_model_id: 017` the octal 15), and `TrlParser.parse_args_and_config` sets what
    `yaml.safe_load` gives as argparse defaults, which argparse converts only when they are strings. So the scalars
    are taken as the text written (from the composed YAML nodes) and converted by the field's type, as command-line
    values are. Only the values of a nested mapping (a dict field, e.g. `lr_scheduler_kwargs`) keep the types of
    `yaml.safe_load`.
    """
    if not Path(path).is_file():
        raise ArgumentError(f"{COMMAND_LINE}: {CONFIG_FLAG} {path}: no such file.")
    text = Path(path).read_text()
    try:
        document, loaded = yaml.compose(text), yaml.safe_load(text)
    except yaml.YAMLError as error:
        raise ArgumentError(f"{path} is not valid YAML: {error}") from None
    if document is None:
        return {}
    if not isinstance(document, yaml.MappingNode):
        raise ArgumentError(f"{path}: the top level must be a mapping of key: value.")
    return {key.value: config_value(value, loaded[key.value]) for key, value in document.value}


def closest_key(key: str, valid: dict[str, str]) -> str:
    """`"; did you mean 'x' (type)?"` for the valid key nearest to a mistyped one, or `"."`."""
    matches = difflib.get_close_matches(key, sorted(valid), n=1, cutoff=0.6)
    return f"; did you mean {matches[0]!r} ({valid[matches[0]]})?" if matches else "."


def argparse_problem(message: str) -> tuple[str | None, str]:
    """The key an argparse message is about and the problem, from `argument --num_train_epochs/--num-train-epochs:
    invalid float value: 'thirty'`."""
    match = re.match(r"argument --([\w.]+)\S*: (.*)", message)
    return (match.group(1), match.group(2)) if match else (None, message)


def type_name(annotation: Any) -> str:
    """`float`, `IntervalStrategy`, `list[str]`, ... for messages."""
    return annotation.__name__ if isinstance(annotation, type) else str(annotation)


def convert(action: argparse.Action, text: str) -> Any:
    """`text` converted by `action` as argparse converts a command-line value (type, then choices); argparse's
    message on failure."""
    try:
        value = action.type(text) if action.type else text
    except argparse.ArgumentTypeError as error:
        raise ArgumentError(str(error)) from None
    except (TypeError, ValueError):
        raise ArgumentError(f"invalid {type_name(action.type)} value: {text!r}") from None
    if action.choices is not None and value not in action.choices:
        choices = ", ".join(map(repr, action.choices))
        raise ArgumentError(f"invalid choice: {text!r} (choose from {choices})")
    return value


class RecommenderArgumentParser(TrlParser):
    """`TrlParser` whose errors are [`ArgumentError`]s that name the source, the key and what was expected, and whose
    YAML values are read as command-line text (see [`read_config_file`]).

    Defaults are layered: the dataclass defaults, then [`set_defaults_from`] (a preset, e.g. a model config file),
    then the `--config` YAML file, then the command line. Option prefixes are not expanded (`--learning` is not
    `--learning_rate`), so that a mistyped key is always reported.
    """

    def __init__(self, dataclass_types: Any = None, **kwargs):
        super().__init__(dataclass_types, **{"allow_abbrev": False, **kwargs})
        self.sources: dict[str, str] = {}

    @property
    def keys(self) -> dict[str, str]:
        """Every key of the parser's dataclasses, and the name of its type."""
        return {
            field.name: type_name(field.type)
            for dataclass_type in self.dataclass_types
            for field in dataclasses.fields(dataclass_type)
            if field.init
        }

    def error(self, message: str):
        """argparse's documented override: raise instead of printing the usage and exiting."""
        key, problem = argparse_problem(message)
        if key is None:
            raise ArgumentError(f"{COMMAND_LINE}: {message}")
        raise ArgumentError(f"{self.sources.get(key, COMMAND_LINE)}: {key}: {problem}")

    def check_known_keys(self, keys: Iterable[str], source: str) -> None:
        """`ArgumentError` for keys that no dataclass has, naming the source and the closest valid key of the
        first."""
        valid = self.keys
        unknown = sorted(set(keys) - set(valid))
        if unknown:
            groups = [getattr(dtype, "_argument_group_name", dtype.__name__) for dtype in self.dataclass_types]
            raise ArgumentError(
                f"Unknown key(s) {unknown} in {source}{closest_key(unknown[0], valid)} Keys are the fields of "
                f"{', '.join(groups[:-1])} or {groups[-1]}."
            )

    def set_defaults_from(self, values: dict[str, Any], source: str) -> None:
        """Layer `values` (typed values, e.g. of a JSON file) over the defaults; `source` names them in messages."""
        self.sources.update(dict.fromkeys(values, source))
        self.set_defaults_with_config(**values)

    def converted(self, key: str, value: str | list[str] | dict | None, source: str) -> Any:
        """A YAML value ([`config_value`]) converted by the argument of `key`, as on the command line."""
        action = next(action for action in self._actions if action.option_strings[:1] == [f"--{key}"])
        try:
            if action.nargs in ("+", "*"):
                return [convert(action, text) for text in ([value] if isinstance(value, str) else value)]
            if isinstance(value, list):
                raise ArgumentError(f"expected one value, got the list {value}")
            return convert(action, value) if isinstance(value, str) else value
        except ArgumentError as error:
            raise ArgumentError(f"{source}: {key}: {error}") from None

    def command_line_keys(self, args: list[str]) -> list[str]:
        """The keys that the `--key` options of `args` set (unknown options give their name)."""
        destinations = {option: action.dest for action in self._actions for option in action.option_strings}
        options = [argument.partition("=")[0] for argument in args if argument.startswith("--") and argument != "--"]
        return [destinations.get(option, option[2:]) for option in options]

    def parse_args_and_config(
        self, args: Iterable[str] | None = None, return_remaining_strings: bool = False
    ) -> tuple[Any, ...]:
        """The dataclasses of `[--config FILE.yaml] [--key value | --key=value ...]` (default: `sys.argv[1:]`).

        With `return_remaining_strings`, keys that no dataclass has (in the file or on the command line) are no error:
        the command-line arguments left unparsed come last in the tuple (a first pass that reads only some keys).
        """
        config_file, args = split_config_argument(list(sys.argv[1:] if args is None else args))
        command_line = self.command_line_keys(args)
        if config_file:
            values = read_config_file(config_file)
            if return_remaining_strings:
                values = {key: value for key, value in values.items() if key in self.keys}
            self.check_known_keys(values, config_file)
            overridden = set(command_line)
            values = {
                key: self.converted(key, value, config_file) for key, value in values.items() if key not in overridden
            }
            self.set_defaults_from(values, config_file)
        if not return_remaining_strings:
            self.check_known_keys(set(command_line) - {"help"}, COMMAND_LINE)  # `--help` is argparse's own
        self.sources.update(dict.fromkeys(command_line, COMMAND_LINE))
        *outputs, remaining = self.parse_args_into_dataclasses(args, return_remaining_strings=True)
        if return_remaining_strings:
            return (*outputs, remaining)
        if remaining:
            raise ArgumentError(f"{COMMAND_LINE}: unexpected argument(s) {remaining}{self.syntax_hint(remaining[0])}")
        return tuple(outputs)

    def syntax_hint(self, argument: str) -> str:
        """How to write an argument that argparse did not take (the `key=value` or positional YAML file of other
        command lines)."""
        if argument.endswith((".yaml", ".yml")):
            return f"; a config file is given with {CONFIG_FLAG} {argument}."
        key, equals, value = argument.partition("=")
        if equals and key in self.keys:
            return f"; options are written --key value or --key=value: --{key}={value}."
        if equals:
            return (
                f"; options are written --key value or --key=value, and {key!r} is no key{closest_key(key, self.keys)}"
            )
        return "; options are written --key value or --key=value."

    def parse_args_into_dataclasses(self, args=None, return_remaining_strings: bool = False, **kwargs):
        """`HfArgumentParser.parse_args_into_dataclasses` without the implicit `.args` file, whose dataclass checks
        (`__post_init__`'s `ValueError`s: inconsistent settings) raise [`ArgumentError`]."""
        try:
            return super().parse_args_into_dataclasses(
                args, return_remaining_strings, look_for_args_file=False, **kwargs
            )
        except ArgumentError:
            raise
        except ValueError as error:
            raise ArgumentError(str(error)) from error
