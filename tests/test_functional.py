"""Functional core: masked ops, loss-based attention and its loss.

The batched, masked implementation is checked against a naive one-bag-at-a-time reference written
here (plain loops over the real instances of one bag, no masks, float64).
"""

from __future__ import annotations

import math

import pytest
import torch

from lossattn import functional as LF

DT = torch.float64
TOL = {"atol": 1e-6, "rtol": 1e-6}


# --------------------------------------------------------------------------- naive reference


def naive_forward(h: torch.Tensor, W: torch.Tensor, b: torch.Tensor):
    """One bag ``h (n, D)`` of real instances only → (bag_logits (K,), instance_logits (n, K), weights (n,))."""
    n = h.shape[0]
    z = [W @ h[t] + b for t in range(n)]  # instance logits
    s = []
    for t in range(n):  # s_t = logsumexp_c z_tc, by hand
        m = z[t].max()
        s.append(m + torch.log(sum(torch.exp(z[t][c] - m) for c in range(len(z[t])))))
    m = max(s)
    e = [torch.exp(s_t - m) for s_t in s]
    total = sum(e)
    alpha = [e_t / total for e_t in e]
    h_bag = sum(alpha[t] * h[t] for t in range(n))
    return W @ h_bag + b, torch.stack(z), torch.stack(alpha)


def naive_ce(logits: torch.Tensor, k: int) -> torch.Tensor:
    m = logits.max()
    return m + torch.log(torch.exp(logits - m).sum()) - logits[k]


def naive_terms(h, W, b, k, *, lam, reduction, ens=None, omega=0.0):
    """(bag, instance, consistency) losses of one bag, Eq. 7 with R_t a sum or a mean."""
    bag_logits, z, alpha = naive_forward(h, W, b)
    n = h.shape[0]
    L1 = naive_ce(bag_logits, k)
    L2 = lam * sum(alpha[t] * naive_ce(z[t], k) for t in range(n))
    L3 = sum((alpha[t] - ens[t]) ** 2 for t in range(n)) * omega if ens is not None else torch.zeros((), dtype=DT)
    if reduction == "mean":
        L2, L3 = L2 / n, L3 / n
    return L1, L2, L3


# --------------------------------------------------------------------------- batch construction


def make_batch(sizes, D, N=None, *, holes=True, seed=0, pad_scale=50.0):
    """Bags of the given sizes padded to N; real instances at random sorted positions (holes) or first.

    Padded positions hold large finite garbage, which must not influence anything.
    Returns x (B, N, D), mask (B, N), the list of per-bag real features, and the positions.
    """
    g = torch.Generator().manual_seed(seed)
    N = N or max(sizes)
    B = len(sizes)
    x = pad_scale * torch.randn(B, N, D, generator=g, dtype=DT)
    mask = torch.zeros(B, N, dtype=torch.bool)
    bags, positions = [], []
    for i, n in enumerate(sizes):
        pos = torch.randperm(N, generator=g)[:n].sort().values if holes else torch.arange(n)
        h = torch.randn(n, D, generator=g, dtype=DT)
        x[i, pos] = h
        mask[i, pos] = True
        bags.append(h)
        positions.append(pos)
    return x, mask, bags, positions


def relayout(bags, N, *, holes, seed, D):
    """The same bags in another padding layout."""
    x, mask, _, positions = make_batch([len(h) for h in bags], D, N, holes=holes, seed=seed)
    for i, h in enumerate(bags):
        x[i, positions[i]] = h
    return x, mask, positions


def classifier(D, K, seed=1, scale=1.0):
    g = torch.Generator().manual_seed(seed)
    return scale * torch.randn(K, D, generator=g, dtype=DT), torch.randn(K, generator=g, dtype=DT)


SIZES = [3, 1, 5, 2]
D, K = 4, 3


# --------------------------------------------------------------------------- masked ops


def test_masked_softmax_hand_values_and_exact_zero_at_padding():
    scores = torch.tensor([[1.0, 2.0, 3.0], [0.0, 0.0, 5.0]], dtype=DT)
    mask = torch.tensor([[True, False, True], [True, True, False]])
    e2 = math.exp(2.0)
    expected = torch.tensor([[1 / (1 + e2), 0.0, e2 / (1 + e2)], [0.5, 0.5, 0.0]], dtype=DT)
    out = LF.masked_softmax(scores, mask)
    torch.testing.assert_close(out, expected)
    assert out[~mask].eq(0).all()
    # whatever sits at padding (even NaN / inf) is ignored
    dirty = scores.clone()
    dirty[0, 1], dirty[1, 2] = float("nan"), float("inf")
    torch.testing.assert_close(LF.masked_softmax(dirty, mask), expected)


def test_masked_softmax_trailing_dims_and_no_mask():
    scores = torch.tensor([[[0.0, 1.0], [1.0, 1.0], [9.0, 9.0]]], dtype=DT)  # (1, 3, 2)
    mask = torch.tensor([[True, True, False]])
    out = LF.masked_softmax(scores, mask)
    e = math.exp(1.0)
    torch.testing.assert_close(out[0, :, 0], torch.tensor([1 / (1 + e), e / (1 + e), 0.0], dtype=DT))
    torch.testing.assert_close(out[0, :, 1], torch.tensor([0.5, 0.5, 0.0], dtype=DT))
    full = torch.ones(1, 3, dtype=torch.bool)
    torch.testing.assert_close(LF.masked_softmax(scores, full), LF.masked_softmax(scores, None))
    torch.testing.assert_close(LF.masked_softmax(scores, None), torch.softmax(scores, dim=1))


def test_masked_softmax_huge_scores_finite():
    scores = torch.tensor([[1e4, -1e4, 1e4 - 1.0, 3e4]], dtype=DT)
    mask = torch.tensor([[True, True, True, False]])
    out = LF.masked_softmax(scores, mask)
    assert torch.isfinite(out).all()
    torch.testing.assert_close(out, torch.tensor([[1 / (1 + math.exp(-1)), 0.0, 1 / (1 + math.e), 0.0]], dtype=DT))


def test_masked_max_mean_sum_logsumexp_hand_values():
    x = torch.tensor([[[1.0, -4.0], [100.0, 100.0], [2.0, -3.0]], [[-1.0, 0.5], [-2.0, 0.0], [7.0, 7.0]]], dtype=DT)
    mask = torch.tensor([[True, False, True], [True, True, False]])
    torch.testing.assert_close(LF.masked_max(x, mask), torch.tensor([[2.0, -3.0], [-1.0, 0.5]], dtype=DT))
    torch.testing.assert_close(LF.masked_mean(x, mask), torch.tensor([[1.5, -3.5], [-1.5, 0.25]], dtype=DT))
    torch.testing.assert_close(LF.masked_sum(x, mask), torch.tensor([[3.0, -7.0], [-3.0, 0.5]], dtype=DT))
    s = torch.tensor([[1.0, 50.0, 2.0], [0.0, 0.0, 50.0]], dtype=DT)
    expected = torch.tensor([math.log(math.e + math.e**2), math.log(2.0)], dtype=DT)
    torch.testing.assert_close(LF.masked_logsumexp(s, mask), expected)
    # no mask == all-True mask
    full = torch.ones(2, 3, dtype=torch.bool)
    for fn in (LF.masked_max, LF.masked_mean, LF.masked_sum):
        torch.testing.assert_close(fn(x, None), fn(x, full))


def test_masked_ops_ignore_nan_padding():
    x = torch.tensor([[[1.0], [float("nan")], [3.0]]], dtype=DT)
    mask = torch.tensor([[True, False, True]])
    assert LF.masked_max(x, mask).item() == 3.0
    assert LF.masked_mean(x, mask).item() == 2.0
    assert LF.masked_sum(x, mask).item() == 4.0


def test_attention_pool_hand_values():
    h = torch.tensor([[[1.0, 0.0], [0.0, 1.0], [5.0, 5.0]]], dtype=DT)
    scores = torch.tensor([[0.0, math.log(3.0), 100.0]], dtype=DT)
    mask = torch.tensor([[True, True, False]])
    emb, w = LF.attention_pool(h, scores, mask)
    torch.testing.assert_close(w, torch.tensor([[0.25, 0.75, 0.0]], dtype=DT))
    torch.testing.assert_close(emb, torch.tensor([[0.25, 0.75]], dtype=DT))


def test_masked_softmax_padding_gets_no_gradient():
    scores = torch.tensor([[1.0, 2.0, 3.0]], dtype=DT, requires_grad=True)
    mask = torch.tensor([[True, False, True]])
    (LF.masked_softmax(scores, mask) * torch.tensor([[1.0, 5.0, -2.0]], dtype=DT)).sum().backward()
    assert scores.grad[0, 1] == 0
    assert scores.grad[0, 0] != 0


# --------------------------------------------------------------------------- loss_attention vs naive


def test_loss_attention_hand_example():
    # two instances, K=2, identity classifier: z_t = h_t
    h = torch.tensor([[[0.0, 0.0], [math.log(3.0), math.log(3.0)]]], dtype=DT)
    W, b = torch.eye(2, dtype=DT), torch.zeros(2, dtype=DT)
    out = LF.loss_attention(h, W, b)
    # s = [log 2, log 6] → α = [0.25, 0.75]; h_bag = 0.75·log3·(1,1)
    torch.testing.assert_close(out.weights, torch.tensor([[0.25, 0.75]], dtype=DT))
    torch.testing.assert_close(out.bag_logits, torch.full((1, 2), 0.75 * math.log(3.0), dtype=DT))
    torch.testing.assert_close(out.instance_logits, h)


@pytest.mark.parametrize("holes", [False, True])
def test_loss_attention_matches_naive_alone_and_any_padding(holes):
    x, mask, bags, positions = make_batch(SIZES, D, N=7, holes=holes, seed=3)
    W, b = classifier(D, K)
    out = LF.loss_attention(x, W, b, mask)
    x2, mask2, positions2 = relayout(bags, N=11, holes=True, seed=9, D=D)
    out2 = LF.loss_attention(x2, W, b, mask2)
    assert out.bag_logits.shape == (len(SIZES), K)
    assert out.instance_logits.shape == (len(SIZES), 7, K)
    assert out.weights.shape == (len(SIZES), 7)
    assert out.weights[~mask].eq(0).all() and out2.weights[~mask2].eq(0).all()
    for i, h in enumerate(bags):
        ref_bag, ref_z, ref_alpha = naive_forward(h, W, b)
        alone = LF.loss_attention(h.unsqueeze(0), W, b)  # no mask, no padding
        for o, pos, idx in ((out, positions[i], i), (out2, positions2[i], i), (alone, torch.arange(len(h)), 0)):
            torch.testing.assert_close(o.bag_logits[idx], ref_bag, **TOL)
            torch.testing.assert_close(o.weights[idx, pos], ref_alpha, **TOL)
            torch.testing.assert_close(o.instance_logits[idx, pos], ref_z, **TOL)
        torch.testing.assert_close(out.weights[i].sum(), torch.ones((), dtype=DT))


def test_loss_attention_no_bias_and_mask_none():
    x, _, _, _ = make_batch([3, 3], D, holes=False)
    W, _ = classifier(D, K)
    out = LF.loss_attention(x, W, None)
    ref = LF.loss_attention(x, W, torch.zeros(K, dtype=DT), torch.ones(2, 3, dtype=torch.bool))
    for a, r in zip(out, ref, strict=True):
        torch.testing.assert_close(a, r)


@pytest.mark.parametrize("reduction", ["mean", "sum"])
@pytest.mark.parametrize("omega", [0.0, 0.7])
def test_loss_terms_match_naive_alone_and_any_padding(reduction, omega):
    lam = 0.37
    x, mask, bags, positions = make_batch(SIZES, D, N=6, holes=True, seed=5)
    W, b = classifier(D, K, seed=2)
    target = torch.tensor([0, 2, 1, 2])
    g = torch.Generator().manual_seed(11)
    ens_bags = [torch.rand(len(h), generator=g, dtype=DT) for h in bags]

    def batch_terms(x, mask, positions):
        ens = torch.full(mask.shape, 123.0, dtype=DT)  # garbage at padding
        for i, e in enumerate(ens_bags):
            ens[i, positions[i]] = e
        out = LF.loss_attention(x, W, b, mask)
        kw = {"lam": lam, "reduction": reduction, "ensemble": ens if omega else None, "consistency_weight": omega}
        terms = LF.loss_attention_terms(out, target, mask, **kw)
        torch.testing.assert_close(LF.loss_attention_loss(out, target, mask, **kw), terms.total)
        return terms

    per_bag = [
        naive_terms(h, W, b, int(target[i]), lam=lam, reduction=reduction, ens=ens_bags[i], omega=omega)
        for i, h in enumerate(bags)
    ]
    ref = [torch.stack([p[j] for p in per_bag]).mean() for j in range(3)]
    x2, mask2, positions2 = relayout(bags, N=9, holes=True, seed=21, D=D)
    for terms in (batch_terms(x, mask, positions), batch_terms(x2, mask2, positions2)):
        torch.testing.assert_close(terms.bag, ref[0], **TOL)
        torch.testing.assert_close(terms.instance, ref[1], **TOL)
        torch.testing.assert_close(terms.consistency, ref[2], **TOL)
        torch.testing.assert_close(terms.total, ref[0] + ref[1] + ref[2], **TOL)
    # each bag alone (no mask) equals its naive terms
    for i, h in enumerate(bags):
        out = LF.loss_attention(h.unsqueeze(0), W, b)
        ens = ens_bags[i].unsqueeze(0) if omega else None
        terms = LF.loss_attention_terms(
            out, target[i : i + 1], lam=lam, reduction=reduction, ensemble=ens, consistency_weight=omega
        )
        for got, want in zip(terms[1:], per_bag[i], strict=True):
            torch.testing.assert_close(got, want, **TOL)


def test_sum_reduction_is_n_times_mean_reduction_for_one_bag():
    x, _, _, _ = make_batch([5], D, holes=False, seed=8)
    W, b = classifier(D, K)
    out = LF.loss_attention(x, W, b)
    t = torch.tensor([1])
    s = LF.loss_attention_terms(out, t, lam=1.0, reduction="sum")
    m = LF.loss_attention_terms(out, t, lam=1.0, reduction="mean")
    torch.testing.assert_close(s.instance, 5 * m.instance)
    torch.testing.assert_close(s.bag, m.bag)


def test_ensemble_without_consistency_weight_adds_nothing():
    x, mask, _, _ = make_batch([2, 3], D, seed=4)
    W, b = classifier(D, K)
    out = LF.loss_attention(x, W, b, mask)
    terms = LF.loss_attention_terms(out, torch.tensor([0, 1]), mask, ensemble=torch.rand(mask.shape, dtype=DT))
    assert terms.consistency.item() == 0.0
    torch.testing.assert_close(terms.total, terms.bag + terms.instance)


def test_consistency_cost_hand_value_and_detached_targets():
    w = torch.tensor([[0.2, 0.0, 0.8]], dtype=DT, requires_grad=True)
    ens = torch.tensor([[0.5, 9.0, 0.3]], dtype=DT, requires_grad=True)
    mask = torch.tensor([[True, False, True]])
    cost = LF.consistency_cost(w, ens, mask, "sum")
    torch.testing.assert_close(cost, torch.tensor([0.09 + 0.25], dtype=DT))
    torch.testing.assert_close(LF.consistency_cost(w, ens, mask, "mean"), torch.tensor([0.17], dtype=DT))
    cost.sum().backward()
    assert ens.grad is None  # the ensemble is a constant target
    torch.testing.assert_close(w.grad, torch.tensor([[2 * (0.2 - 0.5), 0.0, 2 * (0.8 - 0.3)]], dtype=DT))


# --------------------------------------------------------------------------- gradients


@pytest.mark.parametrize("reduction", ["mean", "sum"])
def test_gradients_match_naive_and_padding_gets_zero_gradient(reduction):
    lam, omega = 0.5, 0.3
    x, mask, bags, positions = make_batch(SIZES, D, N=6, holes=True, seed=6)
    W, b = classifier(D, K, seed=7)
    target = torch.tensor([2, 0, 1, 1])
    ens = torch.rand(mask.shape, generator=torch.Generator().manual_seed(1), dtype=DT)
    x.requires_grad_(True)
    Wb, bb = W.clone().requires_grad_(True), b.clone().requires_grad_(True)
    out = LF.loss_attention(x, Wb, bb, mask)
    LF.loss_attention_loss(
        out, target, mask, lam=lam, reduction=reduction, ensemble=ens, consistency_weight=omega
    ).backward()
    assert x.grad[~mask].eq(0).all()
    # naive: mean over bags of the per-bag losses, one bag at a time
    hs = [h.clone().requires_grad_(True) for h in bags]
    Wn, bn = W.clone().requires_grad_(True), b.clone().requires_grad_(True)
    total = 0
    for i, h in enumerate(hs):
        e = ens[i, positions[i]]
        total = total + sum(naive_terms(h, Wn, bn, int(target[i]), lam=lam, reduction=reduction, ens=e, omega=omega))
    (total / len(hs)).backward()
    for i, h in enumerate(hs):
        torch.testing.assert_close(x.grad[i, positions[i]], h.grad, **TOL)
    torch.testing.assert_close(Wb.grad, Wn.grad, **TOL)
    torch.testing.assert_close(bb.grad, bn.grad, **TOL)


@pytest.mark.parametrize("reduction", ["mean", "sum"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_huge_logits_give_finite_outputs_and_gradients(reduction, dtype):
    x, mask, _, _ = make_batch(SIZES, D, N=6, holes=True, seed=12)
    x = x.to(dtype).requires_grad_(True)
    W, b = classifier(D, K, seed=13, scale=1e4)
    W = W.to(dtype).requires_grad_(True)
    b = b.to(dtype).requires_grad_(True)
    out = LF.loss_attention(x, W, b, mask)
    assert out.instance_logits[mask].abs().max() > 1e3  # we are really in the large-logit regime
    for t in out:
        assert torch.isfinite(t).all()
    torch.testing.assert_close(out.weights.sum(1), torch.ones(len(SIZES), dtype=dtype))
    ens = torch.rand(mask.shape, dtype=dtype)
    terms = LF.loss_attention_terms(
        out, torch.tensor([0, 1, 2, 0]), mask, lam=1.0, reduction=reduction, ensemble=ens, consistency_weight=1.0
    )
    assert all(torch.isfinite(t) for t in terms)
    terms.total.backward()
    for p in (x, W, b):
        assert torch.isfinite(p.grad).all()
    assert x.grad[~mask].eq(0).all()
    assert x.grad[mask].abs().sum() > 0


# --------------------------------------------------------------------------- bad input


def _ok():
    x, mask, _, _ = make_batch([2, 3], D, N=3, holes=False)
    W, b = classifier(D, K)
    return x, mask, W, b


def test_bag_with_zero_real_instances_names_the_bag():
    x, mask, W, b = _ok()
    x3 = torch.cat([x, x[:1]])
    mask3 = torch.cat([mask, torch.zeros(1, 3, dtype=torch.bool)])
    with pytest.raises(ValueError, match=r"batch index \[2\].*zero real instances"):
        LF.loss_attention(x3, W, b, mask3)


def test_mask_shape_mismatch():
    x, mask, W, b = _ok()
    with pytest.raises(ValueError, match=r"mask shape \(2, 2\) does not match"):
        LF.loss_attention(x, W, b, mask[:, :2])


def test_mask_not_bool():
    x, mask, W, b = _ok()
    with pytest.raises(TypeError, match="torch.bool"):
        LF.loss_attention(x, W, b, mask.long())
    with pytest.raises(TypeError, match="mask must be a bool torch.Tensor"):
        LF.loss_attention(x, W, b, mask.tolist())


def test_weight_width_differs_from_feature_width():
    x, mask, W, b = _ok()
    with pytest.raises(ValueError, match=rf"feature width {D}"):
        LF.loss_attention(x, W[:, :-1], b, mask)
    with pytest.raises(ValueError, match="bias must have shape"):
        LF.loss_attention(x, W, b[:-1], mask)


def test_features_wrong_rank_or_type():
    x, mask, W, b = _ok()
    with pytest.raises(ValueError, match=r"\(B, N"):
        LF.loss_attention(x[0], W, b)
    with pytest.raises(TypeError, match="floating"):
        LF.loss_attention(x.long(), W, b, mask)
    with pytest.raises(TypeError, match="torch.Tensor"):
        LF.loss_attention(x.tolist(), W, b, mask)


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), float("-inf")])
def test_nonfinite_features_are_rejected_with_position(bad):
    x, mask, W, b = _ok()
    x[1, 2, 0] = bad
    with pytest.raises(ValueError, match=r"NaN or inf.*\[\[1, 2\]\]"):
        LF.loss_attention(x, W, b, mask)
    # the same value at a padded position is fine
    x, mask, W, b = _ok()
    x[0, 2, 0] = bad
    assert torch.isfinite(LF.loss_attention(x, W, b, mask).bag_logits).all()


@pytest.mark.parametrize("target", [[0, 3], [-1, 0], [5, 7]])
def test_target_out_of_range(target):
    x, mask, W, b = _ok()
    out = LF.loss_attention(x, W, b, mask)
    with pytest.raises(ValueError, match=r"out of range.*0\.\.2"):
        LF.loss_attention_loss(out, torch.tensor(target), mask)


def test_target_wrong_type_or_shape():
    x, mask, W, b = _ok()
    out = LF.loss_attention(x, W, b, mask)
    with pytest.raises(TypeError, match="integer class indices"):
        LF.loss_attention_loss(out, torch.tensor([0.0, 1.0]), mask)
    with pytest.raises(ValueError, match=r"target must have shape \(2,\)"):
        LF.loss_attention_loss(out, torch.tensor([0, 1, 1]), mask)


def test_bad_reduction_and_negative_weights():
    x, mask, W, b = _ok()
    out = LF.loss_attention(x, W, b, mask)
    t = torch.tensor([0, 1])
    with pytest.raises(ValueError, match="reduction must be one of"):
        LF.loss_attention_loss(out, t, mask, reduction="median")
    with pytest.raises(ValueError, match="reduction must be one of"):
        LF.consistency_cost(out.weights, out.weights, mask, "max")
    with pytest.raises(ValueError, match="lam"):
        LF.loss_attention_loss(out, t, mask, lam=-1.0)
    with pytest.raises(ValueError, match="consistency_weight"):
        LF.loss_attention_loss(out, t, mask, consistency_weight=-0.1, ensemble=out.weights)


def test_loss_mask_or_ensemble_of_wrong_shape():
    x, mask, W, b = _ok()
    out = LF.loss_attention(x, W, b, mask)
    t = torch.tensor([0, 1])
    with pytest.raises(ValueError, match="mask"):
        LF.loss_attention_loss(out, t, mask[:1])  # would silently broadcast bag 0's mask
    with pytest.raises(ValueError, match="ensemble must have the shape"):
        LF.loss_attention_loss(out, t, mask, ensemble=out.weights[:, :2], consistency_weight=1.0)


@pytest.mark.parametrize("bad", [float("nan"), float("inf")])
def test_nonfinite_padding_does_not_reach_the_classifier_gradient(bad):
    x, mask, _, _ = make_batch(SIZES, D, N=6, holes=True, seed=14)
    W, b = classifier(D, K, seed=15)
    target = torch.tensor([0, 1, 2, 1])
    grads = []
    for fill in (0.0, bad):
        xf = x.clone()
        xf[~mask] = fill
        xf.requires_grad_(True)
        Wf, bf = W.clone().requires_grad_(True), b.clone().requires_grad_(True)
        out = LF.loss_attention(xf, Wf, bf, mask)
        LF.loss_attention_loss(out, target, mask, lam=1.0).backward()
        grads.append((xf.grad, Wf.grad, bf.grad))
        # padded instance logits are those of the zero vector, as documented
        torch.testing.assert_close(out.instance_logits[~mask], bf.detach().expand(int((~mask).sum()), K))
    for g0, g1 in zip(*grads, strict=True):
        assert torch.isfinite(g1).all()
        torch.testing.assert_close(g0, g1, rtol=0, atol=0)
