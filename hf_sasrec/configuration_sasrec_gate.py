"""Configuration of SASRec with a gated SiLU MLP."""

from huggingface_hub.dataclasses import strict

from .configuration_sasrec import SASRecConfig


@strict
class SASRecGateConfig(SASRecConfig):
    r"""
    Configuration of [`SASRecGateModel`]: SASRec whose feed-forward layer is the gated MLP of modern LLMs,
    `W_d (act(x W_g) * x W_u)` with `hidden_act="silu"` by default. All fields as [`SASRecConfig`].
    """

    model_type = "sasrec_gate"

    hidden_act: str = "silu"


__all__ = ["SASRecGateConfig"]
