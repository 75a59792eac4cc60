"""Instance feature extractors (SPEC §5) on their own and inside every model that takes an extractor."""

from __future__ import annotations

import inspect

import pytest
import torch
from torch import nn

import lossattn
from lossattn.models import CifarBagsCNN, IdentityExtractor, LeNet5, MLPExtractor, create_extractor
from lossattn.models.registry import MODELS

WITH_EXTRACTOR = [n for n in lossattn.list_models() if "extractor" in inspect.signature(MODELS.get(n)).parameters]
IMAGES = {"lenet5": (1, 28, 28), "cifar_cnn": (3, 32, 32)}


def default_head(name: str) -> str:
    head = inspect.signature(MODELS.get(name)).parameters.get("head")
    return "softmax" if head is None else head.default


def image_bags(shape, sizes, N, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.zeros(len(sizes), N, *shape)
    mask = torch.zeros(len(sizes), N, dtype=torch.bool)
    for i, n in enumerate(sizes):
        pos = torch.randperm(N, generator=g)[:n].sort().values
        x[i, pos] = torch.rand(n, *shape, generator=g)
        mask[i, pos] = True
    return x, mask


def test_image_extractors_exist_for_every_feature_model():
    assert {"loss_attention", "attention", "gated_attention", "instance_max", "embedding_mean"} <= set(WITH_EXTRACTOR)


# --------------------------------------------------------------------------- extractors alone


def test_mlp_extractor_layers_and_shapes():
    mlp = MLPExtractor(10)
    assert mlp.out_features == 64
    linears = [m for m in mlp.net if isinstance(m, nn.Linear)]
    assert [(m.in_features, m.out_features) for m in linears] == [(10, 256), (256, 128), (128, 64)]
    assert [type(m) for m in mlp.net[:3]] == [nn.Linear, nn.ReLU, nn.Dropout]
    assert mlp(torch.randn(7, 10)).shape == (7, 64)
    assert MLPExtractor(4, hidden=(8,), dropout=0.0)(torch.randn(3, 1, 2, 2)).shape == (3, 8)  # flattened
    with pytest.raises(ValueError, match="expects 10 features per instance, got 9"):
        mlp(torch.randn(2, 9))
    with pytest.raises(ValueError, match="in_features >= 1"):
        MLPExtractor(0)
    with pytest.raises(ValueError, match="at least one hidden layer"):
        MLPExtractor(4, hidden=())


def test_lenet5_shapes_and_dropout_before_relu():
    net = LeNet5()
    assert net(torch.rand(5, 1, 28, 28)).shape == (5, 500)
    assert [type(m) for m in net.fc] == [nn.Linear, nn.Dropout, nn.ReLU]  # reference order (SPEC §2)
    assert net.fc[0].in_features == 50 * 4 * 4
    with pytest.raises(ValueError, match=r"expects instances of shape \(1, 28, 28\), got \(3, 28, 28\)"):
        net(torch.rand(2, 3, 28, 28))
    with pytest.raises(ValueError, match="at least 16 pixels"):
        LeNet5(image_size=12)


def test_cifar_cnn_shapes_and_tanh_output():
    net = CifarBagsCNN().eval()
    out = net(torch.rand(4, 3, 32, 32))
    assert out.shape == (4, 500)
    assert out.abs().max() <= 1  # tanh
    assert isinstance(net.fc[-1], nn.Tanh)
    assert net.fc[0].in_features == 50 * 5 * 5
    with pytest.raises(ValueError, match=r"expects instances of shape \(3, 32, 32\)"):
        net(torch.rand(2, 1, 28, 28))


@pytest.mark.parametrize("extractor", sorted(IMAGES))
def test_cnn_extractors_equal_the_plain_nchw_stack(extractor):
    # the CPU forward switches to channels-last memory after the first convolution (a speed-up only):
    # outputs and every gradient must be those of running the nn.Sequential stack as it is
    torch.manual_seed(0)
    m = create_extractor(extractor, dropout=0.0)
    x = torch.randn(7, *IMAGES[extractor])

    def outputs_and_grads(forward):
        m.zero_grad(set_to_none=True)
        out = forward(x)
        out.square().sum().backward()
        return out.detach(), [p.grad.clone() for p in m.parameters()]

    fast, fast_grads = outputs_and_grads(m)
    plain, plain_grads = outputs_and_grads(lambda t: m.fc(m.conv(t).flatten(1)))
    torch.testing.assert_close(fast, plain, rtol=1e-5, atol=1e-6)
    for name, a, b in zip([n for n, _ in m.named_parameters()], fast_grads, plain_grads, strict=True):
        # summation order differs: float rounding relative to the gradient's scale
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5 * float(b.abs().max()), msg=name)


def test_identity_extractor():
    ident = IdentityExtractor(6)
    x = torch.randn(3, 2, 3)
    torch.testing.assert_close(ident(x), x.flatten(1))
    with pytest.raises(ValueError, match="expects 6 features"):
        ident(torch.randn(3, 5))


def test_create_extractor_by_name():
    assert isinstance(create_extractor("lenet5"), LeNet5)
    assert isinstance(create_extractor("mlp", in_features=3), MLPExtractor)
    with pytest.raises(ValueError, match="unknown extractor 'resnet'"):
        create_extractor("resnet")


# --------------------------------------------------------------------------- extractors inside models


@pytest.mark.parametrize("extractor", sorted(IMAGES))
@pytest.mark.parametrize("name", WITH_EXTRACTOR)
def test_image_models_shapes_and_gradients(name, extractor):
    torch.manual_seed(0)
    num_classes = 2 if default_head(name) == "sigmoid" else 3
    model = lossattn.create_model(name, num_classes=num_classes, extractor=extractor).train()
    x, mask = image_bags(IMAGES[extractor], [2, 1, 3], 3)
    x.requires_grad_(True)
    out = model(x, mask)
    width = 1 if model.head == "sigmoid" else num_classes
    assert out.bag_logits.shape == (3, width)
    assert out.probabilities().shape == (3, num_classes)
    assert torch.isfinite(out.bag_logits).all()
    if out.weights is not None:
        assert out.weights.shape[:2] == (3, 3) and out.weights[~mask].eq(0).all()
    if out.instance_logits is not None:
        assert out.instance_logits.shape == (3, 3, width)
    if model.task == "multi_label":  # label sets (B, L) multi-hot
        target = torch.tensor([[1, 0, 1], [0, 0, 0], [1, 1, 0]], dtype=torch.float32)
    else:
        target = torch.tensor([1, 0, 1])
    loss, terms = model.loss(out, target, mask)
    assert "total" in terms
    loss.backward()
    for pname, p in model.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all(), pname
        assert p.grad.abs().sum() > 0, f"{name}/{extractor}: {pname} has an all-zero gradient"
    assert x.grad[~mask].eq(0).all()


@pytest.mark.parametrize("extractor", sorted(IMAGES))
@pytest.mark.parametrize("name", ["loss_attention", "gated_attention"])
def test_image_models_padded_equals_alone(name, extractor):
    torch.manual_seed(0)
    model = lossattn.create_model(name, num_classes=3, extractor=extractor).double().eval()
    x, mask = image_bags(IMAGES[extractor], [2, 1, 3], 4, seed=1)
    x = x.double()
    with torch.no_grad():
        out = model(x, mask)
        for i in range(3):
            alone = model(x[i][mask[i]].unsqueeze(0))
            torch.testing.assert_close(out.bag_logits[i], alone.bag_logits[0], atol=1e-6, rtol=1e-6)
            torch.testing.assert_close(out.weights[i][mask[i]], alone.weights[0], atol=1e-6, rtol=1e-6)


def test_extractor_kwargs_reach_the_extractor():
    model = lossattn.create_model(
        "loss_attention", in_features=5, extractor="mlp", extractor_kwargs={"hidden": (7, 3), "dropout": 0.0}
    )
    assert model.feature_dim == 3 and model.classifier.in_features == 3
    model = lossattn.create_model("attention", extractor="lenet5", extractor_kwargs={"out_features": 32})
    assert model.classifier.in_features == 32
