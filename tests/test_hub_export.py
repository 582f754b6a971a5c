"""The folder `push_to_hub` uploads is complete: it loads where `hf_sasrec` cannot be imported and recommends the
same items. Nothing here contacts a remote host."""

import json
import textwrap
from pathlib import Path

import pytest
from huggingface_hub import ModelCard
from model_helpers import HIDE_HF_SASREC, VOCAB_SIZE, assert_same_recommendations, run_downstream, tiny_model

from hf_sasrec.item_tokenizer import NUM_SPECIAL_TOKENS, build_item_tokenizer, vocabulary_fingerprint
from hf_sasrec.model_card import EXAMPLE_HISTORIES, EXAMPLE_TIMES, save_for_hub
from hf_sasrec.recommender import Recommender
from hf_sasrec.retrieval import ItemIndex, RetrievalConfig
from hf_sasrec.run_info import RunInfo

KEYS = [f"Film {index} (199{index % 10})" for index in range(VOCAB_SIZE - NUM_SPECIAL_TOKENS)]
HISTORIES = [[KEYS[3], KEYS[10], KEYS[0]], [KEYS[20]], [KEYS[5], KEYS[6], KEYS[7], KEYS[30], KEYS[2]]]
TIMES = [[100, 160, 400], [9], [1, 2, 3, 50, 51]]
METRICS = {"test": {"full/hr@10": 0.1234, "full/ndcg@10": 0.0567}, "epoch": 3, "train_total_flos": 4.8e11}
# A run's metrics.json as `hf_sasrec.sft` writes it: test metrics among many other numbers.
SFT_METRICS = {
    "train_total_flos": 4.8e11,
    "global_step": 120,
    "epochs": 22.0,
    "valid_full/hr@10": 0.9999,
    "test_full/hr@10": 0.1234,
    "test_full/hr@10_ci95": 0.0211,
    "test_full/ndcg@10": 0.0567,
    "test_full/mrr": 0.04,
    "test_full/num_users": 943.0,
    "test_sampled/hr@10": 0.5,
    "test_sampled/num_users": 943.0,
}
RUN_INFO = RunInfo(
    dataset="ml-100k",
    split="leave-one-out",
    data_dir="/local/data",
    eval_protocol="full",
    exclude_history=True,
    num_sampled_negatives=100,
    command=["seed=0"],
)

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
    downstream, result = run_downstream(
        DOWNSTREAM, str(folder), json.dumps(HISTORIES), json.dumps(times), cwd=tmp_path
    )
    assert "custom code" not in result.stdout + result.stderr  # no prompt to run the folder's code for the tokenizer
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


def card_of(tmp_path: Path, variant: str = "sasrec_moe", **save_fields) -> ModelCard:
    """Save a tiny model's Hub folder (run info of a leave-one-out run) and parse its card as the Hub does."""
    recommender = Recommender(tiny_model(variant, seed=1), build_item_tokenizer(KEYS), run_info=RUN_INFO, max_length=4)
    recommender.save_pretrained(tmp_path, **save_fields)
    return ModelCard.load(tmp_path / "README.md")


def test_model_card_holds_the_test_metrics_as_model_index(tmp_path):
    card = card_of(tmp_path, metrics=SFT_METRICS)
    assert card.data.library_name == "transformers" and card.data.datasets == ["ml-100k"]
    assert {"recommendation", "sasrec_moe"} <= set(card.data.tags)
    results = {(result.metric_config, result.metric_type): result for result in card.data.eval_results}
    assert set(results) == {("full", "hr@10"), ("full", "ndcg@10"), ("full", "mrr"), ("sampled", "hr@10")}
    full_hr = results["full", "hr@10"]
    assert full_hr.metric_value == pytest.approx(0.1234) and full_hr.dataset_split == "test"
    assert (full_hr.task_type, full_hr.dataset_type) == ("sequential-recommendation", "ml-100k")
    assert full_hr.metric_args == {"candidates": "all items", "exclude_history": True}
    assert results["sampled", "hr@10"].metric_args == {"candidates": "sampled negatives", "num_negatives": 100}


def test_model_card_shows_a_curated_table_the_split_and_the_plain_transformers_recipe(tmp_path):
    body = card_of(tmp_path, metrics=SFT_METRICS).text
    assert "| protocol | users | hr@10 | ndcg@10 | mrr |" in body
    assert "| full | 943 | 0.1234 ± 0.0211 | 0.0567 | 0.0400 |" in body and "| sampled | 943 | 0.5000 |  |  |" in body
    for left_out in ("train_total_flos", "global_step", "epochs", "0.9999", "valid_full"):
        assert left_out not in body
    assert "Leave-one-out (SASRec's protocol)" in body and "history items are removed from the ranking" in body
    assert "ranked against 100 items drawn uniformly" in body and "history read | the last 4 items" in body
    assert "tokenizer = PreTrainedTokenizerFast.from_pretrained(local)" in body and "AutoTokenizer" not in body
    assert "Recommender.from_pretrained" in body and "item_index.faiss" in body
    exported = json.loads((tmp_path / "run_info.json").read_text())
    assert exported["split"] == "leave-one-out" and exported["max_length"] == 4 and "data_dir" not in exported


def test_model_card_of_a_dpo_run_reports_the_aligned_model(tmp_path):
    dpo_metrics = {
        "test": {"full/hr@10": {"sft": 0.1, "dpo": 0.125, "dpo_ci95": 0.03, "change": 0.025, "change_ci95": 0.01}},
        "num_pairs": 900,
    }
    card = card_of(tmp_path, metrics=dpo_metrics)
    [result] = card.data.eval_results  # the interval is in the table, not a metric of the model-index
    assert (result.metric_type, result.metric_value) == ("hr@10", pytest.approx(0.125))
    assert "| full |  | 0.1250 ± 0.0300 |" in card.text  # its users were not recorded


def test_model_card_without_metrics_or_index_says_so(tmp_path):
    save_for_hub(tiny_model("mhc", seed=1), build_item_tokenizer(KEYS), tmp_path)
    card = ModelCard.load(tmp_path / "README.md")
    assert "No test metrics were recorded" in card.text and "split was not recorded" in card.text
    assert card.data.datasets is None and card.data.eval_results is None
    assert not (tmp_path / "item_index.faiss").exists() and "item_index.faiss" not in card.text


SNIPPET_RUNNER = HIDE_HF_SASREC + textwrap.dedent(
    """
    code = sys.stdin.read()
    exec(code)
    print(json.dumps(recommended))
    """
)


@pytest.mark.parametrize("variant", ["sasrec", "tisasrec"])
def test_the_card_recipe_with_transformers_alone_recommends_what_the_recommender_does(variant, tmp_path):
    """The card's transformers-only snippet, run as written (where `hf_sasrec` cannot be imported) on real
    histories, gives the `Recommender`'s top 10."""
    card = card_of(tmp_path / "hub", variant, dataset="ml-100k")
    snippet = card.text.split("```python\n")[2].split("```")[0]
    snippet = snippet.replace(json.dumps(EXAMPLE_HISTORIES), json.dumps(HISTORIES)).replace(
        json.dumps(EXAMPLE_TIMES), json.dumps(TIMES)
    )
    snippet = snippet.replace('"path/to/this/folder"', repr(str(tmp_path / "hub")))
    recommended, _ = run_downstream(SNIPPET_RUNNER, cwd=tmp_path, stdin=snippet)
    recommender = Recommender.from_pretrained(tmp_path / "hub")
    expected = recommender(HISTORIES, top_k=10, timestamps=TIMES if variant == "tisasrec" else None)
    assert recommended == [row["items"] for row in expected]


def test_save_for_hub_refuses_a_tokenizer_of_another_item_order(tmp_path):
    model = tiny_model("sasrec", seed=3)
    save_for_hub(model, build_item_tokenizer(KEYS), tmp_path / "first")
    with pytest.raises(ValueError, match="another order"):
        save_for_hub(model, build_item_tokenizer(KEYS[::-1]), tmp_path / "second")
    assert not (tmp_path / "second").exists()
