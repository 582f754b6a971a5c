"""Readers: every input format, malformed lines (file and line named), dropped rows counted, unicode."""

import json

import pandas as pd
import pytest

from data_preprocess import Columns, DataFormatError
from data_preprocess.formats import detect_format, read_interactions, resolve_input
from data_preprocess.item_info import read_item_info
from data_preprocess.tabular import read_history_csv, read_table
from data_preprocess.text_formats import read_atomic, read_rating_lines, read_sasrec, read_user_lines


def write(path, text, encoding="utf-8"):
    path.write_bytes(text.encode(encoding))
    return path


def rows(log):
    return list(zip(log.frame["user"], log.frame["item"], log.frame["timestamp"], strict=True))


def assert_error_at(error_info, path, line, unit="line"):
    assert error_info.value.path == str(path) and error_info.value.line == line
    assert f"{path}, {unit} {line}" in str(error_info.value)


def test_u_data_reads_ratings_and_times(tmp_path):
    log = read_rating_lines(write(tmp_path / "u.data", "1\t10\t4\t100\n2\t20\t1\t50\n"), None)
    assert rows(log) == [("1", "10", 100), ("2", "20", 50)]
    assert log.frame["rating"].tolist() == [4.0, 1.0] and log.has_timestamps and log.has_ratings


@pytest.mark.parametrize(
    ("text", "line", "reason"),
    [
        ("1\t10\t4\t100\n\n1\t11\t4\n", 3, "expected 4 fields"),
        ("1\t10\t4\t100\n1\t11\tfive\t100\n", 2, "rating 'five' is not a number"),
        ("1\t10\t4\t100\n1\t11\t4\tyesterday\n", 2, "timestamp 'yesterday'"),
    ],
)
def test_u_data_malformed_line_names_file_and_line(tmp_path, text, line, reason):
    path = write(tmp_path / "u.data", text)
    with pytest.raises(DataFormatError, match=reason) as error:
        read_rating_lines(path, None)
    assert_error_at(error, path, line)


def test_skip_mode_counts_malformed_lines(tmp_path):
    path = write(tmp_path / "ratings.dat", "1::10::4::100\n1::11::4\n1::12::x::5\n2::10::3::7\n")
    log = read_rating_lines(path, "::", on_error="skip")
    assert rows(log) == [("1", "10", 100), ("2", "10", 7)]
    assert log.dropped == {"malformed_line": 2}


def test_ratings_dat_with_latin1_is_rejected_with_its_line(tmp_path):
    path = write(tmp_path / "ratings.dat", "1::10::4::100\n1::caf\xe9::4::100\n", encoding="latin-1")
    with pytest.raises(DataFormatError, match="not valid utf-8") as error:
        read_rating_lines(path, "::")
    assert_error_at(error, path, 2)


def test_sasrec_format_keeps_file_order_without_times(tmp_path):
    log = read_sasrec(write(tmp_path / "Video.txt", "\ufeff1 5\r\n1 3\n2 5\n\n1 9\n"))  # a BOM, a CRLF line
    assert rows(log) == [("1", "5", 0), ("1", "3", 1), ("2", "5", 2), ("1", "9", 3)]
    assert not log.has_timestamps and not log.has_ratings
    path = write(tmp_path / "bad.txt", "1 5\n1 3 7\n")
    with pytest.raises(DataFormatError, match="expected 2 fields") as error:
        read_sasrec(path)
    assert_error_at(error, path, 2)


def test_user_lines_count_empty_histories(tmp_path):
    log = read_user_lines(write(tmp_path / "Beauty.txt", "1 4 5 6\n2\n3 4\n"))
    assert rows(log) == [("1", "4", 0), ("1", "5", 1), ("1", "6", 2), ("3", "4", 3)]
    assert log.dropped == {"empty_history": 1}


def test_atomic_file_with_typed_header(tmp_path):
    path = write(tmp_path / "x.inter", "user_id:token\titem_id:token\trating:float\ttimestamp:float\n1\t2\t3\t9.0\n")
    assert rows(read_atomic(path)) == [("1", "2", 9)]
    bad = write(tmp_path / "y.inter", "user_id:token\titem_id:token\n1\t2\n3\n")
    with pytest.raises(DataFormatError, match="expected 2 tab-separated fields") as error:
        read_atomic(bad)
    assert_error_at(error, bad, 3)
    with pytest.raises(DataFormatError, match="no column 'session'"):
        read_atomic(path, Columns(user="session"))


def test_csv_with_column_mapping_iso_dates_and_missing_values(tmp_path):
    text = (
        "who,what,when,stars\n"
        "u1,Toy Story,2020-01-02T00:00:00Z,5\n"
        'u1,"Heat, the movie",2020-01-01,4\n'
        "u2,,2020-01-03,3\n"
        "u2,Alien,,2\n"
        "u2,Brazil,2020-01-04,\n"
    )
    path = write(tmp_path / "log.csv", text)
    log = read_table(path, "csv", Columns(user="who", item="what", time="when", rating="stars"))
    day = 86400
    assert rows(log) == [
        ("u1", "Toy Story", 18262 * day + day),
        ("u1", "Heat, the movie", 18262 * day),
        ("u2", "Brazil", 18262 * day + 3 * day),
    ]
    assert log.frame["rating"].isna().tolist() == [False, False, True]
    assert log.dropped == {"missing_item": 1, "missing_timestamp": 1}


def test_csv_defaults_use_optional_columns_only_where_present(tmp_path):
    path = write(tmp_path / "log.csv", "user_id,item_id\na,x\nb,y\n")
    log = read_table(path, "csv")
    assert not log.has_timestamps and not log.has_ratings
    with pytest.raises(DataFormatError, match="no column 'ts'"):
        read_table(path, "csv", Columns(time="ts"))


def test_csv_malformed_rows_name_the_physical_line(tmp_path):
    path = write(tmp_path / "log.csv", 'user_id,item_id,timestamp\na,"multi\nline",1\n\nb,y,2,extra\n')
    with pytest.raises(DataFormatError, match="expected 3 fields") as error:
        read_table(path, "csv")
    assert_error_at(error, path, 5)
    path = write(tmp_path / "times.csv", 'user_id,item_id,timestamp\na,"multi\nline",1\n\nb,y,soon\n')
    with pytest.raises(DataFormatError, match="timestamp is neither a number nor a date: 'soon'") as error:
        read_table(path, "csv")
    assert_error_at(error, path, 5)
    skipped = read_table(
        write(tmp_path / "skip.csv", "user_id,item_id,timestamp\na,x,1\nb,y,2,3\nc,z,q\n"), "csv", on_error="skip"
    )
    assert rows(skipped) == [("a", "x", 1)] and skipped.dropped == {"malformed_line": 2}


def test_jsonl_reports_bad_json_with_its_line(tmp_path):
    good = [{"user_id": 1, "item_id": 7, "timestamp": 3}, {"user_id": "u", "item_id": 8.0, "timestamp": 4}]
    path = write(tmp_path / "log.jsonl", "\n".join(json.dumps(row) for row in good) + "\n")
    log = read_table(path, "jsonl")
    assert log.frame["user"].tolist() == ["1", "u"] and log.frame["item"].tolist() == ["7", "8"]
    bad = write(tmp_path / "bad.jsonl", json.dumps(good[0]) + "\n\n{not json}\n")
    with pytest.raises(DataFormatError, match="not a JSON object") as error:
        read_table(bad, "jsonl")
    assert_error_at(error, bad, 3)


def test_parquet_with_datetimes_and_integer_keys(tmp_path):
    frame = pd.DataFrame(
        {
            "uid": [1, 1, 2],
            "iid": [10, 11, 10],
            "at": pd.to_datetime(["1970-01-01 00:00:05", "1970-01-01 00:00:01", "1970-01-01 00:00:00"]),
        }
    )
    frame.to_parquet(tmp_path / "log.parquet")
    log = read_table(tmp_path / "log.parquet", "parquet", Columns(user="uid", item="iid", time="at"))
    assert rows(log) == [("1", "10", 5), ("1", "11", 1), ("2", "10", 0)]
    frame.assign(at=["5", "x", "1"]).to_parquet(tmp_path / "bad.parquet")
    with pytest.raises(DataFormatError) as error:
        read_table(tmp_path / "bad.parquet", "parquet", Columns(user="uid", item="iid", time="at"))
    assert_error_at(error, tmp_path / "bad.parquet", 2, unit="row")


def test_history_csv_lists_titles_duplicates_and_empty_histories(tmp_path):
    text = (
        "user_id,history_item_id,history_item_title\n"
        "1,\"[3, 4]\",\"['Léon', 'Heat']\"\n"
        "2,[],[]\n"
        "1,\"[3, 4, 5]\",\"['Léon', 'Heat', '東京物語']\"\n"
    )
    log = read_history_csv(write(tmp_path / "train.csv", text))
    assert rows(log) == [("1", "3", 0), ("1", "4", 1), ("1", "5", 2)]
    assert log.items["5"]["title"] == "東京物語"
    assert log.dropped == {"empty_history": 1, "duplicate_user_row": 1}
    bad = write(tmp_path / "bad.csv", text + '3,"[1, 2","[\'a\']"\n')
    with pytest.raises(DataFormatError, match="not a Python list literal") as error:
        read_history_csv(bad)
    assert_error_at(error, bad, 5)
    uneven = write(tmp_path / "uneven.csv", 'user_id,history_item_id,history_item_title\n1,"[1, 2]","[\'a\']"\n')
    with pytest.raises(DataFormatError, match="2 items but 1 titles"):
        read_history_csv(uneven)


def test_item_files_latin1_and_unicode_titles(tmp_path, data_movielens_dir):
    items, dropped = read_item_info(data_movielens_dir / "u.item")
    assert items["1"] == {"title": "Amélie (2001)", "genres": ["Comedy", "Drama", "Romance"]} and not dropped
    text = "1::Toy Story (1995)::Animation|Children's\n2::千と千尋の神隠し (2001)::Animation\n"
    movies_dat = write(tmp_path / "movies.dat", text)
    assert read_item_info(movies_dat)[0]["2"] == {"title": "千と千尋の神隠し (2001)", "genres": ["Animation"]}
    movies_csv = write(tmp_path / "movies.csv", 'movieId,title,genres\n7,"Heat, Part 1 (1995)",(no genres listed)\n')
    assert read_item_info(movies_csv)[0] == {"7": {"title": "Heat, Part 1 (1995)", "genres": []}}
    bad = write(tmp_path / "u.item", "1|Title|x\n")
    with pytest.raises(DataFormatError, match=r"expected 24 '\|'-separated fields") as error:
        read_item_info(bad)
    assert_error_at(error, bad, 1)


def test_formats_are_detected(tmp_path, data_movielens_dir):
    assert resolve_input(data_movielens_dir).name == "u.data"
    cases = {
        "u.data": ("1\t2\t3\t4\n", "ml-100k"),
        "ratings.dat": ("1::2::3::4\n", "ml-1m"),
        "ratings.csv": ("userId,movieId,rating,timestamp\n1,2,3,4\n", "ml-csv"),
        "train.csv": ("user_id,history_item_id,history_item_title\n", "history-csv"),
        "log.csv": ("user_id,item_id\n", "csv"),
        "log.jsonl": ("{}\n", "jsonl"),
        "Video.txt": ("1 2\n1 3\n", "sasrec"),
        "Beauty.txt": ("1 2 3\n2 4\n", "user-lines"),
    }
    for name, (text, expected) in cases.items():
        assert detect_format(write(tmp_path / name, text)) == expected, name


def test_missing_input_names_the_path(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"nothing-here\.csv"):
        read_interactions(tmp_path / "nothing-here.csv", "csv")
    with pytest.raises(FileNotFoundError, match=r"no u\.data"):
        resolve_input(tmp_path)
