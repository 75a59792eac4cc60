"""Property-based tests of the theorems of Shi et al. (2020), with the paper's ``"sum"`` reduction of L2.

Notation for one bag of class k: z_tc instance logits, α_t = Σ_c e^{z_tc} / Σ_t' Σ_c e^{z_t'c},
p_tc = softmax_c(z_t), CE_t = −log p_tk and L2 = λ Σ_t α_t CE_t.

* T3: since −log p ≥ 1 − p, α_t CE_t ≥ α_t (1 − p_tk) = Σ_{c≠k} e^{z_tc} / Σ_t' Σ_c e^{z_t'c};
  summing over t gives L2 ≥ λ Σ_t Σ_{c≠k} e^{z_tc} / Σ_t Σ_c e^{z_tc}.
* T4: L2/λ ≥ α_j CE_j, so α_j > 2 L2/λ implies CE_j < 1/2, i.e. p_jk > e^{−1/2} > 1/2: k is the argmax.
* T1: the bag logits are z_bag = Σ_t α_t z_t (W, b shared and Σ α_t = 1), so
  z_bag − z_j = Σ_{t≠j} α_t (z_t − z_j) and ‖z_bag − z_j‖_∞ ≤ (1 − α_j) max_t ‖z_t − z_j‖_∞; softmax changes
  by at most the range of the logit change in L1, so ‖p_bag − p_j‖_1 ≤ 2 (1 − α_j) max_t ‖z_t − z_j‖_∞ → 0.

With ``reduction="mean"`` (the released code) L2 is divided by the bag size n, so T3/T4 hold with λ/n.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from hypothesis import assume, given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from lossattn import functional as LF

DT = torch.float64
SETTINGS = settings(max_examples=60, deadline=None)


@st.composite
def bags(draw, max_instances=6, max_classes=4, max_features=5, logit_scale=8.0, min_features_per_class=False):
    """One bag (possibly padded, with holes): features (1, N, D), mask (1, N), W (K, D), b (K,), target k."""
    n = draw(st.integers(1, max_instances))
    K = draw(st.integers(2, max_classes))
    D = draw(st.integers(K if min_features_per_class else 1, max(max_features, K)))
    pad = draw(st.integers(0, 3))
    N = n + pad
    elems = st.floats(-logit_scale, logit_scale, allow_nan=False, allow_infinity=False)
    h = draw(arrays(np.float64, (N, D), elements=elems))
    W = draw(arrays(np.float64, (K, D), elements=st.floats(-1.5, 1.5)))
    b = draw(arrays(np.float64, (K,), elements=st.floats(-3, 3)))
    real = draw(st.permutations(range(N)))[:n]
    mask = np.zeros(N, dtype=bool)
    mask[real] = True
    k = draw(st.integers(0, K - 1))
    # a pull towards the bag class so that confident bags (where T4's premise holds) are common
    b[k] += draw(st.floats(0.0, 20.0))
    return (
        torch.tensor(h, dtype=DT).unsqueeze(0),
        torch.tensor(mask).unsqueeze(0),
        torch.tensor(W, dtype=DT),
        torch.tensor(b, dtype=DT),
        k,
    )


def l2_of(out, k, mask, lam, reduction="sum"):
    return LF.loss_attention_terms(out, torch.tensor([k]), mask, lam=lam, reduction=reduction).instance


@SETTINGS
@given(bags(), st.floats(0.01, 10.0))
def test_t3_lower_bound(bag, lam):
    x, mask, W, b, k = bag
    out = LF.loss_attention(x, W, b, mask)
    L2 = l2_of(out, k, mask, lam).item()
    z = out.instance_logits[0][mask[0]]  # (n, K) real instances
    others = torch.cat([z[:, :k], z[:, k + 1 :]], dim=1)
    bound = lam * math.exp((torch.logsumexp(others.flatten(), 0) - torch.logsumexp(z.flatten(), 0)).item())
    assert L2 >= bound - 1e-9 * (1.0 + bound)
    # the bound is expressed through the weights as well: λ Σ_t α_t (1 − p_tk)
    alpha = out.weights[0][mask[0]]
    p_k = torch.softmax(z, dim=1)[:, k]
    assert math.isclose(bound, lam * float((alpha * (1 - p_k)).sum()), rel_tol=1e-9, abs_tol=1e-12)


@SETTINGS
@given(bags(), st.floats(0.01, 10.0))
def test_t4_heavy_instance_is_predicted_as_bag_class(bag, lam):
    x, mask, W, b, k = bag
    out = LF.loss_attention(x, W, b, mask)
    L2 = l2_of(out, k, mask, lam).item()
    for j in torch.nonzero(mask[0]).flatten().tolist():
        if out.weights[0, j].item() > 2 * L2 / lam:
            z_j = out.instance_logits[0, j]
            assert int(z_j.argmax()) == k
            # the proof gives more: CE_j < 1/2
            assert torch.softmax(z_j, 0)[k].item() > math.exp(-0.5) - 1e-12


@SETTINGS
@given(bags(), st.floats(0.01, 10.0))
def test_t3_t4_with_mean_reduction_hold_with_lambda_over_n(bag, lam):
    x, mask, W, b, k = bag
    n = int(mask.sum())
    out = LF.loss_attention(x, W, b, mask)
    L2_mean = l2_of(out, k, mask, lam, "mean").item()
    L2_sum = l2_of(out, k, mask, lam, "sum").item()
    assert math.isclose(n * L2_mean, L2_sum, rel_tol=1e-9, abs_tol=1e-12)
    for j in torch.nonzero(mask[0]).flatten().tolist():
        if out.weights[0, j].item() > 2 * L2_mean / (lam / n):
            assert int(out.instance_logits[0, j].argmax()) == k


def test_t4_premise_is_reachable():
    # guard against the property test being vacuous: a confident bag satisfies the premise
    x = torch.tensor([[[3.0, 0.0], [0.0, 0.5], [0.2, 0.1]]], dtype=DT)
    W, b = torch.eye(2, dtype=DT), torch.zeros(2, dtype=DT)
    out = LF.loss_attention(x, W, b)
    L2 = l2_of(out, 0, None, 1.0).item()
    assert out.weights[0, 0].item() > 2 * L2
    assert int(out.instance_logits[0, 0].argmax()) == 0


@SETTINGS
@given(bags(), st.data())
def test_t1_bound_bag_probabilities_close_to_heavy_instance(bag, data):
    x, mask, W, b, _ = bag
    out = LF.loss_attention(x, W, b, mask)
    real = torch.nonzero(mask[0]).flatten().tolist()
    j = data.draw(st.sampled_from(real))
    z = out.instance_logits[0, real]  # (n, K)
    alpha_j = out.weights[0, j].item()
    spread = (z - out.instance_logits[0, j]).abs().max().item()
    p_bag = torch.softmax(out.bag_logits[0], 0)
    p_j = torch.softmax(out.instance_logits[0, j], 0)
    assert (p_bag - p_j).abs().sum().item() <= 2 * (1 - alpha_j) * spread + 1e-9


@SETTINGS
@given(bags(logit_scale=3.0, min_features_per_class=True), st.data())
def test_t1_limit_alpha_to_one(bag, data):
    """Push every other instance's score down (all its logits shift by −a, its own probabilities unchanged).

    Then α_j → 1 and the bag probabilities converge to instance j's (fixed, not saturated) probabilities.
    """
    x, mask, W, b, _ = bag
    real = torch.nonzero(mask[0]).flatten().tolist()
    j = data.draw(st.sampled_from(real))
    v = torch.linalg.pinv(W) @ torch.ones(W.shape[0], dtype=DT)  # W v = 1: shifts all logits equally
    assume(torch.allclose(W @ v, torch.ones(W.shape[0], dtype=DT), atol=1e-9))
    # a near-zero W (entries ~1e-308) makes v overflow and the shifted features inf: a numerical
    # artefact of the construction, not the theorem's limit
    assume(float(v.abs().max()) < 1e6)
    others = mask.clone()
    others[0, j] = False
    p_j = torch.softmax(W @ x[0, j] + b, 0)
    s = torch.logsumexp(x[0] @ W.T + b, dim=1)
    a_big = (s[mask[0]].max() - s[j]).item() + 40.0
    alphas, gaps = [], []
    for a in (0.0, 2.0, 8.0, a_big / 2, a_big):
        xa = x.clone()
        xa[others] -= a * v
        out = LF.loss_attention(xa, W, b, mask)
        alphas.append(out.weights[0, j].item())
        gaps.append((torch.softmax(out.bag_logits[0], 0) - p_j).abs().max().item())
        torch.testing.assert_close(torch.softmax(out.instance_logits[0, j], 0), p_j)
    assert all(a1 <= a2 + 1e-12 for a1, a2 in zip(alphas, alphas[1:], strict=False))
    assert alphas[-1] > 1 - 1e-12
    assert gaps[-1] < 1e-9
