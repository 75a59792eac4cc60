"""Figures of instance weights and retrieval curves (matplotlib, Agg canvas; no pyplot global state).

Every function builds a :class:`matplotlib.figure.Figure` of a known size (``figsize × dpi`` pixels: no
``bbox_inches="tight"``, so the written PNG has exactly that size), returns it, and writes it when
``path`` is given.

* :func:`plot_image_bags` — a few image bags, one row each, every instance tile annotated with its weight α
  (one value per method when several methods are compared), target instances framed.
* :func:`plot_ranked_weights` — feature bags: a bar chart of one bag's instance weights, largest first.
* :func:`plot_weight_map` — feature-map bags (image classification): the map of weights over the feature
  map positions, upsampled to the image and overlaid on it.
* :func:`plot_retrieval_curves` — instance retrieval precision / recall / F-score against the threshold τ,
  one curve per method (the paper's Figure 2) or per λ (Figure 3).
"""

from __future__ import annotations

import textwrap
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.patches import Rectangle

__all__ = [
    "ImageBag",
    "DPI",
    "image_bags_size",
    "plot_image_bags",
    "plot_ranked_weights",
    "plot_weight_map",
    "plot_retrieval_curves",
    "save_figure",
    "to_display_image",
    "upsample",
]

DPI = 100
TILE_INCHES = 1.05  # width of one instance tile (with its gap)
TARGET_COLOR = "#d62728"
COLORS = ("#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f", "#17becf")


@dataclass
class ImageBag:
    """One image bag to draw.

    Attributes:
        images: ``(n, C, H, W)``, ``(n, H, W)`` or ``(n, H, W, C)`` instances (any scale; each tile is
            min-max scaled for display).
        weights: method label → ``(n,)`` weights (e.g. ``{"Loss-Attention": α}``); at most 3 methods.
        title: Text above the row (bag name, label, prediction).
        instance_labels: Optional ``(n,)``; instances with a label > 0 (targets) get a red frame.
    """

    images: Any
    weights: Mapping[str, Any]
    title: str = ""
    instance_labels: Any = None
    extra: dict[str, Any] = field(default_factory=dict)


def save_figure(fig: Figure, path: str | Path) -> Path:
    """Write ``fig`` (PNG unless the suffix says otherwise) at its own size and DPI; returns the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    FigureCanvasAgg(fig)
    fig.savefig(path, dpi=fig.dpi)
    return path


def _new_figure(width: float, height: float, dpi: int = DPI) -> Figure:
    fig = Figure(figsize=(width, height), dpi=dpi)
    FigureCanvasAgg(fig)
    return fig


def to_display_image(image: Any) -> np.ndarray:
    """An instance as an ``(H, W)`` or ``(H, W, 3)`` float array in ``[0, 1]`` (min-max scaled)."""
    a = np.asarray(image.detach().cpu().numpy() if hasattr(image, "detach") else image, dtype=np.float64)
    if a.ndim == 3 and a.shape[0] in (1, 3) and a.shape[-1] not in (1, 3):
        a = np.moveaxis(a, 0, -1)  # CHW -> HWC
    elif a.ndim == 3 and a.shape[0] in (1, 3) and a.shape[-1] in (1, 3) and a.shape[0] < a.shape[1]:
        a = np.moveaxis(a, 0, -1)
    if a.ndim == 3 and a.shape[-1] == 1:
        a = a[..., 0]
    if a.ndim not in (2, 3):
        raise ValueError(f"cannot display an instance of shape {a.shape}; expected (C, H, W), (H, W) or (H, W, C)")
    lo, hi = np.nanmin(a), np.nanmax(a)
    return (a - lo) / (hi - lo) if hi > lo else np.zeros_like(a)


def image_bags_size(n_bags: int, max_instances: int, n_methods: int = 1) -> tuple[int, int]:
    """Pixel size ``(width, height)`` of :func:`plot_image_bags`: ``n_bags`` rows of ``max_instances`` tiles,
    each annotated with ``n_methods`` weights."""
    w, h = _image_bags_inches(n_bags, max_instances, n_methods)
    return round(w * DPI), round(h * DPI)


_HEADER_IN, _FOOTER_IN, _ROW_TITLE_IN, _TEXT_LINE_IN, _ROW_GAP_IN, _MARGIN_IN = 0.45, 0.3, 0.3, 0.17, 0.12, 0.15


def _row_inches(n_methods: int) -> float:
    return _ROW_TITLE_IN + TILE_INCHES + _TEXT_LINE_IN * max(1, n_methods) + _ROW_GAP_IN


def _image_bags_inches(n_bags: int, max_instances: int, n_methods: int) -> tuple[float, float]:
    width = max(4.0, 2 * _MARGIN_IN + TILE_INCHES * max(1, max_instances))
    return width, _HEADER_IN + _row_inches(n_methods) * max(1, n_bags) + _FOOTER_IN


def plot_image_bags(
    bags: Sequence[ImageBag],
    path: str | Path | None = None,
    *,
    title: str | None = None,
    max_instances: int | None = None,
) -> Figure:
    """Tiles of a few image bags, each tile annotated with its weight(s).

    Args:
        bags: The bags (one row each); every bag annotates at most 3 methods.
        path: Where to write the PNG (optional).
        title: Figure title.
        max_instances: Draw at most this many instances per bag (default: the largest bag).

    Returns:
        The figure; its pixel size is :func:`image_bags_size` ``(len(bags), columns, methods)`` with
        ``columns = min(largest bag, max_instances)`` and ``methods`` the most methods of one bag.
    """
    if not bags:
        raise ValueError("plot_image_bags needs at least one bag")
    sizes = [len(b.images) for b in bags]
    cols = max(sizes) if max_instances is None else min(max(sizes), int(max_instances))
    n_methods = max(len(b.weights) for b in bags)
    if n_methods > 3:
        raise ValueError(f"at most 3 methods per bag can be annotated, got {n_methods}")
    width, height = _image_bags_inches(len(bags), cols, n_methods)
    fig = _new_figure(width, height)
    if title:
        fig.suptitle(title, fontsize=11, y=1.0 - 0.1 / height, va="top")
    row_in = _row_inches(n_methods)
    tile = TILE_INCHES * 0.88
    for r, bag in enumerate(bags):
        methods = list(bag.weights)
        weights = {m: np.asarray(bag.weights[m], dtype=np.float64).ravel() for m in methods}
        labels = None if bag.instance_labels is None else np.asarray(bag.instance_labels).ravel()
        row_top = height - _HEADER_IN - r * row_in  # inches from the bottom
        fig.text(_MARGIN_IN / width, (row_top - 0.05) / height, bag.title, fontsize=9, va="top", ha="left")
        tile_bottom = row_top - _ROW_TITLE_IN - tile
        for j in range(min(len(bag.images), cols)):
            left = _MARGIN_IN + j * TILE_INCHES + (TILE_INCHES - tile) / 2
            ax = fig.add_axes((left / width, tile_bottom / height, tile / width, tile / height), label=f"bag{r}_{j}")
            img = to_display_image(bag.images[j])
            ax.imshow(img, cmap="gray" if img.ndim == 2 else None, interpolation="nearest", vmin=0, vmax=1)
            ax.set_xticks([])
            ax.set_yticks([])
            target = labels is not None and j < len(labels) and labels[j] > 0
            for spine in ax.spines.values():
                spine.set_edgecolor(TARGET_COLOR if target else "#bbbbbb")
                spine.set_linewidth(2.5 if target else 0.8)
            text = "\n".join(f"{_short(m)}{weights[m][j]:.2f}" if j < len(weights[m]) else "" for m in methods)
            fig.text(
                (left + tile / 2) / width,
                (tile_bottom - 0.03) / height,
                text,
                ha="center",
                va="top",
                fontsize=8,
                family="monospace",
                linespacing=1.1,
            )
    legend = []
    methods_all = list(dict.fromkeys(m for b in bags for m in b.weights))
    if len(methods_all) > 1:
        legend.append("α per method: " + ", ".join(f"{_short(m).strip()} = {m}" for m in methods_all))
    if any(b.instance_labels is not None for b in bags):
        legend.append("red frame = target instance")
    if legend:
        fig.text(_MARGIN_IN / width, 0.08 / height, "   ".join(legend), fontsize=8, va="bottom", ha="left",
                 color="#444444")  # fmt: skip
    if path is not None:
        save_figure(fig, path)
    return fig


def _short(method: str) -> str:
    """A compact prefix for a method's weight: ``LA ``, ``Att ``, ``GA ``... (empty for a single 'α')."""
    key = method.lower().replace("-", "_").replace(" ", "_")
    table = {
        "loss_attention": "LA ",
        "attention": "Att ",
        "gated_attention": "GA ",
        "attention_sigmoid": "AttS ",
        "gated_attention_sigmoid": "GAS ",
        "α": "α ",
        "p": "p ",
        "alpha": "α ",
        "weight": "α ",
    }
    if key in table:
        return table[key]
    letters = "".join(part[0] for part in key.split("_") if part).upper()
    return (letters[:4] or "α") + " "


def plot_ranked_weights(
    weights: Any,
    path: str | Path | None = None,
    *,
    instance_labels: Any = None,
    names: Sequence[str] | None = None,
    title: str = "",
    top: int | None = 40,
    ylabel: str = "weight α",
    figsize: tuple[float, float] = (8.0, 4.0),
) -> Figure:
    """Bar chart of one bag's instance weights, largest first.

    Args:
        weights: ``(n,)`` weights.
        path: Where to write the PNG (optional).
        instance_labels: Optional ``(n,)``; target instances (label > 0) are drawn in red.
        names: Optional instance names for the x axis (default: the instance index).
        title: Axes title.
        top: Show only the ``top`` largest weights (None: all).
        ylabel: y-axis label (e.g. ``"p(predicted class)"`` for models without weights).
        figsize: Inches; the PNG is ``figsize × 100`` pixels.
    """
    w = np.asarray(weights, dtype=np.float64).ravel()
    if w.size == 0:
        raise ValueError("plot_ranked_weights needs at least one weight")
    order = np.argsort(-w, kind="stable")
    if top is not None:
        order = order[: int(top)]
    labels = None if instance_labels is None else np.asarray(instance_labels).ravel()
    fig = _new_figure(*figsize)
    ax = fig.add_axes((0.09, 0.2, 0.88, 0.68))
    colors = [TARGET_COLOR if labels is not None and labels[i] > 0 else COLORS[0] for i in order]
    ax.bar(np.arange(order.size), w[order], color=colors)
    ax.set_xticks(np.arange(order.size))
    tick = [str(names[i]) if names is not None else str(i) for i in order]
    ax.set_xticklabels(tick, rotation=90 if order.size > 12 else 0, fontsize=7 if order.size > 12 else 9)
    ax.set_xlabel("instance (ranked by weight)")
    ax.set_ylabel(ylabel)
    ax.set_ylim(0, max(1e-12, float(w.max())) * 1.12)
    shown = f" (top {order.size} of {w.size})" if order.size < w.size else ""
    ax.set_title((title + shown).strip(), fontsize=10)
    ax.grid(axis="y", alpha=0.3)
    if labels is not None and (labels > 0).any():
        ax.text(0.99, 0.97, "red = target instance", transform=ax.transAxes, ha="right", va="top", fontsize=8)
    if path is not None:
        save_figure(fig, path)
    return fig


def upsample(weight_map: Any, size: tuple[int, int]) -> np.ndarray:
    """Bilinear upsampling of an ``(h, w)`` map to ``size = (H, W)`` (align corners off, like torch)."""
    m = np.asarray(weight_map, dtype=np.float64)
    if m.ndim != 2:
        raise ValueError(f"weight_map must be 2-D (h, w), got shape {m.shape}")
    H, W = int(size[0]), int(size[1])
    h, w = m.shape

    def coords(n_out: int, n_in: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        x = (np.arange(n_out) + 0.5) * (n_in / n_out) - 0.5
        x = np.clip(x, 0, n_in - 1)
        lo = np.floor(x).astype(int)
        hi = np.minimum(lo + 1, n_in - 1)
        return lo, hi, x - lo

    y0, y1, fy = coords(H, h)
    x0, x1, fx = coords(W, w)
    top = m[y0][:, x0] * (1 - fx) + m[y0][:, x1] * fx
    bottom = m[y1][:, x0] * (1 - fx) + m[y1][:, x1] * fx
    return top * (1 - fy[:, None]) + bottom * fy[:, None]


def plot_weight_map(
    image: Any,
    weight_map: Any,
    path: str | Path | None = None,
    *,
    title: str = "",
    alpha: float = 0.5,
    cmap: str = "jet",
    mark_max: bool = True,
    box: Sequence[int] | None = None,
    figsize: tuple[float, float] = (6.0, 3.2),
) -> Figure:
    """The image beside the image with its feature-map weights upsampled over it.

    Args:
        image: ``(C, H, W)``, ``(H, W, C)`` or ``(H, W)``.
        weight_map: ``(h, w)`` weights of the feature-map positions (the instances), or ``(h*w,)`` for a
            square map.
        path: Where to write the PNG (optional).
        title: Figure title.
        alpha: Opacity of the overlay.
        cmap: Colormap of the weights.
        mark_max: Frame the feature-map cell with the largest weight (the localisation patch).
        box: Optional ground-truth box ``(x0, y0, x1, y1)`` in inclusive pixel indices, drawn in green.
        figsize: Inches; the PNG is ``figsize × 100`` pixels.
    """
    img = to_display_image(image)
    m = np.asarray(weight_map.detach().cpu().numpy() if hasattr(weight_map, "detach") else weight_map, float)
    if m.ndim == 1:
        side = int(round(np.sqrt(m.size)))
        if side * side != m.size:
            raise ValueError(f"a flat weight map must have a square number of entries, got {m.size}")
        m = m.reshape(side, side)
    H, W = img.shape[:2]
    up = upsample(m, (H, W))
    fig = _new_figure(*figsize)
    lines = textwrap.wrap(title, width=int(figsize[0] * 15)) if title else []
    if lines:  # long titles (file and class names) wrap instead of running off the figure
        fig.suptitle("\n".join(lines[:2]), fontsize=10 if len(lines) == 1 else 8.5)
    height = 0.8 if len(lines) <= 1 else 0.74
    ax1 = fig.add_axes((0.02, 0.05, 0.42, height))
    ax2 = fig.add_axes((0.47, 0.05, 0.42, height))
    for ax in (ax1, ax2):
        ax.imshow(img, cmap="gray" if img.ndim == 2 else None, interpolation="nearest")
        ax.set_xticks([])
        ax.set_yticks([])
    ax1.set_title("image", fontsize=9)
    overlay = ax2.imshow(up, cmap=cmap, alpha=alpha, interpolation="bilinear", vmin=0.0, vmax=max(up.max(), 1e-12))
    ax2.set_title("weights", fontsize=9)
    cax = fig.add_axes((0.91, 0.1, 0.015, 0.7))  # leaves room for the tick labels
    fig.colorbar(overlay, cax=cax)
    cax.tick_params(labelsize=7)
    if mark_max:
        i, j = np.unravel_index(int(np.argmax(m)), m.shape)
        ch, cw = H / m.shape[0], W / m.shape[1]
        ax2.add_patch(Rectangle((j * cw - 0.5, i * ch - 0.5), cw, ch, fill=False, edgecolor="white", linewidth=2))
    if box is not None:
        x0, y0, x1, y1 = (int(v) for v in box)
        for ax in (ax1, ax2):
            ax.add_patch(
                Rectangle((x0 - 0.5, y0 - 0.5), x1 - x0 + 1, y1 - y0 + 1, fill=False, edgecolor="lime", linewidth=1.5)
            )
    if path is not None:
        save_figure(fig, path)
    return fig


def plot_retrieval_curves(
    curves: Mapping[str, Mapping[Any, Mapping[str, float]]],
    path: str | Path | None = None,
    *,
    title: str = "",
    figsize: tuple[float, float] = (12.0, 3.8),
    legend_title: str | None = None,
) -> Figure:
    """Precision, recall and F-score of instance retrieval (α > τ) against τ, one curve per entry.

    Args:
        curves: label (method or λ) → τ → ``{"precision", "recall", "f1"}`` (τ as float or str).
        path: Where to write the PNG (optional).
        title: Figure title.
        figsize: Inches; the PNG is ``figsize × 100`` pixels.
        legend_title: Title of the legend (e.g. ``"λ"``).
    """
    if not curves:
        raise ValueError("plot_retrieval_curves needs at least one curve")
    fig = _new_figure(*figsize)
    if title:
        fig.suptitle(title, fontsize=11)
    axes = [fig.add_axes((0.05 + k * 0.285, 0.14, 0.235, 0.68)) for k in range(3)]
    markers = "os^vD<>ph*"
    for n, (label, by_tau) in enumerate(curves.items()):
        taus = sorted(float(t) for t in by_tau)
        lookup = {float(t): v for t, v in by_tau.items()}
        for ax, key in zip(axes, ("precision", "recall", "f1"), strict=True):
            ys = [_nan(lookup[t].get(key)) for t in taus]
            ax.plot(
                taus,
                ys,
                marker=markers[n % len(markers)],
                ms=4,
                lw=1.4,
                color=COLORS[n % len(COLORS)],
                label=str(label),
            )
    for ax, name in zip(axes, ("precision", "recall", "F-score"), strict=True):
        ax.set_xlabel("threshold τ")
        ax.set_title(name, fontsize=10)
        ax.set_ylim(-0.02, 1.02)
        ax.set_xlim(0.95, 0.05)  # the paper draws τ from 0.9 down to 0.1
        ax.grid(alpha=0.3)
    handles, labels = axes[0].get_legend_handles_labels()
    fig.legend(
        handles, labels, loc="center right", fontsize=8, title=legend_title, frameon=False, bbox_to_anchor=(0.995, 0.48)
    )
    if path is not None:
        save_figure(fig, path)
    return fig


def _nan(value: Any) -> float:
    return float("nan") if value is None else float(value)
