"""ResNet18-MIL: feature-map positions as instances, every pooling, weight maps, loss with the temporal ensemble."""

from __future__ import annotations

import pytest
import torch

import lossattn
import lossattn.models.resnet as RM
from lossattn import functional as LF
from lossattn.ensemble import TemporalEnsemble
from lossattn.models.registry import MODELS

NAMES = [f"resnet18_{p}" for p in RM.IMAGE_POOLINGS]
K = 3


def build(name: str, seed: int = 0, **kw) -> RM.ResNetMIL:
    torch.manual_seed(seed)
    return lossattn.create_model(name, in_features=7, num_classes=K, width=4, **kw)


def images(B=2, H=16, W=16, seed=0) -> torch.Tensor:
    return torch.randn(B, 3, H, W, generator=torch.Generator().manual_seed(seed))


def test_registered_and_marked_as_image_models():
    assert set(NAMES) == set(lossattn.list_models(input_kind="image"))
    for name in NAMES:
        assert lossattn.model_tags(name) == {"task": "single_label", "input_kind": "image"}
        assert lossattn.model_info(name)
        assert "extractor" not in MODELS.get(name).__code__.co_varnames  # not a bag model with an extractor
    assert lossattn.model_tags("loss_attention")["input_kind"] == "instances"
    model = build("resnet18_mean")
    assert model.input_kind == "image" and not model.has_weights and build("resnet18_attention").has_weights
    assert model.model_name == "resnet18_mean" and isinstance(model, lossattn.models.MILModel)


def test_backbone_is_resnet18_with_a_3x3_stem():
    torchvision = pytest.importorskip("torchvision")
    ours = RM.ResNet18Features()
    ref = torchvision.models.resnet18()
    ref.conv1 = torch.nn.Conv2d(3, 64, 3, 1, 1, bias=False)
    ref_state = {k: v for k, v in ref.state_dict().items() if not k.startswith("fc.")}
    assert {k: tuple(v.shape) for k, v in ours.state_dict().items()} == {
        k: tuple(v.shape) for k, v in ref_state.items()
    }
    ours.load_state_dict(ref_state)  # torchvision's weights load as they are
    ref.eval(), ours.eval()
    x = images(2, 32, 32)
    trunk = torch.nn.Sequential(ref.conv1, ref.bn1, ref.relu, ref.layer1, ref.layer2, ref.layer3, ref.layer4)
    torch.testing.assert_close(ours(x), trunk(x))
    assert ours.out_features == 512 and ours(x).shape == (2, 512, 4, 4)  # 16 instances on CIFAR-10


@pytest.mark.parametrize(
    ("size", "grid"), [((32, 32), (4, 4)), ((64, 64), (8, 8)), ((16, 24), (2, 3)), ((33, 9), (5, 2))]
)
def test_feature_grid(size, grid):
    assert RM.feature_grid(*size) == grid
    model = build("resnet18_loss_attention").eval()
    with torch.no_grad():
        out = model(images(1, *size))
    assert out.grid == grid and out.weights.shape == (1, grid[0] * grid[1])


@pytest.mark.parametrize("name", NAMES)
def test_forward_shapes_weights_and_maps(name):
    model = build(name)
    x = images(2, 16, 24)  # non-square: a 2x3 grid, 6 instances per image
    out = model(x)
    assert isinstance(out, lossattn.MILOutput) and out.grid == (2, 3)
    assert out.bag_logits.shape == (2, K) and out.head == "softmax"
    assert out.instance_logits.shape == (2, 6, K)
    assert out.probabilities().shape == (2, K)
    if name.endswith(("_mean", "_max")):
        assert out.weights is None
        with pytest.raises(ValueError, match="no attention weights"):
            out.weight_map()
    else:
        assert out.weights.shape == (2, 6)
        torch.testing.assert_close(out.weights.sum(1), torch.ones(2))
        wm = out.weight_map()
        assert wm.shape == (2, 2, 3)
        assert wm[1, 1, 2] == out.weights[1, 5] and wm[0, 0, 1] == out.weights[0, 1]  # row-major positions
        assert torch.equal(model.weight_map(out), wm)
    loc = out.localization_map()
    assert loc.shape == (2, 2, 3)
    torch.testing.assert_close(loc.sum((1, 2)), torch.ones(2))
    det = out.detach()
    assert isinstance(det, lossattn.MILOutput) and det.grid == (2, 3) and not det.bag_logits.requires_grad


def test_features_and_embed_are_row_major_positions():
    model = build("resnet18_mean").eval()
    x = images(2, 16, 24)
    with torch.no_grad():
        fmap = model.feature_map(x)
        h, mask = model.embed(x)
    assert fmap.shape == (2, 32, 2, 3) and h.shape == (2, 6, 32)
    assert mask.dtype == torch.bool and mask.shape == (2, 6) and bool(mask.all())
    torch.testing.assert_close(h[:, 4], fmap[:, :, 1, 1])
    assert torch.equal(model.position_mask(h), mask)


def test_mean_and_max_pooling_semantics():
    model = build("resnet18_mean").eval()
    with torch.no_grad():
        out = model(images())
    # linear classifier: the logits of the mean feature = the mean of the position logits (the CAM)
    torch.testing.assert_close(out.bag_logits, out.instance_logits.mean(1))
    model = build("resnet18_max").eval()
    with torch.no_grad():
        h, mask = model.embed(images())
        out = model.pool(h, mask)
    torch.testing.assert_close(out.bag_logits, model.classifier(h.amax(1)))


def test_loss_attention_matches_the_functional_core():
    model = build("resnet18_loss_attention").eval()
    with torch.no_grad():
        h, mask = model.embed(images())
        out = model.pool(h, mask)
        ref = LF.loss_attention(h, model.classifier.weight, model.classifier.bias, mask)
    torch.testing.assert_close(out.weights, ref.weights)
    torch.testing.assert_close(out.bag_logits, ref.bag_logits)
    y = torch.tensor([0, 2])
    loss, terms = model.loss(out, y)
    expected = LF.loss_attention_terms(ref, y, mask, lam=1.0, reduction="mean")
    torch.testing.assert_close(loss, expected.total)
    assert set(terms) == {"bag", "instance", "total"}


@pytest.mark.parametrize("name", NAMES)
def test_gradients_reach_every_parameter(name):
    model = build(name).train()
    n_images = 4
    ens = TemporalEnsemble([4] * n_images, momentum=0.6)  # 16x16 images: 2x2 = 4 positions each
    idx = torch.tensor([3, 1])
    out = model(images(2, 16, 16))
    mask = torch.ones(2, 4, dtype=torch.bool)
    if out.weights is not None:
        ens.record(idx, out.weights, mask)
        ens.step()
    target = ens.target(idx, mask)
    loss, terms = model.loss(out, torch.tensor([1, 2]), mask, ensemble=target, consistency_weight=5.0)
    loss.backward()
    for pname, p in model.named_parameters():
        assert p.grad is not None, f"{name}: no gradient for {pname}"
        assert torch.isfinite(p.grad).all(), f"{name}: non-finite gradient for {pname}"
        assert p.grad.abs().sum() > 0, f"{name}: zero gradient for {pname}"
    assert ("consistency" in terms) == (out.weights is not None)


def test_consistency_with_the_ensemble_over_positions():
    model = build("resnet18_loss_attention").eval()
    x = images(3, 16, 16)
    with torch.no_grad():
        out = model(x)
    ens = TemporalEnsemble([4] * 5, momentum=0.6)  # five images, four positions each
    idx = torch.tensor([4, 0, 2])
    mask = torch.ones(3, 4, dtype=torch.bool)
    assert ens.target(idx, mask) is None  # nothing recorded yet
    alpha = torch.rand(3, 4)
    alpha = alpha / alpha.sum(1, keepdim=True)
    ens.record(idx, alpha, mask)
    ens.step()
    target = ens.target(idx, mask)
    torch.testing.assert_close(target, alpha)  # bias-corrected: after one epoch α̃ = α
    y = torch.tensor([0, 1, 2])
    base, _ = model.loss(out, y)
    total, terms = model.loss(out, y, ensemble=target, consistency_weight=400.0)
    # consistency_reduction="mean": ω · mean over positions of (α − α̃)², averaged over the images
    expected = 400.0 * ((out.weights - alpha) ** 2).mean(1).mean()
    torch.testing.assert_close(terms["consistency"], expected)
    torch.testing.assert_close(total, base + expected)
    # the "sum" reduction (paper Eq. 7) is available
    model_sum = build("resnet18_loss_attention", consistency_reduction="sum").eval()
    with torch.no_grad():
        out_sum = model_sum(x)
    _, terms = model_sum.loss(out_sum, y, ensemble=target, consistency_weight=1.0)
    torch.testing.assert_close(terms["consistency"], ((out_sum.weights - alpha) ** 2).sum(1).mean())


def test_kwargs_reach_the_pooling():
    la = build("resnet18_loss_attention", lam=0.25, reduction="sum")
    assert la.mil.lam == 0.25 and la.mil.reduction == "sum" and la.pooling == "loss_attention"
    ga = build("resnet18_gated_attention", hidden=16)
    assert ga.mil.attention.gated and ga.mil.attention.V.out_features == 16
    assert build("resnet18_attention").mil.attention.U is None
    full = lossattn.create_model("resnet18_mean", num_classes=10)
    assert full.feature_dim == 512 and full.classifier.out_features == 10


def test_bad_inputs_are_explained():
    model = build("resnet18_attention")
    with pytest.raises(ValueError, match=r"takes images \(B, 3, H, W\) — one image per bag"):
        model(torch.randn(2, 5, 3, 16, 16))  # a batch of bags of images
    with pytest.raises(ValueError, match=r"takes images"):
        model(torch.randn(2, 1, 16, 16))
    with pytest.raises(TypeError, match="floating image tensor"):
        model(torch.zeros(2, 3, 16, 16, dtype=torch.uint8))
    with pytest.raises(ValueError, match=r"shape \(2, 4\)"):
        model(images(), torch.ones(2, 3, dtype=torch.bool))
    mask = torch.ones(2, 4, dtype=torch.bool)
    mask[0, 1] = False
    with pytest.raises(ValueError, match="must be all True"):
        model(images(), mask)
    assert model(images(), torch.ones(2, 4, dtype=torch.bool)).weights.shape == (2, 4)
    with pytest.raises(ValueError, match="unknown pooling 'sum'"):
        RM.ResNetMIL("sum")
    with pytest.raises(ValueError, match="width >= 1"):
        RM.ResNet18Features(width=0)
