"""Configs: presets load and validate, overrides apply with types, bad keys and values raise clearly."""

from __future__ import annotations

import pytest
import yaml

from lossattn.protocols import ExperimentConfig, apply_overrides, config_to_dict, list_presets, load_config, load_preset


def test_every_preset_loads_and_validates():
    names = list_presets()
    assert {"classic_mil", "mnist_bags_binary", "mnist_bags_multiclass", "cifar10_bags", "digits_bags"} <= set(names)
    for name in names:
        cfg = load_preset(name)
        assert isinstance(cfg, ExperimentConfig) and cfg.methods


def test_paper_hyperparameters_in_presets():
    t1 = load_preset("classic_mil")
    assert (t1.train.lr, t1.train.weight_decay, t1.train.epochs, t1.train.batch_size) == (1e-4, 5e-4, 100, 1)
    assert t1.methods["loss_attention"].kwargs == {"lam": 0.1, "reduction": "mean"}
    assert (t1.protocol.folds, t1.protocol.repeats) == (10, 5)
    mb = load_preset("mnist_bags_binary")
    assert (mb.train.lr, mb.train.weight_decay, mb.train.epochs) == (5e-4, 1e-4, 30)
    assert mb.methods["loss_attention"].kwargs["lam"] == 2.0
    assert load_preset("mnist_bags_multiclass").train.epochs == 50
    cb = load_preset("cifar10_bags")
    la = cb.train_config_for("loss_attention")
    assert la.consistency_rampup == 40 and la.consistency_weight > 0
    assert cb.train_config_for("attention").consistency_weight == 0
    assert (cb.train.rampdown_length, cb.train.rampdown_c, cb.train.betas) == (30, 7.5, (0.9, 0.99))


def test_overrides_apply_with_types():
    cfg = apply_overrides(
        load_preset("classic_mil"),
        [
            "train.lr=3e-4",
            "protocol.folds=5",
            "data.name=fox",
            "methods.loss_attention.kwargs.lam=1",
            "train.betas=[0.8, 0.9]",
        ],
    )
    assert cfg.train.lr == pytest.approx(3e-4) and isinstance(cfg.train.lr, float)
    assert cfg.protocol.folds == 5 and cfg.data.name == "fox"
    assert cfg.methods["loss_attention"].kwargs["lam"] == 1
    assert cfg.train.betas == (0.8, 0.9)


def test_method_subset_override():
    cfg = apply_overrides(load_preset("classic_mil"), {"methods": ["loss_attention", "attention"]})
    assert list(cfg.methods) == ["loss_attention", "attention"]
    with pytest.raises(ValueError, match="not in this preset"):
        apply_overrides(load_preset("classic_mil"), {"methods": ["nope"]})


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("train.lrr=1", "unknown key.*lrr.*valid keys"),
        ("train.epochs=ten", "train.epochs must be an integer"),
        ("train.lr=-1", "lr must be in \\(0, 1\\]"),
        ("protocol.kind=bootstrap", "kind must be one of cv, fixed, all"),
        ("train.amp=maybe", "must be true or false"),
        ("nonsense", "key=value"),
        ("bogus.key=1", "unknown config key 'bogus'"),
    ],
)
def test_bad_overrides_raise_clear_errors(override, message):
    with pytest.raises(ValueError, match=message):
        apply_overrides(load_preset("classic_mil"), [override])


def test_unknown_model_and_preset():
    with pytest.raises(ValueError, match="unknown model 'no_such'.*valid models"):
        apply_overrides(load_preset("classic_mil"), ["methods.loss_attention.model=no_such"])
    with pytest.raises(ValueError, match="unknown preset 'nope'; valid presets"):
        load_preset("nope")


def test_resolved_config_round_trips_through_yaml(tmp_path):
    cfg = apply_overrides(load_preset("cifar10_bags"), ["train.lr=2e-3"])
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(config_to_dict(cfg)))
    again = load_config(path)
    assert config_to_dict(again) == config_to_dict(cfg)


def test_bad_yaml_file(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("train: [unclosed")
    with pytest.raises(ValueError, match="not valid YAML"):
        load_config(path)
