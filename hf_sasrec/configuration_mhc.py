"""Configuration of SASRec with manifold-constrained hyper-connections."""

from huggingface_hub.dataclasses import strict

from .configuration_sasrec import SASRecConfig


@strict
class MHCConfig(SASRecConfig):
    r"""
    Configuration of [`MHCModel`]: SASRec whose residual stream is widened to `expansion_rate` parallel streams,
    read, written and mixed by manifold-constrained hyper-connections (mHC, arXiv:2512.24880; hyper-connections,
    arXiv:2409.19606). Blocks are pre-norm. All other fields as [`SASRecConfig`].

    Args:
        expansion_rate: number of residual streams `n`.
        sinkhorn_iters: Sinkhorn-Knopp iterations that project the residual mixing matrix onto the doubly stochastic
            matrices.
        gate_init: initial value of the gates that scale the input-dependent part of the mappings; small, so that a
            fresh model starts close to plain SASRec.
    """

    model_type = "mhc"

    expansion_rate: int = 4
    sinkhorn_iters: int = 20
    gate_init: float | int = 0.01

    def check_values(self) -> None:
        super().check_values()
        if self.expansion_rate < 1:
            raise ValueError(f"expansion_rate must be positive, got {self.expansion_rate}.")
        if self.sinkhorn_iters < 1:
            raise ValueError(f"sinkhorn_iters must be positive, got {self.sinkhorn_iters}.")
        if not self.norm_first:
            raise ValueError("mhc needs pre-norm blocks (norm_first=True): hyper-connections replace the residual.")


__all__ = ["MHCConfig"]
