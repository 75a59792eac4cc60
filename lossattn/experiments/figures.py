"""Figures 2 and 3 of the paper: instance retrieval by attention weight on MNIST-bags (Shi et al. 2020, Sec. 5).

With 50 training bags, the instances of the target digits are the relevant ones; at each threshold
τ ∈ {0.9, 0.8, …, 0.1} the instances with weight α > τ are retrieved and precision, recall and F-score are
computed (pooled over the test bags of a run, averaged over runs).

* Figure 2 — per method with weights (Attention, Gated-Attention, Loss-Attention; the binary task adds the
  sigmoid variants).
* Figure 3 — Loss-Attention across λ ∈ {0, 1e-4, 1e-3, 1e-2, 1e-1, 1, 10, 100}. The paper's shape:
  larger λ → higher recall at large τ (and slightly lower precision); λ > 0 beats λ = 0 on F-score.

Each writes ``<name>.json`` (every run record and the curves), ``<name>.md`` (the numbers, the protocol
and what the paper shows) and ``<name>.png`` (precision / recall / F-score against τ, the paper's style).
Runs go through :func:`~lossattn.protocols.fanout.run_experiment` (validation-based model selection,
resumable, ``jobs`` processes).

``quick=True`` is a reduced version for smoke tests on a CPU in minutes: digits-bags (scikit-learn's 8×8
digits, no download) instead of MNIST, an MLP extractor, fewer epochs and test bags. It is labelled as such
in every output.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from lossattn.io import atomic_write_json, atomic_write_text
from lossattn.metrics import DEFAULT_THRESHOLDS
from lossattn.protocols.comparison import result_markdown
from lossattn.protocols.config import ExperimentConfig, MethodConfig, apply_overrides, load_preset
from lossattn.protocols.fanout import run_experiment

__all__ = [
    "FIGURE3_LAMBDAS",
    "QUICK_FIGURE",
    "figure_config",
    "lambda_label",
    "reproduce_figure2",
    "reproduce_figure3",
    "retrieval_curves",
    "figure_markdown",
]

FIGURE3_LAMBDAS: tuple[float, ...] = (0.0, 1e-4, 1e-3, 1e-2, 1e-1, 1.0, 10.0, 100.0)
FIGURE2_METHODS = {
    "multiclass": ("attention", "gated_attention", "loss_attention"),
    "binary": ("attention_sigmoid", "gated_attention_sigmoid", "attention", "gated_attention", "loss_attention"),
}

# the quick variant: digits-bags instead of MNIST-bags; minutes on two CPU cores
QUICK_FIGURE: dict[str, Any] = {
    "protocol.repeats": 3,
    "train.epochs": 20,
    "data.test_kwargs.num_bags": 300,
}

_PAPER_SHAPE = {
    "figure2": (
        "Paper (Figure 2, MNIST-bags, 50 training bags): Loss-Attention keeps a higher recall and F-score than "
        "Attention and Gated-Attention as the threshold τ grows, at a comparable precision."
    ),
    "figure3": (
        "Paper (Figure 3): larger λ gives higher recall at large τ (and slightly lower precision); every λ > 0 "
        "beats λ = 0 on F-score."
    ),
}


def lambda_label(lam: float) -> str:
    """Method label of one λ: ``lam_0``, ``lam_1e-04``, ``lam_0.1``, ``lam_10``."""
    if lam == 0:
        return "lam_0"
    if abs(lam) < 1e-2:
        return f"lam_{lam:.0e}"
    return f"lam_{lam:g}"


def figure_config(
    figure: str,
    *,
    task: str = "multiclass",
    quick: bool = False,
    lams: Sequence[float] = FIGURE3_LAMBDAS,
    methods: Sequence[str] | None = None,
    num_bags: int = 50,
    overrides: dict[str, Any] | None = None,
) -> ExperimentConfig:
    """The experiment behind a figure (``"figure2"`` or ``"figure3"``)."""
    if figure not in ("figure2", "figure3"):
        raise ValueError(f"unknown figure {figure!r}; valid: figure2, figure3")
    if task not in FIGURE2_METHODS:
        raise ValueError(f"unknown task {task!r}; valid tasks: {', '.join(FIGURE2_METHODS)}")
    if quick:
        cfg = load_preset("digits_bags")
        settings: dict[str, Any] = {
            **QUICK_FIGURE,
            "data.name": "digits-bags-multi" if task == "multiclass" else "digits-bags",
        }
    else:
        cfg = load_preset("mnist_bags_multiclass" if task == "multiclass" else "mnist_bags_binary")
        settings = {}
    settings["data.kwargs.num_bags"] = int(num_bags)
    cfg = apply_overrides(cfg, settings)
    template = cfg.methods.get("loss_attention") or next(iter(cfg.methods.values()))
    shared = {k: v for k, v in template.kwargs.items() if k in ("extractor", "extractor_kwargs")}
    if figure == "figure2":
        wanted = list(methods) if methods else list(FIGURE2_METHODS[task])
        chosen: dict[str, MethodConfig] = {}
        for m in wanted:
            if m in cfg.methods:
                chosen[m] = cfg.methods[m]
            else:  # e.g. the sigmoid variants on digits-bags: same extractor as the preset's methods
                chosen[m] = MethodConfig(model=m, kwargs=dict(shared))
        cfg.methods = chosen
    else:
        if not lams:
            raise ValueError("figure3 needs at least one λ")
        la = cfg.methods.get("loss_attention")
        base = dict(la.kwargs) if la is not None else {**shared, "reduction": "mean"}
        cfg.methods = {
            lambda_label(float(lam)): MethodConfig(model="loss_attention", kwargs={**base, "lam": float(lam)})
            for lam in lams
        }
    cfg.name = f"{figure}_{task}" + ("_quick" if quick else "")
    if overrides:
        cfg = apply_overrides(cfg, overrides)
    return cfg.validate()


def retrieval_curves(result: dict[str, Any]) -> dict[str, dict[str, dict[str, float]]]:
    """method → τ (str) → mean ``{precision, recall, f1}`` over the runs of a :func:`run_experiment` result."""
    curves = {}
    for method, entry in result["summary"].items():
        if entry.get("instance_retrieval"):
            curves[method] = entry["instance_retrieval"]
    return curves


def _run(
    figure: str,
    out_dir: str | Path,
    cfg: ExperimentConfig,
    *,
    quick: bool,
    jobs: int,
    scheduler: str | None,
    resume: bool,
    progress: bool,
    legend: dict[str, str],
    legend_title: str | None,
    reference: str | None = None,
    paired_test: str = "wilcoxon",
) -> dict[str, Any]:
    from lossattn.plots import plot_retrieval_curves

    out = Path(out_dir)
    result = run_experiment(
        cfg, out / "runs", jobs=jobs, scheduler=scheduler, resume=resume, progress=progress, reference=reference,
        paired_test=paired_test,
    )  # fmt: skip
    curves = retrieval_curves(result)
    if not curves:
        raise ValueError(f"{figure}: no run produced instance weights with known instance labels")
    bag_metric = {
        m: {"accuracy": e["accuracy"]["mean"], "accuracy_std": e["accuracy"]["std"], "auc": e["auc"]["mean"]}
        for m, e in result["summary"].items()
    }
    report = {
        "figure": figure,
        "quick": quick,
        "dataset": cfg.data.name,
        "num_train_bags": cfg.data.kwargs.get("num_bags"),
        "protocol": result["protocol"],
        "thresholds": list(DEFAULT_THRESHOLDS),
        "curves": curves,
        "labels": legend,
        "bag_metrics": bag_metric,
        "experiment": result,
    }
    atomic_write_json(out / f"{figure}.json", report)
    atomic_write_text(out / f"{figure}.md", figure_markdown(report))
    title = (
        f"{'Figure 2' if figure == 'figure2' else 'Figure 3'} — instance retrieval on {cfg.data.name}, "
        f"{cfg.data.kwargs.get('num_bags')} training bags" + (" (QUICK: smoke-test settings)" if quick else "")
    )
    plot_retrieval_curves(
        {legend.get(m, m): c for m, c in curves.items()},
        out / f"{figure}.png",
        title=title,
        legend_title=legend_title,
    )
    report["files"] = {k: str(out / f"{figure}.{k}") for k in ("json", "md", "png")}
    return report


def reproduce_figure2(
    out_dir: str | Path,
    *,
    task: str = "multiclass",
    methods: Sequence[str] | None = None,
    repeats: int | None = None,
    overrides: dict[str, Any] | None = None,
    quick: bool = False,
    jobs: int = 1,
    scheduler: str | None = None,
    resume: bool = True,
    root: str | None = None,
    progress: bool = False,
    reference: str | None = None,
    paired_test: str = "wilcoxon",
) -> dict[str, Any]:
    """Figure 2: instance retrieval precision / recall / F-score against τ per method (50 training bags).

    Args:
        out_dir: Output folder (``figure2.{json,md,png}`` and ``runs/``).
        task: ``"multiclass"`` (targets 3/5/9, the default) or ``"binary"`` (target 9).
        methods: Methods with weights to compare (default: every one of the task's preset).
        repeats: Number of repeats (default: the preset's 5; quick: 3).
        overrides: Extra ``key=value`` overrides of the experiment.
        quick: digits-bags, MLP, 20 epochs, 3 repeats, 300 test bags: a smoke test, not a result.
        jobs / scheduler: Fan-out of the runs (see :func:`~lossattn.protocols.fanout.run_experiment`).
        resume: Reuse finished runs in ``out_dir``.
        root: Data root.
        progress: Progress bar over runs.
        reference / paired_test: The bag-level paired comparison of every method with ``reference`` (default:
            the first method) over the same repeats (:func:`~lossattn.protocols.comparison.compare_methods`).
    """
    settings = dict(overrides or {})
    if repeats is not None:
        settings["protocol.repeats"] = int(repeats)
    if root is not None:
        settings["data.root"] = root
    cfg = figure_config("figure2", task=task, quick=quick, methods=methods, overrides=settings)
    names = {
        "attention": "Attention",
        "gated_attention": "Gated-Attention",
        "attention_sigmoid": "Attention+sigmoid",
        "gated_attention_sigmoid": "Gated-Attention+sigmoid",
        "loss_attention": "Loss-Attention",
    }
    legend = {m: names.get(m, m) for m in cfg.methods}
    return _run("figure2", out_dir, cfg, quick=quick, jobs=jobs, scheduler=scheduler, resume=resume,
                progress=progress, legend=legend, legend_title=None, reference=reference,
                paired_test=paired_test)  # fmt: skip


def reproduce_figure3(
    out_dir: str | Path,
    *,
    lams: Sequence[float] = FIGURE3_LAMBDAS,
    task: str = "multiclass",
    repeats: int | None = None,
    overrides: dict[str, Any] | None = None,
    quick: bool = False,
    jobs: int = 1,
    scheduler: str | None = None,
    resume: bool = True,
    root: str | None = None,
    progress: bool = False,
    reference: str | None = None,
    paired_test: str = "wilcoxon",
) -> dict[str, Any]:
    """Figure 3: Loss-Attention's instance retrieval against τ for each λ (50 training bags).

    Arguments as :func:`reproduce_figure2`, plus ``lams`` (the λ values, default the paper's eight).
    """
    settings = dict(overrides or {})
    if repeats is not None:
        settings["protocol.repeats"] = int(repeats)
    if root is not None:
        settings["data.root"] = root
    cfg = figure_config("figure3", task=task, quick=quick, lams=lams, overrides=settings)
    legend = {lambda_label(float(lam)): f"{float(lam):g}" for lam in lams}
    return _run("figure3", out_dir, cfg, quick=quick, jobs=jobs, scheduler=scheduler, resume=resume,
                progress=progress, legend=legend, legend_title="λ", reference=reference,
                paired_test=paired_test)  # fmt: skip


def _f(value: Any) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "–"
    return f"{value:.3f}"


def _retrieval_cell(point: dict[str, Any], metric: str) -> str:
    text = _f(point.get(metric))
    runs, retrieving = point.get("runs"), point.get("runs_retrieving")
    if metric == "precision" and runs is not None and retrieving is not None and retrieving < runs:
        text += f" ({retrieving}/{runs})"
    return text


def figure_markdown(report: dict[str, Any]) -> str:
    """The Markdown report of a figure: P/R/F per τ for each curve, bag metrics, protocol, paper's shape."""
    figure = report["figure"]
    legend = report.get("labels", {})
    curves = report["curves"]
    head = "Figure 2 — instance retrieval per method" if figure == "figure2" else "Figure 3 — Loss-Attention across λ"
    lines = [f"# {head}", ""]
    if report.get("quick"):
        lines += [
            "**QUICK smoke-test settings (digits-bags 8×8 digits, MLP extractor, few epochs): not the paper's "
            "experiment and not a result.**",
            "",
        ]
    lines += [
        f"Data: {report['dataset']}, {report.get('num_train_bags')} training bags (before the validation split).",
        "",
        f"Protocol: {report['protocol']}",
        "",
        "Relevant instances: those of the target digits. Retrieved: weight α > τ. Counts pooled over the test",
        "bags of a run; each cell is the mean over runs. Precision is averaged over the runs that retrieved",
        "anything at that τ; where some retrieved nothing, the cell says how many of the runs did (k/n).",
        "",
        _PAPER_SHAPE[figure],
        "",
    ]
    taus = [str(float(t)) for t in report["thresholds"]]
    key = "λ" if figure == "figure3" else "method"
    for metric, title in (("precision", "Precision"), ("recall", "Recall"), ("f1", "F-score")):
        lines += [f"## {title}", "", f"| {key} | " + " | ".join(f"τ={t}" for t in taus) + " |"]
        lines.append("|---" * (len(taus) + 1) + "|")
        for m, by_tau in curves.items():
            cells = [_retrieval_cell(by_tau.get(t, {}), metric) for t in taus]
            lines.append(f"| {legend.get(m, m)} | " + " | ".join(cells) + " |")
        lines.append("")
    lines += ["## Bag classification (test, mean ± std over runs)", "", f"| {key} | accuracy | AUC |", "|---|---|---|"]
    for m, b in report["bag_metrics"].items():
        lines.append(f"| {legend.get(m, m)} | {_f(b['accuracy'])} ± {_f(b['accuracy_std'])} | {_f(b['auc'])} |")
    lines.append("")
    lines += result_markdown(report.get("experiment") or {})
    return "\n".join(lines) + "\n"
