"""Cut long training sequences into windows, so that no item is lost to the `max_length` truncation."""

from datasets import Dataset

SEQUENCE_COLUMNS = ("item_ids", "timestamps")


def window_ends(length: int, max_length: int) -> list[int]:
    """End indices of the windows of a sequence of `length` items, the last window first.

    Windows hold `max_length + 1` items (inputs plus the next item) and overlap by one item, so that every item but
    the first is the target of exactly one position: ends `length, length - max_length, ...` down to the first window
    that starts at 0.
    """
    ends = [length]
    while ends[-1] > max_length + 1:
        ends.append(ends[-1] - max_length)
    return ends


def sliding_windows(dataset: Dataset, max_length: int) -> Dataset:
    """Replace every row longer than `max_length + 1` items by its windows (see [`window_ends`]).

    `item_ids` and, when present, `timestamps` are cut alike; other columns are repeated.
    """

    def expand(batch: dict[str, list]) -> dict[str, list]:
        output = {name: [] for name in batch}
        for index, items in enumerate(batch["item_ids"]):
            for end in window_ends(len(items), max_length):
                start = max(0, end - max_length - 1)
                for name, values in batch.items():
                    output[name].append(values[index][start:end] if name in SEQUENCE_COLUMNS else values[index])
        return output

    return dataset.map(expand, batched=True, desc="Sliding windows")
