"""Multi-label loss-based attention: bags that carry a *set* of labels (see ``docs/multilabel.md``).

* :mod:`~lossattn.multilabel.functional` — per-label loss-based attention, its loss terms and consistency cost.
* :mod:`~lossattn.multilabel.metrics` — micro/macro F1, mean average precision, per-label instance retrieval.
* :mod:`~lossattn.multilabel.ensemble` — the per-label temporal ensemble of the weights.

The multi-label *models* live in the one model registry (``lossattn.create_model("loss_attention_multilabel",
in_features=..., num_classes=L)``; ``lossattn.list_models(task="multi_label")``); data: multi-hot label sets in
:mod:`lossattn.datasets.multilabel`; training: the one engine (``lossattn.engine.fit``), which picks the
multi-label task from the model.

Deprecated aliases kept for this release (lossattn 0.1 names): ``create_multilabel_model``,
``list_multilabel_models``, ``multilabel_model_info``, ``MultiLabelOutput`` (= ``lossattn.MILOutput``) and the
model classes; they resolve lazily to the names in :mod:`lossattn.models`.
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

__all__ = [
    "SCORES",
    "LabelwiseTemporalEnsemble",
    "MultiLabelAttentionOutput",
    "MultiLabelLossTerms",
    "instance_average_precision",
    "instance_retrieval_per_label",
    "multilabel_consistency_cost",
    "multilabel_loss_attention",
    "multilabel_loss_attention_loss",
    "multilabel_loss_attention_terms",
    "multilabel_scores",
]

_MODEL_ALIASES = {
    "MultiLabelOutput": "MILOutput",
    "MultiLabelMILModel": "MultiLabelMILModel",
    "LossAttentionMultiLabelMIL": "LossAttentionMultiLabelMIL",
    "AttentionMultiLabelMIL": "AttentionMultiLabelMIL",
    "EmbeddingPoolMultiLabelMIL": "EmbeddingPoolMultiLabelMIL",
    "InstancePoolMultiLabelMIL": "InstancePoolMultiLabelMIL",
}


def create_multilabel_model(name: str, **kwargs):
    """Deprecated alias of :func:`lossattn.create_model` (the one registry holds the multi-label models)."""
    from lossattn.models.registry import create_model

    return create_model(name, **kwargs)


def list_multilabel_models() -> list[str]:
    """Deprecated alias of ``lossattn.list_models(task="multi_label")``."""
    from lossattn.models.registry import list_models

    return list_models(task="multi_label")


def multilabel_model_info(name: str) -> str:
    """Deprecated alias of :func:`lossattn.model_info`."""
    from lossattn.models.registry import model_info

    return model_info(name)


def __getattr__(name: str):
    # the model classes live in lossattn.models, which imports this package: resolve them lazily
    if name in _MODEL_ALIASES:
        import lossattn.models

        return getattr(lossattn.models, _MODEL_ALIASES[name])
    raise AttributeError(f"module 'lossattn.multilabel' has no attribute {name!r}")
