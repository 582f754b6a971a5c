"""Semantic ids: the RQ-VAE model (k-means initialisation, dead-code restarts, straight-through training), the
de-duplication level and its statistics, and `python -m hf_sasrec.semantic_ids` (issue 13, point 3)."""

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch
from model_helpers import HIDE_HF_SASREC, tiny_model
from safetensors.torch import load_file
from transformers import AutoConfig, AutoModel, TrainingArguments

from data_preprocess.item_tokenizer import NUM_SPECIAL_TOKENS, build_item_tokenizer, save_item_tokenizer
from hf_sasrec.modeling_rqvae import RQVAEModel, kmeans
from hf_sasrec.semantic_ids import (
    collision_statistics,
    deduplicate,
    encode_items,
    level_statistics,
    main,
    read_item_ids,
    reconstruction_error,
    train_rqvae,
)

ROOT = Path(__file__).resolve().parents[1]
TINY = ["--num-levels", "2", "--codebook-size", "8", "--latent-size", "4", "--hidden-sizes", "16", "--epochs", "2"]


def clustered(num_clusters: int = 6, per_cluster: int = 40, dim: int = 12, noise: float = 0.05, seed: int = 0):
    """Well-separated clusters: `[num_clusters * per_cluster, dim]` float32 points and their cluster labels."""
    generator = torch.Generator().manual_seed(seed)
    centers = torch.randn(num_clusters, dim, generator=generator) * 4
    labels = torch.arange(num_clusters).repeat_interleave(per_cluster)
    return centers[labels] + noise * torch.randn(len(labels), dim, generator=generator), labels


def rqvae(**overrides) -> RQVAEModel:
    fields = {"input_size": 12, "hidden_sizes": [32], "latent_size": 6, "num_levels": 2, "codebook_size": 8}
    torch.manual_seed(0)
    return AutoModel.from_config(AutoConfig.for_model("rqvae", **{**fields, **overrides}))


def test_kmeans_finds_well_separated_centers():
    points, labels = clustered(num_clusters=4, noise=0.1)
    centroids = kmeans(points, 4, num_iterations=10, generator=torch.Generator().manual_seed(1))
    true_centers = torch.stack([points[labels == label].mean(0) for label in range(4)])
    nearest = torch.cdist(true_centers, centroids).argmin(-1)
    assert sorted(nearest.tolist()) == [0, 1, 2, 3]
    torch.testing.assert_close(centroids[nearest], true_centers, atol=1e-4, rtol=0)


def test_kmeans_initialisation_spreads_the_first_level_over_the_clusters():
    points, labels = clustered()
    model = rqvae()
    model.initialize_codebooks(points, generator=torch.Generator().manual_seed(0))
    assert all(bool(codebook.initialized) for codebook in model.quantizer.codebooks)
    first_level = model.get_codes(points)[:, 0]
    assert len(first_level.unique()) >= 5  # 6 clusters, 8 codes: k-means from random points finds most of them
    # No first-level code holds two clusters (8 codes for 6 clusters: k-means may split one).
    assert all(len(labels[first_level == code].unique()) == 1 for code in first_level.unique())


def test_the_first_training_batch_initialises_uninitialised_codebooks():
    points, _ = clustered()
    model = rqvae().train()
    before = model.quantizer.codebooks[0].weight.detach().clone()
    codes = model(points).codes
    assert bool(model.quantizer.codebooks[0].initialized) and not torch.equal(
        before, model.quantizer.codebooks[0].weight
    )
    assert len(codes[:, 0].unique()) > 1


def test_training_with_trainer_reconstructs_clustered_embeddings(tmp_path):
    points, labels = clustered()
    config = AutoConfig.for_model(
        "rqvae", input_size=12, hidden_sizes=[32], latent_size=6, num_levels=2, codebook_size=8, dead_code_steps=20
    )
    args = TrainingArguments(
        output_dir=str(tmp_path),
        per_device_train_batch_size=64,
        num_train_epochs=100,
        learning_rate=3e-3,
        save_strategy="no",
        report_to="none",
        disable_tqdm=True,
        use_cpu=True,
        seed=0,
    )
    untrained = rqvae(dead_code_steps=20)
    untrained.initialize_codebooks(points, generator=torch.Generator().manual_seed(0))
    model, training = train_rqvae(points, config, args)
    assert training.global_step == 400
    trained_error = reconstruction_error(model, points)
    assert trained_error["unexplained_variance"] < 0.02
    assert trained_error["reconstruction_mse"] < 0.02 * reconstruction_error(untrained, points)["reconstruction_mse"]
    first_level = model.get_codes(points)[:, 0]
    # The clusters keep distinct first-level codes.
    assert len({int(first_level[labels == label].mode().values) for label in range(6)}) == 6


def test_a_code_unused_for_dead_code_steps_restarts_at_a_residual():
    points, _ = clustered()
    model = rqvae(dead_code_steps=3).train()
    model.initialize_codebooks(points)
    codebook = model.quantizer.codebooks[0]
    with torch.no_grad():
        codebook.weight[7] = 1e4  # no residual is near it: never chosen
    for _ in range(2):
        model(points)
    assert codebook.weight[7].min() == 1e4 and int(codebook.restarts) == 0
    model(points)
    assert int(codebook.restarts) >= 1 and int(codebook.steps_since_used[7]) == 0
    latent = model.encoder(points).detach()
    # The restarted code is one of this batch's first-level residuals (the latent vectors).
    restarted = codebook.weight[7].detach()
    torch.testing.assert_close(restarted, latent[(latent - restarted).norm(dim=-1).argmin()])


def test_dead_code_steps_zero_never_restarts():
    points, _ = clustered()
    model = rqvae(dead_code_steps=0).train()
    model.initialize_codebooks(points)
    with torch.no_grad():
        model.quantizer.codebooks[0].weight[7] = 1e4
    for _ in range(5):
        model(points)
    assert model.quantizer.codebooks[0].weight[7].min() == 1e4
    assert int(model.quantizer.codebooks[0].steps_since_used[7]) == 5


def test_the_loss_is_reconstruction_plus_codebook_plus_weighted_commitment():
    points, _ = clustered()
    model = rqvae(commitment_weight=0.5)
    model.initialize_codebooks(points)
    output = model.eval()(points)
    assert output.codes.shape == (len(points), 2) and output.reconstruction.shape == points.shape
    expected = output.reconstruction_loss + output.codebook_loss + 0.5 * output.commitment_loss
    torch.testing.assert_close(output.loss, expected)
    # Squared distances summed over the vector and averaged over items: the loss does not shrink with the width.
    per_item = ((output.reconstruction - points) ** 2).sum(1)
    torch.testing.assert_close(output.reconstruction_loss, per_item.mean())
    latent = model.encoder(points)
    first_level = model.quantizer.codebooks[0].weight[output.codes[:, 0]]
    assert output.commitment_loss >= ((latent - first_level) ** 2).sum(1).mean() - 1e-6  # level 1 alone, at least
    # Straight-through: the reconstruction loss reaches the encoder, the codebooks learn only from the codebook loss.
    output.reconstruction_loss.backward()
    assert model.encoder.layers[0].weight.grad.abs().sum() > 0
    assert all(codebook.weight.grad is None for codebook in model.quantizer.codebooks)


def test_decode_codes_is_the_forward_reconstruction():
    points, _ = clustered()
    model = rqvae()
    model.initialize_codebooks(points)
    output = model.eval()(points)
    torch.testing.assert_close(model.decode_codes(output.codes), output.reconstruction)


def test_deduplication_makes_every_full_code_unique():
    codes = np.array([[1, 2], [1, 2], [3, 4], [1, 2], [3, 4], [5, 6]])
    ranks = deduplicate(codes)
    assert ranks.tolist() == [0, 1, 0, 2, 1, 0]
    full = np.concatenate([codes, ranks[:, None]], axis=1)
    assert len(np.unique(full, axis=0)) == len(codes)
    statistics = collision_statistics(codes)
    assert statistics["distinct_codes"] == 3 and statistics["collision_rate"] == pytest.approx(0.5)
    assert statistics["items_sharing_a_code"] == 5 and statistics["largest_collision"] == 3
    assert collision_statistics(np.array([[0, 1], [1, 0]]))["collision_rate"] == pytest.approx(0.0)


def test_level_usage_and_perplexity():
    codes = np.array([[0, 5], [1, 5], [2, 5], [3, 5]])
    first, second = level_statistics(codes, codebook_size=8)
    assert first["codes_used"] == 4 and first["usage"] == pytest.approx(0.5)
    assert first["perplexity"] == pytest.approx(4.0)  # uniform over 4 codes
    assert second["codes_used"] == 1 and second["perplexity"] == pytest.approx(1.0)


LOAD_WITHOUT_HF_SASREC = HIDE_HF_SASREC + textwrap.dedent(
    """
    import torch
    from transformers import AutoModel
    model = AutoModel.from_pretrained(sys.argv[1], trust_remote_code=True)
    points = torch.load(sys.argv[2])
    print(json.dumps({"class": type(model).__name__, "codes": model.get_codes(points).tolist()}))
    """
)


def test_save_and_load_round_trip_through_automodel(tmp_path):
    points, _ = clustered()
    model = rqvae(dead_code_steps=2).train()
    model.initialize_codebooks(points)
    for _ in range(3):
        model(points[:100])  # some codes go unused: restarts and usage counters to keep
    model.save_pretrained(tmp_path / "rqvae")
    assert json.loads((tmp_path / "rqvae" / "config.json").read_text())["auto_map"]["AutoModel"].endswith("RQVAEModel")
    loaded = AutoModel.from_pretrained(tmp_path / "rqvae")
    assert isinstance(loaded, RQVAEModel)
    for original, restored in zip(model.quantizer.codebooks, loaded.quantizer.codebooks, strict=True):
        torch.testing.assert_close(restored.weight, original.weight)
        assert torch.equal(restored.steps_since_used, original.steps_since_used)
        assert bool(restored.initialized) and int(restored.restarts) == int(original.restarts)
    codes = model.get_codes(points)
    assert torch.equal(loaded.get_codes(points), codes)
    # The saved code loads without hf_sasrec (trust_remote_code).
    torch.save(points, tmp_path / "points.pt")
    result = subprocess.run(
        [sys.executable, "-c", LOAD_WITHOUT_HF_SASREC, str(tmp_path / "rqvae"), str(tmp_path / "points.pt")],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        env={**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"},
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    remote = json.loads(result.stdout.strip().splitlines()[-1])
    assert remote["class"] == "RQVAEModel" and remote["codes"] == codes.tolist()


def write_items(folder: Path, num_items: int = 60, dim: int = 12) -> tuple[Path, list[str]]:
    """A processed-data tokenizer of `num_items` items (`folder/tokenizer`); returns the folder and the item keys."""
    keys = [f"item{index}" for index in range(num_items)]
    save_item_tokenizer(build_item_tokenizer(keys), folder / "tokenizer")
    return folder, keys


def test_item_id_lists_take_the_formats_of_the_data_steps_embedding_tables(tmp_path):
    (tmp_path / "list.json").write_text(json.dumps(["a", None, 7, 12.0]))
    (tmp_path / "id2item.json").write_text(json.dumps({"0": "a", "2": "b"}))
    (tmp_path / "ids.txt").write_text("a\n b \n")
    assert read_item_ids(tmp_path / "list.json") == ["a", None, "7", "12"]
    assert read_item_ids(tmp_path / "id2item.json") == ["a", None, "b"]
    assert read_item_ids(tmp_path / "ids.txt") == ["a", "b"]
    (tmp_path / "gap.txt").write_text("a\n\nb\n")
    with pytest.raises(ValueError, match=r"gap\.txt, line 2: an empty item id"):
        read_item_ids(tmp_path / "gap.txt")


def test_cli_codes_a_table_keyed_by_item_ids(tmp_path):
    data, keys = write_items(tmp_path / "data")
    points, _ = clustered(num_clusters=5, per_cluster=12)
    # Rows in another order than the tokenizer's, an unknown id, a row of no item; the last two items absent.
    listed = [*keys[:58][::-1], "not-an-item", None]
    table = np.concatenate([points[:58].numpy(), np.ones((2, 12), np.float32)])
    np.save(tmp_path / "items.npy", table)
    (tmp_path / "ids.json").write_text(json.dumps(listed))
    output = tmp_path / "codes"
    arguments = ["--embeddings", str(tmp_path / "items.npy"), "--item-ids", str(tmp_path / "ids.json")]
    report = main([*arguments, "--data", str(data), "--output", str(output), *TINY])

    codes = load_file(output / "codes.safetensors")["codes"]
    vocab_size = NUM_SPECIAL_TOKENS + len(keys)
    assert codes.shape == (vocab_size, 3) and codes.dtype == torch.int64
    assert (codes[:NUM_SPECIAL_TOKENS] == -1).all() and (codes[-2:] == -1).all()
    present = codes[NUM_SPECIAL_TOKENS:-2]
    assert (present >= 0).all() and len(present.unique(dim=0)) == 58  # de-duplicated: every full code unique
    # Row order: token id t holds the codes of item key t - 5, which is row 57 - (t - 5) of the table.
    model = AutoModel.from_pretrained(output)
    expected = model.get_codes(torch.from_numpy(table[:58][::-1].copy()))
    assert torch.equal(present[:, :2], expected)
    # A new item's codes come from the saved RQ-VAE alone, as the training codes did.
    assert torch.equal(torch.from_numpy(encode_items(output, table[:58][::-1].copy())), expected)
    with pytest.raises(ValueError, match="its RQ-VAE reads vectors of 12 values, got 3"):
        encode_items(output, np.ones((2, 3)))

    described = json.loads((output / "codes.json").read_text())
    assert described["codes"] == codes.tolist() and described["num_levels"] == 2 and described["missing_code"] == -1
    assert described["level_sizes"] == [8, 8, report["max_dedup_index"] + 1]
    assert described["vocab_size"] == vocab_size and described["vocabulary_fingerprint"]
    saved = json.loads((output / "report.json").read_text())
    assert saved == json.loads(json.dumps(report))
    assert report["items"] == 58 and report["items_without_embedding"] == 2 and report["unknown_item_ids_dropped"] == 1
    assert report["max_dedup_index"] == int(present[:, 2].max())
    assert report["collision_rate"] == pytest.approx(1 - len(present[:, :2].unique(dim=0)) / 58)
    assert [level["level"] for level in report["levels"]] == [0, 1]
    assert all(1 <= level["codes_used"] <= 8 and level["perplexity"] >= 1 for level in report["levels"])
    assert report["reconstruction_mse"] > 0 and report["training_steps"] == 2

    # A second run replaces the folder; a folder the command did not write is refused.
    main([*arguments, "--data", str(data), "--output", str(output), *TINY])
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("keep")
    with pytest.raises(SystemExit, match="mine exists and is not a folder written by"):
        main([*arguments, "--data", str(data), "--output", str(tmp_path / "mine"), *TINY])


def test_cli_codes_a_recommenders_item_embeddings_and_concatenated_tables(tmp_path):
    model = tiny_model("sasrec", seed=3)
    model.save_pretrained(tmp_path / "recommender")
    vocab_size = model.config.vocab_size
    text = np.random.default_rng(0).normal(size=(vocab_size, 5)).astype(np.float32)
    np.save(tmp_path / "text.npy", text)  # one row per token id, as data_preprocess.text_embeddings writes
    arguments = ["--embeddings", str(tmp_path / "recommender"), str(tmp_path / "text.npy"), "--normalize", "l2"]
    report = main([*arguments, "--output", str(tmp_path / "codes"), *TINY])
    codes = load_file(tmp_path / "codes" / "codes.safetensors")["codes"]
    assert codes.shape == (vocab_size, 3) and (codes[:NUM_SPECIAL_TOKENS] == -1).all()
    assert len(codes[NUM_SPECIAL_TOKENS:].unique(dim=0)) == vocab_size - NUM_SPECIAL_TOKENS
    config = json.loads((tmp_path / "codes" / "config.json").read_text())
    assert config["input_size"] == model.config.hidden_size + 5 and report["items"] == vocab_size - NUM_SPECIAL_TOKENS
    assert json.loads((tmp_path / "codes" / "codes.json").read_text())["vocabulary_fingerprint"] is None


@pytest.mark.parametrize(
    ("bad", "message"),
    [
        ("nan", r"items\.npy: 1 rows hold NaN or infinite values \(the first is row 3\)"),
        ("shape", r"items\.npy: expected a 2-D table \[num_items, dim\], got shape \(60,\)"),
        ("duplicate", r"ids\.json: item id 'item4' on row 5 and again on row 7: a duplicate id"),
        ("count", r"items\.npy has 59 rows, but .*ids\.json lists 60 item ids"),
        ("missing", r"no such file: .*absent\.npy"),
    ],
)
def test_cli_refuses_bad_tables_naming_the_file(tmp_path, bad, message):
    data, keys = write_items(tmp_path / "data")
    table = np.random.default_rng(0).normal(size=(60, 12)).astype(np.float32)
    ids = list(keys)
    if bad == "nan":
        table[3, 2] = np.nan
    elif bad == "shape":
        table = table[:, 0]
    elif bad == "duplicate":
        ids[6] = "item4"
    elif bad == "count":
        table = table[:59]
    np.save(tmp_path / "items.npy", table)
    (tmp_path / "ids.json").write_text(json.dumps(ids))
    embeddings = tmp_path / ("absent.npy" if bad == "missing" else "items.npy")
    arguments = ["--embeddings", str(embeddings), "--item-ids", str(tmp_path / "ids.json"), "--data", str(data)]
    with pytest.raises(SystemExit, match=message):
        main([*arguments, "--output", str(tmp_path / "codes"), *TINY])
    assert not (tmp_path / "codes").exists()


def test_cli_refuses_a_token_id_table_of_another_vocabulary(tmp_path):
    data, _ = write_items(tmp_path / "data")
    np.save(tmp_path / "text.npy", np.ones((30, 4), np.float32))
    with pytest.raises(SystemExit, match=r"text\.npy has 30 rows, but the vocabulary of .* has 65 token ids"):
        main(["--embeddings", str(tmp_path / "text.npy"), "--data", str(data), "--output", str(tmp_path / "o"), *TINY])


def test_semantic_ids_command_line_errors_are_one_line(tmp_path):
    np.save(tmp_path / "bad.npy", np.full((8, 3), np.inf, np.float32))
    arguments = ["--embeddings", str(tmp_path / "bad.npy"), "--output", str(tmp_path / "codes")]
    result = subprocess.run(
        [sys.executable, "-m", "hf_sasrec.semantic_ids", *arguments],
        capture_output=True,
        text=True,
        cwd=ROOT,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
        timeout=300,
    )
    assert result.returncode == 1
    assert result.stderr.strip().splitlines()[-1] == (
        f"python -m hf_sasrec.semantic_ids: error: {tmp_path / 'bad.npy'}: 8 rows hold NaN or infinite values "
        "(the first is row 0)"
    )
