"""Patch coordinates of a slide as positions on a regular grid.

Units and conventions (the CLAM / TRIDENT layout): ``coords`` is ``(N, 2)`` with one row ``(x, y)`` per patch,
the **top-left** corner of the patch in **level-0 pixels** (x to the right, y down). Patches are cut on a
regular grid of step ``s`` pixels, so every coordinate is ``origin + k·s`` for an integer ``k``; the patch
itself covers ``[x, x + s) × [y, y + s)`` when it does not overlap its neighbours.

The grid position of patch ``i`` is ``(gx, gy) = ((x_i − x_min) / s, (y_i − y_min) / s)``; two patches are
8-neighbours when both grid offsets are at most 1 in absolute value (and 4-neighbours when they share an
edge). Connected components of a set of patches use these neighbourhoods, as a lesion mask is split into
lesions in the CAMELYON16 evaluation (8-connectivity of the mask).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
from scipy import ndimage

__all__ = ["as_coords", "as_patch_values", "connected_components", "grid_positions", "infer_patch_size"]

# An inferred grid step finer than 1/_MAX_SUBDIVISION of the smallest spacing means the coordinates are
# not on a regular grid (e.g. jittered or rescaled coordinates), not that the patches are that small.
_MAX_SUBDIVISION = 16


def as_coords(coords: Any, name: str = "coords") -> np.ndarray:
    """Validates patch coordinates and returns them as an ``(N, 2)`` array.

    Args:
        coords: ``(N, 2)`` array-like of ``(x, y)`` level-0 pixel positions (numpy, torch or nested lists).
        name: Name used in error messages.

    Returns:
        ``(N, 2)`` int64 array when every value is integral, float64 otherwise.

    Raises:
        ValueError: Not ``(N, 2)``, or NaN / infinite values.
    """
    if hasattr(coords, "detach"):  # torch tensor
        coords = coords.detach().cpu().numpy()
    arr = np.asarray(coords)
    if arr.ndim != 2 or arr.shape[1] != 2:
        raise ValueError(f"{name} must have shape (N, 2) with one (x, y) row per patch, got shape {arr.shape}")
    if arr.dtype.kind not in "iuf":
        raise ValueError(f"{name} must be numeric, got dtype {arr.dtype}")
    if arr.dtype.kind == "f":
        if not np.isfinite(arr).all():
            bad = np.argwhere(~np.isfinite(arr))[0, 0]
            raise ValueError(f"{name} has a non-finite value at patch {bad}: {arr[bad].tolist()}")
        rounded = np.round(arr)
        if np.array_equal(rounded, arr):
            return rounded.astype(np.int64)
        return arr.astype(np.float64)
    return arr.astype(np.int64)


def infer_patch_size(coords: Any) -> int:
    """Grid step of a slide's patch coordinates, in level-0 pixels.

    Rule: the greatest common divisor of all positive differences between consecutive distinct x values and
    between consecutive distinct y values. For a regular non-overlapping patching (CLAM, TRIDENT) this is the
    patch size at level 0; for an overlapping patching it is the step, and the caller should pass the patch
    size explicitly.

    Args:
        coords: ``(N, 2)`` patch coordinates ``(x, y)`` in level-0 pixels (integers).

    Returns:
        The step ``s > 0``.

    Raises:
        ValueError: Fewer than two distinct positions (e.g. one patch), non-integer coordinates, or
            coordinates that are not on a regular grid (the step would be finer than 1/16 of the smallest
            spacing along the axis where that spacing is largest); in every case pass ``patch_size``
            explicitly.
    """
    arr = as_coords(coords)
    if arr.dtype.kind == "f":
        raise ValueError(
            "cannot infer the patch size: coords are not integers (e.g. "
            f"{arr[np.argmax(arr != np.round(arr)) // 2].tolist()}); pass patch_size= explicitly"
        )
    diffs: list[np.ndarray] = []
    for axis in range(2):
        u = np.unique(arr[:, axis])
        if len(u) > 1:
            diffs.append(np.diff(u))
    if not diffs:
        raise ValueError(
            f"cannot infer the patch size from {len(arr)} patch(es) at {len(np.unique(arr, axis=0))} distinct "
            "position(s): at least two patches at different positions are needed; pass patch_size= explicitly"
        )
    step = int(np.gcd.reduce(np.concatenate(diffs)))
    # the coarser axis's smallest spacing: a jitter of a few pixels on one axis shows up against it
    smallest = max(int(d.min()) for d in diffs)
    if step * _MAX_SUBDIVISION < smallest:
        raise ValueError(
            f"cannot infer the patch size: the coordinates are not on a regular grid (smallest spacing "
            f"{smallest} px, common divisor {step} px); pass patch_size= explicitly"
        )
    return step


def grid_positions(coords: Any, patch_size: int | None = None) -> tuple[np.ndarray, tuple[int, int], int]:
    """Integer grid positions of patches.

    Args:
        coords: ``(N, 2)`` patch coordinates ``(x, y)`` in level-0 pixels.
        patch_size: Grid step in level-0 pixels; inferred with :func:`infer_patch_size` when ``None``.

    Returns:
        ``(grid, origin, step)``: ``grid`` int64 ``(N, 2)`` of ``(gx, gy) = ((x − x_min)/s, (y − y_min)/s)``,
        ``origin = (x_min, y_min)`` and the step ``s``.

    Raises:
        ValueError: A coordinate off the grid of step ``s``, two patches at the same position, or a
            non-positive ``patch_size``.
    """
    arr = as_coords(coords)
    if len(arr) == 0:
        raise ValueError("coords is empty: a slide needs at least one patch")
    step = infer_patch_size(arr) if patch_size is None else _check_size(patch_size)
    origin = arr.min(axis=0)
    rel = arr - origin
    grid = np.floor_divide(rel, step)
    off = rel - grid * step
    if np.any(off != 0):
        i = int(np.argmax(np.any(off != 0, axis=1)))
        raise ValueError(
            f"patch {i} at {arr[i].tolist()} is not on the grid of step {step} px starting at {origin.tolist()}; "
            "pass the patch grid step as patch_size="
        )
    grid = grid.astype(np.int64)
    flat = grid[:, 1] * (int(grid[:, 0].max()) + 1) + grid[:, 0]
    uniq, counts = np.unique(flat, return_counts=True)
    if (counts > 1).any():
        dup = np.flatnonzero(flat == uniq[np.argmax(counts > 1)])[:2]
        raise ValueError(
            f"patches {dup.tolist()} share the position {arr[dup[0]].tolist()}; coordinates must be unique"
        )
    return grid, (int(origin[0]), int(origin[1])), step


def _check_size(patch_size: Any) -> int:
    if isinstance(patch_size, bool) or not isinstance(patch_size, (int, np.integer, float, np.floating)):
        raise TypeError(f"patch_size must be a positive integer number of level-0 pixels, got {patch_size!r}")
    if not math.isfinite(float(patch_size)) or float(patch_size) <= 0 or float(patch_size) != int(patch_size):
        raise ValueError(f"patch_size must be a positive integer number of level-0 pixels, got {patch_size!r}")
    return int(patch_size)


def connected_components(
    coords: Any, mask: Any, patch_size: int | None = None, connectivity: int = 8
) -> tuple[np.ndarray, int]:
    """Connected components of the masked patches on the slide grid.

    Args:
        coords: ``(N, 2)`` patch coordinates ``(x, y)`` in level-0 pixels.
        mask: ``(N,)`` booleans; the patches to group.
        patch_size: Grid step (inferred when ``None``).
        connectivity: 8 (patches touching at an edge or a corner are connected, as in the CAMELYON16 lesion
            definition) or 4 (edge only).

    Returns:
        ``(labels, count)``: int64 ``(N,)`` with 0 for unmasked patches and ``1..count`` for the component
        of each masked patch, numbered in order of their first patch in the input order.

    Raises:
        ValueError: Mismatched lengths, a connectivity other than 4 or 8, or coordinates off the grid.
    """
    m = np.asarray(mask).astype(bool).ravel()
    arr = as_coords(coords)
    if len(m) != len(arr):
        raise ValueError(f"mask has {len(m)} entries but coords has {len(arr)} patches")
    if connectivity not in (4, 8):
        raise ValueError(f"connectivity must be 4 or 8, got {connectivity!r}")
    labels = np.zeros(len(arr), dtype=np.int64)
    if not m.any():
        return labels, 0
    grid, _, _ = grid_positions(arr, patch_size)
    g = grid[m]
    g = g - g.min(axis=0)
    img = np.zeros((int(g[:, 1].max()) + 1, int(g[:, 0].max()) + 1), dtype=bool)  # (rows=gy, cols=gx)
    img[g[:, 1], g[:, 0]] = True
    structure = np.ones((3, 3), dtype=bool) if connectivity == 8 else ndimage.generate_binary_structure(2, 1)
    lab, count = ndimage.label(img, structure=structure)
    raw = lab[g[:, 1], g[:, 0]]
    # renumber by first appearance in the input order so the numbering does not depend on the raster scan
    _, first = np.unique(raw, return_index=True)
    order = np.argsort(first)
    remap = np.zeros(count + 1, dtype=np.int64)
    remap[np.unique(raw)[order]] = np.arange(1, count + 1)
    labels[m] = remap[raw]
    return labels, int(count)


def as_patch_values(values: Any, n: int, name: str = "values") -> np.ndarray:
    """One finite value per patch: ``values`` as float64 ``(n,)`` (a ``(n, 1)`` or ``(1, n)`` array is raveled).

    Raises:
        ValueError: another shape, or a non-finite value (named with its patch index).
    """
    if hasattr(values, "detach"):  # torch tensor
        values = values.detach().cpu().numpy()
    v = np.asarray(values, dtype=np.float64)
    if v.ndim == 2 and 1 in v.shape:
        v = v.ravel()
    if v.ndim != 1 or len(v) != n:
        raise ValueError(f"{name} must have shape ({n},), one value per patch, got shape {np.shape(values)}")
    if not np.isfinite(v).all():
        bad = int(np.argmax(~np.isfinite(v)))
        raise ValueError(f"{name} has a non-finite value at patch {bad}: {v[bad]}")
    return v
