"""The six variants, and their registration with transformers' Auto classes.

`register_variants` (run by `import hf_sasrec`) registers every variant with `AutoConfig`, `AutoModel` and
`AutoModelForCausalLM`, and marks its classes for `register_for_auto_class`, so that saved checkpoints carry their
code (`auto_map` in `config.json`). Registration needs the model classes, so this module imports them all: it is the
one part of the package face that is not lazy. `register_rqvae` registers the RQ-VAE of semantic ids
(`hf_sasrec.semantic_ids`) with `AutoConfig` and `AutoModel`; it is not a next-item variant, so it stays out of
`VARIANTS`.
"""

from transformers import AutoConfig, AutoModel, AutoModelForCausalLM, PreTrainedConfig, PreTrainedModel

from .configuration_mhc import MHCConfig
from .configuration_rqvae import RQVAEConfig
from .configuration_sasrec import SASRecConfig
from .configuration_sasrec_gate import SASRecGateConfig
from .configuration_sasrec_moe import SASRecMoEConfig
from .configuration_sasrec_rope import SASRecRopeConfig
from .configuration_tisasrec import TiSASRecConfig
from .modeling_mhc import MHCForCausalLM, MHCModel
from .modeling_rqvae import RQVAEModel
from .modeling_sasrec import SASRecForCausalLM, SASRecModel
from .modeling_sasrec_gate import SASRecGateForCausalLM, SASRecGateModel
from .modeling_sasrec_moe import SASRecMoEForCausalLM, SASRecMoEModel
from .modeling_sasrec_rope import SASRecRopeForCausalLM, SASRecRopeModel
from .modeling_tisasrec import TiSASRecForCausalLM, TiSASRecModel

# model_type -> (config, encoder, causal LM) classes
VARIANTS: dict[str, tuple[type[PreTrainedConfig], type[PreTrainedModel], type[PreTrainedModel]]] = {
    "sasrec": (SASRecConfig, SASRecModel, SASRecForCausalLM),
    "sasrec_rope": (SASRecRopeConfig, SASRecRopeModel, SASRecRopeForCausalLM),
    "sasrec_gate": (SASRecGateConfig, SASRecGateModel, SASRecGateForCausalLM),
    "sasrec_moe": (SASRecMoEConfig, SASRecMoEModel, SASRecMoEForCausalLM),
    "mhc": (MHCConfig, MHCModel, MHCForCausalLM),
    "tisasrec": (TiSASRecConfig, TiSASRecModel, TiSASRecForCausalLM),
}


def register_variant(
    config_class: type[PreTrainedConfig], model_class: type[PreTrainedModel], causal_lm_class: type[PreTrainedModel]
) -> None:
    """Register one variant with the Auto classes and mark its classes to be saved with their code."""
    AutoConfig.register(config_class.model_type, config_class, exist_ok=True)
    AutoModel.register(config_class, model_class, exist_ok=True)
    AutoModelForCausalLM.register(config_class, causal_lm_class, exist_ok=True)
    config_class.register_for_auto_class()
    model_class.register_for_auto_class("AutoModel")
    causal_lm_class.register_for_auto_class("AutoModelForCausalLM")


def register_variants() -> None:
    """Register every variant of `VARIANTS` (idempotent)."""
    for classes in VARIANTS.values():
        register_variant(*classes)


def register_rqvae() -> None:
    """Register the RQ-VAE with `AutoConfig` and `AutoModel`, its classes saved with their code (idempotent)."""
    AutoConfig.register(RQVAEConfig.model_type, RQVAEConfig, exist_ok=True)
    AutoModel.register(RQVAEConfig, RQVAEModel, exist_ok=True)
    RQVAEConfig.register_for_auto_class()
    RQVAEModel.register_for_auto_class("AutoModel")


__all__ = ["VARIANTS", "register_rqvae", "register_variant", "register_variants"]
