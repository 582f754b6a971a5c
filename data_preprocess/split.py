"""Splits: SASRec's leave-one-out, or a global time split; rows truncated from the left.

Input: parallel arrays sorted by user then time, and each user's `[start, end)` range. Every split row is
`{user_id, item_ids, timestamps}`: in `train` the training sequence, in `valid` and `test` the history followed by the
target (the last element).
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
from datasets import Dataset, DatasetDict

from .errors import PreprocessingError, logger, record_drops


@dataclass
class Sequences:
    """Interactions sorted by user then time: `item_ids` and `timestamps`, and each user's `[starts, ends)`."""

    user_keys: np.ndarray
    starts: np.ndarray
    ends: np.ndarray
    item_ids: np.ndarray
    timestamps: np.ndarray

    @classmethod
    def from_sorted(cls, user_codes: np.ndarray, users: np.ndarray, item_ids: np.ndarray, timestamps: np.ndarray):
        """Find each user's range in arrays sorted by `user_codes`; `users` holds the raw keys row by row."""
        starts = np.flatnonzero(np.r_[True, user_codes[1:] != user_codes[:-1]])
        ends = np.r_[starts[1:], len(user_codes)]
        return cls(users[starts], starts, ends, item_ids, timestamps)

    @property
    def lengths(self) -> np.ndarray:
        """Each user's number of interactions."""
        return self.ends - self.starts

    def rows(self, users: np.ndarray, ends: np.ndarray, max_length: int) -> Dataset:
        """For each selected user (a boolean mask or indices), the items `[start, end)`, keeping the last
        `max_length + 1`."""
        keys, starts = self.user_keys[users], np.maximum(self.starts[users], ends - (max_length + 1))
        lengths = ends - starts
        offsets = np.r_[0, np.cumsum(lengths)].astype(np.int32)
        index = np.repeat(starts - offsets[:-1], lengths) + np.arange(offsets[-1])
        return Dataset(
            pa.table(
                {
                    "user_id": pa.array(keys.tolist(), pa.string()),
                    "item_ids": pa.ListArray.from_arrays(offsets, pa.array(self.item_ids[index], pa.int64())),
                    "timestamps": pa.ListArray.from_arrays(offsets, pa.array(self.timestamps[index], pa.int64())),
                }
            )
        )


def require_rows(split: str, rows: int, cause: str) -> None:
    """Refuse an empty split (training or evaluation would fail on it later), naming its `cause`."""
    if rows == 0:
        raise PreprocessingError(f"the {split} split would be empty: {cause}")


def leave_one_out(sequences: Sequences, max_length: int) -> DatasetDict:
    """SASRec's protocol: the last item is the test target, the one before it the validation target, the rest train.

    Users with fewer than 3 interactions go to `train` only; if all do, that is an error (empty valid and test splits).
    """
    full = sequences.lengths >= 3
    logger.info("%d users with fewer than 3 interactions go to train only", int((~full).sum()))
    require_leave_one_out_rows(int(full.sum()), len(full))
    return leave_one_out_rows(sequences, max_length)


def require_leave_one_out_rows(full_users: int, users: int) -> None:
    """Refuse a leave-one-out split where no user has the 3 interactions that valid and test rows need."""
    require_rows(
        "valid and test",
        full_users,
        f"all {users} users have fewer than 3 interactions (leave-one-out needs 3: train, valid and test items)",
    )


def leave_one_out_rows(sequences: Sequences, max_length: int) -> DatasetDict:
    """`leave_one_out`'s rows, without its checks: also for a part of the users (`data_preprocess.streamed`)."""
    full = sequences.lengths >= 3
    ends = sequences.ends
    return DatasetDict(
        train=sequences.rows(np.ones_like(full), np.where(full, ends - 2, ends), max_length),
        valid=sequences.rows(full, ends[full] - 1, max_length),
        test=sequences.rows(full, ends[full], max_length),
    )


def time_cutoffs(timestamps: np.ndarray, valid_start: int | None, test_start: int | None) -> tuple[int, int]:
    """Default cutoffs put the last 10% of interactions in the test window and the 10% before in the valid one."""
    ordered = np.sort(timestamps)
    if valid_start is None:
        valid_start = int(ordered[int(0.8 * (len(ordered) - 1))])
    if test_start is None:
        test_start = int(ordered[int(0.9 * (len(ordered) - 1))])
    if valid_start > test_start:
        raise PreprocessingError(f"the valid window starts ({valid_start}) after the test window ({test_start})")
    return valid_start, test_start


def time_split(
    sequences: Sequences, max_length: int, valid_start: int, test_start: int, dropped: Counter[str]
) -> DatasetDict:
    """A global time split: train on interactions before `valid_start`; each user's first interaction in
    `[valid_start, test_start)` is its validation target, its first at or after `test_start` its test target, each
    after all the user's earlier interactions. A target with no earlier interaction is dropped and counted. An empty
    split is an error."""
    starts, lengths, times = sequences.starts, sequences.lengths, sequences.timestamps
    before_valid = np.add.reduceat((times < valid_start).astype(np.int64), starts)
    before_test = np.add.reduceat((times < test_start).astype(np.int64), starts)
    in_valid = (before_valid < lengths) & (before_valid < before_test)
    in_test = before_test < lengths
    record_drops(dropped, "valid_target_without_history", int((in_valid & (before_valid == 0)).sum()))
    record_drops(dropped, "test_target_without_history", int((in_test & (before_test == 0)).sum()))
    valid_users = np.flatnonzero(in_valid & (before_valid > 0))
    test_users = np.flatnonzero(in_test & (before_test > 0))
    train_users = np.flatnonzero(before_valid > 0)
    hint = "; choose other --valid-start/--test-start"
    require_rows("train", len(train_users), f"no user has an interaction before valid_start={valid_start}{hint}")
    windows = {"valid": f"in [{valid_start}, {test_start})", "test": f"at or after {test_start}"}
    for name, targets, kept in (("valid", in_valid, valid_users), ("test", in_test, test_users)):
        found = int(targets.sum())
        cause = (
            f"{found} users have a {name} target ({windows[name]}), {found - len(kept)} with no earlier interaction"
        )
        require_rows(name, len(kept), cause + hint)
    return DatasetDict(
        train=sequences.rows(train_users, starts[train_users] + before_valid[train_users], max_length),
        valid=sequences.rows(valid_users, starts[valid_users] + before_valid[valid_users] + 1, max_length),
        test=sequences.rows(test_users, starts[test_users] + before_test[test_users] + 1, max_length),
    )
