"""lossattn: loss-based attention for deep multiple instance learning (Shi et al., AAAI 2020)."""

from lossattn import functional
from lossattn.ensemble import TemporalEnsemble
from lossattn.functional import loss_attention, loss_attention_loss, loss_attention_terms
from lossattn.nn.output import MILOutput
from lossattn.registry import create_model, list_models, model_info, register_model

__version__ = "0.1.0"

__all__ = [
    "MILOutput",
    "TemporalEnsemble",
    "__version__",
    "create_model",
    "functional",
    "list_models",
    "loss_attention",
    "loss_attention_loss",
    "loss_attention_terms",
    "model_info",
    "register_model",
]
