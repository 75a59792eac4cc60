"""Name → builder registries (models, extractors), with tags and helpful errors for unknown names.

This module is a leaf: it imports nothing from lossattn. The built-in models register themselves when
:mod:`lossattn.models` is imported, which ``import lossattn`` does (the layout of timm's ``_registry.py``).

Every model entry carries tags, so callers ask the registry instead of checking classes:

* ``task``: ``"single_label"`` (integer bag classes, softmax or binary sigmoid head) or ``"multi_label"``
  (a multi-hot ``(B, L)`` target, one sigmoid per label);
* ``input_kind``: ``"instances"`` (``x (B, N, *instance_shape)`` plus a mask) or ``"image"`` (``x (B, C, H, W)``:
  the model's extractor turns each image into its feature-map positions, which are the instances).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Generic, TypeVar

__all__ = [
    "EXTRACTORS",
    "INPUT_KINDS",
    "MODELS",
    "Registry",
    "TASKS",
    "create_model",
    "list_models",
    "model_info",
    "model_tags",
    "register_model",
]

T = TypeVar("T")

TASKS = ("single_label", "multi_label")
INPUT_KINDS = ("instances", "image")


class Registry(Generic[T]):
    """A mapping from names to builder callables, with a one-line description and tags each."""

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._builders: dict[str, Callable[..., T]] = {}
        self._descriptions: dict[str, str] = {}
        self._tags: dict[str, dict[str, str]] = {}

    def register(self, name: str, description: str = "", **tags: str) -> Callable[[Callable[..., T]], Callable[..., T]]:
        def decorator(builder: Callable[..., T]) -> Callable[..., T]:
            if name in self._builders:
                raise ValueError(f"{self.kind} {name!r} is already registered")
            self._builders[name] = builder
            self._descriptions[name] = description or (builder.__doc__ or "").strip().split("\n")[0]
            self._tags[name] = dict(tags)
            return builder

        return decorator

    def get(self, name: str) -> Callable[..., T]:
        if not isinstance(name, str) or name not in self._builders:
            raise ValueError(f"unknown {self.kind} {name!r}; valid {self.kind}s: {', '.join(self.names())}")
        return self._builders[name]

    def create(self, name: str, **kwargs: Any) -> T:
        return self.get(name)(**kwargs)

    def names(self, **tags: str | None) -> list[str]:
        """Registered names, sorted; ``names(task="multi_label")`` keeps the entries with those tags."""
        wanted = {k: v for k, v in tags.items() if v is not None}
        return sorted(n for n in self._builders if all(self._tags[n].get(k) == v for k, v in wanted.items()))

    def describe(self, name: str) -> str:
        self.get(name)
        return self._descriptions[name]

    def tags(self, name: str) -> dict[str, str]:
        self.get(name)
        return dict(self._tags[name])

    def __contains__(self, name: object) -> bool:
        return name in self._builders


MODELS: Registry = Registry("model")
EXTRACTORS: Registry = Registry("extractor")


def register_model(
    name: str, description: str = "", *, task: str = "single_label", input_kind: str = "instances"
) -> Callable:
    """Decorator registering a model builder under ``name`` with its ``task`` and ``input_kind`` tags.

    Raises:
        ValueError: an unknown tag value (the message lists the valid ones) or a name registered twice.
    """
    if task not in TASKS:
        raise ValueError(f"register_model({name!r}): unknown task {task!r}; valid tasks: {', '.join(TASKS)}")
    if input_kind not in INPUT_KINDS:
        raise ValueError(
            f"register_model({name!r}): unknown input_kind {input_kind!r}; valid: {', '.join(INPUT_KINDS)}"
        )
    return MODELS.register(name, description, task=task, input_kind=input_kind)


def create_model(name: str, **kwargs: Any):
    """Build a registered model by name, e.g. ``create_model("loss_attention", in_features=166)``.

    The model remembers ``model_name`` and ``model_kwargs`` (checkpoints store them to rebuild it). Its class
    states the same ``task`` and ``input_kind`` as the registry's tags (a test checks they agree).

    Raises:
        ValueError: unknown name (the message lists the valid names).
    """
    model = MODELS.create(name, **kwargs)
    model.model_name = name
    model.model_kwargs = dict(kwargs)
    return model


def list_models(task: str | None = None, input_kind: str | None = None) -> list[str]:
    """Names of the registered models, sorted; optionally only those of one ``task`` and/or ``input_kind``."""
    for value, valid, what in ((task, TASKS, "task"), (input_kind, INPUT_KINDS, "input_kind")):
        if value is not None and value not in valid:
            raise ValueError(f"list_models: unknown {what} {value!r}; valid: {', '.join(valid)}")
    return MODELS.names(task=task, input_kind=input_kind)


def model_info(name: str) -> str:
    """One-line description of a registered model."""
    return MODELS.describe(name)


def model_tags(name: str) -> dict[str, str]:
    """The tags of a registered model: ``{"task": ..., "input_kind": ...}``."""
    return MODELS.tags(name)
