"""hf-sasrec: SASRec-family sequential recommenders as 🤗 transformers models.

Importing the package registers every variant with `AutoConfig`, `AutoModel` and `AutoModelForCausalLM`, and marks
its classes for `register_for_auto_class`, so that saved checkpoints carry their code (`auto_map` in `config.json`).
"""

from transformers import AutoConfig, AutoModel, AutoModelForCausalLM

from .configuration_mhc import MHCConfig
from .configuration_sasrec import SASRecConfig
from .configuration_sasrec_gate import SASRecGateConfig
from .configuration_sasrec_moe import SASRecMoEConfig
from .configuration_sasrec_rope import SASRecRopeConfig
from .configuration_tisasrec import TiSASRecConfig
from .evaluation import evaluate_next_item
from .model_card import save_for_hub
from .modeling_mhc import MHCForCausalLM, MHCModel
from .modeling_sasrec import SASRecForCausalLM, SASRecModel, last_real_states
from .modeling_sasrec_gate import SASRecGateForCausalLM, SASRecGateModel
from .modeling_sasrec_moe import SASRecMoEForCausalLM, SASRecMoEModel
from .modeling_sasrec_rope import SASRecRopeForCausalLM, SASRecRopeModel
from .modeling_tisasrec import TiSASRecForCausalLM, TiSASRecModel
from .recommender import Recommender
from .retrieval import ItemIndex, RetrievalConfig, StaleIndexError

VARIANTS = {
    "sasrec": (SASRecConfig, SASRecModel, SASRecForCausalLM),
    "sasrec_rope": (SASRecRopeConfig, SASRecRopeModel, SASRecRopeForCausalLM),
    "sasrec_gate": (SASRecGateConfig, SASRecGateModel, SASRecGateForCausalLM),
    "sasrec_moe": (SASRecMoEConfig, SASRecMoEModel, SASRecMoEForCausalLM),
    "mhc": (MHCConfig, MHCModel, MHCForCausalLM),
    "tisasrec": (TiSASRecConfig, TiSASRecModel, TiSASRecForCausalLM),
}


def _register(config_class, model_class, causal_lm_class) -> None:
    AutoConfig.register(config_class.model_type, config_class, exist_ok=True)
    AutoModel.register(config_class, model_class, exist_ok=True)
    AutoModelForCausalLM.register(config_class, causal_lm_class, exist_ok=True)
    config_class.register_for_auto_class()
    model_class.register_for_auto_class("AutoModel")
    causal_lm_class.register_for_auto_class("AutoModelForCausalLM")


for _classes in VARIANTS.values():
    _register(*_classes)

__all__ = [
    "VARIANTS",
    "ItemIndex",
    "MHCConfig",
    "MHCForCausalLM",
    "MHCModel",
    "Recommender",
    "RetrievalConfig",
    "SASRecConfig",
    "SASRecForCausalLM",
    "SASRecGateConfig",
    "SASRecGateForCausalLM",
    "SASRecGateModel",
    "SASRecMoEConfig",
    "SASRecMoEForCausalLM",
    "SASRecMoEModel",
    "SASRecModel",
    "SASRecRopeConfig",
    "SASRecRopeForCausalLM",
    "SASRecRopeModel",
    "StaleIndexError",
    "TiSASRecConfig",
    "TiSASRecForCausalLM",
    "TiSASRecModel",
    "evaluate_next_item",
    "last_real_states",
    "save_for_hub",
]
