"""Load a saved checkpoint for serving or evaluation, refusing one that would give silently wrong answers.

`Recommender.from_pretrained`, `python -m hf_sasrec.evaluate`, `python -m hf_sasrec.dpo` and `python -m
hf_sasrec.infer` load checkpoints through `load_checkpoint`:

- `resolve_checkpoint`: a local folder as is, or a Hub repository id through the Hub cache; a path that names no
  folder is reported as a missing folder, not as a malformed repository id.
- `check_model_code`: a folder whose `model_type` is one of this package's (or of transformers) loads with the
  installed code, never with the `*.py` files saved beside the weights; any other `model_type` would run the
  folder's own code and is refused unless `trust_remote_code=True` (`--trust-remote-code`), as in transformers.
- `check_finite_weights`: every floating-point tensor of the loaded model is finite; a corrupt `model.safetensors`
  is refused, naming the first tensor that is not.
- `check_item_vocabulary`: the tokenizer is the ordered item vocabulary the model was trained with, as recorded in
  the config's `item_vocab_fingerprint` (see `vocabulary_fingerprint`). A checkpoint saved before the fingerprint
  was recorded loads with a warning, and the tokenizer checked first becomes the reference of the later checks.
"""

import json
import logging
from pathlib import Path

import numpy as np
import torch
from huggingface_hub import snapshot_download
from huggingface_hub.errors import HFValidationError, LocalEntryNotFoundError, RepositoryNotFoundError
from huggingface_hub.utils import validate_repo_id
from transformers import (
    CONFIG_MAPPING,
    AutoModelForCausalLM,
    AutoTokenizer,
    PreTrainedConfig,
    PreTrainedModel,
    PreTrainedTokenizerBase,
)

from data_preprocess.preference import model_item_embeddings

from .item_tokenizer import vocabulary_fingerprint

logger = logging.getLogger(__name__)

ITEM_VOCAB_FINGERPRINT = "item_vocab_fingerprint"
CONFIG_FILE = "config.json"
TOKENIZER_CONFIG_FILE = "tokenizer_config.json"


def is_repo_id(name: str) -> bool:
    """Whether `name` has the form of a Hub repository id (`name` or `owner/name`)."""
    try:
        validate_repo_id(name)
    except HFValidationError:
        return False
    return True


def resolve_checkpoint(path: str | Path) -> Path:
    """A local folder as is; a Hub repository id through the local Hub cache (downloaded when online).

    A path that cannot be a repository id (`./run`, `outputs/sft/run`, an absolute path), or whose parent folder
    exists locally, is a local folder. Raises `FileNotFoundError` with one line naming the path when it is neither.
    """
    folder = Path(path)
    if folder.is_dir():
        return folder
    if folder.exists():
        raise NotADirectoryError(f"{path} is a file: pass the checkpoint folder that holds {CONFIG_FILE}.")
    if not is_repo_id(str(path)) or (folder.parent != Path(".") and folder.parent.is_dir()):
        raise FileNotFoundError(f"Checkpoint folder {str(path)!r} does not exist: check the path.")
    try:
        return Path(snapshot_download(str(path)))
    except (RepositoryNotFoundError, LocalEntryNotFoundError) as error:
        raise FileNotFoundError(
            f"{str(path)!r} is not a local folder, and no Hub repository of that id could be found or reached "
            f"({type(error).__name__}): check the path, or the repository id and the network."
        ) from error


def check_model_code(checkpoint: Path, trust_remote_code: bool = False) -> None:
    """Refuse a folder whose `config.json` declares a `model_type` that only the folder's own code implements,
    unless `trust_remote_code`; this package's model types always load with the installed code."""
    config_file = checkpoint / CONFIG_FILE
    if not config_file.is_file():
        raise FileNotFoundError(f"{checkpoint} has no {CONFIG_FILE}: it is not a saved model folder.")
    try:
        model_type = json.loads(config_file.read_text(encoding="utf-8")).get("model_type")
    except json.JSONDecodeError as error:
        raise ValueError(f"{config_file} is not valid JSON ({error}): the checkpoint is corrupt.") from error
    if model_type not in CONFIG_MAPPING and not trust_remote_code:
        raise ValueError(
            f"{config_file} declares model_type {model_type!r}, which neither hf_sasrec nor transformers implements: "
            "loading it would run the code saved in that folder; pass --trust-remote-code (trust_remote_code=True) "
            "only if you trust it."
        )


def check_finite_weights(model: PreTrainedModel, checkpoint: Path) -> None:
    """Raise `ValueError` naming the first floating-point tensor of `model` that holds a NaN or an infinity."""
    for name, tensor in model.state_dict().items():
        if tensor.is_floating_point() and not torch.isfinite(tensor).all():
            bad = int((~torch.isfinite(tensor)).sum())
            raise ValueError(
                f"Tensor {name!r} of {checkpoint} holds {bad} non-finite values (NaN or infinity) of "
                f"{tensor.numel()}: the weights file is corrupt or training diverged; restore or retrain the model."
            )


def check_item_vocabulary(
    config: PreTrainedConfig, tokenizer: PreTrainedTokenizerBase, model_dir: str | Path, tokenizer_dir: str | Path
) -> None:
    """Raise `ValueError` unless `tokenizer` is the ordered item vocabulary the model of `config` was trained with.

    A config without `item_vocab_fingerprint` (saved before it was recorded) cannot be verified: this is logged, and
    the fingerprint of `tokenizer` is recorded in `config` as the reference of later checks.
    """
    if len(tokenizer) != config.vocab_size:
        raise ValueError(
            f"The tokenizer in {tokenizer_dir} has {len(tokenizer)} tokens but the model in {model_dir} has "
            f"vocab_size {config.vocab_size}: use the tokenizer saved with the model, or data processed for it."
        )
    recorded = getattr(config, ITEM_VOCAB_FINGERPRINT, None)
    if recorded is None:
        logger.warning(
            "%s records no item-vocabulary fingerprint (saved before hf-sasrec recorded one): the item order of %s "
            "cannot be verified and is taken as the model's.",
            model_dir,
            tokenizer_dir,
        )
        setattr(config, ITEM_VOCAB_FINGERPRINT, vocabulary_fingerprint(tokenizer))
    elif recorded != vocabulary_fingerprint(tokenizer):
        raise ValueError(
            f"The tokenizer in {tokenizer_dir} is not the item vocabulary the model in {model_dir} was trained with "
            "(other items, or the same items in another order): use the tokenizer saved with the model, or data "
            "processed for it."
        )


def record_item_vocabulary(
    config: PreTrainedConfig,
    tokenizer: PreTrainedTokenizerBase,
    model_dir: str | Path = "the model",
    tokenizer_dir: str | Path = "the tokenizer",
) -> None:
    """Record the fingerprint of `tokenizer` in `config` before the two are saved together; a different fingerprint
    already recorded raises `ValueError` (see `check_item_vocabulary`)."""
    if getattr(config, ITEM_VOCAB_FINGERPRINT, None) is not None:
        check_item_vocabulary(config, tokenizer, model_dir, tokenizer_dir)
    setattr(config, ITEM_VOCAB_FINGERPRINT, vocabulary_fingerprint(tokenizer))


def load_checkpoint(
    path: str | Path,
    *,
    trust_remote_code: bool = False,
    device: str | torch.device | None = None,
    require_tokenizer: bool = True,
) -> tuple[Path, PreTrainedModel, PreTrainedTokenizerBase | None]:
    """The folder, the checked `AutoModelForCausalLM` and the checked item tokenizer of a checkpoint.

    Args:
        path: a local folder or a Hub repository id (see `resolve_checkpoint`).
        trust_remote_code: allow a `model_type` that only the folder's own code implements (see `check_model_code`).
        device: where to move the model.
        require_tokenizer: raise when the folder has no tokenizer; otherwise (a Trainer `checkpoint-*` folder) the
            tokenizer is `None`.
    """
    checkpoint = resolve_checkpoint(path)
    check_model_code(checkpoint, trust_remote_code)
    model = AutoModelForCausalLM.from_pretrained(checkpoint, trust_remote_code=trust_remote_code)
    check_finite_weights(model, checkpoint)
    tokenizer = None
    if (checkpoint / TOKENIZER_CONFIG_FILE).is_file():
        tokenizer = AutoTokenizer.from_pretrained(checkpoint, trust_remote_code=trust_remote_code)
        check_item_vocabulary(model.config, tokenizer, checkpoint, checkpoint)
    elif require_tokenizer:
        raise FileNotFoundError(
            f"{checkpoint} has no item tokenizer ({TOKENIZER_CONFIG_FILE}): load the run folder rather than one of "
            "its checkpoint-* folders."
        )
    if device is not None:
        model = model.to(device)
    return checkpoint, model, tokenizer


def checkpoint_item_vectors(path: str | Path) -> np.ndarray:
    """The item vectors that score items in the checkpoint `path`, `[vocab_size, hidden]` float32: read from its
    weights without running the model when they are stored (an id-only model), else computed by the loaded model
    from its items' features."""
    config = json.loads((resolve_checkpoint(path) / CONFIG_FILE).read_text(encoding="utf-8"))
    if not config.get("item_features"):
        return model_item_embeddings(path)
    _, model, _ = load_checkpoint(path)
    with torch.no_grad():
        return model.item_embeddings().float().cpu().numpy()


__all__ = [
    "ITEM_VOCAB_FINGERPRINT",
    "check_finite_weights",
    "check_item_vocabulary",
    "check_model_code",
    "checkpoint_item_vectors",
    "load_checkpoint",
    "record_item_vocabulary",
    "resolve_checkpoint",
]
