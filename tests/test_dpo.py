"""DPO alignment of a tiny recommender through `RecommenderDPOTrainer` (TRL's DPOTrainer)."""

import json
import re
from pathlib import Path

import huggingface_hub
import pytest
import torch
import torch.nn.functional as F
from datasets import Dataset, DatasetDict
from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer
from trl.trainer.dpo_trainer import DataCollatorForPreference
from trl.trainer.utils import add_fused_lm_head

from hf_sasrec.dpo import main, make_parser, run_from_command_line
from hf_sasrec.dpo_config import RecommenderDPOConfig
from hf_sasrec.dpo_trainer import RecommenderDPOTrainer, keep_recent_history, softmax_dpo_loss
from hf_sasrec.item_tokenizer import NUM_SPECIAL_TOKENS, build_item_tokenizer, item_to_token, save_item_tokenizer

NUM_ITEMS = 40
DEFAULT_CONFIG = str(Path(__file__).parents[1] / "train_configs" / "dpo" / "default.yaml")
NUM_USERS = 48


@pytest.fixture(autouse=True)
def no_telemetry(monkeypatch):
    """TRL's trainers ping the Hub on creation unless telemetry is off: tests never touch the network."""
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_DISABLE_TELEMETRY", True)


@pytest.fixture(scope="module")
def tokenizer():
    return build_item_tokenizer([str(item) for item in range(NUM_ITEMS)])


def token(item: int) -> str:
    """The token of raw item `item`."""
    return item_to_token(str(item))


def preference_rows(tokenizer, num_rejected: int = 3) -> list[dict]:
    """A learnable preference: after history `h`, item `h[-1] + 1` is chosen over `h[-1] + 7`, `+ 9`, `+ 11`."""
    generator = torch.Generator().manual_seed(0)
    rows = []
    for user in range(NUM_USERS):
        history = torch.randint(0, NUM_ITEMS, (6,), generator=generator).tolist()
        rejected = [token((history[-1] + offset) % NUM_ITEMS) for offset in (7, 9, 11)[:num_rejected]]
        rows.append(
            {
                "prompt": " ".join(token(item) for item in history),
                "chosen": token((history[-1] + 1) % NUM_ITEMS),
                "rejected": rejected[0],
                "rejected_all": rejected,
                "user_id": str(user),
            }
        )
    return rows


def tiny_model(model_type: str = "sasrec", seed: int = 0, **overrides) -> torch.nn.Module:
    config = AutoConfig.for_model(
        model_type,
        vocab_size=NUM_ITEMS + NUM_SPECIAL_TOKENS,
        hidden_size=16,
        num_hidden_layers=1,
        num_attention_heads=2,
        max_position_embeddings=16,
        **overrides,
    )
    torch.manual_seed(seed)
    return AutoModelForCausalLM.from_config(config)


def dpo_config(tmp_path, **overrides) -> RecommenderDPOConfig:
    values = {
        "output_dir": str(tmp_path / "dpo"),
        "beta": 0.5,
        "learning_rate": 1e-2,
        "per_device_train_batch_size": 16,
        "max_steps": 6,
        "logging_steps": 2,
        "max_length": 8,
        "report_to": "none",
        "save_strategy": "no",
        "bf16": False,
        "activation_checkpointing": False,
        "use_cpu": True,
        **overrides,
    }
    return RecommenderDPOConfig(**values)


def make_trainer(tmp_path, tokenizer, rows, model_type="sasrec", **overrides) -> RecommenderDPOTrainer:
    model = tiny_model(model_type)
    ref_model = tiny_model(model_type)
    return RecommenderDPOTrainer(
        model,
        ref_model=ref_model,
        args=dpo_config(tmp_path, **overrides),
        train_dataset=Dataset.from_list(rows),
        processing_class=tokenizer,
    )


@torch.no_grad()
def mean_log_prob_margin(model, tokenizer, rows) -> float:
    """Mean of `log p(chosen) - log p(rejected)` over the rows, scored by the model's own next-item logits."""
    model.eval()
    histories = [tokenizer.convert_tokens_to_ids(row["prompt"].split()) for row in rows]
    length = max(map(len, histories))
    input_ids = torch.tensor([[0] * (length - len(h)) + h for h in histories])
    scores = model(input_ids=input_ids, logits_to_keep=1).logits[:, -1].log_softmax(-1)
    chosen = torch.tensor(tokenizer.convert_tokens_to_ids([row["chosen"] for row in rows]))
    rejected = torch.tensor(tokenizer.convert_tokens_to_ids([row["rejected"] for row in rows]))
    rows_index = torch.arange(len(rows))
    return (scores[rows_index, chosen] - scores[rows_index, rejected]).mean().item()


@pytest.mark.parametrize(
    ("model_type", "loss_type"),
    [
        ("sasrec", "sigmoid"),
        ("sasrec", "ipo"),
        ("sasrec", "hinge"),
        ("sasrec", "softmax_dpo"),
        ("sasrec_moe", "sigmoid"),
    ],
)
def test_margin_grows_and_reference_is_frozen(tmp_path, tokenizer, model_type, loss_type):
    rows = preference_rows(tokenizer)
    trainer = make_trainer(tmp_path, tokenizer, rows, model_type, loss_type=[loss_type])
    reference = {name: weight.clone() for name, weight in trainer.ref_model.state_dict().items()}
    margin_before = mean_log_prob_margin(trainer.model, tokenizer, rows)
    trainer.train()
    margin_after = mean_log_prob_margin(trainer.model, tokenizer, rows)
    assert margin_after > margin_before + 0.2
    logged = [entry for entry in trainer.state.log_history if "rewards/margins" in entry]
    assert logged[-1]["rewards/margins"] > logged[0]["rewards/margins"]
    assert {"rewards/chosen", "rewards/rejected", "rewards/accuracies"} <= logged[-1].keys()
    for name, weight in trainer.ref_model.state_dict().items():
        torch.testing.assert_close(weight, reference[name], rtol=0, atol=0)


def test_models_answer_trls_fused_head_call_themselves(tmp_path, tokenizer):
    """TRL's `fused_lm_head=True` call reaches the model's own forward (TRL's wrapper is dropped): it gives TRL's
    chosen-minus-rejected log-probability margins (the normaliser differs by the special tokens and cancels), and
    items-only log-probabilities."""
    trainer = make_trainer(tmp_path, tokenizer, preference_rows(tokenizer))
    assert "forward" not in vars(trainer.model) and "forward" not in vars(trainer.ref_model)
    batch = DataCollatorForPreference(pad_token_id=0)([trainer.train_dataset[index] for index in range(8)])
    labels = batch["input_ids"].masked_fill(batch["completion_mask"] == 0, -100)
    inputs = {"input_ids": batch["input_ids"], "attention_mask": batch["attention_mask"]}
    trl_model = tiny_model().eval()
    add_fused_lm_head(trl_model)
    with torch.no_grad():
        ours = trainer.ref_model(**inputs, labels=labels, fused_lm_head=True).log_probs.sum(1)
        theirs = trl_model(**inputs, labels=labels, fused_lm_head=True).log_probs.sum(1)
        item_scores = trl_model(**inputs).logits[..., NUM_SPECIAL_TOKENS:].log_softmax(-1)
    torch.testing.assert_close(ours[:8] - ours[8:], theirs[:8] - theirs[8:])
    completion = batch["completion_mask"].argmax(1)
    rows = torch.arange(16)
    expected = item_scores[rows, completion - 1, batch["input_ids"][rows, completion] - NUM_SPECIAL_TOKENS]
    torch.testing.assert_close(ours, expected)


def test_softmax_dpo_with_one_rejected_is_sigmoid_dpo():
    generator = torch.Generator().manual_seed(0)
    chosen, rejected = torch.randn(5, generator=generator), torch.randn(5, generator=generator)
    expected = -F.logsigmoid(0.3 * (chosen - rejected))
    torch.testing.assert_close(softmax_dpo_loss(chosen, rejected[:, None], 0.3), expected)


def test_softmax_dpo_trainer_with_one_rejected_matches_trl_sigmoid_loss(tmp_path, tokenizer):
    """The softmax-DPO path (one forward pass, item-only softmax) gives TRL's own sigmoid loss when K = 1."""
    rows = preference_rows(tokenizer, num_rejected=1)
    losses = {}
    for loss_type in ("sigmoid", "softmax_dpo"):
        trainer = make_trainer(tmp_path, tokenizer, rows, loss_type=[loss_type], learning_rate=0.0, max_steps=1)
        trainer.model.lm_head.weight.data.mul_(20)  # a policy that differs from the reference
        losses[loss_type] = trainer.evaluate(Dataset.from_list(rows))["eval_loss"]
    assert losses["sigmoid"] != pytest.approx(0.6931, abs=1e-3)
    assert losses["softmax_dpo"] == pytest.approx(losses["sigmoid"], rel=1e-5)


def test_precomputed_reference_gives_the_same_loss(tmp_path, tokenizer):
    rows = preference_rows(tokenizer)
    losses = []
    for precompute in (False, True):
        trainer = make_trainer(
            tmp_path,
            tokenizer,
            rows,
            loss_type=["softmax_dpo"],
            precompute_ref_log_probs=precompute,
            learning_rate=0.0,
        )
        trainer.model.lm_head.weight.data.mul_(20)
        losses.append(trainer.evaluate(Dataset.from_list(rows))["eval_loss"])
    assert losses[0] == pytest.approx(losses[1], rel=1e-5)


@pytest.mark.parametrize("loss_type", ["sigmoid", "softmax_dpo"])
def test_precomputed_reference_is_the_reference_models_items_only_scores(tmp_path, tokenizer, loss_type):
    """TRL precomputes the reference log-probabilities inside `__init__`, right after adding its own fused LM head:
    they are still the reference model's own, normalised over items as the ranking evaluation scores them."""
    rows = preference_rows(tokenizer)
    trainer = make_trainer(tmp_path, tokenizer, rows, loss_type=[loss_type], precompute_ref_log_probs=True)
    histories = torch.tensor([tokenizer.convert_tokens_to_ids(row["prompt"].split()) for row in rows])
    with torch.no_grad():
        logits = trainer.ref_model.eval()(input_ids=histories, logits_to_keep=1).logits[:, -1]
    item_log_probs = logits[:, NUM_SPECIAL_TOKENS:].log_softmax(-1)
    chosen = torch.tensor(tokenizer.convert_tokens_to_ids([row["chosen"] for row in rows])) - NUM_SPECIAL_TOKENS
    expected = item_log_probs.gather(1, chosen[:, None]).squeeze(1)
    torch.testing.assert_close(torch.tensor(trainer.train_dataset["ref_chosen_logps"]), expected)


def test_saved_model_loads_with_auto_classes(tmp_path, tokenizer):
    rows = preference_rows(tokenizer)
    trainer = make_trainer(tmp_path, tokenizer, rows)
    trainer.train()
    trainer.save_model(str(tmp_path / "saved"))
    model = AutoModelForCausalLM.from_pretrained(tmp_path / "saved").eval()
    loaded_tokenizer = AutoTokenizer.from_pretrained(tmp_path / "saved")
    assert loaded_tokenizer(rows[0]["prompt"]).input_ids == tokenizer(rows[0]["prompt"]).input_ids
    assert mean_log_prob_margin(model, loaded_tokenizer, rows) == pytest.approx(
        mean_log_prob_margin(trainer.model, tokenizer, rows), rel=1e-5
    )


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"prompt": "not-an-item"}, r"row 1: .*unknown items \['not-an-item'\]"),
        ({"chosen": "<MASK>"}, r"row 1: .*unknown items \['<MASK>'\]"),
        ({"prompt": "  "}, "row 1: empty prompt"),
        ({"rejected": "CHOSEN"}, "row 1: chosen .* is also rejected"),
    ],
)
def test_malformed_rows_are_reported_with_their_index(tmp_path, tokenizer, change, message):
    rows = preference_rows(tokenizer)
    rows[1] = {**rows[1], **{key: rows[1]["chosen"] if value == "CHOSEN" else value for key, value in change.items()}}
    with pytest.raises(ValueError, match=message):
        make_trainer(tmp_path, tokenizer, rows)


def test_malformed_rows_can_be_dropped_with_a_logged_count(tmp_path, tokenizer, caplog):
    rows = preference_rows(tokenizer)
    rows[3]["prompt"] = ""
    rows[5]["chosen"] = "not-an-item"
    with caplog.at_level("WARNING", logger="hf_sasrec.dpo_trainer"):
        trainer = make_trainer(tmp_path, tokenizer, rows, drop_malformed_rows=True)
    assert len(trainer.train_dataset) == NUM_USERS - 2
    assert "2 malformed preference rows of 48" in caplog.text
    assert "row 3: empty prompt" in caplog.text and "row 5: unknown items ['not-an-item']" in caplog.text


def test_softmax_dpo_rejects_a_chosen_item_among_the_rejected(tmp_path, tokenizer):
    rows = preference_rows(tokenizer)
    rows[2]["rejected_all"] = [rows[2]["rejected"], rows[2]["chosen"], rows[2]["rejected_all"][2]]
    with pytest.raises(ValueError, match=r"row 2: chosen .* is also rejected"):
        make_trainer(tmp_path, tokenizer, rows, loss_type=["softmax_dpo"])


def test_history_keeps_its_most_recent_items(tmp_path, tokenizer):
    assert keep_recent_history([1, 2, 3, 4, 5], completion_length=1, max_length=3) == [4, 5]
    rows = preference_rows(tokenizer)
    trainer = make_trainer(tmp_path, tokenizer, rows, max_length=4)
    expected = tokenizer.convert_tokens_to_ids(rows[0]["prompt"].split())[-3:]
    assert trainer.train_dataset[0]["prompt_ids"] == expected


def test_tisasrec_is_refused_clearly(tmp_path, tokenizer):
    with pytest.raises(ValueError, match="tisasrec"):
        make_trainer(tmp_path, tokenizer, preference_rows(tokenizer), model_type="tisasrec")


def test_a_model_with_user_features_is_refused_clearly(tmp_path, tokenizer):
    user_features = [{"name": "gender", "kind": "categorical", "vocab_size": 5}]
    with pytest.raises(ValueError, match="DPO does not support models with user features"):
        RecommenderDPOTrainer(
            tiny_model("sasrec", user_features=user_features),
            args=dpo_config(tmp_path),
            train_dataset=Dataset.from_list(preference_rows(tokenizer)),
            processing_class=tokenizer,
        )


def test_yaml_and_overrides():
    script_args, config = make_parser().parse_args_and_config(
        ["--config", DEFAULT_CONFIG, "--beta=0.5", "--loss_type", "ipo", "--source", "popular"]
    )
    assert (config.beta, config.loss_type, config.max_completion_length) == (0.5, ["ipo"], 1)
    assert (config.report_to, config.learning_rate) == (["tensorboard"], 5e-4)
    assert script_args.source == "popular"


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        (["--bta=0.5"], r"Unknown key\(s\) \['bta'\] in the command line; did you mean 'beta'"),
        (["beta=0.5"], "options are written --key value or --key=value: --beta=0.5"),
        (["--source", "nearest"], "source: invalid choice: 'nearest'"),
        (["--loss_type", "sdpo"], "loss_type 'sdpo' is now called 'softmax_dpo'"),
        (["--loss_type", "softmax_dpo", "sigmoid"], "'softmax_dpo' cannot be combined with other losses"),
        (["--loss_type", "softmax_dpo", "--max_completion_length=2"], "set max_completion_length=1"),
        (["--max_length=1"], r"max_length \(1\) must exceed max_completion_length \(1\)"),
    ],
)
def test_bad_arguments_are_one_line_errors(capsys, arguments, message):
    with pytest.raises(SystemExit) as exit_info:
        run_from_command_line(["--config", DEFAULT_CONFIG, *arguments])
    assert exit_info.value.code == 2
    error = capsys.readouterr().err
    assert error.startswith("hf_sasrec.dpo: ") and error.count("\n") == 1
    assert re.search(message, error)


def test_run_builds_pairs_and_writes_model_tokenizer_and_side_by_side_metrics(tmp_path, tokenizer):
    """The entry point on a saved tiny SFT run: pairs built by the data issue's builder, metrics before and after DPO
    from the same evaluation, model and tokenizer saved."""
    rows = preference_rows(tokenizer)
    sft_dir, data_dir = tmp_path / "sft", tmp_path / "data"
    tiny_model().save_pretrained(sft_dir)
    save_item_tokenizer(tokenizer, sft_dir)
    save_item_tokenizer(tokenizer, data_dir / "tokenizer")
    (sft_dir / "run_info.json").write_text(
        json.dumps({"data_dir": str(data_dir), "model_type": "sasrec", "max_length": 8})
    )
    ids = [tokenizer.convert_tokens_to_ids([*row["prompt"].split(), row["chosen"]]) for row in rows]
    split = Dataset.from_dict({"user_id": [row["user_id"] for row in rows], "item_ids": ids})
    DatasetDict({"train": split, "valid": split, "test": split}).save_to_disk(data_dir)
    script_args, args = make_parser().parse_args_and_config(
        [
            "--config",
            DEFAULT_CONFIG,
            f"--output_dir={tmp_path / 'dpo'}",
            f"--sft_dir={sft_dir}",
            f"--preference_dir={tmp_path / 'pairs'}",
            "--source=popular",
            "--max_steps=4",
            "--learning_rate=0.01",
            "--report_to=none",
        ]
    )
    metrics = main(script_args, args)
    assert len(Dataset.load_from_disk(tmp_path / "pairs")) == metrics["num_pairs"] == NUM_USERS
    saved = json.loads((tmp_path / "dpo" / "metrics.json").read_text())
    ndcg = saved["test"]["full/ndcg@10"]
    assert ndcg.keys() == {"sft", "sft_ci95", "dpo", "dpo_ci95", "change", "change_ci95"}
    assert ndcg["change"] == pytest.approx(ndcg["dpo"] - ndcg["sft"]) and ndcg["change_ci95"] >= 0
    coverage = saved["test"]["full/coverage@10"]  # with its bootstrap intervals, the change paired
    assert coverage.keys() == ndcg.keys() and coverage["change"] == pytest.approx(coverage["dpo"] - coverage["sft"])
    assert coverage["sft_ci95"] > 0 and coverage["dpo_ci95"] > 0
    assert next(iter(saved["test"])) == "full/popularity_percentile@10"  # the popular source's goal comes first
    assert saved["test"] == metrics["test"]
    assert saved["test"]["full/mrr"]["sft"] != saved["test"]["full/mrr"]["dpo"]
    assert "rewards/margins" in saved["dpo_last_log"]
    assert AutoModelForCausalLM.from_pretrained(tmp_path / "dpo").config.model_type == "sasrec"
    assert AutoTokenizer.from_pretrained(tmp_path / "dpo").get_vocab() == tokenizer.get_vocab()
    assert (tmp_path / "dpo" / "item2id.json").read_text() == (sft_dir / "item2id.json").read_text()
