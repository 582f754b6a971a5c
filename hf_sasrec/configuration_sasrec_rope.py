"""Configuration of SASRec with rotary position embeddings."""

from huggingface_hub.dataclasses import strict

from .configuration_sasrec import SASRecConfig


@strict
class SASRecRopeConfig(SASRecConfig):
    r"""
    Configuration of [`SASRecRopeModel`]: SASRec whose positions are rotary embeddings applied to queries and keys
    (Su et al., 2021) instead of learned absolute embeddings added to the input. All other fields as
    [`SASRecConfig`].

    Args:
        rope_theta: base of the rotary frequencies.
    """

    model_type = "sasrec_rope"

    rope_theta: float | int = 10000.0

    def check_values(self) -> None:
        super().check_values()
        if (self.hidden_size // self.num_attention_heads) % 2:
            raise ValueError(
                f"Rotary embeddings need an even head size; hidden_size / num_attention_heads = "
                f"{self.hidden_size // self.num_attention_heads}."
            )
        if self.rope_theta <= 0:
            raise ValueError(f"rope_theta must be positive, got {self.rope_theta}.")


__all__ = ["SASRecRopeConfig"]
