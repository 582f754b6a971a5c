"""From raw interaction logs to `datasets` splits, the item tokenizer and DPO preference pairs.

`prepare(...)` (or `python -m data_preprocess`) reads MovieLens, SASRec-style text, one-user-a-line, CSV/JSONL/Parquet
and history-list CSV logs; `data_preprocess.preference` builds DPO pairs; `data_preprocess.text_embeddings` encodes
item titles with a sentence-transformers model. Item and user side features and modality embedding tables are
written under `features/` (`FeatureSources`; layout in `data_preprocess.feature_schema`).

The data step never imports model code (`hf_sasrec`, torch, Faiss): the model package depends on it, not the other
way round. The package face is lazy, as transformers' own: a name (`prepare`, `Columns`, ...) imports its module on
first use, so `import data_preprocess` costs nothing until then.
"""

# ruff: noqa: F403  (the star imports only tell type checkers what the lazy face holds, as in transformers)
from typing import TYPE_CHECKING

from transformers.utils import _LazyModule
from transformers.utils.import_utils import define_import_structure

if TYPE_CHECKING:
    from .errors import *
    from .interactions import *
    from .pipeline import *
else:
    import sys

    _file = globals()["__file__"]
    sys.modules[__name__] = _LazyModule(__name__, _file, define_import_structure(_file), module_spec=__spec__)
