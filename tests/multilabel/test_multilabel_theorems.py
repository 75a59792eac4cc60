"""Property tests of the multi-label analogues of the paper's theorems (docs/multilabel.md, section 4).

Notation for one bag and one label c with bag label y = y_c: z_t = z_tc, p_t = σ(z_t), q_t = probability of
the correct value (p_t if y = 1 else 1 − p_t), BCE_t = −log q_t, L2_c = λ Σ_t α_tc BCE_t (sum reduction).
"""

from __future__ import annotations

import math

import numpy as np
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from lossattn import functional as LF
from lossattn.multilabel import functional as MF

DT = torch.float64
SETTINGS = settings(max_examples=50, deadline=None)


@st.composite
def ml_bags(draw, max_instances=6, max_labels=4, max_features=5, scale=6.0):
    """One bag, possibly padded with garbage: h (1, N, D), mask (1, N), W (K, D), b (K,), y (1, K)."""
    n = draw(st.integers(1, max_instances))
    K = draw(st.integers(1, max_labels))
    D = draw(st.integers(1, max_features))
    pad = draw(st.integers(0, 3))
    N = n + pad
    h = draw(arrays(np.float64, (N, D), elements=st.floats(-scale, scale)))
    W = draw(arrays(np.float64, (K, D), elements=st.floats(-1.5, 1.5)))
    b = draw(arrays(np.float64, (K,), elements=st.floats(-3, 3)))
    y = np.array(draw(st.lists(st.integers(0, 1), min_size=K, max_size=K)), dtype=np.float64)
    # pull some labels towards their bag value so confident bags (where T4's premise holds) are common
    b += (2 * y - 1) * np.array(draw(st.lists(st.floats(0.0, 15.0), min_size=K, max_size=K)))
    real = draw(st.permutations(range(N)))[:n]
    mask = np.zeros(N, dtype=bool)
    mask[real] = True
    h[~mask] = 1e6  # garbage at padded positions must not matter
    return (
        torch.tensor(h, dtype=DT).unsqueeze(0),
        torch.tensor(mask).unsqueeze(0),
        torch.tensor(W, dtype=DT),
        torch.tensor(b, dtype=DT),
        torch.tensor(y, dtype=DT).unsqueeze(0),
    )


def per_label_l2(out, y, mask, lam, reduction="sum"):
    """L2_c for every label c, by running the loss on the one-label slices."""
    vals = []
    for c in range(y.shape[1]):
        sl = MF.MultiLabelAttentionOutput(
            out.bag_logits[:, c : c + 1], out.instance_logits[..., c : c + 1], out.weights[..., c : c + 1]
        )
        vals.append(
            MF.multilabel_loss_attention_terms(sl, y[:, c : c + 1], mask, lam=lam, reduction=reduction).instance
        )
    return torch.stack(vals)


@SETTINGS
@given(ml_bags(), st.floats(0.01, 10.0))
def test_t3_per_label_lower_bound(bag, lam):
    x, mask, W, b, y = bag
    out = MF.multilabel_loss_attention(x, W, b, mask)
    L2 = per_label_l2(out, y, mask, lam)
    total = MF.multilabel_loss_attention_terms(out, y, mask, lam=lam, reduction="sum").instance
    assert math.isclose(float(L2.sum()), float(total), rel_tol=1e-9, abs_tol=1e-12)
    bound_sum = 0.0
    for c in range(y.shape[1]):
        z = out.instance_logits[0, mask[0], c]  # (n,)
        wrong = torch.zeros_like(z) if y[0, c] == 1 else z  # logit of the wrong value: 0 or z
        bound = lam * math.exp(float(torch.logsumexp(wrong, 0) - torch.logsumexp(F_softplus(z), 0)))
        assert float(L2[c]) >= bound - 1e-9 * (1.0 + bound)
        # the same bound through the weights: λ Σ_t α_tc (1 − q_t)
        q = torch.sigmoid(z) if y[0, c] == 1 else torch.sigmoid(-z)
        alpha = out.weights[0, mask[0], c]
        assert math.isclose(bound, lam * float((alpha * (1 - q)).sum()), rel_tol=1e-9, abs_tol=1e-12)
        bound_sum += bound
    assert float(total) >= bound_sum - 1e-9 * (1.0 + bound_sum)


def F_softplus(z):
    # Σ_t (1 + e^{z_t}) = Σ_t e^{softplus(z_t)}
    return torch.nn.functional.softplus(z)


@SETTINGS
@given(ml_bags(), st.floats(0.01, 10.0), st.sampled_from(MF.SCORES))
def test_generic_bound_holds_for_any_score(bag, lam, score):
    # −log q ≥ 1 − q gives L2_c ≥ λ Σ_t α_tc (1 − q_tc) whatever the weights are
    x, mask, W, b, y = bag
    out = MF.multilabel_loss_attention(x, W, b, mask, score=score)
    L2 = per_label_l2(out, y, mask, lam)
    for c in range(y.shape[1]):
        z = out.instance_logits[0, mask[0], c]
        q = torch.sigmoid(z) if y[0, c] == 1 else torch.sigmoid(-z)
        bound = lam * float((out.weights[0, mask[0], c] * (1 - q)).sum())
        assert float(L2[c]) >= bound - 1e-9 * (1.0 + bound)


@SETTINGS
@given(ml_bags(), st.floats(0.01, 10.0), st.sampled_from(MF.SCORES))
def test_t4_heavy_instance_agrees_with_the_bag_label(bag, lam, score):
    x, mask, W, b, y = bag
    out = MF.multilabel_loss_attention(x, W, b, mask, score=score)
    L2 = per_label_l2(out, y, mask, lam)
    for c in range(y.shape[1]):
        for j in torch.nonzero(mask[0]).flatten().tolist():
            if float(out.weights[0, j, c]) > 2 * float(L2[c]) / lam:
                z = float(out.instance_logits[0, j, c])
                q = 1 / (1 + math.exp(-z)) if y[0, c] == 1 else 1 / (1 + math.exp(z))
                assert q > math.exp(-0.5) - 1e-12  # BCE_j < 1/2
                assert (z > 0) == bool(y[0, c] == 1)


@SETTINGS
@given(ml_bags(), st.floats(0.01, 10.0))
def test_t3_t4_with_mean_reduction_hold_with_lambda_over_n(bag, lam):
    x, mask, W, b, y = bag
    n = int(mask.sum())
    out = MF.multilabel_loss_attention(x, W, b, mask)
    L2_mean, L2_sum = per_label_l2(out, y, mask, lam, "mean"), per_label_l2(out, y, mask, lam, "sum")
    assert torch.allclose(n * L2_mean, L2_sum, rtol=1e-9, atol=1e-12)
    for c in range(y.shape[1]):
        for j in torch.nonzero(mask[0]).flatten().tolist():
            if float(out.weights[0, j, c]) > 2 * float(L2_mean[c]) / (lam / n):
                assert (float(out.instance_logits[0, j, c]) > 0) == bool(y[0, c] == 1)


def test_t4_premise_is_reachable_for_both_label_values():
    # guard against the property test being vacuous: confident bags satisfy the premise for y = 1 and y = 0
    x = torch.tensor([[[4.0], [-1.0], [-2.0]]], dtype=DT)
    W, b = torch.tensor([[1.0], [-1.0]], dtype=DT), torch.tensor([0.0, -6.0], dtype=DT)
    y = torch.tensor([[1.0, 0.0]], dtype=DT)
    out = MF.multilabel_loss_attention(x, W, b)
    L2 = per_label_l2(out, y, None, 1.0)
    assert float(out.weights[0, 0, 0]) > 2 * float(L2[0]) and float(out.instance_logits[0, 0, 0]) > 0
    assert float(out.weights[0, :, 1].max()) > 2 * float(L2[1]) and float(out.instance_logits[0, :, 1].max()) < 0


@SETTINGS
@given(ml_bags(), st.data())
def test_t1_bag_probability_close_to_heavy_instance(bag, data):
    x, mask, W, b, _ = bag
    out = MF.multilabel_loss_attention(x, W, b, mask)
    real = torch.nonzero(mask[0]).flatten().tolist()
    j = data.draw(st.sampled_from(real))
    for c in range(W.shape[0]):
        z = out.instance_logits[0, real, c]
        zj = out.instance_logits[0, j, c]
        alpha_j = float(out.weights[0, j, c])
        # z_ic = Σ_t α_tc z_tc, so |z_ic − z_jc| ≤ (1 − α_jc) max_t |z_tc − z_jc|; σ is 1/4-Lipschitz
        spread = float((z - zj).abs().max())
        assert abs(float(out.bag_logits[0, c] - zj)) <= (1 - alpha_j) * spread + 1e-9 * (1 + spread)
        gap = abs(float(torch.sigmoid(out.bag_logits[0, c]) - torch.sigmoid(zj)))
        assert gap <= 0.25 * (1 - alpha_j) * spread + 1e-12


def test_t1_limit_alpha_to_one():
    # push instance 0 up for label 0: α_00 → 1 and the bag probability → that instance's probability
    W, b = torch.tensor([[1.0, 0.0]], dtype=DT), torch.tensor([0.0], dtype=DT)
    gaps = []
    for a in (2.0, 6.0, 12.0, 24.0):
        x = torch.tensor([[[a, 0.0], [0.5, 1.0], [-1.0, 2.0]]], dtype=DT)
        out = MF.multilabel_loss_attention(x, W, b)
        gaps.append(abs(float(torch.sigmoid(out.bag_logits[0, 0]) - torch.sigmoid(out.instance_logits[0, 0, 0]))))
        assert float(out.weights[0, 0, 0]) > 1 - 2 * math.exp(-a + 2)
    assert gaps == sorted(gaps, reverse=True) and gaps[-1] < 1e-8


@SETTINGS
@given(ml_bags(max_labels=1), st.floats(0.0, 5.0), st.sampled_from(LF.REDUCTIONS), st.floats(0.0, 3.0))
def test_one_label_reduces_to_single_label_method_with_pinned_background(bag, lam, reduction, omega):
    """K = 1: multi-label loss attention = the paper's method with 2 classes and the class-0 row fixed at 0."""
    x, mask, W, b, y = bag
    out = MF.multilabel_loss_attention(x, W, b, mask)
    W2 = torch.cat([torch.zeros_like(W), W])  # (2, D): background row pinned to zero
    b2 = torch.cat([torch.zeros_like(b), b])
    ref = LF.loss_attention(x, W2, b2, mask)
    assert torch.allclose(out.weights[..., 0], ref.weights, atol=1e-12)
    assert torch.allclose(out.bag_logits[:, 0], ref.bag_logits[:, 1] - ref.bag_logits[:, 0], atol=1e-9)
    ens = torch.rand(ref.weights.shape, dtype=DT, generator=torch.Generator().manual_seed(0)) * mask
    mine = MF.multilabel_loss_attention_terms(
        out, y, mask, lam=lam, reduction=reduction, ensemble=ens.unsqueeze(-1), consistency_weight=omega
    )
    theirs = LF.loss_attention_terms(
        ref, y[:, 0].long(), mask, lam=lam, reduction=reduction, ensemble=ens, consistency_weight=omega
    )
    for a, b_ in zip(mine, theirs, strict=True):
        assert math.isclose(float(a), float(b_), rel_tol=1e-9, abs_tol=1e-9)


@SETTINGS
@given(ml_bags(), st.sampled_from(MF.SCORES))
def test_labels_are_independent_problems(bag, score):
    # column c of the K-label output equals the output of the one-label problem with row c alone
    x, mask, W, b, _ = bag
    out = MF.multilabel_loss_attention(x, W, b, mask, score=score)
    for c in range(W.shape[0]):
        one = MF.multilabel_loss_attention(x, W[c : c + 1], b[c : c + 1], mask, score=score)
        assert torch.allclose(out.weights[..., c], one.weights[..., 0], atol=1e-12)
        assert torch.allclose(out.bag_logits[:, c], one.bag_logits[:, 0], atol=1e-9)
    # weights are per-label distributions over the real instances, 0 at padding
    assert torch.allclose(out.weights.sum(1), torch.ones_like(out.bag_logits))
    assert bool((out.weights[~mask] == 0).all())
