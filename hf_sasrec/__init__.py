"""hf-sasrec: SASRec-family sequential recommenders as 🤗 transformers models.

Importing the package registers every variant with `AutoConfig`, `AutoModel` and `AutoModelForCausalLM`, and marks
its classes for `register_for_auto_class`, so that saved checkpoints carry their code (`auto_map` in `config.json`);
see `hf_sasrec.registry` (which also registers the RQ-VAE of semantic ids, `RQVAEConfig` / `RQVAEModel`, with
`AutoConfig` and `AutoModel`); and it registers the `next-item-recommendation` task with transformers' pipelines (see
`hf_sasrec.pipeline_next_item`). Everything else on the package face is lazy, as in transformers' own packages: a name
(`Recommender`, `ItemIndex`, `save_for_hub`, ...) imports its module on first use, so Faiss, `datasets` and TRL load
only where they are used.
"""

# ruff: noqa: F403  (the star imports only tell type checkers what the lazy face holds, as in transformers)
from typing import TYPE_CHECKING

from transformers.utils import _LazyModule
from transformers.utils.import_utils import define_import_structure

if TYPE_CHECKING:
    from .checkpoint_loading import *
    from .configuration_mhc import *
    from .configuration_rqvae import *
    from .configuration_sasrec import *
    from .configuration_sasrec_gate import *
    from .configuration_sasrec_moe import *
    from .configuration_sasrec_rope import *
    from .configuration_tisasrec import *
    from .evaluation import *
    from .item_tokenizer import *
    from .model_card import *
    from .modeling_mhc import *
    from .modeling_rqvae import *
    from .modeling_sasrec import *
    from .modeling_sasrec_gate import *
    from .modeling_sasrec_moe import *
    from .modeling_sasrec_rope import *
    from .modeling_tisasrec import *
    from .pipeline_next_item import *
    from .recommendation import *
    from .recommender import *
    from .registry import *
    from .retrieval import *
    from .run_info import *
else:
    import sys

    _file = globals()["__file__"]
    sys.modules[__name__] = _LazyModule(__name__, _file, define_import_structure(_file), module_spec=__spec__)

    from .pipeline_next_item import register_pipeline
    from .registry import register_rqvae, register_variants

    register_variants()
    register_rqvae()
    register_pipeline()
