"""The item tokenizer: one `WordLevel` token per item, wrapped as a `PreTrainedTokenizerFast`.

Token ids: `<PAD>`=0, `<UNK>`=1, `<BOS>`=2, `<EOS>`=3, `<MASK>`=4, then the items from `NUM_SPECIAL_TOKENS` on, in
the order given (the data pipeline passes them by descending popularity). A raw item key (an id or a title, any
unicode, spaces included) becomes a token by percent-escaping `%`, `<`, `>`, whitespace and control characters, so a
token is one whitespace-free word that never contains a special token: `"k1 k2" + " k3" + "<EOS>"` tokenizes to the
three items and `<EOS>`, which is how TRL joins a prompt, a completion and the EOS token.

The saved folder loads as a plain `PreTrainedTokenizerFast` without this module and without custom code
(`PreTrainedTokenizerFast.from_pretrained(path)`, or `AutoTokenizer.from_pretrained(path)` where no custom model
config sits beside it); `item2id.json` (raw key -> id) and `id2item.json` (id -> raw key) are written beside it for
tools that do not tokenize. `vocabulary_fingerprint` identifies the ordered vocabulary: a model records it in its
config so that a tokenizer with the same size but other items, or the same items in another order, is refused.
"""

from __future__ import annotations

import hashlib
import json
import re
import unicodedata
from collections import Counter
from collections.abc import Iterable
from pathlib import Path
from urllib.parse import unquote

from tokenizers import Tokenizer, models, pre_tokenizers
from transformers import PreTrainedTokenizerBase, PreTrainedTokenizerFast

from .atomic_files import atomic_write_json

PAD_TOKEN, UNK_TOKEN, BOS_TOKEN, EOS_TOKEN, MASK_TOKEN = "<PAD>", "<UNK>", "<BOS>", "<EOS>", "<MASK>"
SPECIAL_TOKENS = (PAD_TOKEN, UNK_TOKEN, BOS_TOKEN, EOS_TOKEN, MASK_TOKEN)
NUM_SPECIAL_TOKENS = len(SPECIAL_TOKENS)
PAD_ID, UNK_ID, BOS_ID, EOS_ID, MASK_ID = range(NUM_SPECIAL_TOKENS)

_ESCAPED_CATEGORIES = {"Cc", "Zs", "Zl", "Zp"}  # control characters and every kind of space or separator
_PLAIN_KEY = re.compile(r"[\w.,:;/+\-]+", re.ASCII)


def _escape_char(char: str) -> str:
    if char in "%<>" or unicodedata.category(char) in _ESCAPED_CATEGORIES:
        return "".join(f"%{byte:02X}" for byte in char.encode("utf-8"))
    return char


def item_to_token(key: str) -> str:
    """Turn a raw item key into its token: `%`, `<`, `>`, whitespace and control characters percent-escaped."""
    if not key:
        raise ValueError("an item key cannot be empty")
    if _PLAIN_KEY.fullmatch(key):
        return key
    return "".join(_escape_char(char) for char in key)


def token_to_item(token: str) -> str:
    """Invert `item_to_token`."""
    return unquote(token, errors="strict")


def build_item_tokenizer(item_keys_by_popularity: list[str], model_max_length: int = 1024) -> PreTrainedTokenizerFast:
    """Build the tokenizer: the special tokens, then one token per raw key, ids in the order given.

    No BOS/EOS is added on encoding; truncation keeps the most recent items (the right end).
    """
    vocab = {token: index for index, token in enumerate(SPECIAL_TOKENS)}
    for key in item_keys_by_popularity:
        token = item_to_token(key)
        if token in vocab:
            raise ValueError(f"duplicate item key {key!r}")
        vocab[token] = len(vocab)
    backend = Tokenizer(models.WordLevel(vocab, unk_token=UNK_TOKEN))
    backend.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    return PreTrainedTokenizerFast(
        tokenizer_object=backend,
        pad_token=PAD_TOKEN,
        unk_token=UNK_TOKEN,
        bos_token=BOS_TOKEN,
        eos_token=EOS_TOKEN,
        mask_token=MASK_TOKEN,
        model_max_length=model_max_length,
        truncation_side="left",
    )


def encode_items(tokenizer: PreTrainedTokenizerFast, keys: Iterable[str], unknown: Counter | None = None) -> list[int]:
    """Map raw item keys to token ids; a key not in the vocabulary maps to `<UNK>` and is counted in `unknown`."""
    ids = []
    for key in keys:
        token_id = tokenizer.convert_tokens_to_ids(item_to_token(key)) if key else UNK_ID
        if token_id == UNK_ID and unknown is not None:
            unknown[key] += 1
        ids.append(token_id)
    return ids


def decode_items(
    tokenizer: PreTrainedTokenizerFast, ids: Iterable[int], skip_special_tokens: bool = True
) -> list[str]:
    """Map token ids back to raw item keys; special tokens are skipped, or kept as their token strings."""
    tokens = tokenizer.convert_ids_to_tokens([int(token_id) for token_id in ids])
    return [
        token if token in SPECIAL_TOKENS else token_to_item(token)
        for token in tokens
        if not (skip_special_tokens and token in SPECIAL_TOKENS)
    ]


def item_keys(tokenizer: PreTrainedTokenizerFast) -> list[str]:
    """The raw item keys in id order (index 0 is the item with id `NUM_SPECIAL_TOKENS`)."""
    vocab = tokenizer.get_vocab()
    tokens = sorted((token_id, token) for token, token_id in vocab.items() if token_id >= NUM_SPECIAL_TOKENS)
    return [token_to_item(token) for _, token in tokens]


def vocabulary_fingerprint(tokenizer: PreTrainedTokenizerBase) -> str:
    """SHA-256 (hex) of the ordered vocabulary: every token with its id, special tokens included."""
    ordered = sorted((token_id, token) for token, token_id in tokenizer.get_vocab().items())
    return hashlib.sha256(json.dumps(ordered, ensure_ascii=False).encode("utf-8")).hexdigest()


def save_item_tokenizer(tokenizer: PreTrainedTokenizerFast, path: str | Path) -> None:
    """`save_pretrained` plus `item2id.json` (raw key -> id) and `id2item.json` (id -> raw key) in the same folder,
    each written atomically."""
    path = Path(path)
    tokenizer.save_pretrained(path)
    keys = item_keys(tokenizer)
    item2id = {key: NUM_SPECIAL_TOKENS + index for index, key in enumerate(keys)}
    id2item = {str(token_id): key for key, token_id in item2id.items()}
    for name, mapping in (("item2id.json", item2id), ("id2item.json", id2item)):
        atomic_write_json(path / name, mapping, indent=None)
