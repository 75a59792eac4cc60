"""Missing optional packages (h5py, pyarrow) give a clear MissingDependencyError, not "truncated or corrupt"."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

from lossattn.datasets import DataFormatError, MissingDependencyError, load_feature_folder, load_table, read_coords


def _h5_folder(tmp_path: Path) -> Path:
    h5py = pytest.importorskip("h5py")
    root = tmp_path / "f"
    (root / "h5_files").mkdir(parents=True)
    with h5py.File(root / "h5_files" / "a.h5", "w") as f:
        f["features"] = np.ones((2, 3), np.float32)
        f["coords"] = np.zeros((2, 2), np.int64)
    (root / "manifest.csv").write_text("bag_id,label\na,0\n")
    return root


def test_h5_without_h5py(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    root = _h5_folder(tmp_path)
    ds = load_feature_folder(root)  # opening reads only the manifest
    monkeypatch.setitem(sys.modules, "h5py", None)  # what an environment without h5py looks like to `import`
    for call in (lambda: ds[0], lambda: ds.bag_sizes, lambda: ds.coords(0), lambda: read_coords(ds.files[0])):
        with pytest.raises(MissingDependencyError) as info:
            call()
        err = info.value
        assert isinstance(err, ValueError) and isinstance(err, ImportError) and not isinstance(err, DataFormatError)
        assert err.name == "h5py"
        message = str(err)
        assert "a.h5" in message and "needs the h5py package" in message
        assert "pip install 'lossattn[formats]'" in message and "pip install h5py" in message
        assert "corrupt" not in message


def test_parquet_without_pyarrow(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    p = tmp_path / "t.parquet"
    p.write_bytes(b"PAR1")  # never opened: the import fails first
    monkeypatch.setitem(sys.modules, "pyarrow", None)
    monkeypatch.setitem(sys.modules, "pyarrow.parquet", None)
    with pytest.raises(
        MissingDependencyError, match=r"t.parquet: reading Parquet tables needs the pyarrow package"
    ) as info:
        load_table(p)
    assert isinstance(info.value, ValueError) and info.value.name == "pyarrow"
    assert "pip install 'lossattn[formats]' (or pip install pyarrow)" in str(info.value)
