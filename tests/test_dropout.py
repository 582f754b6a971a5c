"""SASRecDropout: nn.Dropout's distribution and gradient with a cheaper mask on CPU."""

import torch

from hf_sasrec.modeling_sasrec import SASRecDropout


def test_kept_entries_are_scaled_and_dropped_ones_zero_with_the_right_share():
    dropout = SASRecDropout(0.3).train()
    torch.manual_seed(0)
    inputs = torch.randn(200, 500, requires_grad=True)
    outputs = dropout(inputs)
    kept = outputs != 0
    torch.testing.assert_close(outputs[kept], inputs[kept] / 0.7)
    assert abs(kept.float().mean().item() - 0.7) < 0.005  # 100,000 draws: 5 standard deviations is 0.0072
    outputs.sum().backward()
    torch.testing.assert_close(inputs.grad, kept.float() / 0.7)
    assert isinstance(dropout, torch.nn.Dropout)  # what TRL's disable_dropout looks for


def test_evaluation_and_zero_probability_leave_the_input_as_is():
    inputs = torch.randn(4, 6)
    assert torch.equal(SASRecDropout(0.5).eval()(inputs), inputs)
    disabled = SASRecDropout(0.5).train()
    disabled.p = 0.0  # as TRL's disable_dropout does
    assert torch.equal(disabled(inputs), inputs)
