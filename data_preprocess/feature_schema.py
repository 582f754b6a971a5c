"""Item and user side features: how they are declared, and how they are laid out in the processed folder.

`python -m data_preprocess` writes, next to `tokenizer/`, a `features/` folder (format version 1) that a model loads
without this package (`json` and `safetensors` suffice):

    features/
      schema.json                    what everything below is (see `build_schema`)
      items.safetensors              item feature tensors, row t = token id t of the item tokenizer
      users.safetensors              user feature tensors, row r = the user `user_ids.json[r]`
      user_ids.json                  the raw user ids in row order: every user left after filtering, in natural key
                                     order (the `train` split's order under leave-one-out; a time split's splits
                                     hold some of them)
      vocab/items/<feature>.json     a categorical vocabulary: a JSON list, index = id, `null` at the reserved ids
      vocab/users/<feature>.json
      embeddings/<modality>.safetensors   `embedding` float32 [vocab_size, dim] and `present` bool [vocab_size]

Every categorical vocabulary (and the buckets of a numeric feature) reserves three ids: `PADDING_ID` (0) pads
multi-valued rows, `MISSING_ID` (1) is "no value" (an item absent from the item table, an empty cell, a value in
`--missing-values`, and every special-token row of the item tokenizer), `UNKNOWN_ID` (2) is a value outside the
vocabulary (seen in fewer than `min_count` entities, or new at serving time). Values take the ids from
`FIRST_VALUE_ID` (3) on, by descending frequency (ties: numeric values by value, then the others by string).

Tensors, per feature kind (`rows` = `vocab_size` for items, the number of users for users):

- `categorical`: `<name>` int64 [rows], the value's id;
- `multi`: `<name>` int64 [rows, max_values], the values' ids in the source's order, then `PADDING_ID`; a row without
  a value is `[MISSING_ID, 0, ...]`, so a bag mean over the non-zero ids always has one;
- `numeric`: `<name>` float32 [rows], `(x - mean) / std` (0.0 where missing), and `<name>.missing` bool [rows]; with
  buckets also `<name>.bucket` int64 [rows]: `FIRST_VALUE_ID + searchsorted(bucket_edges, x, side="right")`,
  `MISSING_ID` where missing.

A modality table holds each item's vector (float32, as given) and zeros with `present = False` for an item without
one and for the special tokens. `schema.json`:

    {"format": "hf-sasrec-features", "version": 1,
     "reserved_ids": {"padding": 0, "missing": 1, "unknown": 2}, "first_value_id": 3,
     "items": {"num_rows": 1687, "num_special_tokens": 5, "vocabulary_fingerprint": "<sha256 of the tokenizer>",
               "file": "items.safetensors",
               "features": {
                 "genres": {"kind": "multi", "column": "class", "vocab_size": 21, "max_values": 6,
                            "vocab": "vocab/items/genres.json", "tensors": {"ids": "genres"}},
                 "year": {"kind": "categorical", "column": "release_year", "vocab_size": 75,
                          "vocab": "vocab/items/year.json", "tensors": {"ids": "year"}}}},
     "users": {"num_rows": 943, "ids": "user_ids.json", "file": "users.safetensors",
               "features": {
                 "age": {"kind": "numeric", "column": "age", "mean": 34.05, "std": 12.19,
                         "bucket_edges": [18.0, 25.0, 35.0, 45.0, 50.0, 56.0], "vocab_size": 10,
                         "tensors": {"value": "age", "missing": "age.missing", "bucket": "age.bucket"}}, ...}},
     "embeddings": {"text": {"file": "embeddings/text.safetensors", "dim": 384,
                             "source": "text=data/ml-100k/item_text.npy"}}}

`items.features` is `{}` and `items.file` absent without an item table; `users` is there only with a user table;
`embeddings` is `{}` without modalities. `vocab_size` counts the reserved ids (an embedding table of that many rows
takes every id); a numeric feature has one (and `bucket_edges`) only where it is bucketed. `vocabulary_fingerprint`
is `data_preprocess.item_tokenizer.vocabulary_fingerprint` of the tokenizer the rows follow. Coverage and the counts
of missing and unknown values, per feature, are in the folder's `stats.json` under `features`.

Features are declared as `NAME[=COLUMN]:KIND[:OPTION]`, comma-separated (`parse_feature_specs`): `genres:multi:|`
(a string split on `|`; a list value needs no separator), `year=release_year:categorical`, `price:numeric`,
`age:numeric:8` (standardised, plus 8 quantile buckets) or `age:numeric:18/25/35` (buckets at those edges).
"""

from __future__ import annotations

import itertools
import re
from dataclasses import dataclass

from .errors import PreprocessingError

FORMAT_NAME = "hf-sasrec-features"
FORMAT_VERSION = 1
PADDING_ID, MISSING_ID, UNKNOWN_ID = 0, 1, 2
FIRST_VALUE_ID = 3
KINDS = ("categorical", "multi", "numeric")
# Separators that cannot be written literally inside a comma-separated list of declarations.
NAMED_SEPARATORS = {"comma": ",", "space": " ", "tab": "\t"}
DEFAULT_SEPARATOR = "|"
# Feature and modality names become tensor keys and file names.
_NAME = re.compile(r"[A-Za-z0-9_-]+")


@dataclass(frozen=True)
class FeatureSpec:
    """One feature read from a column of an item or user table.

    `separator` splits a string value of a `multi` feature (a list value is used as is); `buckets` (a count of
    quantile buckets) or `bucket_edges` add a bucketed id to a `numeric` feature.
    """

    name: str
    kind: str
    column: str
    separator: str = DEFAULT_SEPARATOR
    buckets: int | None = None
    bucket_edges: tuple[float, ...] | None = None

    @property
    def declaration(self) -> str:
        """The declaration `NAME[=COLUMN]:KIND[:OPTION]` that `parse_feature_spec` reads back as this spec."""
        text = f"{self.name}:{self.kind}" if self.column == self.name else f"{self.name}={self.column}:{self.kind}"
        if self.kind == "multi":
            names = {separator: name for name, separator in NAMED_SEPARATORS.items()}
            return f"{text}:{names.get(self.separator, self.separator)}"
        if self.bucket_edges is not None:
            return f"{text}:{'/'.join(format(edge, '.15g') for edge in self.bucket_edges)}"
        return text if self.buckets is None else f"{text}:{self.buckets}"

    def __post_init__(self) -> None:
        check_name(self.name, "feature")
        if self.kind not in KINDS:
            raise PreprocessingError(f"feature {self.name!r}: unknown kind {self.kind!r}; expected one of {KINDS}")
        if self.buckets is not None and self.buckets < 2:
            raise PreprocessingError(f"feature {self.name!r}: at least 2 buckets, got {self.buckets}")
        edges = self.bucket_edges
        if edges is not None and (not edges or any(low >= high for low, high in itertools.pairwise(edges))):
            raise PreprocessingError(f"feature {self.name!r}: bucket edges must increase, got {list(edges)}")


def check_name(name: str, what: str) -> str:
    """`name` if it can be a tensor key and a file name (letters, digits, `_` and `-`), else `PreprocessingError`."""
    if not _NAME.fullmatch(name):
        raise PreprocessingError(f"{what} name {name!r}: use letters, digits, '_' and '-' only")
    return name


def _parse_numeric_option(name: str, option: str) -> dict:
    try:
        if "/" in option:
            return {"bucket_edges": tuple(float(edge) for edge in option.split("/"))}
        return {"buckets": int(option)}
    except ValueError:
        raise PreprocessingError(
            f"feature {name!r}: numeric option {option!r} is neither a bucket count (8) nor edges (18/25/35)"
        ) from None


def parse_feature_spec(text: str) -> FeatureSpec:
    """One `NAME[=COLUMN]:KIND[:OPTION]` declaration (see the module docstring)."""
    fields = text.strip().split(":", 2)
    if len(fields) < 2:
        raise PreprocessingError(f"feature declaration {text!r}: expected NAME[=COLUMN]:KIND[:OPTION]")
    name, _, column = fields[0].partition("=")
    kind, option = fields[1], fields[2] if len(fields) == 3 else ""
    options: dict = {}
    if option and kind == "multi":
        options["separator"] = NAMED_SEPARATORS.get(option, option)
    elif option and kind == "numeric":
        options = _parse_numeric_option(name, option)
    elif option:
        raise PreprocessingError(f"feature declaration {text!r}: a {kind} feature takes no option")
    return FeatureSpec(name=name, kind=kind, column=column or name, **options)


def parse_feature_specs(text: str) -> tuple[FeatureSpec, ...]:
    """Comma-separated declarations, e.g. `"genres:multi:|,year=release_year:categorical,price:numeric:8"`."""
    specs = tuple(parse_feature_spec(part) for part in text.split(",") if part.strip())
    names = [spec.name for spec in specs]
    repeated = sorted({name for name in names if names.count(name) > 1})
    if repeated:
        raise PreprocessingError(f"feature(s) {repeated} declared more than once in {text!r}")
    return specs


def feature_schema(spec: FeatureSpec, entity: str, **details) -> dict:
    """A feature's entry in `schema.json`: its kind, source column, tensor names, and `details` (vocab_size, ...)."""
    if spec.kind == "numeric":
        tensors = {"value": spec.name, "missing": f"{spec.name}.missing"}
        if "bucket_edges" in details:
            tensors["bucket"] = f"{spec.name}.bucket"
    else:
        tensors = {"ids": spec.name}
        details["vocab"] = f"vocab/{entity}/{spec.name}.json"
    return {"kind": spec.kind, "column": spec.column, **details, "tensors": tensors}


def build_schema(items: dict, users: dict | None, embeddings: dict) -> dict:
    """The whole `schema.json` from its `items`, `users` (or `None`) and `embeddings` sections."""
    schema = {
        "format": FORMAT_NAME,
        "version": FORMAT_VERSION,
        "reserved_ids": {"padding": PADDING_ID, "missing": MISSING_ID, "unknown": UNKNOWN_ID},
        "first_value_id": FIRST_VALUE_ID,
        "items": items,
    }
    if users is not None:
        schema["users"] = users
    schema["embeddings"] = embeddings
    return schema


__all__ = ["FeatureSpec", "parse_feature_specs"]
