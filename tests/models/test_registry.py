"""Model / extractor registry: names, construction, helpful errors."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import lossattn
from lossattn.models import list_extractors
from lossattn.models.registry import Registry

EXPECTED_MODELS = {
    "loss_attention",
    "attention",
    "gated_attention",
    "attention_sigmoid",
    "gated_attention_sigmoid",
    "instance_max",
    "instance_mean",
    "embedding_max",
    "embedding_mean",
    "minet_instance",
    "minet_embedding",
    "minet_ds",
    "minet_rc",
}
SIGMOID_MODELS = {
    "attention_sigmoid",
    "gated_attention_sigmoid",
    "minet_instance",
    "minet_embedding",
    "minet_ds",
    "minet_rc",
}


def test_list_models_is_sorted_and_complete():
    names = lossattn.list_models()
    assert names == sorted(names)
    assert EXPECTED_MODELS <= set(names)


def test_list_extractors():
    assert {"mlp", "lenet5", "cifar_cnn", "identity"} <= set(list_extractors())


@pytest.mark.parametrize("name", sorted(EXPECTED_MODELS))
def test_every_model_builds_with_its_info(name):
    model = lossattn.create_model(name, in_features=5, num_classes=2)
    assert isinstance(model, lossattn.models.MILModel)
    assert model.model_name == name
    assert model.model_kwargs == {"in_features": 5, "num_classes": 2}
    assert model.head == ("sigmoid" if name in SIGMOID_MODELS else "softmax")
    info = lossattn.model_info(name)
    assert isinstance(info, str) and info.strip()


def test_unknown_model_lists_valid_names():
    with pytest.raises(ValueError, match="unknown model 'resnet_mil'") as err:
        lossattn.create_model("resnet_mil", in_features=4)
    for name in EXPECTED_MODELS:
        assert name in str(err.value)
    with pytest.raises(ValueError, match="valid models: .*loss_attention"):
        lossattn.model_info("nope")
    with pytest.raises(ValueError, match="unknown model"):
        lossattn.create_model(None)


def test_unknown_extractor_lists_valid_names():
    with pytest.raises(ValueError, match=r"unknown extractor 'vgg'.*valid extractors: .*lenet5.*mlp"):
        lossattn.create_model("attention", in_features=4, extractor="vgg")


def test_feature_models_need_in_features():
    for name in ("loss_attention", "attention", "instance_max", "minet_ds", "minet_rc"):
        with pytest.raises(ValueError, match="needs in_features"):
            lossattn.create_model(name)


@pytest.mark.parametrize("name", sorted(SIGMOID_MODELS))
def test_sigmoid_head_is_binary(name):
    with pytest.raises(ValueError, match=r"sigmoid head is binary \(num_classes=2\), got num_classes=3"):
        lossattn.create_model(name, in_features=4, num_classes=3)


def test_explicit_sigmoid_head_on_a_softmax_model():
    model = lossattn.create_model("instance_mean", in_features=4, head="sigmoid")
    assert model.head == "sigmoid" and model.classifier.out_features == 1
    with pytest.raises(ValueError, match="sigmoid head is binary"):
        lossattn.create_model("attention", in_features=4, num_classes=4, head="sigmoid")


def test_bad_head_classes_reduction_lambda():
    with pytest.raises(ValueError, match="unknown head 'tanh'; valid heads: softmax, sigmoid"):
        lossattn.create_model("attention", in_features=4, head="tanh")
    with pytest.raises(ValueError, match="num_classes must be >= 2, got 1"):
        lossattn.create_model("loss_attention", in_features=4, num_classes=1)
    with pytest.raises(ValueError, match="reductions must be one of"):
        lossattn.create_model("loss_attention", in_features=4, reduction="median")
    with pytest.raises(ValueError, match="lam \\(λ\\) must be a finite number >= 0"):
        lossattn.create_model("loss_attention", in_features=4, lam=-0.1)
    with pytest.raises(ValueError, match="unknown pooling 'sum'; valid poolings: max, mean"):
        lossattn.create_model("minet_rc", in_features=4, pool="sum")


def test_custom_extractor_module():
    class Widener(nn.Module):
        out_features = 7

        def forward(self, x):
            return torch.cat([x.flatten(1), x.flatten(1)[:, :1]], dim=1)

    model = lossattn.create_model("loss_attention", extractor=Widener(), num_classes=3)
    out = model(torch.randn(2, 4, 6))
    assert out.bag_logits.shape == (2, 3)

    with pytest.raises(TypeError, match="must expose `out_features`"):
        lossattn.create_model("attention", extractor=nn.Identity())


def test_register_model_and_duplicates():
    reg = Registry("widget")

    @reg.register("box", "a box")
    def box(size=1):
        return ("box", size)

    assert reg.create("box", size=3) == ("box", 3)
    assert reg.names() == ["box"] and "box" in reg and reg.describe("box") == "a box"
    with pytest.raises(ValueError, match="widget 'box' is already registered"):
        reg.register("box")(box)
    with pytest.raises(ValueError, match="unknown widget 'bag'; valid widgets: box"):
        reg.get("bag")
    # the global registry refuses to overwrite a built-in model
    with pytest.raises(ValueError, match="model 'loss_attention' is already registered"):
        lossattn.register_model("loss_attention")(lambda **kw: None)
    assert set(lossattn.list_models()) >= EXPECTED_MODELS


def test_description_defaults_to_docstring():
    reg = Registry("widget")

    @reg.register("doc")
    def doc():
        """First line.

        More.
        """

    assert reg.describe("doc") == "First line."
