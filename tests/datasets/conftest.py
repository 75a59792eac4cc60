"""Shared fixtures for the data-layer tests."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest


@pytest.fixture
def real_root() -> Path:
    """The real data root from ``$LOSSATTN_DATA``; skips the test when it is unset or missing."""
    env = os.environ.get("LOSSATTN_DATA", "").strip()
    if not env:
        pytest.skip("LOSSATTN_DATA is not set: real-data tests need the benchmark files (e.g. shared/data)")
    root = Path(env)
    if not root.is_dir():
        pytest.skip(f"LOSSATTN_DATA={env} is not a folder")
    return root


@pytest.fixture
def require_real(real_root: Path):
    """Returns ``require(*rel)``: the first existing ``real_root / rel``, or skips naming the missing files."""

    def require(*rel: str) -> Path:
        for r in rel:
            if (real_root / r).is_file():
                return real_root / r
        pytest.skip(f"real data file missing: {' or '.join(str(real_root / r) for r in rel)}")

    return require


@pytest.fixture(autouse=True)
def _isolated_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """Keeps tests from reading or writing the user's cache or a download mirror set in the environment."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg-cache"))
    monkeypatch.delenv("LOSSATTN_DOWNLOAD_URL", raising=False)


def _check_label_rules(ds, pool_labels: np.ndarray, targets: tuple[int, ...]) -> None:
    """Asserts the MIL label rules on every bag: instance labels follow the target classes, at most one target
    class per bag, bag label = that class's position + 1 (0 if none)."""
    src = ds.source_index
    inst_all = ds.instance_labels.numpy()
    offsets = np.concatenate([[0], np.cumsum(ds.bag_sizes)])
    for i in range(len(ds)):
        inst = inst_all[offsets[i] : offsets[i + 1]]
        classes = pool_labels[src[offsets[i] : offsets[i + 1]]]
        expected = np.zeros_like(inst)
        for j, t in enumerate(targets, start=1):
            expected[classes == t] = j
        assert np.array_equal(inst, expected), f"bag {i}: instance labels do not follow the target classes"
        present = set(inst[inst > 0].tolist())
        assert len(present) <= 1, f"bag {i} holds several target classes {present}"
        assert ds.labels[i] == (present.pop() if present else 0), f"bag {i}: label does not match its instances"
        assert inst.min() >= 0


@pytest.fixture
def check_label_rules():
    """The label-rule checker ``check(ds, pool_labels, targets)`` for generated bags."""
    return _check_label_rules
