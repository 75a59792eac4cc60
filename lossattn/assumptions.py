"""Run registered MIL models through the algorithmic unit tests of Raff & Holt (NeurIPS 2023).

:func:`check_assumptions` trains every model on the *training* bags of each test of
:data:`lossattn.datasets.ASSUMPTION_TESTS` (a stratified validation split for model selection is carved
from those training bags only), scores the *test* bags, whose shortcut is reversed, and gives a verdict
per (model, test). :func:`assumptions_markdown` renders the report as a README table.

Verdict rule (per model and test, over the seeds; ``chance`` = 0.5 test AUC):

* ``inconclusive`` when the mean *validation* AUC is below ``chance + fit_margin``: the model did not fit the
  training distribution (shortcut included), so the test bags cannot tell what it learned;
* ``fail`` when the mean *test* AUC is at or below ``chance`` -- the paper's failure signature: the
  reversed shortcut drags the model to or below chance;
* ``pass`` when *every* seed's test AUC is at least ``chance + margin``;
* ``inconclusive`` otherwise (above chance on average, but not on every seed by the margin).

With ``quick=False`` each model is trained with the classic-MIL settings of Shi et al. (2020), Table 1
(MLP extractor, Adam lr 1e-4, weight decay 5e-4, one bag per step, 100 epochs; attention width 64,
Loss-Attention with the "mean" instance-loss reduction) on 500 training and 500 test bags per seed: 1-4
minutes a run on one CPU core (measured at 20 epochs: 10-52 s), roughly 3-10 hours for every bag model ×
3 tests × 3 seeds.
``quick=True`` is a smoke-scale run of every registered bag model (see :data:`QUICK_SETTINGS`): about 1.5
minutes for all of them, 3 tests and 3 seeds on 2 CPU cores. ``jobs`` runs the (model, test, seed) runs in worker
processes; the command line is ``lossattn check-assumptions``.
"""

from __future__ import annotations

import math
import sys
import time
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch

from lossattn.datasets import ASSUMPTION_TESTS, train_val_split
from lossattn.datasets.assumptions import PAPER
from lossattn.engine import TrainConfig, Trainer
from lossattn.models.registry import create_model, list_models, model_tags

__all__ = [
    "FULL_SETTINGS",
    "QUICK_SETTINGS",
    "DEFAULT_LAMBDAS",
    "VERDICT_RULE",
    "check_assumptions",
    "assumptions_markdown",
    "model_variants",
    "verdict",
]

FULL_SETTINGS: dict[str, Any] = {
    "epochs": 100,
    "batch_size": 1,
    "lr": 1e-4,
    "weight_decay": 5e-4,
    "num_train_bags": 500,
    "num_test_bags": 500,
    "val_fraction": 0.2,
}
# a smoke-scale run: every registered bag model through every test on 2 CPU cores in a few minutes.
# Larger steps (lr 1e-3, 8 bags a step) so that 15 epochs over 80 training bags fit the training split.
QUICK_SETTINGS: dict[str, Any] = {
    "epochs": 15,
    "batch_size": 8,
    "lr": 1e-3,
    "weight_decay": 5e-4,
    "num_train_bags": 100,
    "num_test_bags": 200,
    "val_fraction": 0.2,
}
DEFAULT_LAMBDAS: tuple[float, ...] = (0.0, 0.1, 1.0, 10.0)
# the per-model arguments of the classic-MIL comparison (Shi et al. 2020, Table 1)
_USUAL_KWARGS: dict[str, dict[str, Any]] = {
    "attention": {"hidden": 64},
    "gated_attention": {"hidden": 64},
    "attention_sigmoid": {"hidden": 64},
    "gated_attention_sigmoid": {"hidden": 64},
    "loss_attention": {"reduction": "mean"},
}
_CHANCE = 0.5
_MARGIN = 0.1
_FIT_MARGIN = 0.1
VERDICT_RULE = (
    "over the seeds: inconclusive if mean validation AUC < chance + {fit_margin} (did not fit the training "
    "split); else fail if mean test AUC <= chance ({chance}); else pass if every seed's test AUC >= chance + "
    "{margin}; else inconclusive"
)

ModelFactory = Callable[[int], torch.nn.Module]
ModelEntry = str | tuple[str, ModelFactory]


def _is_checkable(name: str) -> bool:
    # the tests are binary bag problems: single-label models that take instances
    return model_tags(name) == {"task": "single_label", "input_kind": "instances"}


def model_variants(
    models: Sequence[ModelEntry] | None = None, lam_values: Sequence[float] = DEFAULT_LAMBDAS
) -> dict[str, ModelFactory]:
    """Label → ``factory(in_features) -> model`` for the models to check.

    Args:
        models: Registered model names and/or ``(label, factory)`` pairs, ``factory(in_features)`` returning
            a :class:`~lossattn.models.MILModel`. None: every registered single-label bag model (image and
            multi-label models are skipped: the tests are binary bag problems). ``"loss_attention"`` becomes one
            variant per λ in ``lam_values``, labelled ``loss_attention[lam=λ]``.
        lam_values: The λ values of Loss-Attention.

    Raises:
        ValueError: An unknown, image or multi-label model name, a duplicate label, or no λ for Loss-Attention.
        TypeError: An entry that is neither a name nor a ``(label, callable)`` pair.
    """
    names = list_models()
    if models is None:
        models = [n for n in names if _is_checkable(n)]
    lams = [float(v) for v in lam_values]
    out: dict[str, ModelFactory] = {}

    def add(label: str, factory: ModelFactory) -> None:
        if label in out:
            raise ValueError(f"models: the label {label!r} occurs twice")
        out[label] = factory

    for entry in models:
        if isinstance(entry, str):
            if entry not in names:
                raise ValueError(f"models: unknown model {entry!r}; valid models: {', '.join(names)}")
            if not _is_checkable(entry):
                tags = model_tags(entry)
                kind = "an image model" if tags["input_kind"] == "image" else "a multi-label model"
                raise ValueError(
                    f"models: {entry!r} is {kind} ({tags}); these tests are binary bag problems for single-label "
                    "models that take instances"
                )
            kwargs = _USUAL_KWARGS.get(entry, {})
            if entry == "loss_attention":
                if not lams or any(not math.isfinite(v) or v < 0 for v in lams):
                    raise ValueError(f"lam_values must be one or more finite numbers >= 0, got {list(lam_values)}")
                for lam in lams:
                    add(f"loss_attention[lam={lam:g}]", _registered(entry, {**kwargs, "lam": lam}))
            else:
                add(entry, _registered(entry, kwargs))
        elif isinstance(entry, tuple) and len(entry) == 2 and isinstance(entry[0], str) and callable(entry[1]):
            add(entry[0], entry[1])
        else:
            raise TypeError(f"models: each entry must be a model name or a (label, factory) pair, got {entry!r}")
    return out


def _registered(name: str, kwargs: dict[str, Any]) -> ModelFactory:
    def factory(in_features: int) -> torch.nn.Module:
        return create_model(name, in_features=in_features, num_classes=2, **kwargs)

    return factory


def verdict(
    test_aucs: Sequence[float],
    val_aucs: Sequence[float],
    *,
    chance: float = _CHANCE,
    margin: float = _MARGIN,
    fit_margin: float = _FIT_MARGIN,
) -> tuple[str, str]:
    """``("pass" | "fail" | "inconclusive", reason)`` by :data:`VERDICT_RULE` (NaN values are ignored)."""
    test = np.asarray([v for v in test_aucs if v is not None and math.isfinite(v)], dtype=np.float64)
    val = np.asarray([v for v in val_aucs if v is not None and math.isfinite(v)], dtype=np.float64)
    if test.size == 0:
        return "inconclusive", "no finite test AUC"
    if val.size and val.mean() < chance + fit_margin:
        return "inconclusive", (
            f"did not fit the training split: mean validation AUC {val.mean():.3f} < {chance + fit_margin:.2f}"
        )
    if test.mean() <= chance:
        return "fail", f"mean test AUC {test.mean():.3f} <= chance {chance:.2f}"
    if test.min() >= chance + margin:
        return "pass", f"every seed's test AUC >= {chance + margin:.2f} (lowest {test.min():.3f})"
    return "inconclusive", (
        f"mean test AUC {test.mean():.3f} above chance, but the lowest seed ({test.min():.3f}) is below "
        f"{chance + margin:.2f}"
    )


def check_assumptions(
    models: Sequence[ModelEntry] | None = None,
    tests: Sequence[str] | None = None,
    seeds: Sequence[int] = (0, 1, 2),
    quick: bool = False,
    epochs: int | None = None,
    progress: bool = False,
    lam_values: Sequence[float] = DEFAULT_LAMBDAS,
    *,
    num_train_bags: int | None = None,
    num_test_bags: int | None = None,
    test_kwargs: dict[str, dict[str, Any]] | None = None,
    margin: float = _MARGIN,
    fit_margin: float = _FIT_MARGIN,
    jobs: int = 1,
    on_result: Callable[[dict[str, Any]], None] | None = None,
) -> dict[str, Any]:
    """Train each model on each test's training bags for a few seeds and judge it on the test bags.

    Per seed ``s``: training bags ``generator("train", s)`` and test bags ``generator("test", s)``; a
    stratified 20 % of the training bags is held out (``train_val_split(..., seed=s)``) for the Trainer's
    epoch selection (lowest validation error, then loss); the model is initialised and trained with seed ``s``.

    Args:
        models: See :func:`model_variants` (None: every registered bag model).
        tests: Names in :data:`lossattn.datasets.ASSUMPTION_TESTS` (None: all).
        seeds: Seeds (data and model); at least one.
        quick: Use :data:`QUICK_SETTINGS` instead of :data:`FULL_SETTINGS`.
        epochs: Overrides the number of epochs.
        progress: Print one line per (model, test) to stderr, with the runs done and an estimated time left.
        lam_values: λ values of Loss-Attention.
        num_train_bags: Overrides the number of training bags (before the validation split).
        num_test_bags: Overrides the number of test bags.
        test_kwargs: Extra generator arguments per test name (e.g. ``{"single_concept": {"dim": 8}}``).
        margin: Pass margin above chance (see :data:`VERDICT_RULE`).
        fit_margin: Validation-AUC margin above chance below which the verdict is inconclusive.
        jobs: Worker processes (joblib/loky) running the (model, test, seed) runs in parallel, each with one
            torch thread; 1 runs them here, with the caller's threads. A run's result does not depend on where
            it runs, up to float rounding from the number of threads.
        on_result: Called after each (model, test) is complete with ``{"label", "test", "entry", "done",
            "total", "elapsed", "eta"}`` (runs done / planned, seconds so far, estimated seconds left).

    Returns:
        ``{"paper", "settings", "verdict_rule", "tests", "results", "seconds"}``; ``results[label][test]``
        holds per-seed ``test_auc``, ``test_accuracy``, ``val_auc``, ``selected_epoch``, ``seconds`` lists,
        ``auc_mean``, ``auc_std``, ``accuracy_mean``, ``accuracy_std`` (std over seeds, ddof=1; NaN for one
        seed), ``chance_auc``, ``chance_accuracy``, ``pass_criterion``, ``verdict`` and ``reason``.

    Raises:
        ValueError: Unknown test or model names, no seeds, bad sizes, epochs or jobs.
    """
    if isinstance(jobs, bool) or not isinstance(jobs, int) or jobs < 1:
        raise ValueError(f"jobs must be a positive integer (worker processes), got {jobs!r}")
    test_names = list(ASSUMPTION_TESTS) if tests is None else list(tests)
    bad = [t for t in test_names if t not in ASSUMPTION_TESTS]
    if bad or not test_names:
        raise ValueError(f"tests: unknown or no tests {bad or test_names}; valid tests: {', '.join(ASSUMPTION_TESTS)}")
    seed_list = [int(s) for s in seeds]
    if not seed_list:
        raise ValueError("seeds: give at least one seed")
    extra = dict(test_kwargs or {})
    unknown = sorted(set(extra) - set(test_names))
    if unknown:
        raise ValueError(f"test_kwargs: keys {unknown} are not among the tests run ({', '.join(test_names)})")
    settings = dict(QUICK_SETTINGS if quick else FULL_SETTINGS)
    for key, value in (("epochs", epochs), ("num_train_bags", num_train_bags), ("num_test_bags", num_test_bags)):
        if value is not None:
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{key} must be a positive integer, got {value!r}")
            settings[key] = value
    if settings["num_train_bags"] < 10:
        raise ValueError(f"num_train_bags must be >= 10 (a validation split is carved from them), got {num_train_bags}")
    variants = model_variants(models, lam_values)
    config = TrainConfig(
        epochs=settings["epochs"],
        batch_size=settings["batch_size"],
        lr=settings["lr"],
        weight_decay=settings["weight_decay"],
        eval_batch_size=256,
    )
    start = time.perf_counter()
    data = {
        (t, s): _split_data(t, s, settings, extra.get(t, {})) for t in test_names for s in seed_list
    }  # generated once, shared by all models
    units = [(label, t, s) for label in variants for t in test_names for s in seed_list]
    results: dict[str, dict[str, Any]] = {label: {} for label in variants}
    pending: dict[tuple[str, str], list[dict[str, float]]] = {}
    for done, ((label, t, _), run) in enumerate(
        zip(units, _map_runs(units, variants, data, config, jobs), strict=True), 1
    ):
        pending.setdefault((label, t), []).append(run)
        if len(pending[(label, t)]) < len(seed_list):
            continue
        entry = _summarize(pending.pop((label, t)), ASSUMPTION_TESTS[t], margin, fit_margin)
        results[label][t] = entry
        elapsed = time.perf_counter() - start
        eta = elapsed / done * (len(units) - done)
        if progress:
            print(
                f"{label:<28} {t:<16} AUC {entry['auc_mean']:.3f} ± {entry['auc_std']:.3f}  "
                f"{entry['verdict']:<12} ({sum(entry['seconds']):.1f}s)  [{done}/{len(units)} runs, "
                f"{_clock(elapsed)} elapsed, ~{_clock(eta)} left]",
                file=sys.stderr,
                flush=True,
            )
        if on_result is not None:
            on_result(
                {"label": label, "test": t, "entry": entry, "done": done, "total": len(units), "elapsed": elapsed,
                 "eta": eta}
            )  # fmt: skip
    return {
        "paper": PAPER,
        "settings": {
            **settings,
            "quick": bool(quick),
            "seeds": seed_list,
            "lam_values": [float(v) for v in lam_values],
            "test_kwargs": extra,
            "standardize": False,
            "jobs": jobs,
        },
        "verdict_rule": VERDICT_RULE.format(chance=_CHANCE, margin=margin, fit_margin=fit_margin),
        "tests": {
            t: {
                "algorithm": ASSUMPTION_TESTS[t].algorithm,
                "assumption": ASSUMPTION_TESTS[t].assumption,
                "shortcut": ASSUMPTION_TESTS[t].shortcut,
                "chance_auc": ASSUMPTION_TESTS[t].chance_auc,
                "chance_accuracy": ASSUMPTION_TESTS[t].chance_accuracy,
                "pass_criterion": ASSUMPTION_TESTS[t].pass_criterion,
            }
            for t in test_names
        },
        "results": results,
        "seconds": time.perf_counter() - start,
    }


def _split_data(test: str, seed: int, settings: dict[str, Any], kwargs: dict[str, Any]):
    gen = ASSUMPTION_TESTS[test].generator
    full_train = gen("train", seed, num_bags=settings["num_train_bags"], **kwargs)
    test_set = gen("test", seed, num_bags=settings["num_test_bags"], **kwargs)
    tr, va = train_val_split(full_train.labels, val_fraction=settings["val_fraction"], seed=seed)
    return full_train.subset(tr), full_train.subset(va), test_set


def _clock(seconds: float) -> str:
    seconds = int(round(seconds))
    return (
        f"{seconds // 3600}:{seconds // 60 % 60:02d}:{seconds % 60:02d}"
        if seconds >= 3600
        else (f"{seconds // 60}:{seconds % 60:02d}")
    )


def _map_runs(units, variants: dict[str, ModelFactory], data, config: TrainConfig, jobs: int):
    """The runs of ``units`` in order: here one after another, or in ``jobs`` loky workers (one thread each)."""
    if jobs == 1:
        for label, t, s in units:
            yield _run(variants[label], *data[(t, s)], config, s)
        return
    from joblib import Parallel, delayed

    work = (delayed(_run)(variants[label], *data[(t, s)], config, s, 1) for label, t, s in units)
    yield from Parallel(n_jobs=jobs, backend="loky", return_as="generator")(work)


def _run(
    factory: ModelFactory, train, val, test, config: TrainConfig, seed: int, threads: int | None = None
) -> dict[str, float]:
    if threads is not None:  # a worker process: one thread, so that `jobs` workers share the cores
        torch.set_num_threads(threads)
    with torch.random.fork_rng(devices=[]):  # leave the caller's global torch RNG untouched
        torch.manual_seed(seed)  # model initialisation
        model = factory(train.num_features)
        result = Trainer(model, config, seed=seed).fit(train, val, test)
    return {
        "test_auc": float(result.test.auc),
        "test_accuracy": float(result.test.accuracy),
        "val_auc": float(result.val.auc),
        "selected_epoch": int(result.selected_epoch),
        "seconds": float(result.seconds),
    }


def _mean_std(values: list[float]) -> tuple[float, float]:
    arr = np.asarray([v for v in values if math.isfinite(v)], dtype=np.float64)
    if arr.size == 0:
        return float("nan"), float("nan")
    return float(arr.mean()), float(arr.std(ddof=1)) if arr.size > 1 else float("nan")


def _summarize(runs: list[dict[str, float]], test, margin: float, fit_margin: float) -> dict[str, Any]:
    entry: dict[str, Any] = {key: [r[key] for r in runs] for key in runs[0]}
    entry["auc_mean"], entry["auc_std"] = _mean_std(entry["test_auc"])
    entry["accuracy_mean"], entry["accuracy_std"] = _mean_std(entry["test_accuracy"])
    entry["chance_auc"] = test.chance_auc
    entry["chance_accuracy"] = test.chance_accuracy
    entry["pass_criterion"] = test.pass_criterion
    entry["verdict"], entry["reason"] = verdict(
        entry["test_auc"], entry["val_auc"], chance=test.chance_auc, margin=margin, fit_margin=fit_margin
    )
    return entry


def assumptions_markdown(report: dict[str, Any]) -> str:
    """A Markdown table of a :func:`check_assumptions` report: model rows × test columns.

    Each cell is ``mean ± std`` of the test ROC AUC over the seeds and the verdict (``±`` omitted for one
    seed); notes below the table give the verdict rule and the settings.

    Raises:
        ValueError: ``report`` lacks ``results``, ``tests`` or ``settings``.
    """
    missing = [k for k in ("results", "tests", "settings") if k not in report]
    if missing:
        raise ValueError(f"report: missing keys {missing}; pass the dict returned by check_assumptions")
    tests = list(report["tests"])
    lines = [
        "| model | " + " | ".join(tests) + " |",
        "|---|" + "---|" * len(tests),
    ]
    for label, row in report["results"].items():
        cells = []
        for t in tests:
            e = row.get(t)
            if e is None:
                cells.append("—")
                continue
            spread = "" if not math.isfinite(e["auc_std"]) else f" ± {e['auc_std']:.2f}"
            cells.append(f"{e['auc_mean']:.2f}{spread} {e['verdict']}")
        lines.append(f"| `{label}` | " + " | ".join(cells) + " |")
    s = report["settings"]
    lines += [
        "",
        f"Cells: test ROC AUC, mean ± std over seeds {s['seeds']} (chance 0.5), and the verdict. "
        f"Rule: {report['verdict_rule']}.",
        f"Settings: {'quick' if s['quick'] else 'full'}; {s['num_train_bags']} training bags per seed "
        f"({s['val_fraction']:.0%} held out for epoch selection), {s['num_test_bags']} test bags, {s['epochs']} "
        f"epochs, batch {s['batch_size']}, Adam lr {s['lr']:g}, weight decay {s['weight_decay']:g}.",
        f"Tests: {PAPER}.",
    ]
    return "\n".join(lines) + "\n"
