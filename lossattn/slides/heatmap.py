"""Slide heatmaps drawn from patch coordinates alone (no slide image needed).

Units: ``coords`` rows are ``(x, y)``, the top-left corner of each patch in level-0 pixels (CLAM / TRIDENT);
patch ``i`` covers ``[x_i, x_i + s) × [y_i, y_i + s)`` with ``s`` the patch size in level-0 pixels. An
optional thumbnail is an image of the whole slide at ``thumbnail_downsample`` level-0 pixels per thumbnail
pixel, with its origin at the slide's origin.

Rasterisation: the canvas (the thumbnail's extent, or else the bounding box of the patches) is sampled at
``scale`` output pixels per level-0 pixel, ``scale = min(1, max_side / longest side)`` (with a thumbnail,
``min(1 / thumbnail_downsample, …)``). An output pixel takes the colour of the patch that contains its
centre. On a regular grid whose step is the patch size this is one table look-up per pixel (a grid of patch
indices), so 40,000 patches draw in well under a second; overlapping or off-grid patches are painted one by
one in increasing value, so the highest value is on top.

The PNG holds the raster pixel-for-pixel (no resampling) at a known offset, a colour bar stating the scaling,
and the optional title; the text chunk ``lossattn:heatmap`` (JSON) records ``raster_origin_px`` (left, top of
the raster in the PNG), ``raster_size_px``, ``scale`` and ``extent_level0`` ``[x0, y0, x1, y1]``, so that level-0
point ``(X, Y)`` is at PNG pixel ``(left + (X − x0)·scale, top + (Y − y0)·scale)``.
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Any

import numpy as np

from lossattn.io import atomic_write

from .grid import as_coords, as_patch_values, grid_positions, infer_patch_size

__all__ = ["infer_patch_size", "scale_values", "draw_heatmap", "HEATMAP_SCALES"]

HEATMAP_SCALES = ("rank", "linear", "log")
_SCALE_LABELS = {
    "rank": "percentile rank of the value within the slide",
    "linear": "value",
    "log": "log10(value)",
}
_DPI = 100
_MARGIN = 8
_BAR_GAP, _BAR_WIDTH, _BAR_TEXT = 12, 16, 76
_TITLE_HEIGHT = 26
_MIN_PLOT_HEIGHT = 160
_PNG_COMPRESSION = 3  # zlib level: a 2048-px map encodes in ~0.1 s instead of ~0.4 s at the default 6


def scale_values(
    values: Any, scale: str = "rank", vmin: float | None = None, vmax: float | None = None
) -> tuple[np.ndarray, float, float, str]:
    """Maps patch values to ``[0, 1]`` for a colour map.

    Attention weights of a big bag are tiny (about ``1/N``) and heavy-tailed, so the default is the
    within-slide percentile rank: ``q_i = (rank_i − 1) / (N − 1)`` with average ranks for ties (``q = 1`` for
    a single patch), which spreads the colours evenly over the patches. ``"linear"`` uses the values, and
    ``"log"`` ``log10`` of the (positive) values. ``t = clip((q − vmin) / (vmax − vmin), 0, 1)`` with
    ``vmin, vmax`` in the units of ``q`` (default: 0 and 1 for rank, the min and max of ``q`` otherwise); a
    constant ``q`` maps to ``t = 0.5``.

    Args:
        values: ``(N,)`` finite values.
        scale: ``"rank"``, ``"linear"`` or ``"log"``.
        vmin: Lower end of the colour range in the scaled units.
        vmax: Upper end.

    Returns:
        ``(t, vmin, vmax, label)``: ``t`` float64 ``(N,)`` in ``[0, 1]``, the range used, and the colour-bar
        label naming the scaling.

    Raises:
        ValueError: Unknown scale, non-positive values with ``"log"``, or ``vmin > vmax``.
    """
    arr = values.detach().cpu().numpy() if hasattr(values, "detach") else np.asarray(values)
    v = as_patch_values(arr, int(np.size(arr)))
    if scale == "rank":
        from scipy.stats import rankdata

        q = (rankdata(v) - 1.0) / (len(v) - 1) if len(v) > 1 else np.ones_like(v)
        lo_default, hi_default = 0.0, 1.0
    elif scale == "linear":
        q = v
        lo_default, hi_default = (float(q.min()), float(q.max())) if len(q) else (0.0, 1.0)
    elif scale == "log":
        if (v <= 0).any():
            bad = int(np.argmax(v <= 0))
            raise ValueError(f"scale='log' needs positive values; patch {bad} has {v[bad]} (use scale='rank')")
        q = np.log10(v)
        lo_default, hi_default = (float(q.min()), float(q.max())) if len(q) else (0.0, 1.0)
    else:
        raise ValueError(f"scale must be one of {HEATMAP_SCALES}, got {scale!r}")
    lo = lo_default if vmin is None else float(vmin)
    hi = hi_default if vmax is None else float(vmax)
    if not (math.isfinite(lo) and math.isfinite(hi)) or lo > hi:
        raise ValueError(f"need finite vmin <= vmax, got vmin={lo}, vmax={hi}")
    if hi == lo:
        t = np.full(len(q), 0.5)
    else:
        t = np.clip((q - lo) / (hi - lo), 0.0, 1.0)
    return t, lo, hi, _SCALE_LABELS[scale]


def _load_thumbnail(thumbnail: Any) -> np.ndarray:
    """``(H, W, 3)`` uint8 from a path or an array (uint8, or float in [0, 1]; gray, RGB or RGBA)."""
    if isinstance(thumbnail, (str, os.PathLike)):
        from PIL import Image

        path = Path(thumbnail)
        if not path.is_file():
            raise ValueError(f"thumbnail file {path} does not exist")
        with Image.open(path) as im:
            return np.asarray(im.convert("RGB"), dtype=np.uint8)
    arr = np.asarray(thumbnail)
    if arr.ndim == 2:
        arr = np.repeat(arr[:, :, None], 3, axis=2)
    if arr.ndim != 3 or arr.shape[2] not in (3, 4) or arr.shape[0] < 1 or arr.shape[1] < 1:
        raise ValueError(f"thumbnail must be an image array (H, W), (H, W, 3) or (H, W, 4), got shape {arr.shape}")
    arr = arr[:, :, :3]
    if arr.dtype == np.uint8:
        return arr
    if arr.dtype.kind == "f":
        if not np.isfinite(arr).all() or arr.min() < 0 or arr.max() > 1:
            raise ValueError("a float thumbnail must hold values in [0, 1]")
        return np.rint(arr * 255).astype(np.uint8)
    raise ValueError(f"thumbnail must be uint8 or float in [0, 1], got dtype {arr.dtype}")


def _pixel_range(lo: np.ndarray | float, hi: np.ndarray | float, origin: float, scale: float):
    """Output pixels whose centre ``origin + (k + 0.5)/scale`` lies in ``[lo, hi)``: ``k in [a, b)``."""
    a = np.ceil((np.asarray(lo, dtype=np.float64) - origin) * scale - 0.5).astype(np.int64)
    b = np.ceil((np.asarray(hi, dtype=np.float64) - origin) * scale - 0.5).astype(np.int64)
    return a, b


def _raster_indices(
    coords: np.ndarray,
    t: np.ndarray,
    size: int,
    extent: tuple[float, float, float, float],
    scale: float,
    out_hw: tuple[int, int],
) -> np.ndarray:
    """``(H, W)`` int64 raster of patch indices (−1 = no patch) under the pixel-centre rule."""
    h, w = out_hw
    x0, y0 = extent[0], extent[1]
    rel = coords - coords.min(axis=0)
    if coords.dtype.kind == "i" and not np.any(rel % size):
        # regular grid whose step is the patch size: look each output pixel up in a grid of patch indices
        grid, origin, _ = grid_positions(coords, size)
        gw, gh = int(grid[:, 0].max()) + 1, int(grid[:, 1].max()) + 1
        table = np.full((gh + 1, gw + 1), -1, dtype=np.int64)  # one empty row/col for out-of-grid pixels
        table[grid[:, 1], grid[:, 0]] = np.arange(len(coords))
        cx = x0 + (np.arange(w) + 0.5) / scale
        cy = y0 + (np.arange(h) + 0.5) / scale
        gx = np.floor((cx - origin[0]) / size).astype(np.int64)
        gy = np.floor((cy - origin[1]) / size).astype(np.int64)
        gx[(gx < 0) | (gx >= gw)] = gw
        gy[(gy < 0) | (gy >= gh)] = gh
        return table[gy[:, None], gx[None, :]]
    raster = np.full((h, w), -1, dtype=np.int64)
    c0, c1 = _pixel_range(coords[:, 0], coords[:, 0] + size, x0, scale)
    r0, r1 = _pixel_range(coords[:, 1], coords[:, 1] + size, y0, scale)
    np.clip(c0, 0, w, out=c0)
    np.clip(c1, 0, w, out=c1)
    np.clip(r0, 0, h, out=r0)
    np.clip(r1, 0, h, out=r1)
    for i in np.argsort(t, kind="stable"):  # increasing value: the highest ends on top
        raster[r0[i] : r1[i], c0[i] : c1[i]] = i
    return raster


def draw_heatmap(
    coords: Any,
    values: Any,
    path: str | os.PathLike[str],
    *,
    patch_size: int | None = None,
    thumbnail: Any = None,
    thumbnail_downsample: float | None = None,
    alpha: float = 0.5,
    cmap: str = "inferno",
    title: str | None = None,
    vmin: float | None = None,
    vmax: float | None = None,
    max_side: int = 2048,
    scale: str = "rank",
    background: str = "white",
) -> Path:
    """Draws patch values (e.g. attention weights) as a slide heatmap PNG, written atomically.

    Args:
        coords: ``(N, 2)`` patch top-left corners ``(x, y)`` in level-0 pixels.
        values: ``(N,)`` finite values, one per patch.
        path: Output ``.png`` (its folder is created); written to a temporary file in the same folder, then
            renamed over ``path`` (``os.replace``), so a reader never sees a partial file.
        patch_size: Patch side in level-0 pixels; inferred from the coordinate grid when ``None``
            (:func:`infer_patch_size`), which fails for one patch or off-grid coordinates.
        thumbnail: Optional slide image drawn underneath: a path or an ``(H, W[, 3|4])`` array.
        thumbnail_downsample: Level-0 pixels per thumbnail pixel (required with ``thumbnail``).
        alpha: Opacity of the heatmap over the thumbnail (``out = alpha·colour + (1 − alpha)·thumbnail``);
            without a thumbnail patches are opaque.
        cmap: Matplotlib colour map name.
        title: Optional title above the map.
        vmin: Lower end of the colour range, in the units of ``scale`` (see :func:`scale_values`).
        vmax: Upper end.
        max_side: Longest side of the raster in pixels (the scale never exceeds 1 output pixel per level-0
            pixel).
        scale: ``"rank"`` (default: within-slide percentile rank, stated on the colour bar), ``"linear"``
            or ``"log"``.
        background: ``"white"`` or ``"transparent"`` where there is no patch (and no thumbnail).

    Returns:
        The path written.

    Raises:
        ValueError: Mismatched shapes, non-finite values, a bad argument, a thumbnail without its downsample,
            or patches that fall entirely outside the thumbnail (a wrong downsample).
    """
    import matplotlib
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.cm import ScalarMappable
    from matplotlib.colors import Normalize
    from matplotlib.figure import Figure

    xy = as_coords(coords)
    n = len(xy)
    if n == 0:
        raise ValueError("coords is empty: nothing to draw")
    v = as_patch_values(values, n)
    size = infer_patch_size(xy) if patch_size is None else patch_size
    if isinstance(size, bool) or not isinstance(size, (int, np.integer, float)) or not size > 0:
        raise ValueError(f"patch_size must be a positive number of level-0 pixels, got {patch_size!r}")
    if not (isinstance(max_side, (int, np.integer)) and max_side >= 1):
        raise ValueError(f"max_side must be a positive integer, got {max_side!r}")
    if not 0.0 <= float(alpha) <= 1.0:
        raise ValueError(f"alpha must be in [0, 1], got {alpha!r}")
    if background not in ("white", "transparent"):
        raise ValueError(f"background must be 'white' or 'transparent', got {background!r}")
    try:
        colormap = matplotlib.colormaps[cmap]
    except KeyError as e:
        raise ValueError(f"unknown colour map {cmap!r}") from e
    t, lo, hi, label = scale_values(v, scale, vmin, vmax)

    thumb = None
    if thumbnail is not None:
        if thumbnail_downsample is None or not float(thumbnail_downsample) > 0:
            raise ValueError(
                "thumbnail_downsample (level-0 pixels per thumbnail pixel, > 0) is required with a thumbnail, "
                f"got {thumbnail_downsample!r}"
            )
        ds = float(thumbnail_downsample)
        thumb = _load_thumbnail(thumbnail)
        th, tw = thumb.shape[:2]
        extent = (0.0, 0.0, tw * ds, th * ds)
        outside = (xy[:, 0] >= extent[2]) | (xy[:, 1] >= extent[3]) | (xy[:, 0] + size <= 0) | (xy[:, 1] + size <= 0)
        if outside.any():
            i = int(np.argmax(outside))
            raise ValueError(
                f"{int(outside.sum())} of {n} patches lie outside the thumbnail ({tw}×{th} px at downsample {ds} "
                f"covers {extent[2]:g}×{extent[3]:g} level-0 px), e.g. patch {i} at {xy[i].tolist()}; "
                "check thumbnail_downsample"
            )
        scale_px = min(1.0 / ds, max_side / max(tw * ds, th * ds))
    else:
        extent = (
            float(xy[:, 0].min()),
            float(xy[:, 1].min()),
            float(xy[:, 0].max() + size),
            float(xy[:, 1].max() + size),
        )
        scale_px = min(1.0, max_side / max(extent[2] - extent[0], extent[3] - extent[1]))
    w = max(1, int(round((extent[2] - extent[0]) * scale_px)))
    h = max(1, int(round((extent[3] - extent[1]) * scale_px)))

    idx = _raster_indices(xy, t, size, extent, scale_px, (h, w))
    lut = colormap(t, bytes=True)  # (N, 4) uint8
    if thumb is not None:
        has = idx >= 0
        from PIL import Image

        if thumb.shape[:2] != (h, w):
            thumb = np.asarray(Image.fromarray(thumb).resize((w, h), Image.Resampling.BILINEAR), dtype=np.uint8)
        rgb = thumb.astype(np.float64)
        a = float(alpha)
        rgb[has] = a * lut[idx[has], :3] + (1.0 - a) * rgb[has]
        raster = np.concatenate([np.rint(rgb).astype(np.uint8), np.full((h, w, 1), 255, np.uint8)], axis=2)
    else:
        fill = 255 if background == "white" else 0
        # index −1 (no patch) picks the appended background row: one gather for the whole raster
        raster = np.vstack([lut, np.full((1, 4), fill, dtype=np.uint8)])[idx]

    top = _MARGIN + (_TITLE_HEIGHT if title else 0)
    fig_w = _MARGIN + w + _BAR_GAP + _BAR_WIDTH + _BAR_TEXT
    fig_h = top + max(h, _MIN_PLOT_HEIGHT) + _MARGIN
    transparent = background == "transparent" and thumb is None
    fig = Figure(figsize=(fig_w / _DPI, fig_h / _DPI), dpi=_DPI)
    fig.patch.set_facecolor((1.0, 1.0, 1.0, 0.0) if transparent else "white")
    canvas = FigureCanvasAgg(fig)
    bar_h = max(h, _MIN_PLOT_HEIGHT)
    cax = fig.add_axes(((_MARGIN + w + _BAR_GAP) / fig_w, _MARGIN / fig_h, _BAR_WIDTH / fig_w, bar_h / fig_h))
    norm = Normalize(vmin=lo, vmax=hi) if hi > lo else Normalize(vmin=lo - 0.5, vmax=hi + 0.5)
    bar = fig.colorbar(ScalarMappable(norm=norm, cmap=colormap), cax=cax)
    bar.ax.tick_params(labelsize=7)
    bar.set_label(label, fontsize=7)
    if title:
        fig.text(_MARGIN / fig_w, 1.0 - (_MARGIN / 2) / fig_h, title, ha="left", va="top", fontsize=10)
    canvas.draw()
    # matplotlib draws only the decorations; the raster is pasted pixel for pixel (resampling it through
    # matplotlib's image pipeline costs seconds for a 2048-px map and could shift pixels)
    page = np.array(canvas.buffer_rgba(), dtype=np.uint8)  # (fig_h, fig_w, 4)
    if page.shape[:2] != (fig_h, fig_w):  # pragma: no cover - depends on matplotlib's rounding
        raise RuntimeError(f"matplotlib drew a {page.shape[1]}×{page.shape[0]} page, expected {fig_w}×{fig_h}")
    page[top : top + h, _MARGIN : _MARGIN + w] = raster
    layout = {
        "raster_origin_px": [_MARGIN, top],
        "raster_size_px": [w, h],
        "scale": scale_px,
        "extent_level0": list(extent),
        "patch_size": float(size),
        "value_scale": scale,
    }
    from PIL import Image, PngImagePlugin

    info = PngImagePlugin.PngInfo()
    info.add_text("Software", "lossattn")
    info.add_text("lossattn:heatmap", json.dumps(layout))
    image = Image.fromarray(page, "RGBA") if transparent else Image.fromarray(page[:, :, :3].copy(), "RGB")
    out = Path(path)
    atomic_write(out, lambda fh: image.save(fh, format="PNG", pnginfo=info, compress_level=_PNG_COMPRESSION))
    return out
