"""The cold-item protocol (issue 13, point 4): `--cold-items` holds items out of the training split only, and the
evaluation reports cold-target and warm-target users apart, each ranked exactly as among all users."""

import json

import pytest
import torch
from conftest import data_write_movielens
from datasets import Dataset, DatasetDict, load_from_disk
from model_helpers import VOCAB_SIZE
from test_evaluation import ScoreTable, random_users

import data_preprocess.__main__ as cli
from data_preprocess import prepare
from data_preprocess.cold_items import choose_cold_items, hold_out_cold_items
from data_preprocess.errors import PreprocessingError
from hf_sasrec.evaluation import evaluate_next_item
from hf_sasrec.processed_data import cold_item_ids


@pytest.fixture
def log_file(tmp_path):
    return data_write_movielens(tmp_path / "ml") / "u.data"


def test_cold_items_leave_the_training_split_only(log_file, tmp_path):
    prepare(log_file, tmp_path / "warm", features=None)
    prepare(log_file, tmp_path / "cold", features=None, cold_items=0.2, cold_items_seed=3)
    warm, cold = load_from_disk(str(tmp_path / "warm")), load_from_disk(str(tmp_path / "cold"))
    held_out = set(cold_item_ids(tmp_path / "cold"))
    assert len(held_out) == 5  # 20% of 25 items
    description = json.loads((tmp_path / "cold" / "cold_items.json").read_text())
    item2id = json.loads((tmp_path / "cold" / "tokenizer" / "item2id.json").read_text())
    assert [item2id[item] for item in description["items"]] == description["token_ids"]
    expected = []
    for row in warm["train"]:
        kept = [
            (item, time) for item, time in zip(row["item_ids"], row["timestamps"], strict=True) if item not in held_out
        ]
        if kept:  # a row of cold items only is dropped (and counted)
            expected.append(kept)
    assert [list(zip(row["item_ids"], row["timestamps"], strict=True)) for row in cold["train"]] == expected
    assert warm["valid"]["item_ids"] == cold["valid"]["item_ids"]
    assert warm["test"]["item_ids"] == cold["test"]["item_ids"]
    stats = json.loads((tmp_path / "cold" / "stats.json").read_text())["cold_items"]
    removed = sum(map(len, warm["train"]["item_ids"])) - sum(map(len, cold["train"]["item_ids"]))
    assert stats["train_interactions_removed"] == removed > 0
    assert stats["train_rows_emptied"] == len(warm["train"]) - len(cold["train"])
    assert stats["test_cold_targets"] == sum(row[-1] in held_out for row in cold["test"]["item_ids"])
    # The same seed draws the same items; a warm preparation over a cold folder leaves no stale cold_items.json.
    prepare(log_file, tmp_path / "again", features=None, cold_items=0.2, cold_items_seed=3)
    assert set(cold_item_ids(tmp_path / "again")) == held_out
    prepare(log_file, tmp_path / "cold", features=None)
    assert cold_item_ids(tmp_path / "cold") is None


@pytest.mark.parametrize(
    ("fraction", "message"),
    [("0", "must be a fraction in \\(0, 1\\), got 0.0"), ("1.5", "got 1.5"), ("0.001", "holds out no item")],
)
def test_a_cold_fraction_that_holds_out_nothing_or_everything_is_refused(log_file, tmp_path, fraction, message):
    with pytest.raises(SystemExit, match=f"python -m data_preprocess: error: --cold-items.*{message}"):
        cli.main(["--input", str(log_file), "--output", str(tmp_path / "out"), "--cold-items", fraction])


def test_a_cold_fraction_emptying_the_training_split_is_refused():
    rows = {"user_id": ["a", "b"], "item_ids": [[5, 5], [5]], "timestamps": [[1, 2], [3]]}
    splits = DatasetDict({name: Dataset.from_dict(rows) for name in ("train", "valid", "test")})
    seed = next(seed for seed in range(100) if choose_cold_items(5, 7, 0.5, seed) == [5])
    with pytest.raises(PreprocessingError, match="the train split would be empty"):
        hold_out_cold_items(splits, 5, 7, 0.5, seed)


def test_cold_and_warm_metrics_are_those_of_their_users_ranked_among_all_items():
    rows = random_users(60, VOCAB_SIZE, seed=1)
    scores = torch.randn(len(rows), VOCAB_SIZE, generator=torch.Generator().manual_seed(2))
    cold = sorted({row["item_ids"][-1] for row in rows[:20]})
    metrics = evaluate_next_item(ScoreTable(scores.clone()), rows, batch_size=7, cold_items=cold)
    is_cold = [row["item_ids"][-1] in set(cold) for row in rows]
    for group, members in (("full_cold", is_cold), ("full_warm", [not flag for flag in is_cold])):
        chosen = [index for index, flag in enumerate(members) if flag]
        alone = evaluate_next_item(ScoreTable(scores[chosen]), [rows[index] for index in chosen], batch_size=7)
        assert metrics[f"{group}/num_users"] == len(chosen) > 0
        for name in ("hr@10", "ndcg@10", "mrr"):
            assert metrics[f"{group}/{name}"] == pytest.approx(alone[f"full/{name}"], abs=1e-12)
    assert metrics["full_cold/num_users"] + metrics["full_warm/num_users"] == metrics["full/num_users"]


def test_a_group_without_users_reports_only_its_count():
    rows = random_users(10, VOCAB_SIZE, seed=4)
    targets = {row["item_ids"][-1] for row in rows}
    never_a_target = next(item for item in range(5, VOCAB_SIZE) if item not in targets)
    metrics = evaluate_next_item(ScoreTable(torch.randn(10, VOCAB_SIZE)), rows, cold_items=[never_a_target])
    assert metrics["full_cold/num_users"] == 0 and "full_cold/ndcg@10" not in metrics
    assert metrics["full_warm/ndcg@10"] == pytest.approx(metrics["full/ndcg@10"], abs=1e-12)
