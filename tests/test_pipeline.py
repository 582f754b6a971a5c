"""The `next-item-recommendation` pipeline recommends as `Recommender` does, through transformers' `pipeline()`, from a
training run folder with hf_sasrec imported and from an exported folder where hf-sasrec is not installed."""

import json
import textwrap

import pytest
from model_helpers import HIDE_HF_SASREC, VOCAB_SIZE, assert_same_recommendations, run_downstream, tiny_model
from transformers import pipeline

from hf_sasrec.item_tokenizer import NUM_SPECIAL_TOKENS, build_item_tokenizer, save_item_tokenizer
from hf_sasrec.pipeline_next_item import PIPELINE_TASK, NextItemRecommendationPipeline
from hf_sasrec.recommendation import POPULARITY_FALLBACK
from hf_sasrec.recommender import Recommender
from hf_sasrec.reranking import ExposurePenalty

NUM_ITEMS = VOCAB_SIZE - NUM_SPECIAL_TOKENS
KEYS = [f"Film {index} (199{index % 10})" if index % 4 else str(500 + index) for index in range(NUM_ITEMS)]
HISTORIES = [
    [KEYS[3], "no such film", KEYS[10], KEYS[0]],
    [KEYS[20]],
    ["unknown"],
    [KEYS[5], KEYS[6], KEYS[7], KEYS[30]],
]
TIMES = [[100, 130, 160, 400], [9], [3], [1, 2, 3, 50]]

DOWNSTREAM = HIDE_HF_SASREC + textwrap.dedent(
    """
    from transformers import pipeline
    folder, histories, times = sys.argv[1], json.loads(sys.argv[2]), json.loads(sys.argv[3])
    recommend = pipeline(model=folder, trust_remote_code=True, device="cpu")
    results = recommend(histories, top_k=6, timestamps=times, batch_size=3)
    single = recommend(histories[0], top_k=6, timestamps=times[0] if times else None)
    print(json.dumps({"results": results, "single": single, "module": type(recommend).__module__}))
    """
)


def save_run(model, tokenizer, folder):
    """A folder as training writes it: the model, the item tokenizer and its `item2id.json`."""
    model.save_pretrained(folder)
    save_item_tokenizer(tokenizer, folder)


def times_for(variant: str, histories: list) -> list | None:
    return TIMES[: len(histories)] if variant == "tisasrec" else None


@pytest.mark.parametrize("variant", ["sasrec", "tisasrec", "sasrec_moe"])
def test_pipeline_recommends_as_the_recommender(variant, tmp_path):
    model = tiny_model(variant, seed=5)
    tokenizer = build_item_tokenizer(KEYS)
    save_run(model, tokenizer, tmp_path)
    recommend = pipeline(PIPELINE_TASK, model=str(tmp_path), device="cpu")
    assert isinstance(recommend, NextItemRecommendationPipeline)
    recommender = Recommender(model, tokenizer)
    times = times_for(variant, HISTORIES)
    expected = recommender(HISTORIES, top_k=7, timestamps=times)
    assert expected[0]["unknown_items"] == ["no such film"] and expected[2]["fallback"] == POPULARITY_FALLBACK
    for batch_size in (1, 3):  # one history a forward pass, and batches padded by transformers' collator
        assert_same_recommendations(recommend(HISTORIES, top_k=7, timestamps=times, batch_size=batch_size), expected)
    single = recommend(HISTORIES[0], top_k=7, timestamps=times[0] if times else None)
    assert_same_recommendations([single], expected[:1])


def test_exposure_spreads_the_pipeline_lists_as_the_recommender_does(tmp_path):
    model = tiny_model("sasrec", seed=5)
    tokenizer = build_item_tokenizer(KEYS)
    save_run(model, tokenizer, tmp_path)
    recommend = pipeline(PIPELINE_TASK, model=str(tmp_path), device="cpu")
    histories = HISTORIES * 3  # the same users again: alone, they would get the same lists again

    def exposure():
        return ExposurePenalty(VOCAB_SIZE, weight=100.0, k=5, candidates=NUM_ITEMS)

    expected = Recommender(model, tokenizer)(histories, top_k=5, exposure=exposure())
    spread = recommend(histories, top_k=5, exposure=exposure(), batch_size=2)
    assert_same_recommendations(spread, expected)
    plain = recommend(histories, top_k=5, batch_size=2)
    assert len({item for result in spread for item in result["items"]}) > len(
        {item for result in plain for item in result["items"]}
    )
    # the state is kept across calls: one history at a time gives the lists of one call over all of them
    kept = exposure()
    assert_same_recommendations([recommend(history, top_k=5, exposure=kept) for history in histories], expected)


def test_inputs_options_and_errors_match_the_recommender(tmp_path):
    model = tiny_model("tisasrec", seed=2)
    tokenizer = build_item_tokenizer(KEYS)
    save_run(model, tokenizer, tmp_path)
    recommend = pipeline(PIPELINE_TASK, model=str(tmp_path), device="cpu", max_length=2)
    recommender = Recommender(model, tokenizer, max_length=2)
    as_dicts = ({"history": history, "timestamps": times} for history, times in zip(HISTORIES, TIMES, strict=True))
    expected = recommender(HISTORIES, top_k=NUM_ITEMS, exclude_history=False, timestamps=TIMES)
    assert_same_recommendations(list(recommend(as_dicts, top_k=NUM_ITEMS, exclude_history=False)), expected)
    assert set(HISTORIES[3]) <= set(expected[3]["items"])  # history kept, and only the last 2 items read
    with pytest.raises(ValueError, match=r"top_k must lie in \[1, 35\]"):
        recommend(HISTORIES[1], top_k=NUM_ITEMS + 1, timestamps=TIMES[1])
    with pytest.raises(ValueError, match="tisasrec needs timestamps"):
        recommend(HISTORIES[1])
    with pytest.raises(ValueError, match="one time per history item"):
        recommend(HISTORIES[0], timestamps=[1])
    with pytest.raises(ValueError, match="Got 1 timestamp lists for 2 histories"):
        recommend(HISTORIES[:2], timestamps=TIMES[:1])
    with pytest.raises(TypeError, match="not a string"):
        recommend("Film 1 (1991) Film 2 (1992)")


def test_folder_without_item_map_is_refused(tmp_path):
    tiny_model("sasrec", seed=1).save_pretrained(tmp_path)
    build_item_tokenizer(KEYS).save_pretrained(tmp_path)
    with pytest.raises(OSError, match=r"No item2id\.json beside the item tokenizer"):
        pipeline(PIPELINE_TASK, model=str(tmp_path), device="cpu")


@pytest.mark.parametrize(("variant", "saver"), [("sasrec", "Recommender"), ("tisasrec", "pipeline")])
def test_saved_folder_serves_the_pipeline_without_the_package(variant, saver, tmp_path):
    model = tiny_model(variant, seed=9)
    tokenizer = build_item_tokenizer(KEYS)
    recommender = Recommender(model, tokenizer)
    folder = tmp_path / "export"
    if saver == "Recommender":
        recommender.save_pretrained(folder)
    else:
        save_run(model, tokenizer, tmp_path / "run")
        pipeline(PIPELINE_TASK, model=str(tmp_path / "run"), device="cpu").save_pretrained(folder)
    config = json.loads((folder / "config.json").read_text())
    assert config["custom_pipelines"] == {
        PIPELINE_TASK: {"impl": "pipeline_next_item.NextItemRecommendationPipeline", "pt": ["AutoModelForCausalLM"]}
    }
    times = times_for(variant, HISTORIES)
    downstream, _ = run_downstream(DOWNSTREAM, str(folder), json.dumps(HISTORIES), json.dumps(times), cwd=tmp_path)
    assert downstream["module"].startswith("transformers_modules")
    expected = recommender(HISTORIES, top_k=6, timestamps=times)
    assert_same_recommendations(downstream["results"], expected)
    assert_same_recommendations([downstream["single"]], expected[:1])


def test_exported_folder_runs_the_installed_code_only_when_asked(tmp_path):
    """transformers runs a folder's own pipeline code only with `trust_remote_code=True`, even for a registered task;
    `pipeline_class` runs the installed pipeline instead."""
    model = tiny_model("sasrec_rope", seed=4)
    tokenizer = build_item_tokenizer(KEYS)
    Recommender(model, tokenizer).save_pretrained(tmp_path)
    with pytest.raises(ValueError, match="trust_remote_code=True"):
        pipeline(PIPELINE_TASK, model=str(tmp_path), device="cpu")
    recommend = pipeline(model=str(tmp_path), pipeline_class=NextItemRecommendationPipeline, device="cpu")
    assert type(recommend) is NextItemRecommendationPipeline
    assert_same_recommendations(recommend(HISTORIES, top_k=5), Recommender(model, tokenizer)(HISTORIES, top_k=5))
