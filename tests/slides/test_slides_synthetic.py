"""The synthetic slide benchmark: determinism, CLAM layout, cases and splits, lesion geometry, signal."""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path

import numpy as np
import pytest

h5py = pytest.importorskip("h5py", reason="the slide benchmark is written as .h5 files (pip install h5py)")

from lossattn.slides import SLIDE_PRESETS, connected_components, make_synthetic_slides  # noqa: E402


def _read(path: Path) -> dict[str, np.ndarray]:
    with h5py.File(path, "r") as f:
        out = {k: np.asarray(f[k]) for k in f}
        out["_patch_size"] = f["coords"].attrs["patch_size"]
        out["_dtype"] = f["features"].dtype
    return out


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    root = tmp_path_factory.mktemp("tiny")
    return make_synthetic_slides(root, preset="tiny", seed=3)


def test_same_seed_gives_byte_identical_files_and_other_seed_differs(tmp_path):
    a = make_synthetic_slides(tmp_path / "a", preset="tiny", num_slides=5, seed=11)
    b = make_synthetic_slides(tmp_path / "b", preset="tiny", num_slides=5, seed=11)
    c = make_synthetic_slides(tmp_path / "c", preset="tiny", num_slides=5, seed=12)
    for sid in a.slide_ids:
        assert a.h5_path(sid).read_bytes() == b.h5_path(sid).read_bytes()
    for name in ("manifest.csv", "truth.json", "signal_directions.npy"):
        assert (a.root / name).read_bytes() == (b.root / name).read_bytes()
    fa, fc = _read(a.h5_path("slide_0000"))["features"], _read(c.h5_path("slide_0000"))["features"]
    assert fa.shape != fc.shape or not np.array_equal(fa, fc)


def test_slide_does_not_depend_on_how_many_slides_are_generated(tmp_path):
    a = make_synthetic_slides(tmp_path / "a", preset="tiny", num_slides=3, seed=5)
    b = make_synthetic_slides(tmp_path / "b", preset="tiny", num_slides=3, seed=5, splits={"train": 0.5, "test": 0.5})
    # the split mapping changes only the split column, never a slide's content
    assert a.h5_path("slide_0002").read_bytes() == b.h5_path("slide_0002").read_bytes()


def test_clam_layout_datasets_and_dtypes(tiny):
    root = tiny.root
    assert (root / "manifest.csv").is_file() and (root / "truth.json").is_file()
    assert sorted(p.name for p in (root / "h5_files").iterdir()) == [f"{s}.h5" for s in tiny.slide_ids]
    for sid, n in zip(tiny.slide_ids, tiny.num_patches, strict=True):
        d = _read(root / "h5_files" / f"{sid}.h5")
        assert set(d) == {"features", "coords", "instance_labels", "lesion_region", "_patch_size", "_dtype"}
        assert d["features"].shape == (n, 32) and d["_dtype"] == np.float32
        assert d["coords"].shape == (n, 2) and d["coords"].dtype == np.int64
        assert d["instance_labels"].shape == (n,) and d["instance_labels"].dtype == np.int64
        assert d["_patch_size"] == 256
        assert not np.any(d["coords"] % 256), "coords are grid positions times the patch size, in pixels"
        assert len(np.unique(d["coords"], axis=0)) == n
        # row-major order, as a patcher scans the slide
        order = np.lexsort((d["coords"][:, 0], d["coords"][:, 1]))
        assert np.array_equal(order, np.arange(n))
        assert 40 <= n <= 400


def test_float16_features(tmp_path):
    info = make_synthetic_slides(tmp_path, preset="tiny", num_slides=2, dtype="float16")
    assert _read(info.h5_path("slide_0000"))["_dtype"] == np.float16


def test_manifest_columns_cases_and_splits(tiny):
    with open(tiny.manifest_path, newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert list(rows[0]) == ["slide_id", "case_id", "label", "split"]
    assert [r["slide_id"] for r in rows] == list(tiny.slide_ids)
    by_case: dict[str, set] = {}
    for r in rows:
        by_case.setdefault(r["case_id"], set()).add((r["split"], r["label"]))
    assert all(len(v) == 1 for v in by_case.values()), "a case spans splits or labels"
    sizes = [sum(r["case_id"] == c for r in rows) for c in by_case]
    assert min(sizes) >= 1 and max(sizes) <= 3
    assert {r["split"] for r in rows} <= {"train", "val", "test"}
    truth = json.loads(tiny.truth_path.read_text())
    assert [s["slide_id"] for s in truth["slides"]] == list(tiny.slide_ids)
    assert [s["label"] for s in truth["slides"]] == [int(r["label"]) for r in rows]


def test_case_splits_follow_fractions_per_label(tmp_path):
    info = make_synthetic_slides(
        tmp_path,
        preset="tiny",
        num_slides=100,
        min_patches=5,
        max_patches=10,
        feature_dim=8,
        slides_per_case=(1, 1),
        seed=1,
    )
    labels, splits = np.array(info.labels), np.array(info.splits)
    for k in (0, 1):
        m = labels == k
        # 50 single-slide cases per label: exactly 30 / 10 / 10 of the 0.6 / 0.2 / 0.2 fractions
        assert [(splits[m] == s).sum() for s in ("train", "val", "test")] == [30, 10, 10]


def test_tissue_is_one_connected_blob_and_sizes_are_log_uniform(tmp_path):
    info = make_synthetic_slides(
        tmp_path, preset="tiny", num_slides=100, min_patches=10, max_patches=1000, feature_dim=8, seed=2
    )
    for sid in info.slide_ids[:20]:
        d = _read(info.h5_path(sid))
        _, count = connected_components(d["coords"], np.ones(len(d["coords"]), bool), 256, connectivity=4)
        assert count == 1
    logs = np.log(np.array(info.num_patches))
    # log N ~ U(log 10, log 1000): mean (log 10 + log 1000)/2, sd (log 100)/sqrt(12); 4 standard errors
    mid, sd = (math.log(10) + math.log(1000)) / 2, math.log(100) / math.sqrt(12)
    assert abs(logs.mean() - mid) < 4 * sd / math.sqrt(len(logs))
    assert min(info.num_patches) >= 10 and max(info.num_patches) <= 1000


def test_lesions_are_contiguous_regions_and_negatives_have_none(tiny):
    truth = json.loads(tiny.truth_path.read_text())["slides"]
    assert any(s["label"] > 0 for s in truth) and any(s["label"] == 0 for s in truth)
    for s in truth:
        d = _read(tiny.root / s["file"])
        inst, region = d["instance_labels"], d["lesion_region"]
        if s["label"] == 0:
            assert not inst.any() and not region.any() and s["num_regions"] == 0
            continue
        assert set(np.unique(inst)) <= {0, s["label"]} and inst.any()
        labels, count = connected_components(d["coords"], inst > 0, 256, connectivity=8)
        assert count == s["num_regions"] >= 1
        # each 8-connected component is exactly one generated region
        pairs = {(int(a), int(b)) for a, b in zip(labels[inst > 0], region[inst > 0], strict=True)}
        assert len(pairs) == count == len({b for _, b in pairs})
        # each region is also 4-connected (grown over edge neighbours)
        for r in range(1, count + 1):
            _, c4 = connected_components(d["coords"], region == r, 256, connectivity=4)
            assert c4 == 1
        sizes = [int((region == r).sum()) for r in range(1, count + 1)]
        assert sizes == s["region_sizes"] and sum(sizes) == s["lesion_patches"] == int((inst > 0).sum())


def test_signal_direction_is_present_in_lesion_patches_only(tmp_path):
    info = make_synthetic_slides(
        tmp_path,
        preset="tiny",
        num_slides=12,
        num_classes=3,
        feature_dim=64,
        signal=2.0,
        lesion_fraction=(0.2, 0.4),
        seed=4,
    )
    u = np.load(info.root / "signal_directions.npy")
    assert u.shape == (2, 64)
    np.testing.assert_allclose(u @ u.T, np.eye(2), atol=1e-12)
    np.testing.assert_array_equal(u, info.directions)
    proj = {(c, k): [] for c in (0, 1, 2) for k in (1, 2)}
    for sid in info.slide_ids:
        d = _read(info.h5_path(sid))
        p = d["features"].astype(np.float64) @ u.T  # (N, 2)
        for c in (0, 1, 2):
            for k in (1, 2):
                proj[(c, k)].append(p[d["instance_labels"] == c, k - 1])
    stats = {key: np.concatenate(v) for key, v in proj.items()}
    for (c, k), x in stats.items():
        if len(x) == 0:
            continue
        # the projection on u_k is N(signal, 1) in class-k lesions and N(0, 1) everywhere else
        expected = 2.0 if c == k else 0.0
        assert abs(x.mean() - expected) < 5 / math.sqrt(len(x)), (c, k, x.mean(), len(x))
        assert abs(x.std() - 1.0) < 0.15, (c, k, x.std())
    assert len(stats[(1, 1)]) > 30 and len(stats[(2, 2)]) > 30


def test_labels_are_balanced_over_cases(tmp_path):
    info = make_synthetic_slides(
        tmp_path,
        preset="tiny",
        num_slides=60,
        num_classes=3,
        feature_dim=8,
        min_patches=5,
        max_patches=8,
        slides_per_case=(1, 1),
    )
    assert np.bincount(info.labels).tolist() == [20, 20, 20]


def test_presets_match_the_measurement_setup():
    d = SLIDE_PRESETS["default"]
    assert (d["num_slides"], d["feature_dim"], d["min_patches"], d["max_patches"], d["dtype"]) == (
        120,
        1024,
        500,
        20000,
        "float32",
    )


def test_existing_set_needs_overwrite_and_overwrite_removes_stale_slides(tmp_path):
    make_synthetic_slides(tmp_path, preset="tiny", num_slides=6)
    with pytest.raises(FileExistsError, match="overwrite"):
        make_synthetic_slides(tmp_path, preset="tiny", num_slides=6)
    info = make_synthetic_slides(tmp_path, preset="tiny", num_slides=2, overwrite=True)
    assert sorted(p.name for p in (tmp_path / "h5_files").iterdir()) == ["slide_0000.h5", "slide_0001.h5"]
    assert info.num_slides == 2


@pytest.mark.parametrize(
    ("kwargs", "err", "match"),
    [
        ({"num_classes": 1}, ValueError, "num_classes"),
        ({"lesion_fraction": (0.0, 0.5)}, ValueError, "lesion_fraction"),
        ({"dtype": "float64"}, ValueError, "dtype"),
        ({"min_patches": 50, "max_patches": 10}, ValueError, "max_patches"),
        ({"slides_per_case": (3, 1)}, ValueError, "slides_per_case"),
        ({"signal": -1.0}, ValueError, "signal"),
        ({"splits": {"train": 0.5, "test": 0.2}}, ValueError, "sum to 1"),
        ({"preset": "huge"}, ValueError, "preset"),
        ({"num_slides": 2.5}, TypeError, "num_slides"),
        ({"feature_dim": 4, "num_classes": 5}, ValueError, "feature_dim"),
    ],
)
def test_bad_arguments_are_named(tmp_path, kwargs, err, match):
    kw = {"preset": "tiny", **kwargs}
    with pytest.raises(err, match=match):
        make_synthetic_slides(tmp_path, **kw)
