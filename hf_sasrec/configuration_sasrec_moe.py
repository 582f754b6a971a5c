"""Configuration of SASRec with a mixture-of-experts MLP."""

from huggingface_hub.dataclasses import strict

from .configuration_sasrec import SASRecConfig


@strict
class SASRecMoEConfig(SASRecConfig):
    r"""
    Configuration of [`SASRecMoEModel`]: SASRec whose feed-forward layer is a mixture of experts with top-k routing.
    All other fields as [`SASRecConfig`].

    Args:
        num_experts: experts in each block.
        num_experts_per_tok: experts each item position is routed to (top-k).
        moe_intermediate_size: width of each expert (defaults to `intermediate_size`).
        shared_expert: add an always-on expert beside the routed ones.
        norm_topk_prob: renormalise the top-k routing weights to sum to one.
        router_aux_loss_coef: weight of the load-balancing loss added to the training loss.
        output_router_logits: return the router logits of every block.
    """

    model_type = "sasrec_moe"

    num_experts: int = 4
    num_experts_per_tok: int = 2
    moe_intermediate_size: int | None = None
    shared_expert: bool = False
    norm_topk_prob: bool = True
    router_aux_loss_coef: float | int = 0.01
    output_router_logits: bool = False

    def check_values(self) -> None:
        super().check_values()
        if self.moe_intermediate_size is None:
            self.moe_intermediate_size = self.intermediate_size
        if self.num_experts < 1:
            raise ValueError(f"num_experts must be positive, got {self.num_experts}.")
        if not 1 <= self.num_experts_per_tok <= self.num_experts:
            raise ValueError(
                f"num_experts_per_tok ({self.num_experts_per_tok}) must lie between 1 and num_experts "
                f"({self.num_experts})."
            )
        if self.router_aux_loss_coef < 0:
            raise ValueError(f"router_aux_loss_coef must not be negative, got {self.router_aux_loss_coef}.")


__all__ = ["SASRecMoEConfig"]
