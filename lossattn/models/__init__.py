"""Every model of lossattn: one registry, one output type, one contract.

``create_model(name, **kwargs)`` builds any registered model; ``list_models(task=, input_kind=)`` lists them.
A model takes ``x (B, N, *instance_shape)`` plus ``mask (B, N)`` (image models: ``x (B, C, H, W)``, whose
instances are the feature-map positions), returns a :class:`MILOutput` and computes its own loss with
``model.loss(output, target, mask, ensemble=, consistency_weight=)``. Importing this package registers the
built-in models (bag models, MI-Net, multi-label models, ResNet18-MIL).
"""

from lossattn.models.bag import AttentionMIL, EmbeddingPoolMIL, InstancePoolMIL, LossAttentionMIL
from lossattn.models.base import MILModel, bag_loss
from lossattn.models.extractors import (
    CifarBagsCNN,
    IdentityExtractor,
    LeNet5,
    MLPExtractor,
    build_extractor,
    create_extractor,
    list_extractors,
)
from lossattn.models.minet import MINetDS, MINetRC
from lossattn.models.multilabel import (
    AttentionMultiLabelMIL,
    EmbeddingPoolMultiLabelMIL,
    InstancePoolMultiLabelMIL,
    LossAttentionMultiLabelMIL,
    MultiLabelMILModel,
)
from lossattn.models.output import HEADS, MILOutput
from lossattn.models.pooling import AttentionPool, LossAttentionPool, MaxPool, MeanPool, create_pool
from lossattn.models.registry import (
    EXTRACTORS,
    MODELS,
    create_model,
    list_models,
    model_info,
    model_tags,
    register_model,
)
from lossattn.models.resnet import ResNet18Features, ResNetMIL, feature_grid

__all__ = [
    "EXTRACTORS",
    "HEADS",
    "MODELS",
    "AttentionMIL",
    "AttentionMultiLabelMIL",
    "AttentionPool",
    "CifarBagsCNN",
    "EmbeddingPoolMIL",
    "EmbeddingPoolMultiLabelMIL",
    "IdentityExtractor",
    "InstancePoolMIL",
    "InstancePoolMultiLabelMIL",
    "LeNet5",
    "LossAttentionMIL",
    "LossAttentionMultiLabelMIL",
    "LossAttentionPool",
    "MILModel",
    "MILOutput",
    "MINetDS",
    "MINetRC",
    "MLPExtractor",
    "MaxPool",
    "MeanPool",
    "MultiLabelMILModel",
    "ResNet18Features",
    "ResNetMIL",
    "bag_loss",
    "build_extractor",
    "create_extractor",
    "create_model",
    "create_pool",
    "feature_grid",
    "list_extractors",
    "list_models",
    "model_info",
    "model_tags",
    "register_model",
]
