"""The `next-item-recommendation` pipeline: top-K next items for histories of raw item keys, from transformers'
`pipeline()`.

`import hf_sasrec` registers the task (`register_pipeline`); any folder that holds a model of this package and its
item tokenizer (a training run, an export) then serves it:

```python
import hf_sasrec  # noqa: F401  (registers the models and the task)
from transformers import pipeline

recommend = pipeline("next-item-recommendation", model="outputs/sft/default")
recommend(["1193", "661", "914"], top_k=3)  # {"items": [3 keys], "scores": [3 floats], "unknown_items": [], ...}
recommend([["1193", "661"], ["914", "no such item"]], batch_size=64)  # one result a history
recommend(["1193", "661"], timestamps=[978300760, 978302109])  # tisasrec: one time per item
exposure = ExposurePenalty(recommend.model.config.vocab_size, weight=1.0)  # from hf_sasrec.reranking
recommend([["1193", "661"], ["914"]], exposure=exposure)  # lists spread over the catalog, users in order
```

A folder written by `Recommender.save_pretrained`, `save_for_hub` or this pipeline's `save_pretrained` names the
pipeline in its `config.json` (`custom_pipelines`) and carries its code (`save_pipeline_code`), so that it serves where
hf-sasrec is not installed:

```python
recommend = pipeline(model="user/sasrec-ml-1m", trust_remote_code=True)  # or a local folder
```

As for every custom pipeline, transformers runs the pipeline of such a folder only with `trust_remote_code=True`, even
where the task is registered; with hf-sasrec installed, `pipeline(model=folder, pipeline_class=
NextItemRecommendationPipeline)` runs the installed code instead.

The pipeline runs `NextItemRecommender` (`hf_sasrec.recommendation`), as `Recommender` does: the same unknown-key
handling, popularity fallback, checks and results, with an exact search over the item embeddings instead of a Faiss
index. Raw keys map to ids through `item2id.json`, which is saved beside the item tokenizer. It reads the last
`max_length` items of a history: by default the model's `max_position_embeddings`, which training sets to its window;
`Recommender.from_pretrained` reads the window recorded in `run_info.json`: pass `max_length=` where the two differ.

Its code in a folder is this module and the modules it imports (`recommendation`, `data_collator`, `modeling_sasrec`,
`configuration_sasrec`, `losses`), which need torch, numpy and transformers only.
"""

import json
import os
import shutil
from collections.abc import Sequence
from pathlib import Path

import torch
from transformers import AutoModelForCausalLM, PreTrainedConfig, PreTrainedTokenizerBase
from transformers.dynamic_module_utils import custom_object_save
from transformers.pipelines import PIPELINE_REGISTRY, Pipeline
from transformers.utils import cached_file

from .recommendation import ItemKeys, ListReranker, NextItemRecommender, is_single_history

PIPELINE_TASK = "next-item-recommendation"
ITEM2ID_FILE = "item2id.json"


def item2id_file(tokenizer: PreTrainedTokenizerBase) -> str:
    """The path of the `item2id.json` (raw key -> token id) saved beside the item tokenizer, local or from the Hub."""
    try:
        return cached_file(tokenizer.name_or_path, ITEM2ID_FILE)
    except OSError as error:
        raise OSError(
            f"No {ITEM2ID_FILE} beside the item tokenizer {tokenizer.name_or_path!r}: load a folder that hf-sasrec "
            "saved (a training run, or `Recommender.save_pretrained`), which holds it."
        ) from error


class NextItemRecommendationPipeline(Pipeline):
    """Top-K next items for raw item histories, as `Recommender` recommends them (see the module docstring).

    Args:
        model: a `*ForCausalLM` of this package (any variant; `tisasrec` needs timestamps).
        tokenizer: the item tokenizer of the checkpoint, with `item2id.json` in its folder.
        max_length: history items the model reads (the last ones); default `config.max_position_embeddings`.

    Call it with one history (a list of raw keys in time order), a list of histories, or `{"history": keys,
    "timestamps": times}` dicts (one, a list, a torch `Dataset` or a generator of them), and the keyword arguments
    `top_k` (default 10), `exclude_history` (default `True`), `timestamps` (shaped as the histories; `tisasrec`),
    `exposure` (an `hf_sasrec.reranking.ExposurePenalty`: each list re-chosen among the user's best items so that
    items no earlier list holds reach later users; see `NextItemRecommender.recommend_ids`) and `batch_size`
    (histories a forward pass). Each history gives `{"items": [keys], "scores": [floats] or None,
    "unknown_items": [keys], "fallback": None or "popularity"}`.
    """

    _load_processor = False
    _load_image_processor = False
    _load_video_processor = False
    _load_feature_extractor = False
    _load_tokenizer = True

    def __init__(self, *args, max_length: int | None = None, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        if self.tokenizer is None:
            raise ValueError(f"The {PIPELINE_TASK} pipeline needs the checkpoint's item tokenizer: pass tokenizer=.")
        self.item2id_file = item2id_file(self.tokenizer)
        with open(self.item2id_file, encoding="utf-8") as file:
            keys = ItemKeys.from_item2id(json.load(file), self.model.config.num_special_tokens)
        self.recommender = NextItemRecommender(self.model, keys, max_length=max_length)

    def __call__(
        self,
        inputs: Sequence[str] | Sequence[Sequence[str]] | dict,
        timestamps: Sequence[int] | Sequence[Sequence[int]] | None = None,
        **kwargs,
    ) -> dict | list[dict]:
        """Recommend for one history or many (see the class docstring); a list of results for a list of histories.

        Args:
            inputs: one history (raw item keys in time order), a list of histories, or `{"history": keys,
                "timestamps": times}` dicts (one, a list, a torch `Dataset` or a generator of them).
            timestamps: `tisasrec` only, with histories given as lists: one integer time per item, shaped as them.
            kwargs: `top_k`, `exclude_history`, `exposure`, `batch_size`, `num_workers`.
        """
        # Overridden: one history is a list too, which the base class would take for a list of inputs; and the
        # timestamps of a list of histories are paired here with each history, the pipeline's unit of input.
        if not isinstance(inputs, str | list | tuple):
            if timestamps is not None:
                raise ValueError("With dict, dataset or generator inputs, put each history's timestamps in its dict.")
            return super().__call__(inputs, **kwargs)
        single = is_single_history(inputs)
        histories = [inputs] if single else list(inputs)
        if timestamps is not None:
            times = [timestamps] if single else list(timestamps)
            if len(times) != len(histories):
                raise ValueError(f"Got {len(times)} timestamp lists for {len(histories)} histories.")
            histories = [
                {"history": history, "timestamps": row} for history, row in zip(histories, times, strict=True)
            ]
        outputs = super().__call__(histories, **kwargs)
        return outputs[0] if single else outputs

    def _sanitize_parameters(
        self, top_k: int | None = None, exclude_history: bool | None = None, exposure: ListReranker | None = None
    ) -> tuple[dict, dict, dict]:
        forward_params = {"top_k": top_k, "exclude_history": exclude_history, "exposure": exposure}
        return {}, {name: value for name, value in forward_params.items() if value is not None}, {}

    def preprocess(self, inputs: Sequence[str] | dict) -> dict:
        """One history to the ids of its known items `input_ids` `[1, length]` (with `timestamps` `[1, length]` for
        `tisasrec`) and its unknown keys; the ids and timestamps are checked here, for this history alone."""
        history, times = (inputs["history"], inputs.get("timestamps")) if isinstance(inputs, dict) else (inputs, None)
        if not is_single_history(history):
            raise TypeError("Each input of the pipeline is one history: a list of item keys, not a list of lists.")
        keys = self.recommender.item_keys
        ids, times, unknown = keys.known_items([list(history)], None if times is None else [list(times)])
        self.recommender.check_ids(ids, times)
        # An empty history is one padding token (which `_forward` drops): transformers' batch collator cannot pad an
        # empty row on the left.
        input_ids = ids[0] or [self.tokenizer.pad_token_id]
        model_inputs = {"input_ids": torch.tensor([input_ids], dtype=torch.long), "unknown_items": unknown[0]}
        if self.recommender.uses_timestamps:
            model_inputs["timestamps"] = torch.tensor([times[0] or [0]], dtype=torch.long)
        return model_inputs

    def _forward(
        self,
        model_inputs: dict,
        top_k: int = 10,
        exclude_history: bool = True,
        exposure: ListReranker | None = None,
    ) -> dict:
        """Recommendations for a batch of preprocessed histories, `input_ids` `[batch, length]` padded by the
        pipeline's collator: `item_ids` and `scores` `[batch, top_k]` (-1 and NaN past a row's last result),
        `fallback` `[batch]` (the row got the popular items) and the unknown keys, passed through."""
        input_ids = model_inputs["input_ids"]
        known = input_ids.ne(self.tokenizer.pad_token_id)  # the id the batch collator pads with
        histories = [row[mask].tolist() for row, mask in zip(input_ids, known, strict=True)]
        timestamps = None
        if "timestamps" in model_inputs:
            timestamps = [row[mask].tolist() for row, mask in zip(model_inputs["timestamps"], known, strict=True)]
        results = self.recommender.recommend_ids(histories, top_k, exclude_history, timestamps, exposure=exposure)
        item_ids = torch.full((len(results), top_k), -1, dtype=torch.long)
        scores = torch.full((len(results), top_k), torch.nan)
        for row, (ids, row_scores) in enumerate(results):
            item_ids[row, : len(ids)] = torch.tensor(ids, dtype=torch.long)
            if row_scores is not None:
                scores[row, : len(ids)] = torch.tensor(row_scores)
        return {
            "item_ids": item_ids,
            "scores": scores,
            "fallback": torch.tensor([row_scores is None for _, row_scores in results]),
            "unknown_items": model_inputs["unknown_items"],
        }

    def postprocess(self, model_outputs: dict) -> dict:
        """One history's result (`NextItemRecommender.recommendation`) from its row of `_forward`'s outputs."""
        item_ids = model_outputs["item_ids"][0]
        found = item_ids >= 0
        scores = None if model_outputs["fallback"][0] else model_outputs["scores"][0][found].tolist()
        return self.recommender.recommendation(item_ids[found].tolist(), scores, model_outputs["unknown_items"])

    def save_pretrained(self, save_directory: str | os.PathLike, **kwargs) -> None:
        """Save the model, the tokenizer, this pipeline's code (named in `config.json`) and `item2id.json`: a folder
        that `pipeline(model=save_directory, trust_remote_code=True)` serves. `Recommender.save_pretrained` writes
        the full export (model card, `run_info.json`, item index) with the pipeline as well. `kwargs` go to the
        model's and the tokenizer's `save_pretrained`."""
        # Overridden: `Pipeline.save_pretrained` names and copies the code of a pipeline registered in this process
        # only (not of one loaded as remote code), and leaves out `item2id.json`, which the pipeline reads.
        save_pipeline_code(self.model.config, save_directory)
        super().save_pretrained(save_directory, **kwargs)
        shutil.copyfile(self.item2id_file, Path(save_directory) / ITEM2ID_FILE)


def save_pipeline_code(config: PreTrainedConfig, save_directory: str | os.PathLike) -> None:
    """Name the pipeline in `config.custom_pipelines` and copy its module, with the modules it imports, into
    `save_directory`, as `Pipeline.save_pretrained` does for a registered pipeline; the model's `save_pretrained`,
    called next, writes the config. `pipeline(model=save_directory, trust_remote_code=True)` then finds the pipeline,
    hf-sasrec installed or not."""
    module = NextItemRecommendationPipeline.__module__.rsplit(".", 1)[-1]
    config.custom_pipelines = {
        PIPELINE_TASK: {"impl": f"{module}.{NextItemRecommendationPipeline.__name__}", "pt": ["AutoModelForCausalLM"]}
    }
    os.makedirs(save_directory, exist_ok=True)
    custom_object_save(NextItemRecommendationPipeline, save_directory)


def register_pipeline() -> None:
    """Register the `next-item-recommendation` task with transformers' `PIPELINE_REGISTRY`, for
    `pipeline("next-item-recommendation", model=...)`; `import hf_sasrec` runs it (again: nothing happens)."""
    if PIPELINE_TASK not in PIPELINE_REGISTRY.supported_tasks:
        PIPELINE_REGISTRY.register_pipeline(
            PIPELINE_TASK, pipeline_class=NextItemRecommendationPipeline, pt_model=AutoModelForCausalLM
        )


__all__ = ["PIPELINE_TASK", "NextItemRecommendationPipeline", "register_pipeline", "save_pipeline_code"]
