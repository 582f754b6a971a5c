"""Initialise a model's item embeddings from precomputed item vectors (e.g. text embeddings of item titles)."""

import logging
from pathlib import Path

import numpy as np
import torch
from transformers import PreTrainedModel

logger = logging.getLogger(__name__)


def principal_components(vectors: torch.Tensor, dim: int) -> torch.Tensor:
    """Project `[rows, width]` vectors on their top `dim` principal components: `[rows, dim]`."""
    if dim > min(vectors.shape):
        raise ValueError(f"Cannot reduce {tuple(vectors.shape)} vectors to {dim} principal components.")
    centered = vectors - vectors.mean(0, keepdim=True)
    _, _, right = torch.linalg.svd(centered, full_matrices=False)
    return centered @ right[:dim].T


def load_item_embeddings(model: PreTrainedModel, path: str) -> None:
    """Overwrite the item rows of the (tied) item embedding table with the vectors of a `.npy` file.

    The file holds `[vocab_size, width]` (one row per token id; special-token rows are ignored) or `[num_items,
    width]` (items only, in token-id order). A width other than `hidden_size` is reduced to `hidden_size` by PCA.
    Vectors are rescaled to the standard deviation of the model's initialisation (`initializer_range`), so that the
    rest of the network starts at its usual scale.
    """
    if not Path(path).is_file():
        raise FileNotFoundError(f"item_embeddings {path!r} does not exist.")
    vectors = torch.from_numpy(np.load(path)).float()
    table = model.get_input_embeddings().weight
    num_items = model.config.num_items
    if vectors.ndim != 2 or len(vectors) not in (len(table), num_items):
        raise ValueError(
            f"item_embeddings {path}: shape {tuple(vectors.shape)}, expected [{len(table)} (vocab_size) or "
            f"{num_items} (num_items), width]."
        )
    items = vectors[len(vectors) - num_items :]
    if items.shape[1] != table.shape[1]:
        logger.info("Reducing item embeddings from %d to %d dimensions by PCA.", items.shape[1], table.shape[1])
        items = principal_components(items, table.shape[1])
    items = items * (model.config.initializer_range / items.std().clamp(min=1e-12))
    with torch.no_grad():
        table[len(table) - num_items :] = items.to(table.dtype)
