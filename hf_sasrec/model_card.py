"""Hub-ready checkpoints: the folder `push_to_hub` uploads, with a generated model card.

`save_for_hub` writes everything a downstream user needs into one folder: the weights (safetensors), `config.json`
with its `auto_map` and the modeling code (`save_pretrained` of this package's models), the item tokenizer with
`item2id.json` / `id2item.json`, the Faiss item index when there is one, and `README.md`: a model card whose YAML
header names the library, tags and data set, followed by the run's metrics and how to load the model. The config
records the fingerprint of the item vocabulary (`item_vocab_fingerprint`), so that loading refuses another tokenizer.
`push_to_hub` writes that folder locally first and uploads it as one commit; when the Hub cannot be reached it raises
`ConnectionError` naming the local folder, which is kept.
"""

import json
import logging
import shutil
import tempfile
from collections.abc import Mapping
from pathlib import Path

from huggingface_hub import HfApi, ModelCardData
from huggingface_hub.errors import HfHubHTTPError, HTTPError, OfflineModeIsEnabled
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from .atomic_files import atomic_write_json, atomic_write_text
from .checkpoint_loading import record_item_vocabulary
from .item_tokenizer import save_item_tokenizer
from .retrieval import ItemIndex

logger = logging.getLogger(__name__)

CARD_FILE = "README.md"
RUN_INFO_FILE = "run_info.json"
BASE_TAGS = ("recommendation", "sequential-recommendation", "hf-sasrec")


def flat_metrics(metrics: Mapping, prefix: str = "") -> dict[str, float]:
    """Numeric leaves of a (possibly nested) metrics mapping, keyed by their `/`-joined path."""
    flat = {}
    for name, value in metrics.items():
        key = f"{prefix}{name}"
        if isinstance(value, Mapping):
            flat.update(flat_metrics(value, f"{key}/"))
        elif isinstance(value, int | float) and not isinstance(value, bool):
            flat[key] = float(value)
    return flat


def format_metric(value: float) -> str:
    """Four decimals for rates and losses, thousands separators for counts and sizes."""
    return f"{value:.4f}" if abs(value) < 1000 else f"{value:,.0f}"


def metrics_table(metrics: Mapping) -> str:
    """A markdown table of the numeric metrics, or a line saying there are none."""
    flat = flat_metrics(metrics)
    if not flat:
        return "No evaluation metrics were recorded for this checkpoint.\n"
    rows = "\n".join(f"| `{name}` | {format_metric(value)} |" for name, value in sorted(flat.items()))
    return f"| metric | value |\n| --- | --- |\n{rows}\n"


def model_card(
    model: PreTrainedModel,
    metrics: Mapping | None = None,
    dataset: str | None = None,
    repo_id: str | None = None,
    has_index: bool = False,
    max_length: int | None = None,
) -> str:
    """The text of `README.md`: YAML metadata, a description of the model, its metrics and how to load it."""
    config = model.config
    card_data = ModelCardData(
        library_name="transformers",
        tags=[*BASE_TAGS, config.model_type],
        datasets=[dataset] if dataset else None,
    )
    name = repo_id or f"{config.model_type} recommender"
    timestamps = ", timestamps=[t1, t2, t3]" if config.model_type == "tisasrec" else ""
    timestamp_tensor = ", timestamps=torch.tensor([[t1, t2, t3]])" if config.model_type == "tisasrec" else ""
    index_line = (
        "- `item_index.faiss`, `item_index.json`: a Faiss index over the item embeddings and the fingerprint of the "
        "weights it was built from (a stale index is rebuilt on load)\n"
        if has_index
        else ""
    )
    location = repo_id or "path/to/this/folder"
    return f"""---
{card_data.to_yaml()}
---

# {name}

A `{config.model_type}` sequential recommender of hf-sasrec: given a user's items in time
order, it scores every item as the next one. Scores are dot products of the user representation (the encoder's
hidden state at the last item) with the item embeddings, which the output layer shares.

| field | value |
| --- | --- |
| model type | `{config.model_type}` |
| items | {config.num_items} (+ {config.num_special_tokens} special tokens) |
| hidden size / layers / heads | {config.hidden_size} / {config.num_hidden_layers} / {config.num_attention_heads} |
| history read | the last {max_length or config.max_position_embeddings} items |
| training loss | `{config.loss_type}` |
| data set | {dataset or "not recorded"} |

## Evaluation

{metrics_table(metrics or {})}
## How to use

With `hf_sasrec` installed, raw item keys in and out:

```python
from hf_sasrec.recommender import Recommender

rec = Recommender.from_pretrained("{location}")
rec(["item_a", "item_b", "item_c"], top_k=10{timestamps})  # {{"items": [...], "scores": [...], ...}}
```

With transformers only (the modeling code ships with the weights; `item2id.json` maps raw keys to ids):

```python
import json, torch
from huggingface_hub import hf_hub_download
from transformers import AutoModel, PreTrainedTokenizerFast

folder = "{location}"  # a Hub repository id or a local folder
encoder = AutoModel.from_pretrained(folder, trust_remote_code=True).eval()  # runs this folder's modeling code
tokenizer = PreTrainedTokenizerFast.from_pretrained(folder)  # item tokens; a plain tokenizer, no custom code
item2id = json.load(open(hf_hub_download(folder, "item2id.json")))  # local folder: f"{{folder}}/item2id.json"
ids = torch.tensor([[item2id[key] for key in ["item_a", "item_b", "item_c"]]])
states = encoder(input_ids=ids{timestamp_tensor}).last_hidden_state[:, -1]  # [batch, hidden]
scores = states @ encoder.get_input_embeddings().weight.T  # [batch, vocab]
scores[:, :{config.num_special_tokens}] = -float("inf")  # special tokens are not items
```

## Files

- `model.safetensors`, `config.json` (with `auto_map` and `item_vocab_fingerprint`), `configuration_*.py`,
  `modeling_*.py`: the model and its code
- `tokenizer.json`, `tokenizer_config.json`, `item2id.json`, `id2item.json`: the item tokenizer and the raw item keys
- `run_info.json`: the history window the model was trained with (`max_length`)
{index_line}"""


def save_for_hub(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    path: str | Path,
    metrics: Mapping | None = None,
    index: ItemIndex | None = None,
    dataset: str | None = None,
    repo_id: str | None = None,
    max_length: int | None = None,
) -> Path:
    """Write into `path` exactly what `push_to_hub` uploads: model (its config recording the tokenizer's
    `item_vocab_fingerprint`; `ValueError` when it records another), tokenizer, item maps, index, `run_info.json`
    (the history window `max_length`, default `max_position_embeddings`) and model card; the files of this package
    atomically."""
    path = Path(path)
    record_item_vocabulary(model.config, tokenizer)
    model.save_pretrained(path)
    save_item_tokenizer(tokenizer, path)
    if index is not None:
        index.save(path)
    run_info = {
        "model_type": model.config.model_type,
        "max_length": max_length or model.config.max_position_embeddings,
    }
    atomic_write_json(path / RUN_INFO_FILE, {**run_info, "dataset": dataset})
    card = model_card(
        model, metrics, dataset=dataset, repo_id=repo_id, has_index=index is not None, max_length=max_length
    )
    atomic_write_text(path / CARD_FILE, card)
    return path


def push_to_hub(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    repo_id: str,
    metrics: Mapping | None = None,
    index: ItemIndex | None = None,
    dataset: str | None = None,
    max_length: int | None = None,
    private: bool | None = None,
    token: str | None = None,
    commit_message: str = "Upload hf-sasrec recommender",
    local_dir: str | Path | None = None,
):
    """Write the `save_for_hub` folder, create `repo_id` on the Hub when needed and upload the folder as one commit.

    The folder is `local_dir`, or a new temporary folder that is removed once the upload succeeds. When the Hub
    cannot be reached (no network, `HF_HUB_OFFLINE`), `ConnectionError` names the folder, which is kept; an error
    answered by the Hub (authentication, permissions) is raised as is, and the folder kept as well.
    """
    folder = Path(local_dir) if local_dir is not None else Path(tempfile.mkdtemp(prefix="hf-sasrec-upload-"))
    save_for_hub(
        model,
        tokenizer,
        folder,
        metrics=metrics,
        index=index,
        dataset=dataset,
        repo_id=repo_id,
        max_length=max_length,
    )
    logger.info("Saved the checkpoint for %s in %s; uploading it.", repo_id, folder)
    api = HfApi(token=token)
    try:
        api.create_repo(repo_id, private=private, exist_ok=True)
        commit = api.upload_folder(repo_id=repo_id, folder_path=folder, commit_message=commit_message)
    except HfHubHTTPError:
        raise  # the Hub answered: its message says why
    except (HTTPError, OfflineModeIsEnabled) as error:
        raise ConnectionError(
            f"The Hugging Face Hub cannot be reached ({type(error).__name__}: {error}); the checkpoint was saved "
            f"locally in {folder}: upload it later with `hf upload {repo_id} {folder}`."
        ) from error
    if local_dir is None:
        shutil.rmtree(folder)
    return commit


def read_metrics(run_dir: str | Path) -> dict:
    """The `metrics.json` of a run folder, or an empty dict when it has none."""
    metrics_file = Path(run_dir) / "metrics.json"
    return json.loads(metrics_file.read_text()) if metrics_file.is_file() else {}


__all__ = ["metrics_table", "model_card", "push_to_hub", "read_metrics", "save_for_hub"]
