"""Geometry of the synthetic slides: tissue as a random connected blob of patches, lesions grown inside it.

Cells are grid positions ``(gx, gy)`` (a patch's level-0 coordinates are ``grid · patch_size``). Tissue grows by
Eden growth (Eden 1961: a random cell of the frontier is added at each step) with a random elongation; lesion
regions grow the same way inside the tissue and are kept out of each other's 8-neighbourhood, so the
8-connected components of the lesion patches are exactly the regions.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
from scipy import ndimage

__all__ = ["ELONGATIONS", "grow_blob", "grow_region", "place_lesions"]

#: (x, y) growth weights of a tissue blob: 1:1 round, 2:1 / 3:1 elongated along an axis
ELONGATIONS = ((1, 1), (2, 1), (1, 2), (3, 1), (1, 3))

_DIRS4 = ((1, 0), (-1, 0), (0, 1), (0, -1))


def grow_blob(n: int, rng: np.random.Generator) -> np.ndarray:
    """``(n, 2)`` grid cells ``(gx, gy)`` of a random 4-connected blob (Eden growth with elongation)."""
    wx, wy = ELONGATIONS[int(rng.integers(len(ELONGATIONS)))]
    occupied = {(0, 0)}
    cells = [(0, 0)]
    frontier: list[tuple[int, int]] = []

    def push(c: tuple[int, int]) -> None:
        for dx, dy in _DIRS4:
            nb = (c[0] + dx, c[1] + dy)
            if nb not in occupied:
                # duplicates make growth along one axis more likely: an elongated, tissue-like blob
                frontier.extend([nb] * (wx if dx else wy))

    push((0, 0))
    draws = rng.random(4096)
    k = 0
    while len(cells) < n:
        if k == len(draws):
            draws = rng.random(4096)
            k = 0
        j = int(draws[k] * len(frontier))
        k += 1
        c = frontier[j]
        frontier[j] = frontier[-1]
        frontier.pop()
        if c in occupied:
            continue
        occupied.add(c)
        cells.append(c)
        push(c)
    arr = np.asarray(cells, dtype=np.int64)
    return arr - arr.min(axis=0)


def grow_region(
    target: int, seed_cell: tuple[int, int], allowed: np.ndarray, rng: np.random.Generator
) -> list[tuple[int, int]]:
    """Eden growth of up to ``target`` cells over 4-neighbours inside ``allowed`` (``(rows=gy, cols=gx)``)."""
    h, w = allowed.shape
    taken = {seed_cell}
    cells = [seed_cell]
    frontier: list[tuple[int, int]] = []

    def push(c: tuple[int, int]) -> None:
        for dx, dy in _DIRS4:
            x, y = c[0] + dx, c[1] + dy
            if 0 <= x < w and 0 <= y < h and allowed[y, x] and (x, y) not in taken:
                frontier.append((x, y))

    push(seed_cell)
    while len(cells) < target and frontier:
        j = int(rng.integers(len(frontier)))
        c = frontier[j]
        frontier[j] = frontier[-1]
        frontier.pop()
        if c in taken:
            continue
        taken.add(c)
        cells.append(c)
        push(c)
    return cells


def place_lesions(grid: np.ndarray, p: dict[str, Any], rng: np.random.Generator) -> tuple[np.ndarray, list[int]]:
    """``lesion_region (N,)`` (0 = normal, ``r`` = region r) and the sizes reached."""
    n = len(grid)
    n_regions = int(rng.integers(1, p["max_regions"] + 1))
    flo, fhi = p["lesion_fraction"]
    frac = math.exp(rng.uniform(math.log(flo), math.log(fhi)))
    total = max(n_regions, int(round(frac * n)))
    total = min(total, n)
    n_regions = min(n_regions, total)
    extra = rng.multinomial(total - n_regions, rng.dirichlet(np.ones(n_regions)))
    targets = 1 + extra
    h, w = int(grid[:, 1].max()) + 1, int(grid[:, 0].max()) + 1
    tissue = np.zeros((h, w), dtype=bool)
    tissue[grid[:, 1], grid[:, 0]] = True
    region_map = np.zeros((h, w), dtype=np.int64)
    blocked = np.zeros((h, w), dtype=bool)  # cells in, or 8-adjacent to, an earlier region
    sizes: list[int] = []
    for target in targets:
        free = tissue & ~blocked
        candidates = np.flatnonzero(free.ravel())
        if len(candidates) == 0:
            break
        flat = int(candidates[rng.integers(len(candidates))])
        seed_cell = (flat % w, flat // w)
        cells = grow_region(int(target), seed_cell, free, rng)
        r = len(sizes) + 1
        xs = np.fromiter((c[0] for c in cells), dtype=np.int64, count=len(cells))
        ys = np.fromiter((c[1] for c in cells), dtype=np.int64, count=len(cells))
        region_map[ys, xs] = r
        blocked |= ndimage.binary_dilation(region_map == r, structure=np.ones((3, 3), dtype=bool))
        sizes.append(len(cells))
    return region_map[grid[:, 1], grid[:, 0]], sizes
