"""Training configuration: one message naming the source (YAML file, command line or preset), the key, what was
expected and the closest valid key; YAML values read as their command-line text; presets layered between the
variant's defaults and the YAML file, and re-targeted by `model_type`; the command that prepares missing data."""

import json
import logging
import subprocess
import sys
from pathlib import Path

import pytest

from hf_sasrec.argument_parser import ArgumentError
from hf_sasrec.processed_data import load_processed_data
from hf_sasrec.registry import VARIANTS
from hf_sasrec.training_args import config_class, parse_sft_args

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_YAML = str(ROOT / "train_configs" / "sft" / "default.yaml")
PRESETS = sorted((ROOT / "model_configs").glob("*/*.json"))


@pytest.fixture(autouse=True)
def from_the_repository(monkeypatch):
    """Configs name `model_configs/...` relative to the repository root."""
    monkeypatch.chdir(ROOT)


def write_yaml(tmp_path: Path, text: str) -> str:
    config = tmp_path / "run.yaml"
    config.write_text(text)
    return str(config)


def test_command_line_typo_is_blamed_on_the_command_line_with_the_closest_key():
    with pytest.raises(ArgumentError) as error:
        parse_sft_args(["--config", DEFAULT_YAML, "--learnig_rate", "0.1"])
    message = str(error.value)
    assert "['learnig_rate'] in the command line" in message
    assert "did you mean 'learning_rate' (float)?" in message
    assert DEFAULT_YAML not in message


def test_yaml_typo_is_blamed_on_the_yaml_file(tmp_path):
    config = write_yaml(tmp_path, "model_type: sasrec\nhiden_size: 32\n")
    with pytest.raises(ArgumentError, match=rf"\['hiden_size'\] in {config}; did you mean 'hidden_size' \(int\)\?"):
        parse_sft_args(["--config", config])


def test_value_of_the_wrong_type_names_source_key_and_expected_type(tmp_path):
    config = write_yaml(tmp_path, "model_type: sasrec\nnum_train_epochs: thirty\n")
    with pytest.raises(ArgumentError, match=rf"^{config}: num_train_epochs: invalid float value: 'thirty'$"):
        parse_sft_args(["--config", config])
    with pytest.raises(ArgumentError, match=r"^the command line: hidden_size: invalid int value: 'big'$"):
        parse_sft_args(["--config", config, "--num_train_epochs=3", "--hidden_size", "big"])
    with pytest.raises(ArgumentError, match=rf"^{config}: eval_strategy: invalid choice: 'sometimes'"):
        parse_sft_args(["--config", write_yaml(tmp_path, "eval_strategy: sometimes\n")])


def test_key_value_syntax_of_other_command_lines_gets_the_option_syntax():
    with pytest.raises(ArgumentError, match=r"options are written --key value or --key=value: --num_train_epochs=3\."):
        parse_sft_args(["--config", DEFAULT_YAML, "num_train_epochs=3"])
    with pytest.raises(ArgumentError, match=rf"a config file is given with --config {DEFAULT_YAML}\."):
        parse_sft_args([DEFAULT_YAML])


def test_yaml_values_mean_what_their_text_means_on_the_command_line(tmp_path):
    """YAML 1.1 would read `no` as False and `1e-3` as a string; both are what `--key no`, `--key 1e-3` give, a
    one-item list may be written as a scalar, and null leaves an optional field unset."""
    config = write_yaml(
        tmp_path,
        "eval_strategy: no\nsave_strategy: no\nload_best_model_at_end: false\nlearning_rate: 1e-3\n"
        "test_protocols: sampled\nearly_stopping_patience: null\nexclude_history: false\nhub_model_id: 017\n",
    )
    _, _, training_args, _ = parse_sft_args(["--config", config])
    from_command_line = parse_sft_args(["--eval_strategy", "no", "--save_strategy=no", "--learning_rate", "1e-3"])[2]
    assert training_args.eval_strategy == from_command_line.eval_strategy == "no"
    assert training_args.learning_rate == from_command_line.learning_rate == pytest.approx(1e-3)
    assert training_args.test_protocols == ["sampled"]
    assert training_args.early_stopping_patience is None and training_args.exclude_history is False
    assert training_args.hub_model_id == "017"


def test_evaluation_settings_are_training_arguments():
    sampled = ["--eval_protocol=sampled", "--metric_for_best_model=sampled/ndcg@10", "--test_protocols", "sampled"]
    _, data_args, training_args, _ = parse_sft_args(
        [*sampled, "--num_sampled_negatives=50", "--no_exclude_history", "--early_stopping_patience", "3"]
    )
    assert (training_args.eval_protocol, training_args.test_protocols) == ("sampled", ["sampled"])
    assert (training_args.num_sampled_negatives, training_args.exclude_history) == (50, False)
    assert training_args.early_stopping_patience == 3
    assert not hasattr(data_args, "eval_protocol")
    with pytest.raises(ArgumentError, match=r"Unknown protocol\(s\) \['leave-one-out'\]"):
        parse_sft_args(["--test_protocols", "full", "leave-one-out"])


def test_bad_configuration_is_one_line_on_the_command_line():
    """`python -m hf_sasrec.sft` prints the message alone (no usage text, no traceback) and exits 2."""
    result = subprocess.run(
        [sys.executable, "-m", "hf_sasrec.sft", "--config", DEFAULT_YAML, "--num_train_epochs=thirty"],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=120,
    )
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert lines == ["hf_sasrec.sft: the command line: num_train_epochs: invalid float value: 'thirty'"]


def test_config_fields_are_layered_defaults_preset_yaml_command_line(tmp_path):
    preset = "model_configs/sasrec_moe/mixtral.json"
    config = write_yaml(tmp_path, f"model_config: {preset}\nlearning_rate: 1e-3\nnum_experts_per_tok: 3\n")
    model_args, data_args, training_args, fields = parse_sft_args(
        ["--config", config, "--num_experts_per_tok=4", "--max_length", "30", "--per_device_train_batch_size", "7"]
    )
    assert model_args.model_type == "sasrec_moe"
    assert training_args.learning_rate == pytest.approx(1e-3) and training_args.per_device_train_batch_size == 7
    assert data_args.max_length == 30
    # The preset's num_experts, the command line's top-k over the YAML's; hidden_size keeps the variant's default.
    assert fields == {"num_experts": 8, "num_experts_per_tok": 4}
    assert config_class("sasrec_moe")(**fields).hidden_size == 64


def test_model_type_overrides_the_variant_of_a_preset(caplog):
    preset = "model_configs/sasrec_rope/roformer.json"
    with caplog.at_level(logging.WARNING, logger="hf_sasrec.training_args"):
        model_args, _, _, fields = parse_sft_args(["--model_config", preset, "--model_type", "sasrec"])
    assert model_args.model_type == "sasrec" and fields == {}
    assert f"model_type sasrec overrides sasrec_rope of model_config {preset}" in caplog.text
    assert "['rope_theta']" in caplog.text


def test_preset_errors_name_the_preset(tmp_path):
    preset = tmp_path / "preset.json"
    preset.write_text(json.dumps({"model_type": "sasrec", "hiden_size": 32}))
    with pytest.raises(ArgumentError, match=rf"{preset}: unknown sasrec config field\(s\) \['hiden_size'\]; did you"):
        parse_sft_args(["--model_config", str(preset)])
    preset.write_text(json.dumps({"model_type": "sasrec", "hidden_size": 1.5}))
    with pytest.raises(ArgumentError, match=rf"^{preset}: hidden_size: .*expected int"):
        parse_sft_args(["--model_config", str(preset)])
    with pytest.raises(ArgumentError, match=r"model_config 'model_configs/sasrec': no such file"):
        parse_sft_args(["--model_config", "model_configs/sasrec"])


@pytest.mark.parametrize("preset", PRESETS, ids=lambda path: f"{path.parent.name}/{path.name}")
def test_every_preset_builds_its_variant(preset):
    """A preset names the variant of its folder, and its fields reach the config as they are."""
    values = json.loads(preset.read_text())
    assert values["model_type"] == preset.parent.name in VARIANTS
    model_args, _, _, fields = parse_sft_args(["--model_config", str(preset.relative_to(ROOT))])
    assert model_args.model_type == values["model_type"]
    assert fields == {name: value for name, value in values.items() if name != "model_type"}
    config_class(model_args.model_type)(**fields)


def test_unknown_model_type_lists_the_valid_ones():
    expected = r"the command line: Unknown model_type 'sasrecc'; expected one of \['sasrec', 'sasrec_rope'"
    with pytest.raises(ArgumentError, match=expected):
        parse_sft_args(["--config", DEFAULT_YAML, "--model_type", "sasrecc"])


def test_missing_data_hint_gives_the_command_named_by_the_config(tmp_path):
    """Followed literally, the hint prepares the data set the config trains on (with its --input), not ML-100K."""
    config = ROOT / "train_configs" / "sft" / "beauty_full.yaml"
    missing = str(tmp_path / "beauty")
    with pytest.raises(FileNotFoundError) as error:
        load_processed_data(missing, str(config))
    assert (
        "python -m data_preprocess --input ../shared/data/amazon-beauty/Beauty.txt --format user-lines "
        "--name beauty --output data/beauty --max-length 50"
    ) in str(error.value)
    with pytest.raises(FileNotFoundError, match=rf"--input YOUR_LOG_FILE --output {missing}`"):
        load_processed_data(missing)
