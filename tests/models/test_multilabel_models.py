"""Multi-label models: registry, shapes, padding, gradients, losses, consistency cost."""

from __future__ import annotations

import pytest
import torch

import lossattn
from lossattn.models import MILOutput
from lossattn.multilabel import LabelwiseTemporalEnsemble
from lossattn.multilabel import functional as MF

EXPECTED = {
    "loss_attention_multilabel",
    "attention_multilabel",
    "gated_attention_multilabel",
    "embedding_max_multilabel",
    "embedding_mean_multilabel",
    "instance_max_multilabel",
    "instance_mean_multilabel",
}
EXTRACTOR = {"hidden": [8], "dropout": 0.0}


def batch(B=3, N=5, D=4, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(B, N, D, generator=g)
    mask = torch.ones(B, N, dtype=torch.bool)
    mask[0, 3:] = False
    mask[2, 1:] = False
    y = torch.tensor([[1, 0, 1], [0, 0, 0], [1, 1, 1]], dtype=torch.float32)[:B]
    return x, mask, y


def make(name, K=3, **kw):
    torch.manual_seed(0)
    return lossattn.create_model(name, in_features=4, num_classes=K, extractor_kwargs=EXTRACTOR, **kw)


def test_one_registry_tags_the_multilabel_models():
    assert set(lossattn.list_models(task="multi_label")) == EXPECTED
    assert not EXPECTED & set(lossattn.list_models(task="single_label"))
    assert all(lossattn.model_tags(n) == {"task": "multi_label", "input_kind": "instances"} for n in EXPECTED)
    assert lossattn.model_info("loss_attention_multilabel")
    with pytest.raises(ValueError, match="valid models"):
        lossattn.create_model("nope", in_features=4)


def test_deprecated_multilabel_aliases_still_work():
    import lossattn.multilabel as ML

    assert set(ML.list_multilabel_models()) == EXPECTED
    assert ML.multilabel_model_info("attention_multilabel") == lossattn.model_info("attention_multilabel")
    model = ML.create_multilabel_model("attention_multilabel", in_features=4, num_labels=3)
    assert model.num_classes == 3 and ML.MultiLabelOutput is MILOutput
    with pytest.raises(ValueError, match="disagree"):
        lossattn.create_model("attention_multilabel", in_features=4, num_classes=2, num_labels=3)


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_forward_shapes_padding_and_loss(name):
    model = make(name).eval()
    x, mask, y = batch()
    out = model(x, mask)
    assert isinstance(out, MILOutput) and out.head == "multilabel" and model.head == "multilabel"
    assert out.bag_logits.shape == (3, 3) and out.probabilities().shape == (3, 3)
    assert out.predictions().dtype == torch.bool
    if out.weights is not None:
        assert out.weights.shape == ((3, 5, 3) if model.weights_per_label else (3, 5))
        assert bool((out.label_weights()[~mask] == 0).all())
        assert torch.allclose(out.label_weights().sum(1), torch.ones(3, 3))
    # garbage at padded positions changes nothing
    x2 = x.clone()
    x2[~mask] = 1e4
    assert torch.allclose(model(x2, mask).bag_logits, out.bag_logits, atol=1e-5)
    loss, terms = model.loss(out, y, mask)
    assert loss.shape == () and torch.isfinite(loss) and "bag" in terms and "total" in terms


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_no_gradient_reaches_padding(name):
    model = make(name)
    x, mask, y = batch()
    x = x.clone().requires_grad_(True)
    loss, _ = model.loss(model(x, mask), y, mask)
    loss.backward()
    assert bool((x.grad[~mask] == 0).all())


def test_loss_attention_terms_and_target_checks():
    model = make("loss_attention_multilabel", lam=2.0, reduction="sum")
    x, mask, y = batch()
    out = model(x, mask)
    loss, terms = model.loss(out, y, mask)
    ref = MF.multilabel_loss_attention_terms(
        MF.MultiLabelAttentionOutput(out.bag_logits, out.instance_logits, out.weights),
        y,
        mask,
        lam=2.0,
        reduction="sum",
    )
    assert torch.allclose(loss, ref.total) and terms["instance"].item() > 0
    with pytest.raises(ValueError, match="multi-hot"):
        model.loss(out, torch.tensor([0, 1, 2]), mask)
    with pytest.raises(ValueError, match="0 or 1"):
        model.loss(out, y * 2, mask)
    with pytest.raises(ValueError, match="lam"):
        make("loss_attention_multilabel", lam=-1.0)
    with pytest.raises(ValueError, match="score"):
        make("loss_attention_multilabel", score="nope")
    with pytest.raises(ValueError, match="num_labels"):
        make("attention_multilabel", K=0)


def test_lambda_zero_leaves_only_the_bag_loss():
    model = make("loss_attention_multilabel", lam=0.0)
    x, mask, y = batch()
    out = model(x, mask)
    loss, terms = model.loss(out, y, mask)
    bce = torch.nn.functional.binary_cross_entropy_with_logits(out.bag_logits, y, reduction="none").sum(1).mean()
    assert torch.allclose(loss, bce) and terms["instance"].item() == 0.0


@pytest.mark.parametrize("name", ["loss_attention_multilabel", "attention_multilabel"])
def test_consistency_cost_is_added_and_is_zero_at_the_target(name):
    model = make(name)
    x, mask, y = batch()
    out = model(x, mask)
    base, _ = model.loss(out, y, mask)
    same, terms = model.loss(out, y, mask, ensemble=out.weights.detach(), consistency_weight=5.0)
    assert torch.allclose(base, same) and terms["consistency"].item() == 0.0
    other, terms = model.loss(out, y, mask, ensemble=torch.zeros_like(out.weights), consistency_weight=5.0)
    assert other.item() > base.item() and terms["consistency"].item() > 0


def test_labelwise_ensemble_tracks_each_label():
    sizes = [3, 1, 2]
    ens = LabelwiseTemporalEnsemble(sizes, num_labels=2, momentum=0.5)
    mask = torch.tensor([[True, True, True], [True, False, False], [True, True, False]])
    assert ens.target(torch.arange(3), mask) is None
    w = torch.rand(3, 3, 2) * mask.unsqueeze(-1)
    ens.record(torch.arange(3), w, mask)
    ens.step()
    t = ens.target(torch.arange(3), mask)
    assert t.shape == (3, 3, 2) and torch.allclose(t, w.float(), atol=1e-6)  # bias-corrected: first epoch = α
    state = ens.state_dict()
    other = LabelwiseTemporalEnsemble(sizes, 2, 0.5)
    other.load_state_dict(state)
    assert torch.equal(other.target(torch.arange(3), mask), t)
    with pytest.raises(ValueError, match="weights"):
        ens.record(torch.arange(3), w[..., 0], mask)
