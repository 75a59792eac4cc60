"""Instance feature extractors of the paper's experiments (Shi et al. 2020, Sec. 5); each maps ``(M, *instance_shape)`` to ``(M, out_features)``."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn

from lossattn import functional as LF
from lossattn.models.registry import EXTRACTORS

__all__ = ["MLPExtractor", "LeNet5", "CifarBagsCNN", "IdentityExtractor", "create_extractor", "list_extractors"]


class MLPExtractor(nn.Module):
    """Fully connected extractor for precomputed features (classic MIL): ``fc-ReLU-dropout`` per layer.

    Inputs of any trailing shape are flattened, so ``(M, 1, 8, 8)`` images work too.

    Args:
        in_features: width of one (flattened) instance.
        hidden: layer widths (paper: 256, 128, 64).
        dropout: dropout probability after every layer.
    """

    def __init__(self, in_features: int, hidden: Sequence[int] = (256, 128, 64), dropout: float = 0.5) -> None:
        super().__init__()
        if in_features is None or int(in_features) < 1:
            raise ValueError(f"MLPExtractor needs in_features >= 1, got {in_features!r}")
        if not hidden:
            raise ValueError("MLPExtractor needs at least one hidden layer width")
        layers: list[nn.Module] = []
        width = int(in_features)
        for h in hidden:
            layers += [nn.Linear(width, int(h)), nn.ReLU(), nn.Dropout(dropout)]
            width = int(h)
        self.net = nn.Sequential(*layers)
        self.in_features = int(in_features)
        self.out_features = width

    def forward(self, x: Tensor) -> Tensor:
        x = x.flatten(1)  # (M, D_in)
        if x.shape[1] != self.in_features:
            raise ValueError(f"MLPExtractor expects {self.in_features} features per instance, got {x.shape[1]}")
        return self.net(x)


def conv_pool_features(conv: nn.Sequential, x: Tensor) -> Tensor:
    """Run the ``conv-ReLU-pool`` stack ``conv`` on ``x (M, C, H, W)``; same values as ``conv(x)``.

    On CPU the first convolution's output is switched to channels-last memory: PyTorch's NCHW
    ``max_pool2d`` is about 8x slower on CPU than its channels-last kernel, and a convolution of a 1- or
    3-channel NCHW input returns NCHW, so without the switch both pools run the slow kernel. The later
    layers keep channels-last by themselves. (LeNet5 forward+backward on 10 MNIST instances, one thread:
    4.3 ms -> 3.1 ms.) CUDA inputs, and inputs inside ``torch.func.vmap`` (which has no channels-last
    batching rule), run the stack unchanged.
    """
    switch = x.device.type == "cpu" and not LF.needs_static_shapes(x)
    for index, layer in enumerate(conv):
        x = layer(x)
        if index == 0 and switch:
            x = x.contiguous(memory_format=torch.channels_last)
    return x


def conv5_20_50(in_channels: int) -> nn.Sequential:
    """``conv5-20 ReLU pool2, conv5-50 ReLU pool2``: the convolutional part of both paper CNNs (Sec. 5)."""
    return nn.Sequential(
        nn.Conv2d(in_channels, 20, kernel_size=5),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Conv2d(20, 50, kernel_size=5),
        nn.ReLU(),
        nn.MaxPool2d(2),
    )


def conv5_20_50_side(image_size: int, owner: str) -> int:
    """Side of :func:`conv5_20_50`'s output map for square images of ``image_size`` pixels (valid convs)."""
    side = ((image_size - 4) // 2 - 4) // 2
    if side < 1:
        raise ValueError(f"{owner} needs images of at least 16 pixels per side, got {image_size}")
    return side


class LeNet5(nn.Module):
    """LeNet5 of the MNIST-bags experiments (Ilse et al.; the authors' code).

    ``conv5-20 ReLU pool2, conv5-50 ReLU pool2, fc500, Dropout, ReLU``: dropout *before* the ReLU,
    as in the authors' released MNIST-bags code.

    Args:
        in_channels: image channels (1 for MNIST).
        image_size: side of the square input (28 for MNIST).
        out_features: width of the last layer (500).
        dropout: dropout probability.
    """

    def __init__(self, in_channels: int = 1, image_size: int = 28, out_features: int = 500, dropout: float = 0.5):
        super().__init__()
        self.conv = conv5_20_50(in_channels)
        side = conv5_20_50_side(image_size, "LeNet5")
        self.fc = nn.Sequential(nn.Linear(50 * side * side, out_features), nn.Dropout(dropout), nn.ReLU())
        self.instance_shape = (in_channels, image_size, image_size)
        self.out_features = out_features

    def forward(self, x: Tensor) -> Tensor:
        if tuple(x.shape[1:]) != self.instance_shape:
            raise ValueError(f"LeNet5 expects instances of shape {self.instance_shape}, got {tuple(x.shape[1:])}")
        return self.fc(conv_pool_features(self.conv, x).flatten(1))


class CifarBagsCNN(nn.Module):
    """CNN of the CIFAR10-bags experiment (Shi et al. 2020, Sec. 5).

    ``conv5-20 ReLU pool2, conv5-50 ReLU pool2, fc500 ReLU, dropout, fc500 tanh``.
    """

    def __init__(self, in_channels: int = 3, image_size: int = 32, out_features: int = 500, dropout: float = 0.5):
        super().__init__()
        self.conv = conv5_20_50(in_channels)
        side = conv5_20_50_side(image_size, "CifarBagsCNN")
        self.fc = nn.Sequential(
            nn.Linear(50 * side * side, 500),
            nn.ReLU(),
            nn.Dropout(dropout),
            nn.Linear(500, out_features),
            nn.Tanh(),
        )
        self.instance_shape = (in_channels, image_size, image_size)
        self.out_features = out_features

    def forward(self, x: Tensor) -> Tensor:
        if tuple(x.shape[1:]) != self.instance_shape:
            raise ValueError(f"CifarBagsCNN expects instances of shape {self.instance_shape}, got {tuple(x.shape[1:])}")
        return self.fc(conv_pool_features(self.conv, x).flatten(1))


class IdentityExtractor(nn.Module):
    """Use precomputed instance features as they are (flattened)."""

    def __init__(self, in_features: int) -> None:
        super().__init__()
        if in_features is None or int(in_features) < 1:
            raise ValueError(f"IdentityExtractor needs in_features >= 1, got {in_features!r}")
        self.in_features = self.out_features = int(in_features)

    def forward(self, x: Tensor) -> Tensor:
        x = x.flatten(1)
        if x.shape[1] != self.in_features:
            raise ValueError(f"IdentityExtractor expects {self.in_features} features per instance, got {x.shape[1]}")
        return x


EXTRACTORS.register("mlp", "fc256-ReLU-drop, fc128-ReLU-drop, fc64-ReLU-drop (classic MIL)")(MLPExtractor)
EXTRACTORS.register("lenet5", "LeNet5 for 1x28x28 MNIST instances")(LeNet5)
EXTRACTORS.register("cifar_cnn", "the CIFAR10-bags CNN for 3x32x32 instances")(CifarBagsCNN)
EXTRACTORS.register("identity", "precomputed features used as they are")(IdentityExtractor)


def create_extractor(name: str, **kwargs) -> nn.Module:
    """Build a registered extractor by name (see :func:`list_extractors`)."""
    return EXTRACTORS.create(name, **kwargs)


def list_extractors() -> list[str]:
    return EXTRACTORS.names()


def _uses_in_features(name: str) -> bool:
    return name in ("mlp", "identity")


def build_extractor(extractor: str | nn.Module, in_features: int | None, kwargs: dict | None) -> nn.Module:
    """Resolve the ``extractor`` argument of a model builder into a module with ``out_features``."""
    if isinstance(extractor, nn.Module):
        if not hasattr(extractor, "out_features"):
            raise TypeError(f"a custom extractor must expose `out_features`; {type(extractor).__name__} does not")
        return extractor
    kwargs = dict(kwargs or {})
    if _uses_in_features(extractor):
        if in_features is None:
            raise ValueError(f"extractor {extractor!r} needs in_features (the width of one instance)")
        kwargs.setdefault("in_features", in_features)
    return create_extractor(extractor, **kwargs)
