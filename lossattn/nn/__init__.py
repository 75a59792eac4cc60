"""Neural network modules: extractors, poolings, MIL models (all registered models are imported here)."""

from lossattn.nn.extractors import (
    CifarBagsCNN,
    IdentityExtractor,
    LeNet5,
    MLPExtractor,
    build_extractor,
    create_extractor,
    list_extractors,
)
from lossattn.nn.minet import MINetDS, MINetRC
from lossattn.nn.models import AttentionMIL, EmbeddingPoolMIL, InstancePoolMIL, LossAttentionMIL, MILModel, bag_loss
from lossattn.nn.output import MILOutput
from lossattn.nn.pooling import AttentionPool, LossAttentionPool, MaxPool, MeanPool, create_pool
from lossattn.nn.resnet_mil import ImageMILOutput, ResNet18Features, ResNetMIL, is_image_model

__all__ = [
    "ImageMILOutput",
    "ResNet18Features",
    "ResNetMIL",
    "is_image_model",
    "AttentionMIL",
    "AttentionPool",
    "CifarBagsCNN",
    "EmbeddingPoolMIL",
    "IdentityExtractor",
    "InstancePoolMIL",
    "LeNet5",
    "LossAttentionMIL",
    "LossAttentionPool",
    "MILModel",
    "MILOutput",
    "MINetDS",
    "MINetRC",
    "MLPExtractor",
    "MaxPool",
    "MeanPool",
    "bag_loss",
    "build_extractor",
    "create_extractor",
    "create_pool",
    "list_extractors",
]
