"""Streamed (chunked, online-softmax) scoring of one bag equals the dense computation."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import lossattn
from lossattn.streaming import NpyChunks, OnlineSoftmaxPool, score_bag


def make(name: str, dim: int = 12, **kw):
    torch.manual_seed(0)
    return lossattn.create_model(name, in_features=dim, extractor_kwargs={"hidden": [32, 16], "dropout": 0.5}, **kw)


def dense(model, x: np.ndarray):
    model.eval()
    with torch.no_grad():
        return model(torch.from_numpy(x).unsqueeze(0))


@pytest.mark.parametrize("name", ["loss_attention", "attention", "gated_attention", "attention_sigmoid"])
@pytest.mark.parametrize("chunk", [1, 37, 5000])
def test_streamed_equals_dense(tmp_path, name, chunk):
    rng = np.random.default_rng(1)
    x = rng.normal(size=(1000, 12)).astype(np.float32)
    x[417] += 6.0  # one instance with a much larger score than the rest
    path = tmp_path / "bag.npy"
    np.save(path, x)
    model = make(name)
    ref = dense(model, x)
    for source in (path, x, np.load(path, mmap_mode="r"), (x[i : i + 100] for i in range(0, 1000, 100))):
        out = score_bag(source, model, chunk_size=chunk, instance_logits=True)
        torch.testing.assert_close(out.bag_logits, ref.bag_logits, atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(out.weights, ref.weights, atol=1e-5, rtol=1e-4)
        assert out.weights.shape == (1, 1000) and abs(float(out.weights.sum()) - 1) < 1e-5
        if ref.instance_logits is not None:
            torch.testing.assert_close(out.instance_logits, ref.instance_logits, atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(out.probabilities(), ref.probabilities(), atol=1e-5, rtol=1e-5)


def test_large_scores_and_rising_maximum():
    """Scores far beyond exp's range, growing chunk after chunk: the running rescaling stays exact."""
    pool = OnlineSoftmaxPool()
    s = torch.linspace(0, 2000, 300)
    h = torch.randn(300, 4)
    for i in range(0, 300, 7):
        pool.update(s[i : i + 7], h[i : i + 7])
    alpha = torch.softmax(s.double(), 0)
    torch.testing.assert_close(pool.weights(), alpha)
    torch.testing.assert_close(pool.embedding, alpha @ h.double())


def test_transform_and_restores_mode(tmp_path):
    rng = np.random.default_rng(2)
    x = rng.normal(3.0, 2.0, size=(300, 12)).astype(np.float32)
    model = make("loss_attention")
    model.train()
    scale = lambda t: (t - 3.0) / 2.0  # noqa: E731
    out = score_bag(x, model, chunk_size=64, transform=scale)
    assert model.training
    ref = dense(model, (x - 3.0) / 2.0)
    torch.testing.assert_close(out.bag_logits, ref.bag_logits, atol=1e-5, rtol=1e-5)


def test_npy_reader(tmp_path):
    x = np.arange(60, dtype=np.float32).reshape(10, 2, 3)
    np.save(tmp_path / "a.npy", x)
    reader = NpyChunks(tmp_path / "a.npy", chunk_size=4)
    assert len(reader) == 10
    np.testing.assert_array_equal(np.concatenate([c.copy() for c in reader]), x)
    np.save(tmp_path / "f.npy", np.asfortranarray(x[:, :, 0]))
    with pytest.raises(ValueError, match="Fortran"):
        NpyChunks(tmp_path / "f.npy")
    with pytest.raises(TypeError):
        score_bag(x[:, :, 0], lossattn.create_model("instance_max", in_features=2))
