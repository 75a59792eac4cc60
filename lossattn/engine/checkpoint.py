"""The one checkpoint format, versioned: training state (``checkpoint.pt``) and selected model (``best.pt``).

Every file carries ``format`` (``"lossattn.training_state"`` or ``"lossattn.model"``) and ``version``
(:data:`VERSION`). Training state holds everything an exact resume needs (model, optimiser, AMP scaler,
temporal ensemble, history, selection state, RNG states, the data source's state) and ``next_epoch``, the
first epoch still to train. A model file holds the selected weights, how to rebuild the model
(``model_name``, ``model_kwargs``) and the run's metadata (standardiser, data config, label values...).

Files of another format version raise a clear ``ValueError``. The one exception: model files of lossattn
0.1 (no ``format`` key; the same fields) are read and upgraded in memory, so earlier ``best.pt`` files still
predict; 0.1 training state cannot be resumed (its epoch counter meant different things in different loops).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from lossattn.io import atomic_write

__all__ = [
    "MODEL_FORMAT",
    "model_identity",
    "STATE_FORMAT",
    "VERSION",
    "load_checkpoint",
    "load_model_file",
    "load_training_state",
    "save_model_file",
    "save_training_state",
]

VERSION = 2
STATE_FORMAT = "lossattn.training_state"
MODEL_FORMAT = "lossattn.model"


def model_identity(model: torch.nn.Module, config: Any, seed: int, task_name: str) -> dict[str, Any]:
    """What every checkpoint says about its model and run: how to rebuild the model, its task, config, seed."""
    from dataclasses import asdict

    return {
        "model_name": getattr(model, "model_name", type(model).__name__),
        "model_kwargs": getattr(model, "model_kwargs", {}),
        "task": task_name,
        "input_kind": getattr(model, "input_kind", "instances"),
        "train_config": {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(config).items()},
        "seed": int(seed),
    }


def _save(path: str | Path, state: dict[str, Any]) -> None:
    # torch.save into a temporary file, then rename: a killed save leaves the old checkpoint intact
    atomic_write(path, lambda fh: torch.save(state, fh))


def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Read any lossattn checkpoint file as a dict, with a clear error when it is missing or unreadable."""
    path = Path(path)
    if not path.exists():
        raise ValueError(f"checkpoint {path} does not exist")
    if path.is_dir():
        raise ValueError(f"checkpoint {path} is a folder; give the .pt file (or use a command that finds it)")
    try:
        state = torch.load(path, map_location=map_location, weights_only=False)
    except Exception as exc:  # torch raises several types for corrupt files
        raise ValueError(f"checkpoint {path} is corrupt or not a lossattn checkpoint: {exc}") from exc
    if not isinstance(state, dict):
        raise ValueError(f"checkpoint {path} holds a {type(state).__name__}, not a lossattn checkpoint")
    return state


def save_training_state(path: str | Path, state: dict[str, Any]) -> None:
    """Write the resume state of a run (``checkpoint.pt``) atomically, stamped with format and version."""
    _save(path, {"format": STATE_FORMAT, "version": VERSION, **state})


def load_training_state(path: str | Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Read a ``checkpoint.pt`` written by :func:`save_training_state`.

    Raises:
        ValueError: missing, corrupt, not training state, or of another format version.
    """
    state = load_checkpoint(path, map_location)
    if state.get("format") != STATE_FORMAT:
        if "format" not in state and "optimizer" in state:
            raise ValueError(
                f"{path} is training state of lossattn 0.1 (checkpoint format 1); this version resumes format "
                f"{VERSION} only: start the run again in a new folder (finished runs' best.pt files still work)"
            )
        raise ValueError(f"{path} is not lossattn training state (format {state.get('format')!r})")
    _check_version(path, state)
    return state


def save_model_file(path: str | Path, state: dict[str, Any]) -> None:
    """Write a selected model (``best.pt``) atomically, stamped with format and version."""
    _save(path, {"format": MODEL_FORMAT, "version": VERSION, **state})


def load_model_file(path: str | Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Read a ``best.pt``; model files of lossattn 0.1 are upgraded in memory (same fields, no stamp).

    A ``checkpoint.pt`` (training state of an unfinished run) is accepted too: its *current* weights are
    returned, with ``from_training_state = True``.

    Raises:
        ValueError: missing, corrupt, no model in it, or of another format version.
    """
    state = load_checkpoint(path, map_location)
    if "format" not in state:
        if "model" not in state or not state.get("model_name"):
            raise ValueError(f"{path} is not a lossattn model checkpoint (no model name / model state)")
        state = {**state, "format": MODEL_FORMAT, "version": VERSION, "upgraded_from": 1}
    elif state["format"] == STATE_FORMAT:
        # the resume state of an unfinished run: its current (not its selected) weights
        state = {**state, "from_training_state": True}
    elif state["format"] != MODEL_FORMAT:
        raise ValueError(f"{path} is not a lossattn model checkpoint (format {state['format']!r})")
    _check_version(path, state)
    if "model" not in state or not state.get("model_name"):
        raise ValueError(f"{path} is not a lossattn model checkpoint (no model name / model state)")
    return state


def _check_version(path: str | Path, state: dict[str, Any]) -> None:
    version = state.get("version")
    if version != VERSION:
        raise ValueError(
            f"{path} has checkpoint format version {version!r}; this lossattn reads version {VERSION} "
            "(written by a different lossattn release: use that release, or train again)"
        )
