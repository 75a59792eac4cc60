"""The architectures the hand-written many-runs backend trains, and its stacked-parameter layer functions.

Parameters of the ``R`` runs are stacked per name with a leading run dimension; 2-D weights are stored
transposed, ``(k, in, out)``, so that every product is a plain ``bmm`` and every weight gradient is written
contiguously (:func:`to_engine` / :func:`from_engine` convert).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from lossattn.engine.config import TrainConfig
from lossattn.models.bag import AttentionMIL, LossAttentionMIL
from lossattn.models.base import MILModel
from lossattn.models.extractors import MLPExtractor

__all__ = [
    "SUPPORTED_MODELS",
    "Arch",
    "arch_of",
    "attention_scores",
    "classifier",
    "classifier_names",
    "from_engine",
    "linear",
    "masked_softmax",
    "mlp",
    "to_engine",
    "unsupported_reason",
]


#: registered model names the engine can train (with the MLP extractor)
SUPPORTED_MODELS = ("loss_attention", "attention", "gated_attention")


def unsupported_reason(model: nn.Module, config: TrainConfig) -> str | None:
    """None when :class:`VectorizedTrainer` can train ``model`` with ``config``, else why not."""
    if config.batch_size != 1:
        return f"batch_size={config.batch_size} (the vectorized engine trains one bag per step)"
    if config.consistency_weight > 0:
        return "the temporal-ensemble consistency cost (consistency_weight > 0) is not vectorized"
    if config.grad_clip:
        return "gradient clipping is not vectorized"
    if config.amp:
        return "AMP is not vectorized"
    if type(model) is LossAttentionMIL:
        pass
    elif type(model) is AttentionMIL:
        if model.head != "softmax":
            return f"AttentionMIL with the {model.head!r} head is not vectorized (softmax head only)"
    else:
        return f"model {type(model).__name__} is not vectorized (supported: LossAttentionMIL, AttentionMIL)"
    ext = getattr(model, "extractor", None)
    if type(ext) is not MLPExtractor:
        return f"extractor {type(ext).__name__} is not vectorized (MLP extractor only)"
    mods = list(ext.net)
    if len(mods) % 3 or not all(
        isinstance(a, nn.Linear) and isinstance(b, nn.ReLU) and isinstance(c, nn.Dropout)
        for a, b, c in zip(mods[::3], mods[1::3], mods[2::3], strict=True)
    ):
        return "the MLP extractor is not a stack of Linear-ReLU-Dropout blocks"
    if len({float(m.p) for m in mods[2::3]}) != 1:
        return "the MLP extractor's dropout probabilities differ between layers"
    return None


# --------------------------------------------------------------------------- architecture


@dataclass
class Arch:
    """What the batched forward needs to know about the (identical) architecture of the runs."""

    kind: str  # "loss_attention" | "attention"
    names: list[str]  # parameter names, in model.named_parameters() order
    layers: list[tuple[str, str]]  # MLP (weight, bias) names
    dropout: float
    widths: list[int]  # MLP layer widths
    lam: float = 0.0
    reduction: str = "mean"
    gated: bool = False
    num_classes: int = 2


def arch_of(model: MILModel) -> Arch:
    names = [n for n, _ in model.named_parameters()]
    mods = list(model.extractor.net)
    layers = [(f"extractor.net.{3 * i}.weight", f"extractor.net.{3 * i}.bias") for i in range(len(mods) // 3)]
    widths = [int(m.out_features) for m in mods[::3]]
    dropout = float(mods[2].p)
    if isinstance(model, LossAttentionMIL):
        return Arch(
            "loss_attention",
            names,
            layers,
            dropout,
            widths,
            lam=model.lam,
            reduction=model.reduction,
            num_classes=model.num_classes,
        )
    return Arch(
        "attention", names, layers, dropout, widths, gated=model.attention.U is not None, num_classes=model.num_classes
    )


def linear(x: Tensor, w: Tensor, b: Tensor | None) -> Tensor:
    """Per-run linear layer: ``x (k, N, in)``, ``w (k, in, out)``, ``b (k, out)`` → ``(k, N, out)``."""
    if b is None:
        return torch.bmm(x, w)
    return torch.baddbmm(b.unsqueeze(1), x, w)


def mlp(arch: Arch, p: dict[str, Tensor], x: Tensor, drop: list[Tensor] | None) -> Tensor:
    h = x
    for i, (wn, bn) in enumerate(arch.layers):
        h = linear(h, p[wn], p[bn]).relu_()
        if drop is not None:
            h = h * drop[i]
    return h


def attention_scores(arch: Arch, p: dict[str, Tensor], h: Tensor) -> Tensor:
    a = linear(h, p["attention.V.weight"], p["attention.V.bias"]).tanh()
    if arch.gated:
        a = a * linear(h, p["attention.U.weight"], p["attention.U.bias"]).sigmoid()
    return torch.bmm(a, p["attention.w.weight"]).squeeze(-1)  # (k, N)


def classifier_names(arch: Arch) -> tuple[str, str]:
    if arch.kind == "loss_attention":
        return "attention.classifier.weight", "attention.classifier.bias"
    return "classifier.weight", "classifier.bias"


def classifier(arch: Arch, p: dict[str, Tensor]) -> tuple[Tensor, Tensor]:
    wn, bn = classifier_names(arch)
    return p[wn], p[bn]


def masked_softmax(scores: Tensor, mask: Tensor) -> Tensor:
    # -inf at padding: exp gives exactly 0 there (every bag has a real instance)
    return torch.softmax(scores.masked_fill(~mask, -math.inf), dim=1)


def to_engine(p: Tensor) -> Tensor:
    """Parameter in the engine's layout: 2-D (nn.Linear ``(out, in)``) weights transposed to ``(in, out)``."""
    return p.t() if p.dim() == 2 else p


def from_engine(p: Tensor) -> Tensor:
    return p.t() if p.dim() == 2 else p
