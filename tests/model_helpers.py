"""Tiny models and batches shared by the model tests."""

import json
import subprocess
import sys
from pathlib import Path

import torch
from transformers import AutoConfig, AutoModelForCausalLM

import hf_sasrec

VARIANT_NAMES = list(hf_sasrec.VARIANTS)
SDPA_VARIANTS = [name for name in VARIANT_NAMES if hf_sasrec.VARIANTS[name][2]._supports_sdpa]
VOCAB_SIZE = 40

HIDE_HF_SASREC = """
import importlib.abc, json, sys
class RefuseHfSasrec(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in ("hf_sasrec", "data_preprocess"):
            raise ImportError(f"{name} is hidden for this test")
sys.meta_path.insert(0, RefuseHfSasrec())
"""
"""Source that a subprocess runs first so that `import hf_sasrec` (and `import data_preprocess`, which the hf-sasrec
distribution ships with it) fails in it, as where hf-sasrec is not installed."""


def run_downstream(
    source: str, *args: str, cwd: Path, stdin: str = ""
) -> tuple[dict | list, subprocess.CompletedProcess]:
    """Run `source` (which starts with `HIDE_HF_SASREC`) in a fresh Python with `args`, offline, one thread, `stdin`
    as its whole input (so a prompt would fail, not wait) and its own modules cache under `cwd`; it must exit 0.
    Returns the JSON value of its last output line and the finished process."""
    result = subprocess.run(
        [sys.executable, "-c", source, *args],
        input=stdin,
        capture_output=True,
        text=True,
        cwd=cwd,
        env={"HF_MODULES_CACHE": str(cwd / "modules"), "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"},
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return json.loads(result.stdout.strip().splitlines()[-1]), result


def tiny_config(variant: str, **overrides):
    """A two-block, 16-wide config of `variant`, without dropout unless overridden."""
    fields = {
        "vocab_size": VOCAB_SIZE,
        "hidden_size": 16,
        "num_hidden_layers": 2,
        "num_attention_heads": 2,
        "max_position_embeddings": 16,
        "hidden_dropout_prob": 0.0,
        "attention_dropout": 0.0,
        "num_negatives": 8,
    }
    fields.update(overrides)
    return AutoConfig.for_model(variant, **fields)


def tiny_model(variant: str, attn_implementation: str | None = None, seed: int = 0, **overrides):
    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(
        tiny_config(variant, **overrides), attn_implementation=attn_implementation
    )
    return model.eval()


def extra_inputs(variant: str, input_ids: torch.Tensor, seed: int = 0) -> dict:
    """Timestamps for `tisasrec` (increasing, with repeated and irregular gaps), nothing for the others."""
    if variant != "tisasrec":
        return {}
    generator = torch.Generator().manual_seed(seed)
    gaps = torch.randint(0, 5, input_ids.shape, generator=generator) * 3
    return {"timestamps": 1_000 + gaps.cumsum(-1)}


def random_items(batch: int, length: int, seed: int = 0) -> torch.LongTensor:
    generator = torch.Generator().manual_seed(seed)
    return torch.randint(5, VOCAB_SIZE, (batch, length), generator=generator)


def left_pad(tensor: torch.Tensor, pad: int, value: int = 0) -> torch.Tensor:
    return torch.nn.functional.pad(tensor, (pad, 0), value=value)


def assert_same_recommendations(got, expected):
    """Same items, flags and unknown keys; scores equal up to float rounding (they may come from other searches), or
    both `None` (popularity fallbacks)."""
    for got_result, expected_result in zip(got, expected, strict=True):
        assert {key: value for key, value in got_result.items() if key != "scores"} == {
            key: value for key, value in expected_result.items() if key != "scores"
        }
        if expected_result["scores"] is None:
            assert got_result["scores"] is None
            continue
        torch.testing.assert_close(
            torch.tensor(got_result["scores"]), torch.tensor(expected_result["scores"]), atol=1e-5, rtol=1e-5
        )
