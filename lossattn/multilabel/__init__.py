"""Multi-label loss-based attention: bags that carry a *set* of labels (see ``docs/multilabel.md``).

* :mod:`~lossattn.multilabel.functional` — per-label loss-based attention, its loss terms and consistency cost.
* :mod:`~lossattn.multilabel.models` — multi-label MIL models (loss attention, Ilse et al. attention with a
  sigmoid head, max/mean pooling), registered in a registry of their own (:func:`list_multilabel_models`),
  separate from ``lossattn.list_models()``.
* :mod:`~lossattn.multilabel.metrics` — micro/macro F1, mean average precision, per-label instance retrieval.
* Data: :mod:`lossattn.datasets.multilabel`; training: :mod:`lossattn.train.multilabel`.
"""

from lossattn.multilabel.ensemble import LabelwiseTemporalEnsemble
from lossattn.multilabel.functional import (
    SCORES,
    MultiLabelAttentionOutput,
    MultiLabelLossTerms,
    multilabel_consistency_cost,
    multilabel_loss_attention,
    multilabel_loss_attention_loss,
    multilabel_loss_attention_terms,
)
from lossattn.multilabel.metrics import instance_average_precision, instance_retrieval_per_label, multilabel_scores
from lossattn.multilabel.models import (
    AttentionMultiLabelMIL,
    EmbeddingPoolMultiLabelMIL,
    InstancePoolMultiLabelMIL,
    LossAttentionMultiLabelMIL,
    MultiLabelMILModel,
)
from lossattn.multilabel.output import MultiLabelOutput
from lossattn.multilabel.registry import (
    MULTILABEL_MODELS,
    create_multilabel_model,
    list_multilabel_models,
    multilabel_model_info,
    register_multilabel_model,
)

__all__ = [
    "MULTILABEL_MODELS",
    "SCORES",
    "AttentionMultiLabelMIL",
    "EmbeddingPoolMultiLabelMIL",
    "InstancePoolMultiLabelMIL",
    "LabelwiseTemporalEnsemble",
    "LossAttentionMultiLabelMIL",
    "MultiLabelAttentionOutput",
    "MultiLabelLossTerms",
    "MultiLabelMILModel",
    "MultiLabelOutput",
    "create_multilabel_model",
    "instance_average_precision",
    "instance_retrieval_per_label",
    "list_multilabel_models",
    "multilabel_consistency_cost",
    "multilabel_loss_attention",
    "multilabel_loss_attention_loss",
    "multilabel_loss_attention_terms",
    "multilabel_model_info",
    "multilabel_scores",
    "register_multilabel_model",
]
