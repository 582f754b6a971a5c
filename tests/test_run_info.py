"""`run_info.json` has one owner, `RunInfo`: versioned, written atomically, and reads the files of 0.1.0."""

import json
import logging
from pathlib import Path

import pytest

from hf_sasrec.run_info import RUN_INFO_FILE, RUN_INFO_VERSION, RunInfo

FIXTURE = Path(__file__).resolve().parent / "fixtures" / "checkpoint_0_1_0"
# What hf-sasrec 0.1.0's `python -m hf_sasrec.dpo` wrote.
DPO_0_1_0 = {
    "sft_dir": "outputs/sft/default",
    "data_dir": "data/ml-100k",
    "model_type": "sasrec",
    "max_length": 50,
    "preference_dir": "outputs/preferences/default-hard-k1",
    "source": "hard",
    "num_rejected": 1,
    "loss_type": ["sigmoid"],
    "beta": 0.1,
}


def test_save_then_load_gives_the_same_record_at_the_current_version(tmp_path):
    info = RunInfo(model_type="tisasrec", max_length=7, dataset="beauty", split="time", command=["a=1", "b=2"])
    info.save(tmp_path)
    written = json.loads((tmp_path / RUN_INFO_FILE).read_text())
    assert written == {
        "version": RUN_INFO_VERSION,
        "model_type": "tisasrec",
        "max_length": 7,
        "dataset": "beauty",
        "split": "time",
        "command": ["a=1", "b=2"],
    }
    assert RunInfo.load(tmp_path) == info


def test_the_sft_run_info_of_0_1_0_loads():
    info = RunInfo.load(FIXTURE)
    assert info.version == 0
    assert (info.model_type, info.max_length, info.eval_protocol, info.exclude_history) == ("sasrec", 8, "full", True)
    assert info.data_dir == "/tmp/fixture_build/data" and "seed=0" in info.command


def test_the_dpo_run_info_of_0_1_0_loads_with_its_keys_renamed(tmp_path):
    (tmp_path / RUN_INFO_FILE).write_text(json.dumps(DPO_0_1_0))
    info = RunInfo.load(tmp_path)
    assert (info.preference_source, info.dpo_loss_type, info.dpo_beta) == ("hard", ["sigmoid"], 0.1)
    assert (info.sft_dir, info.num_rejected, info.max_length) == ("outputs/sft/default", 1, 50)
    info.save(tmp_path)
    assert json.loads((tmp_path / RUN_INFO_FILE).read_text())["preference_source"] == "hard"
    assert RunInfo.load(tmp_path).version == RUN_INFO_VERSION


def test_unknown_keys_are_left_out_and_counted(tmp_path, caplog):
    (tmp_path / RUN_INFO_FILE).write_text(json.dumps({"version": 1, "max_length": 9, "colour": "red", "size": 3}))
    with caplog.at_level(logging.WARNING, logger="hf_sasrec.run_info"):
        info = RunInfo.load(tmp_path)
    assert info == RunInfo(max_length=9)
    assert "left out 2 unknown keys: colour, size" in caplog.text


def test_a_newer_version_is_a_clear_error(tmp_path):
    (tmp_path / RUN_INFO_FILE).write_text(json.dumps({"version": RUN_INFO_VERSION + 1, "max_length": 9}))
    with pytest.raises(ValueError, match="newer than this hf-sasrec reads"):
        RunInfo.load(tmp_path)


def test_a_missing_file_is_an_error_unless_missing_ok(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"run_info\.json not found"):
        RunInfo.load(tmp_path)
    assert RunInfo.load(tmp_path, missing_ok=True) == RunInfo()


def test_a_save_killed_half_way_keeps_the_previous_file(tmp_path, monkeypatch):
    RunInfo(max_length=5).save(tmp_path)
    write_text = Path.write_text

    def killed_half_way(path: Path, text: str, *args, **kwargs):
        write_text(path, text[: len(text) // 2], *args, **kwargs)
        raise KeyboardInterrupt("killed")

    monkeypatch.setattr(Path, "write_text", killed_half_way)
    with pytest.raises(KeyboardInterrupt):
        RunInfo(max_length=6).save(tmp_path)
    monkeypatch.undo()
    assert RunInfo.load(tmp_path).max_length == 5
    assert [path.name for path in tmp_path.iterdir()] == [RUN_INFO_FILE]


def test_the_exported_record_has_no_local_paths():
    info = RunInfo.load(FIXTURE).without_local_paths()
    assert info.data_dir is None and info.command is None
    assert (info.model_type, info.max_length, info.exclude_history) == ("sasrec", 8, True)
