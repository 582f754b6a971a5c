"""The user encoder: a user's features (age, gender, occupation, ...) as one vector added to every position's input.

A config's `user_features` lists them as `item_features` does (`categorical`, `multi`, `numeric`; see
`hf_sasrec.feature_embeddings`). Their values come with each batch, `user_features={"<feature>.<value>": tensor
[batch, ...]}` (e.g. `"gender.ids"`, `"age.value"`, `"age.missing"`), as `NextItemCollator` gives them from a
split's `user_features` column. The embeddings of a user's features are summed and added to the input of every
position, as a segment embedding is: the user conditions every prediction, the history keeps its positions and its
length (a prepended user token would take a position of the window and move every item's position), and the last
position's state stays the user's representation. A batch without `user_features` is encoded as users whose every
feature is missing (with a warning): the model still serves, as it would a user it knows nothing of.
"""

import torch
from torch import nn
from transformers.utils import logging

from .feature_embeddings import feature_modules

logger = logging.get_logger(__name__)


class UserEncoder(nn.Module):
    """The sum of the embeddings of a user's features, `[batch, hidden]`."""

    def __init__(self, config):
        super().__init__()
        self.features = feature_modules(config.user_features, config.hidden_size)

    def missing_values(self, batch_size: int, device: torch.device) -> dict[str, torch.Tensor]:
        """The values of `batch_size` users whose every feature is missing."""
        return {
            f"{name}.{value}": tensor.to(device)
            for name, feature in self.features.items()
            for value, tensor in feature.value_buffers(batch_size).items()
        }

    def forward(self, user_features: dict[str, torch.Tensor] | None, batch_size: int, device: torch.device):
        """`user_features` (`"<feature>.<value>"` -> `[batch, ...]`) to `[batch, hidden]`; `None`: every feature
        missing."""
        if user_features is None:
            logger.warning_once(
                "This model reads user features and none were given: every feature is taken as missing."
            )
            user_features = self.missing_values(batch_size, device)
        expected = {f"{name}.{value}" for name, feature in self.features.items() for value in feature.value_names}
        if set(user_features) != expected:
            raise ValueError(f"user_features has {sorted(user_features)}; the model reads {sorted(expected)}.")
        return sum(
            feature.embed(**{value: user_features[f"{name}.{value}"] for value in feature.value_names})
            for name, feature in self.features.items()
        )


__all__ = ["UserEncoder"]
