"""Loading a checkpoint for serving or evaluation refuses what would give silently wrong answers or run code nobody
asked for: a tokenizer of another item order, non-finite weights, a model type whose code only the folder holds, a
mistyped path. Every entry point that loads a checkpoint is covered. Nothing here contacts a remote host."""

import json
import re
import shutil
import socket
import sys
from pathlib import Path

import huggingface_hub
import pytest
import transformers.dynamic_module_utils
from model_helpers import tiny_model
from sft_helpers import write_tiny_dataset
from transformers import AutoTokenizer

from hf_sasrec import dpo, evaluate, infer
from hf_sasrec.checkpoint_loading import ITEM_VOCAB_FINGERPRINT
from hf_sasrec.item_tokenizer import build_item_tokenizer, item_keys, save_item_tokenizer, vocabulary_fingerprint
from hf_sasrec.model_card import RUN_INFO_FILE, push_to_hub, save_for_hub
from hf_sasrec.recommender import Recommender
from hf_sasrec.sft import build_config, build_model
from hf_sasrec.training_args import ModelArguments

DPO_CONFIG = str(Path(__file__).parents[1] / "train_configs" / "dpo" / "default.yaml")
CORRUPT_TENSOR = "model.layers.1.mlp.down_proj.weight"


@pytest.fixture(autouse=True)
def offline(monkeypatch):
    """No test reaches the Hub: offline mode and no telemetry (TRL's trainers ping the Hub otherwise)."""
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_DISABLE_TELEMETRY", True)


def run_recommender(run: str | Path, tmp_path: Path) -> None:
    Recommender.from_pretrained(run)


def run_evaluate(run: str | Path, tmp_path: Path) -> None:
    evaluate.main([str(run), "--batch-size", "16"])


def run_infer(run: str | Path, tmp_path: Path) -> None:
    infer.main(["--model", str(run), "--output", str(tmp_path / "infer"), "--no-save-index", "--device", "cpu"])


def run_dpo_script(run: str | Path, tmp_path: Path) -> None:
    overrides = [f"--output_dir={tmp_path / 'dpo'}", f"--sft_dir={run}", f"--preference_dir={tmp_path / 'pairs'}"]
    arguments = ["--config", DPO_CONFIG, *overrides, "--source=popular", "--max_steps=1", "--report_to=none"]
    dpo.main(*dpo.make_parser().parse_args_and_config(arguments))


LOADERS = {
    "Recommender.from_pretrained": run_recommender,
    "evaluate": run_evaluate,
    "infer": run_infer,
    "dpo": run_dpo_script,
}
DATA_LOADERS = {"evaluate": run_evaluate, "dpo": run_dpo_script}


def reverse_tokenizer(folder: Path) -> None:
    """Save over `folder`'s tokenizer the same items in the reverse order: same size, every id another item."""
    keys = item_keys(AutoTokenizer.from_pretrained(folder))
    save_item_tokenizer(build_item_tokenizer(keys[::-1]), folder)


def write_run(folder: Path, data_dir: Path, with_fingerprint: bool = True) -> Path:
    """A run folder of a tiny `sasrec` over the items of `data_dir`, saved with the data's tokenizer, as
    `save_for_hub` saves one, or, without fingerprint, as the package saved checkpoints before it recorded one."""
    tokenizer = AutoTokenizer.from_pretrained(data_dir / "tokenizer")
    model = tiny_model("sasrec", vocab_size=len(tokenizer))
    if with_fingerprint:
        save_for_hub(model, tokenizer, folder, max_length=8)
    else:
        model.save_pretrained(folder)
        save_item_tokenizer(tokenizer, folder)
    info = {"data_dir": str(data_dir), "model_type": "sasrec", "max_length": 8}
    (folder / RUN_INFO_FILE).write_text(json.dumps(info))
    return folder


@pytest.fixture
def data_dir(tmp_path) -> Path:
    return write_tiny_dataset(tmp_path / "data", num_users=16)


@pytest.fixture
def run(tmp_path, data_dir) -> Path:
    return write_run(tmp_path / "run", data_dir)


def corrupt_tensor(weights: Path, name: str) -> None:
    """Overwrite the first bytes of tensor `name` in a safetensors file with 0xFF bytes (NaN in float32), as random
    bytes written into the file would."""
    data = bytearray(weights.read_bytes())
    header_size = int.from_bytes(data[:8], "little")
    start, _ = json.loads(data[8 : 8 + header_size])[name]["data_offsets"]
    offset = 8 + header_size + start
    data[offset : offset + 16] = b"\xff" * 16
    weights.write_bytes(data)


def test_sft_config_records_the_vocabulary_fingerprint(data_dir):
    tokenizer = AutoTokenizer.from_pretrained(data_dir / "tokenizer")
    config = build_config(ModelArguments(model_type="sasrec"), {"hidden_size": 16}, tokenizer, 8)
    assert getattr(config, ITEM_VOCAB_FINGERPRINT) == vocabulary_fingerprint(tokenizer)
    reversed_keys = item_keys(tokenizer)[::-1]
    assert vocabulary_fingerprint(build_item_tokenizer(reversed_keys)) != vocabulary_fingerprint(tokenizer)


def test_init_from_a_model_of_another_item_order_is_refused(data_dir, tmp_path):
    tokenizer = AutoTokenizer.from_pretrained(data_dir / "tokenizer")
    reversed_tokenizer = build_item_tokenizer(item_keys(tokenizer)[::-1])
    save_for_hub(tiny_model("sasrec", vocab_size=len(tokenizer)), reversed_tokenizer, tmp_path / "other")
    model_args = ModelArguments(model_type="sasrec", init_from=str(tmp_path / "other"))
    config = build_config(model_args, {"hidden_size": 16, "num_attention_heads": 2}, tokenizer, 8)
    with pytest.raises(ValueError, match="another item vocabulary"):
        build_model(model_args, config)


@pytest.mark.parametrize("loader", LOADERS.values(), ids=LOADERS.keys())
def test_a_tokenizer_with_the_items_in_another_order_is_refused(loader, run, tmp_path):
    recorded = json.loads((run / "config.json").read_text())[ITEM_VOCAB_FINGERPRINT]
    assert recorded == vocabulary_fingerprint(AutoTokenizer.from_pretrained(run))
    reverse_tokenizer(run)
    with pytest.raises(ValueError, match="another order") as error:
        loader(run, tmp_path)
    assert str(run) in str(error.value)
    assert not (tmp_path / "dpo").exists() and not (tmp_path / "infer").exists()


@pytest.mark.parametrize("with_fingerprint", [True, False], ids=["fingerprint", "saved-before-fingerprints"])
@pytest.mark.parametrize("loader", DATA_LOADERS.values(), ids=DATA_LOADERS.keys())
def test_data_processed_with_another_item_order_is_refused(loader, with_fingerprint, data_dir, tmp_path):
    run = write_run(tmp_path / "run", data_dir, with_fingerprint)
    reverse_tokenizer(data_dir / "tokenizer")
    with pytest.raises(ValueError, match="another order") as error:
        loader(run, tmp_path)
    assert str(run) in str(error.value) and str(data_dir / "tokenizer") in str(error.value)


def test_a_checkpoint_saved_before_fingerprints_loads_with_a_warning(data_dir, tmp_path, caplog):
    run = write_run(tmp_path / "run", data_dir, with_fingerprint=False)
    assert ITEM_VOCAB_FINGERPRINT not in json.loads((run / "config.json").read_text())
    recommender = Recommender.from_pretrained(run)
    assert "cannot be verified" in caplog.text and str(run) in caplog.text
    assert recommender(["item3", "item4"], top_k=3)["scores"] is not None


def test_dpo_output_records_the_vocabulary_fingerprint(data_dir, tmp_path):
    run_dpo_script(write_run(tmp_path / "run", data_dir, with_fingerprint=False), tmp_path)
    tokenizer = AutoTokenizer.from_pretrained(tmp_path / "dpo")
    recorded = json.loads((tmp_path / "dpo" / "config.json").read_text())[ITEM_VOCAB_FINGERPRINT]
    assert recorded == vocabulary_fingerprint(tokenizer)
    reverse_tokenizer(tmp_path / "dpo")
    with pytest.raises(ValueError, match="another order"):
        Recommender.from_pretrained(tmp_path / "dpo")


@pytest.mark.parametrize("loader", LOADERS.values(), ids=LOADERS.keys())
def test_non_finite_weights_are_refused_naming_the_tensor(loader, run, tmp_path):
    corrupt_tensor(run / "model.safetensors", CORRUPT_TENSOR)
    with pytest.raises(ValueError, match=re.escape(f"Tensor '{CORRUPT_TENSOR}'")) as error:
        loader(run, tmp_path)
    assert "non-finite" in str(error.value) and str(run) in str(error.value)


def test_a_truncated_config_is_named(run):
    config_file = run / "config.json"
    config_file.write_text(config_file.read_text()[:50])
    with pytest.raises(ValueError, match=re.escape(f"{config_file} is not valid JSON")):
        Recommender.from_pretrained(run)


@pytest.fixture
def modules_cache(tmp_path, monkeypatch) -> Path:
    """Remote code, if it ever runs, is copied to a test folder rather than the user's modules cache."""
    cache = tmp_path / "modules"
    monkeypatch.setattr(transformers.dynamic_module_utils, "HF_MODULES_CACHE", str(cache))
    monkeypatch.setattr(sys, "path", list(sys.path))
    return cache


def write_foreign_model(folder: Path, data_dir: Path, marker: Path) -> Path:
    """A run folder whose `config.json` declares a model type of its own, implemented by its `modeling_evil.py`,
    which writes `marker` when imported."""
    folder.mkdir()
    auto_map = {name: f"modeling_evil.Evil{name}" for name in ("AutoConfig", "AutoModel", "AutoModelForCausalLM")}
    (folder / "config.json").write_text(json.dumps({"model_type": "evil_recommender", "auto_map": auto_map}))
    code = f"from pathlib import Path\nPath({str(marker)!r}).write_text('ran')\nraise RuntimeError('evil code ran')\n"
    (folder / "modeling_evil.py").write_text(code)
    (folder / RUN_INFO_FILE).write_text(json.dumps({"data_dir": str(data_dir), "max_length": 8}))
    save_item_tokenizer(AutoTokenizer.from_pretrained(data_dir / "tokenizer"), folder)
    return folder


@pytest.mark.parametrize("loader", LOADERS.values(), ids=LOADERS.keys())
def test_a_foreign_model_type_runs_no_folder_code_without_trust_remote_code(loader, data_dir, tmp_path, modules_cache):
    marker = tmp_path / "marker"
    folder = write_foreign_model(tmp_path / "foreign", data_dir, marker)
    with pytest.raises(ValueError, match=r"evil_recommender.*--trust-remote-code"):
        loader(folder, tmp_path)
    assert not marker.exists()
    with pytest.raises(RuntimeError, match="evil code ran"):
        evaluate.main([str(folder), "--trust-remote-code"])
    assert marker.exists()


def test_a_model_type_of_the_package_loads_with_the_installed_code_even_when_trusted(run, tmp_path, modules_cache):
    marker = tmp_path / "marker"
    (run / "modeling_sasrec.py").write_text(f"from pathlib import Path\nPath({str(marker)!r}).write_text('ran')\n")
    Recommender.from_pretrained(run, trust_remote_code=True)
    evaluate.main([str(run), "--trust-remote-code", "--batch-size", "16"])
    assert not marker.exists() and not modules_cache.exists()


MISTYPED_PATHS = ["{tmp}/no-such-run", "outputs/sft/defualt", "./runs/no-such-run", "runs/no-such-run"]


@pytest.mark.parametrize("path", MISTYPED_PATHS)
@pytest.mark.parametrize("loader", LOADERS.values(), ids=LOADERS.keys())
def test_a_mistyped_local_path_is_named_as_a_missing_folder(loader, path, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "runs").mkdir()  # `runs/no-such-run` has the form of a repository id, but its parent is local
    path = path.format(tmp=tmp_path)
    with pytest.raises(FileNotFoundError, match=re.escape(path)):
        loader(path, tmp_path)


def test_a_repository_id_that_cannot_be_reached_is_named(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(FileNotFoundError, match="'someone/no-such-model' is not a local folder"):
        Recommender.from_pretrained("someone/no-such-model")


def closed_port() -> int:
    """A local TCP port that nothing listens on."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.mark.parametrize("network", ["connection refused", "offline mode"])
def test_push_to_hub_without_the_hub_says_where_the_folder_was_saved(network, run, monkeypatch):
    if network == "connection refused":
        monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", False)
        monkeypatch.setattr(huggingface_hub.constants, "ENDPOINT", f"http://127.0.0.1:{closed_port()}")
    recommender = Recommender.from_pretrained(run)
    with pytest.raises(ConnectionError, match="cannot be reached") as error:
        recommender.push_to_hub("someone/sasrec", token="hf_not_a_token")
    folder = Path(re.search(r"saved locally in (.+): upload", str(error.value)).group(1))
    try:
        reloaded = Recommender.from_pretrained(folder)
        assert reloaded(["item3", "item4"], top_k=5) == recommender(["item3", "item4"], top_k=5)
    finally:
        shutil.rmtree(folder)


def test_push_to_hub_keeps_the_given_local_folder(run, tmp_path):
    recommender = Recommender.from_pretrained(run)
    with pytest.raises(ConnectionError, match=re.escape(str(tmp_path / "upload"))):
        push_to_hub(recommender.model, recommender.tokenizer, "someone/sasrec", local_dir=tmp_path / "upload")
    assert (tmp_path / "upload" / "model.safetensors").is_file()
