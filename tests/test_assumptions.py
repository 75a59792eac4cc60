"""check_assumptions: mi-Net (max of instance scores) passes the poisoned tests by construction, shortcut-taking
models fail them; the verdict rule, the model list and the Markdown table."""

from __future__ import annotations

import math

import pytest
import torch

import lossattn
from lossattn.assumptions import assumptions_markdown, check_assumptions, model_variants, verdict

# small and fast: a few seconds per test on one CPU core
SMALL = {"quick": True, "seeds": (0, 1), "epochs": 12, "num_train_bags": 80, "num_test_bags": 120}


def _linear_mean(in_features: int) -> torch.nn.Module:
    """Linear classifier of the mean instance: the poison (all coordinates at -10) moves the mean far more
    than the concept does, so it is learnt as negative evidence."""
    return lossattn.create_model("embedding_mean", in_features=in_features, extractor="identity")


def test_mi_net_passes_and_mean_pooling_fails_the_poisoned_tests() -> None:
    """mi-Net (``minet_instance``) scores instances and max-pools one sigmoid logit: adding an instance can only
    raise the bag score, so the poison cannot be evidence for the negative class (the standard assumption);
    reversing it at test time cannot hurt. It cannot express "A and B" either, so on the two-concept test it
    only has to stay clear of failure."""
    report = check_assumptions(
        models=["minet_instance", ("linear_mean", _linear_mean)], tests=["single_concept", "multi_concept"], **SMALL
    )
    res = report["results"]
    good = res["minet_instance"]["single_concept"]
    assert good["verdict"] == "pass", good
    assert min(good["test_auc"]) > 0.75
    two = res["minet_instance"]["multi_concept"]
    assert two["verdict"] != "fail" and two["auc_mean"] > 0.6, two
    for test in ("single_concept", "multi_concept"):
        bad = res["linear_mean"][test]
        assert bad["verdict"] == "fail", bad
        assert max(bad["test_auc"]) < 0.2  # it took the shortcut: far below chance once it is reversed
        assert min(bad["val_auc"]) > 0.95  # ... while the shortcut made the training split easy
    assert len(good["test_auc"]) == len(good["test_accuracy"]) == 2
    assert good["chance_auc"] == 0.5 and good["pass_criterion"]


def test_two_class_softmax_instance_max_can_use_negative_evidence() -> None:
    """The registered ``instance_max`` pools the two class logits separately (``max_t z_t0`` and
    ``max_t z_t1``), so a high class-0 logit on the poison votes the bag negative: it is not protected by
    construction, and it takes the shortcut."""
    report = check_assumptions(models=["instance_max"], tests=["single_concept"], **SMALL)
    entry = report["results"]["instance_max"]["single_concept"]
    assert entry["verdict"] == "fail" and max(entry["test_auc"]) < 0.2


def test_report_keys_settings_and_rng_isolation() -> None:
    torch.manual_seed(123)
    before = torch.get_rng_state()
    report = check_assumptions(models=[("linear_mean", _linear_mean)], tests=["false_frequency"], **SMALL)
    assert torch.equal(before, torch.get_rng_state())  # the caller's global torch RNG is untouched
    assert set(report) == {"paper", "settings", "verdict_rule", "tests", "results", "seconds"}
    s = report["settings"]
    assert (s["epochs"], s["num_train_bags"], s["num_test_bags"], s["seeds"]) == (12, 80, 120, [0, 1])
    assert s["quick"] is True and s["batch_size"] == 8
    entry = report["results"]["linear_mean"]["false_frequency"]
    assert entry["auc_mean"] == pytest.approx(sum(entry["test_auc"]) / 2)
    again = check_assumptions(models=[("linear_mean", _linear_mean)], tests=["false_frequency"], **SMALL)
    assert again["results"]["linear_mean"]["false_frequency"]["test_auc"] == entry["test_auc"]  # seeded


def test_verdict_rule() -> None:
    assert verdict([0.9, 0.8, 0.85], [0.9, 0.9, 0.9])[0] == "pass"
    assert verdict([0.1, 0.2, 0.3], [1.0, 1.0, 1.0])[0] == "fail"
    assert verdict([0.5, 0.5], [1.0, 1.0])[0] == "fail"  # at chance fails
    assert verdict([0.9, 0.55], [1.0, 1.0])[0] == "inconclusive"  # one seed below chance + margin
    v, reason = verdict([0.1, 0.1], [0.52, 0.55])
    assert v == "inconclusive" and "did not fit" in reason  # learnt nothing, not even the shortcut
    assert verdict([float("nan")], [0.9])[0] == "inconclusive"
    assert verdict([0.65, 0.65], [0.9, 0.9], margin=0.2)[0] == "inconclusive"


def test_model_variants() -> None:
    variants = model_variants()
    bag_models = lossattn.list_models(task="single_label", input_kind="instances")
    assert not any(v.startswith("resnet18") or v.endswith("multilabel") for v in variants)  # not binary bag models
    assert {f"loss_attention[lam={lam}]" for lam in ("0", "0.1", "1", "10")} <= set(variants)
    assert set(variants) - {v for v in variants if v.startswith("loss_attention[")} == set(bag_models) - {
        "loss_attention"
    }
    model = variants["loss_attention[lam=10]"](7)
    assert model.lam == 10.0 and model.num_classes == 2
    assert model_variants(["attention"])["attention"](5).attention is not None
    with pytest.raises(ValueError, match="unknown model 'nope'"):
        model_variants(["nope"])
    with pytest.raises(ValueError, match="image model"):
        model_variants(["resnet18_mean"])
    with pytest.raises(ValueError, match="lam_values"):
        model_variants(["loss_attention"], lam_values=())
    with pytest.raises(ValueError, match="twice"):
        model_variants(["attention", ("attention", _linear_mean)])
    with pytest.raises(TypeError, match="entry"):
        model_variants([3])


def test_bad_arguments() -> None:
    with pytest.raises(ValueError, match="tests"):
        check_assumptions(models=["attention"], tests=["nope"], quick=True)
    with pytest.raises(ValueError, match="seeds"):
        check_assumptions(models=["attention"], seeds=(), quick=True)
    with pytest.raises(ValueError, match="epochs"):
        check_assumptions(models=["attention"], epochs=0, quick=True)
    with pytest.raises(ValueError, match="test_kwargs"):
        check_assumptions(
            models=["attention"], tests=["single_concept"], test_kwargs={"false_frequency": {}}, quick=True
        )


def test_markdown_table() -> None:
    report = check_assumptions(
        models=[("linear_mean", _linear_mean)], tests=["single_concept"], **{**SMALL, "seeds": (0,)}
    )
    md = assumptions_markdown(report)
    lines = md.splitlines()
    assert lines[0] == "| model | single_concept |" and lines[1] == "|---|---|"
    entry = report["results"]["linear_mean"]["single_concept"]
    assert math.isnan(entry["auc_std"])  # one seed: no spread, no "±"
    assert lines[2] == f"| `linear_mean` | {entry['auc_mean']:.2f} {entry['verdict']} |"
    assert "Rule:" in md and "quick" in md and "2310.17867" in md
    with pytest.raises(ValueError, match="missing keys"):
        assumptions_markdown({"results": {}})


def test_jobs_must_be_positive() -> None:
    with pytest.raises(ValueError, match="jobs must be a positive integer"):
        check_assumptions(models=["attention"], jobs=0, quick=True)


def test_progress_callback_counts_runs_and_estimates_time_left() -> None:
    events = []
    check_assumptions(
        models=[("linear_mean", _linear_mean)], tests=["single_concept", "false_frequency"], on_result=events.append,
        **{**SMALL, "epochs": 2},
    )  # fmt: skip
    assert [(e["test"], e["done"], e["total"]) for e in events] == [("single_concept", 2, 4), ("false_frequency", 4, 4)]
    assert events[-1]["eta"] == 0.0 and events[0]["eta"] >= 0.0 and events[0]["entry"]["verdict"]


@pytest.mark.slow
def test_worker_processes_give_the_same_results() -> None:
    """Each run is seeded by its own seed: where it runs (here or a worker, one thread each) does not matter."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as in the workers: float sums in the same order
    kwargs = {
        **SMALL,
        "epochs": 3,
        "models": ["minet_instance", ("linear_mean", _linear_mean)],
        "tests": ["single_concept"],
    }
    serial = check_assumptions(**kwargs)["results"]
    parallel = check_assumptions(**kwargs, jobs=2)["results"]
    torch.set_num_threads(threads)
    for label in serial:
        assert serial[label]["single_concept"]["test_auc"] == parallel[label]["single_concept"]["test_auc"]
