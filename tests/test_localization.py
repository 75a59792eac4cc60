"""Localization AP (SPEC §6) on synthetic weight maps and boxes whose answer is known by hand."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from lossattn.localization import (
    box_regions,
    localization_ap,
    localization_correct,
    max_weight_positions,
    patch_boxes,
    patch_inside_fraction,
)


def one_hot_map(h: int, w: int, i: int, j: int) -> np.ndarray:
    m = np.full((h, w), 0.01)
    m[i, j] = 1.0
    return m / m.sum()


def maps(*positions, grid=(8, 8)) -> np.ndarray:
    return np.stack([one_hot_map(*grid, i, j) for i, j in positions])


# the worked example of the module docstring: 64x64 image, 8x8 map -> 8x8-pixel patches; max at (2, 3)
# -> patch [24, 32) x [16, 24)
SQUARE = (64, 64)


def test_patch_geometry_by_hand():
    assert patch_boxes([[2, 3]], (8, 8), SQUARE).tolist() == [[24.0, 16.0, 32.0, 24.0]]
    assert patch_boxes([[0, 0], [7, 7]], (8, 8), SQUARE).tolist() == [[0, 0, 8, 8], [56, 56, 64, 64]]
    # inclusive pixel boxes cover one more pixel on the far sides
    assert box_regions([[28, 0, 63, 63]]).tolist() == [[28, 0, 64, 64]]
    assert box_regions([[28, 0, 63, 63]], inclusive=False).tolist() == [[28, 0, 63, 63]]


def test_patch_fully_inside():
    m = maps((2, 3))
    assert patch_inside_fraction(m, [[20, 10, 40, 30]], SQUARE).tolist() == [1.0]
    assert localization_correct(m, [[20, 10, 40, 30]], SQUARE).tolist() == [True]
    # the box is exactly the patch (inclusive 24..31 x 16..23)
    assert patch_inside_fraction(m, [[24, 16, 31, 23]], SQUARE).tolist() == [1.0]


def test_exactly_half_inside_counts_as_correct():
    m = maps((2, 3), (2, 3))
    # columns 28..31 of the patch's 24..31: half; then 29..31: 3/8
    boxes = [[28, 0, 63, 63], [29, 0, 63, 63]]
    assert patch_inside_fraction(m, boxes, SQUARE).tolist() == [0.5, 0.375]
    assert localization_correct(m, boxes, SQUARE).tolist() == [True, False]
    # vertical halves: rows 16..19 of 16..23 inside, then only 16..18
    boxes = [[0, 0, 63, 19], [0, 0, 63, 18]]
    assert patch_inside_fraction(m, boxes, SQUARE).tolist() == [0.5, 0.375]
    assert localization_correct(m, boxes, SQUARE).tolist() == [True, False]
    # a quarter in each direction: 1/2 x 1/2 = 1/4
    assert patch_inside_fraction(maps((2, 3)), [[28, 20, 40, 40]], SQUARE).tolist() == [0.25]


def test_outside_and_touching_edge():
    m = maps((2, 3), (2, 3))
    # far away, and touching the patch's right edge x = 32 from outside (inclusive 32..40)
    boxes = [[40, 40, 60, 60], [32, 16, 40, 23]]
    assert patch_inside_fraction(m, boxes, SQUARE).tolist() == [0.0, 0.0]
    assert localization_correct(m, boxes, SQUARE).tolist() == [False, False]


def test_box_at_the_image_border():
    # max in the bottom-right corner: patch [56, 64) x [56, 64)
    m = maps((7, 7), (7, 7), (7, 7), (7, 7))
    boxes = [[56, 56, 63, 63], [60, 0, 63, 63], [61, 0, 63, 63], [0, 0, 63, 63]]
    assert patch_inside_fraction(m, boxes, SQUARE).tolist() == [1.0, 0.5, 0.375, 1.0]
    assert localization_correct(m, boxes, SQUARE).tolist() == [True, True, False, True]
    # the same coordinates read as a continuous box: [56, 63)^2 holds 7x7 of the 8x8 patch
    assert patch_inside_fraction(m[:1], [[56, 56, 63, 63]], SQUARE, inclusive=False).tolist() == [49 / 64]
    # max in the top-left corner and a box on the top border
    assert localization_correct(maps((0, 0)), [[0, 0, 3, 63]], SQUARE).tolist() == [True]
    assert localization_correct(maps((0, 0)), [[0, 0, 2, 63]], SQUARE).tolist() == [False]


def test_non_square_images_and_fractional_patches():
    # 48x64 (H x W) with a 6x8 map: 8x8 patches; max at (5, 0) -> [0, 8) x [40, 48)
    assert patch_boxes([[5, 0]], (6, 8), (48, 64)).tolist() == [[0, 40, 8, 48]]
    m = np.stack([one_hot_map(6, 8, 5, 0)])
    assert localization_correct(m, [[0, 44, 63, 47]], (48, 64)).tolist() == [True]  # rows 44..47 = half
    assert localization_correct(m, [[0, 45, 63, 47]], (48, 64)).tolist() == [False]
    # 30x50 (H x W) with a 4x4 map: patches 12.5 wide, 7.5 high; max at (1, 2) -> [25, 37.5) x [7.5, 15)
    assert patch_boxes([[1, 2]], (4, 4), (30, 50)).tolist() == [[25.0, 7.5, 37.5, 15.0]]
    m = np.stack([one_hot_map(4, 4, 1, 2)] * 2)
    boxes = [[31, 0, 49, 29], [32, 0, 49, 29]]  # x from 31: 6.5 / 12.5; from 32: 5.5 / 12.5
    np.testing.assert_allclose(patch_inside_fraction(m, boxes, (30, 50)), [6.5 / 12.5, 5.5 / 12.5])
    assert localization_correct(m, boxes, (30, 50)).tolist() == [True, False]
    # exactly half with a fractional patch: x from 31.25 (continuous) = 6.25 / 12.5
    assert localization_correct(m[:1], [[31.25, 0, 50, 30]], (30, 50), inclusive=False).tolist() == [True]
    # one (H, W) per image
    mixed = np.stack([one_hot_map(4, 4, 0, 0), one_hot_map(4, 4, 0, 0)])
    sizes = [[32, 32], [64, 32]]  # patches 8x8 and 8 wide x 16 high
    assert patch_inside_fraction(mixed, [[0, 0, 7, 7], [0, 0, 7, 7]], sizes).tolist() == [1.0, 0.5]


def test_ap_is_the_share_of_correct_images():
    m = maps((2, 3), (2, 3), (7, 7), (0, 0))
    boxes = [[20, 10, 40, 30], [29, 0, 63, 63], [60, 0, 63, 63], [40, 40, 63, 63]]
    assert localization_correct(m, boxes, SQUARE).tolist() == [True, False, True, False]
    assert localization_ap(m, boxes, SQUARE) == 0.5
    assert localization_ap(torch.as_tensor(m), torch.as_tensor(boxes), SQUARE) == 0.5


def test_argmax_ties_take_the_first_row_major_position():
    m = np.zeros((1, 4, 4))
    m[0, 1, 3] = m[0, 2, 0] = 1.0
    assert max_weight_positions(m).tolist() == [[1, 3]]
    assert max_weight_positions(np.ones((1, 3, 3))).tolist() == [[0, 0]]


def test_bad_inputs():
    m = maps((2, 3))
    with pytest.raises(ValueError, match="inverted"):
        localization_ap(m, [[30, 0, 20, 10]], SQUARE)
    with pytest.raises(ValueError, match=r"shape \(B, 4\)"):
        localization_ap(m, [[1, 2, 3]], SQUARE)
    with pytest.raises(ValueError, match="1 weight maps but 2 boxes"):
        localization_ap(m, [[0, 0, 1, 1], [0, 0, 1, 1]], SQUARE)
    with pytest.raises(ValueError, match=r"\(B, h, w\)"):
        localization_ap(m[0], [[0, 0, 1, 1]], SQUARE)
    with pytest.raises(ValueError, match="NaN"):
        localization_ap(np.full((1, 2, 2), np.nan), [[0, 0, 1, 1]], SQUARE)
    with pytest.raises(ValueError, match="image_size"):
        localization_ap(m, [[0, 0, 1, 1]], (64, 64, 3))
    with pytest.raises(ValueError, match="positive"):
        localization_ap(m, [[0, 0, 1, 1]], (0, 64))
    with pytest.raises(ValueError, match="at least one image"):
        localization_ap(np.zeros((0, 2, 2)), np.zeros((0, 4)), SQUARE)
    with pytest.raises(ValueError, match="threshold"):
        localization_correct(m, [[0, 0, 1, 1]], SQUARE, threshold=1.5)
