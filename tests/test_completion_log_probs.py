"""`forward(..., fused_lm_head=True)`: the model scores given target items itself (TRL's preference-trainer call),
at their positions only and over items only, and honours `labels`, `shift_labels` and `num_items_in_batch` as its
loss does."""

import pytest
import torch
from model_helpers import VARIANT_NAMES, extra_inputs, random_items, tiny_model
from sft_helpers import NUM_SPECIAL


def completion_batch(variant: str) -> tuple[torch.LongTensor, torch.LongTensor, dict]:
    """Five rows of seven positions, two left-padded, and TRL-style labels: the last two items of each row (its
    completion), `-100` elsewhere."""
    input_ids = random_items(5, 7, seed=5)
    input_ids[:2, :2] = 0
    labels = torch.full_like(input_ids, -100)
    labels[:, -2:] = input_ids[:, -2:]
    return input_ids, labels, extra_inputs(variant, input_ids)


@pytest.mark.parametrize("variant", VARIANT_NAMES)
def test_log_probs_are_the_items_only_scores_of_the_targets(variant):
    model = tiny_model(variant)
    input_ids, labels, inputs = completion_batch(variant)
    with torch.no_grad():
        output = model(input_ids=input_ids, labels=labels, fused_lm_head=True, **inputs)
        logits = model(input_ids=input_ids, **inputs).logits[:, :-1, NUM_SPECIAL:]
    item_log_probs = logits.log_softmax(-1)
    expected_mask = torch.zeros(5, 6, dtype=torch.bool)
    expected_mask[:, -2:] = True
    assert output.log_probs.shape == (5, 6)
    assert torch.equal(output.label_mask, expected_mask)
    targets = labels[:, 1:].clamp(min=NUM_SPECIAL) - NUM_SPECIAL
    expected = item_log_probs.gather(2, targets[..., None]).squeeze(-1).masked_fill(~expected_mask, 0)
    torch.testing.assert_close(output.log_probs, expected)
    entropy = -(item_log_probs.exp() * item_log_probs).sum(-1).masked_fill(~expected_mask, 0)
    torch.testing.assert_close(output.entropy, entropy)
    torch.testing.assert_close(output.mean_logits, logits.mean(-1).masked_fill(~expected_mask, 0))
    assert torch.equal(output.is_top1.bool(), (logits.argmax(-1) == targets) & expected_mask)
    aux = 0.0 if output.aux_loss is None else model.config.router_aux_loss_coef * output.aux_loss
    torch.testing.assert_close(output.loss - aux, -expected.sum() / 10)


@pytest.mark.parametrize("variant", ["sasrec", "sasrec_moe"])
def test_shift_labels_and_num_items_in_batch(variant):
    """`shift_labels` are scored as given (`[batch, length]`, the last position included); `num_items_in_batch`
    divides the summed log-probabilities; a mixture of experts adds its weighted load-balancing loss."""
    model = tiny_model(variant)
    input_ids, labels, _ = completion_batch(variant)
    shift_labels = torch.nn.functional.pad(labels[:, 1:], (0, 1), value=-100)
    shift_labels[:, -1] = random_items(5, 1, seed=6)[:, 0]
    with torch.no_grad():
        from_labels = model(input_ids=input_ids, labels=labels, fused_lm_head=True)
        shifted = model(input_ids=input_ids, shift_labels=shift_labels, fused_lm_head=True)
        summed = model(input_ids=input_ids, shift_labels=shift_labels, fused_lm_head=True, num_items_in_batch=30)
    assert shifted.log_probs.shape == (5, 7)
    torch.testing.assert_close(shifted.log_probs[:, :-1], from_labels.log_probs)
    assert shifted.label_mask[:, -1].all() and (shifted.log_probs[:, -1] < 0).all()
    aux = 0.0 if shifted.aux_loss is None else model.config.router_aux_loss_coef * shifted.aux_loss
    assert (shifted.aux_loss is not None) == (variant == "sasrec_moe")
    torch.testing.assert_close(shifted.loss - aux, -shifted.log_probs.sum() / 15)
    torch.testing.assert_close(summed.loss - aux, -shifted.log_probs.sum() / 30)


def test_special_ids_and_padding_are_never_targets():
    model = tiny_model("sasrec")
    input_ids, labels, _ = completion_batch("sasrec")
    labels[0, -1] = 2  # a special token (an EOS, as TRL appends to text completions)
    labels[1, 2] = input_ids[1, 2]  # predicted from position 1, which is padding
    with torch.no_grad():
        output = model(input_ids=input_ids, labels=labels, fused_lm_head=True)
    assert not output.label_mask[0, -1] and not output.label_mask[1, 1]
    assert output.label_mask.sum() == 9 and output.log_probs[0, -1] == 0


def test_only_log_probs_carry_gradients():
    model = tiny_model("sasrec")
    input_ids, labels, _ = completion_batch("sasrec")
    output = model(input_ids=input_ids, labels=labels, fused_lm_head=True)
    assert output.log_probs.requires_grad and output.loss.requires_grad
    assert not any(output[name].requires_grad for name in ("entropy", "log_sum_sq_probs", "mean_logits"))
    output.log_probs.sum().backward()
    assert model.lm_head.weight.grad.abs().sum() > 0


def test_fused_lm_head_needs_targets():
    with pytest.raises(ValueError, match="fused_lm_head=True scores targets: pass labels or shift_labels"):
        tiny_model("sasrec")(input_ids=random_items(2, 4), fused_lm_head=True)
