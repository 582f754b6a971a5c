"""`bash scripts/sft.sh STAGE1.yaml STAGE2.yaml`: frozen text-initialised item embeddings, then full fine-tuning."""

import json
import os
import subprocess
from pathlib import Path

import numpy as np
import pytest
import torch
from sft_helpers import write_tiny_dataset
from transformers import AutoModelForCausalLM

from hf_sasrec.item_embedding_init import principal_components

ROOT = Path(__file__).resolve().parent.parent
COMMON = """model_type: sasrec
data_dir: {data}
hidden_size: 8
num_attention_heads: 2
max_length: 8
num_train_epochs: 1
per_device_train_batch_size: 16
learning_rate: 0.01
report_to: none
disable_tqdm: true
use_cpu: true
"""


def test_principal_components_keep_the_largest_variance_directions():
    generator = torch.Generator().manual_seed(0)
    vectors = torch.randn(200, 6, generator=generator) * torch.tensor([5.0, 0.1, 3.0, 0.1, 0.1, 0.1])
    reduced = principal_components(vectors, 2)
    assert reduced.shape == (200, 2)
    assert reduced.var(0).sum() / (vectors - vectors.mean(0)).var(0).sum() > 0.99
    with pytest.raises(ValueError, match="principal components"):
        principal_components(vectors, 7)


def write_stage_configs(tmp_path: Path) -> tuple[Path, Path, np.ndarray]:
    """`stage1.yaml` (frozen item embeddings from random "text" vectors) and `stage2.yaml` (from stage 1) in
    `tmp_path`, on a tiny dataset; returns the two output folders and the text vectors."""
    data = write_tiny_dataset(tmp_path / "data")
    text = np.random.default_rng(0).normal(size=(35, 12)).astype(np.float32)  # [vocab_size, width != hidden_size]
    np.save(tmp_path / "text.npy", text)
    stage1, stage2 = tmp_path / "stage1", tmp_path / "stage2"
    (tmp_path / "stage1.yaml").write_text(
        COMMON.format(data=data)
        + f"output_dir: {stage1}\nitem_embeddings: {tmp_path / 'text.npy'}\nfreeze_item_embeddings: true\n"
    )
    (tmp_path / "stage2.yaml").write_text(
        COMMON.format(data=data).replace("0.01", "0.001") + f"output_dir: {stage2}\ninit_from: {stage1}\n"
    )
    return stage1, stage2, text


def run_two_stages(tmp_path: Path) -> subprocess.CompletedProcess:
    """`bash scripts/sft.sh stage1.yaml stage2.yaml --seed 3` on the configs of [`write_stage_configs`]."""
    return subprocess.run(
        ["bash", "scripts/sft.sh", str(tmp_path / "stage1.yaml"), str(tmp_path / "stage2.yaml"), "--seed", "3"],
        cwd=ROOT,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
        capture_output=True,
        text=True,
        timeout=300,
    )


def test_two_stage_training_in_one_call(tmp_path):
    stage1, stage2, text = write_stage_configs(tmp_path)
    result = run_two_stages(tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    first = AutoModelForCausalLM.from_pretrained(stage1).get_input_embeddings().weight.detach()
    second = AutoModelForCausalLM.from_pretrained(stage2).get_input_embeddings().weight.detach()
    # Stage 1 kept the PCA projection of the text vectors (rescaled to the init std), frozen through training.
    expected = principal_components(torch.from_numpy(text[5:]), 8)
    expected = expected * (0.02 / expected.std())
    torch.testing.assert_close(first[5:], expected)
    # Stage 2 started from stage 1 and trained the item embeddings (a few small steps away from them).
    assert not torch.allclose(second[5:], first[5:])
    assert (second[5:] - first[5:]).norm() < first[5:].norm()
    assert json.loads((stage2 / "run_info.json").read_text())["model_type"] == "sasrec"
    assert json.loads((stage2 / "run_info.json").read_text())["command"][-2:] == ["--seed", "3"]


def test_a_second_stage_that_would_replace_a_run_is_refused_before_the_first_trains(tmp_path):
    stage1, stage2, _ = write_stage_configs(tmp_path)
    stage2.mkdir()
    (stage2 / "metrics.json").write_text("{}")
    refused = run_two_stages(tmp_path)
    assert refused.returncode != 0 and not stage1.exists()
    message = refused.stderr.strip().splitlines()[-1]
    assert message.startswith(f"hf_sasrec.checkpoints: output_dir {str(stage2)!r} already holds files (metrics.json)")
    assert "--resume_from_checkpoint auto" in message and "--overwrite_output_dir" in message
    assert (stage2 / "metrics.json").read_text() == "{}"
