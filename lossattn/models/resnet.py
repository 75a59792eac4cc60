"""ResNet18-MIL (Shi et al. 2020, Sec. 5, Tables 4/5): every position of the last feature map is an instance.

The backbone is ResNet18 with a 3×3, stride-1 stem and no max-pool (the CIFAR variant used by the
paper's reference code): ``(B, 3, H, W)`` → ``(B, 512, h, w)`` with ``h = ⌈H/8⌉``, ``w = ⌈W/8⌉``
(4×4 = 16 positions on CIFAR-10, 8×8 = 64 on Tiny ImageNet). The MIL pooling — mean, max, Attention,
Gated-Attention or Loss-Attention — replaces global average pooling: one image is one bag whose
``h·w`` instances are the feature vectors at the positions, in row-major order (position
``p = i·w + j`` is row ``i``, column ``j``). There is no padding: the mask is all True.

These models take **images**, not bags: ``model(x)`` with ``x (B, C, H, W)``; the extractor (the backbone)
turns each image into its ``h·w`` position features, and pooling and loss see ``(B, h·w, D)`` like every other
model. Their registry entries carry the tag ``input_kind="image"`` (and the class says the same), so code
looping over the registry can tell them apart from the bag models, which take ``(B, N, *instance_shape)``.

``model.loss(output, target, mask=None, ensemble=α̃, consistency_weight=ω)`` is the loss of the
pooling's own bag model (:class:`~lossattn.models.bag.LossAttentionMIL` for Loss-Attention, cross-entropy
otherwise) plus the consistency cost of the weights against their temporal ensemble, which is
addressed by (image index, position): ``TemporalEnsemble([h·w] * num_images)``.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from lossattn import functional as LF
from lossattn.models.bag import AttentionMIL, EmbeddingPoolMIL, LossAttentionMIL
from lossattn.models.base import MILModel
from lossattn.models.extractors import IdentityExtractor
from lossattn.models.output import MILOutput
from lossattn.models.registry import register_model

__all__ = ["IMAGE_POOLINGS", "ResNet18Features", "ResNetMIL", "feature_grid"]

IMAGE_POOLINGS = ("mean", "max", "attention", "gated_attention", "loss_attention")


def feature_grid(height: int, width: int) -> tuple[int, int]:
    """Side lengths ``(h, w)`` of the last feature map for an ``height × width`` input.

    The stem and ``layer1`` keep the size; ``layer2``–``layer4`` each halve it with a 3×3 stride-2
    convolution with padding 1, i.e. ``n → ⌈n/2⌉``; so ``h = ⌈H/8⌉`` applied as three halvings.
    """
    h, w = int(height), int(width)
    for _ in range(3):
        h, w = (h + 1) // 2, (w + 1) // 2
    return h, w


class _BasicBlock(nn.Module):
    """ResNet basic block: two 3×3 conv-BN, identity or 1×1 conv-BN shortcut, ReLU after the sum."""

    def __init__(self, in_planes: int, planes: int, stride: int = 1) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_planes, planes, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = None
        if stride != 1 or in_planes != planes:
            self.downsample = nn.Sequential(nn.Conv2d(in_planes, planes, 1, stride, bias=False), nn.BatchNorm2d(planes))

    def forward(self, x: Tensor) -> Tensor:
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        identity = x if self.downsample is None else self.downsample(x)
        return self.relu(out + identity)


class ResNet18Features(nn.Module):
    """ResNet18 trunk with a 3×3 stride-1 stem and no max-pool: ``(B, C, H, W)`` → ``(B, 8·width, h, w)``.

    With ``width=64`` this is torchvision's ``resnet18`` with ``conv1`` replaced by a 3×3 stride-1
    convolution, ``maxpool`` removed and ``avgpool``/``fc`` dropped (same layers, same parameter
    count, same initialisation scheme: Kaiming-normal convolutions, BN weight 1 and bias 0). A smaller
    ``width`` gives the same architecture with thinner layers (for tests and CPU smoke runs).

    Args:
        in_channels: image channels (3).
        width: channels of the first stage (64); the stages have width × (1, 2, 4, 8).
    """

    def __init__(self, in_channels: int = 3, width: int = 64) -> None:
        super().__init__()
        if int(in_channels) < 1 or int(width) < 1:
            raise ValueError(f"ResNet18Features needs in_channels >= 1 and width >= 1, got {in_channels}, {width}")
        w = int(width)
        self.conv1 = nn.Conv2d(int(in_channels), w, 3, 1, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(w)
        self.relu = nn.ReLU(inplace=True)
        planes = [w, 2 * w, 4 * w, 8 * w]
        layers = []
        in_planes = w
        for i, p in enumerate(planes):
            stride = 1 if i == 0 else 2
            layers.append(nn.Sequential(_BasicBlock(in_planes, p, stride), _BasicBlock(p, p, 1)))
            in_planes = p
        self.layer1, self.layer2, self.layer3, self.layer4 = layers
        self.in_channels = int(in_channels)
        self.out_features = 8 * w
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)

    def forward(self, x: Tensor) -> Tensor:
        x = self.relu(self.bn1(self.conv1(x)))
        return self.layer4(self.layer3(self.layer2(self.layer1(x))))


class ResNetMIL(MILModel):
    """ResNet18 whose last feature-map positions are instances, pooled by a MIL pooling.

    Args:
        pooling: one of :data:`IMAGE_POOLINGS`.
        num_classes: K.
        in_channels: image channels.
        width: backbone width (64 = ResNet18).
        lam: λ of Loss-Attention (the paper: 1 for image classification).
        reduction: Loss-Attention's reduction of the fused instance loss over positions (``"mean"``: the
            reference code's ``mean`` over all positions of the batch).
        consistency_reduction: reduction of the consistency cost over positions (``"mean"``: the
            reference code's ``F.mse_loss`` over all positions of the batch, used with ω = 400·ramp-up).
        hidden: width of the (gated) attention network.

    The MIL part is an ordinary bag model (:class:`LossAttentionMIL`, :class:`AttentionMIL` or
    :class:`EmbeddingPoolMIL`) on the 512-d position features, held as ``self.mil``; its ``pool`` and
    ``loss`` are used as they are.
    """

    input_kind = "image"

    def __init__(
        self,
        pooling: str = "loss_attention",
        num_classes: int = 10,
        in_channels: int = 3,
        width: int = 64,
        lam: float = 1.0,
        reduction: str = "mean",
        consistency_reduction: str = "mean",
        hidden: int = 128,
    ) -> None:
        if pooling not in IMAGE_POOLINGS:
            raise ValueError(f"ResNetMIL: unknown pooling {pooling!r}; valid poolings: {', '.join(IMAGE_POOLINGS)}")
        super().__init__(ResNet18Features(in_channels, width), num_classes)
        ident = IdentityExtractor(self.feature_dim)
        if pooling == "loss_attention":
            self.mil: MILModel = LossAttentionMIL(ident, num_classes, lam, reduction, consistency_reduction)
        elif pooling in ("attention", "gated_attention"):
            self.mil = AttentionMIL(ident, num_classes, hidden, pooling == "gated_attention", "softmax")
        else:
            self.mil = EmbeddingPoolMIL(ident, num_classes, pooling, "softmax")
        self.pooling = pooling

    @property
    def has_weights(self) -> bool:  # type: ignore[override]
        """Attention poolings have weights; mean and max pooling have the class activation map instead."""
        return self.mil.has_weights

    @property
    def classifier(self) -> nn.Linear:
        """The bag classifier (for Loss-Attention also the attention's scorer)."""
        return self.mil.classifier

    # ------------------------------------------------------------------ forward
    def _check_images(self, x: Tensor) -> None:
        if not isinstance(x, Tensor) or not x.is_floating_point():
            raise TypeError(f"{type(self).__name__} takes a floating image tensor (B, C, H, W), got {_describe(x)}")
        if x.dim() != 4 or x.shape[1] != self.extractor.in_channels:
            raise ValueError(
                f"{type(self).__name__} takes images (B, {self.extractor.in_channels}, H, W) — one image per bag, "
                f"its instances are the feature-map positions — got shape {tuple(x.shape)}"
            )

    @staticmethod
    def num_instances(image_shape: tuple[int, ...]) -> int:
        """Instances (feature-map positions) of one image of shape ``(C, H, W)``: ``h·w`` of :func:`feature_grid`."""
        h, w = feature_grid(int(image_shape[-2]), int(image_shape[-1]))
        return h * w

    def feature_map(self, x: Tensor) -> Tensor:
        """Backbone output ``(B, D, h, w)`` for images ``x (B, C, H, W)``."""
        self._check_images(x)
        return self.extractor(x)

    @staticmethod
    def position_mask(features: Tensor) -> Tensor:
        """The all-True mask ``(B, h·w)`` of a batch of position features ``(B, h·w, D)``."""
        return LF.default_mask(features)

    def _mask(self, mask: Tensor | None, B: int, N: int, device) -> Tensor:
        if mask is None:
            return torch.ones(B, N, dtype=torch.bool, device=device)
        if not isinstance(mask, Tensor) or mask.dtype != torch.bool or tuple(mask.shape) != (B, N):
            raise ValueError(
                f"{type(self).__name__}: mask must be None or a bool tensor of shape ({B}, {N}) "
                f"(images x positions), got {_describe(mask)}"
            )
        if not bool(mask.all()):
            raise ValueError(
                f"{type(self).__name__}: every feature-map position is an instance; the mask must be all True"
            )
        return mask

    def embed(self, x: Tensor, mask: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """Position features ``h (B, h·w, D)`` (row-major) and the all-True mask ``(B, h·w)``."""
        fmap = self.feature_map(x)
        B, D, h, w = fmap.shape
        feats = fmap.flatten(2).transpose(1, 2)  # (B, h*w, D)
        return feats, self._mask(mask, B, h * w, x.device)

    def pool(self, h: Tensor, mask: Tensor) -> MILOutput:
        out = self.mil.pool(h, mask)
        instance_logits = out.instance_logits
        if instance_logits is None:
            instance_logits = self.classifier(h)  # per-position logits: the class activation map
        return MILOutput(out.bag_logits, out.weights, instance_logits, out.head, list(out.aux_logits))

    def forward(self, x: Tensor, mask: Tensor | None = None) -> MILOutput:
        fmap = self.feature_map(x)
        B, D, h, w = fmap.shape
        feats = fmap.flatten(2).transpose(1, 2)
        out = self.pool(feats, self._mask(mask, B, h * w, x.device))
        out.grid = (h, w)
        return out

    # ------------------------------------------------------------------ loss
    def loss(
        self,
        output: MILOutput,
        target: Tensor,
        mask: Tensor | None = None,
        *,
        ensemble: Tensor | None = None,
        consistency_weight: float = 0.0,
    ) -> tuple[Tensor, dict[str, Tensor]]:
        """The pooling's bag loss (+ Loss-Attention's fused instance loss) + ω · consistency cost.

        ``mask`` may be None (all positions); ``ensemble (B, h·w)`` holds α̃ for the images of the batch.
        """
        B = output.bag_logits.shape[0]
        N = output.weights.shape[1] if output.weights is not None else output.instance_logits.shape[1]
        mask = self._mask(mask, B, N, output.bag_logits.device)
        return self.mil.loss(output, target, mask, ensemble=ensemble, consistency_weight=consistency_weight)

    def weight_map(self, output: MILOutput) -> Tensor:
        """``output.weight_map()``: the weights as ``(B, h, w)``."""
        return output.weight_map()


def _describe(value) -> str:
    if isinstance(value, Tensor):
        return f"{value.dtype} tensor of shape {tuple(value.shape)}"
    return type(value).__name__


# --------------------------------------------------------------------------- registry entries

_DESCRIPTIONS = {
    "mean": "ResNet18-MIL (3x3 stem), feature-map positions mean-pooled (= global average pooling); takes images",
    "max": "ResNet18-MIL (3x3 stem), feature-map positions max-pooled; takes images",
    "attention": "ResNet18-MIL (3x3 stem), Attention (Ilse et al.) over feature-map positions; takes images",
    "gated_attention": "ResNet18-MIL (3x3 stem), Gated-Attention over feature-map positions; takes images",
    "loss_attention": "ResNet18-MIL (3x3 stem), Loss-Attention over feature-map positions; takes images",
}


def _register(pooling: str) -> None:
    def build(
        in_features=None,
        num_classes=10,
        in_channels=3,
        width=64,
        lam=1.0,
        reduction="mean",
        consistency_reduction="mean",
        hidden=128,
    ):
        # in_features is accepted (every builder is called with it) but unused: the input is an image
        return ResNetMIL(pooling, num_classes, in_channels, width, lam, reduction, consistency_reduction, hidden)

    build.__name__ = f"resnet18_{pooling}"
    register_model(f"resnet18_{pooling}", _DESCRIPTIONS[pooling], input_kind="image")(build)


for _pooling in IMAGE_POOLINGS:
    _register(_pooling)
del _pooling
