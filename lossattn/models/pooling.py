"""Thin modules over the functional poolings. Each takes ``h (B, N, D)`` and ``mask (B, N)``."""

from __future__ import annotations

from torch import Tensor, nn

from lossattn import functional as LF

__all__ = ["LossAttentionPool", "AttentionPool", "MeanPool", "MaxPool", "create_pool"]


class LossAttentionPool(nn.Module):
    """Loss-based attention: pooling and bag classifier share one linear layer (Shi et al. 2020, Eq. 4-6).

    Args:
        in_features: feature width D.
        num_classes: K.
    """

    def __init__(self, in_features: int, num_classes: int) -> None:
        super().__init__()
        self.classifier = nn.Linear(in_features, num_classes)

    def forward(self, h: Tensor, mask: Tensor | None = None) -> LF.LossAttentionOutput:
        return LF.loss_attention(h, self.classifier.weight, self.classifier.bias, mask)


class AttentionPool(nn.Module):
    """Ilse et al. (2018) attention: ``a_t = w·tanh(V h_t)``; gated: ``w·(tanh(V h_t) ⊙ σ(U h_t))``.

    Returns ``(embedding (B, D), weights (B, N))`` with weights a masked softmax of ``a``.
    """

    def __init__(self, in_features: int, hidden: int = 128, gated: bool = False) -> None:
        super().__init__()
        self.V = nn.Linear(in_features, hidden)
        self.U = nn.Linear(in_features, hidden) if gated else None
        # no bias: a constant added to every score cancels in the softmax, so it could never learn
        self.w = nn.Linear(hidden, 1, bias=False)
        self.gated = gated

    def scores(self, h: Tensor) -> Tensor:
        a = self.V(h).tanh()  # (B, N, hidden)
        if self.U is not None:
            a = a * self.U(h).sigmoid()
        return self.w(a).squeeze(-1)  # (B, N)

    def forward(self, h: Tensor, mask: Tensor | None = None) -> tuple[Tensor, Tensor]:
        return LF.attention_pool(h, self.scores(h), mask)


class MeanPool(nn.Module):
    """Mean over the real instances: ``(B, N, ...)`` → ``(B, ...)``."""

    def forward(self, h: Tensor, mask: Tensor | None = None) -> Tensor:
        return LF.masked_mean(h, mask)


class MaxPool(nn.Module):
    """Maximum over the real instances: ``(B, N, ...)`` → ``(B, ...)``."""

    def forward(self, h: Tensor, mask: Tensor | None = None) -> Tensor:
        return LF.masked_max(h, mask)


_SIMPLE_POOLS = {"mean": MeanPool, "max": MaxPool}


def create_pool(kind: str) -> nn.Module:
    """``"mean"`` or ``"max"`` pooling module."""
    if kind not in _SIMPLE_POOLS:
        raise ValueError(f"unknown pooling {kind!r}; valid poolings: {', '.join(sorted(_SIMPLE_POOLS))}")
    return _SIMPLE_POOLS[kind]()
