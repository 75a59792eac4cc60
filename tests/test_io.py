"""Atomic writes: the user's umask, nothing under the final name when the writer fails; the slide files use them."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import numpy as np
import pytest

from lossattn.io import atomic_path, atomic_write, atomic_write_text
from lossattn.slides import draw_heatmap, make_synthetic_slides, write_geojson


@pytest.fixture
def umask_027():
    old = os.umask(0o027)
    yield
    os.umask(old)


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_atomic_files_follow_the_umask(tmp_path: Path, umask_027) -> None:
    h5py = pytest.importorskip("h5py", reason="h5py (the formats extra) writes the HDF5 file of this check")
    atomic_write_text(tmp_path / "a.txt", "x")
    with atomic_path(tmp_path / "b.h5") as tmp, h5py.File(tmp, "w") as f:
        f["x"] = np.arange(3)
    assert _mode(tmp_path / "a.txt") == 0o640 and _mode(tmp_path / "b.h5") == 0o640
    with h5py.File(tmp_path / "b.h5") as f:
        assert f["x"][()].tolist() == [0, 1, 2]


def test_a_failing_writer_leaves_the_old_file_and_no_temporary(tmp_path: Path) -> None:
    target = tmp_path / "out.json"
    target.write_text("old")

    def fail(fh):
        fh.write(b"half")
        raise RuntimeError("disk full")

    with pytest.raises(RuntimeError, match="disk full"):
        atomic_write(target, fail)
    with pytest.raises(RuntimeError, match="disk full"), atomic_path(target) as tmp:
        tmp.write_text("half")
        raise RuntimeError("disk full")
    assert target.read_text() == "old" and sorted(p.name for p in tmp_path.iterdir()) == ["out.json"]


def test_slide_outputs_follow_the_umask(tmp_path: Path, umask_027) -> None:
    pytest.importorskip("h5py", reason="generated slides are HDF5 files (the formats extra)")
    # heatmap PNG, GeoJSON and generated slides were written through 0600 temporary files before
    coords = np.array([[0, 0], [256, 0], [0, 256]])
    png = draw_heatmap(coords, np.array([0.1, 0.5, 0.9]), path=tmp_path / "h.png")
    geo = write_geojson(tmp_path / "g.geojson", coords, np.array([0.1, 0.5, 0.9]))
    make_synthetic_slides(tmp_path / "slides", preset="tiny")
    h5 = next((tmp_path / "slides" / "h5_files").glob("*.h5"))
    assert {_mode(Path(png)), _mode(geo), _mode(h5), _mode(tmp_path / "slides" / "manifest.csv")} == {0o640}
