"""Configuration of the RQ-VAE that turns item embeddings into semantic ids."""

from huggingface_hub.dataclasses import strict
from transformers import PreTrainedConfig


@strict
class RQVAEConfig(PreTrainedConfig):
    r"""
    Configuration of [`RQVAEModel`], a residual-quantised variational autoencoder (Lee et al., CVPR 2022) as TIGER
    uses it (Rajput et al., NeurIPS 2023) to give every item a semantic id: a tuple of `num_levels` codes, the first
    coarse, each next one quantising what the previous levels left over.

    Args:
        input_size: width of the item embeddings the model reads and reconstructs.
        hidden_sizes: widths of the encoder's hidden layers, first to last; the decoder mirrors them.
        latent_size: width of the latent vector that is quantised.
        hidden_act: activation between the MLP layers.
        num_levels: codebooks of the residual quantiser (levels of a semantic id).
        codebook_size: codes in each codebook.
        commitment_weight: weight of the commitment loss (`beta`), which pulls the encoder's output towards the
            chosen codes; the codebook loss, which pulls the codes towards the encoder's output, has weight 1.
        kmeans_iterations: Lloyd iterations of the k-means that initialises each codebook from the residuals of its
            level (the first training batch, or every item with [`RQVAEModel.initialize_codebooks`]).
        dead_code_steps: a code that no training batch has chosen for this many steps is restarted at a residual of
            the current batch; 0 never restarts.
        initializer_range: standard deviation of the codebooks' normal initialisation, which k-means replaces before
            training; the MLP layers use PyTorch's default initialisation, which keeps activations at scale through
            the stack.
    """

    model_type = "rqvae"

    input_size: int = 64
    hidden_sizes: list[int] | tuple[int, ...] = (512, 256, 128)
    latent_size: int = 32
    hidden_act: str = "silu"
    num_levels: int = 3
    codebook_size: int = 256
    commitment_weight: float | int = 0.25
    kmeans_iterations: int = 20
    dead_code_steps: int = 100
    initializer_range: float | int = 0.02

    def __post_init__(self, **kwargs):
        self.hidden_sizes = list(self.hidden_sizes)
        self.check_values()
        super().__post_init__(**kwargs)

    def check_values(self) -> None:
        """Raise `ValueError` naming the first field whose value cannot build a model."""
        for name in ("input_size", "latent_size", "num_levels", "codebook_size", "kmeans_iterations"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be a positive integer, got {getattr(self, name)}.")
        if any(size < 1 for size in self.hidden_sizes):
            raise ValueError(f"hidden_sizes must be positive integers, got {self.hidden_sizes}.")
        if self.dead_code_steps < 0:
            raise ValueError(f"dead_code_steps must be 0 (never restart) or positive, got {self.dead_code_steps}.")
        if self.commitment_weight < 0:
            raise ValueError(f"commitment_weight must be non-negative, got {self.commitment_weight}.")


__all__ = ["RQVAEConfig"]
