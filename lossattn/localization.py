"""Weakly supervised localization AP of the paper's Table 5 (Shi et al. 2020), as pure functions.

Geometry (all coordinates are continuous, x to the right, y down, origin at the top-left image corner):

* An image of ``H × W`` pixels covers ``[0, W) × [0, H)``; pixel (row ``r``, column ``c``) is the unit
  square ``[c, c + 1) × [r, r + 1)``.
* A weight map of ``h × w`` positions is upsampled to the image by nearest neighbour: position
  (row ``i``, column ``j``) becomes the **patch** ``[j·W/w, (j + 1)·W/w) × [i·H/h, (i + 1)·H/h)``. The
  patches tile the image exactly, also when ``W/w`` or ``H/h`` is not an integer and when the image is
  not square.
* The predicted patch is the one of the position of maximum weight (ties: the first position in
  row-major order, ``p = i·w + j``).
* A ground-truth box ``(x0, y0, x1, y1)`` is given, as in Tiny ImageNet's annotation files, by
  **inclusive** pixel indices, so it covers ``[x0, x1 + 1) × [y0, y1 + 1)``; with ``inclusive=False`` it
  is taken as the continuous rectangle ``[x0, x1) × [y0, y1)``.
* The image is correctly localized when ``area(patch ∩ box) ≥ ½ · area(patch)`` (exactly half counts as
  correct; the comparison allows a relative rounding slack of 1e-9).
* Localization AP = the share of correctly localized images.

Example: a 64×64 image with an 8×8 map has 8×8-pixel patches; if the maximum is at position (2, 3) the
patch is ``[24, 32) × [16, 24)``; a box ``(28, 0, 63, 63)`` covers ``[28, 64) × [0, 64)``, which holds
half of that patch (4 of its 8 columns), so the image counts as correct.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

__all__ = [
    "max_weight_positions",
    "patch_boxes",
    "box_regions",
    "intersection_area",
    "patch_inside_fraction",
    "localization_correct",
    "localization_ap",
]

_SLACK = 1e-9


def _array(x: Any, dtype=np.float64) -> np.ndarray:
    if hasattr(x, "detach"):  # torch tensor
        x = x.detach().cpu().numpy()
    return np.asarray(x, dtype=dtype)


def _image_sizes(image_size: Any, n: int) -> np.ndarray:
    """``(n, 2)`` array of (H, W) from one ``(H, W)`` pair or one pair per image."""
    sizes = _array(image_size)
    if sizes.shape == (2,):
        sizes = np.broadcast_to(sizes, (n, 2))
    if sizes.shape != (n, 2):
        raise ValueError(f"image_size must be (H, W) or one (H, W) per image, shape ({n}, 2); got {sizes.shape}")
    if (sizes <= 0).any():
        raise ValueError(f"image sizes must be positive, got {sizes[(sizes <= 0).any(axis=1)][:3].tolist()}")
    return sizes


def max_weight_positions(weight_maps: Any) -> np.ndarray:
    """Row and column of the maximum of every map.

    Args:
        weight_maps: ``(B, h, w)`` (numpy or torch).

    Returns:
        int64 ``(B, 2)``: ``(i, j)``; ties go to the first position in row-major order.

    Raises:
        ValueError: not 3-D, an empty map, or a map with NaN.
    """
    maps = _array(weight_maps)
    if maps.ndim != 3 or maps.shape[1] < 1 or maps.shape[2] < 1:
        raise ValueError(f"weight_maps must have shape (B, h, w) with h, w >= 1, got {maps.shape}")
    if len(maps) == 0:
        return np.zeros((0, 2), dtype=np.int64)
    if np.isnan(maps).any():
        bad = np.flatnonzero(np.isnan(maps).reshape(len(maps), -1).any(axis=1))[:5].tolist()
        raise ValueError(f"weight maps of images {bad} contain NaN")
    flat = maps.reshape(len(maps), -1).argmax(axis=1)  # numpy argmax: first occurrence
    w = maps.shape[2]
    return np.stack([flat // w, flat % w], axis=1).astype(np.int64)


def patch_boxes(positions: Any, grid: tuple[int, int], image_size: Any) -> np.ndarray:
    """The image patch of each map position, as continuous ``(x0, y0, x1, y1)``.

    Args:
        positions: int ``(B, 2)`` rows ``(i, j)``.
        grid: ``(h, w)`` of the weight map.
        image_size: ``(H, W)`` for all images, or ``(B, 2)``.

    Returns:
        float64 ``(B, 4)``: ``(j·W/w, i·H/h, (j+1)·W/w, (i+1)·H/h)``.
    """
    pos = _array(positions, np.int64).reshape(-1, 2)
    h, w = (int(v) for v in grid)
    if h < 1 or w < 1:
        raise ValueError(f"grid must be (h, w) with h, w >= 1, got {grid}")
    if len(pos) and ((pos < 0).any() or (pos[:, 0] >= h).any() or (pos[:, 1] >= w).any()):
        raise ValueError(f"positions must lie in the {h}x{w} grid")
    sizes = _image_sizes(image_size, len(pos))
    ph, pw = sizes[:, 0] / h, sizes[:, 1] / w
    i, j = pos[:, 0].astype(np.float64), pos[:, 1].astype(np.float64)
    return np.stack([j * pw, i * ph, (j + 1) * pw, (i + 1) * ph], axis=1)


def box_regions(boxes: Any, inclusive: bool = True) -> np.ndarray:
    """Ground-truth boxes as continuous ``(x0, y0, x1, y1)`` rectangles.

    Args:
        boxes: ``(B, 4)`` boxes ``(x0, y0, x1, y1)``.
        inclusive: the boxes hold inclusive pixel indices (Tiny ImageNet): the region is
            ``[x0, x1 + 1) × [y0, y1 + 1)``. Otherwise they are continuous already.

    Raises:
        ValueError: wrong shape or an inverted box (``x1 < x0`` or ``y1 < y0``).
    """
    b = _array(boxes)
    if b.ndim == 1 and b.size == 4:
        b = b.reshape(1, 4)
    if b.ndim != 2 or b.shape[1] != 4:
        raise ValueError(f"boxes must have shape (B, 4) as (x0, y0, x1, y1), got {b.shape}")
    if np.isnan(b).any():
        raise ValueError("boxes contain NaN")
    if ((b[:, 2] < b[:, 0]) | (b[:, 3] < b[:, 1])).any():
        bad = np.flatnonzero((b[:, 2] < b[:, 0]) | (b[:, 3] < b[:, 1]))[:5].tolist()
        raise ValueError(f"boxes {bad} are inverted (x1 < x0 or y1 < y0); expected (x0, y0, x1, y1)")
    if inclusive:
        b = b + np.array([0.0, 0.0, 1.0, 1.0])
    return b


def intersection_area(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Area of the intersection of rectangles ``a`` and ``b`` (both ``(B, 4)`` as ``(x0, y0, x1, y1)``)."""
    dx = np.minimum(a[:, 2], b[:, 2]) - np.maximum(a[:, 0], b[:, 0])
    dy = np.minimum(a[:, 3], b[:, 3]) - np.maximum(a[:, 1], b[:, 1])
    return np.clip(dx, 0.0, None) * np.clip(dy, 0.0, None)


def patch_inside_fraction(weight_maps: Any, boxes: Any, image_size: Any, inclusive: bool = True) -> np.ndarray:
    """Share of the maximum-weight patch that lies inside the box, per image ``(B,)`` in ``[0, 1]``."""
    maps = _array(weight_maps)
    if maps.ndim != 3:
        raise ValueError(f"weight_maps must have shape (B, h, w), got {maps.shape}")
    regions = box_regions(boxes, inclusive)
    if len(regions) != len(maps):
        raise ValueError(f"{len(maps)} weight maps but {len(regions)} boxes")
    patches = patch_boxes(max_weight_positions(maps), maps.shape[1:], image_size)
    area = (patches[:, 2] - patches[:, 0]) * (patches[:, 3] - patches[:, 1])
    return intersection_area(patches, regions) / area


def localization_correct(
    weight_maps: Any, boxes: Any, image_size: Any, *, inclusive: bool = True, threshold: float = 0.5
) -> np.ndarray:
    """Whether each image is correctly localized: at least ``threshold`` of its max-weight patch is in the box.

    Args:
        weight_maps: ``(B, h, w)`` weights (any monotone score works: only the argmax is used).
        boxes: ``(B, 4)`` ground-truth boxes ``(x0, y0, x1, y1)``.
        image_size: ``(H, W)`` or ``(B, 2)``.
        inclusive: boxes hold inclusive pixel indices (Tiny ImageNet).
        threshold: required share of the patch (the paper: ½).

    Returns:
        bool ``(B,)``.
    """
    if not 0.0 <= threshold <= 1.0:
        raise ValueError(f"threshold must be in [0, 1], got {threshold}")
    return patch_inside_fraction(weight_maps, boxes, image_size, inclusive) >= threshold * (1.0 - _SLACK)


def localization_ap(
    weight_maps: Any | Sequence[Any],
    boxes: Any,
    image_size: Any,
    *,
    inclusive: bool = True,
    threshold: float = 0.5,
) -> float:
    """Localization AP: the share of images whose max-weight patch lies at least half inside the box.

    See the module docstring for the exact geometry.

    Raises:
        ValueError: no images.
    """
    correct = localization_correct(weight_maps, boxes, image_size, inclusive=inclusive, threshold=threshold)
    if correct.size == 0:
        raise ValueError("localization AP needs at least one image")
    return float(correct.mean())
