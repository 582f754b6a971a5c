"""The data step never imports model code, and the package faces are lazy (issue 12, point 4)."""

import ast
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import data_write_movielens
from model_helpers import tiny_model

from data_preprocess import prepare
from data_preprocess.preference import model_item_embeddings

ROOT = Path(__file__).resolve().parents[1]
# Modules the data step must never load: the model package, torch, Faiss, TRL, transformers' modeling stack.
MODEL_MODULES = ("hf_sasrec", "torch", "faiss", "trl", "transformers.modeling_utils", "sentence_transformers")
RUN_AND_LIST_MODULES = textwrap.dedent(
    """
    import atexit, json, runpy, sys
    watched = json.loads(sys.argv[1])
    atexit.register(lambda: print(json.dumps([name for name in watched if name in sys.modules])))
    sys.argv = [sys.argv[2], *sys.argv[3:]]
    runpy.run_module(sys.argv[0], run_name="__main__", alter_sys=True)
    """
)


def run_and_list_model_modules(module: str, *arguments: str, allowed: tuple[str, ...] = ()) -> list[str]:
    """Run `python -m module arguments` in a fresh interpreter; the `MODEL_MODULES` (less `allowed`) it had loaded
    on exit."""
    watched = [name for name in MODEL_MODULES if name not in allowed]
    result = subprocess.run(
        [sys.executable, "-c", RUN_AND_LIST_MODULES, json.dumps(watched), module, *arguments],
        capture_output=True,
        text=True,
        cwd=ROOT,
        env={**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"},
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return json.loads(result.stdout.strip().splitlines()[-1])


def test_preparing_data_loads_no_model_code(tmp_path):
    data = tmp_path / "data"
    input_file = data_write_movielens(tmp_path / "ml") / "u.data"
    assert run_and_list_model_modules("data_preprocess", "--input", str(input_file), "--output", str(data)) == []
    assert (data / "tokenizer" / "item2id.json").is_file() and (data / "stats.json").is_file()


def test_hard_preference_pairs_from_a_checkpoint_load_no_model_code(tmp_path):
    data = tmp_path / "data"
    _, tokenizer = prepare(data_write_movielens(tmp_path / "ml") / "u.data", data)
    tiny_model("sasrec", vocab_size=len(tokenizer), seed=4).save_pretrained(tmp_path / "model")
    arguments = ("--data", str(data), "--output", str(tmp_path / "pairs"), "--source", "hard")
    # Faiss finds the nearest items: the hard source's own algorithm, not model code.
    model = ("--model", str(tmp_path / "model"))
    assert run_and_list_model_modules("data_preprocess.preference", *arguments, *model, allowed=("faiss",)) == []
    assert (tmp_path / "pairs" / "dataset_info.json").is_file()


def test_no_data_step_module_imports_the_model_package():
    """The dependency runs one way: `hf_sasrec` may import `data_preprocess`, never the reverse."""
    offenders = []
    for path in sorted((ROOT / "data_preprocess").glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            names = [alias.name for alias in node.names] if isinstance(node, ast.Import) else []
            if isinstance(node, ast.ImportFrom) and node.level == 0:
                names = [node.module or ""]
            offenders += [f"{path.name}: {name}" for name in names if name.split(".")[0] == "hf_sasrec"]
    assert offenders == []


@pytest.mark.parametrize(
    ("variant", "overrides", "dtype"),
    [
        ("sasrec", {}, torch.float32),  # tied head: saved once, as the input embeddings
        ("sasrec_gate", {"tie_word_embeddings": False}, torch.float32),  # untied: `lm_head.weight`
        ("mhc", {}, torch.bfloat16),  # numpy has no bfloat16
    ],
)
def test_item_embeddings_read_from_safetensors_are_the_output_layer(tmp_path, variant, overrides, dtype):
    model = tiny_model(variant, seed=5, **overrides).to(dtype)
    model.save_pretrained(tmp_path)
    expected = model.get_output_embeddings().weight.detach().float().numpy()
    if overrides:
        assert not np.allclose(expected, model.get_input_embeddings().weight.detach().float().numpy())
    np.testing.assert_allclose(model_item_embeddings(tmp_path), expected, rtol=0, atol=0)


def test_item_embeddings_of_a_folder_without_weights_is_a_clear_error(tmp_path):
    with pytest.raises(ValueError, match=r"model\.safetensors not found: --model takes a checkpoint folder"):
        model_item_embeddings(tmp_path)


FACE = textwrap.dedent(
    """
    import json, sys
    import hf_sasrec
    from transformers import AutoConfig, AutoModelForCausalLM
    model = AutoModelForCausalLM.from_config(AutoConfig.for_model("tisasrec", vocab_size=12, hidden_size=8))
    loaded = [name for name in ("faiss", "datasets", "trl", "hf_sasrec.recommender") if name in sys.modules]
    recommender = hf_sasrec.Recommender
    print(json.dumps({"model": type(model).__name__, "loaded": loaded, "faiss_after": "faiss" in sys.modules,
                      "face": recommender.__module__, "variants": list(hf_sasrec.VARIANTS)}))
    """
)


def test_import_hf_sasrec_registers_the_variants_and_loads_the_rest_on_first_use():
    result = subprocess.run(
        [sys.executable, "-c", FACE],
        capture_output=True,
        text=True,
        cwd=ROOT,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    face = json.loads(result.stdout.strip().splitlines()[-1])
    assert face["model"] == "TiSASRecForCausalLM" and len(face["variants"]) == 6
    assert face["loaded"] == [] and face["faiss_after"] and face["face"] == "hf_sasrec.recommender"
