"""What a training run gives the item encoder: the `item_features` of the config and the tables of their values,
read from a data folder's `features/` (written by `python -m data_preprocess`) and a semantic-ids folder (written by
`python -m hf_sasrec.semantic_ids`).

    specs, tables = read_item_features("data/ml-100k", "genres,year", semantic_ids=None, fingerprint=...)
    config = AutoConfig.for_model("sasrec", item_features=specs, ...)
    model = AutoModelForCausalLM.from_config(config)
    model.model.item_encoder.load_tables(tables)

Every table is in token-id order and must have been made for the data's item tokenizer (its vocabulary fingerprint
is checked).
"""

import json
from pathlib import Path

import torch
from safetensors.torch import load_file

from data_preprocess.features import FEATURES_FOLDER

ALL_FEATURES = "all"
SEMANTIC_IDS_FEATURE = "semantic_ids"


def check_fingerprint(source: Path, recorded: str | None, fingerprint: str) -> None:
    """`ValueError` when `source` was made for another item vocabulary than the data's tokenizer."""
    if recorded is not None and recorded != fingerprint:
        raise ValueError(
            f"{source} was made for another item vocabulary (other items or another order) than the data's tokenizer: "
            "prepare it again from the same data folder."
        )


def data_features(data_dir: str | Path, names: str, fingerprint: str) -> tuple[list[dict], dict[str, torch.Tensor]]:
    """The item features `names` (comma-separated, or `"all"`) of `data_dir/features/`: item table columns and
    modality tables alike. Numeric features are read as standardised values (their buckets are left out). The specs
    carry what encodes a new item's raw values (`Recommender.add_items`): the vocabulary of a categorical or
    multi-valued feature (`vocab`, index = value id), the mean and standard deviation of a numeric one."""
    folder = Path(data_dir) / FEATURES_FOLDER
    if not (folder / "schema.json").is_file():
        raise FileNotFoundError(
            f"{folder}/schema.json not found: features need a data folder written by python -m data_preprocess with "
            "an item table (--item-table) or embedding tables (--embedding)."
        )
    schema = json.loads((folder / "schema.json").read_text(encoding="utf-8"))
    items, embeddings = schema.get("items", {}), schema.get("embeddings", {})
    check_fingerprint(folder, items.get("vocabulary_fingerprint"), fingerprint)
    available = list(items.get("features", {})) + list(embeddings)
    wanted = available if names == ALL_FEATURES else [name.strip() for name in names.split(",") if name.strip()]
    unknown = [name for name in wanted if name not in available]
    if unknown:
        raise ValueError(f"features {unknown} are not in {folder}; it has {available}.")
    item_tensors = load_file(folder / items["file"]) if "file" in items else {}
    specs, tables = [], {}
    for name in wanted:
        if name in embeddings:
            modality = load_file(folder / embeddings[name]["file"])
            specs.append({"name": name, "kind": "embedding", "dim": int(modality["embedding"].shape[1])})
            tables |= {f"{name}.table": modality["embedding"], f"{name}.present": modality["present"]}
            continue
        spec = items["features"][name]
        tensors = spec["tensors"]
        if spec["kind"] == "numeric":
            specs.append({"name": name, "kind": "numeric", "mean": spec["mean"], "std": spec["std"]})
            tables[f"{name}.value"] = item_tensors[tensors["value"]]
            tables[f"{name}.missing"] = item_tensors[tensors["missing"]]
        else:
            ids = item_tensors[tensors["ids"]]
            vocab = json.loads((folder / spec["vocab"]).read_text(encoding="utf-8"))
            specs.append(
                {"name": name, "kind": spec["kind"], "vocab_size": spec["vocab_size"], "vocab": vocab}
                | ({"max_values": int(ids.shape[1])} if spec["kind"] == "multi" else {})
            )
            tables[f"{name}.ids"] = ids
    return specs, tables


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


__all__ = ["read_item_features"]
