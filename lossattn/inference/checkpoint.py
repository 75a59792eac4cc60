"""A trained model rebuilt from its checkpoint, with what is needed to feed it data.

A ``best.pt`` written by a run holds everything: ``model_name``, ``model_kwargs``, the ``model`` state, the
fitted ``standardizer`` state (or None), the ``data_config``, ``num_classes``, ``instance_shape`` (image runs:
``image_shape``, ``normalization``, ``class_names``). :func:`load_trained` rebuilds the model from it (a run
folder holding ``best.pt`` works too).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import yaml

from lossattn import datasets as D
from lossattn.engine.checkpoint import load_model_file
from lossattn.models.registry import create_model

__all__ = ["TrainedModel", "find_checkpoint", "load_trained"]


@dataclass
class TrainedModel:
    """A model rebuilt from a checkpoint, with what is needed to feed it data."""

    model: torch.nn.Module
    model_name: str
    model_kwargs: dict[str, Any]
    path: Path
    standardizer: D.Standardizer | None = None
    data_config: dict[str, Any] | None = None
    num_classes: int = 2
    instance_shape: tuple[int, ...] | None = None
    method: str | None = None
    seed: int | None = None
    epoch: int | None = None
    run_config: dict[str, Any] | None = None  # the run folder's config.yaml, when present
    extra: dict[str, Any] = field(default_factory=dict)  # image checkpoints: normalization, class_names, crop
    label_values: list[Any] | None = None  # the user's value of each class, as in the training data
    class_names: list[str] | None = None
    decision_threshold: float | None = None  # binary models: chosen on the validation bags (TrainConfig.threshold)

    @property
    def has_weights(self) -> bool:
        # image models with mean/max pooling have no weights (explain draws their class activation map)
        return bool(getattr(self.model, "has_weights", False))

    def describe(self) -> str:
        shape = "?" if self.instance_shape is None else "×".join(str(s) for s in self.instance_shape)
        data = (self.data_config or {}).get("name", "?")
        label = self.method or self.model_name
        if label != self.model_name:
            label += f" ({self.model_name})"
        epoch = "" if self.epoch is None else f", selected epoch {int(self.epoch) + 1}"
        return f"{label}, {self.num_classes} classes, instances {shape}, trained on {data}{epoch}"


def find_checkpoint(path: str | Path) -> Path:
    p = Path(path).expanduser()
    if p.is_dir():
        for name in ("best.pt", "checkpoint.pt"):
            if (p / name).is_file():
                return p / name
        found = sorted(p.glob("**/best.pt"))
        if len(found) == 1:
            return found[0]
        if found:
            listed = ", ".join(str(f) for f in found[:4]) + (" ..." if len(found) > 4 else "")
            raise ValueError(
                f"{p} holds {len(found)} runs; name one best.pt ({listed}), or average the fold models of a cv run "
                "with --ensemble"
            )
        raise ValueError(f"no best.pt in {p} (give the run folder of a finished training run or its best.pt)")
    if not p.exists():
        raise ValueError(f"checkpoint {p} does not exist")
    return p


def load_trained(path: str | Path, device: str | torch.device = "cpu") -> TrainedModel:
    """Load a ``best.pt`` (or a run folder holding one, or a resume ``checkpoint.pt``) and rebuild its model.

    Raises:
        ValueError: Missing/corrupt file, not a lossattn checkpoint, or weights that do not fit the model
            named in it.
    """
    ckpt_path = find_checkpoint(path)
    state = load_model_file(ckpt_path, map_location="cpu")
    name = state["model_name"]
    kwargs = dict(state.get("model_kwargs") or {})
    try:
        model = create_model(name, **kwargs)
    except TypeError as exc:
        raise ValueError(f"{ckpt_path}: cannot rebuild model {name!r} from its stored arguments: {exc}") from exc
    try:
        model.load_state_dict(state["model"])
    except RuntimeError as exc:
        first = str(exc).strip().splitlines()[0]
        raise ValueError(f"{ckpt_path}: the stored weights do not fit model {name!r} ({first})") from exc
    model.to(device).eval()
    scaler = None
    if state.get("standardizer") is not None:
        scaler = D.Standardizer().load_state_dict(state["standardizer"])
    shape = state.get("instance_shape") or state.get("image_shape")
    run_config = None
    cfg_file = ckpt_path.parent / "config.yaml"
    if cfg_file.is_file():
        try:
            run_config = yaml.safe_load(cfg_file.read_text())
        except yaml.YAMLError:
            run_config = None
    num_classes = state.get("num_classes") or getattr(model, "num_classes", 2)
    return TrainedModel(
        model=model,
        model_name=name,
        model_kwargs=kwargs,
        path=ckpt_path,
        standardizer=scaler,
        data_config=state.get("data_config"),
        num_classes=int(num_classes),
        instance_shape=None if shape is None else tuple(int(s) for s in shape),
        method=state.get("method"),
        seed=state.get("seed"),
        epoch=state.get("epoch"),
        run_config=run_config if isinstance(run_config, dict) else None,
        extra={k: state[k] for k in _IMAGE_KEYS if state.get(k) is not None},
        label_values=state.get("label_values"),
        class_names=state.get("class_names"),
        decision_threshold=state.get("decision_threshold"),
    )


#: what an image run's ``best.pt`` adds (see :func:`lossattn.experiments.image_runs.train_image_classifier`)
_IMAGE_KEYS = ("input_kind", "normalization", "class_names", "crop")
