"""Configuration of [`RecommenderDPOTrainer`]: TRL's `DPOConfig` plus the fields of item completions."""

from dataclasses import dataclass, field

from trl import DPOConfig

SOFTMAX_DPO = "softmax_dpo"
# The name of softmax DPO in hf-sasrec 0.1.0, now refused: TRL's `SDPOTrainer` is self-distillation, another method.
RENAMED_LOSS_TYPES = {"sdpo": SOFTMAX_DPO}


@dataclass
class RecommenderDPOConfig(DPOConfig):
    r"""
    [`trl.DPOConfig`] for next-item recommenders. Every `DPOConfig` field keeps its meaning; `max_length` counts the
    history items plus the completion items, and over-long histories keep their most recent items.

    `loss_type` also accepts `"softmax_dpo"`, alone: softmax DPO for recommendation (S-DPO, Chen et al., 2024), one
    chosen item against the `K` rejected items of a row's `rejected_all` column. With `K = 1` it is the `"sigmoid"`
    DPO loss.

    Args:
        max_completion_length: items kept from the start of each chosen and rejected completion (1: single items).
        drop_malformed_rows: drop malformed preference rows, logging their count and indices, instead of raising.
        overwrite_output_dir: replace the run in `output_dir` (a non-empty `output_dir` is refused otherwise).
    """

    max_completion_length: int = field(
        default=1, metadata={"help": "Items kept from the start of each chosen/rejected completion."}
    )
    drop_malformed_rows: bool = field(
        default=False,
        metadata={"help": "Drop malformed preference rows (with a logged count and indices) instead of raising."},
    )
    overwrite_output_dir: bool = field(
        default=False,
        metadata={"help": "Replace the run in output_dir (a non-empty output_dir is refused otherwise)."},
    )

    def __post_init__(self):
        super().__post_init__()
        if self.max_completion_length < 1:
            raise ValueError(f"max_completion_length must be at least 1, got {self.max_completion_length}.")
        if self.max_length is not None and self.max_length <= self.max_completion_length:
            raise ValueError(
                f"max_length ({self.max_length}) must exceed max_completion_length ({self.max_completion_length}): "
                "it counts the history items and the completion items."
            )
        renamed = [name for name in self.loss_type if name in RENAMED_LOSS_TYPES]
        if renamed:
            raise ValueError(f"loss_type {renamed[0]!r} is now called {RENAMED_LOSS_TYPES[renamed[0]]!r}.")
        if SOFTMAX_DPO in self.loss_type and self.loss_type != [SOFTMAX_DPO]:
            raise ValueError(f"loss_type {SOFTMAX_DPO!r} cannot be combined with other losses, got {self.loss_type}.")
        if self.softmax_dpo and self.max_completion_length != 1:
            raise ValueError(f"loss_type {SOFTMAX_DPO!r} scores single-item completions: set max_completion_length=1.")

    @property
    def softmax_dpo(self) -> bool:
        """Whether the loss is softmax DPO (`loss_type=["softmax_dpo"]`)."""
        return self.loss_type == [SOFTMAX_DPO]


__all__ = ["SOFTMAX_DPO", "RecommenderDPOConfig"]
