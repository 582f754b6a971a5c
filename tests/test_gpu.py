"""The CUDA paths: attention implementations in bf16 with both padding sides, bf16 training of every variant, and
faiss-gpu indexes against the CPU ones. Marked `gpu` (`pytest -m gpu`) and skipped without a CUDA device;
`benchmarks/gpu_check.sh` runs them on a GPU machine."""

import pytest
import torch
from model_helpers import SDPA_VARIANTS, VARIANT_NAMES, extra_inputs, random_items, tiny_model
from transformers.utils import is_flash_attn_2_available

import hf_sasrec

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device"),
]

FLASH_VARIANTS = [name for name in VARIANT_NAMES if hf_sasrec.VARIANTS[name][2]._supports_flash_attn]
IMPLEMENTATIONS = [("sdpa", variant) for variant in SDPA_VARIANTS] + [
    pytest.param(
        "flash_attention_2",
        variant,
        marks=pytest.mark.skipif(not is_flash_attn_2_available(), reason="flash_attn is not installed"),
    )
    for variant in FLASH_VARIANTS
]
DEVICE = "cuda"
LENGTHS = [16, 11, 6, 2]  # real items a row; the batch is 16 long


def padded_batch(variant: str, side: str) -> dict[str, torch.Tensor]:
    """Rows of `LENGTHS` real items (the same items and times for both sides), padded on `side`, on `DEVICE`:
    `input_ids`, `attention_mask` and, for tisasrec, `timestamps`, each `[rows, 16]`."""
    input_ids = random_items(len(LENGTHS), max(LENGTHS))
    positions = torch.arange(max(LENGTHS))
    lengths = torch.tensor(LENGTHS)[:, None]
    real = positions < lengths
    right = {"input_ids": input_ids * real, "attention_mask": real.long(), **extra_inputs(variant, input_ids)}
    shift = max(LENGTHS) - lengths if side == "left" else torch.zeros_like(lengths)
    source = (positions - shift) % max(LENGTHS)  # rotate each row so that its real items end it
    return {key: value.gather(1, source).to(DEVICE) for key, value in right.items()}


def real_states(model, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    """Float32 hidden states at the real items, `[real items, hidden]` in row order (the same for both sides)."""
    with torch.no_grad():
        hidden = model.model(**batch).last_hidden_state
    return hidden[batch["attention_mask"].bool()].float()


@pytest.mark.parametrize("side", ["left", "right"])
@pytest.mark.parametrize(("implementation", "variant"), IMPLEMENTATIONS)
def test_attention_implementations_agree_with_eager_in_bf16(implementation, variant, side):
    """Against fp32 eager on the left-padded batch, the bf16 run of `implementation` errs on average no more than
    twice as much as bf16 eager does (bf16 rounding alone), and its fp32 run (sdpa; flash has none) agrees to fp32
    rounding. The mean, not the largest error: bf16 rounding can flip a near-tie of sasrec_moe's expert routing,
    which moves one item by O(1) in any implementation."""
    overrides = {"hidden_size": 64, "max_position_embeddings": 32}
    eager = tiny_model(variant, attn_implementation="eager", **overrides).to(DEVICE)
    other = tiny_model(variant, attn_implementation=implementation, **overrides).to(DEVICE)
    other.load_state_dict(eager.state_dict())
    reference = real_states(eager, padded_batch(variant, "left"))
    batch = padded_batch(variant, side)
    if implementation == "sdpa":
        torch.testing.assert_close(real_states(other, batch), reference, atol=1e-4, rtol=0)
    eager_error = (real_states(eager.to(torch.bfloat16), batch) - reference).abs().mean().item()
    error = (real_states(other.to(torch.bfloat16), batch) - reference).abs().mean().item()
    assert eager_error > 0  # the bf16 runs are bf16
    assert error <= max(2 * eager_error, 5e-3), (error, eager_error)


@pytest.mark.parametrize("variant", VARIANT_NAMES)
def test_bf16_training_loss_is_finite_and_falls(variant):
    """Overfit one batch (rows of `LENGTHS` items, left-padded) under bf16 autocast with the full-softmax loss."""
    model = tiny_model(variant, hidden_size=32, loss_type="ce").to(DEVICE).train()
    batch = padded_batch(variant, "left")
    targets = random_items(len(LENGTHS), max(LENGTHS), seed=1).to(DEVICE)
    shift_labels = targets.masked_fill(batch["attention_mask"] == 0, -100)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2, weight_decay=0.0, fused=True)
    losses = []
    for _ in range(40):
        with torch.autocast(DEVICE, dtype=torch.bfloat16):
            loss = model(**batch, shift_labels=shift_labels, logits_to_keep=1).loss
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert torch.isfinite(torch.tensor(losses)).all()
    assert sum(losses[-5:]) / 5 < 0.6 * sum(losses[:5]) / 5


@pytest.mark.parametrize("index_type", ["flat", "ivf"])
def test_faiss_gpu_index_finds_what_the_cpu_index_finds(index_type):
    faiss = pytest.importorskip("faiss")
    from hf_sasrec.retrieval import ItemIndex, RetrievalConfig, gpu_available

    if not gpu_available():
        pytest.skip(f"faiss {faiss.__version__} has no GPU support (faiss-gpu is not installed)")
    generator = torch.Generator().manual_seed(0)
    items = torch.randn(5005, 32, generator=generator)
    users = torch.randn(64, 32, generator=generator)
    exclude = [list(range(5, 5 + row % 7)) for row in range(len(users))]
    results = {}
    for use_gpu in (False, True):
        index = ItemIndex.build(items, 5, RetrievalConfig(index_type=index_type, ivf_nlist=64, use_gpu=use_gpu))
        assert index.on_gpu == use_gpu
        results[use_gpu] = index.search(users, 10, exclude=exclude)
    (cpu_scores, cpu_ids), (gpu_scores, gpu_ids) = results[False], results[True]
    assert (gpu_ids >= 5).all() and all(not set(ids) & set(row) for ids, row in zip(gpu_ids, exclude, strict=True))
    overlap = (gpu_ids[:, :, None] == cpu_ids[:, None, :]).any(-1).mean()
    if index_type == "flat":  # exact on both: the same items, with the same scores up to float rounding
        assert overlap >= 0.999
        torch.testing.assert_close(torch.from_numpy(gpu_scores), torch.from_numpy(cpu_scores), atol=1e-4, rtol=1e-4)
    else:  # the same trained cells; only near-ties in the coarse assignment may differ
        assert overlap >= 0.95
