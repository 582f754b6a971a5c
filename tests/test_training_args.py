"""Training configuration errors: one message naming the source (YAML file or command line), the key, what was
expected and the closest valid key; overriding a preset's variant; the command that prepares missing data."""

import logging
import subprocess
import sys
from pathlib import Path

import pytest

from hf_sasrec.processed_data import load_processed_data
from hf_sasrec.training_args import ArgumentError, parse_sft_args

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_YAML = str(ROOT / "train_configs" / "sft" / "default.yaml")


@pytest.fixture(autouse=True)
def from_the_repository(monkeypatch):
    """Configs name `model_configs/...` relative to the repository root."""
    monkeypatch.chdir(ROOT)


def test_command_line_typo_is_blamed_on_the_command_line_with_the_closest_key():
    with pytest.raises(ArgumentError) as error:
        parse_sft_args([DEFAULT_YAML, "learnig_rate=0.1"])
    message = str(error.value)
    assert "['learnig_rate'] in the command line" in message
    assert "did you mean 'learning_rate' (float)?" in message
    assert DEFAULT_YAML not in message


def test_yaml_typo_is_blamed_on_the_yaml_file(tmp_path):
    config = tmp_path / "run.yaml"
    config.write_text("model_type: sasrec\nhiden_size: 32\n")
    with pytest.raises(ArgumentError, match=rf"\['hiden_size'\] in {config}; did you mean 'hidden_size' \(int\)\?"):
        parse_sft_args([str(config)])


def test_value_of_the_wrong_type_names_source_key_and_expected_type(tmp_path):
    config = tmp_path / "run.yaml"
    config.write_text("model_type: sasrec\nnum_train_epochs: thirty\n")
    with pytest.raises(ArgumentError, match=rf"^{config}: num_train_epochs: invalid float value: 'thirty'$"):
        parse_sft_args([str(config)])
    expected = r"^the command line: hidden_size: .*expected int, got str \(value: 'big'\)"
    with pytest.raises(ArgumentError, match=expected):
        parse_sft_args([str(config), "num_train_epochs=3", "hidden_size=big"])


def test_bad_configuration_is_one_line_on_the_command_line(tmp_path):
    """`python -m hf_sasrec.sft` prints the message alone (no usage text, no traceback) and exits 2."""
    result = subprocess.run(
        [sys.executable, "-m", "hf_sasrec.sft", DEFAULT_YAML, "num_train_epochs=thirty"],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=120,
    )
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert lines == ["hf_sasrec.sft: the command line: num_train_epochs: invalid float value: 'thirty'"]


def test_model_type_overrides_the_variant_of_a_model_config_preset(caplog):
    with caplog.at_level(logging.WARNING, logger="hf_sasrec.training_args"):
        model_args, _, _, fields = parse_sft_args([DEFAULT_YAML, "model_type=sasrec"])
    assert model_args.model_type == "sasrec"
    assert "rope_theta" not in fields and fields["hidden_size"] == 64  # the preset's shared fields are kept
    assert "overrides sasrec_rope of model_config model_configs/sasrec_rope" in caplog.text
    assert "['rope_theta']" in caplog.text


def test_unknown_model_type_lists_the_valid_ones():
    expected = r"Unknown model_type 'sasrecc'; expected one of \['sasrec', 'sasrec_rope'"
    with pytest.raises(ArgumentError, match=expected):
        parse_sft_args([DEFAULT_YAML, "model_type=sasrecc"])


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
