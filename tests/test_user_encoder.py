"""User features (issue 13, point 2): their embedding is added to every position's input, their values come with
the batch from the splits (training, evaluation) or as raw values (serving), and a user without them is served with
every feature missing."""

import json

import pytest
import torch
from datasets import load_from_disk
from model_helpers import VARIANT_NAMES, extra_inputs, random_items, tiny_model
from sft_helpers import tiny_run_arguments
from test_data_features import data_log  # noqa: F401 (a fixture)
from transformers import AutoModelForCausalLM

from data_preprocess import prepare
from data_preprocess.feature_schema import parse_feature_specs
from data_preprocess.features import FeatureSources
from hf_sasrec import evaluate, infer, sft
from hf_sasrec.data_collator import NextItemCollator
from hf_sasrec.feature_encoding import encode_users
from hf_sasrec.item_tokenizer import build_item_tokenizer
from hf_sasrec.recommender import Recommender

USER_FEATURES = [
    {"name": "gender", "kind": "categorical", "vocab_size": 5, "vocab": [None, None, None, "F", "M"]},
    {"name": "hobbies", "kind": "multi", "vocab_size": 6, "max_values": 2, "vocab": [None, None, None, "a", "b", "c"]},
    {"name": "age", "kind": "numeric", "mean": 30.0, "std": 10.0},
]


def user_model(variant: str = "sasrec"):
    return tiny_model(variant, user_features=USER_FEATURES)


def test_raw_user_values_are_encoded_with_the_training_vocabularies():
    values = encode_users(
        USER_FEATURES, [{"gender": "M", "hobbies": ["c", "a", "zzz"], "age": 50}, {"gender": "X"}, None]
    )
    assert values["gender.ids"].tolist() == [4, 2, 1]  # known, unknown, missing
    assert values["hobbies.ids"].tolist() == [[5, 3], [1, 0], [1, 0]]  # cut to max_values; missing
    assert values["age.value"].tolist() == pytest.approx([2.0, 0.0, 0.0]) and values["age.missing"].tolist() == [
        False,
        True,
        True,
    ]
    with pytest.raises(ValueError, match=r"no user features \['country'\]"):
        encode_users(USER_FEATURES, [{"country": "NL"}])


@pytest.mark.parametrize("variant", VARIANT_NAMES)
def test_user_features_condition_every_position(variant):
    model = user_model(variant)
    input_ids = random_items(2, 6)
    inputs = {"input_ids": input_ids, **extra_inputs(variant, input_ids)}
    women, men = (encode_users(USER_FEATURES, [{"gender": gender, "age": 25}] * 2) for gender in ("F", "M"))
    with torch.no_grad():
        logits_women = model(**inputs, user_features=women).logits
        logits_men = model(**inputs, user_features=men).logits
    assert not torch.allclose(logits_women[:, 0], logits_men[:, 0])  # from the first position on
    # Training reaches every user feature embedding.
    model.train()
    model(**inputs, labels=input_ids, user_features=women).loss.backward()
    encoder = model.model.user_encoder.features
    assert encoder.gender.embedding.weight.grad[3].abs().sum() > 0 and encoder.age.project.weight.grad.abs().sum() > 0


def test_a_batch_without_user_features_is_served_as_users_whose_every_feature_is_missing():
    model = user_model()
    input_ids = random_items(3, 5)
    missing = encode_users(USER_FEATURES, [None] * 3)
    with torch.no_grad():
        assert torch.equal(model(input_ids=input_ids).logits, model(input_ids=input_ids, user_features=missing).logits)
    with pytest.raises(ValueError, match="user_features has"):
        model(input_ids=input_ids, user_features={"gender.ids": missing["gender.ids"]})
    with pytest.raises(ValueError, match="this model reads none"):
        tiny_model("sasrec")(input_ids=input_ids, user_features=missing)


def test_the_collator_batches_the_user_features_of_the_rows():
    rows = [
        {"item_ids": [5, 6, 7], "user_features": {"gender.ids": 3, "age.value": 0.5, "age.missing": False}},
        {"item_ids": [8, 9], "user_features": {"gender.ids": 1, "age.value": 0.0, "age.missing": True}},
    ]
    batch = NextItemCollator(max_length=4)(rows)["user_features"]
    assert batch["gender.ids"].tolist() == [3, 1] and batch["gender.ids"].dtype == torch.long
    assert batch["age.missing"].dtype == torch.bool and batch["age.value"].dtype == torch.float32


def test_the_recommender_serves_raw_user_features():
    model = user_model()
    keys = [f"item{index}" for index in range(model.config.vocab_size - 5)]
    recommender = Recommender(model, build_item_tokenizer(keys))
    history = ["item1", "item2", "item3"]
    young, old = ({"gender": "F", "age": age} for age in (18, 70))
    results = recommender([history, history], top_k=5, user_features=[young, old])
    with torch.no_grad():
        expected = model(input_ids=torch.tensor([[6, 7, 8]]), user_features=encode_users(USER_FEATURES, [old])).logits
    returned = torch.tensor(results[1]["scores"])
    ids = [keys.index(key) + 5 for key in results[1]["items"]]
    torch.testing.assert_close(returned, expected[0, -1, ids], atol=1e-4, rtol=0)
    top = expected[0, -1, 5:].clone()
    top[[1, 2, 3]] = -torch.inf  # the history is excluded
    assert results[1]["items"] == [keys[index] for index in top.topk(5).indices.tolist()]
    assert results[0]["items"] != results[1]["items"] or results[0]["scores"] != results[1]["scores"]
    with pytest.raises(ValueError, match="this model reads none"):
        Recommender(tiny_model("sasrec"), build_item_tokenizer(keys))(history, user_features={"gender": "F"})


def test_training_with_user_features_end_to_end(data_log, tmp_path):  # noqa: F811 (a fixture)
    users = tmp_path / "users.csv"
    users.write_text(
        "user_id,age,gender\n" + "".join(f"{user},{18 + user},{'FM'[user % 2]}\n" for user in range(1, 29))
    )
    features = FeatureSources(user_table=users, user_features=parse_feature_specs("age:numeric,gender:categorical"))
    prepare(data_log, tmp_path / "data", features=features)  # users 29 and 30 have no row: missing features
    run = tmp_path / "run"
    metrics = sft.main(tiny_run_arguments(tmp_path / "data", run, user_features="all", num_train_epochs=1))
    assert 0.0 <= metrics["test_full/ndcg@10"] <= 1.0
    model = AutoModelForCausalLM.from_pretrained(run)
    assert [spec["name"] for spec in model.config.user_features] == ["age", "gender"]
    assert model.config.user_features[1]["vocab"][3:] in (["F", "M"], ["M", "F"])
    # A saved run is evaluated again with its users' features (the data folder of run_info.json).
    again = evaluate.main([str(run), "--split", "test"])
    assert again["test_full/ndcg@10"] == pytest.approx(metrics["test_full/ndcg@10"], abs=1e-9)
    # Serving: the data's encoded values (infer on the split) and the raw values (a history file) agree.
    summary = infer.main(["--model", str(run), "--output", str(tmp_path / "split"), "--no-save-index"])
    assert summary["users"] == 30
    split_records = {
        json.loads(line)["user_id"]: json.loads(line) for line in (tmp_path / "split" / "recommendations.jsonl").open()
    }
    test = load_from_disk(str(tmp_path / "data"))["test"]
    id2item = json.loads((tmp_path / "data" / "tokenizer" / "id2item.json").read_text())
    row = next(row for row in test if row["user_id"] == "3")
    history = {
        "user_id": "3",
        "items": [id2item[str(i)] for i in row["item_ids"]],
        "user_features": {"age": 21, "gender": "M"},
    }
    (tmp_path / "history.jsonl").write_text(json.dumps(history) + "\n")
    infer.main(
        [
            "--model",
            str(run),
            "--history-file",
            str(tmp_path / "history.jsonl"),
            "--output",
            str(tmp_path / "raw"),
            "--no-save-index",
        ]
    )
    raw = json.loads((tmp_path / "raw" / "recommendations.jsonl").read_text())
    assert raw["items"] == split_records["3"]["items"]
    assert raw["scores"] == pytest.approx(split_records["3"]["scores"], abs=1e-5)
    with pytest.raises(ValueError, match=r"user features \['income'\] are not in"):
        sft.main(tiny_run_arguments(tmp_path / "data", tmp_path / "other", user_features="income"))
