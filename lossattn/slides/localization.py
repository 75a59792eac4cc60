"""Patch-level localization scores of attention weights against a lesion mask, over whole slides.

This is the slide-scale analogue of the instance-retrieval curves of the loss-based attention paper
(Shi et al., AAAI 2020, Figure 2): how well do the weights single out the patches, and the lesions, that
carry the class signal?

Inputs per slide ``s``: weights ``w_s (N_s,)`` (attention weights or any patch score), truth ``y_s (N_s,)``
(instance labels: 0 = normal, ``k > 0`` = lesion of class ``k``; booleans also work) and, for the FROC,
``coords_s (N_s, 2)`` (patch top-left corners ``(x, y)`` in level-0 pixels, CLAM / TRIDENT layout).

Normalisation within each slide (``normalize=``) makes scores of different slides comparable before they
are pooled; the ranking within a slide never changes:

* ``"mean"`` (default): ``w / mean(w)``, the weight relative to uniform attention; for softmax attention
  (``Σ w = 1``) this is ``N·w``, so a weight of 1 is "average" whatever the bag size, and a slide whose
  attention is uniform scores 1 everywhere. Needs ``w ≥ 0`` with a positive sum.
* ``"max"``: ``w / max(w)`` (needs ``w ≥ 0``, ``max > 0``): the top patch of every slide scores 1.
* ``"minmax"``: ``(w − min) / (max − min)`` (0.5 for a constant slide).
* ``"rank"``: within-slide percentile rank ``(rank − 1)/(N − 1)`` with average ranks for ties.
* ``"none"``: the raw values.

Scores:

* :func:`patch_average_precision`: average precision (AP) of ranking patches by normalised weight, the
  step-wise sum ``AP = Σ_t (R_t − R_{t−1}) · P_t`` over the distinct score thresholds ``t`` (the definition of
  ``sklearn.metrics.average_precision_score``), pooled over all patches of all slides, and the mean of the
  per-slide APs over slides that hold at least one lesion patch. Random weights give an AP near the share of
  lesion patches (the prevalence).
* :func:`froc`: the lesion-based free-response ROC of the CAMELYON16 challenge
  (https://camelyon16.grand-challenge.org/Evaluation/; Ehteshami Bejnordi et al., JAMA 2017): sensitivity
  (share of lesions detected) against the mean number of false positives per slide, summarised by the
  average sensitivity at 1/4, 1/2, 1, 2, 4 and 8 false positives per slide. Here a lesion is a connected
  component (8-neighbourhood on the patch grid) of truth patches; a detection is a patch that is a local
  maximum of the normalised weight over its 8 neighbours (``detection="local_max"``, ties go to the earlier
  patch) or every patch (``detection="patch"``), with the patch's score as confidence. At threshold ``t`` the
  detections with score ``≥ t`` are kept; a lesion is hit when a kept detection lies in it (several
  detections in one lesion count once); kept detections outside every lesion are false positives, counted
  over all slides (negatives included) and divided by the number of slides. As in the challenge's
  evaluation code, a lesion's confidence is the largest score of the detections inside it, and the
  sensitivity at a false-positive rate is read off the curve by linear interpolation (``numpy.interp``),
  after keeping, at each false-positive count, the highest sensitivity; unlike that code, no threshold is
  skipped (it drops the lowest score).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from scipy.stats import rankdata

from .grid import as_coords, connected_components, grid_positions

__all__ = [
    "localization_scores",
    "NORMALIZATIONS",
    "CAMELYON16_FP_RATES",
    "normalize_weights",
    "average_precision",
    "PatchAP",
    "patch_average_precision",
    "FROCResult",
    "froc",
    "local_maxima",
]

NORMALIZATIONS = ("mean", "max", "minmax", "rank", "none")
CAMELYON16_FP_RATES = (0.25, 0.5, 1.0, 2.0, 4.0, 8.0)

# (dx, dy) of the 8 neighbours on the patch grid
_NEIGHBOURS8 = tuple((dx, dy) for dy in (-1, 0, 1) for dx in (-1, 0, 1) if (dx, dy) != (0, 0))


def _array(x: Any, name: str, dtype=np.float64) -> np.ndarray:
    if hasattr(x, "detach"):  # torch tensor
        x = x.detach().cpu().numpy()
    a = np.asarray(x)
    if a.ndim == 2 and 1 in a.shape:
        a = a.ravel()
    if a.ndim != 1:
        raise ValueError(f"{name} must be 1-D (one value per patch), got shape {a.shape}")
    return a.astype(dtype)


def normalize_weights(weights: Any, normalize: str = "mean", name: str = "weights") -> np.ndarray:
    """Normalises one slide's patch weights (see the module docstring for the rules).

    Args:
        weights: ``(N,)`` finite weights of one slide.
        normalize: ``"mean"``, ``"max"``, ``"minmax"``, ``"rank"`` or ``"none"``.
        name: Name used in error messages.

    Returns:
        float64 ``(N,)``.

    Raises:
        ValueError: Unknown rule, non-finite weights, or negative / all-zero weights for ``"mean"`` and
            ``"max"``.
    """
    w = _array(weights, name)
    if not np.isfinite(w).all():
        raise ValueError(f"{name} has a non-finite value at patch {int(np.argmax(~np.isfinite(w)))}")
    if normalize not in NORMALIZATIONS:
        raise ValueError(f"normalize must be one of {NORMALIZATIONS}, got {normalize!r}")
    if len(w) == 0 or normalize == "none":
        return w
    if normalize in ("mean", "max"):
        if (w < 0).any() or w.sum() <= 0:
            raise ValueError(
                f"normalize={normalize!r} needs non-negative {name} with a positive sum (attention weights); got "
                f"min {w.min():.4g}, sum {w.sum():.4g}; use normalize='minmax' or 'rank' for signed scores"
            )
        return w / w.mean() if normalize == "mean" else w / w.max()
    if normalize == "minmax":
        span = w.max() - w.min()
        return np.full_like(w, 0.5) if span == 0 else (w - w.min()) / span
    return (rankdata(w) - 1.0) / (len(w) - 1) if len(w) > 1 else np.ones_like(w)


def average_precision(scores: Any, positives: Any) -> float:
    """Step-wise average precision ``Σ_t (R_t − R_{t−1}) · P_t`` over distinct score thresholds.

    Tied scores form one threshold (they are retrieved together), as in
    ``sklearn.metrics.average_precision_score``.

    Args:
        scores: ``(M,)`` scores.
        positives: ``(M,)`` booleans.

    Returns:
        AP in ``[0, 1]``; NaN when there is no positive.
    """
    s = _array(scores, "scores")
    y = _array(positives, "positives", dtype=bool)
    if len(s) != len(y):
        raise ValueError(f"scores has {len(s)} entries but positives has {len(y)}")
    n_pos = int(y.sum())
    if n_pos == 0:
        return float("nan")
    order = np.argsort(-s, kind="stable")
    s, y = s[order], y[order]
    last = np.r_[np.flatnonzero(np.diff(s) != 0), len(s) - 1]  # end of each group of tied scores
    tp = np.cumsum(y)[last]
    retrieved = last + 1
    recall = tp / n_pos
    precision = tp / retrieved
    return float(np.sum(np.diff(np.r_[0.0, recall]) * precision))


def _truth_mask(truth: Any, lesion_class: int | None, name: str) -> np.ndarray:
    t = _array(truth, name, dtype=np.float64)
    if not np.isfinite(t).all() or (t != np.round(t)).any():
        raise ValueError(f"{name} must hold integer instance labels (0 = normal, k > 0 = lesion class k)")
    return t > 0 if lesion_class is None else t == lesion_class


def _per_slide(weights_per_slide: Sequence[Any], truth_per_slide: Sequence[Any]) -> int:
    if isinstance(weights_per_slide, np.ndarray) or isinstance(truth_per_slide, np.ndarray):
        raise TypeError("pass one array per slide (a list of arrays), not one stacked array")
    n = len(weights_per_slide)
    if n != len(truth_per_slide):
        raise ValueError(f"got weights for {n} slides but truth for {len(truth_per_slide)}")
    if n == 0:
        raise ValueError("no slides given")
    return n


@dataclass(frozen=True)
class PatchAP:
    """Patch-retrieval AP of attention weights.

    Attributes:
        pooled: AP over all patches of all slides, ranked by normalised weight.
        slide_mean: Mean of ``per_slide`` over slides with at least one lesion patch (NaN if none).
        per_slide: ``(S,)`` AP within each slide; NaN for a slide without lesion patches.
        prevalence: Share of lesion patches among all patches (the AP of a random ranking, in expectation).
        num_positive_slides: Slides with at least one lesion patch.
    """

    pooled: float
    slide_mean: float
    per_slide: np.ndarray = field(repr=False)
    prevalence: float
    num_positive_slides: int


def patch_average_precision(
    weights_per_slide: Sequence[Any],
    truth_per_slide: Sequence[Any],
    *,
    normalize: str = "mean",
    lesion_class: int | None = None,
) -> PatchAP:
    """AP of ranking patches by their weight against the lesion mask, pooled and per slide.

    Args:
        weights_per_slide: ``S`` arrays ``(N_s,)`` of patch weights.
        truth_per_slide: ``S`` arrays ``(N_s,)`` of instance labels (0 = normal, ``k > 0`` = lesion of class
            ``k``) or booleans.
        normalize: Within-slide normalisation before pooling (module docstring); per-slide APs do not depend
            on it.
        lesion_class: Count only lesions of this class as positive (default: any ``k > 0``).

    Returns:
        :class:`PatchAP`.

    Raises:
        ValueError: Mismatched lengths, non-finite weights, or weights a normalisation cannot take.
    """
    n = _per_slide(weights_per_slide, truth_per_slide)
    all_w, all_y = [], []
    per = np.full(n, np.nan)
    for s in range(n):
        w = normalize_weights(weights_per_slide[s], normalize, name=f"weights of slide {s}")
        y = _truth_mask(truth_per_slide[s], lesion_class, name=f"truth of slide {s}")
        if len(w) != len(y):
            raise ValueError(f"slide {s}: {len(w)} weights but {len(y)} truth labels")
        if y.any():
            per[s] = average_precision(w, y)
        all_w.append(w)
        all_y.append(y)
    w_all, y_all = np.concatenate(all_w), np.concatenate(all_y)
    positive = ~np.isnan(per)
    return PatchAP(
        pooled=average_precision(w_all, y_all),
        slide_mean=float(per[positive].mean()) if positive.any() else float("nan"),
        per_slide=per,
        prevalence=float(y_all.mean()) if len(y_all) else float("nan"),
        num_positive_slides=int(positive.sum()),
    )


def local_maxima(coords: Any, scores: Any, patch_size: int | None = None) -> np.ndarray:
    """Patches whose score is a local maximum over their (present) 8 grid neighbours.

    Patch ``i`` is a maximum when, for every neighbour ``j``, ``score_i > score_j``, or ``score_i == score_j``
    and ``i < j`` (ties go to the earlier patch, so a plateau yields few detections, not all of its patches).

    Args:
        coords: ``(N, 2)`` patch top-left corners in level-0 pixels.
        scores: ``(N,)`` scores.
        patch_size: Grid step (inferred when ``None``; a one-patch slide needs no step).

    Returns:
        bool ``(N,)``.
    """
    xy = as_coords(coords)
    s = _array(scores, "scores")
    if len(s) != len(xy):
        raise ValueError(f"scores has {len(s)} entries but coords has {len(xy)} patches")
    if len(xy) <= 1:
        return np.ones(len(xy), dtype=bool)
    grid, _, _ = grid_positions(xy, patch_size)
    gw, gh = int(grid[:, 0].max()) + 3, int(grid[:, 1].max()) + 3
    index = np.full((gh, gw), -1, dtype=np.int64)  # padded by one cell on every side
    index[grid[:, 1] + 1, grid[:, 0] + 1] = np.arange(len(xy))
    is_max = np.ones(len(xy), dtype=bool)
    own = np.arange(len(xy))
    for dx, dy in _NEIGHBOURS8:
        j = index[grid[:, 1] + 1 + dy, grid[:, 0] + 1 + dx]
        present = j >= 0
        sj = np.where(present, s[np.maximum(j, 0)], -np.inf)
        beats = (s > sj) | ((s == sj) & (own < j)) | ~present
        is_max &= beats
    return is_max


@dataclass(frozen=True)
class FROCResult:
    """Lesion-based FROC.

    Attributes:
        thresholds: ``(T,)`` score thresholds, decreasing; the curve's first point (``+inf``) keeps nothing.
        sensitivity: ``(T,)`` share of lesions hit at each threshold.
        fp_per_slide: ``(T,)`` false positives per slide at each threshold.
        fp_rates: The false-positive rates of the summary.
        sensitivity_at: ``(len(fp_rates),)`` interpolated sensitivity at each rate.
        score: Mean of ``sensitivity_at`` (the CAMELYON16 FROC score with the default rates).
        num_lesions: Lesions over all slides.
        num_slides: Slides (the false-positive denominator).
    """

    thresholds: np.ndarray = field(repr=False)
    sensitivity: np.ndarray = field(repr=False)
    fp_per_slide: np.ndarray = field(repr=False)
    fp_rates: tuple[float, ...]
    sensitivity_at: np.ndarray
    score: float
    num_lesions: int
    num_slides: int


def froc(
    weights_per_slide: Sequence[Any],
    truth_per_slide: Sequence[Any],
    coords_per_slide: Sequence[Any],
    *,
    thresholds: Sequence[float] | None = None,
    fp_rates: Sequence[float] = CAMELYON16_FP_RATES,
    patch_size: int | None = None,
    detection: str = "local_max",
    normalize: str = "mean",
    lesion_class: int | None = None,
) -> FROCResult:
    """CAMELYON16-style lesion FROC of patch weights (rules in the module docstring).

    Args:
        weights_per_slide: ``S`` arrays ``(N_s,)`` of patch weights.
        truth_per_slide: ``S`` arrays ``(N_s,)`` of instance labels (0 = normal, ``k > 0`` lesion) or booleans.
        coords_per_slide: ``S`` arrays ``(N_s, 2)`` of patch top-left corners in level-0 pixels.
        thresholds: Score thresholds of the curve (after normalisation); default: every distinct detection
            score, which gives the exact curve.
        fp_rates: False positives per slide at which the sensitivity is averaged.
        patch_size: Grid step in level-0 pixels (inferred per slide when ``None``).
        detection: ``"local_max"`` or ``"patch"`` (every patch is a detection).
        normalize: Within-slide normalisation of the weights (module docstring).
        lesion_class: Count only lesions of this class (default: any ``k > 0``).

    Returns:
        :class:`FROCResult`.

    Raises:
        ValueError: Mismatched lengths, no lesion in any slide, a bad argument.
    """
    n = _per_slide(weights_per_slide, truth_per_slide)
    if len(coords_per_slide) != n:
        raise ValueError(f"got weights for {n} slides but coords for {len(coords_per_slide)}")
    if detection not in ("local_max", "patch"):
        raise ValueError(f"detection must be 'local_max' or 'patch', got {detection!r}")
    rates = tuple(float(r) for r in fp_rates)
    if not rates or any(not (r >= 0) for r in rates):
        raise ValueError(f"fp_rates must be non-negative numbers, got {fp_rates!r}")
    lesion_scores: list[float] = []
    fp_scores: list[np.ndarray] = []
    for s in range(n):
        w = normalize_weights(weights_per_slide[s], normalize, name=f"weights of slide {s}")
        y = _truth_mask(truth_per_slide[s], lesion_class, name=f"truth of slide {s}")
        xy = as_coords(coords_per_slide[s], name=f"coords of slide {s}")
        if not (len(w) == len(y) == len(xy)):
            raise ValueError(f"slide {s}: {len(w)} weights, {len(y)} truth labels and {len(xy)} coords")
        if len(w) == 0:
            continue
        size = patch_size if patch_size is not None or len(xy) > 1 else 1
        lesion, count = connected_components(xy, y, size, connectivity=8) if y.any() else (np.zeros(len(y), int), 0)
        det = local_maxima(xy, w, size) if detection == "local_max" else np.ones(len(w), dtype=bool)
        best = np.full(count + 1, -np.inf)
        np.maximum.at(best, lesion[det], w[det])
        lesion_scores.extend(best[1:].tolist())  # -inf: a lesion without any detection is never hit
        fp_scores.append(w[det & (lesion == 0)])
    num_lesions = len(lesion_scores)
    if num_lesions == 0:
        raise ValueError("no lesion in any slide: the FROC sensitivity is undefined")
    les = np.asarray(lesion_scores)
    fps = np.concatenate(fp_scores) if fp_scores else np.zeros(0)
    if thresholds is None:
        cand = np.concatenate([les[np.isfinite(les)], fps])
        thr = np.unique(cand)[::-1]
    else:
        thr = np.asarray(thresholds, dtype=np.float64).ravel()
        if not np.isfinite(thr).all():
            raise ValueError("thresholds must be finite numbers")
        thr = np.unique(thr)[::-1]
    thr = np.r_[np.inf, thr]
    les_sorted = np.sort(les)
    fps_sorted = np.sort(fps)
    hits = len(les_sorted) - np.searchsorted(les_sorted, thr, side="left")  # lesions with score >= t
    false = len(fps_sorted) - np.searchsorted(fps_sorted, thr, side="left")
    sens = hits / num_lesions
    fpr = false / n
    # at each false-positive count keep the best sensitivity, then interpolate as the challenge code does
    ux = np.unique(fpr)
    uy = np.array([sens[fpr == x].max() for x in ux])
    at = np.interp(np.asarray(rates), ux, uy)
    return FROCResult(
        thresholds=thr,
        sensitivity=sens,
        fp_per_slide=fpr,
        fp_rates=rates,
        sensitivity_at=at,
        score=float(at.mean()),
        num_lesions=num_lesions,
        num_slides=n,
    )


def localization_scores(
    weights_per_bag: Sequence[Any], truth_per_bag: Sequence[Any], coords_per_bag: Sequence[Any] | None = None
) -> dict[str, float]:
    """The localization figures of a run's test bags: patch AP (pooled and per-bag mean) and, with coordinates,
    the FROC score; an empty dict when no instance is a known positive (nothing to localize).

    Instances with unknown label (``-1``) are left out. This is the slide-scale analogue of the paper's Figure 2:
    how well the weights find the instances that carry the label.
    """
    weights, truth, coords = [], [], []
    for i, (w, y) in enumerate(zip(weights_per_bag, truth_per_bag, strict=True)):
        y = np.asarray(y)
        known = y >= 0
        weights.append(np.asarray(w, dtype=np.float64)[known])
        truth.append(y[known] > 0)
        if coords_per_bag is not None:
            coords.append(np.asarray(coords_per_bag[i])[known])
    if not any(t.any() for t in truth):
        return {}
    ap = patch_average_precision(weights, truth)
    out = {"patch_ap": ap.pooled, "patch_ap_bag_mean": ap.slide_mean}
    if coords_per_bag is not None:
        out["froc"] = froc(weights, truth, coords).score
    return out
