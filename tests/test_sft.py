"""End-to-end training with `python -m hf_sasrec.sft` on a tiny dataset: outputs, bad input, resumption, run
folders that are never replaced without being asked, evaluation settings read from the training arguments, inputs
prepared on first use."""

import json
import logging
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from datasets import DatasetDict
from sft_helpers import cut_in_half, tiny_run_arguments, write_tiny_dataset
from transformers import AutoModelForCausalLM, AutoTokenizer, TrainingArguments

from hf_sasrec import evaluate, sft
from hf_sasrec.configuration_sasrec import SASRecConfig
from hf_sasrec.data_collator import NextItemCollator
from hf_sasrec.modeling_sasrec import SASRecForCausalLM
from hf_sasrec.reranking import ExposurePenalty
from hf_sasrec.sft_trainer import NextItemTrainer
from hf_sasrec.training_args import DataArguments, ModelArguments, SFTTrainingArguments, parse_sft_args

RESUMABLE_RUN = {"num_train_epochs": 3, "hidden_dropout_prob": 0.3, "attention_dropout": 0.1}


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    return write_tiny_dataset(tmp_path_factory.mktemp("tiny") / "data")


@pytest.fixture(scope="module")
def straight_run(data_dir, tmp_path_factory):
    """`sampling -> (metrics, output_dir)` of an uninterrupted `RESUMABLE_RUN`, trained on first use."""
    runs = {}

    def run(sampling: str) -> tuple[dict, Path]:
        if sampling not in runs:
            output_dir = tmp_path_factory.mktemp("straight") / "run"
            arguments = tiny_run_arguments(data_dir, output_dir, train_sampling_strategy=sampling, **RESUMABLE_RUN)
            runs[sampling] = sft.main(arguments), output_dir
        return runs[sampling]

    return run


def interrupt_at_step(monkeypatch, step: int) -> None:
    """Make `NextItemTrainer.training_step` raise `KeyboardInterrupt` once `step` steps are done."""
    original_step = NextItemTrainer.training_step

    def interrupted(trainer, *args, **kwargs):
        if trainer.state.global_step == step:
            raise KeyboardInterrupt("killed")
        return original_step(trainer, *args, **kwargs)

    monkeypatch.setattr(NextItemTrainer, "training_step", interrupted)


def saved_log_history(output_dir: Path) -> list[dict]:
    """The `log_history` of the run folder's `trainer_state.json`."""
    return json.loads((output_dir / "trainer_state.json").read_text())["log_history"]


def assert_same_ranking_metrics(metrics: dict, expected: dict) -> None:
    """Every ranking metric (`name/...`) of `metrics` equals that of `expected` (to 1e-6)."""
    for name, value in expected.items():
        if "/" in name:
            assert metrics[name] == pytest.approx(value, abs=1e-6), name


def test_run_folder_holds_a_loadable_model_that_learned(data_dir, tmp_path):
    output_dir = tmp_path / "run"
    metrics = sft.main(tiny_run_arguments(data_dir, output_dir, num_train_epochs=3))
    for name in ("model.safetensors", "config.json", "metrics.json", "trainer_state.json", "run_info.json"):
        assert (output_dir / name).is_file(), name
    assert json.loads((output_dir / "metrics.json").read_text()) == pytest.approx(metrics)
    assert metrics["stopped_early"] is False and metrics["global_step"] == 18
    assert json.loads((output_dir / "run_info.json").read_text())["model_type"] == "sasrec"
    assert "AutoModelForCausalLM" in json.loads((output_dir / "config.json").read_text())["auto_map"]
    tokenizer = AutoTokenizer.from_pretrained(output_dir)
    assert len(tokenizer) == 35 and tokenizer("item0 item1")["input_ids"] == [5, 6]
    # Items follow each other in the tiny data: a trained model ranks the next item far above chance (10/30).
    assert metrics["test_full/hr@10"] > 0.6
    model = AutoModelForCausalLM.from_pretrained(output_dir, trust_remote_code=True)
    reloaded = sft.evaluate_next_item(model, DatasetDict.load_from_disk(str(data_dir))["test"], max_length=8)
    assert reloaded["full/ndcg@10"] == pytest.approx(metrics["test_full/ndcg@10"])
    # The standalone command finds the data and max_length in run_info.json and gives the same test metrics.
    standalone = evaluate.main([str(output_dir), "--protocol", "full", "sampled", "--batch-size", "5"])
    assert standalone == pytest.approx({name: value for name, value in metrics.items() if name.startswith("test_")})
    # --exposure-weight ranks the lists of ExposurePenalty (here the model alone already covers the catalog)
    spread = evaluate.main([str(output_dir), "--batch-size", "5", "--exposure-weight", "100"])
    test = DatasetDict.load_from_disk(str(data_dir))["test"]
    expected = sft.evaluate_next_item(model, test, max_length=8, rerank=ExposurePenalty(model.config.vocab_size, 100))
    for name in ("full/ndcg@10", "full/hr@10", "full/mrr", "full/coverage@10"):
        assert spread[f"test_{name}"] == pytest.approx(expected[name])
    assert spread["test_full/ndcg@10"] != pytest.approx(standalone["test_full/ndcg@10"])
    state = json.loads((output_dir / "trainer_state.json").read_text())
    assert state["best_metric"] == pytest.approx(
        max(e["eval_full/ndcg@10"] for e in state["log_history"] if "eval_full/ndcg@10" in e)
    )


def test_tisasrec_trains_on_the_timestamps_of_the_data(data_dir, tmp_path):
    metrics = sft.main(
        tiny_run_arguments(data_dir, tmp_path / "run", model_type="tisasrec", num_train_epochs=3, time_span=64)
    )
    assert json.loads((tmp_path / "run" / "config.json").read_text())["model_type"] == "tisasrec"
    assert metrics["test_full/hr@10"] > 0.6


def test_the_final_evaluation_of_a_user_sample_says_so_and_ranks_those_users(data_dir, tmp_path):
    """`test_max_users`: the final metrics are those of a fixed random sample, and they say how many of how many."""
    output_dir = tmp_path / "run"
    metrics = sft.main(tiny_run_arguments(data_dir, output_dir, num_train_epochs=1, test_max_users=20))
    test = DatasetDict.load_from_disk(str(data_dir))["test"]
    assert metrics["test_full/num_users"] == 20 and metrics["test_full/users_sampled_from"] == len(test) > 20
    model = AutoModelForCausalLM.from_pretrained(output_dir, trust_remote_code=True)
    sample = sft.evaluate_next_item(model, test, max_length=8, max_users=20, seed=0)
    assert sample["full/ndcg@10"] == pytest.approx(metrics["test_full/ndcg@10"])


@pytest.mark.parametrize(
    ("overrides", "error", "message"),
    [
        ({"hidden_sise": 32}, ValueError, r"Unknown key\(s\) \['hidden_sise'\]"),
        ({"data_dir": "/nonexistent/data"}, FileNotFoundError, "Dataset path '/nonexistent/data' does not exist"),
        ({"vocab_size": 99}, ValueError, r"vocab_size 99 differs from the tokenizer's vocabulary \(35 tokens\)"),
        ({"model_type": "tisasrec", "no_timestamps": True}, ValueError, "tisasrec needs timestamps"),
        ({"eval_protocol": "sampled"}, ValueError, "metric_for_best_model 'full/ndcg@10' is not logged"),
        ({"test_max_users": 0}, ValueError, "test_max_users must be a positive number of users, got 0"),
    ],
)
def test_bad_input_stops_before_training(data_dir, tmp_path, monkeypatch, overrides, error, message):
    if overrides.pop("no_timestamps", False):
        splits = DatasetDict.load_from_disk(str(data_dir)).remove_columns("timestamps")
        splits.save_to_disk(str(tmp_path / "data"))
        (tmp_path / "data" / "tokenizer").symlink_to(data_dir / "tokenizer")
        (tmp_path / "data" / "stats.json").write_text(json.dumps({"dataset": "tiny", "has_timestamps": False}))
        overrides["data_dir"] = tmp_path / "data"
    monkeypatch.setattr(NextItemTrainer, "training_step", lambda *args: pytest.fail("a training step ran"))
    with pytest.raises(error, match=message):
        sft.main(tiny_run_arguments(overrides.pop("data_dir", data_dir), tmp_path / "run", **overrides))
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("sampling", ["random", "group_by_length"])
def test_killed_run_resumes_to_the_same_metrics(data_dir, tmp_path, monkeypatch, straight_run, sampling):
    """Train 3 epochs straight; train again, killed in epoch 2 (after the epoch-1 checkpoint), then resume."""
    straight, straight_dir = straight_run(sampling)
    arguments = {"train_sampling_strategy": sampling, **RESUMABLE_RUN}
    interrupt_at_step(monkeypatch, 8)
    with pytest.raises(KeyboardInterrupt):
        sft.main(tiny_run_arguments(data_dir, tmp_path / "resumed", **arguments))
    assert sorted(path.name for path in (tmp_path / "resumed").glob("checkpoint-*")) == ["checkpoint-6"]
    monkeypatch.undo()
    resumed = sft.main(tiny_run_arguments(data_dir, tmp_path / "resumed", resume_from_checkpoint="auto", **arguments))
    assert resumed["global_step"] == straight["global_step"] == 18
    assert_same_ranking_metrics(resumed, straight)
    straight_weights = AutoModelForCausalLM.from_pretrained(straight_dir).state_dict()
    resumed_weights = AutoModelForCausalLM.from_pretrained(tmp_path / "resumed").state_dict()
    for name, tensor in straight_weights.items():
        torch.testing.assert_close(resumed_weights[name], tensor, msg=name)


def test_auto_resume_skips_a_truncated_last_checkpoint(data_dir, tmp_path, monkeypatch, caplog, straight_run):
    """Killed after the epoch-2 checkpoint, whose weights are then cut in half: `auto` resumes from epoch 1."""
    output_dir = tmp_path / "run"
    interrupt_at_step(monkeypatch, 14)
    with pytest.raises(KeyboardInterrupt):
        sft.main(tiny_run_arguments(data_dir, output_dir, **RESUMABLE_RUN))
    monkeypatch.undo()
    cut_in_half(output_dir / "checkpoint-12" / "model.safetensors")
    with caplog.at_level(logging.WARNING):
        resumed = sft.main(tiny_run_arguments(data_dir, output_dir, resume_from_checkpoint="auto", **RESUMABLE_RUN))
    assert f"Skipped {output_dir / 'checkpoint-12'}: model.safetensors does not load (SafetensorError" in caplog.text
    assert (output_dir / "skipped-checkpoints" / "checkpoint-12" / "model.safetensors").is_file()
    assert resumed["global_step"] == 18
    assert_same_ranking_metrics(resumed, straight_run("group_by_length")[0])  # the default batches


def test_auto_resume_skips_a_broken_best_checkpoint_and_ends_without_it(data_dir, tmp_path, monkeypatch, caplog):
    """The resumed checkpoint records an older best one whose weights are broken: it is skipped too, and training ends
    with the other weights (`model_step`) instead of failing to load it at the end."""
    arguments = {**RESUMABLE_RUN, "greater_is_better": False}  # the first evaluation stays the best
    output_dir = tmp_path / "run"
    interrupt_at_step(monkeypatch, 14)
    with pytest.raises(KeyboardInterrupt):
        sft.main(tiny_run_arguments(data_dir, output_dir, **arguments))
    monkeypatch.undo()
    state = json.loads((output_dir / "checkpoint-12" / "trainer_state.json").read_text())
    assert state["best_model_checkpoint"] == str(output_dir / "checkpoint-6")
    cut_in_half(output_dir / "checkpoint-6" / "model.safetensors")
    with caplog.at_level(logging.WARNING):
        resumed = sft.main(tiny_run_arguments(data_dir, output_dir, resume_from_checkpoint="auto", **arguments))
    assert "model.safetensors does not load" in caplog.text
    assert "it was the best checkpoint recorded by checkpoint-12" in caplog.text
    assert resumed["global_step"] == resumed["model_step"] == 18


def test_a_run_in_output_dir_is_refused_unless_resumed_or_overwritten(data_dir, tmp_path, monkeypatch, capsys):
    """A second run into a finished run's folder stops before loading data and leaves it as it was; the message names
    both ways on, and `--overwrite_output_dir` replaces the run, old checkpoints included."""
    output_dir = tmp_path / "run"
    sft.main(tiny_run_arguments(data_dir, output_dir))
    weights = (output_dir / "model.safetensors").read_bytes()
    monkeypatch.setattr(sft, "load_processed_data", lambda *args: pytest.fail("the data was loaded"))
    rerun = tiny_run_arguments(data_dir, output_dir, num_train_epochs=3)
    with pytest.raises(ValueError, match=r"--resume_from_checkpoint auto .*--overwrite_output_dir"):
        sft.main(rerun)
    monkeypatch.setattr(sys, "argv", ["hf_sasrec.sft", *rerun])
    with pytest.raises(SystemExit) as stopped:
        sft.run_from_command_line()
    assert str(stopped.value.code).startswith(f"hf_sasrec.sft: output_dir '{output_dir}' already holds files (")
    assert (output_dir / "model.safetensors").read_bytes() == weights
    assert sorted(path.name for path in output_dir.glob("checkpoint-*")) == ["checkpoint-12", "checkpoint-6"]
    monkeypatch.undo()
    replaced = sft.main(tiny_run_arguments(data_dir, output_dir, num_train_epochs=1, overwrite_output_dir=True))
    assert replaced["global_step"] == 6
    assert sorted(path.name for path in output_dir.glob("checkpoint-*")) == ["checkpoint-6"]
    assert json.loads((output_dir / "metrics.json").read_text())["global_step"] == 6


def test_early_stopping_and_the_best_epoch_are_in_the_log_and_metrics(data_dir, tmp_path, caplog):
    with caplog.at_level(logging.INFO):
        metrics = sft.main(
            tiny_run_arguments(data_dir, tmp_path / "run", num_train_epochs=30, early_stopping_patience=1)
        )
    saved = json.loads((tmp_path / "run" / "metrics.json").read_text())
    evaluations = [entry for entry in saved_log_history(tmp_path / "run") if "eval_full/ndcg@10" in entry]
    best = max(evaluations, key=lambda entry: entry["eval_full/ndcg@10"])  # the first of equal ones, as Trainer
    assert saved == pytest.approx(metrics)
    assert saved["stopped_early"] is True and saved["global_step"] < 30 * 6
    assert (saved["best_epoch"], saved["best_step"], saved["model_step"]) == (
        best["epoch"],
        best["step"],
        best["step"],
    )
    assert saved["metric_for_best_model"] == "full/ndcg@10"
    assert saved["best_metric"] == pytest.approx(best["eval_full/ndcg@10"])
    best_text = f"full/ndcg@10 {best['eval_full/ndcg@10']:.4f} at epoch {best['epoch']:g} (step {best['step']})"
    stopped = evaluations[-1]
    assert f"Early stopping at epoch {stopped['epoch']:g} (step {stopped['step']})" in caplog.text
    assert (
        f"Training stopped early at epoch {stopped['epoch']:g} (step {stopped['step']}); best evaluation: "
        f"{best_text}; the model saved is that of step {best['step']}." in caplog.text
    )


@pytest.mark.parametrize("name", ["metrics.json", "run_info.json"])
def test_an_interrupted_write_keeps_the_previous_metrics_and_run_info(data_dir, tmp_path, monkeypatch, name):
    """A write of the run folder killed half way through `name` leaves its previous content, not half a file."""
    tokenizer = AutoTokenizer.from_pretrained(data_dir / "tokenizer")
    training_args = SFTTrainingArguments(output_dir=str(tmp_path), report_to="none")
    arguments = (tokenizer, ModelArguments(model_type="sasrec"), DataArguments(data_dir=str(data_dir)), training_args)
    sft.write_run_folder(str(tmp_path), *arguments, {"test_full/ndcg@10": 0.5}, ["first"])
    before = (tmp_path / name).read_text()
    write_text = Path.write_text

    def killed_half_way(path: Path, text: str, *args, **kwargs):
        if name in path.name:
            write_text(path, text[: len(text) // 2], *args, **kwargs)
            raise KeyboardInterrupt("killed")
        return write_text(path, text, *args, **kwargs)

    monkeypatch.setattr(Path, "write_text", killed_half_way)
    with pytest.raises(KeyboardInterrupt):
        sft.write_run_folder(str(tmp_path), *arguments, {"test_full/ndcg@10": 0.25}, ["second"])
    assert (tmp_path / name).read_text() == before


def test_trainer_evaluates_as_its_training_arguments_say(data_dir, tmp_path):
    """`NextItemTrainer.evaluate` ranks with the protocol, negatives and history rule of `SFTTrainingArguments` and
    cuts histories to the collator's `max_length`."""
    arguments = tiny_run_arguments(data_dir, tmp_path / "run", max_length=4)
    sampled = ["--eval_protocol=sampled", "--metric_for_best_model=sampled/ndcg@10", "--num_sampled_negatives=7"]
    _, data_args, training_args, _ = parse_sft_args([*arguments, *sampled])
    valid = DatasetDict.load_from_disk(str(data_dir))["valid"]
    torch.manual_seed(0)
    model = SASRecForCausalLM(SASRecConfig(vocab_size=35, hidden_size=16, num_attention_heads=2)).eval()
    trainer = NextItemTrainer(
        model=model, args=training_args, eval_dataset=valid, data_collator=NextItemCollator(data_args.max_length)
    )
    logged = trainer.evaluate()
    expected = sft.evaluate_next_item(
        model,
        valid,
        protocol="sampled",
        num_sampled_negatives=7,
        batch_size=training_args.per_device_eval_batch_size,
        max_length=4,
        seed=training_args.seed,
    )
    assert {name.removeprefix("eval_") for name in logged if "/" in name} == set(expected)
    for name, value in expected.items():
        assert logged[f"eval_{name}"] == pytest.approx(value), name
    with pytest.raises(TypeError, match="NextItemTrainer needs SFTTrainingArguments"):
        NextItemTrainer(model=model, args=TrainingArguments(output_dir=str(tmp_path), report_to="none"))


def test_missing_embedded_data_and_item_text_are_prepared_on_first_use(tmp_path, monkeypatch):
    """`data/ml-100k` (the embedded MovieLens-100K) and `DATA_DIR/item_text.npy` are written when a run reads them
    and they are absent; any other absent folder is left to the missing-data error."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sft, "load_encoder", lambda: lambda texts: np.ones((len(texts), 3), dtype=np.float32))
    sft.prepare_missing_inputs(ModelArguments(), DataArguments(data_dir="data/other"))
    assert not (tmp_path / "data").exists()
    sft.prepare_missing_inputs(ModelArguments(item_embeddings="data/ml-100k/item_text.npy"), DataArguments())
    stats = json.loads((tmp_path / "data" / "ml-100k" / "stats.json").read_text())
    assert stats["num_users"] == 943
    vectors = np.load(tmp_path / "data" / "ml-100k" / "item_text.npy")
    assert vectors.shape == (stats["vocab_size"], 3) and vectors[:5].sum() == 0 and vectors[5:].min() == 1
