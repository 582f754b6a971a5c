"""Preference alignment of a trained recommender with TRL's `DPOTrainer`, and the softmax-DPO loss (S-DPO).

`RecommenderDPOTrainer` is `trl.DPOTrainer` with these changes, each where a recommender is not a text LM:

- Preference rows hold item tokens joined by spaces (`prompt` = history, `chosen`/`rejected` = items), not text.
  TRL joins `prompt + chosen` as strings, appends the EOS token and tokenizes the result: the appended `<EOS>` would
  be scored as part of the completion although it is a special token, never an item, and a completion given without
  its leading space would glue onto the last history item. `_prepare_dataset` therefore maps each item token to its
  id directly, keeps no EOS, checks every row (unknown item, empty prompt or completion, chosen among the rejected)
  and raises with the indices of the bad rows instead of training on them (or, with `drop_malformed_rows`, drops
  them with a logged count).
- A text LM keeps the start of an over-long sequence; a recommender must keep the most recent items, so the prompt
  is cut from the left to leave room for the completion (`max_length` counts prompt and completion items).
- The log-probabilities of the completion come from `add_completion_item_head` instead of TRL's fused LM head, which
  off CUDA projects every position onto the vocabulary: a completion is one item, so only its position is scored
  (33x faster a step on Amazon Games), and over items only (special tokens excluded), as the ranking evaluation
  does. TRL's loss code, metrics and reference handling are unchanged.
- TRL disables `nn.Dropout` modules only; SASRec attention applies its dropout functionally
  (`module.attention_dropout`), which is also switched off with `disable_dropout`, so that the chosen and rejected
  sequences of one prompt share the exact same prompt states.
- `loss_type="sdpo"`: softmax DPO for recommendation (Chen et al., 2024, "On Softmax Direct Preference Optimization
  for Recommendation"): one chosen item against the `K` rejected items of the `rejected_all` column,
  `-log sigmoid(-log sum_j exp(beta * (r_j - r_chosen)))` with `r = log pi(item | history) - log pi_ref(item |
  history)`. With `K = 1` it is the `sigmoid` DPO loss. Every completion is one item at the same position, so one
  forward pass of the history scores the chosen and all rejected items.

TiSASRec is not supported: its forward needs the timestamps of every item, which the preference rows and TRL's
collator do not carry; it raises a clear error.

Entry point: `python -m hf_sasrec.dpo CONFIG.yaml key=value ...` (see `main`). The SFT model and its tokenizer are
loaded and checked by `load_checkpoint`, and the data folder's tokenizer must be the same item vocabulary; code saved
in the SFT folder runs only with `trust_remote_code=true` (a `DPOConfig` field), for a `model_type` this package lacks.
"""

import copy
import functools
import logging
import sys
import types
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from datasets import Dataset, load_from_disk
from torch import nn
from transformers import (
    GenerationConfig,
    HfArgumentParser,
    PreTrainedModel,
    PreTrainedTokenizerBase,
)
from trl import DPOConfig, DPOTrainer
from trl.trainer.utils import FusedCausalLMOutput, pad

from data_preprocess.atomic_files import atomic_directory, atomic_write_json
from data_preprocess.preference import build_preference_pairs, model_item_embeddings

from .checkpoint_loading import check_item_vocabulary, load_checkpoint
from .checkpoints import OutputDirError, check_output_dir
from .item_tokenizer import save_item_tokenizer
from .processed_data import load_processed_data
from .run_info import RunInfo
from .training_args import read_yaml, split_command_line

logger = logging.getLogger(__name__)

SDPO = "sdpo"
PREFERENCE_SOURCES = ("low-rated", "popular", "hard")
MAX_REPORTED_ROWS = 10


@dataclass
class RecommenderDPOConfig(DPOConfig):
    """`DPOConfig` plus the fields of item completions. `loss_type` also accepts `"sdpo"` (alone).

    Args:
        max_completion_length: items kept from the start of each completion (1: single-item completions).
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
        if SDPO in self.loss_type and self.loss_type != [SDPO]:
            raise ValueError(f"loss_type 'sdpo' cannot be combined with other losses, got {self.loss_type}.")
        if self.loss_type == [SDPO] and self.max_completion_length != 1:
            raise ValueError("loss_type 'sdpo' scores single-item completions: set max_completion_length=1.")


def encode_item_tokens(text: str, vocab: dict[str, int], num_special_tokens: int) -> tuple[list[int], list[str]]:
    """Ids of the space-separated item tokens of `text`, and the tokens that are not items of `vocab`."""
    tokens = text.split()
    ids = [vocab.get(token, -1) for token in tokens]
    unknown = [token for token, item in zip(tokens, ids, strict=True) if item < num_special_tokens]
    return ids, unknown


def encode_preference_row(
    row: dict[str, Any], vocab: dict[str, int], num_special_tokens: int, softmax: bool, completion_length: int
) -> tuple[dict[str, list[int]], list[str]]:
    """Token ids of one preference row and the list of its problems (empty when the row is valid).

    Returns `prompt_ids`, `chosen_ids` (first `completion_length` items) and `rejected_ids`: the first
    `completion_length` items of `rejected`, or, with `softmax`, the one item of each entry of `rejected_all`.
    """
    problems = []
    prompt_ids, unknown = encode_item_tokens(row["prompt"], vocab, num_special_tokens)
    chosen_ids, unknown_chosen = encode_item_tokens(row["chosen"], vocab, num_special_tokens)
    unknown += unknown_chosen
    if softmax:
        if not row.get("rejected_all"):
            problems.append("empty rejected_all (loss_type 'sdpo' needs it)")
        rejected = [encode_item_tokens(text, vocab, num_special_tokens) for text in row.get("rejected_all") or []]
        if any(len(ids) != 1 for ids, _ in rejected):
            problems.append("every rejected_all entry must be exactly one item")
        rejected_ids = [ids[0] for ids, _ in rejected if ids]
        unknown += [token for _, bad in rejected for token in bad]
        if len(chosen_ids) != 1:
            problems.append(f"chosen must be one item, got {len(chosen_ids)}")
    else:
        rejected_ids, unknown_rejected = encode_item_tokens(row["rejected"], vocab, num_special_tokens)
        unknown += unknown_rejected
        rejected_ids = rejected_ids[:completion_length]
    chosen_ids = chosen_ids[:completion_length]
    if not prompt_ids:
        problems.append("empty prompt")
    if not chosen_ids:
        problems.append("empty chosen")
    if not rejected_ids:
        problems.append("empty rejected")
    if unknown:
        problems.append(f"unknown items {sorted(set(unknown))[:5]}")
    if chosen_ids and (chosen_ids == rejected_ids or (softmax and chosen_ids[0] in rejected_ids)):
        problems.append(f"chosen {row['chosen']!r} is also rejected")
    return {"prompt_ids": prompt_ids, "chosen_ids": chosen_ids, "rejected_ids": rejected_ids}, problems


def keep_recent_history(prompt_ids: list[int], completion_length: int, max_length: int | None) -> list[int]:
    """Cut the history from the left so that history plus completion fit in `max_length` items."""
    if max_length is None:
        return prompt_ids
    return prompt_ids[max(0, len(prompt_ids) - (max_length - completion_length)) :]


def disable_attention_dropout(model: nn.Module) -> None:
    """Switch off the functional attention dropout of every attention module (`module.attention_dropout`)."""
    for module in model.modules():
        if isinstance(getattr(module, "attention_dropout", None), float):
            module.attention_dropout = 0.0


def softmax_dpo_loss(chosen_logratios: torch.Tensor, rejected_logratios: torch.Tensor, beta: float) -> torch.Tensor:
    """S-DPO loss per prompt: `chosen_logratios` `[batch]`, `rejected_logratios` `[batch, K]` to `[batch]`.

    `-log sigmoid(-logsumexp_j(beta * (rejected_j - chosen)))`: the chosen item against all rejected items at once.
    """
    return -F.logsigmoid(-torch.logsumexp(beta * (rejected_logratios - chosen_logratios[:, None]), dim=-1))


def completion_item_scores(
    hidden_states: torch.Tensor, labels: torch.LongTensor, item_weight: torch.Tensor, num_special_tokens: int
) -> dict[str, torch.Tensor]:
    """Per-token fields of TRL's fused LM head, computed at the completion positions only and over items only.

    Args:
        hidden_states: `[batch, length, hidden]`, the encoder's last hidden states.
        labels: `[batch, length]`, the completion items, `-100` elsewhere (not shifted: position `t` is scored from
            the state at `t - 1`).
        item_weight: `[vocab, hidden]`, the output item embeddings.

    Returns:
        `log_probs`, `entropy`, `log_sum_sq_probs`, `mean_logits` and `is_top1`, each `[batch, length - 1]`, zero where
        the label is `-100`, and `label_mask` (`[batch, length - 1]` bool).
    """
    labels = labels[:, 1:]
    mask = labels != -100
    logits = hidden_states[:, :-1][mask] @ item_weight[num_special_tokens:].T  # [completion tokens, num_items]
    log_probs = logits.float().log_softmax(-1)
    targets = (labels[mask] - num_special_tokens)[:, None]
    fields = {
        "log_probs": log_probs.gather(1, targets).squeeze(1),
        "entropy": -(log_probs.exp() * log_probs).sum(-1),
        "log_sum_sq_probs": torch.logsumexp(2 * log_probs.detach(), dim=-1),
        "mean_logits": logits.detach().float().mean(-1),
        "is_top1": logits.detach().argmax(-1) == targets.squeeze(1),
    }
    scattered = {name: value.new_zeros(mask.shape).masked_scatter(mask, value) for name, value in fields.items()}
    return {**scattered, "label_mask": mask}


def add_completion_item_head(model: PreTrainedModel) -> None:
    """Replace TRL's fused LM head on `model` by one that scores only the completion positions, over items only.

    `DPOTrainer` calls `model(input_ids, attention_mask, labels=..., fused_lm_head=True)` and reads per-token log
    probabilities. TRL's head, off CUDA, projects every position of every sequence onto the whole vocabulary; a
    recommender's completion is one item, so that is `length` times the work needed (55 s against 1.65 s a step on
    Amazon Games, 23.7K items, batch 128). This head runs the encoder, scores the labelled positions only, and
    normalises over items (special tokens excluded), like the ranking evaluation. Without `fused_lm_head` the model's
    own forward runs.
    """
    original_forward = type(model).forward
    num_special_tokens = model.config.num_special_tokens

    @functools.wraps(original_forward)
    def forward(self, *args, fused_lm_head: bool = False, labels=None, **kwargs):
        if not fused_lm_head:
            return original_forward(self, *args, labels=labels, **kwargs)
        kwargs.pop("use_cache", None)
        outputs = self.model(*args, **kwargs)
        scores = completion_item_scores(
            outputs.last_hidden_state, labels, self.get_output_embeddings().weight, num_special_tokens
        )
        loss = -scores["log_probs"].sum() / scores["label_mask"].sum().clamp(min=1)
        head = self.causal_lm_output(
            outputs, loss, None, input_ids=kwargs.get("input_ids"), attention_mask=kwargs.get("attention_mask")
        )
        return FusedCausalLMOutput(loss=loss, aux_loss=getattr(head, "aux_loss", None), **scores)

    if not getattr(model, "has_completion_item_head", False):
        model.forward = types.MethodType(forward, model)
        model.has_completion_item_head = True


@dataclass
class DataCollatorForSoftmaxPreference:
    """Batches S-DPO rows: left-padded histories and the chosen and rejected item ids.

    Returns `input_ids` and `attention_mask` `[batch, length]` (left padding, so the last position predicts the next
    item), `chosen_ids` `[batch]`, `rejected_ids` `[batch, K]`, and `ref_chosen_logps` `[batch]` and
    `ref_rejected_logps` `[batch, K]` when the rows carry them.
    """

    pad_token_id: int

    def __call__(self, examples: list[dict[str, Any]]) -> dict[str, torch.Tensor]:
        prompts = [torch.tensor(example["prompt_ids"]) for example in examples]
        batch = {
            "input_ids": pad(prompts, padding_value=self.pad_token_id, padding_side="left"),
            "attention_mask": pad([torch.ones_like(p) for p in prompts], padding_value=0, padding_side="left"),
            "chosen_ids": torch.tensor([example["chosen_ids"][0] for example in examples]),
            "rejected_ids": torch.tensor([example["rejected_ids"] for example in examples]),
        }
        for key in ("ref_chosen_logps", "ref_rejected_logps"):
            if key in examples[0]:
                batch[key] = torch.tensor([example[key] for example in examples])
        return batch


class RecommenderDPOTrainer(DPOTrainer):
    """`trl.DPOTrainer` for next-item recommenders of this package; see the module docstring for what differs.

    The dataset has string columns `prompt` (the history, space-joined item tokens), `chosen` and `rejected` (item
    tokens), and, for `loss_type="sdpo"`, `rejected_all` (a list of item tokens, the same count for every row).
    """

    def __init__(
        self,
        model: nn.Module,
        ref_model: nn.Module | None = None,
        args: RecommenderDPOConfig | None = None,
        **kwargs,
    ):
        if getattr(model.config, "model_type", None) == "tisasrec":
            raise ValueError(
                "DPO does not support tisasrec: its forward needs the timestamps of every item, which preference "
                "rows and TRL's DPO collator do not carry. Align a variant without timestamps."
            )
        if not isinstance(args, RecommenderDPOConfig):
            raise TypeError(f"RecommenderDPOTrainer needs args=RecommenderDPOConfig(...), got {type(args).__name__}.")
        self.softmax_loss = args.loss_type == [SDPO]
        self.num_special_tokens = model.config.num_special_tokens
        processing_class = kwargs.get("processing_class")
        if processing_class is None:
            raise ValueError("Pass processing_class: the item tokenizer of the model.")
        if self.softmax_loss and kwargs.get("data_collator") is None:
            kwargs["data_collator"] = DataCollatorForSoftmaxPreference(pad_token_id=processing_class.pad_token_id)
        # TRL mirrors the pad token onto `model.generation_config`. A recommender ranks items and never generates, so
        # it has none: give it an empty one, which `save_pretrained` does not write (`can_generate()` is False).
        if getattr(model, "generation_config", None) is None:
            model.generation_config = GenerationConfig()
        super().__init__(model, ref_model=ref_model, args=args, **kwargs)
        self.adapt_models()

    def adapt_models(self) -> None:
        """Give the policy and the reference model `add_completion_item_head` in place of TRL's fused LM head, switch
        off their attention dropout when `disable_dropout`, and freeze the reference model. Idempotent."""
        models = [self.model] if self.ref_model is None else [self.model, self.ref_model]
        for model in models:
            model = self.accelerator.unwrap_model(model)
            add_completion_item_head(model)
            if self.args.disable_dropout:
                disable_attention_dropout(model)
        if self.ref_model is not None:
            self.ref_model.requires_grad_(False)

    def _precompute_ref_logps(self, dataset: Dataset, name: str, batch_size: int) -> Dataset:
        # `DPOTrainer.__init__` precomputes the reference log-probs before it returns: adapt the models first.
        self.adapt_models()
        return super()._precompute_ref_logps(dataset, name, batch_size)

    def _prepare_dataset(
        self,
        dataset: Dataset,
        processing_class: PreTrainedTokenizerBase,
        args: RecommenderDPOConfig,
        dataset_name: str,
    ) -> Dataset:
        """Item ids of every row (`prompt_ids`, `chosen_ids`, `rejected_ids`), histories cut from the left to
        `max_length`; raises `ValueError` naming the malformed rows. A dataset that already has ids is kept."""
        if not isinstance(dataset, Dataset):
            raise TypeError(f"The {dataset_name} preference data must be a datasets.Dataset, got {type(dataset)}.")
        if "prompt_ids" in dataset.column_names:
            return dataset
        required = {"prompt", "chosen", "rejected_all" if self.softmax_loss else "rejected"}
        missing = required - set(dataset.column_names)
        if missing:
            raise ValueError(f"The {dataset_name} preference data lacks the columns {sorted(missing)}.")
        vocab = processing_class.get_vocab()
        num_special_tokens = self.num_special_tokens
        columns: dict[str, list[list[int]]] = {"prompt_ids": [], "chosen_ids": [], "rejected_ids": []}
        bad_rows = []
        for index, row in enumerate(dataset):
            ids, problems = encode_preference_row(
                row, vocab, num_special_tokens, self.softmax_loss, args.max_completion_length
            )
            if problems:
                bad_rows.append(f"row {index}: {'; '.join(problems)}")
                continue
            ids["prompt_ids"] = keep_recent_history(ids["prompt_ids"], len(ids["chosen_ids"]), args.max_length)
            for key, value in ids.items():
                columns[key].append(value)
        if bad_rows:
            shown = "\n  ".join(bad_rows[:MAX_REPORTED_ROWS])
            report = (
                f"{len(bad_rows)} malformed preference rows of {len(dataset)} in the {dataset_name} data "
                f"(first {min(len(bad_rows), MAX_REPORTED_ROWS)} shown):\n  {shown}"
            )
            if not args.drop_malformed_rows or len(bad_rows) == len(dataset):
                raise ValueError(f"{report}\nFix the data, or set drop_malformed_rows=true to train without them.")
            logger.warning("Dropped %s", report)
        if self.softmax_loss and len({len(rejected) for rejected in columns["rejected_ids"]}) > 1:
            counts = sorted({len(rejected) for rejected in columns["rejected_ids"]})
            raise ValueError(f"loss_type 'sdpo' needs the same number of rejected items per row, got {counts}.")
        return Dataset.from_dict(columns)

    def item_log_probs(self, model: nn.Module, inputs: dict[str, torch.Tensor]) -> tuple[torch.Tensor, ...]:
        """S-DPO scores: log-probabilities over items (special tokens excluded) of the chosen item `[batch]` and the
        rejected items `[batch, K]`, and the MoE load-balancing loss (or `None`)."""
        model_kwargs = {"input_ids": inputs["input_ids"], "attention_mask": inputs["attention_mask"]}
        if self.aux_loss_enabled:
            model_kwargs["output_router_logits"] = True
        outputs = model(**model_kwargs, logits_to_keep=1)
        num_special_tokens = self.num_special_tokens
        item_log_probs = outputs.logits[:, -1, num_special_tokens:].float().log_softmax(-1)
        chosen = item_log_probs.gather(1, inputs["chosen_ids"][:, None] - num_special_tokens).squeeze(1)
        rejected = item_log_probs.gather(1, inputs["rejected_ids"] - num_special_tokens)
        return chosen, rejected, getattr(outputs, "aux_loss", None)

    def compute_ref_log_probs(self, model: nn.Module, inputs: dict[str, torch.Tensor]):
        if not self.softmax_loss:
            return super().compute_ref_log_probs(model, inputs)
        with torch.no_grad():
            chosen, rejected, _ = self.item_log_probs(model, inputs)
        return chosen, rejected

    def _compute_loss(self, model: nn.Module, inputs: dict[str, torch.Tensor], return_outputs: bool):
        if not self.softmax_loss:
            return super()._compute_loss(model, inputs, return_outputs)
        mode = "train" if self.model.training else "eval"
        chosen_logps, rejected_logps, aux_loss = self.item_log_probs(model, inputs)
        if self.precompute_ref_logps:
            ref_chosen_logps, ref_rejected_logps = inputs["ref_chosen_logps"], inputs["ref_rejected_logps"]
        else:
            ref_chosen_logps, ref_rejected_logps = self.compute_ref_log_probs(self.ref_model, inputs)
        chosen_logratios = chosen_logps - ref_chosen_logps
        rejected_logratios = rejected_logps - ref_rejected_logps
        loss = softmax_dpo_loss(chosen_logratios, rejected_logratios, self.beta).mean()
        if aux_loss is not None:
            loss = loss + self.router_aux_loss_coef * aux_loss
            self._metrics[mode]["aux_loss"].append(self.accelerator.gather_for_metrics(aux_loss).mean().item())
        self.log_softmax_metrics(mode, chosen_logps, rejected_logps, chosen_logratios, rejected_logratios)
        return (loss, None) if return_outputs else loss

    def log_softmax_metrics(
        self,
        mode: str,
        chosen_logps: torch.Tensor,
        rejected_logps: torch.Tensor,
        chosen_logratios: torch.Tensor,
        rejected_logratios: torch.Tensor,
    ) -> None:
        """Record DPO's metrics for S-DPO: rewards over all rejected items, accuracy and margin per (chosen,
        rejected) pair."""
        chosen_rewards = self.accelerator.gather(self.beta * chosen_logratios.detach())
        rejected_rewards = self.accelerator.gather(self.beta * rejected_logratios.detach())
        pair_margins = chosen_rewards[:, None] - rejected_rewards
        metrics = self._metrics[mode]
        metrics["rewards/chosen"].append(chosen_rewards.mean().item())
        metrics["rewards/rejected"].append(rejected_rewards.mean().item())
        metrics["rewards/margins"].append(pair_margins.mean().item())
        metrics["rewards/accuracies"].append((pair_margins > 0).float().mean().item())
        metrics["logps/chosen"].append(self.accelerator.gather(chosen_logps.detach()).mean().item())
        metrics["logps/rejected"].append(self.accelerator.gather(rejected_logps.detach()).mean().item())


@dataclass
class DPOScriptArguments:
    """What `python -m hf_sasrec.dpo` aligns, and with which preference pairs."""

    sft_dir: str = field(default="outputs/sft/default", metadata={"help": "SFT run folder (model + tokenizer)."})
    data_dir: str | None = field(
        default=None, metadata={"help": "Processed data folder; defaults to the SFT run's run_info.json data_dir."}
    )
    source: str = field(
        default="hard",
        metadata={"help": "Rejected-item source of the preference builder.", "choices": PREFERENCE_SOURCES},
    )
    num_rejected: int = field(default=1, metadata={"help": "Rejected items per prompt (S-DPO uses them all)."})
    all_positions: bool = field(
        default=False, metadata={"help": "A preference pair for every training position, not only the last one."}
    )
    pair_seed: int = field(default=0, metadata={"help": "Seed of the preference builder's sampling."})
    preference_dir: str | None = field(
        default=None,
        metadata={
            "help": "Preference pairs; built when absent. Default: outputs/preferences/<sft run>-<source>-k<K>[-all]."
        },
    )
    eval_split: str = field(default="test", metadata={"help": "Split ranked before and after DPO."})
    eval_batch_size: int = field(default=512, metadata={"help": "Batch size of the ranking evaluation."})


def parse_arguments(argv: list[str]) -> tuple[RecommenderDPOConfig, DPOScriptArguments]:
    """`[CONFIG.yaml] key=value ...`: the YAML's fields, overridden by the `key=value` pairs (values read as YAML).

    A key must be a `DPOConfig` field (`TrainingArguments` included), `max_completion_length`, or a
    `DPOScriptArguments` field; any other key is an error.
    """
    config_file, overrides = split_command_line(argv)
    values = {**(read_yaml(config_file) if config_file else {}), **overrides}
    parser = HfArgumentParser((RecommenderDPOConfig, DPOScriptArguments))
    return parser.parse_dict(values)


def build_preferences(script_args: DPOScriptArguments, data_dir: str, output_dir: Path) -> Dataset:
    """Preference pairs of the data issue's builder (`data_preprocess.preference`) from the training split, saved to
    `output_dir`; hard negatives are the nearest items in the SFT model's item-embedding space."""
    embeddings = model_item_embeddings(script_args.sft_dir) if script_args.source == "hard" else None
    logger.info("Building %s preference pairs from %s into %s", script_args.source, data_dir, output_dir)
    pairs = build_preference_pairs(
        data_dir,
        script_args.source,
        num_rejected=script_args.num_rejected,
        item_embeddings=embeddings,
        all_positions=script_args.all_positions,
        seed=script_args.pair_seed,
    )
    with atomic_directory(output_dir) as folder:
        pairs.save_to_disk(str(folder))
    return pairs


def side_by_side(before: dict[str, float], after: dict[str, float]) -> dict[str, dict[str, float]]:
    """`{metric: {"sft": x, "dpo": y, "change": y - x}}` for the metrics of both evaluations."""
    return {name: {"sft": before[name], "dpo": after[name], "change": after[name] - before[name]} for name in before}


def run_dpo(args: RecommenderDPOConfig, script_args: DPOScriptArguments) -> dict[str, Any]:
    """Align the SFT model, evaluate it before and after on `eval_split`, save everything to `args.output_dir`."""
    from .evaluation import evaluate_next_item

    check_output_dir(args.output_dir, args.overwrite_output_dir, resume_from=None, resumable=False)
    sft_dir = Path(script_args.sft_dir)
    if not (sft_dir / "config.json").exists():
        raise FileNotFoundError(f"No SFT model in {script_args.sft_dir}: run `bash scripts/sft.sh` first.")
    sft_info = RunInfo.load(sft_dir)
    data_dir = script_args.data_dir or sft_info.data_dir
    if data_dir is None:
        raise ValueError(f"{sft_dir} records no data_dir in its run_info.json: pass data_dir=FOLDER.")
    max_length = sft_info.max_length
    if max_length is not None and (args.max_length is None or args.max_length > max_length):
        logger.info("max_length %s -> %s, the SFT run's history length.", args.max_length, max_length)
        args.max_length = max_length

    _, model, tokenizer = load_checkpoint(sft_dir, trust_remote_code=args.trust_remote_code)
    ref_model = copy.deepcopy(model).eval().requires_grad_(False)
    splits, _, data_tokenizer = load_processed_data(data_dir)
    check_item_vocabulary(model.config, data_tokenizer, sft_dir, Path(data_dir) / "tokenizer")

    preference_dir = Path(
        script_args.preference_dir
        or f"outputs/preferences/{sft_dir.name}-{script_args.source}-k{script_args.num_rejected}"
        + "-all" * script_args.all_positions
    )
    if preference_dir.exists():
        preferences = load_from_disk(str(preference_dir))
    else:
        preferences = build_preferences(script_args, data_dir, preference_dir)
    eval_split = splits[script_args.eval_split]

    def rank(ranked_model: nn.Module) -> dict[str, float]:
        return evaluate_next_item(
            ranked_model, eval_split, protocol="full", batch_size=script_args.eval_batch_size, max_length=max_length
        )

    before = rank(model)
    trainer = RecommenderDPOTrainer(
        model, ref_model=ref_model, args=args, train_dataset=preferences, processing_class=tokenizer
    )
    train_result = trainer.train()
    trainer.save_model(args.output_dir)
    trainer.save_state()
    output_dir = Path(args.output_dir)
    save_item_tokenizer(tokenizer, output_dir)
    after = rank(trainer.model)

    dpo_logs = [entry for entry in trainer.state.log_history if "rewards/margins" in entry]
    metrics = {
        script_args.eval_split: side_by_side(before, after),
        "train": train_result.metrics,
        "dpo_last_log": dpo_logs[-1] if dpo_logs else {},
        "num_pairs": len(preferences),
    }
    RunInfo(
        model_type=model.config.model_type,
        max_length=max_length,
        dataset=sft_info.dataset,
        split=sft_info.split,
        data_dir=data_dir,
        eval_protocol="full",
        exclude_history=True,
        sft_dir=str(sft_dir),
        preference_dir=str(preference_dir),
        preference_source=script_args.source,
        num_rejected=script_args.num_rejected,
        dpo_loss_type=args.loss_type,
        dpo_beta=args.beta,
    ).save(output_dir)
    atomic_write_json(output_dir / "metrics.json", metrics)
    return metrics


def format_side_by_side(table: dict[str, dict[str, float]]) -> str:
    """The before/after table as aligned text lines."""
    lines = [f"{'metric':<22}{'sft':>10}{'dpo':>10}{'change':>10}"]
    lines += [
        f"{name:<22}{row['sft']:>10.4f}{row['dpo']:>10.4f}{row['change']:>+10.4f}" for name, row in table.items()
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    args, script_args = parse_arguments(sys.argv[1:] if argv is None else argv)
    metrics = run_dpo(args, script_args)
    print(format_side_by_side(metrics[script_args.eval_split]))
    print(f"saved to {args.output_dir}")


if __name__ == "__main__":
    try:
        main()
    except OutputDirError as error:
        sys.exit(f"hf_sasrec.dpo: {error}")
