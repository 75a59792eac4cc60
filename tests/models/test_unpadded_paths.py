"""No full-size work the maths does not need: unpadded batches pool without masking, pooling is one matrix
product, and a one-bag step with the identity extractor allocates nothing of the bag's (N, D) size."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch.utils._python_dispatch import TorchDispatchMode

import lossattn
from lossattn import functional as LF


class LargeAllocations(TorchDispatchMode):
    """Records every op that returns a new tensor (not a view of an input) of at least ``limit`` elements."""

    def __init__(self, limit: int) -> None:
        super().__init__()
        self.limit = limit
        self.ops: list[str] = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        inputs = [a for a in torch.utils._pytree.tree_leaves((args, kwargs)) if isinstance(a, torch.Tensor)]
        storages = {a.untyped_storage().data_ptr() for a in inputs}
        for t in torch.utils._pytree.tree_leaves(out):
            if isinstance(t, torch.Tensor) and t.numel() >= self.limit:
                if t.untyped_storage().data_ptr() not in storages:
                    self.ops.append(f"{func} -> {tuple(t.shape)}")
        return out


def model(name: str, dim: int, extractor: str = "identity", **kw):
    torch.manual_seed(0)
    kwargs = {} if extractor == "identity" else {"extractor_kwargs": {"hidden": [8], "dropout": 0.0}}
    return lossattn.create_model(name, in_features=dim, extractor=extractor, **kwargs, **kw)


@pytest.mark.parametrize("name", ["loss_attention", "attention", "gated_attention"])
def test_a_one_bag_step_with_the_identity_extractor_allocates_nothing_of_the_bags_size(name):
    N, D = 1000, 256  # wider than the attention network's 128: its activations are smaller than the bag
    x = torch.randn(1, N, D)
    m = model(name, D)
    with LF.input_checks(False), LargeAllocations(N * D) as seen:
        out = m(x, torch.ones(1, N, dtype=torch.bool))  # the engine's one-bag batch: an all-True mask
        loss, _ = m.loss(out, torch.tensor([1]), torch.ones(1, N, dtype=torch.bool))
        loss.backward()
    assert seen.ops == []
    # the masked path on a padded batch does zero the padding: the recorder sees it
    with LF.input_checks(False), LargeAllocations(N * D) as seen:
        mask = torch.ones(1, N, dtype=torch.bool)
        mask[0, -1] = False
        m(x, mask)
    assert seen.ops


def test_value_checks_read_the_bag_once_without_copies():
    N, D = 300, 64
    x = torch.randn(1, N, D)
    with LargeAllocations(N * D) as seen:
        LF.check_bags(x, torch.ones(1, N, dtype=torch.bool))
        LF.check_bags(x)
    assert seen.ops == []


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), -float("inf")])
def test_value_checks_still_find_every_non_finite_value(bad):
    x = torch.randn(2, 5, 3)
    x[1, 2, 0] = bad
    with pytest.raises(ValueError, match=r"\[\[1, 2\]\]"):
        LF.check_bags(x)
    mask = torch.ones(2, 5, dtype=torch.bool)
    mask[1, 2] = False  # at padding: allowed
    LF.check_bags(x, mask)


def test_finite_values_whose_sum_overflows_pass_the_checks():
    x = torch.full((1, 4, 2), 3e38)  # finite, but their float32 sum is inf
    assert LF.check_bags(x).all()


def test_weighted_sum_is_the_weighted_sum():
    w = torch.rand(3, 7, dtype=torch.float64)
    h = torch.randn(3, 7, 5, dtype=torch.float64)
    torch.testing.assert_close(LF.weighted_sum(w, h), (w.unsqueeze(-1) * h).sum(1), rtol=0, atol=1e-12)


def test_loss_attention_bag_logits_are_the_classifier_of_the_weighted_embedding():
    # Σ_t α_t z_t = W (Σ_t α_t h_t) + b because the weights sum to 1 (also with padding)
    torch.manual_seed(1)
    h = torch.randn(3, 9, 6, dtype=torch.float64)
    W, b = torch.randn(4, 6, dtype=torch.float64), torch.randn(4, dtype=torch.float64)
    mask = torch.ones(3, 9, dtype=torch.bool)
    mask[1, 5:] = False
    h[1, 5:] = float("nan")  # padding may hold anything
    out = LF.loss_attention(h, W, b, mask)
    embedding = (out.weights.unsqueeze(-1) * torch.where(mask.unsqueeze(-1), h, 0.0)).sum(1)
    torch.testing.assert_close(out.bag_logits, F.linear(embedding, W, b), rtol=0, atol=1e-12)
    assert torch.isfinite(out.bag_logits).all() and (out.weights[1, 5:] == 0).all()


@pytest.mark.parametrize("name", ["loss_attention", "attention", "gated_attention_sigmoid", "embedding_mean"])
def test_no_mask_equals_an_all_true_mask_and_the_padded_batch(name):
    # the unmasked fast path, the all-True mask and the same bag padded inside a batch agree (values, gradients)
    N, D = 11, 5
    x = torch.randn(1, N, D, dtype=torch.float64)
    m = model(name, D, extractor="mlp").double()
    y = torch.tensor([1])

    def run(xb, mask):
        m.zero_grad()
        out = m(xb, mask)
        loss, _ = m.loss(out, y.expand(xb.shape[0]), mask)
        loss.backward()
        return out.bag_logits[:1].detach(), [p.grad.clone() for p in m.parameters()]

    ref_logits, ref_grads = run(x, None)
    logits, grads = run(x, torch.ones(1, N, dtype=torch.bool))
    padded = torch.zeros(2, N + 4, D, dtype=torch.float64)
    padded[0, :N] = x[0]
    padded[1, :3] = x[0, :3]
    mask = torch.zeros(2, N + 4, dtype=torch.bool)
    mask[0, :N] = True
    mask[1, :3] = True
    m.zero_grad()
    out = m(padded, mask)
    torch.testing.assert_close(out.bag_logits[:1], ref_logits, rtol=0, atol=1e-12)
    torch.testing.assert_close(logits, ref_logits, rtol=0, atol=1e-12)
    for g, r in zip(grads, ref_grads, strict=True):
        torch.testing.assert_close(g, r, rtol=0, atol=1e-12)


def test_padding_mask_says_whether_there_is_padding():
    assert LF.padding_mask(None) is None
    assert LF.padding_mask(torch.ones(2, 3, dtype=torch.bool)) is None
    mask = torch.ones(2, 3, dtype=torch.bool)
    mask[0, 2] = False
    assert LF.padding_mask(mask) is mask
