"""The folder `push_to_hub` uploads is complete: it loads where `hf_sasrec` cannot be imported and recommends the
same items. Nothing here contacts a remote host."""

import json
import subprocess
import sys
import textwrap

import pytest
import yaml
from model_helpers import HIDE_HF_SASREC, VOCAB_SIZE, assert_same_recommendations, tiny_model

from hf_sasrec.item_tokenizer import NUM_SPECIAL_TOKENS, build_item_tokenizer, vocabulary_fingerprint
from hf_sasrec.model_card import save_for_hub
from hf_sasrec.recommender import Recommender
from hf_sasrec.retrieval import ItemIndex, RetrievalConfig

KEYS = [f"Film {index} (199{index % 10})" for index in range(VOCAB_SIZE - NUM_SPECIAL_TOKENS)]
HISTORIES = [[KEYS[3], KEYS[10], KEYS[0]], [KEYS[20]], [KEYS[5], KEYS[6], KEYS[7], KEYS[30], KEYS[2]]]
TIMES = [[100, 160, 400], [9], [1, 2, 3, 50, 51]]
METRICS = {"test": {"full/hr@10": 0.1234, "full/ndcg@10": 0.0567}, "epoch": 3, "train_total_flos": 4.8e11}

DOWNSTREAM = HIDE_HF_SASREC + textwrap.dedent(
    """
    import faiss, torch
    from transformers import AutoModel, PreTrainedTokenizerFast
    folder, histories, times = sys.argv[1], json.loads(sys.argv[2]), json.loads(sys.argv[3])
    encoder = AutoModel.from_pretrained(folder, trust_remote_code=True).eval()
    tokenizer = PreTrainedTokenizerFast.from_pretrained(folder)  # as the model card says: no custom code
    item2id = json.load(open(f"{folder}/item2id.json"))
    id2item = json.load(open(f"{folder}/id2item.json"))
    index = faiss.read_index(f"{folder}/item_index.faiss")
    special = encoder.config.num_special_tokens
    results = []
    for history, history_times in zip(histories, times):
        ids = torch.tensor([[item2id[key] for key in history]])
        assert tokenizer(" ".join(tokenizer.convert_ids_to_tokens(ids[0].tolist())))["input_ids"] == ids[0].tolist()
        extra = {"timestamps": torch.tensor([history_times])} if encoder.config.model_type == "tisasrec" else {}
        with torch.no_grad():
            state = encoder(input_ids=ids, **extra).last_hidden_state[:, -1]
        scores = state @ encoder.get_input_embeddings().weight.T
        scores[0, :special] = -float("inf")
        scores[0, ids[0]] = -float("inf")
        top = scores[0].topk(10).indices.tolist()
        _, rows = index.search(state.numpy(), 10 + len(history))
        from_index = [int(row) + special for row in rows[0] if int(row) + special not in ids[0].tolist()][:10]
        results.append({"matmul": [id2item[str(i)] for i in top], "index": [id2item[str(i)] for i in from_index]})
    print(json.dumps({"results": results, "module": type(encoder).__module__, "vocab": len(tokenizer)}))
    """
)


@pytest.mark.parametrize("variant", ["sasrec", "tisasrec"])
def test_hub_folder_loads_without_the_package_and_recommends_the_same(variant, tmp_path):
    model = tiny_model(variant, seed=11)
    recommender = Recommender(model, build_item_tokenizer(KEYS))
    folder = tmp_path / "hub"
    recommender.save_pretrained(folder, metrics=METRICS, dataset="ml-100k")
    for name in ("model.safetensors", "config.json", "tokenizer.json", "item2id.json", "id2item.json", "README.md"):
        assert (folder / name).is_file(), name
    assert (folder / f"modeling_{variant}.py").is_file() and (folder / "item_index.faiss").is_file()
    config = json.loads((folder / "config.json").read_text())
    assert set(config["auto_map"]) == {"AutoConfig", "AutoModel", "AutoModelForCausalLM"}
    assert config["item_vocab_fingerprint"] == vocabulary_fingerprint(build_item_tokenizer(KEYS))
    times = TIMES if variant == "tisasrec" else [[0] * len(history) for history in HISTORIES]
    result = subprocess.run(
        [sys.executable, "-c", DOWNSTREAM, str(folder), json.dumps(HISTORIES), json.dumps(times)],
        input="",
        capture_output=True,
        text=True,
        cwd=tmp_path,
        env={"HF_MODULES_CACHE": str(tmp_path / "modules"), "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"},
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert "custom code" not in result.stdout + result.stderr  # no prompt to run the folder's code for the tokenizer
    downstream = json.loads(result.stdout.strip().splitlines()[-1])
    assert downstream["module"].startswith("transformers_modules") and downstream["vocab"] == VOCAB_SIZE
    expected = recommender(HISTORIES, top_k=10, timestamps=TIMES if variant == "tisasrec" else None)
    for got, want in zip(downstream["results"], expected, strict=True):
        assert got["matmul"] == want["items"]
        assert got["index"] == want["items"]


def test_saved_folder_reloads_as_the_same_recommender(tmp_path):
    hnsw = ItemIndex.build(
        tiny_model("sasrec_gate", seed=2).get_output_embeddings().weight,
        NUM_SPECIAL_TOKENS,
        RetrievalConfig(index_type="hnsw", hnsw_m=8),
    )
    recommender = Recommender(tiny_model("sasrec_gate", seed=2), build_item_tokenizer(KEYS), index=hnsw, max_length=2)
    recommender.save_pretrained(tmp_path)
    reloaded = Recommender.from_pretrained(tmp_path, index_config=hnsw.config)
    assert reloaded.max_length == 2 and reloaded.index.config == hnsw.config
    assert_same_recommendations(reloaded(HISTORIES, top_k=7), recommender(HISTORIES, top_k=7))


def test_model_card_has_metadata_metrics_and_usage(tmp_path):
    recommender = Recommender(tiny_model("sasrec_moe", seed=1), build_item_tokenizer(KEYS))
    recommender.save_pretrained(tmp_path, metrics=METRICS, dataset="ml-100k")
    card = (tmp_path / "README.md").read_text()
    _, header, body = card.split("---\n", 2)
    metadata = yaml.safe_load(header)
    assert metadata["library_name"] == "transformers"
    assert metadata["datasets"] == ["ml-100k"]
    assert {"recommendation", "sasrec_moe"} <= set(metadata["tags"])
    assert "| `test/full/hr@10` | 0.1234 |" in body and "| `epoch` | 3.0000 |" in body
    assert "| `train_total_flos` | 480,000,000,000 |" in body
    assert "trust_remote_code=True" in body and "Recommender.from_pretrained" in body
    assert "tokenizer = PreTrainedTokenizerFast.from_pretrained(folder)" in body and "AutoTokenizer" not in body
    assert "item_index.faiss" in body


def test_model_card_without_metrics_or_index_says_so(tmp_path):
    save_for_hub(tiny_model("mhc", seed=1), build_item_tokenizer(KEYS), tmp_path)
    card = (tmp_path / "README.md").read_text()
    assert "No evaluation metrics were recorded" in card
    assert "datasets" not in card.split("---\n")[1]
    assert not (tmp_path / "item_index.faiss").exists() and "item_index.faiss" not in card


def test_save_for_hub_refuses_a_tokenizer_of_another_item_order(tmp_path):
    model = tiny_model("sasrec", seed=3)
    save_for_hub(model, build_item_tokenizer(KEYS), tmp_path / "first")
    with pytest.raises(ValueError, match="another order"):
        save_for_hub(model, build_item_tokenizer(KEYS[::-1]), tmp_path / "second")
    assert not (tmp_path / "second").exists()
