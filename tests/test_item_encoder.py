"""The item encoder (issue 13, point 2): every variant fuses an item's id embedding with its features, scores items
against the fused vectors, encodes the catalog once a forward pass, keeps the feature tables in its checkpoint (they
load where `hf_sasrec` is absent), and a content-only model scores items by their content alone."""

import json
import textwrap

import numpy as np
import pytest
import torch
from model_helpers import (
    HIDE_HF_SASREC,
    VARIANT_NAMES,
    VOCAB_SIZE,
    extra_inputs,
    random_items,
    run_downstream,
    tiny_model,
)
from sft_helpers import tiny_run_arguments
from test_data_features import DECLARED, data_log, write_table  # noqa: F401 (data_log is a fixture)
from transformers import AutoConfig, AutoModelForCausalLM

from data_preprocess import prepare
from data_preprocess.errors import PreprocessingError
from data_preprocess.features import FeatureSources
from data_preprocess.preference import model_item_embeddings
from hf_sasrec import infer, sft
from hf_sasrec.checkpoint_loading import checkpoint_item_vectors
from hf_sasrec.feature_embeddings import ModalityFeature, MultiValuedFeature, NumericFeature, SemanticIdFeature
from hf_sasrec.item_encoder import ItemEncoder
from hf_sasrec.item_tokenizer import build_item_tokenizer
from hf_sasrec.recommender import Recommender
from hf_sasrec.retrieval import embedding_fingerprint

FEATURES = [
    {"name": "genre", "kind": "multi", "vocab_size": 6, "max_values": 3},
    {"name": "brand", "kind": "categorical", "vocab_size": 5},
    {"name": "price", "kind": "numeric"},
    {"name": "text", "kind": "embedding", "dim": 7},
    {"name": "semantic_ids", "kind": "codes", "level_sizes": [4, 4, 2]},
]


def feature_tables(seed: int = 0) -> dict[str, torch.Tensor]:
    """Random values of `FEATURES` for every token id, some of them missing."""
    generator = torch.Generator().manual_seed(seed)
    genre = torch.randint(3, 6, (VOCAB_SIZE, 3), generator=generator)
    genre[::3, 2] = 0  # fewer values, padded
    genre[::5] = torch.tensor([1, 0, 0])  # no genre: the missing id
    missing_price = torch.rand(VOCAB_SIZE, generator=generator) < 0.2
    present_text = torch.rand(VOCAB_SIZE, generator=generator) > 0.2
    codes = torch.stack([torch.randint(0, size, (VOCAB_SIZE,), generator=generator) for size in (4, 4, 2)], 1)
    codes[:5] = -1  # special tokens have no code
    return {
        "genre.ids": genre,
        "brand.ids": torch.randint(1, 5, (VOCAB_SIZE,), generator=generator),
        "price.value": torch.randn(VOCAB_SIZE, generator=generator).masked_fill(missing_price, 0.0),
        "price.missing": missing_price,
        "text.table": torch.randn(VOCAB_SIZE, 7, generator=generator) * present_text[:, None],
        "text.present": present_text,
        "semantic_ids.codes": codes,
    }


def content_model(variant: str = "sasrec", tables: dict | None = None, seed: int = 0, **overrides):
    model = tiny_model(variant, seed=seed, **({"item_features": FEATURES} | overrides))
    model.model.item_encoder.load_tables(feature_tables() if tables is None else tables)
    return model


def test_each_feature_kind_encodes_its_values_and_missing_ones():
    tables, hidden = feature_tables(), 16
    items = torch.arange(VOCAB_SIZE)
    multi = MultiValuedFeature(FEATURES[0], hidden, VOCAB_SIZE)
    multi.ids.copy_(tables["genre.ids"])
    for item in (0, 3, 5):  # three values, two values (padded), the missing id alone
        ids = [value for value in tables["genre.ids"][item].tolist() if value != 0]
        torch.testing.assert_close(multi(items)[item], multi.embedding.weight[ids].mean(0))
    numeric = NumericFeature(FEATURES[2], hidden, VOCAB_SIZE)
    numeric.value.copy_(tables["price.value"])
    numeric.missing.copy_(tables["price.missing"])
    missing = tables["price.missing"]
    expected = tables["price.value"][:, None] * numeric.project.weight[:, 0] + numeric.project.bias
    torch.testing.assert_close(numeric(items)[~missing], expected[~missing])
    assert torch.equal(numeric(items)[missing], numeric.missing_embedding.weight.expand(int(missing.sum()), -1))
    modality = ModalityFeature(FEATURES[3], hidden, VOCAB_SIZE)
    modality.table.copy_(tables["text.table"])
    modality.present.copy_(tables["text.present"])
    present = tables["text.present"]
    torch.testing.assert_close(modality(items)[present], tables["text.table"][present] @ modality.project.weight.T)
    assert torch.equal(modality(items)[~present][0], modality.missing_embedding.weight[0])
    codes = SemanticIdFeature(FEATURES[4], hidden, VOCAB_SIZE)
    codes.codes.copy_(tables["semantic_ids.codes"])
    item = 7
    expected = sum(
        level.weight[code + 1] for level, code in zip(codes.levels, tables["semantic_ids.codes"][item], strict=True)
    )
    torch.testing.assert_close(codes(items)[item], expected)
    torch.testing.assert_close(codes(items)[0], sum(level.weight[0] for level in codes.levels))  # no code


@pytest.mark.parametrize("fusion", ["sum", "concat"])
def test_item_vectors_fuse_the_id_embedding_and_the_features(fusion):
    model = content_model(item_fusion=fusion)
    encoder, ids = model.model.item_encoder, torch.arange(VOCAB_SIZE)
    parts = [model.model.embed_tokens.weight] + [feature(ids) for feature in encoder.features.values()]
    expected = sum(parts) if fusion == "sum" else torch.cat(parts, -1) @ encoder.fuse.weight.T
    torch.testing.assert_close(model.item_embeddings(), expected)
    assert model.get_output_embeddings() is None and not model.config.tie_word_embeddings


@pytest.mark.parametrize("variant", VARIANT_NAMES)
def test_every_variant_scores_items_against_the_fused_vectors_and_trains_every_part(variant):
    model = content_model(variant).train()
    input_ids = random_items(3, 6)
    inputs = {"input_ids": input_ids, **extra_inputs(variant, input_ids)}
    output = model(**inputs, labels=input_ids)
    output.loss.backward()
    encoder = model.model.item_encoder
    for name, parameter in [("embed_tokens", model.model.embed_tokens.weight), *encoder.named_parameters()]:
        if "missing_embedding" not in name:  # used only where a value is missing
            assert parameter.grad is not None and parameter.grad.abs().sum() > 0, name
    assert all(not buffer.requires_grad for buffer in encoder.buffers())
    model.eval()
    with torch.no_grad():
        hidden = model.model(
            inputs_embeds=model.model.embed_items(input_ids),
            attention_mask=input_ids.ne(0),
            **{key: value for key, value in inputs.items() if key != "input_ids"},
        ).last_hidden_state
        logits = model(**inputs).logits
    torch.testing.assert_close(logits, hidden @ model.item_embeddings().T, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("loss_type", ["ce", "bce", "sampled_softmax"])
def test_the_catalog_is_encoded_once_a_forward_pass(loss_type):
    model = content_model(loss_type=loss_type).train()
    calls = []
    model.model.item_encoder.register_forward_hook(lambda module, args, output: calls.append(args[0].shape))
    input_ids = random_items(4, 6)
    model(input_ids=input_ids, labels=input_ids).loss.backward()
    assert calls == [torch.Size([VOCAB_SIZE])]


def test_a_content_only_model_knows_items_by_their_content():
    tables = feature_tables()
    for table in tables.values():  # items 20 and 21 get the same content
        table[21] = table[20]
    model = content_model(use_item_id=False, tables=tables)
    assert model.model.embed_tokens is None and model.get_input_embeddings() is None
    vectors = model.item_embeddings()
    assert torch.equal(vectors[20], vectors[21]) and not torch.equal(vectors[20], vectors[22])
    with torch.no_grad():
        logits = model(input_ids=random_items(2, 5)).logits[:, -1]
    assert torch.equal(logits[:, 20], logits[:, 21])
    # With id embeddings the same content still leaves the two items apart.
    with_ids = content_model(tables=tables).item_embeddings()
    assert not torch.equal(with_ids[20], with_ids[21])


def test_feature_tables_travel_with_the_checkpoint_and_load_without_the_package(tmp_path):
    user_features = [{"name": "gender", "kind": "categorical", "vocab_size": 5}]  # exported with its encoder too
    model = content_model("sasrec_rope", item_fusion="concat", user_features=user_features)
    model.save_pretrained(tmp_path / "model")
    histories = random_items(3, 6, seed=4)
    with torch.no_grad():
        expected = model(input_ids=histories).logits[:, -1]
    loaded = AutoModelForCausalLM.from_pretrained(tmp_path / "model").eval()
    with torch.no_grad():
        assert torch.equal(loaded(input_ids=histories).logits[:, -1], expected)
    downstream = HIDE_HF_SASREC + textwrap.dedent(
        """
        import torch
        from transformers import AutoModelForCausalLM
        model = AutoModelForCausalLM.from_pretrained(sys.argv[1], trust_remote_code=True).eval()
        with torch.no_grad():
            scores = model(input_ids=torch.tensor(json.loads(sys.argv[2]))).logits[:, -1]
        print(json.dumps({"top10": scores.topk(10).indices.tolist(), "scores": scores.tolist()}))
        """
    )
    remote, _ = run_downstream(downstream, str(tmp_path / "model"), json.dumps(histories.tolist()), cwd=tmp_path)
    assert remote["top10"] == expected.topk(10).indices.tolist()
    np.testing.assert_allclose(remote["scores"], expected.numpy(), atol=1e-5, rtol=0)


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"use_item_id": False}, "use_item_id=False needs item_features"),
        ({"item_features": FEATURES, "item_fusion": "max"}, "Unknown item_fusion 'max'"),
        ({"item_features": [{"name": "x", "kind": "bag"}]}, "item feature 'x': unknown kind 'bag'"),
        ({"item_features": [{"name": "x", "kind": "multi", "vocab_size": 4}]}, "`max_values` must be a positive"),
        ({"item_features": [FEATURES[1], FEATURES[1]]}, "`name` must be unique"),
        ({"item_features": [{"name": "c", "kind": "codes", "level_sizes": []}]}, "`level_sizes` must list"),
    ],
)
def test_a_bad_item_feature_config_is_refused_naming_the_problem(overrides, message):
    with pytest.raises(ValueError, match=message):
        AutoConfig.for_model("sasrec", vocab_size=VOCAB_SIZE, **overrides)


def test_tables_of_another_shape_or_name_are_refused():
    encoder = ItemEncoder(AutoConfig.for_model("sasrec", vocab_size=VOCAB_SIZE, item_features=FEATURES))
    tables = feature_tables()
    with pytest.raises(ValueError, match=r"missing \['text.present'\]"):
        encoder.load_tables({name: value for name, value in tables.items() if name != "text.present"})
    with pytest.raises(ValueError, match=r"'brand.ids' has shape \(39,\); the model expects \(40,\)"):
        encoder.load_tables(tables | {"brand.ids": tables["brand.ids"][:-1]})


@pytest.fixture
def feature_data(data_log, tmp_path):  # noqa: F811 (data_log is a fixture)
    """A processed log with an item table (brand, tags, price) and a modality table, under `features/`."""
    out = tmp_path / "data"
    rng = np.random.default_rng(0)
    np.save(tmp_path / "text.npy", rng.normal(size=(25, 6)).astype(np.float32))
    (tmp_path / "text_ids.txt").write_text("".join(f"{item}\n" for item in range(1, 26)))
    modality = f"text={tmp_path / 'text.npy'}:{tmp_path / 'text_ids.txt'}"
    from data_preprocess.embedding_tables import EmbeddingSource

    features = FeatureSources(write_table(tmp_path, "csv"), DECLARED, embeddings=(EmbeddingSource.parse(modality),))
    prepare(data_log, out, features=features)
    return out


@pytest.mark.parametrize("use_item_id", [True, False])
def test_training_with_features_end_to_end(feature_data, tmp_path, use_item_id):
    run = tmp_path / "run"
    metrics = sft.main(
        tiny_run_arguments(
            feature_data, run, features="all", use_item_id=use_item_id, max_length=6, num_train_epochs=1
        )
    )
    assert 0.0 <= metrics["test_full/ndcg@10"] <= 1.0
    config = json.loads((run / "config.json").read_text())
    assert [spec["name"] for spec in config["item_features"]] == ["brand", "tags", "price", "text"]
    assert config["use_item_id"] is use_item_id
    model = AutoModelForCausalLM.from_pretrained(run)
    tables = model.model.item_encoder.features
    assert tables.text.present[5:].sum() == 25 and tables.price.missing[5:].sum() > 0


def test_unknown_feature_names_are_refused_listing_the_available_ones(feature_data, tmp_path):
    with pytest.raises(
        ValueError, match=r"features \['colour'\] are not in .*; it has \['brand', 'tags', 'price', 'text'\]"
    ):
        sft.main(tiny_run_arguments(feature_data, tmp_path / "run", features="brand,colour"))


def test_item_vectors_of_a_content_checkpoint_are_computed_never_read_as_id_embeddings(tmp_path):
    model = content_model()
    model.save_pretrained(tmp_path / "model")
    build_item_tokenizer([f"item{index}" for index in range(VOCAB_SIZE - 5)]).save_pretrained(tmp_path / "model")
    with pytest.raises(PreprocessingError, match="scores items by their features"):
        model_item_embeddings(tmp_path / "model")
    np.testing.assert_allclose(
        checkpoint_item_vectors(tmp_path / "model"), model.item_embeddings().detach().numpy(), atol=1e-6, rtol=0
    )


SERVING_FEATURES = [
    {**FEATURES[0], "vocab": [None, None, None, "drama", "comedy", "crime"]},
    {**FEATURES[1], "vocab": [None, None, None, "acme", "globex"]},
    {**FEATURES[2], "mean": 10.0, "std": 2.0},
    FEATURES[3],
    FEATURES[4],
]
ITEM_KEYS = [f"item{index}" for index in range(VOCAB_SIZE - 5)]


@pytest.mark.parametrize("use_item_id", [True, False])
def test_added_items_are_scored_from_their_content_and_retrieved(use_item_id, tmp_path):
    model = content_model(item_features=SERVING_FEATURES, use_item_id=use_item_id)
    recommender = Recommender(model, build_item_tokenizer(ITEM_KEYS))
    vector = torch.randn(7, generator=torch.Generator().manual_seed(5))
    new_items = {
        "new-film": {"genre": "comedy|crime", "brand": "acme", "price": 14.0, "semantic_ids": [3, 1]},
        "new-short": {"genre": ["nonsense"], "price": None},  # an unknown genre, no brand, no price: never a crash
    }
    new_ids = recommender.add_items(new_items, embeddings={"text": {"new-film": vector.tolist()}})
    assert new_ids == [VOCAB_SIZE, VOCAB_SIZE + 1] and model.config.vocab_size == VOCAB_SIZE + 2
    assert recommender.tokenizer.convert_tokens_to_ids(["new-film", "new-short"]) == new_ids
    features = model.model.item_encoder.features
    assert features.genre.ids[VOCAB_SIZE].tolist() == [4, 5, 0] and features.genre.ids[VOCAB_SIZE + 1, 0] == 2
    assert features.brand.ids[VOCAB_SIZE + 1] == 1 and features.price.value[VOCAB_SIZE] == 2.0
    assert torch.equal(features.text.table[VOCAB_SIZE], vector) and not features.text.present[VOCAB_SIZE + 1]
    assert features.semantic_ids.codes[VOCAB_SIZE].tolist() == [3, 1, -1]  # no de-duplication code given
    assert features.semantic_ids.codes[VOCAB_SIZE + 1].tolist() == [-1, -1, -1]
    # The new item's vector is its content alone (a zero id embedding), and the index holds it.
    content = sum(feature(torch.tensor([VOCAB_SIZE])) for feature in features.values())[0]
    torch.testing.assert_close(model.item_embeddings()[VOCAB_SIZE].detach(), content.detach())
    assert recommender.index.num_items == VOCAB_SIZE + 2 - 5
    assert recommender.index.fingerprint == embedding_fingerprint(model.item_embeddings())
    # Retrieved with the model's own score, whether it is asked for or appears in a history.
    history = ["item3", "new-film", "item9"]
    result = recommender(history, top_k=VOCAB_SIZE + 2 - 5 - 3)
    assert "new-short" in result["items"]
    input_ids = torch.tensor([recommender.tokenizer.convert_tokens_to_ids(history)])
    with torch.no_grad():
        own = model(input_ids=input_ids).logits[0, -1]
    score = result["scores"][result["items"].index("new-short")]
    assert score == pytest.approx(own[VOCAB_SIZE + 1].item(), abs=1e-4)
    # Saved, the grown recommender loads whole: tokenizer, features and index agree.
    recommender.save_pretrained(tmp_path / "grown")
    reloaded = Recommender.from_pretrained(tmp_path / "grown")
    assert reloaded(history, top_k=5)["items"] == recommender(history, top_k=5)["items"]


def test_the_recommender_encodes_the_catalog_once_until_told_to_refresh(monkeypatch):
    model = content_model(item_features=SERVING_FEATURES)
    recommender = Recommender(model, build_item_tokenizer(ITEM_KEYS))
    calls = []
    encode = model.item_embeddings
    monkeypatch.setattr(model, "item_embeddings", lambda: calls.append(1) or encode())
    first = recommender([["item3", "item9"], ["item1"]], top_k=3)
    assert recommender(["item3", "item9"], top_k=3) == first[0] and calls == []
    kept = recommender.item_embeddings.clone()
    with torch.no_grad():
        model.model.item_encoder.features.brand.embedding.weight.mul_(-1.0)
    recommender.refresh_item_embeddings()
    torch.testing.assert_close(recommender.item_embeddings, encode().detach())
    assert calls == [1] and not torch.allclose(recommender.item_embeddings, kept)


def test_adding_items_is_refused_for_an_id_model_known_keys_and_unknown_features():
    recommender = Recommender(content_model(item_features=SERVING_FEATURES), build_item_tokenizer(ITEM_KEYS))
    with pytest.raises(ValueError, match=r"Items already in the catalog: \['item3'\]"):
        recommender.add_items({"item3": {}})
    with pytest.raises(ValueError, match=r"no item features \['colour'\]"):
        recommender.add_items({"x": {"colour": "red"}})
    with pytest.raises(ValueError, match="'text' vector must be 7 finite numbers"):
        recommender.add_items({"x": {}}, embeddings={"text": {"x": [1.0, 2.0]}})
    with pytest.raises(ValueError, match=r"'semantic_ids' must be 2 codes .* size \[4, 4, 2\]; got \[4, 0\]"):
        recommender.add_items({"x": {"semantic_ids": [4, 0]}})
    assert recommender.config.vocab_size == VOCAB_SIZE  # nothing was added by a refused call
    id_only = Recommender(tiny_model("sasrec"), build_item_tokenizer(ITEM_KEYS))
    with pytest.raises(ValueError, match="knows items by id only"):
        id_only.add_items({"x": {}})


def test_inference_takes_a_file_of_new_items(feature_data, tmp_path):
    run = tmp_path / "run"
    sft.main(tiny_run_arguments(feature_data, run, features="all", num_train_epochs=1))
    new_items = tmp_path / "new.jsonl"
    lines = [
        {"item_id": "new-a", "brand": "b1", "tags": ["odd", "big"], "price": 3.5, "embeddings": {"text": [0.1] * 6}},
        {"item_id": "new-b", "tags": "even"},
    ]
    new_items.write_text("".join(json.dumps(line) + "\n" for line in lines))
    histories = tmp_path / "histories.jsonl"
    histories.write_text(json.dumps({"user_id": "u", "items": ["3", "new-a"]}) + "\n")
    output = tmp_path / "recs"
    common = ["--model", str(run), "--new-items", str(new_items), "--top-k", "26", "--no-save-index"]
    summary = infer.main([*common, "--history-file", str(histories), "--output", str(output)])
    assert summary["new_items"] == 2 and summary["unknown_items"] == 0
    record = json.loads((output / "recommendations.jsonl").read_text().splitlines()[0])
    assert "new-b" in record["items"] and "new-a" not in record["items"]  # its history holds new-a
    # Users of the data split, processed before the items arrived, are served as well.
    summary = infer.main([*common, "--output", str(tmp_path / "split")])
    assert summary["users"] == 30 and summary["new_items"] == 2
    (tmp_path / "bad.jsonl").write_text('{"brand": "b1"}\n')
    with pytest.raises(ValueError, match=r'bad.jsonl:1 needs an "item_id"'):
        infer.main([*common[:2], "--new-items", str(tmp_path / "bad.jsonl"), "--history-file", str(histories)])
