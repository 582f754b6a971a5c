"""`prepare_streamed` (`--streaming`): the same output as `prepare`, from chunks and parts, on logs that exercise
every filter: duplicates, ratings, missing keys, repeats, k-core, users with one or two interactions, no times."""

import json

import numpy as np
import pandas as pd
import pytest
from datasets import load_from_disk

from data_preprocess import PreprocessingError, prepare
from data_preprocess.__main__ import main
from data_preprocess.streamed import prepare_streamed


def messy_log(rows: int = 3000, seed: int = 0) -> pd.DataFrame:
    """Keys that sort differently as text and as numbers, Zipf-ish items, equal times, exact duplicates, low and
    missing ratings, a missing user."""
    rng = np.random.default_rng(seed)
    users = rng.integers(1, 120, rows)
    frame = pd.DataFrame(
        {
            "user_id": users.astype(str),
            "item_id": np.where(
                rng.random(rows) < 0.1, "x" + (users % 7).astype(str), (rng.zipf(1.6, rows) % 90 + 1).astype(str)
            ),
            "timestamp": rng.integers(0, 400, rows),
            "rating": rng.integers(1, 6, rows).astype(float),
        }
    )
    frame.loc[rng.choice(rows, 30, replace=False), "rating"] = np.nan
    frame = pd.concat([frame, frame.iloc[rng.choice(rows, 100, replace=False)]], ignore_index=True)
    frame.loc[5, "user_id"] = ""
    return frame


def assert_same_output(streamed, in_memory) -> None:
    for split in ("train", "valid", "test"):
        assert load_from_disk(str(streamed / split)).to_dict() == load_from_disk(str(in_memory / split)).to_dict()
    for name in ("tokenizer/id2item.json", "low_rated.json"):
        if (in_memory / name).is_file():
            assert json.loads((streamed / name).read_text()) == json.loads((in_memory / name).read_text()), name
    stats, expected = (json.loads((folder / "stats.json").read_text()) for folder in (streamed, in_memory))
    for entry in (stats, expected):
        entry.pop("args"), entry.pop("dataset")
    assert stats == expected


@pytest.mark.parametrize(
    "options",
    [
        {},
        {"min_rating": 3.0},
        {"k_core": 4, "dedup_consecutive": True, "min_rating": 2.0},
        {"keep_duplicates": True, "max_length": 5},
    ],
)
def test_streamed_output_equals_prepare(tmp_path, options):
    log = messy_log()
    log.to_parquet(tmp_path / "log.parquet")
    prepare(tmp_path / "log.parquet", tmp_path / "in_memory", **options)
    # chunks of 700 rows over parts of about 500 interactions: every part boundary and chunk boundary is crossed
    prepare_streamed(tmp_path / "log.parquet", tmp_path / "streamed", chunk_rows=700, partition_rows=500, **options)
    assert json.loads((tmp_path / "streamed" / "stats.json").read_text())["args"]["partitions"] > 4
    assert len(list((tmp_path / "streamed" / "train").glob("data-*.arrow"))) > 4
    assert_same_output(tmp_path / "streamed", tmp_path / "in_memory")


def test_csv_shards_without_times_stream_like_the_whole_file(tmp_path):
    log = messy_log(seed=1).drop(columns=["timestamp"])
    log.to_csv(tmp_path / "log.csv", index=False)
    (tmp_path / "shards").mkdir()
    for index, rows in enumerate(np.array_split(np.arange(len(log)), 3)):
        log.iloc[rows].to_csv(tmp_path / "shards" / f"part-{index}.csv", index=False)
    prepare(tmp_path / "log.csv", tmp_path / "in_memory")
    prepare_streamed(tmp_path / "shards", tmp_path / "streamed", chunk_rows=400, partition_rows=800)
    assert_same_output(tmp_path / "streamed", tmp_path / "in_memory")


def test_streamed_malformed_lines_raise_with_their_line_or_are_counted(tmp_path):
    lines = ["user_id,item_id,timestamp"] + [
        f"{user},{item},{user * 10 + item}" for user in range(5) for item in range(4)
    ]
    lines.insert(9, "3,7,not-a-time")
    (tmp_path / "log.csv").write_text("\n".join(lines) + "\n")
    with pytest.raises(PreprocessingError, match="line 10"):
        prepare_streamed(tmp_path / "log.csv", tmp_path / "out", chunk_rows=4)
    prepare_streamed(tmp_path / "log.csv", tmp_path / "out", chunk_rows=4, on_error="skip")
    assert json.loads((tmp_path / "out" / "stats.json").read_text())["dropped"] == {"malformed_line": 1}


def test_streaming_cli_refuses_what_it_does_not_support(tmp_path):
    messy_log().to_parquet(tmp_path / "log.parquet")
    for extra, named in (
        (["--split", "time"], "--split time"),
        (["--cold-items", "0.1"], "--cold-items"),
        (["--feature-preset", "ml-100k"], "side features"),
    ):
        with pytest.raises(SystemExit, match=f"--streaming does not support {named}"):
            main(["--input", str(tmp_path / "log.parquet"), "--output", str(tmp_path / "out"), "--streaming", *extra])
    with pytest.raises(SystemExit, match="missing: no such file or directory"):
        main(["--input", str(tmp_path / "missing"), "--output", str(tmp_path / "out"), "--streaming"])
    main(["--input", str(tmp_path / "log.parquet"), "--output", str(tmp_path / "out"), "--streaming"])
    assert load_from_disk(str(tmp_path / "out"))["test"].num_rows > 0
