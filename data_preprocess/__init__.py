"""From raw interaction logs to `datasets` splits, the item tokenizer and DPO preference pairs.

`prepare(...)` (or `python -m data_preprocess`) reads MovieLens, SASRec-style text, one-user-a-line, CSV/JSONL/Parquet
and history-list CSV logs; `data_preprocess.preference` builds DPO pairs; `data_preprocess.text_embeddings` encodes
item titles with a sentence-transformers model.
"""

from .errors import DataFormatError, PreprocessingError
from .interactions import Columns
from .pipeline import prepare

__all__ = ["Columns", "DataFormatError", "PreprocessingError", "prepare"]
