"""Data rules: settings derived from `stats.json`, layered over a preset, under the YAML file and command line."""

import json

import pytest
from sft_helpers import tiny_run_arguments
from test_data_features import data_log  # noqa: F401 (a fixture)

from data_preprocess import prepare
from hf_sasrec import sft
from hf_sasrec.data_rules import DENSE_MEAN_LENGTH, FULL_SOFTMAX_MAX_ITEMS, rule_values
from hf_sasrec.run_info import RunInfo
from hf_sasrec.training_args import parse_sft_args

SPARSE = {"num_users": 22363, "num_items": 12101, "num_interactions": 198502, "mean_length": 8.9}
DENSE = {"num_users": 943, "num_items": 1682, "num_interactions": 100000, "mean_length": 106.0}


def test_each_rule_follows_the_statistic_it_names():
    sparse, dense = rule_values(SPARSE), rule_values(DENSE)
    assert sparse["hidden_dropout_prob"] == (0.5, f"mean history 8.9 items < {DENSE_MEAN_LENGTH}")
    assert dense["attention_dropout"][0] == 0.2 and dense["loss_type"][0] == "ce"
    huge = rule_values({**SPARSE, "num_items": FULL_SOFTMAX_MAX_ITEMS + 1})
    assert huge["loss_type"] == ("sampled_softmax", f"{FULL_SOFTMAX_MAX_ITEMS + 1} items > {FULL_SOFTMAX_MAX_ITEMS}")


def test_statistics_a_rule_needs_are_asked_for_by_name():
    with pytest.raises(ValueError, match=r"data statistics \['mean_length'\] of stats.json; prepare the data again"):
        rule_values({key: value for key, value in SPARSE.items() if key != "mean_length"})


def test_rules_lie_over_the_preset_and_under_the_yaml_file_and_command_line(tmp_path, caplog):
    config = tmp_path / "recipe.yaml"
    config.write_text("model_config: model_configs/sasrec/paper.json\ndata_rules: true\nattention_dropout: 0.1\n")
    caplog.set_level("INFO", logger="hf_sasrec.training_args")
    _, data_args, _, fields = parse_sft_args(["--config", str(config), "--loss_type", "bce"], DENSE)
    # The preset's 0.5 gives way to the rule's 0.2; the YAML file's attention dropout and the command line's loss win.
    assert (fields["hidden_dropout_prob"], fields["attention_dropout"], fields["loss_type"]) == (0.2, 0.1, "bce")
    assert data_args.applied_data_rules == {"hidden_dropout_prob": (0.2, "mean history 106.0 items >= 50")}
    assert "Data rule: hidden_dropout_prob = 0.2 (mean history 106.0 items >= 50)." in caplog.messages


def test_without_data_rules_the_statistics_change_nothing():
    _, data_args, _, fields = parse_sft_args(["--model_config", "model_configs/sasrec/paper.json"], DENSE)
    assert fields["hidden_dropout_prob"] == 0.5 and data_args.applied_data_rules == {}


def test_a_run_records_the_settings_its_data_gave_it(data_log, tmp_path):  # noqa: F811 (data_log is a fixture)
    data_dir, run = tmp_path / "data", tmp_path / "run"
    prepare(data_log, data_dir)
    sft.main(tiny_run_arguments(data_dir, run, num_train_epochs=1, data_rules=True))
    stats = json.loads((data_dir / "stats.json").read_text())
    expected = {key: value for key, (value, _) in rule_values(stats).items()}
    assert expected["hidden_dropout_prob"] == 0.5  # the tiny log is sparse
    assert RunInfo.load(run).data_rules == expected
    config = json.loads((run / "config.json").read_text())
    assert (config["hidden_dropout_prob"], config["attention_dropout"]) == (0.5, 0.5)
