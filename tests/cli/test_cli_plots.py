"""lossattn.plots: figures of the documented pixel size, upsampling of weight maps."""

from __future__ import annotations

import matplotlib.image as mpimg
import numpy as np
import pytest
import torch

from lossattn.plots import (
    ImageBag,
    image_bags_size,
    plot_image_bags,
    plot_ranked_weights,
    plot_retrieval_curves,
    plot_weight_map,
    to_display_image,
    upsample,
)


def _png_size(path):
    img = mpimg.imread(path)
    return img.shape[1], img.shape[0]


def test_image_bags_size_and_methods(tmp_path):
    rng = np.random.default_rng(0)
    bags = [
        ImageBag(rng.normal(size=(n, 1, 8, 8)), {"Loss-Attention": np.full(n, 1 / n), "Attention": np.ones(n) / n,
                 "Gated-Attention": np.ones(n) / n}, title=f"bag {n}", instance_labels=np.arange(n) % 2)
        for n in (3, 7)
    ]  # fmt: skip
    fig = plot_image_bags(bags, tmp_path / "b.png", title="t")
    assert _png_size(tmp_path / "b.png") == image_bags_size(2, 7, 3)
    assert tuple(round(v) for v in fig.get_size_inches() * fig.dpi) == image_bags_size(2, 7, 3)
    plot_image_bags(bags, tmp_path / "c.png", max_instances=4)
    assert _png_size(tmp_path / "c.png") == image_bags_size(2, 4, 3)
    with pytest.raises(ValueError, match="at most 3 methods"):
        plot_image_bags([ImageBag(np.zeros((2, 4, 4)), {str(k): np.ones(2) for k in range(4)})])
    with pytest.raises(ValueError, match="at least one bag"):
        plot_image_bags([])


def test_colour_images_and_display_scaling():
    chw = torch.rand(3, 5, 6)
    assert to_display_image(chw).shape == (5, 6, 3)
    assert to_display_image(np.ones((1, 4, 4))).shape == (4, 4)
    img = to_display_image(np.arange(16.0).reshape(4, 4))
    assert img.min() == 0 and img.max() == 1
    with pytest.raises(ValueError, match="cannot display"):
        to_display_image(np.zeros(5))


def test_ranked_weights(tmp_path):
    w = np.array([0.1, 0.5, 0.05, 0.35])
    plot_ranked_weights(w, tmp_path / "r.png", instance_labels=[0, 1, 0, 0], title="bag")
    assert _png_size(tmp_path / "r.png") == (800, 400)
    many = np.random.default_rng(1).dirichlet(np.ones(100))
    fig = plot_ranked_weights(many, top=20, figsize=(6, 3))
    bars = fig.axes[0].patches
    assert len(bars) == 20
    assert [b.get_height() for b in bars] == sorted(many, reverse=True)[:20]


def test_upsample_and_weight_map(tmp_path):
    const = upsample(np.full((4, 4), 0.25), (32, 32))
    assert const.shape == (32, 32) and np.allclose(const, 0.25)
    ramp = upsample(np.array([[0.0, 1.0]]), (1, 4))
    assert np.all(np.diff(ramp[0]) >= 0) and ramp[0, 0] == 0 and ramp[0, -1] == 1
    weights = torch.softmax(torch.randn(16), 0)
    fig = plot_weight_map(torch.rand(3, 32, 32), weights, tmp_path / "m.png", title="feature map")
    assert _png_size(tmp_path / "m.png") == (600, 320)
    assert len(fig.axes) == 3  # image, overlay, colour bar
    with pytest.raises(ValueError, match="square"):
        plot_weight_map(np.zeros((8, 8)), np.ones(5))


def test_retrieval_curves(tmp_path):
    taus = (0.9, 0.5, 0.1)
    curves = {
        "lam=0": {t: {"precision": 1.0, "recall": t / 2, "f1": 0.4} for t in taus},
        "lam=1": {str(t): {"precision": 0.9, "recall": None, "f1": 0.5} for t in taus},
    }
    fig = plot_retrieval_curves(curves, tmp_path / "f.png", title="Figure 3", legend_title="λ")
    assert _png_size(tmp_path / "f.png") == (1200, 380)
    assert [ax.get_title() for ax in fig.axes] == ["precision", "recall", "F-score"]
    assert len(fig.axes[1].lines) == 2
