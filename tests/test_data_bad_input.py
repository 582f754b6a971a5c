"""Bad input fails early and clearly: empty splits, exact duplicates, the default data set in a folder named for
another one, and one-line command-line errors instead of tracebacks."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from datasets import load_from_disk

import data_preprocess.__main__ as cli
from data_preprocess import prepare

REPO = Path(__file__).resolve().parents[1]
PROG = "python -m data_preprocess: error: "


def write_u_data(path, rows):
    path.write_text("".join(f"{u}\t{i}\t{r}\t{t}\n" for u, i, r, t in rows), encoding="utf-8")
    return path


SHORT_USERS = [("a", "1", 5, 1), ("a", "2", 5, 2), ("b", "1", 5, 1), ("b", "3", 5, 4)]


def cli_error(argv):
    """The message of the `SystemExit` that `python -m data_preprocess argv` ends with."""
    with pytest.raises(SystemExit) as error:
        cli.main(argv)
    return str(error.value.code)


def test_every_user_shorter_than_three_is_an_empty_split_error(tmp_path):
    path = write_u_data(tmp_path / "u.data", SHORT_USERS)
    with pytest.raises(ValueError, match="valid and test split would be empty: all 2 users have fewer than 3"):
        prepare(path, tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_time_split_with_an_empty_test_window_is_an_error(tmp_path):
    rows = [("a", "1", 5, 1), ("a", "2", 5, 12), ("b", "1", 5, 2), ("b", "3", 5, 15)]
    path = write_u_data(tmp_path / "u.data", rows)
    with pytest.raises(ValueError, match="test split would be empty: 0 users have a test target"):
        prepare(path, split="time", valid_start=10, test_start=100)
    with pytest.raises(ValueError, match="train split would be empty: no user has an interaction before"):
        prepare(path, split="time", valid_start=1, test_start=12)


def test_exact_duplicate_lines_are_dropped_and_counted(tmp_path, caplog):
    rows = [("a", "1", 5, 1), ("a", "2", 4, 2), ("a", "2", 4, 2), ("a", "3", 5, 3), ("a", "2", 4, 2)]
    rows += [("a", "2", 3, 2), ("a", "3", 5, 4)]  # another rating, another time: not duplicates
    path = write_u_data(tmp_path / "u.data", rows)
    with caplog.at_level("INFO", logger="data_preprocess"):
        splits, tokenizer = prepare(path, tmp_path / "out")
    assert tokenizer.convert_ids_to_tokens(splits["test"][0]["item_ids"]) == ["1", "2", "2", "3", "3"]
    stats = json.loads((tmp_path / "out" / "stats.json").read_text())
    assert stats["dropped"] == {"duplicate_interaction": 2} and stats["num_interactions"] == 5
    assert "dropped 2 rows: duplicate_interaction" in caplog.text
    cli.main(["--input", str(path), "--output", str(tmp_path / "kept"), "--keep-duplicates"])
    stats = json.loads((tmp_path / "kept" / "stats.json").read_text())
    assert stats["dropped"] == {} and stats["num_interactions"] == 7 and stats["args"]["keep_duplicates"]


def test_sources_without_times_have_no_exact_duplicates(tmp_path):
    path = tmp_path / "Video.txt"
    path.write_text("u a\nu a\nu b\nu c\n", encoding="utf-8")
    splits, tokenizer = prepare(path, tmp_path / "out")
    assert tokenizer.convert_ids_to_tokens(splits["test"][0]["item_ids"]) == ["a", "a", "b", "c"]
    assert json.loads((tmp_path / "out" / "stats.json").read_text())["dropped"] == {}


@pytest.mark.parametrize("name", ["ml-100k", "ML_100K", "movielens", "ml100k-min4"])
def test_cli_without_input_writes_movielens_into_a_folder_named_for_it(tmp_path, monkeypatch, name):
    calls = []
    monkeypatch.setattr(cli, "prepare", lambda input, output, **options: calls.append((input, output)))
    cli.main(["--output", str(tmp_path / name)])
    assert calls == [(None, str(tmp_path / name))]


def test_cli_without_input_refuses_an_output_named_for_another_dataset(tmp_path, monkeypatch):
    calls = []
    monkeypatch.setattr(cli, "prepare", lambda input, output, **options: calls.append((input, output)))
    message = cli_error(["--output", str(tmp_path / "data" / "beauty")])
    assert message == (
        f"{PROG}no --input given, so this would write the embedded MovieLens-100K into {tmp_path}/data/beauty; "
        "pass --input FILE to prepare your own data, or an --output named for MovieLens-100K (e.g. data/ml-100k)"
    )
    assert not calls


@pytest.mark.parametrize(
    ("name", "text", "expected"),
    [
        ("u.data", "", "u.data is empty: there is no interaction to read"),
        ("log.csv", "", "log.csv is empty: there is no interaction to read"),
        ("log.csv", "\n\n", "log.csv, line 1: no header line (the file holds only blank lines)"),
        ("log.csv", "user_id,item_id,timestamp\n", "no interaction could be read from"),
        ("log.jsonl", "\n", "no interaction could be read from"),
        ("u.data", "1\t1\t5\t1\n1\t2\t5\n", "u.data, line 2: expected 4 fields"),
        ("log.parquet", "not parquet", "log.parquet is not a readable Parquet file"),
        ("u.data", "".join(f"{u}\t{i}\t{r}\t{t}\n" for u, i, r, t in SHORT_USERS), "all 2 users have fewer than 3"),
        ("absent.csv", None, "no such file: "),
    ],
)
def test_cli_user_errors_are_one_line(tmp_path, name, text, expected):
    path = tmp_path / name
    if text is not None:
        path.write_text(text, encoding="utf-8")
    message = cli_error(["--input", str(path), "--output", str(tmp_path / "out")])
    assert message.startswith(PROG) and expected in message and "\n" not in message
    assert not (tmp_path / "out").exists()


def test_cli_empty_file_exits_with_one_line_and_no_traceback(tmp_path):
    (tmp_path / "empty.csv").write_text("", encoding="utf-8")
    command = [sys.executable, "-m", "data_preprocess", "--input", str(tmp_path / "empty.csv")]
    command += ["--output", str(tmp_path / "out")]
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    done = subprocess.run(command, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)
    errors = [line for line in done.stderr.splitlines() if not line.startswith("INFO ")]
    assert done.returncode == 1 and errors == [f"{PROG}{tmp_path}/empty.csv is empty: there is no interaction to read"]


def test_an_existing_dataset_is_kept_when_the_new_input_is_bad(tmp_path):
    good = write_u_data(tmp_path / "u.data", [("a", item, 5, int(item)) for item in "123"])
    cli.main(["--input", str(good), "--output", str(tmp_path / "out")])
    before = load_from_disk(tmp_path / "out")["test"].to_list()
    (tmp_path / "short").mkdir()
    bad = write_u_data(tmp_path / "short" / "u.data", SHORT_USERS)
    assert "would be empty" in cli_error(["--input", str(bad), "--output", str(tmp_path / "out")])
    assert load_from_disk(tmp_path / "out")["test"].to_list() == before
