"""Atomic file writes and version records: an interrupted run never leaves a file that looks complete."""

from __future__ import annotations

import contextlib
import json
import os
import platform
import sys
import tempfile
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO, Any

import torch

__all__ = [
    "atomic_path",
    "atomic_write",
    "atomic_write_json",
    "atomic_write_text",
    "file_mode",
    "folder_mode",
    "versions",
]

_UMASK_LOCK = threading.Lock()


def _umask() -> int:
    with _UMASK_LOCK:  # reading the umask means setting it: keep other threads out meanwhile
        mask = os.umask(0o022)
        os.umask(mask)
    return mask


def file_mode() -> int:
    """The mode a plain ``open(path, "w")`` would give a new file: ``0o666`` less the process umask.

    ``tempfile.mkstemp`` creates files readable by their owner only (0600); an atomically written result must
    get the same permissions as any other file the user writes.
    """
    return 0o666 & ~_umask()


def folder_mode() -> int:
    """The mode ``mkdir`` would give a new folder: ``0o777`` less the process umask (``mkdtemp`` gives 0700)."""
    return 0o777 & ~_umask()


@contextlib.contextmanager
def atomic_path(path: str | Path, suffix: str = ".part") -> Iterator[Path]:
    """A temporary file path beside ``path`` for a writer that needs a name (HDF5); renamed over ``path`` when the
    block ends without an error, removed when it raises.

    A killed process leaves either the old file or the new one, never a partial file under the final name; the
    file gets the user's umask (a temporary file is created 0600).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=suffix, dir=path.parent)
    os.close(fd)
    try:
        yield Path(tmp)
        os.chmod(tmp, file_mode())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def atomic_write(path: str | Path, write: Callable[[IO[bytes]], Any]) -> None:
    """Write ``path`` through ``write(binary file)`` into a temporary file beside it, then rename it into place
    (see :func:`atomic_path`)."""
    with atomic_path(path) as tmp, open(tmp, "wb") as fh:
        write(fh)
        fh.flush()
        os.fsync(fh.fileno())


def atomic_write_text(path: str | Path, text: str) -> None:
    """Write ``text`` to ``path`` via a temporary file and an atomic rename."""
    atomic_write(path, lambda fh: fh.write(text.encode()))


def atomic_write_json(path: str | Path, data: Any) -> None:
    """Write JSON (NaN written as null) atomically."""
    atomic_write_text(path, json.dumps(_clean(data), indent=2, sort_keys=False) + "\n")


def _clean(value: Any) -> Any:
    if isinstance(value, float) and (value != value or value in (float("inf"), float("-inf"))):
        return None
    if isinstance(value, dict):
        return {str(k): _clean(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_clean(v) for v in value]
    if hasattr(value, "item") and getattr(value, "ndim", 1) == 0:
        return _clean(value.item())
    return value


def versions() -> dict[str, str]:
    """Versions of the software a run used."""
    import numpy
    import scipy
    import sklearn

    import lossattn

    out = {
        "lossattn": lossattn.__version__,
        "python": sys.version.split()[0],
        "torch": torch.__version__,
        "numpy": numpy.__version__,
        "scipy": scipy.__version__,
        "scikit-learn": sklearn.__version__,
        "platform": platform.platform(),
        "cuda": torch.version.cuda or "none",
        "device_count": str(torch.cuda.device_count()) if torch.cuda.is_available() else "0",
    }
    return out
