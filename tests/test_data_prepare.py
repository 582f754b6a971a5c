"""`prepare` end to end: splits, ordering, filtering, tokenizer numbering, saved artefacts, CLI, real data."""

import json
import os
import random
import signal
import subprocess
import sys
from collections import Counter
from itertools import pairwise
from pathlib import Path

import pytest
from conftest import DATA_SHARED, data_random_log
from datasets import load_from_disk
from transformers import AutoTokenizer

from data_preprocess import DataFormatError, pipeline, prepare
from data_preprocess.__main__ import main
from hf_sasrec.item_tokenizer import decode_items

REPO = Path(__file__).resolve().parents[1]


def write_u_data(path, rows):
    path.write_text("".join(f"{u}\t{i}\t{r}\t{t}\n" for u, i, r, t in rows), encoding="utf-8")
    return path


def expected_sequences(rows):
    """Each user's items in time order, equal times in file order."""
    ordered = sorted(enumerate(rows), key=lambda pair: (pair[1][3], pair[0]))
    sequences = {}
    for _, (user, item, _, time) in ordered:
        sequences.setdefault(user, []).append((item, time))
    return sequences


def by_user(dataset, tokenizer):
    return {row["user_id"]: (decode_items(tokenizer, row["item_ids"]), row["timestamps"]) for row in dataset}


def test_leave_one_out_rows_are_the_users_prefixes(data_movielens_dir):
    rows = data_random_log()
    splits, tokenizer = prepare(data_movielens_dir)
    expected = expected_sequences(rows)
    train, valid, test = (by_user(splits[name], tokenizer) for name in ("train", "valid", "test"))
    assert set(train) == set(valid) == set(test) == set(expected)
    for user, sequence in expected.items():
        items, times = [item for item, _ in sequence], [time for _, time in sequence]
        assert test[user] == (items, times)  # the last element is the test target
        assert valid[user] == (items[:-1], times[:-1])  # the last element is the validation target
        assert train[user] == (items[:-2], times[:-2])
        assert items[-1] not in train[user][0] and items[-2] not in train[user][0]
    assert splits["train"].features["item_ids"].feature.dtype == "int64"
    assert list(splits) == ["train", "valid", "test"]


def test_rows_are_truncated_from_the_left(data_movielens_dir):
    splits, tokenizer = prepare(data_movielens_dir, max_length=3)
    expected = expected_sequences(data_random_log())
    for name, cut in (("train", 2), ("valid", 1), ("test", 0)):
        for user, (items, times) in by_user(splits[name], tokenizer).items():
            full = expected[user][: len(expected[user]) - cut]
            assert items == [item for item, _ in full][-4:] and times == [time for _, time in full][-4:]


def test_short_users_go_to_train_only(tmp_path):
    rows = [("a", "1", 5, 1), ("a", "2", 5, 2), ("b", "1", 5, 1), ("b", "2", 5, 2), ("b", "3", 5, 3), ("c", "3", 5, 1)]
    splits, tokenizer = prepare(write_u_data(tmp_path / "u.data", rows), tmp_path / "out")
    assert by_user(splits["train"], tokenizer) == {"a": (["1", "2"], [1, 2]), "b": (["1"], [1]), "c": (["3"], [1])}
    assert splits["valid"]["user_id"] == ["b"] and splits["test"]["user_id"] == ["b"]
    assert json.loads((tmp_path / "out" / "stats.json").read_text())["train_only_users"] == 2


def test_items_are_numbered_by_popularity_deterministically(tmp_path):
    rows = data_random_log(seed=3)
    counts = Counter(item for _, item, _, _ in rows)
    _, tokenizer = prepare(write_u_data(tmp_path / "u.data", rows))
    keys = decode_items(tokenizer, range(5, len(tokenizer)))
    assert [counts[key] for key in keys] == sorted(counts.values(), reverse=True)
    for first, second in pairwise(keys):  # equal counts: numeric key order
        assert counts[first] > counts[second] or int(first) < int(second)
    random.Random(1).shuffle(rows)
    (tmp_path / "shuffled").mkdir()
    _, again = prepare(write_u_data(tmp_path / "shuffled" / "u.data", rows))
    assert again.get_vocab() == tokenizer.get_vocab()


def test_same_input_gives_identical_output(data_movielens_dir, tmp_path):
    prepare(data_movielens_dir, tmp_path / "one")
    prepare(data_movielens_dir, tmp_path / "two")
    for name in ("stats.json", "item_titles.json", "low_rated.json", "tokenizer/tokenizer.json"):
        assert (tmp_path / "one" / name).read_text() == (tmp_path / "two" / name).read_text()
    one, two = load_from_disk(tmp_path / "one"), load_from_disk(tmp_path / "two")
    assert all(one[name].to_list() == two[name].to_list() for name in one)


def test_equal_timestamps_keep_file_order(tmp_path):
    rows = [("u", "9", 5, 7), ("u", "3", 5, 7), ("u", "5", 5, 1), ("u", "1", 5, 7)]
    splits, tokenizer = prepare(write_u_data(tmp_path / "u.data", rows))
    assert by_user(splits["test"], tokenizer)["u"] == (["5", "9", "3", "1"], [1, 7, 7, 7])


def test_k_core_is_iterated_until_stable(tmp_path):
    # The first pass drops items 4 and 6, then users c, d and f; only then does item 7 fall to 2 users (a, b).
    sequences = {"a": "1257", "b": "1257", "e": "125", "c": "347", "d": "342", "f": "36"}
    rows = [(user, item, 5, time) for user, items in sequences.items() for time, item in enumerate(items)]
    splits, tokenizer = prepare(write_u_data(tmp_path / "u.data", rows), tmp_path / "out", k_core=3)
    survivors = {user: items for user, (items, _) in by_user(splits["test"], tokenizer).items()}
    assert survivors == {"a": ["1", "2", "5"], "b": ["1", "2", "5"], "e": ["1", "2", "5"]}
    item_counts = Counter(item for items in survivors.values() for item in items)
    assert min(item_counts.values()) >= 3 and min(map(len, survivors.values())) >= 3
    stats = json.loads((tmp_path / "out" / "stats.json").read_text())
    assert sum(stats["dropped"].values()) == len(rows) - 9
    assert set(stats["dropped"]) == {"k_core_item", "k_core_user"}
    assert stats["num_users"] == 3 and stats["num_items"] == 3 and stats["num_interactions"] == 9


def test_consecutive_repeats_are_dropped_only_on_request(tmp_path):
    rows = [("u", item, 5, time) for time, item in enumerate(["1", "1", "2", "1", "3", "3", "3", "4"])]
    path = write_u_data(tmp_path / "u.data", rows)
    splits, tokenizer = prepare(path, tmp_path / "out", dedup_consecutive=True)
    assert by_user(splits["test"], tokenizer)["u"][0] == ["1", "2", "1", "3", "4"]
    assert json.loads((tmp_path / "out" / "stats.json").read_text())["dropped"] == {"consecutive_repeat": 3}
    splits, tokenizer = prepare(path)
    assert len(splits["test"][0]["item_ids"]) == 8


def test_min_rating_keeps_implicit_positives_and_low_ratings_aside(data_movielens_dir, tmp_path):
    rows = data_random_log()
    splits, tokenizer = prepare(data_movielens_dir, tmp_path / "out", min_rating=4, low_rating=2)
    kept = [row for row in rows if row[2] >= 4]
    stats = json.loads((tmp_path / "out" / "stats.json").read_text())
    assert stats["num_interactions"] == len(kept)
    assert stats["dropped"] == {"below_min_rating": len(rows) - len(kept)}
    assert stats["args"]["min_rating"] == 4 and stats["has_ratings"]
    low_rated = json.loads((tmp_path / "out" / "low_rated.json").read_text())
    vocab = set(decode_items(tokenizer, range(5, len(tokenizer))))
    expected = {}
    users = {row[0] for row in kept}
    for user, item, rating, _ in rows:
        if rating <= 2 and item in vocab and user in users:
            expected.setdefault(user, set()).add(item)
    assert {user: set(decode_items(tokenizer, ids)) for user, ids in low_rated.items()} == expected
    for row in splits["test"]:  # low-rated items are not in the sequences
        assert not set(row["item_ids"]) & set(low_rated.get(row["user_id"], []))


def test_saved_folder_layout(data_movielens_dir, tmp_path):
    splits, _ = prepare(data_movielens_dir, tmp_path / "out", max_length=7)
    out = tmp_path / "out"
    stats = json.loads((out / "stats.json").read_text())
    assert stats["dataset"] == "ml-tiny" and stats["has_timestamps"] and stats["args"]["max_length"] == 7
    assert stats["num_items"] + 5 == stats["vocab_size"] == len(AutoTokenizer.from_pretrained(out / "tokenizer"))
    assert stats["num_users"] == 30 and stats["splits"] == {"train": 30, "valid": 30, "test": 30}
    assert stats["num_interactions"] == len(data_random_log())
    assert stats["density"] == pytest.approx(stats["num_interactions"] / (stats["num_users"] * stats["num_items"]))
    item2id = json.loads((out / "tokenizer" / "item2id.json").read_text(encoding="utf-8"))
    titles = json.loads((out / "item_titles.json").read_text(encoding="utf-8"))
    assert titles[str(item2id["1"])] == {"title": "Amélie (2001)", "genres": ["Comedy", "Drama", "Romance"]}
    reloaded = load_from_disk(out)
    assert reloaded["test"].to_list() == splits["test"].to_list()


def test_source_without_times_gets_positions_and_no_time_split(tmp_path):
    path = tmp_path / "Beauty.txt"
    path.write_text("1 a b c d\n2 b c e\n3 x\n", encoding="utf-8")
    splits, tokenizer = prepare(path, tmp_path / "out")
    assert by_user(splits["test"], tokenizer)["1"] == (["a", "b", "c", "d"], [0, 1, 2, 3])
    assert by_user(splits["train"], tokenizer)["3"] == (["x"], [0])
    stats = json.loads((tmp_path / "out" / "stats.json").read_text())
    assert stats["has_timestamps"] is False and not (tmp_path / "out" / "low_rated.json").exists()
    with pytest.raises(ValueError, match="time split needs timestamps"):
        prepare(path, split="time")
    with pytest.raises(ValueError, match="needs ratings"):
        prepare(path, min_rating=3)


def test_time_split_uses_global_windows(tmp_path):
    rows = [
        ("a", "1", 5, 1),
        ("a", "2", 5, 5),
        ("a", "3", 5, 12),
        ("a", "4", 5, 13),
        ("a", "5", 5, 21),
        ("b", "1", 5, 2),
        ("b", "6", 5, 22),
        ("c", "2", 5, 11),
        ("c", "3", 5, 25),
        ("d", "1", 5, 3),
    ]
    out = tmp_path / "out"
    path = write_u_data(tmp_path / "u.data", rows)
    splits, tokenizer = prepare(path, out, split="time", valid_start=10, test_start=20)
    assert by_user(splits["train"], tokenizer) == {"a": (["1", "2"], [1, 5]), "b": (["1"], [2]), "d": (["1"], [3])}
    assert by_user(splits["valid"], tokenizer) == {"a": (["1", "2", "3"], [1, 5, 12])}  # c's valid item has no history
    assert by_user(splits["test"], tokenizer) == {
        "a": (["1", "2", "3", "4", "5"], [1, 5, 12, 13, 21]),
        "b": (["1", "6"], [2, 22]),
        "c": (["2", "3"], [11, 25]),
    }
    stats = json.loads((out / "stats.json").read_text())
    assert stats["dropped"] == {"valid_target_without_history": 1}
    assert stats["args"]["valid_start"] == 10 and stats["args"]["test_start"] == 20


def test_malformed_input_raises_or_is_counted(tmp_path):
    path = tmp_path / "u.data"
    path.write_text("1\t1\t5\t1\n1\t2\t5\n1\t3\t5\t3\n1\t4\t5\t4\n", encoding="utf-8")
    with pytest.raises(DataFormatError, match=r"u\.data, line 2: expected 4 fields"):
        prepare(path)
    prepare(path, tmp_path / "out", on_error="skip")
    assert json.loads((tmp_path / "out" / "stats.json").read_text())["dropped"] == {"malformed_line": 1}


def test_cli_writes_the_dataset(tmp_path, caplog):
    log = tmp_path / "log.csv"
    log.write_text("who,what,when\nu1,A B,3\nu1,C,4\nu1,D,5\nu2,A B,1\nu2,x,1\n", encoding="utf-8")
    with caplog.at_level("INFO", logger="data_preprocess"):
        main(
            [
                "--input",
                str(log),
                "--output",
                str(tmp_path / "out"),
                "--user-col",
                "who",
                "--item-col",
                "what",
                "--time-col",
                "when",
                "--k-core",
                "1",
                "--max-length",
                "2",
            ]
        )
    assert "go to train only" in caplog.text
    splits = load_from_disk(tmp_path / "out")
    tokenizer = AutoTokenizer.from_pretrained(tmp_path / "out" / "tokenizer")
    assert decode_items(tokenizer, splits["test"][0]["item_ids"]) == ["A B", "C", "D"]
    assert tokenizer.convert_ids_to_tokens(splits["test"][0]["item_ids"][:1]) == ["A%20B"]


def test_embedded_movielens_default(tmp_path):
    pytest.importorskip("recbole", reason="the embedded MovieLens-100K ships in the recbole wheel")
    splits, _ = prepare(output=tmp_path / "ml-100k")
    stats = json.loads((tmp_path / "ml-100k" / "stats.json").read_text())
    assert (stats["dataset"], stats["num_users"], stats["num_items"], stats["num_interactions"]) == (
        "ml-100k",
        943,
        1682,
        100_000,
    )
    assert len(splits["test"]) == 943 and max(len(row) for row in splits["test"]["item_ids"]) == 51
    titles = json.loads((tmp_path / "ml-100k" / "item_titles.json").read_text())
    assert titles["5"]["title"] == "Star Wars (1977)"  # the most popular film


@pytest.mark.skipif(not (DATA_SHARED / "amazon-beauty" / "Beauty.txt").is_file(), reason="no ../shared/data")
def test_real_amazon_beauty(tmp_path):
    splits, _ = prepare(DATA_SHARED / "amazon-beauty" / "Beauty.txt", tmp_path / "beauty")
    stats = json.loads((tmp_path / "beauty" / "stats.json").read_text())
    assert (stats["num_users"], stats["num_items"], stats["num_interactions"]) == (22363, 12101, 198502)
    assert len(splits["valid"]) == len(splits["test"]) == 22363


def test_a_failure_while_writing_leaves_the_previous_output(data_movielens_dir, tmp_path, monkeypatch):
    out = tmp_path / "out"
    prepare(data_movielens_dir, out)
    (out / "item_text.npy").write_bytes(b"added later by data_preprocess.text_embeddings")
    before = {name: (out / name).read_text() for name in ("stats.json", "tokenizer/id2item.json")}
    test_rows = load_from_disk(out)["test"].to_list()

    def disk_full(*args, **kwargs):
        raise OSError("No space left on device")

    monkeypatch.setattr(pipeline, "save_item_tokenizer", disk_full)  # the splits are written by then
    with pytest.raises(OSError, match="No space left"):
        prepare(data_movielens_dir, out, max_length=2, min_rating=4)
    assert {name: (out / name).read_text() for name in before} == before
    assert load_from_disk(out)["test"].to_list() == test_rows
    assert (out / "item_text.npy").is_file() and sorted(path.name for path in tmp_path.iterdir()) == ["ml-tiny", "out"]


def test_a_kill_while_writing_leaves_the_previous_output(data_movielens_dir, tmp_path):
    out = tmp_path / "out"
    prepare(data_movielens_dir, out)
    stats = (out / "stats.json").read_text()
    killed_while_saving = (
        "import os, signal, sys\n"
        "import data_preprocess.pipeline as pipeline\n"
        "from data_preprocess.__main__ import main\n"
        "pipeline.save_item_tokenizer = lambda *args: os.kill(os.getpid(), signal.SIGKILL)\n"
        "main(sys.argv[1:])\n"
    )
    command = [sys.executable, "-c", killed_while_saving, "--input", str(data_movielens_dir), "--output", str(out)]
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    done = subprocess.run([*command, "--max-length", "2"], env=env, capture_output=True, timeout=120)
    assert done.returncode == -signal.SIGKILL
    assert (out / "stats.json").read_text() == stats
    assert max(len(row) for row in load_from_disk(out)["test"]["item_ids"]) > 3  # not the max-length-2 rows


def test_rewriting_an_output_keeps_the_files_added_beside_it(data_movielens_dir, tmp_path, caplog):
    out = tmp_path / "out"
    prepare(data_movielens_dir, out)
    (out / "item_text.npy").write_bytes(b"added later by data_preprocess.text_embeddings")
    with caplog.at_level("INFO", logger="data_preprocess"):
        prepare(data_movielens_dir, out, max_length=3)
    assert (out / "item_text.npy").read_bytes() == b"added later by data_preprocess.text_embeddings"
    assert "kept from before: item_text.npy" in caplog.text and "recompute or remove" not in caplog.text
    (tmp_path / "Beauty.txt").write_text("1 a b c d\n2 b c e\n", encoding="utf-8")
    with caplog.at_level("INFO", logger="data_preprocess"):
        prepare(tmp_path / "Beauty.txt", out)  # another item vocabulary, no ratings, no titles
    assert "kept item_text.npy from the previous" in caplog.text and "recompute or remove them" in caplog.text
    assert sorted(path.name for path in out.iterdir()) == [
        "dataset_dict.json",
        "item_text.npy",
        "stats.json",
        "test",
        "tokenizer",
        "train",
        "valid",
    ]  # no low_rated.json nor item_titles.json left from the MovieLens output


def test_an_output_folder_not_written_by_prepare_is_refused(data_movielens_dir, tmp_path):
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "notes.txt").write_text("keep me", encoding="utf-8")
    with pytest.raises(FileExistsError, match="is not a folder written by python -m data_preprocess"):
        prepare(data_movielens_dir, mine)
    assert [path.name for path in mine.iterdir()] == ["notes.txt"]


def test_output_gets_the_usual_permissions(data_movielens_dir, tmp_path):
    prepare(data_movielens_dir, tmp_path / "out")
    (tmp_path / "plain").mkdir()
    (tmp_path / "plain.json").write_text("{}")
    folder_mode, file_mode = ((tmp_path / name).stat().st_mode for name in ("plain", "plain.json"))
    assert (tmp_path / "out").stat().st_mode == folder_mode
    for name in ("stats.json", "item_titles.json", "low_rated.json", "tokenizer/id2item.json"):
        assert (tmp_path / "out" / name).stat().st_mode == file_mode, name
