"""MI-Net with deep supervision and with residual connections (Wang et al. 2018), for feature bags.

mi-Net and MI-Net themselves are :class:`InstancePoolMIL` / :class:`EmbeddingPoolMIL` with the MLP
extractor and a sigmoid head (registered as ``minet_instance`` and ``minet_embedding``).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn

from lossattn.models.base import MILModel, check_head
from lossattn.models.extractors import IdentityExtractor
from lossattn.models.output import MILOutput
from lossattn.models.pooling import create_pool
from lossattn.models.registry import register_model

__all__ = ["MINetDS", "MINetRC"]


def _dense(in_features: int, out_features: int, dropout: float) -> nn.Sequential:
    return nn.Sequential(nn.Linear(in_features, out_features), nn.ReLU(), nn.Dropout(dropout))


def _combine(level_logits: list[Tensor], head: str) -> Tensor:
    # the DS prediction averages the levels' probabilities; returned as logits of that average
    if head == "sigmoid":
        p = torch.stack([torch.sigmoid(z[:, 0]) for z in level_logits]).mean(0)
        return torch.logit(p.clamp(1e-7, 1 - 1e-7)).unsqueeze(1)
    p = torch.stack([torch.softmax(z, dim=-1) for z in level_logits]).mean(0)
    return torch.log(p.clamp_min(1e-12))


class MINetDS(MILModel):
    """MI-Net with deep supervision: every layer's pooled embedding gets its own classifier.

    ``h1 = fc(x), h2 = fc(h1), h3 = fc(h2)``; ``s_l = fc_l(pool_t h_l)``; loss = Σ_l loss(s_l);
    prediction = mean of the levels' probabilities.
    """

    def __init__(
        self,
        in_features: int,
        num_classes: int = 2,
        hidden: Sequence[int] = (256, 128, 64),
        dropout: float = 0.5,
        pool: str = "max",
        head: str = "sigmoid",
    ) -> None:
        super().__init__(IdentityExtractor(in_features), num_classes)
        width = check_head(head, num_classes, type(self).__name__)
        self.head = head
        widths = [int(in_features), *[int(h) for h in hidden]]
        self.layers = nn.ModuleList(_dense(a, b, dropout) for a, b in zip(widths[:-1], widths[1:], strict=True))
        self.classifiers = nn.ModuleList(nn.Linear(b, width) for b in widths[1:])
        self.pooling = create_pool(pool)

    def pool(self, h: Tensor, mask: Tensor) -> MILOutput:
        level_logits = []
        for layer, classifier in zip(self.layers, self.classifiers, strict=True):
            h = layer(h)  # (B, N, D_l)
            level_logits.append(classifier(self.pooling(h, mask)))  # (B, K)
        return MILOutput(_combine(level_logits, self.head), None, None, self.head, level_logits)


class MINetRC(MILModel):
    """MI-Net with residual connections: ``b_l = b_{l-1} + pool_t h_l``, classifier on the last ``b``.

    ``h1 = fc(x), h2 = fc(h1), h3 = fc(h2)``, all of width ``hidden``.
    """

    def __init__(
        self,
        in_features: int,
        num_classes: int = 2,
        hidden: int = 128,
        depth: int = 3,
        dropout: float = 0.5,
        pool: str = "max",
        head: str = "sigmoid",
    ) -> None:
        super().__init__(IdentityExtractor(in_features), num_classes)
        width = check_head(head, num_classes, type(self).__name__)
        if depth < 1:
            raise ValueError(f"MINetRC: depth must be >= 1, got {depth}")
        self.head = head
        widths = [int(in_features)] + [int(hidden)] * depth
        self.layers = nn.ModuleList(_dense(a, b, dropout) for a, b in zip(widths[:-1], widths[1:], strict=True))
        self.pooling = create_pool(pool)
        self.classifier = nn.Linear(int(hidden), width)

    def pool(self, h: Tensor, mask: Tensor) -> MILOutput:
        bag = None
        for layer in self.layers:
            h = layer(h)  # (B, N, hidden)
            pooled = self.pooling(h, mask)  # (B, hidden)
            bag = pooled if bag is None else bag + pooled
        return MILOutput(self.classifier(bag), None, None, self.head)


@register_model("minet_ds", "MI-Net with deep supervision (Wang et al. 2018)")
def minet_ds(in_features=None, num_classes=2, hidden=(256, 128, 64), dropout=0.5, pool="max", head="sigmoid"):
    if in_features is None:
        raise ValueError("minet_ds needs in_features (the width of one instance)")
    return MINetDS(in_features, num_classes, hidden, dropout, pool, head)


@register_model("minet_rc", "MI-Net with residual connections (Wang et al. 2018)")
def minet_rc(in_features=None, num_classes=2, hidden=128, depth=3, dropout=0.5, pool="max", head="sigmoid"):
    if in_features is None:
        raise ValueError("minet_rc needs in_features (the width of one instance)")
    return MINetRC(in_features, num_classes, hidden, depth, dropout, pool, head)
