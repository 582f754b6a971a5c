"""`Recommender` returns the model's own top-K as raw keys, for every variant, from memory or from a checkpoint."""

import csv
import json
import logging
import shutil

import pytest
import torch
from datasets import Dataset, DatasetDict
from model_helpers import VARIANT_NAMES, VOCAB_SIZE, assert_same_recommendations, tiny_model

from hf_sasrec import infer
from hf_sasrec.evaluation import evaluate_next_item
from hf_sasrec.item_tokenizer import (
    NUM_SPECIAL_TOKENS,
    build_item_tokenizer,
    decode_items,
    encode_items,
    save_item_tokenizer,
)
from hf_sasrec.recommender import POPULARITY_FALLBACK, Recommender
from hf_sasrec.reranking import ExposurePenalty
from hf_sasrec.retrieval import INDEX_METADATA_FILE, ItemIndex, RetrievalConfig, StaleIndexError

NUM_ITEMS = VOCAB_SIZE - NUM_SPECIAL_TOKENS
NARROW_IVF = RetrievalConfig(index_type="ivf", ivf_nlist=5, ivf_nprobe=1)
"""An approximate index that visits one of five cells: it finds only that cell's items."""
KEYS = [f"movie {index}" if index % 7 == 0 else str(1000 + index) for index in range(VOCAB_SIZE - NUM_SPECIAL_TOKENS)]
HISTORIES = [["1003", "1010", "movie 7", "1004"], ["1030"], ["movie 14", "1001", "1002", "1005", "1006", "1008"]]
TIMES = [[10, 40, 41, 90], [7], [1, 2, 4, 8, 16, 17]]


@pytest.fixture(scope="module")
def tokenizer():
    return build_item_tokenizer(KEYS)


def expected_top_k(model, tokenizer, history, k, times=None, exclude=True):
    """Keys and scores of the top-k items by the model's logits for one unpadded history."""
    ids = torch.tensor([encode_items(tokenizer, history)])
    inputs = {"input_ids": ids}
    if model.config.model_type == "tisasrec":
        inputs["timestamps"] = torch.tensor([times])
    with torch.no_grad():
        logits = model(**inputs, logits_to_keep=1).logits[0, -1]
    logits[:NUM_SPECIAL_TOKENS] = -torch.inf
    if exclude:
        logits[ids[0]] = -torch.inf
    top = logits.topk(k)
    return [KEYS[i - NUM_SPECIAL_TOKENS] for i in top.indices.tolist()], top.values


def save_run(model, tokenizer, folder, max_length=3):
    """A run folder as training writes it: model, tokenizer and `run_info.json`."""
    model.save_pretrained(folder)
    save_item_tokenizer(tokenizer, folder)
    (folder / "run_info.json").write_text(
        json.dumps({"max_length": max_length, "model_type": model.config.model_type})
    )


def timestamps_for(model, histories):
    return TIMES[: len(histories)] if model.config.model_type == "tisasrec" else None


@pytest.mark.parametrize("variant", VARIANT_NAMES)
def test_batched_recommendations_are_the_model_top_k(variant, tokenizer):
    model = tiny_model(variant, seed=5)
    recommender = Recommender(model, tokenizer, batch_size=2)
    results = recommender(HISTORIES, top_k=6, timestamps=timestamps_for(model, HISTORIES))
    assert len(results) == len(HISTORIES)
    for row, result in enumerate(results):
        keys, scores = expected_top_k(model, tokenizer, HISTORIES[row], 6, TIMES[row])
        assert result["items"] == keys
        assert result["fallback"] is None and result["unknown_items"] == []
        torch.testing.assert_close(torch.tensor(result["scores"]), scores, atol=1e-5, rtol=1e-5)
        assert not set(result["items"]) & set(HISTORIES[row])


def test_exposure_gives_later_users_the_items_no_earlier_list_holds(tokenizer):
    model = tiny_model("sasrec", seed=5)
    recommender = Recommender(model, tokenizer, batch_size=2)
    histories = HISTORIES * 3  # the same users again: alone, they would get the same lists again
    exposure = ExposurePenalty(VOCAB_SIZE, weight=100.0, k=5, candidates=NUM_ITEMS)
    spread = recommender(histories, top_k=5, exposure=exposure)
    shown: set[str] = set()
    for history, result in zip(histories, spread, strict=True):
        keys, scores = expected_top_k(model, tokenizer, history, NUM_ITEMS - len(set(history)))
        adjusted = scores - 100.0 * torch.tensor([key in shown for key in keys], dtype=torch.float)
        chosen = adjusted.topk(5).indices
        assert result["items"] == [keys[index] for index in chosen]
        torch.testing.assert_close(torch.tensor(result["scores"]), scores[chosen])  # the model's own scores
        shown.update(result["items"])
    plain = recommender(histories, top_k=5)
    assert len(shown) > len({item for result in plain for item in result["items"]})
    # a weight of 0 re-chooses nothing
    unchanged = recommender(histories, top_k=5, exposure=ExposurePenalty(VOCAB_SIZE, weight=0.0, k=5))
    assert [result["items"] for result in unchanged] == [result["items"] for result in plain]
    # a list is re-chosen among the user's `candidates` best items only
    narrow = recommender(histories, top_k=5, exposure=ExposurePenalty(VOCAB_SIZE, weight=100.0, candidates=7))
    for history, result in zip(histories, narrow, strict=True):
        assert set(result["items"]) <= set(expected_top_k(model, tokenizer, history, 7)[0])
    assert [result["items"] for result in narrow] != [result["items"] for result in plain]


def test_single_history_gives_one_result_and_history_can_be_kept(tokenizer):
    model = tiny_model("sasrec", seed=1)
    recommender = Recommender(model, tokenizer)
    history = HISTORIES[2]
    result = recommender(history, top_k=30, exclude_history=False)
    assert isinstance(result, dict)
    keys, _ = expected_top_k(model, tokenizer, history, 30, exclude=False)
    assert result["items"] == keys
    assert set(history) & set(result["items"])  # 30 of 35 items: some history items come back


def test_unknown_items_are_reported_logged_and_skipped(tokenizer, caplog):
    recommender = Recommender(tiny_model("sasrec", seed=2), tokenizer)
    with caplog.at_level(logging.WARNING, logger="hf_sasrec.recommender"):
        noisy = recommender([["1003", "nope", "1010", "no such movie"], ["1030"]], top_k=5)
    assert "Skipped 2 unknown items in 1 of 2 histories" in caplog.text
    assert noisy[0]["unknown_items"] == ["nope", "no such movie"]
    clean = recommender(["1003", "1010"], top_k=5)
    assert noisy[0]["items"] == clean["items"]
    # A batch of two (padded) histories and a single one differ by float rounding only.
    torch.testing.assert_close(torch.tensor(noisy[0]["scores"]), torch.tensor(clean["scores"]), atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("history", [[], ["unknown 1", "unknown 2"]])
def test_empty_history_falls_back_to_popular_items(tokenizer, history):
    recommender = Recommender(tiny_model("sasrec_rope", seed=2), tokenizer)
    result, other = recommender([history, ["1003"]], top_k=4)
    assert result["fallback"] == POPULARITY_FALLBACK and result["scores"] is None
    assert result["items"] == KEYS[:4]
    assert other["fallback"] is None


def test_only_the_last_max_length_items_are_read_but_all_are_excluded(tokenizer):
    model = tiny_model("sasrec", seed=4)
    recommender = Recommender(model, tokenizer, max_length=2)
    history = HISTORIES[2]
    result = recommender(history, top_k=8)
    window_keys, _ = expected_top_k(model, tokenizer, history[-2:], 8 + len(history), exclude=True)
    assert result["items"] == [key for key in window_keys if key not in history][:8]


def test_from_pretrained_saves_reuses_and_refreshes_the_index(tokenizer, tmp_path, caplog, monkeypatch):
    model = tiny_model("sasrec_gate", seed=6)
    save_run(model, tokenizer, tmp_path)
    hnsw = RetrievalConfig(index_type="hnsw", hnsw_m=8)
    loaded = Recommender.from_pretrained(tmp_path, index_config=hnsw, save_index=True)
    assert loaded.max_length == 3 and loaded.index.config.index_type == "hnsw"
    assert (tmp_path / INDEX_METADATA_FILE).is_file()
    assert_same_recommendations(loaded(HISTORIES), Recommender(model, tokenizer, max_length=3)(HISTORIES))
    with monkeypatch.context() as patch:
        patch.setattr(ItemIndex, "build", None)  # reused as saved: read, not built
        assert Recommender.from_pretrained(tmp_path, index_config=hnsw).index.config == hnsw

    with torch.no_grad():
        model.get_output_embeddings().weight.mul_(-1.0)  # another model, same folder
    model.save_pretrained(tmp_path)
    with caplog.at_level(logging.WARNING, logger="hf_sasrec.retrieval"):
        refreshed = Recommender.from_pretrained(tmp_path, index_config=hnsw, save_index=True)
    assert "Rebuilding" in caplog.text
    keys, _ = expected_top_k(model, tokenizer, HISTORIES[0][-3:], 5 + 4)
    assert refreshed(HISTORIES[0], top_k=5)["items"] == [key for key in keys if key not in HISTORIES[0]][:5]


def test_a_saved_approximate_index_never_becomes_the_default(tokenizer, tmp_path):
    model = tiny_model("sasrec", seed=3)
    save_run(model, tokenizer, tmp_path)
    Recommender.from_pretrained(tmp_path, index_config=NARROW_IVF, save_index=True)
    plain = Recommender.from_pretrained(tmp_path)
    assert plain.index.config.index_type == "flat"
    everything = plain(HISTORIES[0], top_k=NUM_ITEMS)
    assert sorted(everything["items"]) == sorted(set(KEYS) - set(HISTORIES[0]))


def test_top_k_beyond_what_an_approximate_index_finds_is_served_exactly(tokenizer, caplog):
    model = tiny_model("sasrec", seed=3)
    narrow = ItemIndex.build(model.get_output_embeddings().weight, NUM_SPECIAL_TOKENS, NARROW_IVF)
    recommender = Recommender(model, tokenizer, index=narrow)
    with caplog.at_level(logging.INFO, logger="hf_sasrec.recommender"):
        results = recommender(HISTORIES, top_k=20)
    assert "The ivf index found fewer than top_k=20 items for 3 of 3 users; served them exactly." in caplog.text
    assert_same_recommendations(results, Recommender(model, tokenizer)(HISTORIES, top_k=20))


@pytest.mark.parametrize("history", [[], ["1003"]])
def test_top_k_above_the_catalog_is_refused_even_for_an_empty_history(tokenizer, history):
    recommender = Recommender(tiny_model("sasrec", seed=3), tokenizer)
    with pytest.raises(ValueError, match=r"top_k must lie in \[1, 35\] \(the catalog has 35 items\), got 5000"):
        recommender(history, top_k=5000)
    assert len(recommender(history, top_k=NUM_ITEMS)["items"]) == NUM_ITEMS - len(history)


def test_bad_inputs_raise_clear_errors(tokenizer):
    recommender = Recommender(tiny_model("tisasrec", seed=0), tokenizer)
    with pytest.raises(TypeError, match="not a string"):
        recommender("1003 1010")
    with pytest.raises(TypeError, match="not a mix"):
        recommender(["1003", ["1010"]])
    with pytest.raises(ValueError, match="tisasrec needs timestamps"):
        recommender(["1003", "1010"])
    with pytest.raises(ValueError, match="one time per history item"):
        recommender(["1003", "1010"], timestamps=[5])
    with pytest.raises(ValueError, match="vocab_size"):
        Recommender(tiny_model("sasrec", vocab_size=VOCAB_SIZE + 1), tokenizer)
    other_weights = tiny_model("sasrec", seed=1).get_output_embeddings().weight
    with pytest.raises(StaleIndexError, match="other item embeddings"):
        Recommender(tiny_model("sasrec", seed=2), tokenizer, index=ItemIndex.build(other_weights, NUM_SPECIAL_TOKENS))


@pytest.fixture
def run_folder(tokenizer, tmp_path):
    """A processed-data folder (as `data_preprocess` writes it) and a run folder of a tiny `tisasrec` on it."""
    data_dir, run_dir = tmp_path / "data", tmp_path / "run"
    generator = torch.Generator().manual_seed(0)
    rows = {"user_id": [], "item_ids": [], "timestamps": []}
    for user in range(30):
        length = int(torch.randint(2, 9, (1,), generator=generator))
        rows["user_id"].append(f"u{user}")
        rows["item_ids"].append(
            torch.randperm(VOCAB_SIZE - NUM_SPECIAL_TOKENS, generator=generator)[:length].add(5).tolist()
        )
        rows["timestamps"].append(torch.randint(0, 50, (length,), generator=generator).cumsum(0).tolist())
    split = Dataset.from_dict(rows)
    DatasetDict({"train": split, "valid": split, "test": split}).save_to_disk(str(data_dir))
    save_item_tokenizer(tokenizer, data_dir / "tokenizer")
    model = tiny_model("tisasrec", seed=9)
    model.save_pretrained(run_dir)
    save_item_tokenizer(tokenizer, run_dir)
    (run_dir / "run_info.json").write_text(
        json.dumps({"data_dir": str(data_dir), "model_type": "tisasrec", "max_length": 16})
    )
    return model, split, run_dir


def read_jsonl(path):
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_infer_cli_recommends_for_every_user_of_the_split(run_folder, tokenizer, tmp_path):
    model, split, run_dir = run_folder
    summary = infer.main(["--model", str(run_dir), "--output", str(tmp_path / "out"), "--batch-size", "7"])
    records = read_jsonl(tmp_path / "out" / "recommendations.jsonl")
    assert summary["users"] == len(records) == len(split) and summary["index_type"] == "flat"
    assert (run_dir / INDEX_METADATA_FILE).is_file()  # saved beside the checkpoint
    histories = [decode_items(tokenizer, ids) for ids in split["item_ids"]]
    expected = Recommender(model, tokenizer)(histories, top_k=10, timestamps=split["timestamps"])
    assert [record["user_id"] for record in records] == split["user_id"]
    assert [record["items"] for record in records] == [result["items"] for result in expected]
    with open(tmp_path / "out" / "recommendations.csv") as table:
        rows = list(csv.DictReader(table))
    assert len(rows) == 10 * len(split)
    assert rows[0]["user_id"] == "u0" and rows[0]["item"] == records[0]["items"][0]
    assert float(rows[0]["score"]) == pytest.approx(records[0]["scores"][0])


def test_infer_outputs_of_different_models_never_share_a_folder(run_folder, tmp_path, monkeypatch):
    _, _, run_dir = run_folder
    monkeypatch.chdir(tmp_path)
    for stage in ("sft", "dpo"):
        shutil.copytree(run_dir, tmp_path / "outputs" / stage / "default")
    for model in ("outputs/sft/default", "outputs/dpo/default", str(run_dir)):
        infer.main(["--model", model, "--no-save-index"])
    for stage in ("sft", "dpo"):
        summary = json.loads((tmp_path / "outputs" / "infer" / stage / "default" / "summary.json").read_text())
        assert summary["model"] == f"outputs/{stage}/default"
    (elsewhere,) = (tmp_path / "outputs" / "infer").glob("run-*/summary.json")
    assert json.loads(elsewhere.read_text())["model"] == str(run_dir)


def test_infer_cli_holdout_hit_rate_matches_the_evaluation(run_folder, tmp_path):
    model, split, run_dir = run_folder
    summary = infer.main(["--model", str(run_dir), "--holdout-last", "--output", str(tmp_path / "out")])
    metrics = evaluate_next_item(model, split, k_values=(10,))
    assert summary["hr@10"] == pytest.approx(metrics["full/hr@10"])


def test_infer_cli_spreads_the_lists_and_reports_coverage(run_folder, tmp_path):
    _, split, run_dir = run_folder
    options = ["--model", str(run_dir), "--no-save-index", "--top-k", "3"]
    plain = infer.main([*options, "--output", str(tmp_path / "plain")])
    spread = infer.main([*options, "--output", str(tmp_path / "spread"), "--exposure-weight", "100"])
    for summary, folder in ((plain, "plain"), (spread, "spread")):
        records = read_jsonl(tmp_path / folder / "recommendations.jsonl")
        distinct = {item for record in records for item in record["items"]}
        assert summary["coverage"] == pytest.approx(len(distinct) / NUM_ITEMS)
        assert len(records) == len(split) and all(len(record["items"]) == 3 for record in records)
    # 30 users x 3 items can show all 35 items; the model alone leaves some out
    assert plain["coverage"] < 1.0 == spread["coverage"] and spread["exposure_weight"] == 100.0
    with pytest.raises(SystemExit):
        infer.main([*options, "--exposure-weight", "1", "--exposure-candidates", "2"])
    assert infer.parse_args(["--top-k", "200"]).top_k == 200  # the candidates bound only --exposure-weight


def test_infer_cli_reads_a_history_file(run_folder, tmp_path):
    _, _, run_dir = run_folder
    history_file = tmp_path / "histories.jsonl"
    lines = [
        {"user_id": "new", "items": ["1003", "not an item", "movie 7"], "timestamps": [5, 6, 9]},
        {"items": [], "timestamps": []},
    ]
    history_file.write_text("\n".join(json.dumps(line) for line in lines) + "\n")
    output = tmp_path / "out"
    summary = infer.main(
        [
            "--model",
            str(run_dir),
            "--history-file",
            str(history_file),
            "--top-k",
            "3",
            "--output",
            str(output),
            "--no-save-index",
        ]
    )
    assert summary["unknown_items"] == 1 and summary["popularity_fallbacks"] == 1
    assert not (run_dir / INDEX_METADATA_FILE).exists()
    new, empty = read_jsonl(output / "recommendations.jsonl")
    assert new["unknown_items"] == ["not an item"] and len(new["items"]) == 3
    assert empty["user_id"] == "2" and empty["fallback"] == POPULARITY_FALLBACK and empty["items"] == KEYS[:3]
    history_file.write_text('{"user_id": "x", "items": ["1003"], "timestamps": [1]}\n{"items": 3}\n')
    with pytest.raises(ValueError, match=r"histories.jsonl:2 needs an \"items\" list"):
        infer.main(["--model", str(run_dir), "--history-file", str(history_file), "--output", str(output)])
