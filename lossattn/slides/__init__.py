"""Whole-slide tooling: a synthetic slide benchmark with ground truth, heatmaps, QuPath GeoJSON, localization.

Layout and units (CLAM / TRIDENT): a slide is cut into patches on a regular grid; a frozen encoder turns each
patch into a feature vector; each slide is one HDF5 file ``<root>/h5_files/<slide_id>.h5`` holding
``features (N, D)`` and ``coords (N, 2)``, the top-left corner ``(x, y)`` of every patch in **level-0 pixels**
(x to the right, y down; a patch covers ``[x, x + s) × [y, y + s)`` with ``s`` the patch size at level 0),
plus optionally ``instance_labels (N,)`` (0 = normal, ``k`` = lesion of class ``k``). A manifest CSV
``slide_id,case_id,label[,split]`` lists the slides.

* :mod:`~lossattn.slides.synthetic` — :func:`make_synthetic_slides`, a seeded benchmark in that layout with
  spatially contiguous lesions and patch-level truth.
* :mod:`~lossattn.slides.grid` — patch size inference, grid positions, connected components.
* :mod:`~lossattn.slides.heatmap` — :func:`draw_heatmap`, PNG heatmaps from coordinates alone.
* :mod:`~lossattn.slides.geojson` — :func:`to_geojson` / :func:`write_geojson` for QuPath, and
  :func:`validate_geojson`.
* :mod:`~lossattn.slides.localization` — :func:`patch_average_precision` and the CAMELYON16-style
  :func:`froc` of attention weights against the lesion mask.
"""

from .geojson import QUPATH_OBJECT_TYPES, to_geojson, validate_geojson, write_geojson
from .grid import as_coords, connected_components, grid_positions, infer_patch_size
from .heatmap import HEATMAP_SCALES, draw_heatmap, scale_values
from .localization import (
    CAMELYON16_FP_RATES,
    NORMALIZATIONS,
    FROCResult,
    PatchAP,
    average_precision,
    froc,
    local_maxima,
    localization_scores,
    normalize_weights,
    patch_average_precision,
)
from .synthetic import SLIDE_PRESETS, SlideSetInfo, make_synthetic_slides

__all__ = [
    "localization_scores",
    "SLIDE_PRESETS",
    "SlideSetInfo",
    "make_synthetic_slides",
    "as_coords",
    "infer_patch_size",
    "grid_positions",
    "connected_components",
    "HEATMAP_SCALES",
    "scale_values",
    "draw_heatmap",
    "QUPATH_OBJECT_TYPES",
    "to_geojson",
    "write_geojson",
    "validate_geojson",
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
