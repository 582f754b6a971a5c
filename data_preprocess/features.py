"""Side features and modality tables of a dataset: what to read (`FeatureSources`), their tensors for the items of
the tokenizer and the users of the splits (`build_features`), the `features/` folder (`save_features`), and reading
it back with numpy (`load_features`). The layout is documented in `data_preprocess.feature_schema`.

MovieLens-100K's own files give a real example (`FeatureSources.movielens_100k`, the default of
`python -m data_preprocess` without `--input`, or `--feature-preset ml-100k` for GroupLens' files): genres
(multi-valued) and release year (categorical) from the item file, age (numeric, bucketed in MovieLens-1M's age
groups), gender and occupation (categorical) from the user file.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from safetensors.numpy import load_file, save_file
from transformers import PreTrainedTokenizerFast

from .atomic_files import atomic_write_json
from .embedding_tables import EmbeddingSource, align_embeddings, read_embedding_table
from .errors import PreprocessingError, logger, record_drops
from .feature_schema import FORMAT_NAME, FORMAT_VERSION, FeatureSpec, build_schema, parse_feature_specs
from .feature_tables import infer_specs, read_feature_table
from .formats import embedded_movielens
from .item_tokenizer import NUM_SPECIAL_TOKENS, item_keys, vocabulary_fingerprint
from .side_features import EncodedFeatures, Rows, Vocabulary, encode_features
from .text_formats import OnError

FEATURES_FOLDER = "features"
MOVIELENS_100K_ITEM_FEATURES = "genres=class:multi,year=release_year:categorical"
MOVIELENS_100K_USER_FEATURES = "age:numeric:18/25/35/45/50/56,gender:categorical,occupation:categorical"
# ML-100K's item file says "unknown" for a film of no known genre, and "unkonwn" for the release year of item 267.
MOVIELENS_100K_MISSING_VALUES = frozenset({"unknown", "unkonwn"})


@dataclass(frozen=True)
class FeatureSources:
    """What to read beside the interaction log.

    `item_table`/`user_table`: one row per raw id, keyed by `item_id_column`/`user_id_column` (see
    `data_preprocess.feature_tables`); `item_features`/`user_features` declare the columns used (`None`: every
    column, kinds inferred). `embeddings`: one table per modality. Values in `missing_values` count as missing;
    a categorical value seen in fewer than `min_count` items (users) is encoded as unknown.
    """

    item_table: Path | None = None
    item_features: tuple[FeatureSpec, ...] | None = None
    item_id_column: str = "item_id"
    user_table: Path | None = None
    user_features: tuple[FeatureSpec, ...] | None = None
    user_id_column: str = "user_id"
    embeddings: tuple[EmbeddingSource, ...] = ()
    missing_values: frozenset[str] = frozenset()
    min_count: int = 1

    def __post_init__(self) -> None:
        for entity in ("item", "user"):
            if getattr(self, f"{entity}_features") is not None and getattr(self, f"{entity}_table") is None:
                raise PreprocessingError(f"{entity} features are declared, but no {entity} table is given")
        names = [source.name for source in self.embeddings]
        if len(set(names)) < len(names):
            raise PreprocessingError(f"two embedding tables share a name: {names}")
        if self.min_count < 1:
            raise PreprocessingError(f"the feature min_count must be at least 1, got {self.min_count}")

    @classmethod
    def movielens_100k(cls, folder: str | Path | None = None) -> FeatureSources:
        """MovieLens-100K's item and user files with their declarations: GroupLens' `u.item` and `u.user` in
        `folder`, or (`None`) the embedded data set's `ml-100k.item` and `ml-100k.user` (from the recbole wheel)."""
        if folder is None:
            item_table, user_table = (
                embedded_movielens().with_suffix(".item"),
                embedded_movielens().with_suffix(".user"),
            )
        else:
            item_table, user_table = Path(folder) / "u.item", Path(folder) / "u.user"
        return cls(
            item_table=item_table,
            item_features=parse_feature_specs(MOVIELENS_100K_ITEM_FEATURES),
            user_table=user_table,
            user_features=parse_feature_specs(MOVIELENS_100K_USER_FEATURES),
            missing_values=MOVIELENS_100K_MISSING_VALUES,
        )

    @property
    def empty(self) -> bool:
        return self.item_table is None and self.user_table is None and not self.embeddings

    def describe(self) -> dict:
        """The sources, as recorded in `stats.json` `args`."""

        def declared(specs: tuple[FeatureSpec, ...] | None) -> list[str] | None:
            return None if specs is None else [spec.declaration for spec in specs]

        return {
            "item_table": None if self.item_table is None else str(self.item_table),
            "item_features": declared(self.item_features),
            "user_table": None if self.user_table is None else str(self.user_table),
            "user_features": declared(self.user_features),
            "embeddings": [source.described for source in self.embeddings],
            "missing_values": sorted(self.missing_values),
            "min_count": self.min_count,
        }


@dataclass
class Features:
    """Everything under `features/`: the schema, the item tensors (row = token id), the user tensors (row = the user
    `user_ids[row]`), the vocabularies by entity ("items", "users") and name, the modality tensors by name
    (`embedding`, `present`), and the statistics written to `stats.json` under `features`."""

    schema: dict
    items: dict[str, np.ndarray] = field(default_factory=dict)
    users: dict[str, np.ndarray] = field(default_factory=dict)
    user_ids: list[str] = field(default_factory=list)
    vocabularies: dict[str, dict[str, Vocabulary]] = field(default_factory=dict)
    embeddings: dict[str, dict[str, np.ndarray]] = field(default_factory=dict)
    stats: dict = field(default_factory=dict)


def _table_features(
    path: Path,
    declared: tuple[FeatureSpec, ...] | None,
    id_column: str,
    row_of: dict[str, int],
    num_rows: int,
    entity: str,
    sources: FeatureSources,
    on_error: OnError,
) -> tuple[EncodedFeatures, dict]:
    """Read a table, drop (and count) its rows for ids not in the log, and encode its features into `num_rows` rows
    (the entities' rows are the values of `row_of`; items come after the special tokens)."""
    table = read_feature_table(path, id_column, on_error)
    specs = declared if declared is not None else infer_specs(table, id_column)
    if not specs:
        columns = ", ".join(map(str, table.frame.columns))
        raise PreprocessingError(
            f"{path}: no feature column to use ({columns}); declare them (--{entity[:-1]}-features)"
        )
    targets = table.keys.map(row_of)
    in_log = targets.notna().to_numpy()
    if len(in_log) and not in_log.any():
        raise PreprocessingError(
            f"{path}: none of its {len(in_log)} {id_column} values is one of the log's {entity} "
            f"(e.g. {table.keys.iloc[0]!r}); check --{entity[:-1]}-table-id-col and the ids' spelling"
        )
    record_drops(table.dropped, f"{entity[:-1]}_not_in_log", int((~in_log).sum()), path.name)
    table.frame, table.keys = table.frame[in_log], table.keys[in_log]
    first_entity_row = NUM_SPECIAL_TOKENS if entity == "items" else 0
    rows = Rows(targets[in_log].to_numpy(dtype=np.int64), num_rows, first_entity_row)
    encoded = encode_features(table, specs, rows, entity, sources.min_count, sources.missing_values, on_error)
    for name, stats in encoded.stats.items():
        logger.info(
            "%s feature %s (%s): coverage %.1f%%, %d missing, %d unknown",
            entity[:-1],
            name,
            stats["kind"],
            100 * stats["coverage"],
            stats["missing"],
            stats["unknown"],
        )
    stats = {"table": str(path), "rows": len(in_log), "dropped": dict(sorted(table.dropped.items()))}
    return encoded, {**stats, "features": encoded.stats}


def build_features(
    sources: FeatureSources,
    tokenizer: PreTrainedTokenizerFast,
    user_ids: list[str],
    on_error: OnError = "raise",
) -> Features:
    """The item features (one row per token id of `tokenizer`), the user features (one row per user of `user_ids`)
    and the modality tables of `sources`. Bad input raises before anything is written."""
    num_rows = len(tokenizer)
    item_rows = {key: NUM_SPECIAL_TOKENS + index for index, key in enumerate(item_keys(tokenizer))}
    items_schema: dict = {
        "num_rows": num_rows,
        "num_special_tokens": NUM_SPECIAL_TOKENS,
        "vocabulary_fingerprint": vocabulary_fingerprint(tokenizer),
        "features": {},
    }
    features = Features(schema={})
    if sources.item_table is not None:
        encoded, features.stats["items"] = _table_features(
            sources.item_table,
            sources.item_features,
            sources.item_id_column,
            item_rows,
            num_rows,
            "items",
            sources,
            on_error,
        )
        features.items, features.vocabularies["items"] = encoded.tensors, encoded.vocabularies
        items_schema.update(file="items.safetensors", features=encoded.schema)
    users_schema = None
    if sources.user_table is not None:
        user_rows = {user: row for row, user in enumerate(user_ids)}
        encoded, features.stats["users"] = _table_features(
            sources.user_table,
            sources.user_features,
            sources.user_id_column,
            user_rows,
            len(user_ids),
            "users",
            sources,
            on_error,
        )
        features.users, features.user_ids = encoded.tensors, list(user_ids)
        features.vocabularies["users"] = encoded.vocabularies
        users_schema = {
            "num_rows": len(user_ids),
            "ids": "user_ids.json",
            "file": "users.safetensors",
            "features": encoded.schema,
        }
    embeddings_schema, features.stats["embeddings"] = {}, {}
    for source in sources.embeddings:
        table = read_embedding_table(source, sources.item_id_column)
        tensors, stats = align_embeddings(table, item_rows, num_rows, NUM_SPECIAL_TOKENS)
        if not tensors["present"].any():
            raise source.error(f"none of its {stats['rows']} rows is an item of the log (e.g. {table.keys[0]!r})")
        features.embeddings[source.name], features.stats["embeddings"][source.name] = tensors, stats
        file = f"embeddings/{source.name}.safetensors"
        embeddings_schema[source.name] = {"file": file, "dim": stats["dim"], "source": source.described}
    features.schema = build_schema(items_schema, users_schema, embeddings_schema)
    return features


def save_features(features: Features, folder: Path) -> None:
    """Write `features` into the (new) folder `folder` (see `data_preprocess.feature_schema`)."""
    folder.mkdir(parents=True)
    metadata = {"format": FORMAT_NAME, "version": str(FORMAT_VERSION)}
    if features.items:
        save_file(features.items, folder / "items.safetensors", metadata=metadata)
    if "users" in features.schema:
        save_file(features.users, folder / "users.safetensors", metadata=metadata)
        atomic_write_json(folder / "user_ids.json", features.user_ids, indent=None)
    for entity, vocabularies in features.vocabularies.items():
        for name, vocabulary in vocabularies.items():
            atomic_write_json(folder / "vocab" / entity / f"{name}.json", vocabulary, indent=None)
    for name, tensors in features.embeddings.items():
        (folder / "embeddings").mkdir(exist_ok=True)
        save_file(tensors, folder / "embeddings" / f"{name}.safetensors", metadata=metadata)
    atomic_write_json(folder / "schema.json", features.schema, indent=1)


def load_features(data_dir: str | Path) -> Features:
    """Read back the `features/` folder of a dataset folder, as numpy arrays."""
    folder = Path(data_dir) / FEATURES_FOLDER
    if not (folder / "schema.json").is_file():
        raise FileNotFoundError(f"{folder}: no schema.json (write features with python -m data_preprocess)")
    schema = json.loads((folder / "schema.json").read_text(encoding="utf-8"))
    if (schema.get("format"), schema.get("version")) != (FORMAT_NAME, FORMAT_VERSION):
        raise PreprocessingError(f"{folder}: features format {schema.get('format')} {schema.get('version')}")

    def read_json(name: str) -> object:
        return json.loads((folder / name).read_text(encoding="utf-8"))

    features = Features(schema=schema)
    for entity in ("items", "users"):
        section = schema.get(entity, {})
        if "file" in section:
            setattr(features, entity, load_file(folder / section["file"]))
            features.vocabularies[entity] = {
                name: read_json(spec["vocab"]) for name, spec in section["features"].items() if "vocab" in spec
            }
    if "users" in schema:
        features.user_ids = read_json(schema["users"]["ids"])
    features.embeddings = {name: load_file(folder / spec["file"]) for name, spec in schema["embeddings"].items()}
    stats = Path(data_dir) / "stats.json"
    features.stats = json.loads(stats.read_text(encoding="utf-8")).get("features", {}) if stats.is_file() else {}
    return features


__all__ = ["FeatureSources", "build_features", "load_features"]
