"""Patch values as a GeoJSON FeatureCollection that QuPath imports.

In QuPath: drag the ``.geojson`` file onto the viewer, use File › Object data › Import objects, or the script
command ``importObjectsFromFile(path)``.

The format follows QuPath's own GeoJSON reader and writer (v0.4 and later):

* https://github.com/qupath/qupath/blob/main/qupath-core/src/main/java/qupath/lib/io/PathObjectTypeAdapters.java
  A ``FeatureCollection`` whose ``features`` are objects ``{"type": "Feature", "geometry": …, "properties": …}``;
  ``properties.objectType`` is ``"annotation"``, ``"detection"``, ``"tile"``, ``"cell"`` … (missing = annotation);
  ``properties.name`` an optional string; ``properties.color`` an optional ``[r, g, b]`` (0–255) object colour;
  ``properties.measurements`` an object ``{name: number}`` (the list form ``[{"name", "value"}]`` is the
  pre-v0.4 layout, still read); ``properties.classification`` the class.
* https://github.com/qupath/qupath/blob/main/qupath-core/src/main/java/qupath/lib/io/GsonTools.java
  (``PathClassTypeAdapter``): ``classification`` is ``{"name": str, "color": [r, g, b]}`` (or ``"names"`` for
  a derived class).
* https://github.com/qupath/qupath/blob/main/qupath-core/src/main/java/qupath/lib/io/ROITypeAdapters.java
  Geometries are standard GeoJSON (RFC 7946) ``Polygon`` / ``MultiPolygon``: rings of ``[x, y]`` positions,
  the first position repeated at the end.
* https://qupath.readthedocs.io/en/stable/docs/advanced/exporting_annotations.html
  Units and origin: pixels of the full-resolution image (level 0), origin at the top-left corner.

So one patch with top-left ``(x, y)`` and size ``s`` (level-0 pixels, as in the CLAM / TRIDENT ``coords``) is
the polygon ``[[x, y], [x + s, y], [x + s, y + s], [x, y + s], [x, y]]``. Exterior rings are written
counter-clockwise in the numeric ``(x, y)`` values and holes clockwise (RFC 7946 §3.1.6).

With ``merge=True`` the kept patches are merged into regions: each 4-connected group of kept patches on the
grid becomes one polygon (with holes where it encloses unkept patches) traced along the patch edges; two
patches that touch only at a corner stay separate regions, so every polygon is valid (OGC simple features:
rings may touch at a point, never cross).
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Mapping, Sequence
from numbers import Real
from pathlib import Path
from typing import Any

import numpy as np
from scipy import ndimage

from lossattn.io import atomic_write

from .grid import as_coords, as_patch_values, grid_positions, infer_patch_size
from .heatmap import scale_values

__all__ = ["to_geojson", "write_geojson", "validate_geojson", "QUPATH_OBJECT_TYPES"]

QUPATH_OBJECT_TYPES = ("annotation", "detection", "tile", "cell", "tmaCore", "root")
# tab10, as 0-255 RGB, for class names that are not given a colour
_PALETTE = (
    (31, 119, 180),
    (255, 127, 14),
    (44, 160, 44),
    (214, 39, 40),
    (148, 103, 189),
    (140, 86, 75),
    (227, 119, 194),
    (127, 127, 127),
    (188, 189, 34),
    (23, 190, 207),
)


def _measurements(values: Any, n: int, measurement: str) -> dict[str, np.ndarray]:
    if isinstance(values, Mapping):
        if not values:
            raise ValueError("values is an empty mapping: give at least one measurement")
        out = {}
        for k, v in values.items():
            if not isinstance(k, str) or not k:
                raise ValueError(f"measurement names must be non-empty strings, got {k!r}")
            out[k] = as_patch_values(v, n, name=f"values[{k!r}]")
        return out
    return {measurement: as_patch_values(values, n)}


def _class_names(names: Any, n: int) -> list[str] | None:
    if names is None:
        return None
    if isinstance(names, str):
        return [names] * n
    if not isinstance(names, Sequence) and not isinstance(names, np.ndarray):
        raise TypeError(f"names must be None, a string or one string per patch, got {type(names).__name__}")
    out = [str(x) for x in names]
    if len(out) != n:
        raise ValueError(f"names has {len(out)} entries but there are {n} patches")
    return out


def _rgb(color: Any, what: str) -> list[int]:
    c = list(color) if not isinstance(color, str) else None
    if c is None or len(c) not in (3, 4) or not all(isinstance(x, (int, np.integer)) and 0 <= x <= 255 for x in c):
        raise ValueError(f"{what} must be [r, g, b] integers in 0..255, got {color!r}")
    return [int(x) for x in c[:3]]


def _select(primary: np.ndarray, threshold: float | None, top_k: int | None) -> np.ndarray:
    keep = np.ones(len(primary), dtype=bool)
    if threshold is not None:
        if not math.isfinite(float(threshold)):
            raise ValueError(f"threshold must be finite, got {threshold!r}")
        keep &= primary >= float(threshold)
    if top_k is not None:
        if isinstance(top_k, bool) or not isinstance(top_k, (int, np.integer)) or top_k < 1:
            raise ValueError(f"top_k must be a positive integer, got {top_k!r}")
        # the k largest values; ties at the boundary go to the earlier patch (stable order)
        order = np.argsort(-primary, kind="stable")
        top = np.zeros(len(primary), dtype=bool)
        top[order[: int(top_k)]] = True
        keep &= top
    return keep


def _square(x: float, y: float, s: float) -> list[list[float]]:
    return [[x, y], [x + s, y], [x + s, y + s], [x, y + s], [x, y]]


def _num(v: Any) -> int | float:
    f = float(v)
    return int(f) if f.is_integer() and abs(f) < 2**53 else f


# ------------------------------------------------------------------------------------------- region tracing


def _trace_rings(cells: np.ndarray) -> list[list[tuple[int, int]]]:
    """Boundary rings of a set of unit grid cells ``(gx, gy)`` (each cell is ``[gx, gx+1] × [gy, gy+1]``).

    Every cell side facing a cell outside the set is a directed edge with the set on its left
    (counter-clockwise in numeric coordinates). Edges are chained into rings; at a vertex where two cells
    of the set touch only at that corner the walk turns right, i.e. keeps to the side of the same empty
    cell, so the boundary of a hole that reaches that corner stays a ring of its own (a hole touching its
    shell at one point, which is valid) instead of a self-touching shell. Collinear vertices are dropped.
    """
    filled = {(int(x), int(y)) for x, y in cells}
    starts: list[tuple[int, int]] = []
    ends: list[tuple[int, int]] = []

    def add(a: tuple[int, int], b: tuple[int, int]) -> None:
        starts.append(a)
        ends.append(b)

    for x, y in sorted(filled):
        if (x, y - 1) not in filled:
            add((x, y), (x + 1, y))
        if (x + 1, y) not in filled:
            add((x + 1, y), (x + 1, y + 1))
        if (x, y + 1) not in filled:
            add((x + 1, y + 1), (x, y + 1))
        if (x - 1, y) not in filled:
            add((x, y + 1), (x, y))
    leaving: dict[tuple[int, int], list[int]] = {}
    for e, a in enumerate(starts):
        leaving.setdefault(a, []).append(e)
    succ = []
    for a, b in zip(starts, ends, strict=True):
        options = leaving[b]
        if len(options) == 1:
            succ.append(options[0])
            continue
        right = (b[0] + (b[1] - a[1]), b[1] - (b[0] - a[0]))  # b + (a->b turned by -90 degrees)
        succ.append(next(e for e in options if ends[e] == right))
    seen = [False] * len(starts)
    rings: list[list[tuple[int, int]]] = []
    for e0 in range(len(starts)):
        if seen[e0]:
            continue
        ring = [starts[e0]]
        e = e0
        while not seen[e]:
            seen[e] = True
            ring.append(ends[e])
            e = succ[e]
        rings.append(_drop_collinear(ring))
    return rings


def _drop_collinear(ring: list[tuple[int, int]]) -> list[tuple[int, int]]:
    pts = ring[:-1]  # open ring
    keep = []
    m = len(pts)
    for i in range(m):
        a, b, c = pts[i - 1], pts[i], pts[(i + 1) % m]
        if (b[0] - a[0]) * (c[1] - b[1]) - (b[1] - a[1]) * (c[0] - b[0]) != 0:
            keep.append(b)
    return keep + [keep[0]]


def _signed_area(ring: Sequence[Sequence[float]]) -> float:
    """Shoelace area: positive for a counter-clockwise ring in numeric ``(x, y)``."""
    a = 0.0
    for (x0, y0), (x1, y1) in zip(ring[:-1], ring[1:], strict=True):
        a += x0 * y1 - x1 * y0
    return a / 2.0


def _inside(pt: tuple[float, float], ring: Sequence[Sequence[float]]) -> bool:
    """Even-odd rule; ``pt`` is never on ``ring`` here (an edge midpoint of another ring)."""
    x, y = pt
    inside = False
    for (x0, y0), (x1, y1) in zip(ring[:-1], ring[1:], strict=True):
        if (y0 > y) != (y1 > y) and x < x0 + (y - y0) * (x1 - x0) / (y1 - y0):
            inside = not inside
    return inside


def _region_polygons(cells: np.ndarray) -> list[list[list[tuple[int, int]]]]:
    """Polygons (exterior ring first, then holes) of one 4-connected group of grid cells."""
    rings = _trace_rings(cells)
    shells = [r for r in rings if _signed_area(r) > 0]
    holes = [r for r in rings if _signed_area(r) < 0]
    polys = [[s] for s in shells]
    for h in holes:
        mid = ((h[0][0] + h[1][0]) / 2.0, (h[0][1] + h[1][1]) / 2.0)
        owners = [p for p in polys if _inside(mid, p[0])]
        if not owners:
            raise RuntimeError("internal error: a hole ring lies in no exterior ring")
        # the innermost exterior that contains the hole
        owner = min(owners, key=lambda p: abs(_signed_area(p[0])))
        owner.append(h)
    return polys


# ------------------------------------------------------------------------------------------------ public


def to_geojson(
    coords: Any,
    values: Any,
    *,
    patch_size: int | None = None,
    names: str | Sequence[str] | None = None,
    threshold: float | None = None,
    top_k: int | None = None,
    properties: Mapping[str, Any] | None = None,
    merge: bool = False,
    object_type: str | None = None,
    measurement: str = "attention",
    class_colors: Mapping[str, Sequence[int]] | None = None,
    cmap: str | None = "inferno",
    scale: str = "rank",
) -> dict[str, Any]:
    """Patch values as a QuPath-compatible GeoJSON FeatureCollection (see the module docstring).

    Args:
        coords: ``(N, 2)`` patch top-left corners ``(x, y)`` in level-0 pixels.
        values: ``(N,)`` values (stored as the measurement ``measurement``), or a mapping name -> ``(N,)``
            for several measurements; ``threshold``, ``top_k`` and colours use the first one.
        patch_size: Patch side in level-0 pixels (inferred from the coordinate grid when ``None``).
        names: Classification name of every object (one string) or of each patch (``N`` strings); ``None``
            writes no classification.
        threshold: Keep patches whose value is ``>= threshold``.
        top_k: Keep the ``k`` patches of largest value (ties: earlier patch first); with ``threshold`` both
            must hold.
        properties: Extra entries added to every feature's ``properties`` (JSON-serialisable; they may not
            replace the keys written here).
        merge: Merge kept patches into regions (one polygon per 4-connected group, with holes); a region's
            measurements are ``"<name> mean"``, ``"<name> max"`` and ``"patches"``, and its class the most
            frequent class of its patches. Needs grid-aligned coordinates.
        object_type: QuPath object type; default ``"detection"`` for patches and ``"annotation"`` for
            merged regions.
        measurement: Measurement name when ``values`` is an array.
        class_colors: Optional class name -> ``[r, g, b]``; other classes take tab10 colours in order of
            first appearance.
        cmap: Colour map for each object's ``color`` from its value (scaled by ``scale``, as in
            :func:`~lossattn.slides.heatmap.scale_values`); ``None`` writes no object colour.
        scale: ``"rank"``, ``"linear"`` or ``"log"`` for the object colours.

    Returns:
        A ``dict`` ready for ``json.dump``.

    Raises:
        ValueError, TypeError: Mismatched shapes, non-finite values or a bad argument.
    """
    xy = as_coords(coords)
    n = len(xy)
    meas = _measurements(values, n, measurement)
    primary = next(iter(meas.values()))
    size = infer_patch_size(xy) if patch_size is None else patch_size
    if isinstance(size, bool) or not isinstance(size, (int, np.integer, float)) or not size > 0:
        raise ValueError(f"patch_size must be a positive number of level-0 pixels, got {patch_size!r}")
    otype = object_type if object_type is not None else ("annotation" if merge else "detection")
    if otype not in QUPATH_OBJECT_TYPES:
        raise ValueError(f"object_type must be one of {QUPATH_OBJECT_TYPES}, got {otype!r}")
    cls = _class_names(names, n)
    extra = dict(properties or {})
    reserved = {"objectType", "classification", "measurements", "color"}
    clash = reserved & set(extra)
    if clash:
        raise ValueError(f"properties may not set {sorted(clash)}: they are written by to_geojson")
    try:
        json.dumps(extra)
    except TypeError as e:
        raise TypeError(f"properties must be JSON-serialisable: {e}") from e
    colours: dict[str, list[int]] = {}
    for k, v in (class_colors or {}).items():
        colours[str(k)] = _rgb(v, f"class_colors[{k!r}]")
    if cls is not None:
        auto = [name for name in dict.fromkeys(cls) if name not in colours]
        for j, name in enumerate(auto):
            colours[name] = list(_PALETTE[j % len(_PALETTE)])
    if n == 0:
        return {"type": "FeatureCollection", "features": []}
    obj_rgb = None
    if cmap is not None:
        import matplotlib

        t, _, _, _ = scale_values(primary, scale)
        try:
            obj_rgb = matplotlib.colormaps[cmap](t, bytes=True)[:, :3]
        except KeyError as e:
            raise ValueError(f"unknown colour map {cmap!r}") from e

    keep = _select(primary, threshold, top_k)
    features: list[dict[str, Any]] = []

    def props(idx: np.ndarray, region: bool) -> dict[str, Any]:
        p: dict[str, Any] = {"objectType": otype}
        if cls is not None:
            names_here = [cls[i] for i in idx]
            name = max(dict.fromkeys(names_here), key=names_here.count)  # most frequent, first on ties
            p["classification"] = {"name": name, "color": colours[name]}
        if obj_rgb is not None:
            best = idx[int(np.argmax(primary[idx]))]
            p["color"] = [int(c) for c in obj_rgb[best]]
        if region:
            m: dict[str, Any] = {}
            for k, v in meas.items():
                m[f"{k} mean"] = float(np.mean(v[idx]))
                m[f"{k} max"] = float(np.max(v[idx]))
            m["patches"] = len(idx)
            p["measurements"] = m
        else:
            p["measurements"] = {k: float(v[idx[0]]) for k, v in meas.items()}
        p.update(extra)
        return p

    if not merge:
        for i in np.flatnonzero(keep):
            x, y = _num(xy[i, 0]), _num(xy[i, 1])
            features.append(
                {
                    "type": "Feature",
                    "geometry": {"type": "Polygon", "coordinates": [_square(x, y, _num(size))]},
                    "properties": props(np.array([i]), region=False),
                }
            )
        return {"type": "FeatureCollection", "features": features}

    grid, origin, step = grid_positions(xy, size)
    if step != size:
        raise ValueError(f"merge=True needs patches that tile the grid; patch_size={size} but grid step {step}")
    kept = np.flatnonzero(keep)
    if len(kept) == 0:
        return {"type": "FeatureCollection", "features": []}
    g = grid[kept]
    img = np.zeros((int(g[:, 1].max()) + 1, int(g[:, 0].max()) + 1), dtype=bool)
    img[g[:, 1], g[:, 0]] = True
    lab, count = ndimage.label(img, structure=ndimage.generate_binary_structure(2, 1))
    region_of = lab[g[:, 1], g[:, 0]]
    first = {}
    for j, r in enumerate(region_of):
        first.setdefault(int(r), j)
    for r in sorted(first, key=first.get):  # regions in order of their first patch
        members = kept[region_of == r]
        polys = _region_polygons(grid[members])
        rings = [
            [[[_num(origin[0] + px * size), _num(origin[1] + py * size)] for px, py in ring] for ring in poly]
            for poly in polys
        ]
        geometry = (
            {"type": "Polygon", "coordinates": rings[0]}
            if len(rings) == 1
            else {"type": "MultiPolygon", "coordinates": rings}
        )
        features.append({"type": "Feature", "geometry": geometry, "properties": props(members, region=True)})
    return {"type": "FeatureCollection", "features": features}


def write_geojson(path: str | os.PathLike[str], coords: Any, values: Any, **kwargs: Any) -> Path:
    """Writes :func:`to_geojson` ``(coords, values, **kwargs)`` to ``path`` atomically (temp file + rename).

    Args:
        path: Output file, conventionally ``.geojson`` (its folder is created).
        coords: ``(N, 2)`` patch top-left corners in level-0 pixels.
        values: Values or a mapping of measurements, as in :func:`to_geojson`.
        **kwargs: Keyword arguments of :func:`to_geojson`.

    Returns:
        The path written.
    """
    obj = to_geojson(coords, values, **kwargs)
    out = Path(path)
    atomic_write(out, lambda fh: fh.write(json.dumps(obj, separators=(",", ":")).encode("utf-8")))
    return out


# ------------------------------------------------------------------------------------------------ validation


def _is_num(x: Any) -> bool:
    return isinstance(x, Real) and not isinstance(x, bool) and math.isfinite(float(x))


def _check_ring(ring: Any, where: str) -> None:
    if not isinstance(ring, list) or len(ring) < 4:
        raise ValueError(f"{where}: a linear ring needs at least 4 positions, got {ring!r:.80}")
    for j, pos in enumerate(ring):
        if not isinstance(pos, list) or len(pos) not in (2, 3) or not all(_is_num(c) for c in pos):
            raise ValueError(f"{where}[{j}]: a position must be [x, y] with finite numbers, got {pos!r}")
    if ring[0] != ring[-1]:
        raise ValueError(f"{where}: ring not closed (first {ring[0]} != last {ring[-1]})")


def _check_geometry(geom: Any, where: str) -> None:
    if not isinstance(geom, dict):
        raise ValueError(f"{where}: geometry must be an object, got {type(geom).__name__}")
    gtype = geom.get("type")
    coords = geom.get("coordinates")
    if gtype == "Polygon":
        polys = [coords]
    elif gtype == "MultiPolygon":
        if not isinstance(coords, list) or not coords:
            raise ValueError(f"{where}.coordinates: a MultiPolygon needs a non-empty list of polygons")
        polys = coords
    else:
        raise ValueError(f"{where}.type: expected 'Polygon' or 'MultiPolygon', got {gtype!r}")
    for p, rings in enumerate(polys):
        w = f"{where}.coordinates" + (f"[{p}]" if gtype == "MultiPolygon" else "")
        if not isinstance(rings, list) or not rings:
            raise ValueError(f"{w}: a polygon needs a non-empty list of rings")
        for r, ring in enumerate(rings):
            _check_ring(ring, f"{w}[{r}]")


def _check_properties(props: Any, where: str) -> None:
    if props is None:
        return
    if not isinstance(props, dict):
        raise ValueError(f"{where}: properties must be an object or null, got {type(props).__name__}")
    if "objectType" in props and props["objectType"] not in QUPATH_OBJECT_TYPES:
        raise ValueError(f"{where}.objectType: expected one of {QUPATH_OBJECT_TYPES}, got {props['objectType']!r}")
    if "classification" in props:
        c = props["classification"]
        if not isinstance(c, dict) or not isinstance(c.get("name", c.get("names")), (str, list)):
            raise ValueError(f"{where}.classification: expected {{'name': str, 'color': [r, g, b]}}, got {c!r}")
        if "color" in c:
            _rgb(c["color"], f"{where}.classification.color")
    if "color" in props:
        _rgb(props["color"], f"{where}.color")
    if "measurements" in props:
        m = props["measurements"]
        if isinstance(m, dict):
            for k, v in m.items():
                if not isinstance(k, str) or not _is_num(v):
                    raise ValueError(f"{where}.measurements[{k!r}]: expected a finite number, got {v!r}")
        elif isinstance(m, list):  # the pre-v0.4 layout QuPath still reads
            for j, e in enumerate(m):
                if not isinstance(e, dict) or not isinstance(e.get("name"), str) or not _is_num(e.get("value")):
                    raise ValueError(f"{where}.measurements[{j}]: expected {{'name': str, 'value': number}}")
        else:
            raise ValueError(f"{where}.measurements: expected an object name -> number, got {type(m).__name__}")


def validate_geojson(obj: Any) -> int:
    """Checks the structure of a GeoJSON FeatureCollection of polygon features as QuPath reads it.

    Checks: ``type`` fields (``FeatureCollection``, ``Feature``, ``Polygon`` / ``MultiPolygon``); every ring
    has at least 4 positions of 2 or 3 finite numbers and is closed (first == last); ``properties`` is an
    object or null, with a known ``objectType``, a ``classification`` ``{name, color}``, ``color`` ``[r, g, b]``
    in 0–255 and numeric ``measurements`` when present.

    Args:
        obj: The parsed JSON (``dict``).

    Returns:
        The number of features.

    Raises:
        ValueError: The first problem found, with its location (e.g. ``features[3].geometry.coordinates[0]``).
    """
    if not isinstance(obj, dict) or obj.get("type") != "FeatureCollection":
        got = obj.get("type") if isinstance(obj, dict) else type(obj).__name__
        raise ValueError(f"type: expected 'FeatureCollection', got {got!r}")
    feats = obj.get("features")
    if not isinstance(feats, list):
        raise ValueError(f"features: expected a list, got {type(feats).__name__}")
    for i, f in enumerate(feats):
        where = f"features[{i}]"
        if not isinstance(f, dict) or f.get("type") != "Feature":
            got = f.get("type") if isinstance(f, dict) else type(f).__name__
            raise ValueError(f"{where}.type: expected 'Feature', got {got!r}")
        _check_geometry(f.get("geometry"), f"{where}.geometry")
        _check_properties(f.get("properties"), f"{where}.properties")
    return len(feats)
