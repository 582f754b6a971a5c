"""The item tokenizer (defined by the data step, `data_preprocess.item_tokenizer`, and served to the model side as
`hf_sasrec.item_tokenizer`): escaping, ids, TRL-style string joins, saving and loading without hf_sasrec."""

import json
import subprocess
import sys
import textwrap
from collections import Counter

import pytest
from model_helpers import HIDE_HF_SASREC, VOCAB_SIZE, tiny_model
from transformers import AutoTokenizer

from data_preprocess.item_tokenizer import (
    EOS_ID,
    NUM_SPECIAL_TOKENS,
    UNK_ID,
    build_item_tokenizer,
    decode_items,
    encode_items,
    item_keys,
    item_to_token,
    save_item_tokenizer,
    token_to_item,
)

ODD_KEYS = [
    "42",
    "B00004SVJ8",
    "Toy Story (1995)",
    "Amélie (Le fabuleux destin d'Amélie Poulain) (2001)",
    "東京物語",
    "100%",
    "a%20b",
    "<EOS>",
    "x<PAD>y",
    "tab\there",
    "line\nbreak",
    "nbsp\u00a0ideographic\u3000space",
    "  padded  ",
    "emoji 🎬",
]


@pytest.mark.parametrize("key", ODD_KEYS)
def test_token_is_one_safe_word_and_round_trips(key):
    token = item_to_token(key)
    assert token_to_item(token) == key
    assert len(token.split()) == 1 and token.split()[0] == token
    assert "<" not in token and ">" not in token


def test_empty_key_is_rejected():
    with pytest.raises(ValueError, match="empty"):
        item_to_token("")


def test_special_ids_and_items_in_the_given_order():
    tokenizer = build_item_tokenizer(ODD_KEYS)
    assert NUM_SPECIAL_TOKENS == 5
    special_ids = [tokenizer.pad_token_id, tokenizer.unk_token_id, tokenizer.bos_token_id, tokenizer.eos_token_id]
    assert special_ids == [0, 1, 2, 3] and tokenizer.mask_token_id == 4
    assert len(tokenizer) == NUM_SPECIAL_TOKENS + len(ODD_KEYS)
    assert encode_items(tokenizer, ODD_KEYS) == list(range(5, 5 + len(ODD_KEYS)))
    assert item_keys(tokenizer) == ODD_KEYS


def test_text_of_tokens_tokenizes_to_item_ids_and_trl_join_adds_eos():
    tokenizer = build_item_tokenizer(ODD_KEYS)
    tokens = [item_to_token(key) for key in ODD_KEYS]
    ids = encode_items(tokenizer, ODD_KEYS)
    assert tokenizer(" ".join(tokens))["input_ids"] == ids  # no BOS/EOS added
    prompt, completion = " ".join(tokens[:2]), " " + tokens[2]
    assert tokenizer(prompt + completion + tokenizer.eos_token)["input_ids"] == [*ids[:3], EOS_ID]
    # a key spelling a special token is an item, not the special token
    assert tokenizer(item_to_token("<EOS>"))["input_ids"] == [ids[ODD_KEYS.index("<EOS>")]]


def test_unknown_items_map_to_unk_and_are_counted():
    tokenizer = build_item_tokenizer(["a", "b"])
    unknown = Counter()
    assert encode_items(tokenizer, ["a", "zz", "b", "zz", ""], unknown) == [5, UNK_ID, 6, UNK_ID, UNK_ID]
    assert unknown == Counter({"zz": 2, "": 1})
    assert tokenizer("a zz")["input_ids"] == [5, UNK_ID]


def test_decode_items_returns_raw_keys():
    tokenizer = build_item_tokenizer(ODD_KEYS)
    ids = [0, *encode_items(tokenizer, ODD_KEYS[::-1]), EOS_ID]
    assert decode_items(tokenizer, ids) == ODD_KEYS[::-1]
    assert decode_items(tokenizer, [5, 3], skip_special_tokens=False) == [ODD_KEYS[0], "<EOS>"]


def test_duplicate_keys_are_rejected():
    with pytest.raises(ValueError, match="duplicate"):
        build_item_tokenizer(["a", "b", "a"])


def test_saved_tokenizer_loads_with_auto_tokenizer_without_hf_sasrec(tmp_path):
    tokenizer = build_item_tokenizer(ODD_KEYS, model_max_length=51)
    save_item_tokenizer(tokenizer, tmp_path)
    item2id = json.loads((tmp_path / "item2id.json").read_text(encoding="utf-8"))
    id2item = json.loads((tmp_path / "id2item.json").read_text(encoding="utf-8"))
    assert item2id == {key: 5 + index for index, key in enumerate(ODD_KEYS)}
    assert id2item == {str(token_id): key for key, token_id in item2id.items()}
    text = " ".join(item_to_token(key) for key in ODD_KEYS)
    script = (
        "import sys, json; from transformers import AutoTokenizer; "
        f"t = AutoTokenizer.from_pretrained({str(tmp_path)!r}); "
        f"print(json.dumps([t({text!r})['input_ids'], t.pad_token_id, t.model_max_length, t.truncation_side])); "
        "assert 'hf_sasrec' not in sys.modules"
    )
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True)
    assert json.loads(result.stdout.strip().splitlines()[-1]) == [list(range(5, 5 + len(ODD_KEYS))), 0, 51, "left"]
    loaded = AutoTokenizer.from_pretrained(tmp_path)
    assert decode_items(loaded, loaded(text)["input_ids"]) == ODD_KEYS


def test_left_truncation_keeps_the_most_recent_items():
    tokenizer = build_item_tokenizer([str(index) for index in range(10)], model_max_length=3)
    assert tokenizer("0 1 2 3 4", truncation=True)["input_ids"] == [7, 8, 9]


PLAIN_TOKENIZER_LOADER = HIDE_HF_SASREC + textwrap.dedent(
    """
    from transformers import AutoTokenizer, PreTrainedTokenizerFast
    folder, text = sys.argv[1], sys.argv[2]
    loaded = [
        PreTrainedTokenizerFast.from_pretrained(folder),
        AutoTokenizer.from_pretrained(folder, trust_remote_code=False),
    ]
    print(json.dumps([[isinstance(t, PreTrainedTokenizerFast), t(text)["input_ids"]] for t in loaded]))
    """
)


def test_checkpoint_tokenizer_loads_as_a_plain_fast_tokenizer_without_custom_code_or_prompt(tmp_path):
    """A run folder holds the model (whose config.json names custom code) beside the tokenizer: the tokenizer still
    loads with transformers alone, as a `PreTrainedTokenizerFast`, without running or copying any code and without
    asking."""
    keys = [f"item {index}" for index in range(VOCAB_SIZE - NUM_SPECIAL_TOKENS)]
    tiny_model("sasrec").save_pretrained(tmp_path / "run")
    save_item_tokenizer(build_item_tokenizer(keys), tmp_path / "run")
    text = " ".join(item_to_token(key) for key in keys[:4])
    result = subprocess.run(
        [sys.executable, "-c", PLAIN_TOKENIZER_LOADER, str(tmp_path / "run"), text],
        input="",
        capture_output=True,
        text=True,
        env={"HF_MODULES_CACHE": str(tmp_path / "modules"), "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"},
        timeout=120,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert "custom code" not in result.stdout + result.stderr
    assert json.loads(result.stdout.strip().splitlines()[-1]) == [[True, [5, 6, 7, 8]]] * 2
    assert not list((tmp_path / "modules").glob("transformers_modules/*"))


def test_the_model_package_serves_the_data_step_tokenizer():
    """`hf_sasrec.item_tokenizer`, the documented place, holds the very functions of the data step."""
    import data_preprocess.item_tokenizer as data_side
    import hf_sasrec.item_tokenizer as model_side

    assert set(model_side.__all__) <= set(vars(data_side))
    assert all(getattr(model_side, name) is getattr(data_side, name) for name in model_side.__all__)
