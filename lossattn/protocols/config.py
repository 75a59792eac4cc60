"""Typed experiment configuration, YAML presets and ``key=value`` overrides.

An :class:`ExperimentConfig` says what data to use (:class:`DataConfig`), how to split it
(:class:`ProtocolConfig`), how to train (:class:`TrainConfig`) and which methods to compare
(``methods``: name → registered model + model kwargs). Presets live in ``lossattn/protocols/presets``.
"""

from __future__ import annotations

import copy
import dataclasses
import types
import typing
from dataclasses import asdict, dataclass, field, fields
from importlib import resources
from pathlib import Path
from typing import Any

import yaml

from lossattn.engine.config import TrainConfig
from lossattn.models.registry import list_models

__all__ = [
    "DataConfig",
    "PROTOCOL_KINDS",
    "ProtocolConfig",
    "TrainConfig",
    "MethodConfig",
    "ExperimentConfig",
    "list_presets",
    "load_preset",
    "load_config",
    "apply_overrides",
    "config_to_dict",
    "config_from_dict",
    "parse_override",
    "preset_dir",
]


@dataclass
class DataConfig:
    """Which bags: a dataset name known to :mod:`lossattn.datasets` (benchmark, generator or a path).

    ``kwargs`` go to the loader/generator (e.g. ``num_bags``, ``mean_bag_size``); ``test_kwargs`` to
    the test-split generator (e.g. ``num_bags: 1000``). ``standardize`` fits a per-feature
    standardiser on the training bags of every run (never on validation or test bags).
    """

    name: str = "digits-bags"
    root: str | None = None
    kwargs: dict[str, Any] = field(default_factory=dict)
    test_kwargs: dict[str, Any] = field(default_factory=dict)
    standardize: bool = False


PROTOCOL_KINDS = ("cv", "fixed", "all")


@dataclass
class ProtocolConfig:
    """How runs are formed.

    ``kind="cv"``: repeated stratified k-fold by bag (``folds`` × ``repeats``); ``kind="fixed"``: the
    dataset's own train/test split (a split column, or a generator's test bags), ``repeats`` times with
    different seeds (and freshly generated bags for generators); ``kind="all"``: every bag is a training bag and
    there is no test split — to train the model that is then used to predict other data. In each,
    ``val_fraction`` of the training bags (stratified) is held out for model selection; 0 disables selection
    (the last epoch is kept).

    With ``grouped`` (default) and data that has groups (a case or patient column), the folds and the validation
    split keep the bags of a group together, so no patient's slides end up on both sides of a split.
    """

    kind: str = "cv"
    folds: int = 10
    repeats: int = 5
    val_fraction: float = 0.2
    seed: int = 0
    grouped: bool = True

    def validate(self) -> None:
        if self.kind not in PROTOCOL_KINDS:
            raise ValueError(f"ProtocolConfig.kind must be one of {', '.join(PROTOCOL_KINDS)}, got {self.kind!r}")
        if self.kind == "cv" and self.folds < 2:
            raise ValueError(f"ProtocolConfig.folds must be >= 2 for cross-validation, got {self.folds}")
        if self.repeats < 1:
            raise ValueError(f"ProtocolConfig.repeats must be >= 1, got {self.repeats}")
        if not 0 <= self.val_fraction < 1:
            raise ValueError(f"ProtocolConfig.val_fraction must be in [0, 1), got {self.val_fraction}")


@dataclass
class MethodConfig:
    """One method of a comparison: a registered model and its kwargs (e.g. ``lam``), plus training overrides."""

    model: str = "loss_attention"
    kwargs: dict[str, Any] = field(default_factory=dict)
    train: dict[str, Any] = field(default_factory=dict)


@dataclass
class ExperimentConfig:
    """A whole experiment: data, protocol, training and the methods compared."""

    name: str = "experiment"
    data: DataConfig = field(default_factory=DataConfig)
    protocol: ProtocolConfig = field(default_factory=ProtocolConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    methods: dict[str, MethodConfig] = field(default_factory=lambda: {"loss_attention": MethodConfig()})
    metrics: list[str] = field(default_factory=lambda: ["accuracy"])
    notes: str = ""

    def validate(self) -> ExperimentConfig:
        self.train.validate()
        self.protocol.validate()
        if not self.methods:
            raise ValueError("ExperimentConfig.methods must name at least one method")
        for label, method in self.methods.items():
            if method.model not in list_models():
                raise ValueError(
                    f"method {label!r} uses unknown model {method.model!r}; valid models: {', '.join(list_models())}"
                )
            bad = set(method.train) - {f.name for f in fields(TrainConfig)}
            if bad:
                raise ValueError(
                    f"method {label!r} overrides unknown train keys {sorted(bad)}; "
                    f"valid keys: {', '.join(f.name for f in fields(TrainConfig))}"
                )
        return self

    def train_config_for(self, method: str) -> TrainConfig:
        """The training config of one method (the shared one with the method's overrides applied)."""
        cfg = copy.deepcopy(self.train)
        for key, value in self.methods[method].train.items():
            setattr(cfg, key, _coerce(TrainConfig, key, value, f"methods.{method}.train"))
        cfg.validate()
        return cfg


# --------------------------------------------------------------------------- dict <-> dataclass


def config_to_dict(cfg: Any) -> dict[str, Any]:
    """Plain-data (YAML/JSON-ready) form of a config dataclass."""
    out = asdict(cfg)
    return _listify(out)


def _listify(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _listify(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_listify(v) for v in value]
    return value


def _field_types(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def _coerce(cls: type, key: str, value: Any, where: str) -> Any:
    """Check and convert ``value`` for field ``key`` of dataclass ``cls``."""
    hints = _field_types(cls)
    if key not in hints:
        raise ValueError(f"unknown key {where}.{key}; valid keys: {', '.join(f.name for f in fields(cls))}")
    return _convert(hints[key], value, f"{where}.{key}")


def _convert(tp: Any, value: Any, where: str) -> Any:
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        errors = []
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _convert(arg, value, where)
            except (TypeError, ValueError) as exc:
                errors.append(str(exc))
        raise ValueError(f"{where}: cannot use {value!r}: " + "; ".join(errors))
    if dataclasses.is_dataclass(tp):
        return config_from_dict(tp, value, where)
    if origin is tuple:
        if not isinstance(value, (list, tuple)) or (args and args[-1] is not Ellipsis and len(value) != len(args)):
            raise ValueError(f"{where} must be a list of {len(args)} values, got {value!r}")
        return tuple(_convert(a, v, where) for a, v in zip(args, value, strict=True))
    if origin is list:
        if not isinstance(value, (list, tuple)):
            raise ValueError(f"{where} must be a list, got {value!r}")
        return [_convert(args[0], v, where) for v in value] if args else list(value)
    if origin is dict:
        if not isinstance(value, dict):
            raise ValueError(f"{where} must be a mapping, got {value!r}")
        vt = args[1] if args else Any
        return {str(k): _convert(vt, v, f"{where}.{k}") for k, v in value.items()}
    if tp is Any:
        return value
    if tp is bool:
        if isinstance(value, bool):
            return value
        raise ValueError(f"{where} must be true or false, got {value!r}")
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            if isinstance(value, float) and value.is_integer():
                return int(value)
            raise ValueError(f"{where} must be an integer, got {value!r}")
        return value
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ValueError(f"{where} must be a number, got {value!r}")
        return float(value)
    if tp is str:
        if not isinstance(value, str):
            raise ValueError(f"{where} must be a string, got {value!r}")
        return value
    return value


def config_from_dict(cls: type, data: Any, where: str = "config") -> Any:
    """Build dataclass ``cls`` from a mapping, validating keys and value types."""
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ValueError(f"{where} must be a mapping, got {type(data).__name__}")
    kwargs = {}
    for key, value in data.items():
        if cls is ExperimentConfig and key == "methods":
            if not isinstance(value, dict):
                raise ValueError(f"{where}.methods must be a mapping of method label -> settings")
            kwargs[key] = {
                str(label): config_from_dict(MethodConfig, m if m is not None else {}, f"{where}.methods.{label}")
                for label, m in value.items()
            }
            continue
        kwargs[key] = _coerce(cls, key, value, where)
    return cls(**kwargs)


# --------------------------------------------------------------------------- presets and overrides


def preset_dir() -> Path:
    """The folder of the bundled YAML presets."""
    return Path(str(resources.files("lossattn.protocols") / "presets"))


def list_presets() -> list[str]:
    """Names of the bundled YAML presets."""
    return sorted(p.stem for p in preset_dir().glob("*.yaml"))


def load_preset(name: str) -> ExperimentConfig:
    """Load a bundled preset by name (see :func:`list_presets`)."""
    path = preset_dir() / f"{name}.yaml"
    if not path.exists():
        raise ValueError(f"unknown preset {name!r}; valid presets: {', '.join(list_presets())}")
    return load_config(path)


def load_config(path: str | Path) -> ExperimentConfig:
    """Load an experiment config from a YAML file (a preset or a saved ``config.yaml``)."""
    path = Path(path)
    if not path.exists():
        raise ValueError(f"config file {path} does not exist")
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        raise ValueError(f"config file {path} is not valid YAML: {exc}") from exc
    return config_from_dict(ExperimentConfig, data, where=path.stem).validate()


def apply_overrides(cfg: ExperimentConfig, overrides: list[str] | dict[str, Any]) -> ExperimentConfig:
    """Apply ``section.key=value`` overrides (values parsed as YAML) and re-validate.

    Examples: ``train.lr=3e-4``, ``protocol.folds=5``, ``data.kwargs.num_bags=100``,
    ``methods.loss_attention.kwargs.lam=1.0``, ``methods=[loss_attention, attention]`` (keeps
    only those methods of the preset).
    """
    data = config_to_dict(cfg)
    items = overrides.items() if isinstance(overrides, dict) else (parse_override(o) for o in overrides)
    for key, value in items:
        parts = key.split(".")
        if parts == ["methods"] and isinstance(value, list):
            unknown = [m for m in value if m not in data["methods"]]
            if unknown:
                raise ValueError(f"methods {unknown} are not in this preset; available: {', '.join(data['methods'])}")
            data["methods"] = {m: data["methods"][m] for m in value}
            continue
        node = data
        for i, part in enumerate(parts[:-1]):
            if not isinstance(node, dict) or part not in node:
                if isinstance(node, dict) and parts[i - 1] in ("kwargs", "test_kwargs", "train") and i > 0:
                    node[part] = {}
                elif isinstance(node, dict) and i > 0 and parts[i - 1] == "methods":
                    node[part] = {"model": part}
                else:
                    valid = ", ".join(node) if isinstance(node, dict) else "(none)"
                    raise ValueError(f"unknown config key {'.'.join(parts[: i + 1])!r}; valid keys here: {valid}")
            node = node[part]
        if not isinstance(node, dict):
            raise ValueError(f"cannot set {key!r}: {'.'.join(parts[:-1])} is not a section")
        node[parts[-1]] = value
    return config_from_dict(ExperimentConfig, data, where=cfg.name).validate()


def parse_override(text: str) -> tuple[str, Any]:
    """``"section.key=value"`` → ``(key, value)``, the value parsed as YAML (``1e-3`` read as a number)."""
    if "=" not in text:
        raise ValueError(f"override {text!r} must look like key=value, e.g. train.lr=1e-3")
    key, raw = text.split("=", 1)
    key = key.strip()
    if not key:
        raise ValueError(f"override {text!r} has an empty key")
    try:
        value = yaml.safe_load(raw) if raw.strip() else ""
    except yaml.YAMLError as exc:
        raise ValueError(f"override {text!r}: value {raw!r} is not valid YAML ({exc})") from exc
    if isinstance(value, str):
        value = _maybe_number(value)
    return key, value


def _maybe_number(text: str) -> Any:
    # YAML 1.1 reads "1e-3" as a string; accept it as the float a user means
    try:
        return float(text) if any(c in text for c in "eE.") else int(text)
    except ValueError:
        return text
