"""A seeded synthetic whole-slide benchmark with patch-level ground truth, written in the CLAM layout.

Layout written under ``root`` (the CLAM / TRIDENT convention, one HDF5 file per slide)::

    root/
      manifest.csv              slide_id,case_id,label,split
      truth.json                generator parameters and, per slide, its size, lesion regions and patches
      signal_directions.npy     (K − 1, D) float64: the unit class directions added to lesion patches
      h5_files/<slide_id>.h5    features (N, D) float32|float16, coords (N, 2) int64,
                                instance_labels (N,) int64, lesion_region (N,) int64

Units: ``coords`` row ``(x, y)`` is the top-left corner of a patch in level-0 pixels (x right, y down);
patches tile a regular grid of step ``patch_size`` (also stored as ``coords.attrs["patch_size"]`` with
``coords.attrs["patch_level"] = 0``, as CLAM does). ``instance_labels`` is 0 for a normal patch and ``k`` for a
patch inside a lesion of class ``k``; ``lesion_region`` is 0 outside lesions and ``1..R`` for the slide's lesion
regions.

Generative model (all draws from ``numpy.random.SeedSequence(seed)``; slide ``i`` has its own child
sequence, so it does not depend on how many slides are generated):

* **Cohort.** Cases (patients) hold ``slides_per_case`` slides each (uniform integers). Case labels are
  balanced over ``0..num_classes − 1`` and shuffled; every slide of a case has its label, and every slide of
  a case is in the case's split (splits are assigned to cases, stratified by label).
* **Tissue.** A slide's number of patches ``N`` is log-uniform on ``[min_patches, max_patches]``; the tissue
  is a random 4-connected blob of ``N`` grid cells (Eden growth from one cell, with a random horizontal or
  vertical elongation), shifted by a random grid offset; patches are stored in row-major order.
* **Lesions.** A slide of label ``k > 0`` holds ``R ~ U{1..max_regions}`` lesion regions with
  ``T = max(R, round(f·N))`` patches in all, ``f`` log-uniform on ``lesion_fraction``, split between the
  regions by a flat Dirichlet (each region ≥ 1 patch). Each region grows from a random seed patch over
  4-neighbours inside the tissue, never entering the 8-neighbourhood of another region, so the
  8-connected components of the lesion mask are exactly the regions (a region that runs out of room stops
  smaller; ``truth.json`` records the sizes reached). Label-0 slides have no lesion.
* **Features.** ``x_i = B (a_{t(i)} + b_slide + s ⊙ z_i) + ε_i + signal · u_k · [i in a lesion of class k]``
  with ``B`` a fixed ``(D, r)`` orthonormal basis (``r = min(64, D // 4)``), ``s_j = 2 / √(j + 1)`` a
  decaying spectrum, ``z_i, ε_i`` standard normal, ``a_t ~ N(0, 1.5² I)`` the centres of 6 tissue types
  assigned to spatially coherent territories (nearest of 6 random seed patches), ``b_slide ~ N(0, 0.5² I)``
  a per-slide shift (stain / batch effect), and ``u_k`` unit class directions, orthonormal and orthogonal to
  ``B``. Hence the projection of a feature on ``u_k`` is exactly ``N(signal, 1)`` inside class-``k`` lesions
  and ``N(0, 1)`` elsewhere: ``signal`` is the per-patch separation in noise standard deviations, hidden
  among larger low-rank variation the model must learn to ignore.

Determinism: the same arguments give byte-identical files (datasets are written without time stamps).
Memory: one slide at a time (``N × D`` values), written to a temporary file and renamed into place.
"""

from __future__ import annotations

import csv
import io
import json
import math
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from lossattn.io import atomic_path, atomic_write

from .tissue import grow_blob, place_lesions

__all__ = ["SlideSetInfo", "SLIDE_PRESETS", "make_synthetic_slides"]

SLIDE_PRESETS: dict[str, dict[str, Any]] = {
    # the measurement setup: 120 slides, 500–20,000 patches of 1024-d float32; seed 0 gives 537,374 patches,
    # 2.1 GiB on disk (2.4 GiB expected over seeds)
    "default": {
        "num_slides": 120,
        "num_classes": 2,
        "feature_dim": 1024,
        "min_patches": 500,
        "max_patches": 20000,
        "patch_size": 256,
        "slides_per_case": (1, 3),
        "lesion_fraction": (0.002, 0.25),
        "signal": 1.5,
        "max_regions": 3,
        "dtype": "float32",
    },
    # for the README walk-through: 60 slides of 200–3,000 patches of 64-d features (about 16 MiB), with a signal
    # strong enough (3 sd along the class direction) to be learnt from 34 training slides in 20 epochs
    "small": {
        "num_slides": 60,
        "num_classes": 2,
        "feature_dim": 64,
        "min_patches": 200,
        "max_patches": 3000,
        "patch_size": 256,
        "slides_per_case": (1, 3),
        "lesion_fraction": (0.01, 0.25),
        "signal": 3.0,
        "max_regions": 3,
        "dtype": "float32",
    },
    # for tests and docs: 12 slides of 40–400 patches of 32-d features (about 0.5 MiB)
    "tiny": {
        "num_slides": 12,
        "num_classes": 2,
        "feature_dim": 32,
        "min_patches": 40,
        "max_patches": 400,
        "patch_size": 256,
        "slides_per_case": (1, 3),
        "lesion_fraction": (0.02, 0.25),
        "signal": 1.5,
        "max_regions": 3,
        "dtype": "float32",
    },
}

_DEFAULT_SPLITS = {"train": 0.6, "val": 0.2, "test": 0.2}
_TISSUE_TYPES = 6
_TISSUE_SPREAD = 1.5
_SLIDE_SHIFT = 0.5
_MAX_OFFSET = 64  # grid cells: the tissue's top-left patch is placed at a random offset in [0, 64) per axis
_FORMAT = "lossattn-synthetic-slides"
_ROW_BLOCK = 4096


@dataclass(frozen=True)
class SlideSetInfo:
    """What :func:`make_synthetic_slides` wrote.

    Attributes:
        root: The dataset folder.
        manifest_path: ``root / "manifest.csv"``.
        truth_path: ``root / "truth.json"``.
        slide_ids: One id per slide, ``slide_0000`` …
        case_ids: The case (patient) of each slide.
        labels: Slide labels, 0 = negative, ``k > 0`` = lesions of class ``k``.
        splits: The split of each slide (the split of its case).
        num_patches: ``N`` of each slide.
        num_regions: Number of lesion regions of each slide (0 for negatives).
        lesion_patches: Number of lesion patches of each slide.
        feature_dim: ``D``.
        num_classes: ``K``.
        patch_size: Grid step and patch size in level-0 pixels.
        dtype: ``"float32"`` or ``"float16"``.
        seed: The seed.
        directions: ``(K − 1, D)`` float64; row ``k − 1`` is the unit direction of class ``k``.
        total_bytes: Size of all written files.
    """

    root: Path
    manifest_path: Path
    truth_path: Path
    slide_ids: tuple[str, ...]
    case_ids: tuple[str, ...]
    labels: tuple[int, ...]
    splits: tuple[str, ...]
    num_patches: tuple[int, ...]
    num_regions: tuple[int, ...]
    lesion_patches: tuple[int, ...]
    feature_dim: int
    num_classes: int
    patch_size: int
    dtype: str
    seed: int
    directions: np.ndarray = field(repr=False)
    total_bytes: int = 0

    @property
    def num_slides(self) -> int:
        return len(self.slide_ids)

    def h5_path(self, slide_id: str) -> Path:
        """Path of a slide's feature file, ``root/h5_files/<slide_id>.h5``."""
        if slide_id not in self.slide_ids:
            raise ValueError(f"unknown slide_id {slide_id!r}; this set has {self.slide_ids[0]} … {self.slide_ids[-1]}")
        return self.root / "h5_files" / f"{slide_id}.h5"


def _h5py():
    try:
        import h5py
    except ImportError as e:  # pragma: no cover - depends on the environment
        raise ImportError("writing .h5 slides needs h5py: pip install 'lossattn[formats]' (or pip install h5py)") from e
    return h5py


# ----------------------------------------------------------------------------------------------- validation


def _int(name: str, value: Any, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise TypeError(f"{name} must be an integer >= {minimum}, got {value!r}")
    if value < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {value}")
    return int(value)


def _pair(name: str, value: Any) -> tuple[Any, Any]:
    if isinstance(value, (str, bytes)) or not hasattr(value, "__len__") or len(value) != 2:
        raise ValueError(f"{name} must be a (low, high) pair, got {value!r}")
    return value[0], value[1]


def _resolve(preset: str, overrides: dict[str, Any]) -> dict[str, Any]:
    if preset not in SLIDE_PRESETS:
        raise ValueError(f"unknown preset {preset!r}; expected one of {sorted(SLIDE_PRESETS)}")
    p = dict(SLIDE_PRESETS[preset])
    p.update({k: v for k, v in overrides.items() if v is not None})
    p["num_slides"] = _int("num_slides", p["num_slides"], 1)
    p["num_classes"] = _int("num_classes", p["num_classes"], 2)
    p["feature_dim"] = _int("feature_dim", p["feature_dim"], 4)
    p["min_patches"] = _int("min_patches", p["min_patches"], 1)
    p["max_patches"] = _int("max_patches", p["max_patches"], 1)
    if p["max_patches"] < p["min_patches"]:
        raise ValueError(f"max_patches ({p['max_patches']}) must be >= min_patches ({p['min_patches']})")
    p["patch_size"] = _int("patch_size", p["patch_size"], 1)
    lo, hi = _pair("slides_per_case", p["slides_per_case"])
    lo, hi = _int("slides_per_case[0]", lo, 1), _int("slides_per_case[1]", hi, 1)
    if hi < lo:
        raise ValueError(f"slides_per_case must be (low, high) with low <= high, got {(lo, hi)}")
    p["slides_per_case"] = (lo, hi)
    flo, fhi = _pair("lesion_fraction", p["lesion_fraction"])
    flo, fhi = float(flo), float(fhi)
    if not (0.0 < flo <= fhi < 1.0):
        raise ValueError(f"lesion_fraction must be (low, high) with 0 < low <= high < 1, got {(flo, fhi)}")
    p["lesion_fraction"] = (flo, fhi)
    sig = p["signal"]
    if isinstance(sig, bool) or not isinstance(sig, (int, float, np.integer, np.floating)):
        raise TypeError(f"signal must be a non-negative number, got {sig!r}")
    if not math.isfinite(float(sig)) or float(sig) < 0:
        raise ValueError(f"signal must be a finite non-negative number, got {sig!r}")
    p["signal"] = float(sig)
    p["max_regions"] = _int("max_regions", p["max_regions"], 1)
    if p["dtype"] not in ("float32", "float16"):
        raise ValueError(f"dtype must be 'float32' or 'float16', got {p['dtype']!r}")
    rank = _noise_rank(p["feature_dim"])
    if rank + p["num_classes"] - 1 > p["feature_dim"]:
        raise ValueError(
            f"feature_dim={p['feature_dim']} is too small for {p['num_classes']} classes: it must hold the "
            f"{rank}-d noise subspace plus {p['num_classes'] - 1} orthogonal class directions"
        )
    return p


def _noise_rank(feature_dim: int) -> int:
    return max(1, min(64, feature_dim // 4))


def _splits(splits: Mapping[str, float] | None) -> dict[str, float]:
    if splits is None:
        return dict(_DEFAULT_SPLITS)
    if not isinstance(splits, Mapping) or not splits:
        raise TypeError(f"splits must be a mapping split name -> fraction, e.g. {_DEFAULT_SPLITS}, got {splits!r}")
    out: dict[str, float] = {}
    for name, frac in splits.items():
        if not isinstance(name, str) or not name or "," in name:
            raise ValueError(f"split names must be non-empty strings without commas, got {name!r}")
        f = float(frac)
        if not (f > 0 and math.isfinite(f)):
            raise ValueError(f"split {name!r} has fraction {frac!r}; fractions must be positive")
        out[name] = f
    total = sum(out.values())
    if abs(total - 1.0) > 1e-6:
        raise ValueError(f"split fractions must sum to 1, got {total:.6g} for {out}")
    return out


# ------------------------------------------------------------------------------------------------ cohort


def _largest_remainder(n: int, fractions: list[float]) -> list[int]:
    raw = [n * f for f in fractions]
    counts = [int(math.floor(r)) for r in raw]
    rest = n - sum(counts)
    order = sorted(range(len(raw)), key=lambda j: (-(raw[j] - counts[j]), j))
    for j in order[:rest]:
        counts[j] += 1
    return counts


def _cohort(p: dict[str, Any], split_fracs: dict[str, float], rng: np.random.Generator):
    """Case of each slide, case labels and case splits."""
    lo, hi = p["slides_per_case"]
    sizes: list[int] = []
    while sum(sizes) < p["num_slides"]:
        sizes.append(int(rng.integers(lo, hi + 1)))
    sizes[-1] -= sum(sizes) - p["num_slides"]
    n_cases = len(sizes)
    case_labels = rng.permutation(np.arange(n_cases) % p["num_classes"])
    case_split = np.empty(n_cases, dtype=object)
    names = list(split_fracs)
    for k in range(p["num_classes"]):
        members = rng.permutation(np.flatnonzero(case_labels == k))
        counts = _largest_remainder(len(members), [split_fracs[s] for s in names])
        start = 0
        for name, c in zip(names, counts, strict=True):
            case_split[members[start : start + c]] = name
            start += c
    slide_case = np.repeat(np.arange(n_cases), sizes)
    return slide_case, case_labels, case_split


# ------------------------------------------------------------------------------------------------ features


@dataclass(frozen=True)
class _Structure:
    basis: np.ndarray  # (D, r) float32, orthonormal columns
    directions: np.ndarray  # (K-1, D) float64, orthonormal rows orthogonal to basis
    spectrum: np.ndarray  # (r,) float32
    centres: np.ndarray  # (T, r) float32


def _structure(p: dict[str, Any], rng: np.random.Generator) -> _Structure:
    d, k = p["feature_dim"], p["num_classes"]
    r = _noise_rank(d)
    q, _ = np.linalg.qr(rng.standard_normal((d, r + k - 1)))  # (D, r + K - 1), orthonormal columns
    spectrum = (2.0 / np.sqrt(np.arange(1, r + 1))).astype(np.float32)
    centres = (_TISSUE_SPREAD * rng.standard_normal((_TISSUE_TYPES, r))).astype(np.float32)
    return _Structure(
        basis=np.ascontiguousarray(q[:, :r], dtype=np.float32),
        directions=np.ascontiguousarray(q[:, r:].T),
        spectrum=spectrum,
        centres=centres,
    )


def _features(
    grid: np.ndarray, inst: np.ndarray, st: _Structure, signal: float, rng: np.random.Generator
) -> np.ndarray:
    n = len(grid)
    d, r = st.basis.shape
    x = rng.standard_normal((n, d), dtype=np.float32)  # isotropic noise eps, (N, D)
    seeds = grid[rng.choice(n, size=min(_TISSUE_TYPES, n), replace=False)]  # territory seeds, (T', 2)
    dist = np.abs(grid[:, None, :] - seeds[None, :, :]).sum(axis=2)  # (N, T')
    tissue_type = rng.permutation(_TISSUE_TYPES)[: len(seeds)][np.argmin(dist, axis=1)]  # (N,)
    shift = (_SLIDE_SHIFT * rng.standard_normal(r)).astype(np.float32)
    coef = rng.standard_normal((n, r), dtype=np.float32) * st.spectrum  # (N, r)
    coef += st.centres[tissue_type] + shift
    for start in range(0, n, _ROW_BLOCK):  # in row blocks: no second (N, D) temporary
        x[start : start + _ROW_BLOCK] += coef[start : start + _ROW_BLOCK] @ st.basis.T  # (b, r) @ (r, D)
    for k in np.unique(inst[inst > 0]):
        x[inst == k] += (signal * st.directions[k - 1]).astype(np.float32)
    return x


# ------------------------------------------------------------------------------------------------ writing


def _write_h5(path: Path, slide_id: str, label: int, x, coords, inst, region, patch_size: int) -> None:
    h5py = _h5py()
    with atomic_path(path, suffix=".tmp") as tmp, h5py.File(tmp, "w", track_order=False) as f:
        f.attrs["slide_id"] = slide_id
        f.attrs["label"] = int(label)
        f.create_dataset("features", data=x, track_times=False)
        c = f.create_dataset("coords", data=coords, track_times=False)
        c.attrs["patch_size"] = int(patch_size)
        c.attrs["patch_level"] = 0
        f.create_dataset("instance_labels", data=inst, track_times=False)
        f.create_dataset("lesion_region", data=region, track_times=False)


def _clear_previous(root: Path, overwrite: bool) -> None:
    existing = [root / "manifest.csv", root / "truth.json"]
    if not overwrite and any(p.exists() for p in existing):
        raise FileExistsError(f"{root} already holds a slide set (manifest.csv / truth.json); pass overwrite=True")
    truth = root / "truth.json"
    if overwrite and truth.exists():
        try:
            old = json.loads(truth.read_text())
            stale = [s["file"] for s in old.get("slides", []) if isinstance(s, dict) and "file" in s]
        except (ValueError, OSError) as e:
            raise ValueError(f"{truth} exists but is not a readable slide-set truth file: {e}") from e
        for rel in stale:
            p = root / rel
            if p.parent == root / "h5_files" and p.suffix == ".h5" and p.exists():
                p.unlink()


def make_synthetic_slides(
    root: str | os.PathLike[str],
    num_slides: int | None = None,
    num_classes: int | None = None,
    feature_dim: int | None = None,
    min_patches: int | None = None,
    max_patches: int | None = None,
    patch_size: int | None = None,
    slides_per_case: tuple[int, int] | None = None,
    lesion_fraction: tuple[float, float] | None = None,
    signal: float | None = None,
    dtype: str | None = None,
    seed: int = 0,
    splits: Mapping[str, float] | None = None,
    *,
    max_regions: int | None = None,
    preset: str = "default",
    overwrite: bool = False,
) -> SlideSetInfo:
    """Writes a synthetic slide set with patch-level ground truth (see the module docstring for the model).

    Every argument left ``None`` takes the value of ``preset``: ``"default"`` (the measurement setup: 120
    slides of 500–20,000 patches, 1024-d float32, about 2.1 GiB for seed 0), ``"small"`` (60 slides of 200–3,000
    patches, 64-d, about 20 MiB, for the README walk-through) or ``"tiny"`` (12 slides of 40–400 patches, 32-d, for
    tests); see :data:`SLIDE_PRESETS`.

    Args:
        root: Output folder (created).
        num_slides: Number of slides.
        num_classes: ``K``; label 0 = negative (no lesion), ``k = 1..K−1`` = lesions of class ``k``.
        feature_dim: ``D``.
        min_patches: Smallest slide (patches); sizes are log-uniform between min and max.
        max_patches: Largest slide.
        patch_size: Patch size and grid step in level-0 pixels.
        slides_per_case: ``(low, high)`` slides per case, uniform integers.
        lesion_fraction: ``(low, high)``; a positive slide's lesion share is log-uniform in it.
        signal: Lesion signal, in noise standard deviations along the class direction.
        dtype: ``"float32"`` or ``"float16"`` features.
        seed: Seed of everything.
        splits: Split name -> fraction of cases (per label), default ``{"train": 0.6, "val": 0.2, "test": 0.2}``.
        max_regions: Largest number of lesion regions on a positive slide.
        preset: ``"default"`` or ``"tiny"``.
        overwrite: Replace a slide set already in ``root`` (its listed ``.h5`` files are removed first).

    Returns:
        :class:`SlideSetInfo`.

    Raises:
        ValueError, TypeError: A bad argument (named in the message).
        FileExistsError: ``root`` already holds a slide set and ``overwrite`` is false.
    """
    seed = _int("seed", seed, 0)
    p = _resolve(
        preset,
        {
            "num_slides": num_slides,
            "num_classes": num_classes,
            "feature_dim": feature_dim,
            "min_patches": min_patches,
            "max_patches": max_patches,
            "patch_size": patch_size,
            "slides_per_case": slides_per_case,
            "lesion_fraction": lesion_fraction,
            "signal": signal,
            "max_regions": max_regions,
            "dtype": dtype,
        },
    )
    split_fracs = _splits(splits)
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    _clear_previous(root, overwrite)
    h5_dir = root / "h5_files"
    h5_dir.mkdir(exist_ok=True)

    global_ss, cohort_ss, slides_ss = np.random.SeedSequence(seed).spawn(3)
    st = _structure(p, np.random.default_rng(global_ss))
    cohort_rng = np.random.default_rng(cohort_ss)
    slide_case, case_labels, case_split = _cohort(p, split_fracs, cohort_rng)
    log_lo, log_hi = math.log(p["min_patches"]), math.log(p["max_patches"])
    sizes = np.rint(np.exp(cohort_rng.uniform(log_lo, log_hi, size=p["num_slides"]))).astype(np.int64)
    sizes = np.clip(sizes, p["min_patches"], p["max_patches"])
    out_dtype = np.dtype(p["dtype"])

    rows: list[dict[str, Any]] = []
    total_bytes = 0
    for i, ss in enumerate(slides_ss.spawn(p["num_slides"])):
        rng = np.random.default_rng(ss)
        slide_id = f"slide_{i:04d}"
        case = int(slide_case[i])
        label = int(case_labels[case])
        grid = grow_blob(int(sizes[i]), rng)
        grid = grid[np.lexsort((grid[:, 0], grid[:, 1]))]  # row-major, as a patcher scans the slide
        if label > 0:
            region, region_sizes = place_lesions(grid, p, rng)
        else:
            region, region_sizes = np.zeros(len(grid), dtype=np.int64), []
        inst = np.where(region > 0, label, 0).astype(np.int64)
        x = _features(grid, inst, st, p["signal"], rng).astype(out_dtype, copy=False)
        offset = rng.integers(0, _MAX_OFFSET, size=2)
        coords = ((grid + offset) * p["patch_size"]).astype(np.int64)
        path = h5_dir / f"{slide_id}.h5"
        _write_h5(path, slide_id, label, x, coords, inst, region, p["patch_size"])
        total_bytes += path.stat().st_size
        del x
        rows.append(
            {
                "slide_id": slide_id,
                "case_id": f"case_{case:04d}",
                "label": label,
                "split": str(case_split[case]),
                "file": f"h5_files/{slide_id}.h5",
                "num_patches": int(len(grid)),
                "num_regions": len(region_sizes),
                "lesion_patches": int(sum(region_sizes)),
                "region_sizes": [int(s) for s in region_sizes],
                "grid_size": [int(grid[:, 0].max()) + 1, int(grid[:, 1].max()) + 1],
            }
        )

    np_buf = io.BytesIO()
    np.save(np_buf, st.directions)
    atomic_write(root / "signal_directions.npy", lambda fh: fh.write(np_buf.getvalue()))
    params = {k: (list(v) if isinstance(v, tuple) else v) for k, v in p.items()}
    truth = {
        "format": _FORMAT,
        "version": 1,
        "seed": seed,
        "params": params,
        "splits": split_fracs,
        "noise_rank": int(st.basis.shape[1]),
        "coords": "(x, y) top-left corner of each patch in level-0 pixels",
        "instance_labels": "0 = normal patch, k = patch inside a lesion of class k",
        "signal_directions": "signal_directions.npy",
        "slides": rows,
    }
    atomic_write(root / "truth.json", lambda fh: fh.write((json.dumps(truth, indent=1) + "\n").encode()))
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(["slide_id", "case_id", "label", "split"])
    for r in rows:
        w.writerow([r["slide_id"], r["case_id"], r["label"], r["split"]])
    atomic_write(root / "manifest.csv", lambda fh: fh.write(buf.getvalue().encode()))
    total_bytes += sum((root / n).stat().st_size for n in ("manifest.csv", "truth.json", "signal_directions.npy"))

    return SlideSetInfo(
        root=root,
        manifest_path=root / "manifest.csv",
        truth_path=root / "truth.json",
        slide_ids=tuple(r["slide_id"] for r in rows),
        case_ids=tuple(r["case_id"] for r in rows),
        labels=tuple(r["label"] for r in rows),
        splits=tuple(r["split"] for r in rows),
        num_patches=tuple(r["num_patches"] for r in rows),
        num_regions=tuple(r["num_regions"] for r in rows),
        lesion_patches=tuple(r["lesion_patches"] for r in rows),
        feature_dim=p["feature_dim"],
        num_classes=p["num_classes"],
        patch_size=p["patch_size"],
        dtype=p["dtype"],
        seed=seed,
        directions=st.directions.copy(),
        total_bytes=total_bytes,
    )
