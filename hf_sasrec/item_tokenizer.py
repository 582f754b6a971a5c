"""The item tokenizer (`hf_sasrec.item_tokenizer`, its documented place), defined by the data step.

`python -m data_preprocess` builds and saves the tokenizer without importing any model code, so the code lives in
`data_preprocess.item_tokenizer` and the model package imports it from there: the model side depends on the data
step, never the reverse. See that module for the token scheme and the saved files.
"""

from data_preprocess.item_tokenizer import (
    BOS_ID,
    BOS_TOKEN,
    EOS_ID,
    EOS_TOKEN,
    MASK_ID,
    MASK_TOKEN,
    NUM_SPECIAL_TOKENS,
    PAD_ID,
    PAD_TOKEN,
    SPECIAL_TOKENS,
    UNK_ID,
    UNK_TOKEN,
    build_item_tokenizer,
    decode_items,
    encode_items,
    item_keys,
    item_to_token,
    save_item_tokenizer,
    token_to_item,
    vocabulary_fingerprint,
)

__all__ = [
    "BOS_ID",
    "BOS_TOKEN",
    "EOS_ID",
    "EOS_TOKEN",
    "MASK_ID",
    "MASK_TOKEN",
    "NUM_SPECIAL_TOKENS",
    "PAD_ID",
    "PAD_TOKEN",
    "SPECIAL_TOKENS",
    "UNK_ID",
    "UNK_TOKEN",
    "build_item_tokenizer",
    "decode_items",
    "encode_items",
    "item_keys",
    "item_to_token",
    "save_item_tokenizer",
    "token_to_item",
    "vocabulary_fingerprint",
]
