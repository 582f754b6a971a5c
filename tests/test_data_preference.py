"""DPO preference pairs: the three rejected-item sources, never an item the user touched, TRL-ready text."""

import json

import numpy as np
import pytest
from conftest import data_write_movielens
from datasets import Dataset, load_from_disk
from transformers import AutoTokenizer

from data_preprocess import prepare
from data_preprocess.dislikes import DISLIKE_PARTS, load_dislikes, split_dislikes
from data_preprocess.preference import _prompts, build_preference_pairs, main, model_item_embeddings


@pytest.fixture(scope="module")
def data_prepared(tmp_path_factory):
    """The small MovieLens log, implicit from 3 stars up, low ratings (<= 2) set aside."""
    root = tmp_path_factory.mktemp("preference")
    prepare(data_write_movielens(root / "ml-tiny"), root / "data", min_rating=3, max_length=5)
    return root / "data"


def user_items(data_dir):
    """Every item id of each user, over all splits."""
    items = {}
    for rows in load_from_disk(data_dir).values():
        for row in rows:
            items.setdefault(row["user_id"], set()).update(row["item_ids"])
    return items


def ids_of(tokenizer, text):
    return tokenizer(text)["input_ids"]


def check_pairs(pairs, data_dir, num_rejected):
    tokenizer = AutoTokenizer.from_pretrained(data_dir / "tokenizer")
    train = {row["user_id"]: row["item_ids"] for row in load_from_disk(data_dir)["train"]}
    touched = user_items(data_dir)
    assert len(pairs) > 0
    for row in pairs:
        history, chosen = ids_of(tokenizer, row["prompt"]), ids_of(tokenizer, row["chosen"])
        rejected_all = [ids_of(tokenizer, text)[0] for text in row["rejected_all"]]
        assert history and history + chosen == train[row["user_id"]]  # the history, then its next item
        assert row["rejected"] == row["rejected_all"][0] and len(rejected_all) == num_rejected
        assert len(set(rejected_all)) == len(rejected_all) and chosen[0] not in rejected_all
        assert not set(rejected_all) & touched[row["user_id"]]  # never an item of the user's history
        assert min(rejected_all) >= 5
        # TRL joins prompt + completion + eos_token as strings
        assert ids_of(tokenizer, row["prompt"] + row["chosen"] + tokenizer.eos_token) == [*history, *chosen, 3]
        assert ids_of(tokenizer, row["prompt"] + row["rejected"] + tokenizer.eos_token) == [
            *history,
            rejected_all[0],
            3,
        ]
    return tokenizer


def test_single_item_training_rows_give_no_prompt(caplog):
    train = Dataset.from_dict({"user_id": ["a", "b"], "item_ids": [[7], [5, 6, 8]]})
    with caplog.at_level("INFO", logger="data_preprocess"):
        assert _prompts(train, all_positions=False) == [("b", [5, 6], 8)]
        assert _prompts(train, all_positions=True) == [("b", [5], 6), ("b", [5, 6], 8)]
    assert "1 training rows of a single item give no prompt" in caplog.text


def test_popular_source(data_prepared):
    pairs = build_preference_pairs(data_prepared, "popular", num_rejected=3)
    check_pairs(pairs, data_prepared, 3)
    assert pairs.column_names == ["prompt", "chosen", "rejected", "rejected_all", "user_id"]
    assert build_preference_pairs(data_prepared, "popular", num_rejected=3).to_list() == pairs.to_list()


def test_low_rated_source_uses_the_ratings_of_the_pairs_part_only(data_prepared):
    pairs = build_preference_pairs(data_prepared, "low-rated", num_rejected=2)
    tokenizer = check_pairs(pairs, data_prepared, 2)
    low_rated = json.loads((data_prepared / "low_rated.json").read_text())
    trainable = split_dislikes(low_rated, "pairs")
    held_out = {
        user: set(items) for part in ("valid", "test") for user, items in split_dislikes(low_rated, part).items()
    }
    assert sum(map(len, held_out.values())) > 0
    touched = user_items(data_prepared)
    topped_up = 0
    for row in pairs:
        candidates = set(trainable.get(row["user_id"], [])) - touched[row["user_id"]]
        rejected = [ids_of(tokenizer, text)[0] for text in row["rejected_all"]]
        assert rejected[0] in candidates  # `rejected` is always a low-rated item of the pairs part
        assert set(rejected[: len(candidates)]) <= candidates  # low-rated first, then popular items if too few
        assert not set(rejected) & held_out.get(row["user_id"], set())  # a held-out dislike never builds a pair
        topped_up += len(candidates) < 2
    assert topped_up > 0
    with_history = {row["user_id"] for row in load_from_disk(data_prepared)["train"] if len(row["item_ids"]) > 1}
    users_with_candidates = {user for user, items in trainable.items() if set(items) - touched[user]}
    assert set(pairs["user_id"]) == users_with_candidates & with_history


def test_dislikes_split_by_a_fixed_hash_into_disjoint_parts(data_prepared):
    low_rated = json.loads((data_prepared / "low_rated.json").read_text())
    parts = {part: split_dislikes(low_rated, part) for part in DISLIKE_PARTS}
    for user, items in low_rated.items():
        pieces = [set(parts[part].get(user, [])) for part in DISLIKE_PARTS]
        assert set().union(*pieces) == set(items) and sum(map(len, pieces)) == len(set(items))
    counts = {part: sum(map(len, split.values())) for part, split in parts.items()}
    total = sum(counts.values())
    assert 0.35 < counts["pairs"] / total < 0.65 and counts["test"] > 0 and counts["valid"] > 0
    assert load_dislikes(data_prepared, "test") == parts["test"]
    with pytest.raises(ValueError, match="Unknown dislike part 'train'"):
        split_dislikes(low_rated, "train")


def test_hard_source_takes_the_nearest_items(data_prepared):
    vocab_size = len(AutoTokenizer.from_pretrained(data_prepared / "tokenizer"))
    angles = np.linspace(0, np.pi, vocab_size)  # item i's nearest items are i - 1 and i + 1, then i +- 2, ...
    embeddings = np.stack([np.cos(angles), np.sin(angles)], axis=1)
    pairs = build_preference_pairs(data_prepared, "hard", num_rejected=2, item_embeddings=embeddings)
    tokenizer = check_pairs(pairs, data_prepared, 2)
    touched = user_items(data_prepared)
    for row in pairs:
        chosen = ids_of(tokenizer, row["chosen"])[0]
        rejected = [ids_of(tokenizer, text)[0] for text in row["rejected_all"]]
        untouched = [item for item in range(5, vocab_size) if item not in touched[row["user_id"]]]
        nearest = sorted(untouched, key=lambda item: (abs(item - chosen), item))[:2]
        assert sorted(abs(item - chosen) for item in rejected) == sorted(abs(item - chosen) for item in nearest)
    with pytest.raises(ValueError, match="one row per token id"):
        build_preference_pairs(data_prepared, "hard", item_embeddings=embeddings[:10])


def test_hard_source_from_a_trained_model(data_prepared, tmp_path):
    hf_sasrec = pytest.importorskip("hf_sasrec")
    from transformers import AutoConfig, AutoModelForCausalLM

    vocab_size = len(AutoTokenizer.from_pretrained(data_prepared / "tokenizer"))
    config = AutoConfig.for_model("sasrec", vocab_size=vocab_size, hidden_size=8, num_hidden_layers=1)
    AutoModelForCausalLM.from_config(config).save_pretrained(tmp_path / "model")
    embeddings = model_item_embeddings(tmp_path / "model")
    assert embeddings.shape == (vocab_size, 8) and hf_sasrec
    check_pairs(build_preference_pairs(data_prepared, "hard", item_embeddings=embeddings), data_prepared, 1)


def test_low_rated_source_without_ratings_is_a_clear_error(tmp_path):
    (tmp_path / "Beauty.txt").write_text("1 a b c d\n2 b c e f\n", encoding="utf-8")
    prepare(tmp_path / "Beauty.txt", tmp_path / "data")
    with pytest.raises(FileNotFoundError, match="needs a dataset prepared from a source with ratings"):
        build_preference_pairs(tmp_path / "data", "low-rated")


def test_cli_all_positions(data_prepared, tmp_path):
    np.save(tmp_path / "items.npy", np.random.default_rng(0).normal(size=(200, 4)))
    main(["--data", str(data_prepared), "--output", str(tmp_path / "dpo"), "--source", "hard",
          "--item-embeddings", str(tmp_path / "items.npy"), "--all-positions", "--num-rejected", "2"])  # fmt: skip
    pairs = load_from_disk(tmp_path / "dpo")
    train = load_from_disk(data_prepared)["train"]
    assert len(pairs) == sum(len(items) - 1 for items in train["item_ids"])
    assert {len(row) for row in pairs["rejected_all"]} == {2}


def test_cli_pairs_folder_is_replaced_only_when_complete(data_prepared, tmp_path, monkeypatch):
    arguments = ["--data", str(data_prepared), "--output", str(tmp_path / "dpo"), "--source", "popular"]
    main(arguments)
    before = load_from_disk(tmp_path / "dpo").to_list()
    save_to_disk = Dataset.save_to_disk

    def written_then_disk_full(self, path, **kwargs):
        save_to_disk(self, path, **kwargs)
        raise OSError("No space left on device")

    monkeypatch.setattr(Dataset, "save_to_disk", written_then_disk_full)
    with pytest.raises(SystemExit) as error:
        main([*arguments, "--num-rejected", "3"])
    assert str(error.value.code) == "python -m data_preprocess.preference: error: No space left on device"
    assert load_from_disk(tmp_path / "dpo").to_list() == before
    assert sorted(path.name for path in tmp_path.iterdir()) == ["dpo"]


def test_cli_refuses_to_write_pairs_over_another_folder(data_prepared, tmp_path):
    with pytest.raises(SystemExit) as error:
        main(["--data", str(data_prepared), "--output", str(data_prepared), "--source", "popular"])
    assert "is not a folder written by python -m data_preprocess.preference" in str(error.value.code)
    assert sorted(load_from_disk(data_prepared)) == ["test", "train", "valid"]
    assert not (data_prepared / "state.json").exists()


def test_cli_missing_dataset_folder_is_one_line(tmp_path):
    with pytest.raises(SystemExit) as error:
        main(["--data", str(tmp_path / "nothing"), "--output", str(tmp_path / "dpo"), "--source", "popular"])
    assert str(error.value.code) == (
        f"python -m data_preprocess.preference: error: {tmp_path}/nothing is not a dataset folder (no "
        f"dataset_dict.json); write it with `python -m data_preprocess --input FILE --output {tmp_path}/nothing`"
    )
