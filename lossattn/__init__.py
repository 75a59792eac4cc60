"""lossattn: loss-based attention for deep multiple instance learning (Shi et al., AAAI 2020)."""

from lossattn import functional
from lossattn.ensemble import TemporalEnsemble
from lossattn.functional import loss_attention, loss_attention_loss, loss_attention_terms
from lossattn.models import MILOutput, create_model, list_models, model_info, model_tags, register_model

__version__ = "0.2.0"

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
    "model_tags",
    "register_model",
]
