"""Chunked forward with recomputation (instance_chunk): the in-memory loss and gradients, one chunk's memory."""

from __future__ import annotations

import pytest
import torch

import lossattn
from lossattn.models.chunked import chunked_instance_outputs

CHUNKED = ["loss_attention", "attention", "gated_attention", "attention_sigmoid", "gated_attention_sigmoid"]


def model(name: str, dim: int = 6, dropout: float = 0.0):
    torch.manual_seed(0)
    m = lossattn.create_model(name, in_features=dim, extractor_kwargs={"hidden": [16, 8], "dropout": dropout})
    return m.double()


def batch(padded: bool):
    torch.manual_seed(1)
    if not padded:
        return torch.randn(1, 37, 6, dtype=torch.float64), None, torch.tensor([1])
    x = torch.randn(3, 23, 6, dtype=torch.float64)
    mask = torch.zeros(3, 23, dtype=torch.bool)
    for j, n in enumerate((23, 9, 1)):
        mask[j, :n] = True
    x[~mask] = float("nan")  # padding holds anything: it must not reach any output or gradient
    return x, mask, torch.tensor([1, 0, 1])


def loss_and_grads(m, x, mask, y, **kw):
    m.zero_grad()
    out = m(x, mask, **kw)
    weights = out.weights.detach().clone()
    ensemble = torch.rand(weights.shape, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    loss, _ = m.loss(out, y, mask, ensemble=ensemble, consistency_weight=0.7)
    loss.backward()
    return out, loss.detach(), {k: p.grad.clone() for k, p in m.named_parameters()}


@pytest.mark.parametrize("name", CHUNKED)
@pytest.mark.parametrize("padded", [False, True])
@pytest.mark.parametrize("chunk", [1, 7, 1000])
def test_chunked_loss_and_gradients_equal_the_in_memory_computation(name, padded, chunk):
    x, mask, y = batch(padded)
    m = model(name)
    ref_out, ref_loss, ref_grads = loss_and_grads(m, x, mask, y)
    out, loss, grads = loss_and_grads(m, x, mask, y, instance_chunk=chunk)
    torch.testing.assert_close(loss, ref_loss, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(out.bag_logits, ref_out.bag_logits, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(out.weights, ref_out.weights, rtol=1e-12, atol=1e-12)
    if ref_out.instance_logits is not None:
        real = mask if mask is not None else torch.ones(out.weights.shape, dtype=torch.bool)
        torch.testing.assert_close(out.instance_logits[real], ref_out.instance_logits[real], rtol=1e-12, atol=1e-12)
    assert grads.keys() == ref_grads.keys()
    for k in grads:
        assert torch.isfinite(grads[k]).all(), k
        torch.testing.assert_close(grads[k], ref_grads[k], rtol=1e-10, atol=1e-12, msg=k)


def test_chunked_dropout_masks_agree_between_forward_and_recomputation():
    # with dropout the chunks draw their own masks; the recomputation in backward must redraw the same ones,
    # which makes the gradient the exact gradient of the loss that was computed
    x, mask, y = batch(False)
    m = model("loss_attention", dropout=0.5)
    torch.manual_seed(5)
    out = m(x, mask, instance_chunk=5)
    loss, _ = m.loss(out, y, mask)
    loss.backward()
    grads = {k: p.grad.clone() for k, p in m.named_parameters()}
    # the same loss as a function of the parameters, by finite differences along the gradient
    direction = {k: torch.randn_like(p) for k, p in m.named_parameters()}
    eps = 1e-6

    def loss_at(sign: float) -> float:
        with torch.no_grad():
            for k, p in m.named_parameters():
                p.add_(sign * eps * direction[k])
            torch.manual_seed(5)
            o = m(x, mask, instance_chunk=5)
            value = float(m.loss(o, y, mask)[0])
            for k, p in m.named_parameters():
                p.sub_(sign * eps * direction[k])
        return value

    numeric = (loss_at(1.0) - loss_at(-1.0)) / (2 * eps)
    analytic = sum(float((grads[k] * direction[k]).sum()) for k in grads)
    assert numeric == pytest.approx(analytic, rel=1e-6, abs=1e-9)


def test_chunked_evaluation_without_gradients():
    x, mask, y = batch(True)
    m = model("gated_attention")
    with torch.no_grad():
        ref, out = m(x, mask), m(x, mask, instance_chunk=4)
    torch.testing.assert_close(out.bag_logits, ref.bag_logits, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(out.weights, ref.weights, rtol=1e-12, atol=1e-12)


def saved_numel(m, x, mask, **kw) -> int:
    """Elements of the tensors the forward pass keeps for the backward pass (other than the input bag itself)."""
    total = 0

    def pack(t):
        nonlocal total
        if t.untyped_storage().data_ptr() != x.untyped_storage().data_ptr():
            total += t.numel()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        out = m(x, mask, **kw)
        loss = m.loss(out, torch.tensor([1]), mask)[0]
    loss.backward()
    return total


def test_chunked_memory_is_one_chunk_plus_a_few_numbers_per_instance():
    N, D = 4000, 6
    x = torch.randn(1, N, D, dtype=torch.float64)
    torch.manual_seed(0)
    m = lossattn.create_model("loss_attention", in_features=D, extractor_kwargs={"hidden": [64, 32], "dropout": 0.0})
    m = m.double()  # the extractor keeps 64 + 64 + 32 + 32 activations per instance for its backward pass
    dense = saved_numel(m, x, None)
    chunked = saved_numel(m, x, None, instance_chunk=100)
    assert dense > 190 * N
    # what is left is the loss's own per-instance numbers: a few copies of the (N, K = 2) logits and (N,) weights
    assert chunked < 20 * N


def test_chunk_must_be_a_positive_integer_and_the_model_must_support_it():
    x, mask, _ = batch(False)
    with pytest.raises(ValueError, match="positive integer"):
        model("attention")(x, mask, instance_chunk=0)
    with pytest.raises(ValueError, match="instance chunks"):
        model("instance_max")(x, mask, instance_chunk=4)
    with pytest.raises(ValueError, match="positive integer"):
        chunked_instance_outputs(lambda t: t, x, None, True)
