"""QuPath GeoJSON: structure, one exact square per patch, selection, merged regions with holes, validation."""

from __future__ import annotations

import copy
import json

import numpy as np
import pytest

from lossattn.slides import to_geojson, validate_geojson, write_geojson


def _grid(w: int, h: int, s: int = 256, origin=(1024, 512)) -> np.ndarray:
    xs, ys = np.meshgrid(np.arange(w), np.arange(h))
    return np.c_[xs.ravel(), ys.ravel()] * s + np.asarray(origin)


def _area(ring) -> float:
    r = np.asarray(ring, dtype=float)
    return 0.5 * float(np.sum(r[:-1, 0] * r[1:, 1] - r[1:, 0] * r[:-1, 1]))


def _inside(points: np.ndarray, rings) -> np.ndarray:
    """Even-odd ray casting over all rings of a polygon (holes flip the parity back)."""
    x, y = points[:, 0][:, None], points[:, 1][:, None]
    odd = np.zeros(len(points), dtype=bool)
    for ring in rings:
        r = np.asarray(ring, dtype=float)
        x0, y0, x1, y1 = r[:-1, 0], r[:-1, 1], r[1:, 0], r[1:, 1]
        straddles = (y0 > y) != (y1 > y)
        with np.errstate(divide="ignore", invalid="ignore"):
            cross = x < x0 + (y - y0) * (x1 - x0) / (y1 - y0)
        odd ^= (np.sum(straddles & cross, axis=1) % 2).astype(bool)
    return odd


def _polygons(feature):
    g = feature["geometry"]
    return [g["coordinates"]] if g["type"] == "Polygon" else g["coordinates"]


def test_one_exact_square_per_patch_with_qupath_properties():
    coords = _grid(3, 2)
    values = np.array([0.1, 0.5, 0.2, 0.9, 0.05, 0.3])
    obj = to_geojson(coords, values, names="Tumor", properties={"slide_id": "s1"})
    assert validate_geojson(obj) == 6
    assert obj["type"] == "FeatureCollection"
    for i, f in enumerate(obj["features"]):
        x, y = coords[i]
        assert f["type"] == "Feature" and f["geometry"]["type"] == "Polygon"
        ring = f["geometry"]["coordinates"][0]
        assert ring == [[x, y], [x + 256, y], [x + 256, y + 256], [x, y + 256], [x, y]]
        assert all(isinstance(c, int) for p in ring for c in p)  # integer pixels stay integers in the JSON
        assert _area(ring) == 256 * 256  # counter-clockwise in (x, y) numbers (RFC 7946 exterior)
        p = f["properties"]
        assert p["objectType"] == "detection"
        assert p["classification"] == {"name": "Tumor", "color": [31, 119, 180]}
        assert p["measurements"] == {"attention": values[i]}
        assert len(p["color"]) == 3 and all(0 <= c <= 255 for c in p["color"])
        assert p["slide_id"] == "s1"
    # the colour follows the value: the top patch has the top colour of the map
    import matplotlib

    assert obj["features"][3]["properties"]["color"] == list(matplotlib.colormaps["inferno"](1.0, bytes=True)[:3])


def test_threshold_top_k_names_and_several_measurements():
    coords = _grid(4, 1)
    vals = {"attention": np.array([0.4, 0.1, 0.4, 0.8]), "logit": np.array([1.0, 2.0, 3.0, 4.0])}
    obj = to_geojson(coords, vals, threshold=0.3, names=["a", "b", "a", "c"], class_colors={"a": [1, 2, 3]})
    assert [f["properties"]["measurements"]["logit"] for f in obj["features"]] == [1.0, 3.0, 4.0]
    assert [f["properties"]["classification"] for f in obj["features"]] == [
        {"name": "a", "color": [1, 2, 3]},
        {"name": "a", "color": [1, 2, 3]},
        {"name": "c", "color": [255, 127, 14]},
    ]
    top = to_geojson(coords, vals["attention"], top_k=2, cmap=None)
    # the two largest: 0.8, then the first of the tied 0.4s
    assert [f["geometry"]["coordinates"][0][0] for f in top["features"]] == [[1024, 512], [1024 + 768, 512]]
    assert "color" not in top["features"][0]["properties"]
    both = to_geojson(coords, vals["attention"], top_k=3, threshold=0.5)
    assert len(both["features"]) == 1


def test_write_geojson_round_trips(tmp_path):
    coords, values = _grid(3, 3), np.linspace(0, 1, 9)
    path = write_geojson(tmp_path / "out" / "s.geojson", coords, values, names="Attention")
    assert json.loads(path.read_text()) == json.loads(json.dumps(to_geojson(coords, values, names="Attention")))
    assert [p.name for p in path.parent.iterdir()] == ["s.geojson"]


def test_merged_block_with_a_hole():
    coords = _grid(3, 3, s=100, origin=(0, 0))
    values = np.ones(9)
    values[4] = 0.0  # the centre is below the threshold: a hole
    obj = to_geojson(coords, values, threshold=0.5, merge=True, names="Tumor")
    validate_geojson(obj)
    (f,) = obj["features"]
    assert f["geometry"]["type"] == "Polygon" and f["properties"]["objectType"] == "annotation"
    shell, hole = f["geometry"]["coordinates"]
    assert _area(shell) == 300 * 300 and _area(hole) == -(100 * 100)  # exterior CCW, hole CW
    assert sorted(map(tuple, shell[:-1])) == [(0, 0), (0, 300), (300, 0), (300, 300)]
    assert sorted(map(tuple, hole[:-1])) == [(100, 100), (100, 200), (200, 100), (200, 200)]
    m = f["properties"]["measurements"]
    assert m == {"attention mean": 1.0, "attention max": 1.0, "patches": 8}


def test_merge_keeps_corner_touching_patches_apart_and_pinched_holes_as_rings():
    # two patches touching at a corner: two regions
    obj = to_geojson([[0, 0], [10, 10]], [1.0, 1.0], patch_size=10, merge=True)
    assert len(obj["features"]) == 2
    # a loop whose ends touch at a corner: the enclosed cell is a hole ring meeting the shell at that corner
    cells = [(0, 0), (-1, 0), (-1, 1), (-1, 2), (0, 2), (1, 2), (1, 1)]
    obj = to_geojson(np.array(cells) * 10 + 100, np.ones(7), patch_size=10, merge=True)
    (f,) = obj["features"]
    rings = f["geometry"]["coordinates"]
    assert len(rings) == 2 and _area(rings[1]) == -100
    for ring in rings:  # each ring is simple: no vertex visited twice
        assert len({tuple(p) for p in ring[:-1]}) == len(ring) - 1


def test_merged_regions_cover_exactly_the_kept_patches():
    rng = np.random.default_rng(0)
    for _ in range(40):
        w, h = rng.integers(2, 12, size=2)
        coords = _grid(int(w), int(h), s=64, origin=(640, 128))
        values = rng.random(len(coords))
        thr = rng.uniform(0.2, 0.8)
        obj = to_geojson(coords, values, threshold=thr, merge=True)
        validate_geojson(obj)
        kept = values >= thr
        assert sum(f["properties"]["measurements"]["patches"] for f in obj["features"]) == kept.sum()
        centres = coords + 32
        inside = np.zeros(len(coords), dtype=int)
        for f in obj["features"]:
            area = sum(_area(r) for poly in _polygons(f) for r in poly)  # holes are negative
            assert area == f["properties"]["measurements"]["patches"] * 64 * 64
            for poly in _polygons(f):
                inside += _inside(centres.astype(float), poly)
        assert np.array_equal(inside, kept.astype(int))


def test_merged_polygons_are_valid_simple_features():
    shapely = pytest.importorskip("shapely.geometry", reason="optional cross-check with shapely")
    rng = np.random.default_rng(1)
    for _ in range(40):
        coords = _grid(9, 7, s=32, origin=(0, 0))
        values = rng.random(len(coords))
        for f in to_geojson(coords, values, threshold=0.45, merge=True)["features"]:
            assert shapely.shape(f["geometry"]).is_valid


def test_merge_needs_a_grid():
    with pytest.raises(ValueError, match="not on the grid"):
        to_geojson([[0, 0], [100, 0], [256, 0]], [1, 1, 1], patch_size=256, merge=True)


GOOD = {
    "type": "FeatureCollection",
    "features": [
        {
            "type": "Feature",
            "geometry": {"type": "Polygon", "coordinates": [[[0, 0], [1, 0], [1, 1], [0, 1], [0, 0]]]},
            "properties": {"objectType": "annotation", "classification": {"name": "T", "color": [1, 2, 3]}},
        }
    ],
}


@pytest.mark.parametrize(
    ("path", "value", "match"),
    [
        (("type",), "Feature", "FeatureCollection"),
        (("features", 0, "type"), "feature", "Feature"),
        (("features", 0, "geometry", "type"), "Point", "Polygon"),
        (("features", 0, "geometry", "coordinates", 0, 4), [0, 1], "not closed"),
        (("features", 0, "geometry", "coordinates", 0, 2), [1, "1"], "finite numbers"),
        (("features", 0, "geometry", "coordinates", 0, 2), [True, 1], "finite numbers"),
        (("features", 0, "geometry", "coordinates", 0), [[0, 0], [1, 0], [0, 0]], "at least 4"),
        (("features", 0, "properties", "objectType"), "blob", "objectType"),
        (("features", 0, "properties", "classification"), {"color": [1, 2, 3]}, "classification"),
        (("features", 0, "properties", "classification", "color"), [300, 0, 0], "0..255"),
        (("features", 0, "properties", "measurements"), {"a": "x"}, "measurements"),
    ],
)
def test_validate_geojson_names_the_problem(path, value, match):
    validate_geojson(GOOD)
    bad = copy.deepcopy(GOOD)
    target = bad
    for key in path[:-1]:
        target = target[key]
    target[path[-1]] = value
    with pytest.raises(ValueError, match=match):
        validate_geojson(bad)


def test_bad_arguments():
    coords = _grid(2, 2)
    with pytest.raises(ValueError, match="names has 3"):
        to_geojson(coords, np.ones(4), names=["a", "b", "c"])
    with pytest.raises(ValueError, match="object_type"):
        to_geojson(coords, np.ones(4), object_type="blob")
    with pytest.raises(ValueError, match="properties may not set"):
        to_geojson(coords, np.ones(4), properties={"measurements": {}})
    with pytest.raises(ValueError, match="top_k"):
        to_geojson(coords, np.ones(4), top_k=0)
    with pytest.raises(ValueError, match="non-finite"):
        to_geojson(coords, [1.0, np.inf, 1.0, 1.0])
