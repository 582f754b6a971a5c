"""What a training run gives the item and user encoders, read from a data folder's `features/` (written by
`python -m data_preprocess`) and a semantic-ids folder (written by `python -m hf_sasrec.semantic_ids`): the specs of
the config's `item_features` and `user_features`, the item tables (buffers of the model) and the users' values (a
`user_features` column of the splits).

    specs, tables = read_item_features("data/ml-100k", "genres,year", semantic_ids=None, fingerprint=...)
    user_specs, values_by_user = read_user_features("data/ml-100k", "all")
    config = AutoConfig.for_model("sasrec", item_features=specs, user_features=user_specs, ...)
    model = AutoModelForCausalLM.from_config(config)
    model.model.item_encoder.load_tables(tables)

Every item table is in token-id order and must have been made for the data's item tokenizer (its vocabulary
fingerprint is checked).
"""

import json
import logging
from pathlib import Path

import torch
from datasets import Dataset
from safetensors.torch import load_file

from data_preprocess.features import FEATURES_FOLDER

from .data_collator import USER_FEATURES

logger = logging.getLogger(__name__)

ALL_FEATURES = "all"
SEMANTIC_IDS_FEATURE = "semantic_ids"


def check_fingerprint(source: Path, recorded: str | None, fingerprint: str) -> None:
    """`ValueError` when `source` was made for another item vocabulary than the data's tokenizer."""
    if recorded is not None and recorded != fingerprint:
        raise ValueError(
            f"{source} was made for another item vocabulary (other items or another order) than the data's tokenizer: "
            "prepare it again from the same data folder."
        )


def read_schema(data_dir: str | Path) -> tuple[Path, dict]:
    """The `features/` folder of a data folder and its `schema.json`."""
    folder = Path(data_dir) / FEATURES_FOLDER
    if not (folder / "schema.json").is_file():
        raise FileNotFoundError(
            f"{folder}/schema.json not found: features need a data folder written by python -m data_preprocess with "
            "an item or user table (--item-table, --user-table) or embedding tables (--embedding); the embedded "
            "MovieLens-100K has its features by default (a folder prepared before hf-sasrec 0.2 has none: prepare "
            "it again)."
        )
    return folder, json.loads((folder / "schema.json").read_text(encoding="utf-8"))


def chosen_names(names: str, available: list[str], folder: Path, what: str) -> list[str]:
    """The names of `names` (comma-separated, or `"all"`), each one of `available`."""
    wanted = available if names == ALL_FEATURES else [name.strip() for name in names.split(",") if name.strip()]
    unknown = [name for name in wanted if name not in available]
    if unknown:
        raise ValueError(f"{what} {unknown} are not in {folder}; it has {available}.")
    return wanted


def table_feature(folder: Path, name: str, spec: dict, tensors: dict) -> tuple[dict, dict]:
    """The model spec and the values (`"<name>.<value>"` -> `[rows, ...]`) of a column of an item or user table.
    Numeric features are read as standardised values (their buckets are left out). The spec carries what encodes a
    raw value later (`hf_sasrec.feature_encoding`): the vocabulary of a categorical or multi-valued feature
    (`vocab`, index = value id), the mean and standard deviation of a numeric one."""
    stored = spec["tensors"]
    if spec["kind"] == "numeric":
        model_spec = {"name": name, "kind": "numeric", "mean": spec["mean"], "std": spec["std"]}
        return model_spec, {f"{name}.value": tensors[stored["value"]], f"{name}.missing": tensors[stored["missing"]]}
    ids = tensors[stored["ids"]]
    vocab = json.loads((folder / spec["vocab"]).read_text(encoding="utf-8"))
    model_spec = {"name": name, "kind": spec["kind"], "vocab_size": spec["vocab_size"], "vocab": vocab}
    if spec["kind"] == "multi":
        model_spec["max_values"] = int(ids.shape[1])
    return model_spec, {f"{name}.ids": ids}


def data_features(data_dir: str | Path, names: str, fingerprint: str) -> tuple[list[dict], dict[str, torch.Tensor]]:
    """The item features `names` (comma-separated, or `"all"`) of `data_dir/features/`, item table columns (see
    [`table_feature`]) and modality tables alike: their specs and their values for every token id."""
    folder, schema = read_schema(data_dir)
    items, embeddings = schema.get("items", {}), schema.get("embeddings", {})
    check_fingerprint(folder, items.get("vocabulary_fingerprint"), fingerprint)
    wanted = chosen_names(names, list(items.get("features", {})) + list(embeddings), folder, "item features")
    item_tensors = load_file(folder / items["file"]) if "file" in items else {}
    specs, tables = [], {}
    for name in wanted:
        if name in embeddings:
            modality = load_file(folder / embeddings[name]["file"])
            specs.append({"name": name, "kind": "embedding", "dim": int(modality["embedding"].shape[1])})
            tables |= {f"{name}.table": modality["embedding"], f"{name}.present": modality["present"]}
        else:
            spec, values = table_feature(folder, name, items["features"][name], item_tensors)
            specs.append(spec)
            tables |= values
    return specs, tables


def read_user_features(data_dir: str | Path, names: str) -> tuple[list[dict], dict[str, dict[str, list]]]:
    """The user features `names` (comma-separated, or `"all"`) of `data_dir/features/`: their specs and, for every
    user of the user table, their values (`user id -> {"<feature>.<value>": value}`)."""
    folder, schema = read_schema(data_dir)
    users = schema.get("users", {})
    wanted = chosen_names(names, list(users.get("features", {})), folder, "user features")
    user_tensors = load_file(folder / users["file"])
    user_ids = json.loads((folder / users["ids"]).read_text(encoding="utf-8"))
    specs, columns = [], {}
    for name in wanted:
        spec, values = table_feature(folder, name, users["features"][name], user_tensors)
        specs.append(spec)
        columns |= {key: value.tolist() for key, value in values.items()}
    values_by_user = {user: {key: column[row] for key, column in columns.items()} for row, user in enumerate(user_ids)}
    return specs, values_by_user


def attach_user_features(model, splits: dict[str, Dataset], values_by_user: dict[str, dict]) -> dict[str, Dataset]:
    """The `splits` with a `user_features` column for `model`'s user encoder: each row's user's values, or, for a
    user the table lacks (counted in the log), the values of a user whose every feature is missing."""
    missing = {name: value[0].tolist() for name, value in model.model.user_encoder.missing_values(1, "cpu").items()}
    attached = {}
    for name, split in splits.items():
        absent = sum(user not in values_by_user for user in split["user_id"])
        if absent:
            logger.warning(
                "%s: %d of %d users are not in the user table; their features are missing.", name, absent, len(split)
            )
        attached[name] = split.add_column(
            USER_FEATURES, [values_by_user.get(user, missing) for user in split["user_id"]]
        )
    return attached


def model_user_values(config, data_dir: str | Path) -> dict[str, dict]:
    """The values of the users of `data_dir` for the user features of a trained model's `config`, which must be
    encoded as in training (the same vocabularies and statistics)."""
    names = ",".join(spec["name"] for spec in config.user_features)
    specs, values_by_user = read_user_features(data_dir, names)
    if specs != config.user_features:
        raise ValueError(
            f"The user features of {data_dir} are encoded otherwise than the model's (other vocabularies or "
            "statistics): evaluate on the data folder the model was trained on."
        )
    return values_by_user


def semantic_id_features(folder: str | Path, fingerprint: str) -> tuple[list[dict], dict[str, torch.Tensor]]:
    """The codes of a `python -m hf_sasrec.semantic_ids` output folder as the `semantic_ids` feature: every level,
    the de-duplication level included."""
    folder = Path(folder)
    if not (folder / "codes.json").is_file():
        raise FileNotFoundError(f"{folder}/codes.json not found: write it with python -m hf_sasrec.semantic_ids")
    description = json.loads((folder / "codes.json").read_text(encoding="utf-8"))
    check_fingerprint(folder, description.get("vocabulary_fingerprint"), fingerprint)
    codes = load_file(folder / "codes.safetensors")["codes"]
    level_sizes = [int(size) for size in description["level_sizes"]]
    spec = {"name": SEMANTIC_IDS_FEATURE, "kind": "codes", "level_sizes": level_sizes}
    return [spec], {f"{SEMANTIC_IDS_FEATURE}.codes": codes}


def read_item_features(
    data_dir: str | Path, names: str | None, semantic_ids: str | None, fingerprint: str
) -> tuple[list[dict], dict[str, torch.Tensor]]:
    """The specs (for the config's `item_features`) and the value tables (for `ItemEncoder.load_tables`) of the
    features `names` of `data_dir` and the semantic ids of the folder `semantic_ids`; both empty when neither is
    asked for."""
    specs, tables = data_features(data_dir, names, fingerprint) if names else ([], {})
    if semantic_ids:
        code_specs, code_tables = semantic_id_features(semantic_ids, fingerprint)
        specs, tables = specs + code_specs, tables | code_tables
    return specs, tables


__all__ = ["attach_user_features", "model_user_values", "read_item_features", "read_user_features"]
