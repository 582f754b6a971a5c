"""What each variant adds to SASRec: mHC's constrained mixing, MoE routing, TiSASRec's time intervals."""

import pytest
import torch
from model_helpers import extra_inputs, random_items, tiny_model

from hf_sasrec.modeling_mhc import MHCHyperConnection, sinkhorn
from hf_sasrec.modeling_sasrec_moe import SASRecMLP, load_balancing_loss
from hf_sasrec.modeling_tisasrec import time_interval_buckets


def test_sinkhorn_output_is_doubly_stochastic():
    logits = torch.randn(7, 4, 4)
    matrix = sinkhorn(logits, iterations=20)
    assert (matrix >= 0).all()
    torch.testing.assert_close(matrix.sum(-1), torch.ones(7, 4), atol=1e-3, rtol=0)
    torch.testing.assert_close(matrix.sum(-2), torch.ones(7, 4), atol=1e-3, rtol=0)


def test_mhc_mixing_matrices_are_doubly_stochastic_inside_the_model():
    model = tiny_model("mhc", gate_init=1.0)
    seen = []
    connection = model.model.layers[1].mlp_connection
    connection.register_forward_hook(lambda module, args, output: seen.append(module.mappings(args[0])))
    model(input_ids=random_items(2, 6))
    pre, post, residual = seen[0]
    assert residual.shape == (2, 6, 4, 4)
    torch.testing.assert_close(residual.sum(-1), torch.ones(2, 6, 4), atol=1e-3, rtol=0)
    torch.testing.assert_close(residual.sum(-2), torch.ones(2, 6, 4), atol=1e-3, rtol=0)
    assert ((pre > 0) & (pre < 1)).all() and ((post > 0) & (post < 2)).all()
    assert residual.std(dim=(0, 1)).max() > 1e-4  # the mappings depend on the input


def test_mhc_with_closed_gates_computes_plain_sasrec():
    """Static mappings read the streams' mean and write to every stream; mixing keeps the mean: SASRec exactly."""
    mhc = tiny_model("mhc", seed=1)
    sasrec = tiny_model("sasrec", seed=2)
    for module in mhc.modules():
        if isinstance(module, MHCHyperConnection):
            for gate in (module.gate_pre, module.gate_post, module.gate_res):
                gate.data.zero_()
    missing, unexpected = sasrec.load_state_dict(mhc.state_dict(), strict=False)
    assert not missing
    assert all("connection" in key or "stream_expansion" in key for key in unexpected)
    input_ids = random_items(3, 7)
    with torch.no_grad():
        torch.testing.assert_close(
            mhc(input_ids=input_ids).logits, sasrec(input_ids=input_ids).logits, atol=1e-5, rtol=0
        )


def largest_mixing_gradient_during_training(identical_streams: bool) -> float:
    model = tiny_model("mhc").train()
    if identical_streams:  # the seed-style expansion: n copies of one stream
        model.model.stream_expansion.offsets.data.zero_()
        model.model.stream_expansion.offsets.requires_grad_(False)
    optimizer = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=1e-2)
    input_ids, shift_labels = random_items(4, 6), random_items(4, 6, seed=1)
    largest = 0.0
    for _ in range(6):
        optimizer.zero_grad()
        model(input_ids=input_ids, shift_labels=shift_labels).loss.backward()
        for block in model.model.layers:
            for connection in (block.attention_connection, block.mlp_connection):
                largest = max(largest, connection.static_res.grad.abs().max().item())
        optimizer.step()
    return largest


def test_mhc_mixing_matrices_receive_gradient_unlike_copied_streams():
    """Copies of one stream stay identical, so Sinkhorn-normalised mixing gets no gradient; the offsets fix that."""
    copied = largest_mixing_gradient_during_training(identical_streams=True)
    offset = largest_mixing_gradient_during_training(identical_streams=False)
    assert copied < 1e-8
    assert offset > 1e-6 and offset > 1000 * copied


def test_moe_routes_each_position_to_exactly_top_k_experts():
    model = tiny_model("sasrec_moe", num_experts=4, num_experts_per_tok=2)
    moe = model.model.layers[0].mlp
    calls = []
    for index, expert in enumerate(moe.experts):
        expert.register_forward_hook(lambda module, args, output, index=index: calls.append((index, args[0].shape[0])))
    input_ids = random_items(3, 5)
    with torch.no_grad():
        router_logits = model(input_ids=input_ids, output_router_logits=True).router_logits
    assert sum(count for _, count in calls) == 3 * 5 * 2
    assert len(router_logits) == 2 and router_logits[0].shape == (15, 4)
    chosen = router_logits[0].topk(2, dim=-1).indices
    for index, count in calls:
        assert count == (chosen == index).any(-1).sum().item()


def test_moe_output_is_the_weighted_sum_of_the_chosen_experts():
    model = tiny_model("sasrec_moe", num_experts=3, num_experts_per_tok=2, shared_expert=True)
    moe = model.model.layers[0].mlp
    tokens = torch.randn(6, 16)
    with torch.no_grad():
        logits = tokens @ moe.router.weight.T
        weights, experts = logits.softmax(-1).topk(2, dim=-1)
        weights = weights / weights.sum(-1, keepdim=True)
        expected = torch.stack(
            [
                sum(weights[t, s] * moe.experts[experts[t, s]](tokens[t]) for s in range(2))
                + moe.shared_expert(tokens[t])
                for t in range(6)
            ]
        )
        torch.testing.assert_close(moe(tokens[None])[0], expected, atol=1e-5, rtol=0)


def test_moe_auxiliary_loss_is_positive_and_reaches_the_total_loss():
    input_ids = random_items(4, 6)
    input_ids[0, :2] = 0
    totals = {}
    for coefficient in (0.0, 0.5):
        model = tiny_model("sasrec_moe", router_aux_loss_coef=coefficient)
        output = model(input_ids=input_ids, labels=input_ids)
        totals[coefficient] = output
    aux_loss = totals[0.5].aux_loss
    assert aux_loss > 0
    torch.testing.assert_close(totals[0.5].loss - totals[0.0].loss, 0.5 * aux_loss)
    aux_loss.backward()
    assert model.model.layers[0].mlp.router.weight.grad.abs().max() > 0


def test_load_balancing_loss_is_one_for_even_routing_and_larger_when_concentrated():
    even = (torch.zeros(8, 4),)
    torch.testing.assert_close(load_balancing_loss(even, 1, None), torch.tensor(1.0))
    concentrated = (torch.tensor([[5.0, 0, 0, 0]]).repeat(8, 1),)
    assert load_balancing_loss(concentrated, 1, None) > 2.0
    padding_only_concentrated = (torch.cat([torch.zeros(4, 4), concentrated[0][:4]]),)
    mask = torch.tensor([[1, 1, 1, 1, 0, 0, 0, 0]])
    torch.testing.assert_close(load_balancing_loss(padding_only_concentrated, 1, mask), torch.tensor(1.0))


def test_moe_experts_are_plain_sasrec_mlps():
    model = tiny_model("sasrec_moe")
    assert all(type(expert) is SASRecMLP for expert in model.model.layers[0].mlp.experts)


def test_time_interval_buckets_match_a_hand_worked_example():
    # Left-padded user with times 100, 103, 103, 109, 200: smallest non-zero gap 3.
    timestamps = torch.tensor([[0, 100, 103, 103, 109, 200]])
    mask = torch.tensor([[0, 1, 1, 1, 1, 1]])
    buckets = time_interval_buckets(timestamps, mask, time_span=10)
    expected = [
        [0, 0, 0, 0, 0, 0],
        [0, 0, 1, 1, 3, 10],  # |200 - 100| / 3 = 33 clipped at 10
        [0, 1, 0, 0, 2, 10],  # 97 / 3 = 32
        [0, 1, 0, 0, 2, 10],
        [0, 3, 2, 2, 0, 10],  # 91 / 3 = 30
        [0, 10, 10, 10, 10, 0],
    ]
    assert buckets[0].tolist() == expected
    same_time = time_interval_buckets(torch.tensor([[5, 5, 5]]), torch.ones(1, 3), time_span=4)
    assert same_time.sum() == 0


@pytest.mark.parametrize("shift", ["order", "scale"])
def test_tisasrec_outputs_change_when_timestamps_change(shift):
    model = tiny_model("tisasrec")
    input_ids = random_items(2, 6)
    timestamps = extra_inputs("tisasrec", input_ids)["timestamps"]
    changed = timestamps.clone()
    if shift == "order":
        changed[:, 3:] += 50
    else:
        changed = changed * 2  # every interval doubles, and so does the smallest: buckets and outputs stay
    with torch.no_grad():
        before = model.model(input_ids=input_ids, timestamps=timestamps).last_hidden_state
        after = model.model(input_ids=input_ids, timestamps=changed).last_hidden_state
    if shift == "order":
        assert (before - after).abs().max() > 1e-3
    else:
        torch.testing.assert_close(before, after)


def test_tisasrec_without_timestamps_is_a_clear_error():
    model = tiny_model("tisasrec")
    with pytest.raises(ValueError, match="tisasrec needs `timestamps`"):
        model(input_ids=random_items(1, 4))
