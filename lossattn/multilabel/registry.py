"""The multi-label model registry, separate from the single-label one (``lossattn.list_models()``).

Multi-label models take multi-hot ``(B, K)`` targets and return
:class:`~lossattn.multilabel.output.MultiLabelOutput`; keeping them out of the single-label registry means
code that loops over ``lossattn.list_models()`` expecting softmax/sigmoid heads with integer targets never
meets them.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from lossattn.registry import Registry

__all__ = [
    "MULTILABEL_MODELS",
    "register_multilabel_model",
    "create_multilabel_model",
    "list_multilabel_models",
    "multilabel_model_info",
]

MULTILABEL_MODELS: Registry = Registry("multi-label model")


def register_multilabel_model(name: str, description: str = "") -> Callable:
    """Decorator registering a multi-label model builder under ``name``."""
    return MULTILABEL_MODELS.register(name, description)


def _ensure_builtin() -> None:
    import lossattn.multilabel.models  # noqa: F401  (the built-in models register themselves on import)


def create_multilabel_model(name: str, **kwargs: Any):
    """Build a registered multi-label model, e.g.
    ``create_multilabel_model("loss_attention_multilabel", num_labels=3, extractor="lenet5")``.

    Raises:
        ValueError: unknown name (the message lists the valid names).
    """
    _ensure_builtin()
    return MULTILABEL_MODELS.create_named(name, **kwargs)


def list_multilabel_models() -> list[str]:
    """Names of all registered multi-label models, sorted."""
    _ensure_builtin()
    return MULTILABEL_MODELS.names()


def multilabel_model_info(name: str) -> str:
    """One-line description of a registered multi-label model."""
    _ensure_builtin()
    return MULTILABEL_MODELS.describe(name)
