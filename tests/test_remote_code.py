"""Saved checkpoints carry their code: they load where `hf_sasrec` cannot be imported."""

import json
import subprocess
import sys
import textwrap

import pytest
import torch
from model_helpers import HIDE_HF_SASREC, VARIANT_NAMES, extra_inputs, left_pad, random_items, tiny_model

LOADER = HIDE_HF_SASREC + textwrap.dedent(
    """
    import torch
    from transformers import AutoModel, AutoModelForCausalLM
    checkpoint, inputs_path = sys.argv[1], sys.argv[2]
    inputs = {key: torch.tensor(value) for key, value in json.load(open(inputs_path)).items()}
    try:
        import hf_sasrec  # noqa: F401
        raise SystemExit("hf_sasrec should not be importable here")
    except ImportError:
        pass
    head = AutoModelForCausalLM.from_pretrained(checkpoint, trust_remote_code=True).eval()
    encoder = AutoModel.from_pretrained(checkpoint, trust_remote_code=True).eval()
    with torch.no_grad():
        logits = head(**inputs).logits
        states = encoder(**inputs).last_hidden_state
    modules = [type(head).__module__, type(encoder).__module__]
    print(json.dumps({"logits": logits.tolist(), "states": states.tolist(), "modules": modules}))
    """
)


@pytest.mark.parametrize("variant", VARIANT_NAMES)
def test_checkpoint_loads_with_trust_remote_code_without_the_package(variant, tmp_path):
    model = tiny_model(variant, seed=7)
    checkpoint = tmp_path / "checkpoint"
    model.save_pretrained(checkpoint)
    input_ids = left_pad(random_items(2, 5), 2)
    inputs = {
        "input_ids": input_ids,
        **{k: left_pad(v, 2) for k, v in extra_inputs(variant, random_items(2, 5)).items()},
    }
    inputs_path = tmp_path / "inputs.json"
    inputs_path.write_text(json.dumps({key: value.tolist() for key, value in inputs.items()}))
    environment = {"HF_MODULES_CACHE": str(tmp_path / "modules"), "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    result = subprocess.run(
        [sys.executable, "-c", LOADER, str(checkpoint), str(inputs_path)],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        env={**environment, "PATH": "/usr/bin:/bin"},
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    loaded = json.loads(result.stdout.strip().splitlines()[-1])
    assert all(module.startswith("transformers_modules") for module in loaded["modules"])
    with torch.no_grad():
        torch.testing.assert_close(torch.tensor(loaded["logits"]), model(**inputs).logits, atol=1e-5, rtol=0)
        states = model.model(**inputs).last_hidden_state
    torch.testing.assert_close(torch.tensor(loaded["states"]), states, atol=1e-5, rtol=0)
