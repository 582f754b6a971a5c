"""A run folder written by hf-sasrec 0.1.0 (no vocabulary fingerprint, `run_info.json` without a version) still
loads, with `Recommender.from_pretrained` and with `AutoModelForCausalLM`, and gives the scores it gave then."""

import json
from pathlib import Path

import torch
from transformers import AutoModelForCausalLM

from hf_sasrec.item_tokenizer import decode_items
from hf_sasrec.recommender import Recommender

FIXTURE = Path(__file__).resolve().parent / "fixtures" / "checkpoint_0_1_0"
EXPECTED = json.loads((FIXTURE / "expected_scores.json").read_text())


def test_auto_model_for_causal_lm_gives_the_scores_of_0_1_0():
    model = AutoModelForCausalLM.from_pretrained(FIXTURE).eval()
    with torch.no_grad():
        scores = model(input_ids=torch.tensor(EXPECTED["input_ids"]), logits_to_keep=1).logits[:, -1]
    torch.testing.assert_close(scores, torch.tensor(EXPECTED["scores"]), atol=1e-5, rtol=0)


def test_recommender_loads_the_run_folder_of_0_1_0_and_ranks_by_its_scores(caplog):
    with caplog.at_level("WARNING"):
        recommender = Recommender.from_pretrained(FIXTURE)
    assert "records no item-vocabulary fingerprint" in caplog.text
    assert recommender.max_length == 8 and recommender.run_info.model_type == "sasrec"
    history = EXPECTED["input_ids"][1]  # no padding: every id is an item
    expected = torch.tensor(EXPECTED["scores"][1])
    expected[: recommender.num_special_tokens] = -torch.inf
    expected[history] = -torch.inf
    top = expected.topk(5)
    [(ids, scores)] = recommender.recommend_ids([history], top_k=5)
    assert ids == top.indices.tolist()
    torch.testing.assert_close(torch.tensor(scores), top.values, atol=1e-5, rtol=0)
    keys = decode_items(recommender.tokenizer, history)
    assert recommender(keys, top_k=5)["items"] == decode_items(recommender.tokenizer, ids)
