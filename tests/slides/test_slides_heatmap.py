"""Patch-size inference and heatmap PNGs: size, pixel positions, colours, thumbnail blending, speed."""

from __future__ import annotations

import json

import matplotlib
import numpy as np
import pytest
from PIL import Image

from lossattn.slides import connected_components, draw_heatmap, grid_positions, infer_patch_size, scale_values


def _grid(w: int, h: int, s: int = 256, origin=(1024, 512)) -> np.ndarray:
    xs, ys = np.meshgrid(np.arange(w), np.arange(h))
    return np.c_[xs.ravel(), ys.ravel()] * s + np.asarray(origin)


def _png(path):
    with Image.open(path) as im:
        return np.asarray(im.convert("RGBA")), json.loads(im.text["lossattn:heatmap"]), im.size


def _pixel_of(layout, x, y):
    """PNG (row, col) of level-0 point (x, y) from the layout stored in the PNG."""
    left, top = layout["raster_origin_px"]
    x0, y0 = layout["extent_level0"][:2]
    sc = layout["scale"]
    return int(top + (y - y0) * sc), int(left + (x - x0) * sc)


# ----------------------------------------------------------------------------------------------- grid


def test_infer_patch_size_from_the_grid():
    assert infer_patch_size(_grid(5, 3)) == 256
    assert infer_patch_size([[512, 512], [1536, 512], [512, 2048]]) == 512  # gaps of 2 and 3 steps: gcd 512
    assert infer_patch_size(np.array([[0.0, 0.0], [0.0, 224.0]])) == 224  # integral floats are fine
    assert infer_patch_size([[0, 0], [256, 0], [384, 0]]) == 128  # a half-step offset: the step is 128


@pytest.mark.parametrize(
    "coords",
    [
        [[100, 200]],  # one patch
        [[100, 200], [100, 200]],  # one position
        [[0, 0], [256, 1], [512, 0]],  # jittered: common divisor 1 << spacing 256
        [[0.5, 0.0], [256.5, 0.0]],  # non-integer
    ],
)
def test_infer_patch_size_fails_clearly(coords):
    with pytest.raises(ValueError, match="patch_size"):
        infer_patch_size(coords)


def test_grid_positions_and_errors():
    grid, origin, step = grid_positions(_grid(3, 2), None)
    assert origin == (1024, 512) and step == 256
    assert grid.tolist() == [[0, 0], [1, 0], [2, 0], [0, 1], [1, 1], [2, 1]]
    with pytest.raises(ValueError, match="not on the grid"):
        grid_positions([[0, 0], [256, 0], [300, 0]], 256)
    with pytest.raises(ValueError, match="share the position"):
        grid_positions([[0, 0], [256, 0], [0, 0]], 256)
    with pytest.raises(ValueError, match=r"shape \(N, 2\)"):
        grid_positions(np.zeros((4, 3)), 256)


def test_connected_components_8_versus_4():
    c = np.array([[0, 0], [1, 1], [3, 3], [4, 3], [0, 5]]) * 10
    lab8, n8 = connected_components(c, np.ones(5, bool), 10, connectivity=8)
    lab4, n4 = connected_components(c, np.ones(5, bool), 10, connectivity=4)
    assert (n8, n4) == (3, 4)
    assert lab8.tolist() == [1, 1, 2, 2, 3] and lab4.tolist() == [1, 2, 3, 3, 4]
    lab, n = connected_components(c, [True, False, False, True, False], 10)
    assert n == 2 and lab.tolist() == [1, 0, 0, 2, 0]


# ----------------------------------------------------------------------------------------------- scaling


def test_rank_scaling_is_percentile_rank_with_ties():
    t, lo, hi, label = scale_values([0.1, 0.5, 0.5, 2.0, 0.0])
    np.testing.assert_allclose(t, [0.25, 0.625, 0.625, 1.0, 0.0])
    assert (lo, hi) == (0.0, 1.0) and "percentile rank" in label
    t, lo, hi, _ = scale_values([1e-4, 1e-3, 1e-2], scale="log")
    np.testing.assert_allclose(t, [0.0, 0.5, 1.0])
    t, *_ = scale_values([1.0, 3.0, 5.0], scale="linear", vmin=2.0, vmax=4.0)
    np.testing.assert_allclose(t, [0.0, 0.5, 1.0])
    with pytest.raises(ValueError, match="positive"):
        scale_values([0.0, 1.0], scale="log")


# ----------------------------------------------------------------------------------------------- drawing


def test_png_size_positions_and_colours(tmp_path):
    coords = _grid(4, 3)
    coords = np.delete(coords, 5, axis=0)  # grid cell (1, 1) has no patch
    values = np.linspace(0.01, 0.02, len(coords))
    values[7] = 1.0  # the highest
    values[2] = 0.0  # the lowest
    out = draw_heatmap(coords, values, tmp_path / "sub" / "h.png", title="slide")
    rgba, layout, size = _png(out)
    assert out == tmp_path / "sub" / "h.png"
    # extent 4x3 patches of 256 px = 1024 x 768 level-0 px, drawn at scale 1 (<= max_side)
    assert layout["raster_size_px"] == [1024, 768] and layout["scale"] == 1.0
    assert rgba.shape[:2] == (size[1], size[0]) and size[0] > 1024 and size[1] > 768
    cmap = matplotlib.colormaps["inferno"]
    hi = tuple(cmap(1.0, bytes=True))
    lo = tuple(cmap(0.0, bytes=True))
    r, c = _pixel_of(layout, coords[7, 0] + 128, coords[7, 1] + 128)
    assert tuple(rgba[r, c]) == hi
    # the whole square of the top patch, and nothing beyond it, has its colour
    r0, c0 = _pixel_of(layout, coords[7, 0], coords[7, 1])
    block = rgba[r0 : r0 + 256, c0 : c0 + 256]
    assert (block == np.array(hi)).all()
    assert tuple(rgba[r0 - 1, c0 + 10]) != hi and tuple(rgba[r0 + 256, c0 + 10]) != hi
    r, c = _pixel_of(layout, coords[2, 0] + 5, coords[2, 1] + 250)
    assert tuple(rgba[r, c]) == lo
    r, c = _pixel_of(layout, 1024 + 256 + 128, 512 + 256 + 128)  # the missing cell: white background
    assert tuple(rgba[r, c]) == (255, 255, 255, 255)


def test_downscaled_raster_keeps_positions(tmp_path):
    coords = _grid(40, 10, s=512, origin=(0, 0))
    values = np.ones(len(coords))
    values[13] = 50.0
    out = draw_heatmap(coords, values, tmp_path / "h.png", max_side=400, scale="linear")
    rgba, layout, _ = _png(out)
    assert layout["raster_size_px"] == [400, 100] and layout["scale"] == pytest.approx(400 / 20480)
    r, c = _pixel_of(layout, coords[13, 0] + 256, coords[13, 1] + 256)
    assert tuple(rgba[r, c]) == tuple(matplotlib.colormaps["inferno"](1.0, bytes=True))


def test_transparent_background(tmp_path):
    coords = np.array([[0, 0], [512, 512]])
    rgba, layout, _ = _png(
        draw_heatmap(coords, [1.0, 2.0], tmp_path / "h.png", patch_size=256, background="transparent")
    )
    r, c = _pixel_of(layout, 300, 100)  # between the two patches
    assert rgba[r, c, 3] == 0


def test_thumbnail_underneath_with_alpha(tmp_path):
    thumb = np.zeros((60, 80, 3), np.uint8)
    thumb[:] = (0, 128, 255)
    thumb_path = tmp_path / "thumb.png"
    Image.fromarray(thumb).save(thumb_path)
    coords = _grid(3, 2, s=256, origin=(512, 1024))
    values = np.arange(6, dtype=float)
    out = draw_heatmap(coords, values, tmp_path / "h.png", thumbnail=thumb_path, thumbnail_downsample=32, alpha=0.25)
    rgba, layout, _ = _png(out)
    # the canvas is the thumbnail: 80 x 60 px at 1/32 output px per level-0 px
    assert layout["raster_size_px"] == [80, 60] and layout["extent_level0"] == [0.0, 0.0, 2560.0, 1920.0]
    top = np.array(matplotlib.colormaps["inferno"](1.0, bytes=True)[:3], dtype=float)
    expect = np.rint(0.25 * top + 0.75 * np.array([0, 128, 255]))
    r, c = _pixel_of(layout, coords[5, 0] + 128, coords[5, 1] + 128)
    assert tuple(rgba[r, c, :3]) == tuple(expect.astype(int))
    r, c = _pixel_of(layout, 100, 100)  # no patch: the thumbnail itself
    assert tuple(rgba[r, c, :3]) == (0, 128, 255)


def test_thumbnail_errors(tmp_path):
    coords = _grid(3, 2)
    with pytest.raises(ValueError, match="thumbnail_downsample"):
        draw_heatmap(coords, np.ones(6), tmp_path / "h.png", thumbnail=np.zeros((10, 10, 3), np.uint8))
    with pytest.raises(ValueError, match="outside the thumbnail"):
        draw_heatmap(
            coords, np.ones(6), tmp_path / "h.png", thumbnail=np.zeros((10, 10, 3), np.uint8), thumbnail_downsample=4
        )


def test_overlapping_patches_paint_the_highest_on_top(tmp_path):
    coords = np.array([[0, 0], [128, 0], [256, 0]])  # step 128, patches of 256: each overlaps the next
    rgba, layout, _ = _png(draw_heatmap(coords, [1.0, 3.0, 2.0], tmp_path / "h.png", patch_size=256))
    cmap = matplotlib.colormaps["inferno"]
    colour = {v: tuple(cmap(t, bytes=True)) for v, t in ((1.0, 0.0), (2.0, 0.5), (3.0, 1.0))}
    for x, v in ((64, 1.0), (200, 3.0), (300, 3.0), (450, 2.0)):
        r, c = _pixel_of(layout, x, 100)
        assert tuple(rgba[r, c]) == colour[v], x


def test_write_is_atomic_and_replaces(tmp_path):
    coords = _grid(2, 2)
    p = tmp_path / "h.png"
    p.write_bytes(b"old")
    draw_heatmap(coords, np.arange(4.0), p)
    assert p.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert [q.name for q in tmp_path.iterdir()] == ["h.png"]  # no temporary file left behind


@pytest.mark.parametrize(
    ("values", "kwargs", "match"),
    [
        ([1.0, np.nan, 1.0, 1.0], {}, "non-finite"),
        ([1.0, 2.0], {}, r"shape \(4,\)"),
        ([1.0] * 4, {"scale": "sqrt"}, "scale"),
        ([1.0] * 4, {"cmap": "nope"}, "colour map"),
        ([1.0] * 4, {"alpha": 2.0}, "alpha"),
    ],
)
def test_bad_inputs_are_named(tmp_path, values, kwargs, match):
    with pytest.raises(ValueError, match=match):
        draw_heatmap(_grid(2, 2), values, tmp_path / "h.png", **kwargs)


def test_one_patch_needs_a_patch_size(tmp_path):
    with pytest.raises(ValueError, match="patch_size"):
        draw_heatmap([[0, 0]], [1.0], tmp_path / "h.png")
    rgba, layout, _ = _png(draw_heatmap([[0, 0]], [1.0], tmp_path / "h.png", patch_size=256))
    assert layout["raster_size_px"] == [256, 256]


def test_forty_thousand_patches_draw_one_cell_per_patch(tmp_path):
    # the size of a large slide's bag; its drawing time is measured in benchmarks/slides.py, not asserted here
    coords = _grid(200, 200)
    values = np.random.default_rng(0).dirichlet(np.ones(len(coords)))
    rgba, layout, _ = _png(draw_heatmap(coords, values, tmp_path / "h.png"))
    x0, y0, x1, y1 = layout["extent_level0"]
    assert (x0, y0) == tuple(coords.min(0)) and x1 >= coords[:, 0].max() and y1 >= coords[:, 1].max()
    top, bottom = coords[values.argmax()], coords[values.argmin()]
    patch = layout["patch_size"] / 2
    hot = rgba[_pixel_of(layout, top[0] + patch, top[1] + patch)]
    cold = rgba[_pixel_of(layout, bottom[0] + patch, bottom[1] + patch)]
    assert not np.array_equal(hot, cold)
