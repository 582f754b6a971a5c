"""Hub-ready checkpoints: the folder `push_to_hub` uploads, with a generated model card.

`save_for_hub` writes everything a downstream user needs into one folder: the weights (safetensors), `config.json`
with its `auto_map` and the modeling code (`save_pretrained` of this package's models), the item tokenizer with
`item2id.json` / `id2item.json`, the Faiss item index when there is one, `run_info.json` (the run's record less its
local paths) and `README.md`: a model card whose YAML header names the library, tags and data set and holds the test
metrics as `model-index` (`huggingface_hub.EvalResult`, one per protocol and metric, so the Hub renders them),
followed by a table of the test metrics (protocol x metric), how the data was split and evaluated, and how to load
the model with hf_sasrec or with transformers alone. The config records the fingerprint of the item vocabulary
(`item_vocab_fingerprint`), so that loading refuses another tokenizer. `push_to_hub` writes that folder locally first
and uploads it as one commit; when the Hub cannot be reached it raises `ConnectionError` naming the local folder,
which is kept.
"""

import dataclasses
import json
import logging
import re
import shutil
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from huggingface_hub import EvalResult, HfApi, ModelCardData
from huggingface_hub.errors import HfHubHTTPError, HTTPError, OfflineModeIsEnabled
from transformers import PreTrainedConfig, PreTrainedModel, PreTrainedTokenizerBase

from data_preprocess.atomic_files import atomic_write_text

from .checkpoint_loading import record_item_vocabulary
from .evaluation import CI_SUFFIX, PROTOCOLS, metrics_table
from .item_tokenizer import save_item_tokenizer
from .pipeline_next_item import save_pipeline_code
from .run_info import RUN_INFO_FILE, RunInfo

if TYPE_CHECKING:
    from .retrieval import ItemIndex

logger = logging.getLogger(__name__)

CARD_FILE = "README.md"
BASE_TAGS = ("recommendation", "sequential-recommendation", "hf-sasrec")
TASK_TYPE, TASK_NAME = "sequential-recommendation", "Next-item recommendation"
TEST_SPLIT = "test"
# A test metric of a run's metrics: `test_full/hr@10` (SFT's metrics.json), `test/full/hr@10` (nested), or the
# aligned model's side of DPO's before/after entries (`test/full/hr@10/dpo`).
# an SFT run's `test_full/hr@10` (and `..._ci95`), or a DPO run's `test/full/hr@10/dpo` (and `.../dpo_ci95`)
TEST_METRIC = re.compile(
    rf"{TEST_SPLIT}[_/](?P<protocol>{'|'.join(PROTOCOLS)})/(?P<metric>[^/]+?)(?:/dpo(?P<interval>{CI_SUFFIX})?)?"
)
# recorded with the metrics, but counts: in the table as counts, never in the model-index
COUNTS = ("num_users", "disliked_users", "users_sampled_from")
# Placeholders of the usage snippet (raw item keys, and TiSASRec's times), oldest first.
EXAMPLE_HISTORIES = [["item_a", "item_b", "item_c"], ["item_d"]]
EXAMPLE_TIMES = [[100, 160, 400], [9]]
SPLIT_DESCRIPTIONS = {
    "leave-one-out": (
        "Leave-one-out (SASRec's protocol): each user's last interaction is the test target, the one before it the "
        "validation target and the earlier ones the training sequence; users with fewer than 3 interactions are in "
        "training only. A test target is ranked after the user's whole history (training and validation items)."
    ),
    "time": (
        "A global time split: the model trains on the interactions before the validation cut-off; each user's first "
        "interaction after the validation cut-off is the validation target and the first after the test cut-off the "
        "test target, ranked after all the user's earlier interactions."
    ),
}


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


def metrics_of_test_split(metrics: Mapping) -> dict[str, dict[str, float]]:
    """The test-split metrics of a run's metrics, by protocol: `{"full": {"hr@10": 0.07, ...}, "sampled": {...}}`.

    Other numbers (training loss, steps, validation metrics, ...) are left out of the card.
    """
    by_protocol: dict[str, dict[str, float]] = {}
    for name, value in flat_metrics(metrics).items():
        match = TEST_METRIC.fullmatch(name)
        if match:
            by_protocol.setdefault(match["protocol"], {})[match["metric"] + (match["interval"] or "")] = value
    return by_protocol


def protocol_arguments(protocol: str, run_info: RunInfo) -> dict[str, Any]:
    """How a protocol ranked the test target, as far as the run recorded it (the `metric_args` of `model-index`)."""
    if protocol == "full":
        arguments = {"candidates": "all items", "exclude_history": run_info.exclude_history}
    else:
        arguments = {"candidates": "sampled negatives", "num_negatives": run_info.num_sampled_negatives}
    return {name: value for name, value in arguments.items() if value is not None}


def protocol_description(protocol: str, run_info: RunInfo) -> str:
    """One line saying how `protocol` ranks a test target."""
    if protocol == "full":
        history = {True: "removed from", False: "kept in", None: "(not recorded whether removed from)"}
        return (
            f"`full`: the target is ranked against every item of the catalog; the user's history items are "
            f"{history[run_info.exclude_history]} the ranking."
        )
    negatives = run_info.num_sampled_negatives or "a number (not recorded) of"
    return (
        f"`sampled`: the target is ranked against {negatives} items drawn uniformly among those the user never "
        "interacted with, as in the SASRec paper."
    )


def eval_results(by_protocol: dict[str, dict[str, float]], run_info: RunInfo) -> list[EvalResult]:
    """The `model-index` entries of the test metrics: one `EvalResult` per protocol and metric (counts and interval
    half-widths, which the card's table shows beside their metrics, left out)."""
    return [
        EvalResult(
            task_type=TASK_TYPE,
            task_name=TASK_NAME,
            dataset_type=run_info.dataset,
            dataset_name=run_info.dataset,
            dataset_split=TEST_SPLIT,
            metric_type=metric,
            metric_name=f"{metric} ({protocol} ranking)",
            metric_config=protocol,
            metric_args=protocol_arguments(protocol, run_info) or None,
            metric_value=value,
        )
        for protocol, metrics in by_protocol.items()
        for metric, value in metrics.items()
        if metric not in COUNTS and not metric.endswith(CI_SUFFIX)
    ]


def card_metadata(
    config: PreTrainedConfig, name: str, by_protocol: dict[str, dict[str, float]], run_info: RunInfo
) -> ModelCardData:
    """The YAML header: library, tags, data set and, when the data set is named, the test metrics as `model-index`
    (which the Hub requires to name a data set)."""
    results = eval_results(by_protocol, run_info) if run_info.dataset else []
    if by_protocol and not run_info.dataset:
        logger.warning("No data set name given: the model card's model-index (the Hub's metrics view) is left out.")
    return ModelCardData(
        library_name="transformers",
        tags=[*BASE_TAGS, config.model_type],
        datasets=[run_info.dataset] if run_info.dataset else None,
        model_name=name if results else None,
        eval_results=results or None,
    )


def evaluation_section(by_protocol: dict[str, dict[str, float]], run_info: RunInfo) -> str:
    """The card's evaluation: the test metrics (protocol x metric), the protocols, and how the data was split."""
    split = SPLIT_DESCRIPTIONS.get(run_info.split, "How the data was split was not recorded with this checkpoint.")
    if not by_protocol:
        return f"No test metrics were recorded for this checkpoint.\n\n**Data split.** {split}\n"
    table = metrics_table(
        {f"{protocol}/{name}": value for protocol, row in by_protocol.items() for name, value in row.items()}
    )
    protocols = "\n".join(f"- {protocol_description(protocol, run_info)}" for protocol in by_protocol)
    of_dataset = f" of {run_info.dataset}" if run_info.dataset else ""
    return f"""Test split{of_dataset}: HR@K, NDCG@K, MRR and the share of the catalog in some user's top 10 \
(coverage@10), over every test user, each with the half-width of its 95% confidence interval where the run recorded \
it (normal approximation over users; coverage: bootstrap over users). Ties count against the model.

{table}

{protocols}

**Data split.** {split}
"""


def usage_section(config: PreTrainedConfig, location: str, max_length: int) -> str:
    """How to load the model: with hf_sasrec (`Recommender`), and with transformers alone (the scoring recipe)."""
    tisasrec = config.model_type == "tisasrec"
    times = ", timestamps=[100, 160, 400]" if tisasrec else ""
    timestamps = (
        f"times = [row[-{max_length}:] for row in {json.dumps(EXAMPLE_TIMES)}]  # one integer time per item\n"
        'batch["timestamps"] = torch.tensor([[0] * (batch["input_ids"].shape[1] - len(row)) + row for row in times])\n'
        if tisasrec
        else ""
    )
    return f"""With `hf_sasrec` installed, raw item keys in and out:

```python
from hf_sasrec.recommender import Recommender

rec = Recommender.from_pretrained("{location}")
rec(["item_a", "item_b", "item_c"], top_k=10{times})  # {{"items": [...], "scores": [...], ...}}
```

With transformers only (the modeling code ships with the weights): a user's score for an item is the dot product of
the model's hidden state at the user's last item with that item's embedding, which is what `logits` holds.

```python
import json
from pathlib import Path

import torch
from huggingface_hub import snapshot_download
from transformers import AutoModelForCausalLM, PreTrainedTokenizerFast

folder = "{location}"  # a local folder or a Hub repository id
local = Path(folder) if Path(folder).is_dir() else Path(snapshot_download(folder))
model = AutoModelForCausalLM.from_pretrained(local, trust_remote_code=True).eval()  # runs the folder's modeling code
tokenizer = PreTrainedTokenizerFast.from_pretrained(local)  # one token per item; a plain tokenizer, no custom code
item2id = json.loads((local / "item2id.json").read_text())  # raw item key -> token id
id2item = json.loads((local / "id2item.json").read_text())  # token id -> raw item key

histories = {json.dumps(EXAMPLE_HISTORIES)}  # raw item keys, oldest first
ids = [[item2id[key] for key in history] for history in histories]
window = [row[-{max_length}:] for row in ids]  # the model reads the last {max_length} items (its training window)
batch = tokenizer.pad({{"input_ids": window}}, padding_side="left", return_tensors="pt")  # + attention_mask
{timestamps}with torch.no_grad():
    scores = model(**batch, logits_to_keep=1).logits[:, -1]  # [batch, vocab]: last item's state . item embeddings
scores[:, :{config.num_special_tokens}] = -float("inf")  # special tokens are not items
for row, history in enumerate(ids):
    scores[row, history] = -float("inf")  # never recommend an item of the history, read or not
recommended = [[id2item[str(item)] for item in row] for row in scores.topk(10).indices.tolist()]
```
"""


def model_card(
    model: PreTrainedModel,
    metrics: Mapping | None = None,
    run_info: RunInfo | None = None,
    repo_id: str | None = None,
    has_index: bool = False,
) -> str:
    """The text of `README.md`: YAML metadata (with `model-index`), a description of the model, its test metrics,
    the data split and protocols, and how to load it. `run_info` says how the model was made (see `save_for_hub`)."""
    config = model.config
    run_info = run_info or RunInfo()
    max_length = run_info.max_length or config.max_position_embeddings
    name = repo_id or f"{config.model_type} recommender"
    by_protocol = metrics_of_test_split(metrics or {})
    card_data = card_metadata(config, name, by_protocol, run_info)
    index_line = (
        "- `item_index.faiss`, `item_index.json`: a Faiss index over the item embeddings and the fingerprint of the "
        "weights it was built from (a stale index is rebuilt on load)\n"
        if has_index
        else ""
    )
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
| history read | the last {max_length} items |
| training loss | `{config.loss_type}` |
| data set | {run_info.dataset or "not recorded"} |

## Evaluation

{evaluation_section(by_protocol, run_info)}
## How to use

{usage_section(config, repo_id or "path/to/this/folder", max_length)}
## Files

- `model.safetensors`, `config.json` (with `auto_map` and `item_vocab_fingerprint`), `configuration_*.py`,
  `modeling_*.py`: the model and its code
- `tokenizer.json`, `tokenizer_config.json`, `item2id.json`, `id2item.json`: the item tokenizer and the raw item keys
- `{RUN_INFO_FILE}`: how the model was made (the history window `max_length`, data set, split, protocols)
{index_line}"""


def exported_run_info(
    model: PreTrainedModel, run_info: RunInfo | None, dataset: str | None, max_length: int | None
) -> RunInfo:
    """The `run_info.json` of a Hub folder: the run's record less its local paths, with the model's type, the
    history window (`max_length`, else the run's, else `max_position_embeddings`) and the data set (`dataset`, else
    the run's)."""
    info = (run_info or RunInfo()).without_local_paths()
    return dataclasses.replace(
        info,
        model_type=model.config.model_type,
        max_length=max_length or info.max_length or model.config.max_position_embeddings,
        dataset=dataset or info.dataset,
    )


def save_for_hub(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    path: str | Path,
    metrics: Mapping | None = None,
    index: "ItemIndex | None" = None,
    dataset: str | None = None,
    repo_id: str | None = None,
    max_length: int | None = None,
    run_info: RunInfo | None = None,
) -> Path:
    """Write into `path` exactly what `push_to_hub` uploads: model (its config recording the tokenizer's
    `item_vocab_fingerprint`; `ValueError` when it records another), tokenizer, item maps, index, `run_info.json`
    (see `exported_run_info`) and model card (test metrics from `metrics`, a run's `metrics.json`); the files of this
    package atomically."""
    path = Path(path)
    record_item_vocabulary(model.config, tokenizer)
    save_pipeline_code(model.config, path)  # `pipeline(model=path, trust_remote_code=True)` serves the folder
    model.save_pretrained(path)
    save_item_tokenizer(tokenizer, path)
    if index is not None:
        index.save(path)
    info = exported_run_info(model, run_info, dataset, max_length)
    info.save(path)
    atomic_write_text(path / CARD_FILE, model_card(model, metrics, info, repo_id=repo_id, has_index=index is not None))
    return path


def push_to_hub(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    repo_id: str,
    metrics: Mapping | None = None,
    index: "ItemIndex | None" = None,
    dataset: str | None = None,
    max_length: int | None = None,
    run_info: RunInfo | None = None,
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
        run_info=run_info,
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


__all__ = ["metrics_of_test_split", "model_card", "push_to_hub", "read_metrics", "save_for_hub"]
