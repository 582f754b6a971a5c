"""Behaviour every variant shares: causality, padding invariance, attention implementations, losses, saving."""

import pytest
import torch
from model_helpers import (
    SDPA_VARIANTS,
    VARIANT_NAMES,
    extra_inputs,
    left_pad,
    random_items,
    tiny_config,
    tiny_model,
)
from transformers import AutoConfig, AutoModel, AutoModelForCausalLM

import hf_sasrec
from hf_sasrec.modeling_sasrec import last_real_states, positions_from_mask

LOSS_TYPES = ["ce", "sampled_softmax", "bce", "infonce"]


def hidden(model, input_ids, **inputs) -> torch.Tensor:
    return model.model(input_ids=input_ids, **inputs).last_hidden_state


@pytest.mark.parametrize("variant", VARIANT_NAMES)
def test_changing_a_later_item_leaves_earlier_outputs_unchanged(variant):
    model = tiny_model(variant)
    input_ids = random_items(3, 8)
    inputs = extra_inputs(variant, input_ids)
    changed = input_ids.clone()
    changed[:, 5] = torch.where(changed[:, 5] == 6, 7, 6)
    changed_inputs = dict(inputs)
    if "timestamps" in inputs:
        changed_inputs["timestamps"] = inputs["timestamps"].clone()
        changed_inputs["timestamps"][:, 5:] += 11
    with torch.no_grad():
        before = hidden(model, input_ids, **inputs)
        after = hidden(model, changed, **changed_inputs)
    torch.testing.assert_close(before[:, :5], after[:, :5], atol=1e-6, rtol=0)
    assert (before[:, 5:] - after[:, 5:]).abs().max() > 1e-4


@pytest.mark.parametrize("variant", VARIANT_NAMES)
def test_left_and_right_padding_do_not_change_real_positions(variant):
    model = tiny_model(variant)
    input_ids = random_items(2, 6)
    inputs = extra_inputs(variant, input_ids)
    with torch.no_grad():
        plain = hidden(model, input_ids, **inputs)
        padded_inputs = {key: left_pad(value, 3, value=7) for key, value in inputs.items()}
        left = hidden(model, left_pad(input_ids, 3), **padded_inputs)
        right_inputs = {key: torch.nn.functional.pad(value, (0, 2), value=5) for key, value in inputs.items()}
        right = hidden(model, torch.nn.functional.pad(input_ids, (0, 2)), **right_inputs)
    torch.testing.assert_close(left[:, 3:], plain, atol=1e-5, rtol=0)
    torch.testing.assert_close(right[:, :6], plain, atol=1e-5, rtol=0)
    assert torch.isfinite(left).all()


def test_position_ids_count_from_first_real_item():
    mask = torch.tensor([[0, 0, 1, 1, 1], [1, 1, 1, 0, 0]], dtype=torch.bool)
    assert positions_from_mask(mask).tolist() == [[0, 0, 0, 1, 2], [0, 1, 2, 2, 2]]


@pytest.mark.parametrize("variant", SDPA_VARIANTS)
def test_eager_and_sdpa_agree(variant):
    eager = tiny_model(variant, attn_implementation="eager")
    sdpa = tiny_model(variant, attn_implementation="sdpa")
    sdpa.load_state_dict(eager.state_dict())
    input_ids = left_pad(random_items(3, 7), 2)
    with torch.no_grad():
        torch.testing.assert_close(hidden(eager, input_ids), hidden(sdpa, input_ids), atol=1e-5, rtol=0)


def test_tisasrec_refuses_sdpa_and_flash_is_a_clear_error():
    with pytest.raises(ValueError, match="scaled_dot_product_attention"):
        AutoModelForCausalLM.from_config(tiny_config("tisasrec"), attn_implementation="sdpa")
    with pytest.raises(ImportError, match="FlashAttention"):
        AutoModelForCausalLM.from_config(tiny_config("sasrec"), attn_implementation="flash_attention_2")


def overfit_batch(variant: str):
    """Random inputs, two rows left-padded, and random targets (`shift_labels`, -100 on padding)."""
    input_ids = random_items(8, 6, seed=1)
    shift_labels = random_items(8, 6, seed=2)
    input_ids[:2, :2] = 0
    shift_labels[:2, :2] = -100
    return input_ids, shift_labels, extra_inputs(variant, input_ids)


@pytest.mark.parametrize("loss_type", LOSS_TYPES)
@pytest.mark.parametrize("variant", VARIANT_NAMES)
def test_loss_is_finite_and_goes_down_when_overfitting(variant, loss_type):
    model = tiny_model(variant, loss_type=loss_type, hidden_size=32).train()
    input_ids, shift_labels, inputs = overfit_batch(variant)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    torch.manual_seed(0)
    losses = []
    for _ in range(40):
        loss = model(input_ids=input_ids, shift_labels=shift_labels, logits_to_keep=1, **inputs).loss
        assert torch.isfinite(loss)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert sum(losses[-5:]) / 5 < 0.6 * sum(losses[:5]) / 5


@pytest.mark.parametrize("loss_type", LOSS_TYPES)
def test_losses_ignore_padding_and_ignored_labels(loss_type):
    model = tiny_model("sasrec", loss_type=loss_type)
    input_ids, shift_labels, _ = overfit_batch("sasrec")
    as_padding = shift_labels.masked_fill(shift_labels == -100, 0)
    as_special = shift_labels.masked_fill(shift_labels == -100, 3)
    on_padding = shift_labels.masked_fill(shift_labels == -100, 7)  # targets of padding positions are never trained
    losses = []
    for targets in (shift_labels, as_padding, as_special, on_padding):
        torch.manual_seed(5)
        losses.append(model(input_ids=input_ids, shift_labels=targets).loss)
    for other in losses[1:]:
        torch.testing.assert_close(losses[0], other)
    if loss_type != "bce":  # bce draws one negative per position, so its draws depend on the padded length
        torch.manual_seed(5)
        extended = model(
            input_ids=torch.nn.functional.pad(input_ids, (0, 3)),
            shift_labels=torch.nn.functional.pad(shift_labels, (0, 3), value=-100),
        ).loss
        torch.testing.assert_close(losses[0], extended, atol=1e-5, rtol=1e-5)


def test_bce_negatives_avoid_the_users_items():
    """Items of the row score 0, every other item 16: a negative drawn inside the row would lower the loss."""
    input_ids = torch.tensor([[5, 6, 7, 8, 9]])
    shift_labels = torch.tensor([[6, 7, 8, 9, 5]])
    item_weight = torch.zeros(25, 16)
    item_weight[10:] = 1.0
    torch.manual_seed(0)
    loss = hf_sasrec.losses.binary_cross_entropy_loss(torch.ones(1, 5, 16), shift_labels, input_ids, item_weight, 5)
    expected = torch.log(torch.tensor(2.0)) + torch.nn.functional.softplus(torch.tensor(16.0))
    torch.testing.assert_close(loss, expected)


@pytest.mark.parametrize("variant", VARIANT_NAMES)
def test_logits_to_keep_gives_the_last_positions_scores(variant):
    model = tiny_model(variant)
    input_ids = left_pad(random_items(2, 5), 2)
    inputs = {key: left_pad(value, 2) for key, value in extra_inputs(variant, random_items(2, 5)).items()}
    with torch.no_grad():
        full = model(input_ids=input_ids, **inputs).logits
        last = model(input_ids=input_ids, logits_to_keep=1, **inputs).logits
        states = last_real_states(hidden(model, input_ids, **inputs), input_ids.ne(0))
    assert full.shape == (2, 7, model.config.vocab_size)
    torch.testing.assert_close(last[:, 0], full[:, -1])
    torch.testing.assert_close(states @ model.get_output_embeddings().weight.T, full[:, -1], atol=1e-5, rtol=0)


def test_last_real_states_handles_both_paddings_and_rejects_empty_rows():
    states = torch.arange(12.0).view(2, 3, 2)
    mask = torch.tensor([[0, 1, 1], [1, 1, 0]])
    assert last_real_states(states, mask).tolist() == [[4.0, 5.0], [8.0, 9.0]]
    with pytest.raises(ValueError, match="Empty history at batch rows \\[1\\]"):
        last_real_states(states, torch.tensor([[1, 1, 1], [0, 0, 0]]))


@pytest.mark.parametrize("variant", VARIANT_NAMES)
def test_save_and_load_round_trip_gives_identical_outputs(variant, tmp_path):
    model = tiny_model(variant, seed=3)
    input_ids = left_pad(random_items(2, 5), 1)
    inputs = extra_inputs(variant, input_ids)
    model.save_pretrained(tmp_path)
    assert (tmp_path / "model.safetensors").exists()
    config = AutoConfig.from_pretrained(tmp_path)
    assert config.auto_map["AutoModel"].endswith("Model")
    assert set(config.auto_map) == {"AutoConfig", "AutoModel", "AutoModelForCausalLM"}
    reloaded = AutoModelForCausalLM.from_pretrained(tmp_path).eval()
    encoder = AutoModel.from_pretrained(tmp_path).eval()
    with torch.no_grad():
        torch.testing.assert_close(
            reloaded(input_ids=input_ids, **inputs).logits, model(input_ids=input_ids, **inputs).logits
        )
        torch.testing.assert_close(
            encoder(input_ids=input_ids, **inputs).last_hidden_state, hidden(model, input_ids, **inputs)
        )


@pytest.mark.parametrize("variant", ["sasrec", "mhc"])
def test_gradient_checkpointing_gives_the_same_loss_and_gradients(variant):
    input_ids, shift_labels, inputs = overfit_batch(variant)
    grads = []
    for checkpointing in (False, True):
        model = tiny_model(variant, seed=4).train()
        if checkpointing:
            model.activation_checkpointing_enable()
        loss = model(input_ids=input_ids, shift_labels=shift_labels, **inputs).loss
        loss.backward()
        grads.append((loss.detach(), model.model.embed_tokens.weight.grad.clone()))
    torch.testing.assert_close(grads[0][0], grads[1][0])
    torch.testing.assert_close(grads[0][1], grads[1][1])


@pytest.mark.parametrize(
    ("variant", "fields", "message"),
    [
        ("sasrec", {"hidden_size": 30, "num_attention_heads": 4}, "divisible"),
        ("sasrec", {"loss_type": "softmax"}, "Unknown loss_type"),
        ("sasrec", {"hidden_dropout_prob": 1.5}, "hidden_dropout_prob"),
        ("sasrec", {"vocab_size": 5}, "num_special_tokens"),
        ("sasrec_moe", {"num_experts": 2, "num_experts_per_tok": 3}, "num_experts_per_tok"),
        ("sasrec_rope", {"hidden_size": 6, "num_attention_heads": 2}, "even head size"),
        ("mhc", {"norm_first": False}, "pre-norm"),
        ("tisasrec", {"time_span": 0}, "time_span"),
    ],
)
def test_bad_config_values_raise_a_clear_value_error(variant, fields, message):
    with pytest.raises(ValueError, match=message):
        AutoConfig.for_model(variant, **fields)


def test_every_variant_registers_with_the_auto_classes():
    for name, (config_class, model_class, causal_lm_class) in hf_sasrec.VARIANTS.items():
        config = AutoConfig.for_model(name, vocab_size=20, hidden_size=8, num_attention_heads=2)
        assert type(config) is config_class
        assert type(AutoModel.from_config(config)) is model_class
        assert type(AutoModelForCausalLM.from_config(config)) is causal_lm_class
