"""Recommend the top-K next items for many users and write them to disk.

    python -m hf_sasrec.infer [--model outputs/sft/default] [--data DIR] [--split test] [--history-file F.jsonl]
                              [--top-k 10] [--output DIR] [--index-type flat|hnsw|ivf|auto]

Users come from a processed-data split (`--data`, default the `data_dir` of the run's `run_info.json`): each row's
items are the user's history, so for `test` (history + held-out item) the recommendations follow everything known
about the user. `--holdout-last` instead recommends from each row without its last item and reports HR@K against it.
Or from `--history-file`, a JSONL file of `{"user_id": ..., "items": [raw keys], "timestamps": [...],
"user_features": {...}}` lines (raw keys of users the model never saw; `timestamps` for `tisasrec`, `user_features`
for a model with user features; `user_id` defaults to the line number).
`--exposure-weight W` spreads the lists over the catalog (`hf_sasrec.reranking.ExposurePenalty`): users in order,
each list re-chosen among the user's `--exposure-candidates` best items with `W` off the score of every item an
earlier list holds; `summary.json` reports `coverage`, the share of the catalog in some list, with or without it.
`--new-items F.jsonl` adds items that arrived after training (`{"item_id": ..., FEATURE: VALUE, ..., "embeddings":
{MODALITY: [...]}}` a line) to a model trained with item features, scored from their content, before recommending.

Writes `recommendations.jsonl` (`user_id`, `items`, `scores`, `fallback`, `unknown_items`), `recommendations.csv`
(one row a recommendation: `user_id, rank, item, score`) and `summary.json` into the output folder, each atomically.
The default output folder follows the whole model path, so two models never share one: `outputs/infer/sft/default`
for `outputs/sft/default`, `outputs/infer/dpo/default` for `outputs/dpo/default`, and `outputs/infer/<name>-<hash of
the path>` for a folder outside `outputs/` or a Hub id. Search is exact unless `--index-type` asks for an approximate
index, which is reused from the model folder when it passes its checks, else built; the index is saved there
(`--no-save-index` to leave the folder untouched).
"""

import argparse
import csv
import hashlib
import json
import logging
import math
import time
from collections.abc import Iterator
from pathlib import Path

import torch

from data_preprocess.atomic_files import atomic_path, atomic_write_json

from .data_collator import USER_FEATURES, stack_user_features
from .feature_inputs import attach_user_features, model_user_values
from .item_tokenizer import decode_items
from .processed_data import load_processed_data
from .recommender import POPULARITY_FALLBACK, Recommender
from .reranking import ExposurePenalty
from .retrieval import INDEX_TYPES, RetrievalConfig
from .run_info import RUN_INFO_FILE, RunInfo

logger = logging.getLogger("hf_sasrec.infer")

DEFAULT_MODEL = "outputs/sft/default"
OUTPUTS = Path("outputs")


def split_users(recommender: Recommender, data_dir: str, split: str, holdout_last: bool) -> Iterator[dict]:
    """Users of a processed split as `{"user_id", "ids", "timestamps", "target", "user_features"}` (token ids;
    `target` only with `holdout_last`; `user_features` only for a model with user features, from the data's user
    table). The split's tokenizer must be the model's."""
    splits, _, data_tokenizer = load_processed_data(data_dir)
    data_vocab = data_tokenizer.get_vocab()
    model_vocab = {
        token: index for token, index in recommender.tokenizer.get_vocab().items() if index < len(data_vocab)
    }
    if data_vocab != model_vocab:  # items added after training (--new-items) follow the data's
        raise ValueError(f"The tokenizer of {data_dir} is not the model's: the data was processed for another model.")
    if split not in splits:
        raise ValueError(f"{data_dir} has no split {split!r}; it has {list(splits)}.")
    rows = splits[split]
    if recommender.config.user_features:
        rows = attach_user_features(recommender.model, {split: rows}, model_user_values(recommender.config, data_dir))[
            split
        ]
    users = rows[USER_FEATURES] if USER_FEATURES in rows.column_names else [None] * len(rows)
    times = rows["timestamps"] if "timestamps" in rows.column_names else [None] * len(rows)
    for user_id, ids, row_times, values in zip(rows["user_id"], rows["item_ids"], times, users, strict=True):
        if holdout_last:
            yield {
                "user_id": user_id,
                "ids": ids[:-1],
                "timestamps": row_times and row_times[:-1],
                "target": ids[-1],
                "user_features": values,
            }
        else:
            yield {"user_id": user_id, "ids": ids, "timestamps": row_times, "user_features": values}


def jsonl_records(path: str) -> Iterator[tuple[int, dict]]:
    """The line number and object of every non-blank line of a JSONL file; a line that is not a JSON object is an
    error naming it."""
    with open(path, encoding="utf-8") as lines:
        for number, line in enumerate(lines, start=1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as error:
                raise ValueError(f"{path}:{number} is not valid JSON: {error}") from error
            if not isinstance(record, dict):
                raise ValueError(f"{path}:{number} is not a JSON object.")
            yield number, record


def history_file_users(path: str) -> Iterator[dict]:
    """Users of a JSONL history file as `{"user_id", "items", "timestamps", "user_features"}`; a malformed line is
    an error naming it."""
    for number, record in jsonl_records(path):
        if not isinstance(record.get("items"), list):
            raise ValueError(f'{path}:{number} needs an "items" list of raw item keys.')
        yield {
            "user_id": str(record.get("user_id", number)),
            "items": [str(key) for key in record["items"]],
            "timestamps": record.get("timestamps"),
            "user_features": record.get("user_features"),
        }


def read_new_items(path: str) -> tuple[dict[str, dict], dict[str, dict[str, list[float]]]]:
    """Items of a JSONL file, one a line: `{"item_id": KEY, FEATURE: VALUE, ..., "embeddings": {MODALITY: [...]}}`,
    as `Recommender.add_items` takes them (features, and vectors by modality); a malformed line is an error naming
    it."""
    items, embeddings = {}, {}
    for number, record in jsonl_records(path):
        if record.get("item_id") in (None, ""):
            raise ValueError(f'{path}:{number} needs an "item_id".')
        key = str(record.pop("item_id"))
        if key in items:
            raise ValueError(f"{path}:{number}: item {key!r} appears twice.")
        vectors = record.pop("embeddings", {})
        if not isinstance(vectors, dict):
            raise ValueError(f'{path}:{number}: "embeddings" must map a modality to a vector.')
        items[key] = record
        for modality, vector in vectors.items():
            embeddings.setdefault(modality, {})[key] = vector
    if not items:
        raise ValueError(f"{path} holds no item.")
    return items, embeddings


def chunks(users: Iterator[dict], size: int) -> Iterator[list[dict]]:
    chunk = []
    for user in users:
        chunk.append(user)
        if len(chunk) == size:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


def recommend_split_chunk(
    recommender: Recommender, users: list[dict], top_k: int, exposure: ExposurePenalty | None = None
) -> list[dict]:
    """Recommendations for users given as token ids, in the `recommendations.jsonl` schema."""
    times = [user["timestamps"] for user in users] if recommender.uses_timestamps else None
    values = [user["user_features"] for user in users]
    user_features = stack_user_features(values) if values[0] is not None else None
    results = recommender.recommend_ids(
        [user["ids"] for user in users], top_k, timestamps=times, user_features=user_features, exposure=exposure
    )
    return [
        {
            "user_id": user["user_id"],
            "items": decode_items(recommender.tokenizer, ids),
            "scores": scores,
            "fallback": POPULARITY_FALLBACK if scores is None else None,
            "unknown_items": [],
            **({"hit": user["target"] in ids} if "target" in user else {}),
        }
        for user, (ids, scores) in zip(users, results, strict=True)
    ]


def recommend_history_chunk(
    recommender: Recommender, users: list[dict], top_k: int, exposure: ExposurePenalty | None = None
) -> list[dict]:
    """Recommendations for users given as raw keys, in the `recommendations.jsonl` schema."""
    times = None
    if recommender.uses_timestamps:
        missing = [user["user_id"] for user in users if user["timestamps"] is None]
        if missing:
            raise ValueError(f"{recommender.config.model_type} needs timestamps; users {missing[:5]} have none.")
        times = [user["timestamps"] for user in users]
    user_features = [user["user_features"] for user in users]
    results = recommender(
        [user["items"] for user in users],
        top_k=top_k,
        timestamps=times,
        user_features=user_features if any(user_features) else None,
        exposure=exposure,
    )
    return [{"user_id": user["user_id"], **result} for user, result in zip(users, results, strict=True)]


def default_output_dir(model: str) -> Path:
    """`outputs/infer/` and the model's path below `outputs/` (`outputs/dpo/default` -> `outputs/infer/dpo/default`);
    for any other folder or a Hub id, its name and a hash of its full path: two models never share a folder."""
    local = Path(model).is_dir()
    path = Path(model).resolve() if local else Path(model)
    if local and path.is_relative_to(OUTPUTS.resolve()):
        return OUTPUTS / "infer" / path.relative_to(OUTPUTS.resolve())
    return OUTPUTS / "infer" / f"{path.name}-{hashlib.sha256(str(path).encode()).hexdigest()[:8]}"


def write_outputs(records: list[dict], output: Path) -> None:
    """`recommendations.jsonl` (one user a line) and `recommendations.csv` (one recommendation a row), atomically."""
    with atomic_path(output / "recommendations.jsonl") as temporary, open(temporary, "w", encoding="utf-8") as jsonl:
        for record in records:
            jsonl.write(json.dumps({key: value for key, value in record.items() if key != "hit"}) + "\n")
    with (
        atomic_path(output / "recommendations.csv") as temporary,
        open(temporary, "w", encoding="utf-8", newline="") as table,
    ):
        writer = csv.writer(table)
        writer.writerow(["user_id", "rank", "item", "score", "fallback"])
        for record in records:
            scores = record["scores"] or [None] * len(record["items"])
            for rank, (item, score) in enumerate(zip(record["items"], scores, strict=True), start=1):
                writer.writerow(
                    [record["user_id"], rank, item, "" if score is None else score, record["fallback"] or ""]
                )


def default_data_dir(model_dir: Path) -> str:
    """The `data_dir` of the run's `run_info.json`."""
    data_dir = RunInfo.load(model_dir, missing_ok=True).data_dir
    if not data_dir:
        raise ValueError(f"{model_dir} names no data_dir in {RUN_INFO_FILE}: pass --data or --history-file.")
    return data_dir


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=DEFAULT_MODEL, help="run folder or Hub repository id")
    parser.add_argument("--data", default=None, help="processed data folder (default: run_info.json's data_dir)")
    parser.add_argument("--split", default="test", help="split whose users get recommendations (default: test)")
    parser.add_argument("--holdout-last", action="store_true", help="recommend without each row's last item")
    parser.add_argument("--history-file", default=None, help="JSONL of raw item histories instead of a split")
    parser.add_argument("--top-k", type=int, default=10, help="items a user (default: 10)")
    parser.add_argument("--output", default=None, help="default: outputs/infer/<model path below outputs/>")
    parser.add_argument("--index-type", choices=INDEX_TYPES, default="flat", help="default: flat (exact search)")
    parser.add_argument(
        "--target-recall", type=float, default=0.95, help="--index-type auto: recall@10 to reach (default 0.95)"
    )
    parser.add_argument("--no-save-index", action="store_true", help="do not write the index into the model folder")
    parser.add_argument(
        "--new-items",
        default=None,
        help="JSONL of items added before recommending, scored from their features (a model trained with features)",
    )
    parser.add_argument(
        "--exposure-weight",
        type=float,
        default=None,
        help="spread the lists over the catalog: this much score off every item an earlier user's list holds "
        "(hf_sasrec.reranking.ExposurePenalty; users in file order)",
    )
    parser.add_argument(
        "--exposure-candidates",
        type=int,
        default=100,
        help="--exposure-weight: each list is re-chosen among the user's best N items (default: 100)",
    )
    parser.add_argument("--batch-size", type=int, default=512, help="users encoded and searched at once")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu", help="model device")
    parser.add_argument(
        "--trust-remote-code",
        action="store_true",
        help="allow a model_type that only the model folder's own code implements (runs that code)",
    )
    args = parser.parse_args(argv)
    if args.top_k < 1:
        parser.error(f"--top-k must be at least 1, got {args.top_k}")
    if args.exposure_weight is not None:
        if not 0 <= args.exposure_weight < math.inf:
            parser.error(f"--exposure-weight must be finite and at least 0, got {args.exposure_weight}")
        if args.exposure_candidates < args.top_k:
            parser.error(f"--exposure-candidates ({args.exposure_candidates}) must be at least --top-k ({args.top_k})")
    if args.history_file and (args.data or args.holdout_last):
        parser.error("--history-file replaces --data/--split/--holdout-last")
    return args


def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    recommender = Recommender.from_pretrained(
        args.model,
        index_config=RetrievalConfig(index_type=args.index_type, target_recall=args.target_recall),
        save_index=not args.no_save_index and Path(args.model).is_dir(),
        device=args.device,
        trust_remote_code=args.trust_remote_code,
        batch_size=args.batch_size,
    )
    output = Path(args.output) if args.output else default_output_dir(args.model)
    new_items = recommender.add_items(*read_new_items(args.new_items)) if args.new_items else []
    if args.history_file:
        users, recommend, source = history_file_users(args.history_file), recommend_history_chunk, args.history_file
    else:
        data_dir = args.data or default_data_dir(Path(args.model))
        users = split_users(recommender, data_dir, args.split, args.holdout_last)
        recommend, source = recommend_split_chunk, f"{data_dir}:{args.split}"
    exposure = None
    if args.exposure_weight is not None:
        vocab_size = recommender.num_special_tokens + recommender.num_items
        exposure = ExposurePenalty(vocab_size, args.exposure_weight, args.top_k, args.exposure_candidates)
    start = time.perf_counter()
    records = [
        record
        for chunk in chunks(users, args.batch_size)
        for record in recommend(recommender, chunk, args.top_k, exposure)
    ]
    seconds = time.perf_counter() - start
    write_outputs(records, output)
    summary = {
        "model": str(args.model),
        "output": str(output),
        "source": source,
        "users": len(records),
        "top_k": args.top_k,
        "index_type": recommender.index.config.index_type,
        "index_tuned_recall": recommender.index.tuned_recall,
        "seconds": seconds,
        "users_per_second": len(records) / seconds if seconds else None,
        "popularity_fallbacks": sum(record["fallback"] == POPULARITY_FALLBACK for record in records),
        "unknown_items": sum(len(record["unknown_items"]) for record in records),
        "new_items": len(new_items),
        "exposure_weight": args.exposure_weight,
        "coverage": len({item for record in records for item in record["items"]}) / recommender.num_items,
    }
    if args.holdout_last:
        summary[f"hr@{args.top_k}"] = sum(record["hit"] for record in records) / max(len(records), 1)
    atomic_write_json(output / "summary.json", summary)
    logger.info("Wrote %d users' recommendations to %s: %s", len(records), output, summary)
    return summary


if __name__ == "__main__":
    main()
