"""Name → builder registries (models, extractors) with helpful errors for unknown names."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Generic, TypeVar

__all__ = ["Registry", "MODELS", "EXTRACTORS", "register_model", "create_model", "list_models", "model_info"]

T = TypeVar("T")


class Registry(Generic[T]):
    """A mapping from names to builder callables, with a one-line description each."""

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._builders: dict[str, Callable[..., T]] = {}
        self._descriptions: dict[str, str] = {}

    def register(self, name: str, description: str = "") -> Callable[[Callable[..., T]], Callable[..., T]]:
        def decorator(builder: Callable[..., T]) -> Callable[..., T]:
            if name in self._builders:
                raise ValueError(f"{self.kind} {name!r} is already registered")
            self._builders[name] = builder
            self._descriptions[name] = description or (builder.__doc__ or "").strip().split("\n")[0]
            return builder

        return decorator

    def get(self, name: str) -> Callable[..., T]:
        if not isinstance(name, str) or name not in self._builders:
            raise ValueError(f"unknown {self.kind} {name!r}; valid {self.kind}s: {', '.join(self.names())}")
        return self._builders[name]

    def create(self, name: str, **kwargs: Any) -> T:
        return self.get(name)(**kwargs)

    def create_named(self, name: str, **kwargs: Any) -> T:
        """:meth:`create`, recording ``model_name`` and ``model_kwargs`` on the result (for checkpoints)."""
        obj = self.create(name, **kwargs)
        obj.model_name = name
        obj.model_kwargs = dict(kwargs)
        return obj

    def names(self) -> list[str]:
        return sorted(self._builders)

    def describe(self, name: str) -> str:
        self.get(name)
        return self._descriptions[name]

    def __contains__(self, name: object) -> bool:
        return name in self._builders


MODELS: Registry = Registry("model")
EXTRACTORS: Registry = Registry("extractor")


def register_model(name: str, description: str = "") -> Callable:
    """Decorator registering a model builder under ``name``."""
    return MODELS.register(name, description)


def _ensure_builtin_models() -> None:
    # the built-in models register themselves on import; importing here avoids a cycle
    import lossattn.nn  # noqa: F401


def create_model(name: str, **kwargs: Any):
    """Build a registered model by name, e.g. ``create_model("loss_attention", in_features=166)``.

    Raises:
        ValueError: unknown name (the message lists the valid names).
    """
    _ensure_builtin_models()
    return MODELS.create_named(name, **kwargs)


def list_models() -> list[str]:
    """Names of all registered models, sorted."""
    _ensure_builtin_models()
    return MODELS.names()


def model_info(name: str) -> str:
    """One-line description of a registered model."""
    _ensure_builtin_models()
    return MODELS.describe(name)
