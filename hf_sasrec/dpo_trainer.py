"""Preference alignment of a next-item recommender with TRL's `DPOTrainer`, and softmax DPO.

[`RecommenderDPOTrainer`] is `trl.DPOTrainer` with these changes, each where a recommender is not a text LM, each
made through an extension point TRL documents (its "Training customization" guide: the config, `_prepare_dataset`
with a data collator, `compute_loss`), or `compute_ref_log_probs`:

- Preference rows hold item tokens joined by spaces (`prompt` = history, `chosen`/`rejected` = items), not text.
  TRL joins `prompt + chosen` as strings, appends the EOS token and tokenizes the result: the appended `<EOS>` would
  be scored as part of the completion although it is a special token, never an item, and a completion given without
  its leading space would glue onto the last history item. `_prepare_dataset` therefore maps each item token to its
  id directly, keeps no EOS, checks every row (unknown item, empty prompt or completion, chosen among the rejected)
  and raises with the indices of the bad rows instead of training on them (or, with `drop_malformed_rows`, drops
  them with a logged count).
- A text LM keeps the start of an over-long sequence; a recommender must keep the most recent items, so the prompt
  is cut from the left to leave room for the completion (`max_length` counts prompt and completion items).
- The completion log-probabilities come from the model itself: `SASRecForCausalLM.forward(..., fused_lm_head=True)`
  scores only the completion positions, over items only (special tokens excluded) as the ranking evaluation does.
  TRL wraps every model's `forward` with its own fused LM head, which off CUDA projects every position onto the
  whole vocabulary (55 s against 1.65 s a step on Amazon Games, 23.7K items, batch 128); the trainer drops that
  wrapper. TRL's loss code, metrics and reference handling are unchanged.
- TRL disables `nn.Dropout` modules only; SASRec attention applies its dropout functionally
  (`module.attention_dropout`), which is also switched off with `disable_dropout`, so that the chosen and rejected
  sequences of one prompt share the exact same prompt states.
- `loss_type=["softmax_dpo"]`: softmax DPO for recommendation (S-DPO, Chen et al., 2024, "On Softmax Direct
  Preference Optimization for Recommendation"): one chosen item against the `K` rejected items of the `rejected_all`
  column, `-log sigmoid(-log sum_j exp(beta * (r_j - r_chosen)))` with `r = log pi(item | history) - log pi_ref(item
  | history)`. With `K = 1` it is the `sigmoid` DPO loss. Every completion is one item at the same position, so one
  forward pass of the history scores the chosen and all rejected items.

TiSASRec is not supported: its forward needs the timestamps of every item, which the preference rows and TRL's
collator do not carry; it raises a clear error. Nor are models with user features, for the same reason.
"""

import logging
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from datasets import Dataset
from torch import nn
from transformers import GenerationConfig, PreTrainedTokenizerBase
from transformers.modeling_outputs import ModelOutput
from trl import DPOTrainer
from trl.trainer.utils import pad

from .dpo_config import SOFTMAX_DPO, RecommenderDPOConfig

logger = logging.getLogger(__name__)

MAX_REPORTED_ROWS = 10


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
            problems.append(f"empty rejected_all (loss_type {SOFTMAX_DPO!r} needs it)")
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


def drop_fused_lm_head(model: nn.Module) -> None:
    """Remove the fused LM head TRL's `add_fused_lm_head` sets on `model` (an instance `forward` wrapping the class
    one), so that the model's own `forward` answers `fused_lm_head=True`. Idempotent.

    With mixed precision, accelerate's autocast wrapper, which TRL's `__init__` puts on the reference model over that
    head, goes with it: the precomputed reference log-probabilities still run in autocast (TRL enters it), those
    computed during training (`precompute_ref_log_probs=false`) in full precision.
    """
    vars(model).pop("forward", None)


def softmax_dpo_loss(chosen_logratios: torch.Tensor, rejected_logratios: torch.Tensor, beta: float) -> torch.Tensor:
    """Softmax DPO loss per prompt: `chosen_logratios` `[batch]`, `rejected_logratios` `[batch, K]` to `[batch]`.

    `-log sigmoid(-logsumexp_j(beta * (rejected_j - chosen)))`: the chosen item against all rejected items at once.
    """
    return -F.logsigmoid(-torch.logsumexp(beta * (rejected_logratios - chosen_logratios[:, None]), dim=-1))


@dataclass
class DataCollatorForSoftmaxPreference:
    """Batches softmax-DPO rows: left-padded histories and the chosen and rejected item ids.

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
    tokens), and, for `loss_type=["softmax_dpo"]`, `rejected_all` (a list of item tokens, the same count for every
    row). `processing_class` is the model's item tokenizer.
    """

    # Refuses what cannot work, picks the softmax-DPO collator, switches off the functional attention dropout, and
    # drops the fused LM head that TRL's `__init__` puts on both models.
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
        if getattr(model.config, "user_features", None):
            raise ValueError(
                "DPO does not support models with user features: preference rows and TRL's DPO collator do not carry "
                "the users' feature values. Align a model trained without --user_features."
            )
        if not isinstance(args, RecommenderDPOConfig):
            raise TypeError(f"RecommenderDPOTrainer needs args=RecommenderDPOConfig(...), got {type(args).__name__}.")
        processing_class = kwargs.get("processing_class")
        if processing_class is None:
            raise ValueError("Pass processing_class: the item tokenizer of the model.")
        self.num_special_tokens = model.config.num_special_tokens
        if args.softmax_dpo and kwargs.get("data_collator") is None:
            kwargs["data_collator"] = DataCollatorForSoftmaxPreference(pad_token_id=processing_class.pad_token_id)
        if args.disable_dropout:
            for module in (model, ref_model):
                if module is not None:
                    disable_attention_dropout(module)
        # TRL mirrors the pad token onto `model.generation_config`. A recommender ranks items and never generates, so
        # it has none: give it an empty one, which `save_pretrained` does not write (`can_generate()` is False).
        if getattr(model, "generation_config", None) is None:
            model.generation_config = GenerationConfig()
        super().__init__(model, ref_model=ref_model, args=args, **kwargs)
        self.drop_fused_lm_heads()
        if self.ref_model is not None:
            self.ref_model.requires_grad_(False)

    def drop_fused_lm_heads(self) -> None:
        """Let the policy and the reference model answer TRL's `fused_lm_head=True` calls themselves (see
        `drop_fused_lm_head`)."""
        for model in (self.model, self.ref_model):
            if model is not None:
                drop_fused_lm_head(self.accelerator.unwrap_model(model))

    # Extension point documented by TRL ("Change the batch format"): rows of item tokens, not text.
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
        required = {"prompt", "chosen", "rejected_all" if args.softmax_dpo else "rejected"}
        missing = required - set(dataset.column_names)
        if missing:
            raise ValueError(f"The {dataset_name} preference data lacks the columns {sorted(missing)}.")
        vocab = processing_class.get_vocab()
        columns: dict[str, list[list[int]]] = {"prompt_ids": [], "chosen_ids": [], "rejected_ids": []}
        bad_rows = []
        for index, row in enumerate(dataset):
            ids, problems = encode_preference_row(
                row, vocab, self.num_special_tokens, args.softmax_dpo, args.max_completion_length
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
        if args.softmax_dpo and len({len(rejected) for rejected in columns["rejected_ids"]}) > 1:
            counts = sorted({len(rejected) for rejected in columns["rejected_ids"]})
            raise ValueError(
                f"loss_type {SOFTMAX_DPO!r} needs the same number of rejected items per row, got {counts}."
            )
        return Dataset.from_dict(columns)

    # TRL's public hook for the reference log-probabilities, which it also precomputes inside `__init__`, right after
    # adding its fused LM head: drop that head first. Softmax DPO scores `K` rejected items per row.
    def compute_ref_log_probs(self, model: nn.Module, inputs: dict[str, torch.Tensor]):
        self.drop_fused_lm_heads()
        if not self.args.softmax_dpo:
            return super().compute_ref_log_probs(model, inputs)
        with torch.no_grad():
            chosen, rejected, _ = self.item_log_probs(model, inputs)
        return chosen, rejected

    # Extension point documented by TRL ("Change the training objective"): softmax DPO; other losses are TRL's.
    def compute_loss(
        self,
        model: nn.Module,
        inputs: dict[str, torch.Tensor],
        return_outputs: bool = False,
        num_items_in_batch: torch.Tensor | int | None = None,
    ):
        if not self.args.softmax_dpo:
            return super().compute_loss(model, inputs, return_outputs, num_items_in_batch)
        mode = "train" if self.model.training else "eval"
        chosen_logps, rejected_logps, outputs = self.item_log_probs(model, inputs)
        if self.precompute_ref_logps:
            ref_chosen_logps, ref_rejected_logps = inputs["ref_chosen_logps"], inputs["ref_rejected_logps"]
        else:
            ref_chosen_logps, ref_rejected_logps = self.compute_ref_log_probs(self.ref_model, inputs)
        chosen_logratios = chosen_logps - ref_chosen_logps
        rejected_logratios = rejected_logps - ref_rejected_logps
        loss = softmax_dpo_loss(chosen_logratios, rejected_logratios, self.beta).mean()
        if self.aux_loss_enabled:
            loss = loss + self.router_aux_loss_coef * outputs.aux_loss
            aux_loss = self.accelerator.gather_for_metrics(outputs.aux_loss)
            self._metrics[mode]["aux_loss"].append(aux_loss.mean().item())
        self.log_softmax_metrics(mode, chosen_logps, rejected_logps, chosen_logratios, rejected_logratios)
        return (loss, outputs) if return_outputs else loss

    def item_log_probs(
        self, model: nn.Module, inputs: dict[str, torch.Tensor]
    ) -> tuple[torch.Tensor, torch.Tensor, ModelOutput]:
        """Softmax-DPO scores: log-probabilities over items (special tokens excluded) of the chosen item `[batch]`
        and of the rejected items `[batch, K]`, from one forward pass of the histories, and the model's output
        (`logits` of the last position, and `aux_loss` for a mixture of experts)."""
        model_kwargs = {"input_ids": inputs["input_ids"], "attention_mask": inputs["attention_mask"]}
        if self.aux_loss_enabled:
            model_kwargs["output_router_logits"] = True
        outputs = model(**model_kwargs, logits_to_keep=1)
        num_special_tokens = self.num_special_tokens
        item_log_probs = outputs.logits[:, -1, num_special_tokens:].float().log_softmax(-1)
        chosen = item_log_probs.gather(1, inputs["chosen_ids"][:, None] - num_special_tokens).squeeze(1)
        rejected = item_log_probs.gather(1, inputs["rejected_ids"] - num_special_tokens)
        return chosen, rejected, outputs

    def log_softmax_metrics(
        self,
        mode: str,
        chosen_logps: torch.Tensor,
        rejected_logps: torch.Tensor,
        chosen_logratios: torch.Tensor,
        rejected_logratios: torch.Tensor,
    ) -> None:
        """Record DPO's metrics for softmax DPO: rewards over all rejected items, accuracy and margin per (chosen,
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


__all__ = [
    "DataCollatorForSoftmaxPreference",
    "RecommenderDPOTrainer",
    "disable_attention_dropout",
    "keep_recent_history",
    "softmax_dpo_loss",
]
