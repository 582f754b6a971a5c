"""Faiss retrieval reproduces the model's own top-K, excludes what it must, and is never used stale or unchecked."""

import json
import logging
from dataclasses import replace

import faiss
import numpy as np
import pytest
import torch
from model_helpers import VOCAB_SIZE, left_pad, random_items, tiny_model

from hf_sasrec import last_real_states, retrieval
from hf_sasrec.retrieval import (
    INDEX_FILE,
    INDEX_METADATA_FILE,
    ItemIndex,
    RetrievalConfig,
    StaleIndexError,
    default_tuning_queries,
    index_exists,
    item_rows,
    load_or_build_item_index,
)

NUM_SPECIAL = 5
ONE_CELL = RetrievalConfig(index_type="ivf", ivf_nlist=1)
"""An approximate index type that still visits every item (a single IVF cell): its top-K is exact."""


def users_and_logits(model, input_ids):
    """User states `[batch, hidden]` from the encoder and next-item logits `[batch, vocab]` from the head."""
    with torch.no_grad():
        states = last_real_states(model.model(input_ids=input_ids).last_hidden_state, input_ids.ne(0))
        logits = model(input_ids=input_ids, logits_to_keep=1).logits[:, -1]
    return states, logits


def reference_top_k(logits, k, exclude=None):
    """Top-k token ids of the logits with special tokens (and each row's `exclude`) masked out."""
    logits = logits.clone()
    logits[:, :NUM_SPECIAL] = -torch.inf
    for row, ids in enumerate(exclude or []):
        logits[row, list(ids)] = -torch.inf
    return logits.topk(k)


@pytest.fixture
def model_and_batch():
    model = tiny_model("sasrec", seed=3)
    input_ids = left_pad(random_items(6, 7, seed=1), 3)
    input_ids[0, :8] = 0  # a two-item history
    return model, input_ids


def recall_at_k(found: np.ndarray, exact: np.ndarray) -> float:
    return float(np.mean([len(set(a) & set(b)) / len(b) for a, b in zip(found, exact, strict=True)]))


def test_exact_index_reproduces_the_model_top_k_and_scores(model_and_batch):
    model, input_ids = model_and_batch
    states, logits = users_and_logits(model, input_ids)
    index = ItemIndex.build(model.get_output_embeddings().weight, NUM_SPECIAL)
    assert index.num_items == VOCAB_SIZE - NUM_SPECIAL
    scores, ids = index.search(states, k=10)
    expected = reference_top_k(logits, 10)
    np.testing.assert_array_equal(ids, expected.indices.numpy())
    torch.testing.assert_close(torch.from_numpy(scores), expected.values, atol=1e-5, rtol=1e-5)


def test_history_exclusion_matches_masked_logits(model_and_batch):
    model, input_ids = model_and_batch
    states, logits = users_and_logits(model, input_ids)
    exclude = [set(row[row > 0].tolist()) for row in input_ids]
    index = ItemIndex.build(model.get_output_embeddings().weight, NUM_SPECIAL)
    scores, ids = index.search(states, k=8, exclude=exclude)
    for row, excluded in enumerate(exclude):
        assert not excluded & set(ids[row].tolist())
    expected = reference_top_k(logits, 8, exclude)
    np.testing.assert_array_equal(ids, expected.indices.numpy())
    torch.testing.assert_close(torch.from_numpy(scores), expected.values, atol=1e-5, rtol=1e-5)


def test_rows_that_run_out_of_items_end_with_minus_one():
    embeddings = torch.randn(12, 4, generator=torch.Generator().manual_seed(0))
    index = ItemIndex.build(embeddings, NUM_SPECIAL)
    everything_but_two = set(range(NUM_SPECIAL, 10))
    scores, ids = index.search(torch.randn(1, 4), k=5, exclude=[everything_but_two])
    assert sorted(ids[0, :2].tolist()) == [10, 11]
    assert ids[0, 2:].tolist() == [-1, -1, -1]
    assert np.isneginf(scores[0, 2:]).all() and np.isfinite(scores[0, :2]).all()


@pytest.mark.parametrize("index_type", ["hnsw", "ivf"])
def test_approximate_indexes_recall_the_exact_top_10(index_type):
    generator = torch.Generator().manual_seed(0)
    embeddings = torch.randn(2000 + NUM_SPECIAL, 32, generator=generator)
    users = torch.randn(300, 32, generator=generator)
    _, exact = ItemIndex.build(embeddings, NUM_SPECIAL).search(users, 10)
    approximate = ItemIndex.build(embeddings, NUM_SPECIAL, RetrievalConfig(index_type=index_type))
    assert approximate.num_items == 2000
    _, found = approximate.search(users, 10)
    assert found.min() >= NUM_SPECIAL
    assert recall_at_k(found, exact) >= 0.95


def test_saved_index_reloads_with_the_same_results(model_and_batch, tmp_path):
    model, input_ids = model_and_batch
    states, _ = users_and_logits(model, input_ids)
    weights = model.get_output_embeddings().weight
    index = ItemIndex.build(weights, NUM_SPECIAL, RetrievalConfig(index_type="hnsw", hnsw_m=8))
    index.save(tmp_path)
    assert index_exists(tmp_path)
    reloaded = ItemIndex.load(tmp_path, weights, NUM_SPECIAL)
    assert reloaded.config == index.config
    for got, expected in zip(reloaded.search(states, 5), index.search(states, 5), strict=True):
        np.testing.assert_array_equal(got, expected)


def test_stale_index_is_detected_and_rebuilt(model_and_batch, tmp_path, caplog):
    model, input_ids = model_and_batch
    weights = model.get_output_embeddings().weight
    load_or_build_item_index(tmp_path, weights, NUM_SPECIAL, ONE_CELL)
    with torch.no_grad():
        weights[7] += 0.5  # a "fine-tuned" model: one item moved
    with pytest.raises(StaleIndexError, match="other item embeddings"):
        ItemIndex.load(tmp_path, weights, NUM_SPECIAL)
    with caplog.at_level(logging.WARNING, logger="hf_sasrec.retrieval"):
        rebuilt = load_or_build_item_index(tmp_path, weights, NUM_SPECIAL, ONE_CELL)
    assert "Rebuilding" in caplog.text
    states, logits = users_and_logits(model, input_ids)
    np.testing.assert_array_equal(rebuilt.search(states, 10)[1], reference_top_k(logits, 10).indices.numpy())
    assert ItemIndex.load(tmp_path, weights, NUM_SPECIAL).fingerprint == rebuilt.fingerprint


def test_a_saved_index_of_another_type_is_replaced_when_another_config_is_asked(model_and_batch, tmp_path):
    weights = model_and_batch[0].get_output_embeddings().weight
    load_or_build_item_index(tmp_path, weights, NUM_SPECIAL)
    hnsw = load_or_build_item_index(tmp_path, weights, NUM_SPECIAL, RetrievalConfig(index_type="hnsw"))
    assert hnsw.config.index_type == "hnsw"
    assert ItemIndex.load(tmp_path, weights, NUM_SPECIAL).config.index_type == "hnsw"


def test_a_saved_approximate_index_is_used_only_when_asked_for(model_and_batch, tmp_path, monkeypatch):
    weights = model_and_batch[0].get_output_embeddings().weight
    hnsw = RetrievalConfig(index_type="hnsw", hnsw_m=8)
    load_or_build_item_index(tmp_path, weights, NUM_SPECIAL, hnsw)
    saved = (tmp_path / INDEX_METADATA_FILE).read_text()
    assert load_or_build_item_index(tmp_path, weights, NUM_SPECIAL, save=False).config.index_type == "flat"
    assert (tmp_path / INDEX_METADATA_FILE).read_text() == saved
    monkeypatch.setattr(ItemIndex, "build", None)  # a reused index is read, not built
    assert load_or_build_item_index(tmp_path, weights, NUM_SPECIAL, hnsw).config == hnsw


def another_index_in_its_place(directory, weights):
    """Only the index file replaced, by one of 10 items: a 10-item index in a 35-item folder."""
    other = ItemIndex.build(torch.randn(10 + NUM_SPECIAL, weights.shape[1]), NUM_SPECIAL, ONE_CELL)
    other.save(directory / "other")
    (directory / INDEX_FILE).write_bytes((directory / "other" / INDEX_FILE).read_bytes())
    return "replaced or cut short"


def another_index_with_a_metadata_that_agrees(directory, weights):
    """The index file replaced by one of 10 items and the recorded size and hash rewritten to match it."""
    another_index_in_its_place(directory, weights)
    metadata = json.loads((directory / INDEX_METADATA_FILE).read_text())
    metadata["index_file"] = json.loads((directory / "other" / INDEX_METADATA_FILE).read_text())["index_file"]
    (directory / INDEX_METADATA_FILE).write_text(json.dumps(metadata))
    return "holds 10 vectors of size 17; the model has 35 items of size 16 (plus the norm coordinate)"


def a_save_cut_before_its_metadata(directory, weights):
    """A save of another index over the same weights, killed between the index file and its metadata."""
    metadata = (directory / INDEX_METADATA_FILE).read_text()
    ItemIndex.build(weights, NUM_SPECIAL, RetrievalConfig(index_type="ivf", ivf_nlist=3)).save(directory)
    (directory / INDEX_METADATA_FILE).write_text(metadata)
    return "replaced or cut short"


def a_truncated_file(directory, weights):
    data = (directory / INDEX_FILE).read_bytes()
    (directory / INDEX_FILE).write_bytes(data[: len(data) // 2])
    return "replaced or cut short"


def a_metadata_without_the_file_hash(directory, weights):
    """`item_index.json` as versions without the index file's hash wrote it."""
    metadata = json.loads((directory / INDEX_METADATA_FILE).read_text())
    del metadata["index_file"]
    (directory / INDEX_METADATA_FILE).write_text(json.dumps(metadata))
    return "lacks ['index_file']"


def a_metadata_that_is_not_json(directory, weights):
    (directory / INDEX_METADATA_FILE).write_text('{"config": ')
    return "is not valid JSON"


@pytest.mark.parametrize(
    "damage",
    [
        another_index_in_its_place,
        another_index_with_a_metadata_that_agrees,
        a_save_cut_before_its_metadata,
        a_truncated_file,
        a_metadata_without_the_file_hash,
        a_metadata_that_is_not_json,
    ],
)
def test_a_changed_or_unreadable_index_is_rebuilt_from_the_weights_and_saved_again(
    damage, model_and_batch, tmp_path, caplog
):
    model, input_ids = model_and_batch
    weights = model.get_output_embeddings().weight
    load_or_build_item_index(tmp_path, weights, NUM_SPECIAL, ONE_CELL)
    reason = damage(tmp_path, weights)
    with caplog.at_level(logging.WARNING, logger="hf_sasrec.retrieval"):
        rebuilt = load_or_build_item_index(tmp_path, weights, NUM_SPECIAL, ONE_CELL)
    assert reason in caplog.text and "Rebuilding the ivf index from the model's weights" in caplog.text
    states, logits = users_and_logits(model, input_ids)
    np.testing.assert_array_equal(rebuilt.search(states, 10)[1], reference_top_k(logits, 10).indices.numpy())
    reloaded = ItemIndex.load(tmp_path, weights, NUM_SPECIAL, ONE_CELL)  # saved again, and whole
    assert reloaded.num_items == VOCAB_SIZE - NUM_SPECIAL and reloaded.fingerprint == rebuilt.fingerprint


def test_faiss_never_reads_an_index_file_whose_hash_does_not_match(model_and_batch, tmp_path, monkeypatch):
    weights = model_and_batch[0].get_output_embeddings().weight
    load_or_build_item_index(tmp_path, weights, NUM_SPECIAL, ONE_CELL)
    (tmp_path / INDEX_FILE).write_bytes(b"crafted bytes from a downloaded folder")

    def parse(*args):
        raise AssertionError("Faiss parsed an index file that was not checked")

    monkeypatch.setattr(retrieval.faiss, "read_index", parse)
    monkeypatch.setattr(retrieval.faiss, "deserialize_index", parse)
    with pytest.raises(RuntimeError, match=r"item_index.faiss \(38 bytes\) is not the file item_index.json records"):
        ItemIndex.load(tmp_path, weights, NUM_SPECIAL)


def test_bad_arguments_raise_clear_errors(model_and_batch):
    weights = model_and_batch[0].get_output_embeddings().weight
    with pytest.raises(ValueError, match="index_type"):
        RetrievalConfig(index_type="annoy")
    with pytest.raises(ValueError, match="hnsw_m"):
        RetrievalConfig(hnsw_m=0)
    index = ItemIndex.build(weights, NUM_SPECIAL)
    with pytest.raises(ValueError, match="k must lie"):
        index.search(torch.zeros(1, weights.shape[1]), k=VOCAB_SIZE)
    with pytest.raises(ValueError, match="exclude has 2 rows"):
        index.search(torch.zeros(1, weights.shape[1]), k=3, exclude=[[], []])


def clustered_items(num_items: int, dim: int = 16, clusters: int = 40, seed: int = 0) -> torch.Tensor:
    """Item vectors around `clusters` centres, with the special tokens' rows first."""
    generator = torch.Generator().manual_seed(seed)
    centres = torch.randn(clusters, dim, generator=generator)
    assignment = torch.randint(0, clusters, (num_items + NUM_SPECIAL,), generator=generator)
    return centres[assignment] + 0.3 * torch.randn(num_items + NUM_SPECIAL, dim, generator=generator)


@pytest.mark.parametrize("target", [0.8, 0.95])
def test_the_auto_index_reaches_its_recall_target_on_held_out_queries(target, tmp_path):
    embeddings = clustered_items(6000)
    config = RetrievalConfig(index_type="auto", target_recall=target, exact_max_items=1000)
    index = ItemIndex.build(embeddings, NUM_SPECIAL, config)
    assert index.config.index_type == "ivf" and index.tuned_recall >= target
    pairs = torch.randint(NUM_SPECIAL, 6005, (400, 2), generator=torch.Generator().manual_seed(9))
    held_out = embeddings[pairs[:, 0]] + embeddings[pairs[:, 1]]  # not the tuning queries
    _, exact = ItemIndex.build(embeddings, NUM_SPECIAL).search(held_out, 10)
    _, found = index.search(held_out, 10)
    assert recall_at_k(found, exact) >= target - 0.03
    # The fewest cells that reach the target: one cell fewer misses it on the tuning queries.
    queries = default_tuning_queries(item_rows(embeddings, NUM_SPECIAL))
    _, truth = ItemIndex.build(embeddings, NUM_SPECIAL).search(torch.from_numpy(queries), 10)
    fewer = replace(index.config, ivf_nprobe=index.config.ivf_nprobe - 1)
    if fewer.ivf_nprobe:
        _, found = ItemIndex(index.index, fewer, NUM_SPECIAL, index.fingerprint).search(torch.from_numpy(queries), 10)
        assert recall_at_k(found, truth) < target
    # Fewer cells visited for the lower target; the exact index below the size threshold.
    if target == 0.8:
        stricter = ItemIndex.build(embeddings, NUM_SPECIAL, RetrievalConfig(index_type="auto", exact_max_items=1000))
        assert index.config.ivf_nprobe < stricter.config.ivf_nprobe
    small = ItemIndex.build(embeddings[:505], NUM_SPECIAL, config)
    assert small.config.index_type == "flat" and small.tuned_recall == pytest.approx(1.0)
    # Saved and asked for again, the tuned index is reused as it is.
    index.save(tmp_path)
    loaded = ItemIndex.load(tmp_path, embeddings, NUM_SPECIAL, config)
    assert loaded.config == index.config and loaded.tuned_recall == index.tuned_recall
    with pytest.raises(ValueError, match=r"target_recall must lie in \(0, 1\], got 1.5"):
        RetrievalConfig(index_type="auto", target_recall=1.5)


def test_ivf_keeps_long_item_vectors_reachable_and_scores_exact(tmp_path, caplog):
    """A trained table: most items short, a few popular ones long. With every vector widened to one norm, IVF visits
    the cells that hold the long ones; a plain inner-product IVF over as many cells misses most of them."""
    generator = torch.Generator().manual_seed(4)
    embeddings = 0.2 * torch.randn(4000 + NUM_SPECIAL, 16, generator=generator)
    embeddings[NUM_SPECIAL : NUM_SPECIAL + 40] *= 25  # 40 long vectors, norms ~20 against ~0.8
    queries = torch.randn(300, 16, generator=generator)
    config = RetrievalConfig(index_type="ivf", ivf_nlist=64, ivf_nprobe=8)
    _, exact = ItemIndex.build(embeddings, NUM_SPECIAL).search(queries, 10)
    index = ItemIndex.build(embeddings, NUM_SPECIAL, config)
    scores, found = index.search(queries, 10)
    widened_recall = recall_at_k(found, exact)
    rows = item_rows(embeddings, NUM_SPECIAL)
    plain = faiss.IndexIVFFlat(faiss.IndexFlatIP(16), 16, 64, faiss.METRIC_INNER_PRODUCT)
    plain.train(rows)
    plain.add(rows)
    _, plain_rows = plain.search(queries.numpy(), 10, params=faiss.SearchParametersIVF(nprobe=8))
    plain_recall = recall_at_k(np.where(plain_rows >= 0, plain_rows + NUM_SPECIAL, -1), exact)
    assert widened_recall >= 0.8 and plain_recall <= 0.6 and widened_recall >= 1.5 * plain_recall
    # The scores are the inner products of the items found, not distances in the widened space.
    returned = found >= 0
    expected = (queries[:, None, :] * embeddings[torch.from_numpy(np.where(returned, found, 0))]).sum(-1).numpy()
    np.testing.assert_allclose(scores[returned], expected[returned], rtol=1e-5, atol=1e-5)
    # Saved and loaded, the index keeps its bound; an added item longer than it is still found, with a warning.
    index.save(tmp_path)
    loaded = ItemIndex.load(tmp_path, embeddings, NUM_SPECIAL, config)
    assert loaded.norm_bound == pytest.approx(index.norm_bound)
    assert np.array_equal(loaded.search(queries, 10)[1], found)
    grown = torch.cat([embeddings, 2 * index.norm_bound * queries[:1] / queries[0].norm()])
    with caplog.at_level(logging.WARNING):
        loaded.add_items(grown)
    assert "1 of 1 new items are longer than the index's norm bound" in caplog.text
    scores, ids = loaded.search(queries[:1], 1)
    assert ids[0, 0] == len(grown) - 1 and scores[0, 0] == pytest.approx(2 * index.norm_bound * queries[0].norm())
