"""End-to-end training with `python -m hf_sasrec.sft` on a tiny dataset: outputs, bad input, resumption."""

import json

import pytest
import torch
from datasets import DatasetDict
from sft_helpers import tiny_run_arguments, write_tiny_dataset
from transformers import AutoModelForCausalLM, AutoTokenizer

from hf_sasrec import evaluate, sft
from hf_sasrec.sft_trainer import NextItemTrainer
from hf_sasrec.training_args import parse_sft_args


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    return write_tiny_dataset(tmp_path_factory.mktemp("tiny") / "data")


def test_run_folder_holds_a_loadable_model_that_learned(data_dir, tmp_path):
    output_dir = tmp_path / "run"
    metrics = sft.main(tiny_run_arguments(data_dir, output_dir, num_train_epochs=3))
    for name in ("model.safetensors", "config.json", "metrics.json", "trainer_state.json", "run_info.json"):
        assert (output_dir / name).is_file(), name
    assert json.loads((output_dir / "metrics.json").read_text()) == pytest.approx(metrics)
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


def test_overrides_reach_training_arguments_and_config(tmp_path):
    config = tmp_path / "run.yaml"
    config.write_text("model_config: model_configs/sasrec_moe\nlearning_rate: 1e-3\nnum_experts: 8\n")
    model_args, data_args, training_args, fields = parse_sft_args(
        [str(config), "num_experts_per_tok=3", "max_length=30", "per_device_train_batch_size=7"]
    )
    assert model_args.model_type == "sasrec_moe"
    assert training_args.learning_rate == 1e-3 and training_args.per_device_train_batch_size == 7
    assert data_args.max_length == 30
    assert fields["num_experts"] == 8 and fields["num_experts_per_tok"] == 3 and fields["hidden_size"] == 64


@pytest.mark.parametrize(
    ("overrides", "error", "message"),
    [
        ({"hidden_sise": 32}, ValueError, r"Unknown key\(s\) \['hidden_sise'\]"),
        ({"data_dir": "/nonexistent/data"}, FileNotFoundError, "Dataset path '/nonexistent/data' does not exist"),
        ({"vocab_size": 99}, ValueError, r"vocab_size 99 differs from the tokenizer's vocabulary \(35 tokens\)"),
        ({"model_type": "tisasrec", "no_timestamps": True}, ValueError, "tisasrec needs timestamps"),
        ({"eval_protocol": "sampled"}, ValueError, "metric_for_best_model 'full/ndcg@10' is not logged"),
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
def test_killed_run_resumes_to_the_same_metrics(data_dir, tmp_path, monkeypatch, sampling):
    """Train 3 epochs straight; train again, killed in epoch 2 (after the epoch-1 checkpoint), then resume."""
    arguments = {
        "num_train_epochs": 3,
        "hidden_dropout_prob": 0.3,
        "attention_dropout": 0.1,
        "train_sampling_strategy": sampling,
    }
    straight = sft.main(tiny_run_arguments(data_dir, tmp_path / "straight", **arguments))

    original_step = NextItemTrainer.training_step

    def killed_at_step_8(trainer, *args, **kwargs):
        if trainer.state.global_step == 8:
            raise KeyboardInterrupt("killed")
        return original_step(trainer, *args, **kwargs)

    monkeypatch.setattr(NextItemTrainer, "training_step", killed_at_step_8)
    with pytest.raises(KeyboardInterrupt):
        sft.main(tiny_run_arguments(data_dir, tmp_path / "resumed", **arguments))
    assert sorted(path.name for path in (tmp_path / "resumed").glob("checkpoint-*")) == ["checkpoint-6"]
    monkeypatch.setattr(NextItemTrainer, "training_step", original_step)
    resumed = sft.main(tiny_run_arguments(data_dir, tmp_path / "resumed", resume_from_checkpoint="auto", **arguments))
    assert resumed["global_step"] == straight["global_step"] == 18
    for name, value in straight.items():
        if "/" in name:
            assert resumed[name] == pytest.approx(value, abs=1e-6), name
    straight_weights = AutoModelForCausalLM.from_pretrained(tmp_path / "straight").state_dict()
    resumed_weights = AutoModelForCausalLM.from_pretrained(tmp_path / "resumed").state_dict()
    for name, tensor in straight_weights.items():
        torch.testing.assert_close(resumed_weights[name], tensor, msg=name)
