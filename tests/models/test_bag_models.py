"""Every registered model: shapes, padding invariance, gradients, loss terms, bad input."""

from __future__ import annotations

import inspect

import pytest
import torch
from torch import nn

import lossattn
from lossattn import functional as LF
from lossattn.models.registry import MODELS

# single-label bag models; multi-label models: test_multilabel_models.py; image models: test_resnet.py;
# the contract every registered model shares: test_contract.py
ALL = lossattn.list_models(task="single_label", input_kind="instances")
D, K = 6, 3
DT = torch.float64
TOL = {"atol": 1e-6, "rtol": 1e-6}


def default_head(name: str) -> str:
    head = inspect.signature(MODELS.get(name)).parameters.get("head")
    return "softmax" if head is None else head.default


def build(name: str, seed: int = 0, **kwargs) -> lossattn.models.MILModel:
    torch.manual_seed(seed)
    num_classes = 2 if default_head(name) == "sigmoid" else K
    return lossattn.create_model(name, in_features=D, num_classes=num_classes, **kwargs)


def make_batch(sizes, N, *, holes=True, seed=0, pad=0.0, dtype=torch.float32, bags=None):
    """x (B, N, D) and mask (B, N); real instances at random sorted positions; ``pad`` fills padding."""
    g = torch.Generator().manual_seed(seed)
    x = torch.full((len(sizes), N, D), pad, dtype=dtype)
    mask = torch.zeros(len(sizes), N, dtype=torch.bool)
    out_bags, positions = [], []
    for i, n in enumerate(sizes):
        pos = torch.randperm(N, generator=g)[:n].sort().values if holes else torch.arange(n)
        h = torch.randn(n, D, generator=g, dtype=dtype) if bags is None else bags[i]
        x[i, pos] = h
        mask[i, pos] = True
        out_bags.append(h)
        positions.append(pos)
    return x, mask, out_bags, positions


def targets_for(model, B):
    return torch.arange(B) % model.num_classes


SIZES = [3, 1, 5, 2]


# --------------------------------------------------------------------------- shapes


@pytest.mark.parametrize("name", ALL)
def test_forward_shapes_and_probabilities(name):
    model = build(name)
    x, mask, _, _ = make_batch(SIZES, 6, seed=1)
    out = model(x, mask)
    B = len(SIZES)
    assert out.head == model.head
    width = 1 if model.head == "sigmoid" else model.num_classes
    assert out.bag_logits.shape == (B, width)
    p = out.probabilities()
    assert p.shape == (B, model.num_classes)
    torch.testing.assert_close(p.sum(1), torch.ones(B))
    assert (p >= 0).all()
    assert out.predictions().shape == (B,)
    assert torch.isfinite(out.bag_logits).all()
    if out.weights is not None:
        assert out.weights.shape == (B, 6)
        assert out.weights[~mask].eq(0).all()
        torch.testing.assert_close(out.weights.sum(1), torch.ones(B))
    if out.instance_logits is not None:
        assert out.instance_logits.shape == (B, 6, width)
        assert torch.isfinite(out.instance_logits[mask]).all()
        assert out.instance_probabilities().shape == (B, 6, model.num_classes)
    for aux in out.aux_logits:
        assert aux.shape == (B, width)


def test_which_models_have_weights_and_instance_logits():
    x, mask, _, _ = make_batch([2, 3], 3, seed=0)
    have = {name: build(name)(x, mask) for name in ALL}
    for name, out in have.items():
        assert (out.weights is not None) == ("attention" in name), name
    assert have["loss_attention"].instance_logits is not None
    for name in ("instance_max", "instance_mean", "minet_instance"):
        assert have[name].instance_logits is not None


# --------------------------------------------------------------------------- padding invariance


def _compare(out_a, ia, pos_a, out_b, ib, pos_b):
    torch.testing.assert_close(out_a.bag_logits[ia], out_b.bag_logits[ib], **TOL)
    if out_a.weights is not None:
        torch.testing.assert_close(out_a.weights[ia, pos_a], out_b.weights[ib, pos_b], **TOL)
    if out_a.instance_logits is not None:
        torch.testing.assert_close(out_a.instance_logits[ia, pos_a], out_b.instance_logits[ib, pos_b], **TOL)
    for aux_a, aux_b in zip(out_a.aux_logits, out_b.aux_logits, strict=True):
        torch.testing.assert_close(aux_a[ia], aux_b[ib], **TOL)


@pytest.mark.parametrize("name", ALL)
def test_padded_equals_alone(name):
    model = build(name).double().eval()
    x, mask, bags, pos = make_batch(SIZES, 6, seed=2, dtype=DT)
    x2, mask2, _, pos2 = make_batch(SIZES, 10, seed=3, dtype=DT, bags=bags, pad=1e3)
    x3, mask3, _, pos3 = make_batch(SIZES, 5, holes=False, seed=4, dtype=DT, bags=bags)
    with torch.no_grad():
        out, out2, out3 = model(x, mask), model(x2, mask2), model(x3, mask3)
        for i, h in enumerate(bags):
            alone = model(h.unsqueeze(0))  # no mask, no padding
            every = torch.arange(len(h))
            _compare(out, i, pos[i], alone, 0, every)
            _compare(out2, i, pos2[i], alone, 0, every)
            _compare(out3, i, pos3[i], alone, 0, every)
        if out.weights is not None:
            assert out2.weights[~mask2].eq(0).all()


@pytest.mark.parametrize("name", ALL)
def test_padding_content_is_ignored(name):
    model = build(name).eval()
    x, mask, _, _ = make_batch(SIZES, 6, seed=5)
    dirty = x.clone()
    dirty[~mask] = float("nan")
    with torch.no_grad():
        a, b = model(x, mask), model(dirty, mask)
    assert torch.equal(a.bag_logits, b.bag_logits)
    if a.weights is not None:
        assert torch.equal(a.weights, b.weights)


@pytest.mark.parametrize("name", ["loss_attention", "attention_sigmoid", "minet_ds"])
def test_mask_none_equals_all_true(name):
    model = build(name).eval()
    x, _, _, _ = make_batch([4, 4], 4, holes=False, seed=6)
    with torch.no_grad():
        a, b = model(x), model(x, torch.ones(2, 4, dtype=torch.bool))
    torch.testing.assert_close(a.bag_logits, b.bag_logits)


def test_loss_attention_model_is_the_functional_core():
    model = build("loss_attention").double().eval()
    x, mask, _, _ = make_batch(SIZES, 6, seed=7, dtype=DT)
    with torch.no_grad():
        out = model(x, mask)
        h, _ = model.embed(x, mask)
        ref = LF.loss_attention(h, model.classifier.weight, model.classifier.bias, mask)
    torch.testing.assert_close(out.bag_logits, ref.bag_logits)
    torch.testing.assert_close(out.weights, ref.weights)
    torch.testing.assert_close(out.instance_logits, ref.instance_logits)
    assert h[~mask].eq(0).all()


# --------------------------------------------------------------------------- gradients


@pytest.mark.parametrize("name", ALL)
def test_every_parameter_receives_a_gradient(name):
    model = build(name).train()
    x, mask, _, _ = make_batch(SIZES, 6, seed=8)
    out = model(x, mask)
    loss, terms = model.loss(out, targets_for(model, len(SIZES)), mask)
    loss.backward()
    for pname, p in model.named_parameters():
        assert p.grad is not None, f"{name}: {pname} got no gradient"
        assert torch.isfinite(p.grad).all(), f"{name}: {pname} has a non-finite gradient"
        assert p.grad.abs().sum() > 0, f"{name}: {pname} has an all-zero gradient"


@pytest.mark.parametrize("name", ALL)
def test_padded_instances_get_zero_gradient(name):
    model = build(name).train()
    x, mask, _, _ = make_batch(SIZES, 7, seed=9, pad=3.0)
    x.requires_grad_(True)
    h, _ = model.embed(x, mask)
    assert h[~mask].eq(0).all()
    out = model.pool(h, mask)
    ens = torch.rand(mask.shape) if out.weights is not None else None
    loss, _ = model.loss(out, targets_for(model, len(SIZES)), mask, ensemble=ens, consistency_weight=0.5)
    loss.backward()
    assert x.grad[~mask].eq(0).all()
    assert x.grad[mask].abs().sum() > 0


def _scale_classifiers(model, factor):
    scaled = 0
    for mname, module in model.named_modules():
        if "classifier" in mname and isinstance(module, nn.Linear):
            with torch.no_grad():
                module.weight.mul_(factor)
                module.bias.mul_(factor)
            scaled += 1
    assert scaled, "no classifier layer found"


def _max_logit(out, mask):
    values = [out.bag_logits.abs().max(), *[a.abs().max() for a in out.aux_logits]]
    if out.instance_logits is not None:
        values.append(out.instance_logits[mask].abs().max())
    return max(float(v.detach()) for v in values)


@pytest.mark.parametrize("name", ALL)
def test_logits_of_magnitude_1e4_are_finite(name):
    model = build(name).eval()
    x, mask, _, _ = make_batch(SIZES, 6, seed=10)
    with torch.no_grad():
        _scale_classifiers(model, 1e4 / _max_logit(model(x, mask), mask))
    model.train()
    x.requires_grad_(True)
    out = model(x, mask)
    assert _max_logit(out, mask) > 1e3
    assert torch.isfinite(out.bag_logits).all() and torch.isfinite(out.probabilities()).all()
    if out.weights is not None:
        assert torch.isfinite(out.weights).all()
    ens = torch.rand(mask.shape) if out.weights is not None else None
    loss, terms = model.loss(out, targets_for(model, len(SIZES)), mask, ensemble=ens, consistency_weight=1.0)
    assert all(torch.isfinite(t) for t in terms.values())
    loss.backward()
    assert torch.isfinite(x.grad).all() and x.grad[~mask].eq(0).all()
    for pname, p in model.named_parameters():
        assert p.grad is None or torch.isfinite(p.grad).all(), pname


# --------------------------------------------------------------------------- loss values


def _hand_bag_loss(logits, target, head):
    if head == "sigmoid":
        p = torch.sigmoid(logits[:, 0].double())
        y = target.double()
        return -(y * p.log() + (1 - y) * (1 - p).log())
    return torch.logsumexp(logits.double(), 1) - logits.double().gather(1, target[:, None])[:, 0]


@pytest.mark.parametrize("name", ALL)
@pytest.mark.parametrize("omega", [0.0, 0.8])
def test_loss_terms_by_hand(name, omega):
    model = build(name).eval()
    x, mask, _, _ = make_batch(SIZES, 6, seed=11)
    out = model(x, mask)
    target = targets_for(model, len(SIZES))
    ens = torch.rand(mask.shape, generator=torch.Generator().manual_seed(0))
    loss, terms = model.loss(out, target, mask, ensemble=ens, consistency_weight=omega)
    assert "total" in terms and "bag" in terms
    assert torch.equal(loss, terms["total"])
    supervised = out.aux_logits or [out.bag_logits]
    want_bag = sum(_hand_bag_loss(z, target, model.head) for z in supervised).mean()
    torch.testing.assert_close(terms["bag"].double(), want_bag, atol=1e-5, rtol=1e-5)
    want = want_bag
    if name == "loss_attention":
        z = out.instance_logits.double()
        ce_t = torch.logsumexp(z, -1) - z.gather(-1, target[:, None, None].expand(-1, 6, 1))[..., 0]
        per_bag = (out.weights.double() * ce_t * mask).sum(1) / mask.sum(1)  # default: mean reduction
        want_inst = model.lam * per_bag.mean()
        torch.testing.assert_close(terms["instance"].double(), want_inst, atol=1e-5, rtol=1e-5)
        want = want + want_inst
    if out.weights is not None and omega > 0:
        want_cons = omega * (((out.weights.double() - ens.double()) ** 2) * mask).sum(1).mean()  # sum reduction
        torch.testing.assert_close(terms["consistency"].double(), want_cons, atol=1e-5, rtol=1e-5)
        want = want + want_cons
    else:
        assert "consistency" not in terms or terms["consistency"] == 0
    torch.testing.assert_close(loss.double(), want, atol=1e-5, rtol=1e-5)


def test_loss_attention_options_reach_the_loss():
    x, mask, _, _ = make_batch([4], 4, holes=False, seed=12)
    t = torch.tensor([1])
    mean = build("loss_attention", lam=2.0, reduction="mean").eval()
    total = build("loss_attention", lam=2.0, reduction="sum").eval()
    ablation = build("loss_attention", lam=0.0).eval()
    _, tm = mean.loss(mean(x, mask), t, mask)
    _, ts = total.loss(total(x, mask), t, mask)
    _, ta = ablation.loss(ablation(x, mask), t, mask)
    torch.testing.assert_close(ts["instance"], 4 * tm["instance"])
    assert tm["instance"] > 0 and ta["instance"] == 0
    torch.testing.assert_close(ta["total"], ta["bag"])
    mean_c = build("loss_attention", consistency_reduction="mean").eval()
    out = mean_c(x, mask)
    ens = torch.rand(1, 4)
    _, tc = mean_c.loss(out, t, mask, ensemble=ens, consistency_weight=1.0)
    torch.testing.assert_close(tc["consistency"], ((out.weights - ens) ** 2).mean())


def test_minet_ds_prediction_averages_the_levels():
    model = build("minet_ds").eval()
    x, mask, _, _ = make_batch(SIZES, 6, seed=13)
    out = model(x, mask)
    assert len(out.aux_logits) == 3
    p_levels = torch.stack([torch.sigmoid(z[:, 0]) for z in out.aux_logits]).mean(0)
    torch.testing.assert_close(out.probabilities()[:, 1], p_levels)
    softmax_ds = lossattn.create_model("minet_ds", in_features=D, num_classes=K, head="softmax").eval()
    out = softmax_ds(x, mask)
    p_levels = torch.stack([torch.softmax(z, -1) for z in out.aux_logits]).mean(0)
    torch.testing.assert_close(out.probabilities(), p_levels)


def test_instance_max_pools_instance_logits():
    model = build("instance_max").eval()
    x, mask, _, _ = make_batch(SIZES, 6, seed=14, pad=100.0)
    out = model(x, mask)
    want = out.instance_logits.masked_fill(~mask[..., None], float("-inf")).amax(1)
    torch.testing.assert_close(out.bag_logits, want)
    model = build("instance_mean").eval()
    out = model(x, mask)
    want = (out.instance_logits * mask[..., None]).sum(1) / mask.sum(1, keepdim=True)
    torch.testing.assert_close(out.bag_logits, want)


def test_sigmoid_probabilities_match_the_logit():
    model = build("attention_sigmoid").eval()
    x, mask, _, _ = make_batch(SIZES, 6, seed=15)
    out = model(x, mask)
    p = torch.sigmoid(out.bag_logits[:, 0])
    torch.testing.assert_close(out.probabilities(), torch.stack([1 - p, p], 1))


# --------------------------------------------------------------------------- bad input


@pytest.mark.parametrize("name", ["loss_attention", "attention_sigmoid", "instance_max", "minet_rc"])
def test_bad_input_through_models(name):
    model = build(name)
    x, mask, _, _ = make_batch([2, 3, 1], 3, holes=False, seed=16)
    empty = mask.clone()
    empty[1] = False
    with pytest.raises(ValueError, match=r"batch index \[1\].*zero real instances"):
        model(x, empty)
    with pytest.raises(ValueError, match="mask shape"):
        model(x, mask[:, :2])
    with pytest.raises(TypeError, match="torch.bool"):
        model(x, mask.float())
    bad = x.clone()
    bad[2, 0, 3] = float("nan")
    with pytest.raises(ValueError, match=r"NaN or inf.*\[\[2, 0\]\]"):
        model(bad, mask)
    with pytest.raises(ValueError, match="expects 6 features per instance"):
        model(torch.randn(3, 3, D + 1), mask)
    out = model(x, mask)
    high = model.num_classes
    with pytest.raises(ValueError, match=rf"target values \[{high}\] are out of range"):
        model.loss(out, torch.tensor([0, 1, high]), mask)
    with pytest.raises(ValueError, match=r"target values \[-1\] are out of range"):
        model.loss(out, torch.tensor([0, -1, 1]), mask)


@pytest.mark.parametrize("gated", [False, True])
def test_attention_pool_scores_by_hand(gated):
    torch.manual_seed(0)
    pool = lossattn.models.AttentionPool(D, hidden=5, gated=gated).double()
    x, mask, _, _ = make_batch(SIZES, 6, seed=17, dtype=DT)
    V, w = pool.V, pool.w.weight[0]
    a = torch.tanh(x @ V.weight.T + V.bias)
    if gated:
        a = a * torch.sigmoid(x @ pool.U.weight.T + pool.U.bias)
    scores = a @ w
    torch.testing.assert_close(pool.scores(x), scores)
    emb, weights = pool(x, mask)
    for i in range(len(SIZES)):
        alpha = torch.softmax(scores[i][mask[i]], 0)
        torch.testing.assert_close(weights[i][mask[i]], alpha)
        torch.testing.assert_close(emb[i], alpha @ x[i][mask[i]])
