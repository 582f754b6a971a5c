"""Item and user side features and modality embedding tables (issue 13, point 1): every table format gives the same
tensors in token-id order, missing values are the missing id, rows of items not in the log are counted and dropped,
and every bad input is one clear error naming its file and line, or its table."""

import dataclasses
import json

import numpy as np
import pandas as pd
import pytest
from conftest import DATA_SHARED, data_write_movielens
from datasets import Dataset, load_from_disk
from test_light_imports import run_and_list_model_modules

import data_preprocess.__main__ as cli
from data_preprocess import prepare
from data_preprocess.embedding_tables import EmbeddingSource
from data_preprocess.errors import DataFormatError, PreprocessingError
from data_preprocess.feature_schema import MISSING_ID, PADDING_ID, UNKNOWN_ID, parse_feature_spec, parse_feature_specs
from data_preprocess.features import FeatureSources, load_features
from data_preprocess.text_embeddings import embed_items, save_embeddings

PROG = "python -m data_preprocess: error: "
DECLARED = parse_feature_specs("brand:categorical,tags:multi:|,price:numeric:4")


def item_rows() -> dict[str, dict]:
    """Items 1..24 of the log's 25 and one not in it ("999"): brand (5 missing), tags (7 none), price (9 missing)."""
    rows = {}
    for item in [*range(1, 25), 999]:
        tags = ["even" if item % 2 == 0 else "odd"] + (["big"] if item > 20 else [])
        rows[str(item)] = {"brand": f"b{item % 3}", "tags": tags, "price": float(item)}
    rows["5"]["brand"], rows["7"]["tags"], rows["9"]["price"] = None, [], None
    return rows


def write_table(folder, kind: str):
    """The same item table in format `kind`."""
    rows = item_rows()
    records = [{"item_id": key, **row} for key, row in rows.items()]
    if kind == "csv":
        lines = ["item_id,brand,tags,price"]
        for key, row in rows.items():
            price = "" if row["price"] is None else row["price"]
            lines.append(f"{key},{row['brand'] or ''},{'|'.join(row['tags'])},{price}")
        path = folder / "items.csv"
        path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    elif kind == "jsonl":
        path = folder / "items.jsonl"
        path.write_text("".join(json.dumps(record) + "\n" for record in records), encoding="utf-8")
    elif kind == "json":
        path = folder / "items.json"
        path.write_text(json.dumps(rows, indent=1), encoding="utf-8")
    elif kind == "parquet":
        path = folder / "items.parquet"
        pd.DataFrame.from_records(records).to_parquet(path)
    elif kind == "datasets":
        path = folder / "items_dataset"
        Dataset.from_list(records).save_to_disk(str(path))
    else:  # RecBole atomic
        lines = ["item_id:token\tbrand:token\ttags:token_seq\tprice:float"]
        for key, row in rows.items():
            price = "" if row["price"] is None else str(row["price"])
            lines.append(f"{key}\t{row['brand'] or ''}\t{' '.join(row['tags'])}\t{price}")
        path = folder / "items.item"
        path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


@pytest.fixture
def data_log(tmp_path):
    """A small ML-100K-style log: 30 users, items "1" to "25"."""
    return data_write_movielens(tmp_path / "ml") / "u.data"


def item2id(data_dir) -> dict[str, int]:
    return json.loads((data_dir / "tokenizer" / "item2id.json").read_text(encoding="utf-8"))


def stats_of(data_dir) -> dict:
    return json.loads((data_dir / "stats.json").read_text(encoding="utf-8"))


def test_item_table_csv_gives_features_in_token_id_order(data_log, tmp_path):
    out = tmp_path / "out"
    _, tokenizer = prepare(data_log, out, features=FeatureSources(write_table(tmp_path, "csv"), DECLARED))
    features, ids = load_features(out), item2id(out)
    schema = features.schema["items"]
    assert schema["num_rows"] == len(tokenizer) == 30 and schema["features"]["tags"]["max_values"] == 2
    brands, tags = features.vocabularies["items"]["brand"], features.vocabularies["items"]["tags"]
    assert brands[:3] == [None, None, None] and sorted(brands[3:]) == ["b0", "b1", "b2"]
    assert brands[features.items["brand"][ids["4"]]] == "b1"
    assert [tags[index] for index in features.items["tags"][ids["22"]]] == ["even", "big"]
    assert features.items["tags"][ids["3"]].tolist() == [tags.index("odd"), PADDING_ID]
    # Missing cells, the item without a row ("25") and the special tokens: the missing id, never a crash.
    for key in ("5", "25"):
        assert features.items["brand"][ids[key]] == MISSING_ID
    assert features.items["tags"][ids["7"]].tolist() == features.items["tags"][ids["25"]].tolist() == [MISSING_ID, 0]
    assert features.items["price.missing"][[ids["9"], ids["25"], 0, 4]].all()
    assert (features.items["brand"][:5] == MISSING_ID).all() and (features.items["tags"][:5, 0] == MISSING_ID).all()
    prices = np.array([item for item in range(1, 25) if item != 9], dtype=np.float64)
    price = features.schema["items"]["features"]["price"]
    assert price["mean"] == pytest.approx(prices.mean()) and price["std"] == pytest.approx(prices.std())
    assert features.items["price"][ids["12"]] == pytest.approx((12 - prices.mean()) / prices.std(), rel=1e-6)
    assert features.items["price"][ids["9"]] == 0.0
    buckets = features.items["price.bucket"]
    assert len(price["bucket_edges"]) == 3 and price["vocab_size"] == 7
    assert buckets[ids["1"]] == 3 and buckets[ids["24"]] == 6 and buckets[ids["9"]] == MISSING_ID
    stats = stats_of(out)["features"]["items"]
    assert stats["dropped"] == {"item_not_in_log": 1} and stats["rows"] == 25
    assert stats["features"]["brand"] == {
        "kind": "categorical",
        "vocab_size": 6,
        "coverage": 0.92,
        "missing": 2,
        "unknown": 0,
    }
    assert stats["features"]["tags"]["missing"] == 2 and stats["features"]["price"]["coverage"] == 0.92


@pytest.mark.parametrize("kind", ["jsonl", "json", "parquet", "datasets", "atomic"])
def test_every_table_format_gives_the_same_tensors(data_log, tmp_path, kind):
    reference, other = tmp_path / "csv", tmp_path / kind
    prepare(data_log, reference, features=FeatureSources(write_table(tmp_path, "csv"), DECLARED))
    prepare(data_log, other, features=FeatureSources(write_table(tmp_path, kind), DECLARED))
    expected, found = load_features(reference), load_features(other)
    assert found.items.keys() == expected.items.keys()
    for name, tensor in expected.items.items():
        np.testing.assert_array_equal(found.items[name], tensor, err_msg=name)
    assert found.vocabularies == expected.vocabularies
    assert stats_of(other)["features"]["items"]["dropped"] == {"item_not_in_log": 1}


def test_command_line_declarations(data_log, tmp_path):
    table, out = write_table(tmp_path, "csv"), tmp_path / "out"
    declared = "brand:categorical,tags:multi:|,price:numeric:4"
    cli.main(["--input", str(data_log), "--output", str(out), "--item-table", str(table), "--item-features", declared])
    features = load_features(out)
    assert list(features.schema["items"]["features"]) == ["brand", "tags", "price"]
    assert features.schema["items"]["features"]["tags"]["max_values"] == 2
    assert stats_of(out)["args"]["features"]["item_features"] == declared.split(",")
    cli.main(["--input", str(data_log), "--output", str(out)])
    assert not (out / "features").exists() and stats_of(out)["args"]["features"] is None


def test_undeclared_columns_are_inferred(data_log, tmp_path):
    records = [
        {"item_id": str(item), "brand": f"b{item % 2}", "tags": ["x", "y"][: item % 3], "price": item * 1.5}
        for item in range(1, 26)
    ]
    for record in records:
        record["title"] = f"Film {record['item_id']}"  # all different: only repeats the id, so left out
    path = tmp_path / "items.jsonl"
    path.write_text("".join(json.dumps(record) + "\n" for record in records), encoding="utf-8")
    prepare(data_log, tmp_path / "out", features=FeatureSources(item_table=path))
    kinds = {name: spec["kind"] for name, spec in load_features(tmp_path / "out").schema["items"]["features"].items()}
    assert kinds == {"brand": "categorical", "tags": "multi", "price": "numeric"}
    csv = tmp_path / "items.csv"
    csv.write_text("item_id,year,genre\n1,1995,a\n2,1996,a\n3,,b\n", encoding="utf-8")
    prepare(data_log, tmp_path / "csv", features=FeatureSources(item_table=csv))
    kinds = {name: spec["kind"] for name, spec in load_features(tmp_path / "csv").schema["items"]["features"].items()}
    assert kinds == {"year": "numeric", "genre": "categorical"}


def test_rare_values_are_unknown_and_listed_values_missing(data_log, tmp_path):
    path = tmp_path / "items.csv"
    brands = {1: "rare", 2: "NA", 3: "n/a"}
    lines = ["item_id,brand"] + [f"{item},{brands.get(item, 'common')}" for item in range(1, 26)]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    sources = FeatureSources(path, parse_feature_specs("brand:categorical"), missing_values=frozenset({"NA", "n/a"}))
    prepare(data_log, tmp_path / "out", features=sources)
    features, ids = load_features(tmp_path / "out"), item2id(tmp_path / "out")
    assert features.vocabularies["items"]["brand"] == [None, None, None, "common", "rare"]
    stats = features.stats["items"]["features"]["brand"]
    assert (stats["missing"], stats["unknown"]) == (2, 0)
    prepare(data_log, tmp_path / "min2", features=dataclasses.replace(sources, min_count=2))
    features = load_features(tmp_path / "min2")
    assert features.vocabularies["items"]["brand"] == [None, None, None, "common"]
    assert features.items["brand"][ids["1"]] == UNKNOWN_ID and features.items["brand"][ids["2"]] == MISSING_ID
    stats = features.stats["items"]["features"]["brand"]
    assert (stats["missing"], stats["unknown"]) == (2, 1)


def test_user_table_rows_follow_the_splits_users(data_log, tmp_path):
    path = tmp_path / "users.csv"
    lines = ["user_id,age,gender"] + [f"{user},{10 + user},{'MF'[user % 2]}" for user in range(1, 30)]
    path.write_text("\n".join([*lines, "999,40,F"]) + "\n", encoding="utf-8")  # user 30 has no row, 999 is unknown
    specs = parse_feature_specs("age:numeric:4,gender:categorical")
    splits, _ = prepare(data_log, tmp_path / "out", features=FeatureSources(user_table=path, user_features=specs))
    features = load_features(tmp_path / "out")
    assert features.user_ids == splits["train"]["user_id"] and len(features.user_ids) == 30
    row = features.user_ids.index("30")
    assert features.users["age.missing"][row] and features.users["gender"][row] == MISSING_ID
    assert features.users["age.bucket"][row] == MISSING_ID
    genders = features.vocabularies["users"]["gender"]
    assert genders[features.users["gender"][features.user_ids.index("3")]] == "F"
    assert features.schema["users"]["num_rows"] == 30 and "file" not in features.schema["items"]
    assert features.stats["users"]["dropped"] == {"user_not_in_log": 1}


def write_vectors(folder, kind: str, ids: list[str], vectors: np.ndarray) -> str:
    """An embedding table of `kind`, as the `--embedding` value."""
    if kind == "npy-txt":
        np.save(folder / "img.npy", vectors)
        (folder / "img_ids.txt").write_text("\n".join(ids) + "\n", encoding="utf-8")
        return f"img={folder / 'img.npy'}:{folder / 'img_ids.txt'}"
    if kind == "npy-json":
        np.save(folder / "img.npy", np.vstack([np.zeros((1, vectors.shape[1])), vectors]))
        (folder / "img_ids.json").write_text(json.dumps([None, *ids]), encoding="utf-8")
        return f"img={folder / 'img.npy'}:{folder / 'img_ids.json'}"
    table = pd.DataFrame({"item_id": ids, "vector": list(vectors)})
    if kind == "parquet":
        table.to_parquet(folder / "img.parquet")
        return f"img={folder / 'img.parquet'}"
    Dataset.from_pandas(table).save_to_disk(str(folder / "img_dataset"))
    return f"img={folder / 'img_dataset'}:vector"


@pytest.mark.parametrize("kind", ["npy-txt", "npy-json", "parquet", "datasets"])
def test_embedding_tables_are_aligned_by_raw_item_id(data_log, tmp_path, kind):
    ids = ["999", *[str(item) for item in range(24, 0, -1)]]  # reversed, without "25", one item not in the log
    vectors = np.random.default_rng(0).normal(size=(len(ids), 3)).astype(np.float32)
    source = EmbeddingSource.parse(write_vectors(tmp_path, kind, ids, vectors))
    _, tokenizer = prepare(data_log, tmp_path / "out", features=FeatureSources(embeddings=(source,)))
    features, token_ids = load_features(tmp_path / "out"), item2id(tmp_path / "out")
    table = features.embeddings["img"]
    assert table["embedding"].shape == (len(tokenizer), 3) and table["embedding"].dtype == np.float32
    np.testing.assert_array_equal(table["embedding"][token_ids["7"]], vectors[ids.index("7")])
    assert not table["present"][:5].any() and not table["present"][token_ids["25"]]
    assert not table["embedding"][token_ids["25"]].any() and table["present"].sum() == 24
    assert features.schema["embeddings"]["img"]["dim"] == 3
    stats = features.stats["embeddings"]["img"]
    assert stats["coverage"] == 0.96 and stats["missing"] == 1 and stats["dropped"]["item_not_in_log"] == 1


def test_text_embeddings_of_a_dataset_folder_are_a_modality(data_log, tmp_path):
    """`text_embeddings` writes one row per token id into the dataset folder; its `id2item.json` gives their
    items, so the table stays right when a new run numbers the items differently."""
    out = tmp_path / "ml-out"
    prepare(data_log, out)
    matrix = embed_items(out, lambda texts: np.array([[len(text), text.count(" ")] for text in texts]))
    save_embeddings(matrix, out / "item_text.npy")
    before = item2id(out)
    cli.main(
        [
            "--input",
            str(data_log),
            "--output",
            str(out),
            "--min-rating",
            "3",
            "--embedding",
            f"text={out}/item_text.npy",
        ]
    )
    after, table = item2id(out), load_features(out).embeddings["text"]
    assert after != before  # the items numbered anew
    for key in after:
        np.testing.assert_array_equal(table["embedding"][after[key]], matrix[before[key]])
    assert table["present"][5:].all() and (out / "item_text.npy").is_file()


def test_movielens_100k_default_features(tmp_path):
    pytest.importorskip("recbole", reason="the embedded MovieLens-100K ships in the recbole wheel")
    out = tmp_path / "ml-100k"
    cli.main(["--output", str(out)])
    features, ids = load_features(out), item2id(out)
    genres, years = features.vocabularies["items"]["genres"], features.vocabularies["items"]["year"]
    assert [genres[index] for index in features.items["genres"][ids["1"]] if index] == [
        "Animation",
        "Children's",
        "Comedy",
    ]  # Toy Story
    assert years[features.items["year"][ids["1"]]] == "1995" and len(genres) == 3 + 18
    assert features.items["genres"][ids["267"]][0] == features.items["year"][ids["267"]] == MISSING_ID  # "unknown"
    users = features.schema["users"]["features"]
    assert users["age"]["bucket_edges"] == [18, 25, 35, 45, 50, 56] and users["age"]["vocab_size"] == 10
    assert len(features.user_ids) == 943 and features.user_ids == load_from_disk(out)["train"]["user_id"]
    occupations = features.vocabularies["users"]["occupation"]
    assert occupations[features.users["occupation"][features.user_ids.index("1")]] == "technician"
    stats = features.stats
    assert stats["items"]["features"]["genres"]["missing"] == 2 and stats["users"]["features"]["age"]["coverage"] == 1
    cli.main(["--output", str(out), "--feature-preset", "none"])
    assert not (out / "features").exists()  # not carried over from the previous output
    assert stats_of(out)["args"]["features"] is None


@pytest.mark.skipif(not (DATA_SHARED / "ml-100k" / "u.user").is_file(), reason="no ../shared/data/ml-100k")
def test_grouplens_files_give_the_embedded_features(tmp_path):
    """GroupLens' `u.item`/`u.user` and RecBole's `ml-100k.item`/`.user` are two sources of the same features."""
    pytest.importorskip("recbole", reason="the embedded MovieLens-100K ships in the recbole wheel")
    cli.main(["--output", str(tmp_path / "ml-100k")])
    argv = ["--input", str(DATA_SHARED / "ml-100k"), "--output", str(tmp_path / "grouplens")]
    cli.main([*argv, "--feature-preset", "ml-100k"])
    embedded, grouplens = load_features(tmp_path / "ml-100k"), load_features(tmp_path / "grouplens")
    assert embedded.user_ids == grouplens.user_ids and embedded.users.keys() == grouplens.users.keys()
    for name, tensor in embedded.users.items():
        np.testing.assert_array_equal(grouplens.users[name], tensor, err_msg=name)
    np.testing.assert_array_equal(grouplens.items["genres"], embedded.items["genres"])

    def years(features):
        vocabulary = features.vocabularies["items"]["year"]
        return [vocabulary[index] for index in features.items["year"]]

    differ = [
        (token, a, b) for token, (a, b) in enumerate(zip(years(embedded), years(grouplens), strict=True)) if a != b
    ]
    item = item2id(tmp_path / "grouplens")["1412"]  # "Land Before Time III (1995) (V)": RecBole took "V" for its year
    assert differ == [(item, "V", "1995")]


MALFORMED = [
    ("items.csv", "item_id,brand\n1,a\n2,b,c\n", "brand:categorical", r"items\.csv, line 3: expected 2 fields"),
    (
        "items.csv",
        "item_id,price\n1,3.5\n\n2,cheap\n",
        "price:numeric",
        r"items\.csv, line 4: column 'price': value 'cheap' is not a number",
    ),
    ("items.jsonl", '{"item_id": 1, "brand": "a"}\n{"item_id": 2,\n', "brand:categorical", r"items\.jsonl, line 2"),
    (
        "items.jsonl",
        '{"item_id": 1, "brand": "a"}\n{"item_id": 2, "brand": ["a", "b"]}\n',
        "brand:categorical",
        r"items\.jsonl, line 2: column 'brand': expected one value, found a list",
    ),
    (
        "items.json",
        '{\n "1": {"brand": "a"},\n "2": ["a"]\n}\n',
        "brand:categorical",
        r"items\.json, line 3: the value of '2' is not an object",
    ),
    (
        "items.json",
        '{\n "1": {"brand": "a"}\n "2": {}\n}\n',
        "brand:categorical",
        r"items\.json, line 3: expected ','",
    ),
    ("items.item", "item_id:token\tbrand:token\n1\ta\n2\n", "brand:categorical", r"items\.item, line 3: expected 2"),
    (
        "items.item",
        "item_id:token\tprice:float\n1\t2.5\n2\tx\n",
        "price:numeric",
        r"items\.item, line 3: column 'price': value 'x' is not a number",
    ),
    (
        "u.item",
        "1|Heat (1995)|01-Jan-1995||http://x|" + "|".join("0" * 19) + "\n2|Film|\n",
        "year=release_year:categorical",
        r"u\.item, line 2: expected 24 '\|'-separated fields, found 3",
    ),
    ("items.json", '[{"item_id": "1"}]', "brand:categorical", r"items\.json, line 1: expected '\{'"),
    (
        "items.csv",
        "item_id,brand\n1,a\n2,b\n1,c\n",
        "brand:categorical",
        r"items\.csv, line 4: a second row for item_id '1' \(first on line 2\)",
    ),
    ("items.csv", "item_id,price\n1,inf\n", "price:numeric", r"items\.csv, line 2: column 'price': .* not finite"),
]


@pytest.mark.parametrize(("name", "text", "declared", "message"), MALFORMED)
def test_a_malformed_row_names_the_file_and_the_line(data_log, tmp_path, name, text, declared, message):
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    sources = FeatureSources(item_table=path, item_features=parse_feature_specs(declared))
    with pytest.raises(DataFormatError, match=message):
        prepare(data_log, tmp_path / "out", features=sources)
    assert not (tmp_path / "out").exists()


def test_malformed_rows_are_counted_with_on_error_skip(data_log, tmp_path):
    path = tmp_path / "items.csv"
    path.write_text("item_id,price\n1,3\n2,cheap\n3,4\n1,5\n", encoding="utf-8")
    sources = FeatureSources(item_table=path, item_features=parse_feature_specs("price:numeric"))
    prepare(data_log, tmp_path / "out", features=sources, on_error="skip")
    features, ids = load_features(tmp_path / "out"), item2id(tmp_path / "out")
    assert features.stats["items"]["dropped"] == {"duplicate_id": 1}
    assert features.stats["items"]["features"]["price"]["malformed"] == 1
    assert features.items["price.missing"][ids["2"]] and not features.items["price.missing"][ids["3"]]


def test_a_parquet_row_is_named_by_its_row_number(data_log, tmp_path):
    path = tmp_path / "items.parquet"
    pd.DataFrame({"item_id": ["1", "2"], "price": [1.0, float("inf")]}).to_parquet(path)
    sources = FeatureSources(item_table=path, item_features=parse_feature_specs("price:numeric"))
    with pytest.raises(DataFormatError, match=r"items\.parquet, row 2: column 'price': value inf is not finite"):
        prepare(data_log, tmp_path / "out", features=sources)


def test_a_table_matching_no_item_is_refused(data_log, tmp_path):
    path = tmp_path / "items.csv"
    path.write_text("item_id,brand\nA1,a\nA2,a\n", encoding="utf-8")
    with pytest.raises(
        PreprocessingError, match=r"none of its 2 item_id values is one of the log's items \(e\.g\. 'A1'\)"
    ):
        prepare(data_log, tmp_path / "out", features=FeatureSources(item_table=path))
    path.write_text("item_id,title\n1,Heat\n2,Ran\n", encoding="utf-8")
    with pytest.raises(PreprocessingError, match=r"items\.csv: no feature column to use \(item_id, title\); declare"):
        prepare(data_log, tmp_path / "out", features=FeatureSources(item_table=path))
    path.write_text("item_id,brand\n", encoding="utf-8")
    with pytest.raises(PreprocessingError, match=r"items\.csv: no row to read"):
        prepare(data_log, tmp_path / "out", features=FeatureSources(item_table=path))
    path.write_text("sku,brand\n1,a\n", encoding="utf-8")
    with pytest.raises(DataFormatError, match=r"items\.csv, line 1: no column 'item_id' \(columns: sku, brand\)"):
        prepare(data_log, tmp_path / "out", features=FeatureSources(item_table=path))


def bad_table(folder, case: str) -> str:
    """An `--embedding` value for a table with one defect."""
    vectors = np.ones((3, 2), dtype=np.float32)
    ids = ["1", "2", "3"]
    if case == "row count":
        ids = ids[:2]
    elif case == "duplicate":
        ids = ["2", "1", "2"]
    elif case == "nan":
        vectors[1, 0] = np.nan
    if case == "widths":
        pd.DataFrame({"item_id": ids, "embedding": [[1.0, 2.0], [1.0], [3.0, 4.0]]}).to_parquet(folder / "t.parquet")
        return f"img={folder / 't.parquet'}"
    np.save(folder / "t.npy", vectors)
    if case == "no ids":
        return f"img={folder / 't.npy'}"
    (folder / "ids.txt").write_text("\n".join(ids) + "\n", encoding="utf-8")
    return f"img={folder / 't.npy'}:{folder / 'ids.txt'}"


@pytest.mark.parametrize(
    ("case", "message"),
    [
        ("row count", r"3 rows, but 2 item ids in .*ids\.txt: the wrong row count"),
        ("duplicate", r"item '2' on row 1 and again on row 3: a duplicate id"),
        ("nan", r"row 2 \(item '2'\) holds NaN or infinity"),
        ("widths", r"row 2 has 1 values, row 1 has 2: vectors of mixed widths"),
        ("no ids", r"no item-id list: give one"),
    ],
)
def test_a_bad_embedding_table_is_refused_naming_it(data_log, tmp_path, case, message):
    out = tmp_path / "out"
    prepare(data_log, out)
    before = (out / "stats.json").read_text()
    argv = ["--input", str(data_log), "--output", str(out), "--embedding", bad_table(tmp_path, case)]
    with pytest.raises(SystemExit) as error:
        cli.main(argv)
    assert str(error.value.code).startswith(f"{PROG}embedding table 'img' (")
    with pytest.raises(PreprocessingError, match=message):
        prepare(data_log, out, features=FeatureSources(embeddings=(EmbeddingSource.parse(argv[-1]),)))
    assert (out / "stats.json").read_text() == before  # the previous output is left whole


def test_an_id_list_with_a_blank_line_names_it(data_log, tmp_path):
    np.save(tmp_path / "t.npy", np.ones((2, 2), dtype=np.float32))
    (tmp_path / "ids.txt").write_text("1\n\n", encoding="utf-8")
    source = EmbeddingSource.parse(f"img={tmp_path / 't.npy'}:{tmp_path / 'ids.txt'}")
    with pytest.raises(DataFormatError, match=r"ids\.txt, line 2: an empty item id"):
        prepare(data_log, tmp_path / "out", features=FeatureSources(embeddings=(source,)))


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("genres:list", r"feature 'genres': unknown kind 'list'"),
        ("genres", r"expected NAME\[=COLUMN\]:KIND\[:OPTION\]"),
        ("a:categorical,a:numeric", r"feature\(s\) \['a'\] declared more than once"),
        ("age:numeric:many", r"neither a bucket count \(8\) nor edges"),
        ("age:numeric:30/20", r"bucket edges must increase"),
        ("age:numeric:1", r"at least 2 buckets"),
        ("year:categorical:x", r"a categorical feature takes no option"),
        ("price.usd:numeric", r"feature name 'price\.usd': use letters, digits"),
    ],
)
def test_a_bad_declaration_is_refused(text, message):
    with pytest.raises(PreprocessingError, match=message):
        parse_feature_specs(text)


@pytest.mark.parametrize("text", ["genres=class:multi:space", "tags:multi:;", "age:numeric:18/25.5", "p:numeric:8"])
def test_a_declaration_reads_back_as_written(text):
    assert parse_feature_spec(parse_feature_spec(text).declaration) == parse_feature_spec(text)


def test_features_without_a_table_and_clashing_names_are_refused(tmp_path):
    with pytest.raises(PreprocessingError, match="item features are declared, but no item table is given"):
        FeatureSources(item_features=parse_feature_specs("a:categorical"))
    source = EmbeddingSource.parse(f"img={tmp_path / 'a.npy'}")
    with pytest.raises(PreprocessingError, match="two embedding tables share a name"):
        FeatureSources(embeddings=(source, source))
    with pytest.raises(PreprocessingError, match=r"--embedding 'img': expected NAME=PATH"):
        EmbeddingSource.parse("img")


def test_features_load_no_model_code(data_log, tmp_path):
    table = write_table(tmp_path, "csv")
    embedding = write_vectors(tmp_path, "npy-txt", ["1", "2"], np.ones((2, 4), dtype=np.float32))
    arguments = ("--input", str(data_log), "--output", str(tmp_path / "out"), "--item-table", str(table))
    assert run_and_list_model_modules("data_preprocess", *arguments, "--embedding", embedding) == []
    assert (tmp_path / "out" / "features" / "embeddings" / "img.safetensors").is_file()
