"""`transformers.Trainer` for next-item training, evaluated with the ranking metrics of `hf_sasrec.evaluation`."""

import logging
import math
import time
from typing import Any

import torch
from transformers import EarlyStoppingCallback, Trainer, TrainerControl, TrainerState, TrainingArguments
from transformers.trainer_utils import speed_metrics

from .data_collator import NextItemCollator
from .evaluation import evaluate_next_item
from .length_bucket_sampler import LengthBucketSampler, window_lengths
from .streaming import LengthBucketedStream
from .training_args import SFTTrainingArguments

logger = logging.getLogger(__name__)
# `logits_to_keep` that selects no position (transformers' `slice_logits_to_keep` takes a 1-D tensor of positions).
NO_POSITIONS = torch.empty(0, dtype=torch.long)


def best_evaluation(state: TrainerState, args: TrainingArguments) -> dict[str, Any]:
    """How a training ended: `metric_for_best_model`, `best_metric`, `best_step` and `best_epoch` (of the best
    evaluation; `None` without evaluations), `stopped_early` (fewer steps than scheduled: early stopping) and
    `model_step`, the step of the weights the trainer ends with (the best checkpoint's with `load_best_model_at_end`,
    when it exists)."""
    key = f"eval_{(args.metric_for_best_model or '').removeprefix('eval_')}"
    evaluations = [entry for entry in state.log_history if key in entry]
    best_epoch = next((entry["epoch"] for entry in evaluations if entry["step"] == state.best_global_step), None)
    best_loaded = args.load_best_model_at_end and state.best_model_checkpoint is not None
    return {
        "metric_for_best_model": args.metric_for_best_model,
        "best_metric": state.best_metric,
        "best_step": state.best_global_step,
        "best_epoch": best_epoch,
        "stopped_early": state.global_step < state.max_steps,
        "model_step": state.best_global_step if best_loaded else state.global_step,
    }


def describe_best(outcome: dict[str, Any]) -> str:
    """`"full/ndcg@10 0.1234 at epoch 3 (step 18)"` from [`best_evaluation`], or `"no evaluation"`."""
    if outcome["best_metric"] is None:
        return "no evaluation"
    return (
        f"{outcome['metric_for_best_model']} {outcome['best_metric']:.4f} at epoch {outcome['best_epoch']:g} "
        f"(step {outcome['best_step']})"
    )


class LoggingEarlyStoppingCallback(EarlyStoppingCallback):
    """`EarlyStoppingCallback` that logs when it stops training, and the best evaluation it could not beat."""

    def on_evaluate(
        self,
        args: TrainingArguments,
        state: TrainerState,
        control: TrainerControl,
        metrics: dict[str, float],
        **kwargs,
    ):
        super().on_evaluate(args, state, control, metrics, **kwargs)
        if self.early_stopping_patience_counter >= self.early_stopping_patience:
            logger.info(
                "Early stopping at epoch %g (step %d): no better %s in %d evaluations; best: %s.",
                state.epoch,
                state.global_step,
                args.metric_for_best_model,
                self.early_stopping_patience,
                describe_best(best_evaluation(state, args)),
            )


class NextItemTrainer(Trainer):
    """A `Trainer` whose training batches skip the logits and whose evaluation ranks items.

    Training asks the model for the logits of no position (`logits_to_keep` an empty index tensor): the next-item
    loss is computed from the hidden states, and a training step reads only the loss, so neither the `[batch, length,
    vocab]` logits nor the last position's `[batch, vocab]` are built (the latter alone cost a third of a step at
    hidden 50 on 24K items). With `return_outputs` the last position's logits are returned.

    The loss is normalised as transformers' causal LMs normalise it:
    `Trainer` counts the targets of each optimizer step (`num_items_in_batch`, from the collator's `shift_labels`,
    over every accumulated batch and process) and the model divides the sum of its batch's losses by that count, so
    that every target of a step weighs the same, whatever the gradient accumulation or the number of processes.

    `evaluate` runs [`evaluate_next_item`] on the evaluation split and logs `eval_{protocol}/hr@10`,
    `eval_{protocol}/ndcg@10`, ..., so that `metric_for_best_model="full/ndcg@10"`, `EarlyStoppingCallback` and
    `load_best_model_at_end` work. Every process computes the same metrics on the whole split (no sampler sharding),
    so they agree on the best checkpoint.

    `train_sampling_strategy="group_by_length"` batches rows of similar history length with [`LengthBucketSampler`]
    (the length of a row is its input window, `len(item_ids) - 1` cut to `max_length`, which is also its number of
    targets); other strategies are `Trainer`'s. The sampler sorts the rows of a whole optimizer step (batch size times
    accumulation steps) together, so accumulating changes neither the rows of a step nor their weights. Bucketed
    steps hold from one to `max_length` targets a row, and every step has the same weight: the targets of a step of
    short histories weigh more than those of a step of long ones.

    `args` are [`SFTTrainingArguments`]: evaluation reads `eval_protocol`, `exclude_history` and
    `num_sampled_negatives` from them; `data_collator` is a [`NextItemCollator`], whose `max_length` (history items
    the model reads) cuts the histories of evaluation and bucketing as it cuts those of training batches.
    """

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        if not isinstance(self.args, SFTTrainingArguments):
            raise TypeError(
                f"NextItemTrainer needs SFTTrainingArguments (eval_protocol, ...), got {type(self.args).__name__}."
            )
        if not isinstance(self.data_collator, NextItemCollator):
            raise TypeError(f"NextItemTrainer needs a NextItemCollator, got {type(self.data_collator).__name__}.")
        self.step_targets: float | None = None  # set for length-bucketed training (`set_step_targets`)
        stream = self.train_dataset
        if isinstance(stream, LengthBucketedStream) and stream.bucketed:
            self.set_step_targets(stream.num_targets, stream.num_rows)

    @property
    def max_length(self) -> int:
        """History items the model reads: the collator's window."""
        return self.data_collator.max_length

    def _set_signature_columns_if_needed(self):
        # The columns `remove_unused_columns` keeps: those the collator reads (rows are batched by it, not passed to
        # the model), so that a batch does not convert the columns nothing reads.
        if self._signature_columns is None:
            self._signature_columns = self.data_collator.columns

    def _get_train_sampler(self, train_dataset=None):
        dataset = self.train_dataset if train_dataset is None else train_dataset
        if self.args.train_sampling_strategy != "group_by_length":
            return super()._get_train_sampler(train_dataset)
        lengths = window_lengths(dataset, self.max_length)
        self.set_step_targets(int(lengths.sum()), len(lengths))
        batch_size = self.args.train_batch_size * self.args.gradient_accumulation_steps
        return LengthBucketSampler(lengths, batch_size, seed=self.args.seed)

    def set_step_targets(self, epoch_targets: int, epoch_rows: int) -> None:
        """Normalise the loss of every step by the targets of an average step (`step_targets`): the epoch's targets
        over its optimizer steps. Length-bucketed steps hold from one to fifty targets a row: divided by its own
        count, a step of short histories would weigh as much as a step of long ones, and each target in it up to
        `max_length` times more; divided by the average count, every target of the epoch weighs the same, as in
        random batches (whose counts vary little)."""
        rows_per_step = self.args.train_batch_size * self.args.gradient_accumulation_steps * self.args.world_size
        self.step_targets = epoch_targets / math.ceil(epoch_rows / rows_per_step)

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        # Trainer's forward would build `[batch, length, vocab]` logits that nothing reads: the loss comes from the
        # hidden states.
        logits_to_keep = 1 if return_outputs else NO_POSITIONS
        if num_items_in_batch is not None and self.step_targets is not None:
            device = num_items_in_batch.device if torch.is_tensor(num_items_in_batch) else None
            num_items_in_batch = torch.tensor(self.step_targets, device=device)
        return super().compute_loss(
            model, {**inputs, "logits_to_keep": logits_to_keep}, return_outputs, num_items_in_batch
        )

    def evaluate(self, eval_dataset=None, ignore_keys=None, metric_key_prefix: str = "eval") -> dict[str, float]:
        """Ranking metrics of the current model on `eval_dataset` (default: the trainer's), logged and returned."""
        dataset = self.eval_dataset if eval_dataset is None else eval_dataset
        self._memory_tracker.start()
        start = time.time()
        model = self.accelerator.unwrap_model(self.model)
        scores = evaluate_next_item(
            model,
            dataset,
            protocol=self.args.eval_protocol,
            exclude_history=self.args.exclude_history,
            num_sampled_negatives=self.args.num_sampled_negatives,
            batch_size=self.args.per_device_eval_batch_size,
            max_users=self.args.eval_max_users,
            max_length=self.max_length,
            seed=self.args.seed,
        )
        metrics = {f"{metric_key_prefix}_{name}": value for name, value in scores.items()}
        evaluated = int(scores[f"{self.args.eval_protocol}/num_users"])
        metrics.update(speed_metrics(metric_key_prefix, start, num_samples=evaluated))
        self.log(metrics)
        self.control = self.callback_handler.on_evaluate(self.args, self.state, self.control, metrics)
        self._memory_tracker.stop_and_update_metrics(metrics)
        return metrics
