"""Configuration of TiSASRec, time-interval aware SASRec."""

from huggingface_hub.dataclasses import strict

from .configuration_sasrec import SASRecConfig


@strict
class TiSASRecConfig(SASRecConfig):
    r"""
    Configuration of [`TiSASRecModel`] (Li, Wang & McAuley, WSDM 2020): self-attention whose keys and values carry
    embeddings of the absolute position and of the time interval between each pair of items. All other fields as
    [`SASRecConfig`].

    Args:
        time_span: largest interval bucket; an interval is the time gap divided by the user's smallest non-zero
            gap, rounded down and clipped at `time_span`.
    """

    model_type = "tisasrec"

    time_span: int = 256

    def check_values(self) -> None:
        super().check_values()
        if self.time_span < 1:
            raise ValueError(f"time_span must be positive, got {self.time_span}.")


__all__ = ["TiSASRecConfig"]
