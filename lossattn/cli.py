"""The ``lossattn`` command: demo, train, cv, evaluate, predict, explain, reproduce, data, models, presets.

Every subcommand is a thin layer over the library (:mod:`lossattn.train`, :mod:`lossattn.datasets`,
:mod:`lossattn.predict`, :mod:`lossattn.plots`). User mistakes (unknown names, missing data, bad
overrides, a checkpoint that does not fit the data) end with one ``error:`` line and a ``hint:`` line on
stderr and exit code 2; ``--debug`` shows the traceback instead.
"""

from __future__ import annotations

import argparse
import inspect
import math
import os
import sys
import time
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

__all__ = ["main", "build_parser", "format_table"]

PROG = "lossattn"

EPILOG_MAIN = """\
examples:
  lossattn demo                                   # under a minute on a CPU, no download
  lossattn data list                              # datasets and where their files are looked for
  lossattn train --dataset musk1 --model loss_attention --lam 0.1
  lossattn cv --preset classic_mil --dataset fox --jobs 2
  lossattn predict runs/digits_bags/train/loss_attention/r0 digits-bags-multi --out preds/
  lossattn explain runs/digits_bags/train/loss_attention/r0 digits-bags-multi --out pictures/ --bags 4
  lossattn reproduce figure3 --quick
  lossattn <command> --help                       # options of one command

User errors exit with code 2 and one 'error:' line plus a 'hint:' line; add --debug for a traceback.
"""


# =========================================================================== errors and output


class CLIError(ValueError):
    """A user mistake detected by the command line itself, with a hint."""

    def __init__(self, message: str, hint: str | None = None) -> None:
        super().__init__(message)
        self.hint = hint


_HINTS: list[tuple[tuple[str, ...], str]] = [
    (("unknown model", "uses unknown model"), "`lossattn models` lists the registered models"),
    (("unknown preset",), "`lossattn presets` lists the presets"),
    (
        ("unknown dataset", "no file or folder"),
        "`lossattn data list` shows the known datasets; your own bags: a folder with manifest.csv or a CSV/Parquet table",
    ),
    (
        ("unknown config key", "override", "unknown key", "must be a", "must be an", "must be true", "cannot use"),
        "overrides look like --set section.key=value (e.g. --set train.lr=1e-3); `lossattn presets --show NAME` "
        "prints every key",
    ),
    (
        ("expects instances of shape", "expects", "do not fit model", "classes but the model"),
        "use bags like the ones the checkpoint was trained on, or train a model on this data first",
    ),
    (("checkpoint",), "give the run folder of a finished `lossattn train` run, or its best.pt"),
    (("is not a fixed benchmark", "is a generator"), "generated datasets are made on the fly: just name them"),
]


def _error_lines(exc: BaseException) -> tuple[str, str]:
    """One error line and one hint line for a user mistake."""
    from lossattn.datasets import DataNotFoundError

    text = str(exc).strip() or type(exc).__name__
    if isinstance(exc, KeyError) and len(exc.args) == 1 and isinstance(exc.args[0], str):
        text = exc.args[0]
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    message = lines[0] if lines else type(exc).__name__
    hint = getattr(exc, "hint", None)
    if hint:
        return message, hint
    if isinstance(exc, DataNotFoundError) and len(lines) > 1:
        rest = [line for line in lines[1:] if not line.startswith(("/", "~")) and not line[:2].endswith(":\\")]
        return message.rstrip(":").removesuffix(". Looked for"), " ".join(rest) or lines[-1]
    lowered = text.lower()
    for keys, h in _HINTS:
        if any(k in lowered for k in keys):
            return message, h
    if len(lines) > 1:
        return message, " ".join(lines[1:])
    return message, "run the command again with --debug to see where it failed"


def _fmt(value: Any, digits: int = 3) -> str:
    if value is None:
        return "–"
    if isinstance(value, float):
        if math.isnan(value):
            return "–"
        return f"{value:.{digits}f}"
    return str(value)


def _pm(summary: dict[str, Any] | None) -> str:
    if not summary or not summary.get("n") or summary.get("mean") is None or math.isnan(summary["mean"]):
        return "–"
    return f"{summary['mean']:.3f} ± {summary['std']:.3f}"


def format_table(headers: Sequence[str], rows: Sequence[Sequence[Any]], align: str | None = None) -> str:
    """A plain-text table; ``align`` is one character per column (``l``/``r``; numbers right by default)."""
    cells = [[_fmt(c) for c in row] for row in rows]
    widths = [max([len(str(h))] + [len(r[i]) for r in cells]) for i, h in enumerate(headers)]
    if align is None:
        align = "".join(
            "r" if cells and all(_numberish(r[i]) for r in cells) and i > 0 else "l" for i in range(len(headers))
        )

    def line(values: Sequence[str]) -> str:
        out = []
        for i, v in enumerate(values):
            out.append(v.rjust(widths[i]) if align[i] == "r" else v.ljust(widths[i]))
        return "  ".join(out).rstrip()

    sep = "  ".join("-" * w for w in widths)
    return "\n".join([line([str(h) for h in headers]), sep, *(line(r) for r in cells)])


def _kv_table(rows: Sequence[Sequence[Any]], indent: str = "  ") -> str:
    """``key  value`` lines, keys aligned (no header)."""
    width = max(len(str(k)) for k, _ in rows)
    return "\n".join(f"{indent}{str(k).ljust(width)}  {_fmt(v)}" for k, v in rows)


def _wrap(text: str, width: int = 100) -> str:
    import textwrap

    return "\n".join(textwrap.wrap(text, width)) if text else ""


def _numberish(text: str) -> bool:
    t = text.replace("±", "").replace(" ", "").replace("–", "0").replace("%", "").replace("s", "")
    try:
        float(t.split("±")[0] if "±" in text else t)
        return True
    except ValueError:
        return False


def _say(text: str = "") -> None:
    print(text, flush=True)


def _progress_enabled(args: argparse.Namespace) -> bool:
    return not getattr(args, "no_progress", False)


# =========================================================================== experiment configs

DEFAULT_PRESETS = {
    "musk1": "classic_mil",
    "musk2": "classic_mil",
    "fox": "classic_mil",
    "tiger": "classic_mil",
    "elephant": "classic_mil",
    "mnist-bags": "mnist_bags_binary",
    "mnist-bags-multi": "mnist_bags_multiclass",
    "cifar10-bags": "cifar10_bags",
    "digits-bags": "digits_bags",
    "digits-bags-multi": "digits_bags",
}
FALLBACK_PRESET = "digits_bags"  # no dataset named: the no-download toy problem
USER_DATA_PRESET = "classic_mil"  # the user's own feature bags: MLP extractor, standardised, 10-fold CV


def default_preset(dataset: str | None) -> str:
    """The preset used when none is named: by dataset (benchmark → classic_mil, MNIST-bags → table 2 ...)."""
    if dataset is None:
        return FALLBACK_PRESET
    return DEFAULT_PRESETS.get(dataset, USER_DATA_PRESET)


_SHORT_NAMES = {
    "digits-bags": "digits_binary",
    "digits-bags-multi": "digits_multi",
    "mnist-bags": "mnist_binary",
    "mnist-bags-multi": "mnist_multi",
    "cifar10-bags": "cifar10",
}


def _family(name: str) -> str:
    """Which loader a dataset name uses (kwargs are only kept within one family)."""
    from lossattn.train.data import BENCHMARKS, GENERATORS

    if name in GENERATORS:
        return GENERATORS[name][0]
    if name in BENCHMARKS:
        return "benchmark"
    return "path:" + name


def _model_kwargs_for(model: str, template: dict[str, Any]) -> dict[str, Any]:
    """The extractor settings of ``template`` that ``model``'s builder accepts."""
    from lossattn.registry import MODELS, list_models

    list_models()
    params = inspect.signature(MODELS.get(model)).parameters
    return {k: v for k, v in template.items() if k in ("extractor", "extractor_kwargs", "hidden") and k in params}


def _select_methods(cfg, spec: str | None, command: str):
    """Keep the methods named by ``--model`` (labels or model names); add registered models not in the preset."""
    from lossattn.registry import list_models
    from lossattn.train.config import MethodConfig

    if spec is None:
        if command == "train" and len(cfg.methods) > 1:
            keep = "loss_attention" if "loss_attention" in cfg.methods else next(iter(cfg.methods))
            cfg.methods = {keep: cfg.methods[keep]}
        return cfg
    names = [n.strip() for n in spec.split(",") if n.strip()]
    if not names:
        raise CLIError("--model is empty", "name a model, e.g. --model loss_attention, or --model all")
    if names == ["all"]:
        return cfg
    template = next(iter(cfg.methods.values())).kwargs
    la = [m for m in cfg.methods.values() if m.model == "loss_attention"]
    chosen = {}
    for name in names:
        if name in cfg.methods:
            chosen[name] = cfg.methods[name]
            continue
        same = [label for label, m in cfg.methods.items() if m.model == name]
        if same:
            chosen[same[0]] = cfg.methods[same[0]]
            continue
        if name not in list_models():
            raise CLIError(
                f"unknown model {name!r}; valid models: {', '.join(list_models())}",
                "`lossattn models` lists the registered models with a description",
            )
        kwargs = _model_kwargs_for(name, (la[0].kwargs if la else template))
        if name == "loss_attention" and la:
            kwargs = dict(la[0].kwargs)
        chosen[name] = MethodConfig(model=name, kwargs=kwargs)
    cfg.methods = chosen
    return cfg


def _device(value: str | None) -> str | None:
    if value is None:
        return None
    if value == "auto":
        import torch

        return "cuda" if torch.cuda.is_available() else "cpu"
    return value


def build_experiment(args: argparse.Namespace, command: str):
    """The :class:`~lossattn.train.ExperimentConfig` described by the options of train/cv."""
    from lossattn.predict import resolve_dataset_name
    from lossattn.train.config import apply_overrides, config_to_dict, load_config, load_preset

    dataset = resolve_dataset_name(args.dataset) if args.dataset else None
    saved = Path(args.out) / "config.yaml" if args.out else None
    if args.config:
        cfg = load_config(args.config)
        base_name = cfg.name
    elif args.preset:
        cfg = load_preset(args.preset)
        base_name = args.preset
    elif args.resume and saved is not None and saved.is_file() and dataset is None:
        cfg = load_config(saved)  # resume what was started in this folder
        base_name = cfg.name
    else:
        base_name = None  # chosen by dataset
        cfg = load_preset(default_preset(dataset))
    overrides: dict[str, Any] = {}
    if dataset is not None and dataset != cfg.data.name:
        overrides["data.name"] = dataset
        if _family(dataset) != _family(cfg.data.name):
            overrides["data.kwargs"] = {}
            overrides["data.test_kwargs"] = {}
        short = _SHORT_NAMES.get(dataset) or Path(dataset).stem.replace("-", "_")
        cfg.name = short if base_name is None else f"{base_name}_{short}"
    if getattr(args, "epochs", None) is not None:
        overrides["train.epochs"] = args.epochs
    if getattr(args, "lr", None) is not None:
        overrides["train.lr"] = args.lr
    if getattr(args, "batch_size", None) is not None:
        overrides["train.batch_size"] = args.batch_size
    if getattr(args, "seed", None) is not None:
        overrides["protocol.seed"] = args.seed
    if getattr(args, "device", None) is not None:
        overrides["train.device"] = _device(args.device)
    if getattr(args, "data_dir", None) is not None:
        overrides["data.root"] = str(Path(args.data_dir).expanduser())
    if overrides:
        cfg = apply_overrides(cfg, overrides)
    cfg = _select_methods(cfg, args.model, command)
    if args.lam is not None:
        targets = [m for m in cfg.methods.values() if m.model == "loss_attention"]
        if not targets:
            raise CLIError(
                "--lam sets λ of Loss-Attention, but no loss_attention method is selected",
                "add --model loss_attention (or drop --lam)",
            )
        for m in targets:
            m.kwargs["lam"] = float(args.lam)
    cfg.validate()
    if args.overrides:
        cfg = apply_overrides(cfg, list(args.overrides))
    if cfg.data.name.endswith("-images"):
        raise CLIError(
            f"{cfg.name} is an image-classification preset ({cfg.data.name}); train/cv run bag datasets",
            "run it with `lossattn reproduce table4` (CIFAR-10) or `lossattn reproduce table5` (Tiny ImageNet)",
        )
    cfg.train.progress = _progress_enabled(args) and command == "train"
    if args.out is None:
        args.out = str(Path("runs") / cfg.name / command)
    saved = Path(args.out) / "config.yaml"
    if args.resume and saved.is_file():
        _check_resume(load_config(saved), cfg, saved, config_to_dict)
    return cfg


def _check_resume(old, new, path: Path, to_dict: Callable) -> None:
    """``--resume`` into a folder made with other settings would mix runs: refuse."""
    a, b = to_dict(old), to_dict(new)
    for d in (a, b):
        for key in ("progress", "device", "threads"):
            d["train"].pop(key, None)
        d["data"].pop("root", None)
    # a resumed train run may use a subset of the methods of the folder
    if set(b["methods"]) <= set(a["methods"]):
        a["methods"] = {k: a["methods"][k] for k in b["methods"]}
    if a != b:
        diff = [k for k in a if a.get(k) != b.get(k)]
        raise CLIError(
            f"--resume: {path} was written with different settings ({', '.join(diff)} differ)",
            "resume with the same options, or write to a new --out folder",
        )


# =========================================================================== demo


def cmd_demo(args: argparse.Namespace) -> int:
    from lossattn.plots import ImageBag, plot_image_bags
    from lossattn.predict import TrainedModel, load_trained, predict_bags
    from lossattn.train.config import apply_overrides, load_preset
    from lossattn.train.io import atomic_write_json, atomic_write_text
    from lossattn.train.protocols import RunSpec, execute_run, prepare_split

    start = time.perf_counter()
    out = Path(args.out)
    cfg = load_preset("digits_bags")
    overrides: dict[str, Any] = {}
    if args.epochs is not None:
        overrides["train.epochs"] = args.epochs
    if args.bags is not None:
        overrides["data.kwargs.num_bags"] = args.bags
    if args.test_bags is not None:
        overrides["data.test_kwargs.num_bags"] = args.test_bags
    if args.seed is not None:
        overrides["protocol.seed"] = args.seed
    if args.device is not None:
        overrides["train.device"] = _device(args.device)
    if overrides:
        cfg = apply_overrides(cfg, overrides)
    cfg.train.progress = _progress_enabled(args)
    labels = {"attention": "Attention", "loss_attention": "Loss-Attention"}
    methods = [m for m in ("attention", "loss_attention") if m in cfg.methods]
    _say(
        f"lossattn demo: Attention vs Loss-Attention on digits-bags (scikit-learn's 8x8 digits, no download);\n"
        f"targets 3/5/9 -> bag labels 1/2/3, {cfg.data.kwargs.get('num_bags')} training bags "
        f"({int(round(cfg.protocol.val_fraction * 100))}% for validation), "
        f"{cfg.data.test_kwargs.get('num_bags')} test bags, {cfg.train.epochs} epochs."
    )
    records: dict[str, dict[str, Any]] = {}
    for i, method in enumerate(methods, 1):
        _say(f"[{i}/{len(methods)}] training {labels[method]} ...")
        records[method] = execute_run(cfg, RunSpec(method, 0), out / "runs")
    _, _, test = prepare_split(cfg, 0, None)
    models: dict[str, TrainedModel] = {m: load_trained(out / "runs" / m / "r0" / "best.pt") for m in methods}
    preds = {m: predict_bags(models[m], test, batch_size=cfg.train.eval_batch_size) for m in methods}

    rows = []

    def retrieval(rec: dict[str, Any], key: str) -> float | None:
        r = (rec.get("instance_retrieval") or {}).get("0.5")
        return None if r is None else r[key]

    for name, getter in (
        ("bag accuracy", lambda r: r["test_accuracy"]),
        ("bag AUC (one-vs-rest)", lambda r: r["test_auc"]),
        ("instance precision @ τ=0.5", lambda r: retrieval(r, "precision")),
        ("instance recall @ τ=0.5", lambda r: retrieval(r, "recall")),
        ("instance F-score @ τ=0.5", lambda r: retrieval(r, "f1")),
        ("selected epoch (validation)", lambda r: r["selected_epoch"] + 1),
        ("training time (s)", lambda r: f"{r['seconds']:.1f}"),
    ):
        rows.append([name, *(getter(records[m]) for m in methods)])
    table = format_table(["test set", *(labels[m] for m in methods)], rows)

    # a few test bags, one of each class where possible, with both methods' weights
    chosen = _demo_bags(test, preds, int(args.show))
    raw = test
    bags = []
    for idx in chosen:
        bag = raw[idx]
        cls = test.class_names[bag.label] if test.class_names else str(bag.label)
        what = f"digit {cls}" if bag.label > 0 else "no target digit"
        guesses = ", ".join(f"{labels[m]}: {int(preds[m].predicted[idx])}" for m in methods)
        bags.append(
            ImageBag(
                images=bag.x,
                weights={labels[m]: preds[m].weights[idx] for m in reversed(methods) if preds[m].weights is not None},
                title=f"{bag.name}: label {bag.label} ({what})   predicted: {guesses}",
                instance_labels=bag.instance_labels.numpy(),
            )
        )
    png = out / "demo_bags.png"
    plot_image_bags(bags, png, title="digits-bags test bags: instance weights α (red frame = target digit)")
    report = {"preset": cfg.name, "methods": records, "table": rows, "seconds": time.perf_counter() - start}
    atomic_write_json(out / "results.json", report)
    md = [
        "# lossattn demo — Attention vs Loss-Attention on digits-bags",
        "",
        "```",
        table,
        "```",
        "",
        f"Protocol: {cfg.train.epochs} epochs, model selection on validation bags only; "
        "instance retrieval: instances with α > τ against the target-digit instances.",
        "",
        f"![test bags]({png.name})",
        "",
    ]
    atomic_write_text(out / "summary.md", "\n".join(md))
    _say("")
    _say(table)
    _say("")
    _say(f"Wrote {out}/:")
    _say(f"  demo_bags.png  {len(bags)} test bags, every instance tile annotated with its weight α per method")
    _say("  summary.md     the table above;  results.json: every number")
    width = max(len(f"runs/{m}/r0/") for m in methods)
    for m in methods:
        _say(f"  {f'runs/{m}/r0/'.ljust(width)}  checkpoint best.pt, per-epoch metrics.csv, config.yaml")
    _say(f"Done in {time.perf_counter() - start:.0f} s.")
    la = out / "runs" / "loss_attention" / "r0"
    _say(f"Next: lossattn explain {la} digits-bags-multi --out {out / 'explain'}")
    return 0


def _demo_bags(test, preds, n: int) -> list[int]:
    """Up to ``n`` test bags: one per class (label 1, 2, 3, then 0), bags of typical size first."""
    import numpy as np

    labels = np.asarray(test.labels)
    sizes = np.asarray(test.bag_sizes)
    order = np.argsort(np.abs(sizes - 9), kind="stable")
    chosen: list[int] = []
    classes = [c for c in range(1, int(labels.max()) + 1)] + [0]
    for c in classes:
        for i in order:
            if labels[i] == c and int(i) not in chosen:
                chosen.append(int(i))
                break
        if len(chosen) >= n:
            break
    for i in order:
        if len(chosen) >= n:
            break
        if int(i) not in chosen:
            chosen.append(int(i))
    return chosen[:n]


# =========================================================================== train / cv


def _split_text(cfg, spec) -> str:
    if spec.fold is None:
        return f"fixed split, repeat {spec.repeat}"
    return f"fold {spec.fold + 1}/{cfg.protocol.folds} of repeat {spec.repeat}"


def cmd_train(args: argparse.Namespace) -> int:
    from lossattn.train.protocols import RunSpec, run_experiment

    cfg = build_experiment(args, "train")
    fold = None
    if cfg.protocol.kind == "cv":
        fold = args.fold if args.fold is not None else 0
        if not 0 <= fold < cfg.protocol.folds:
            raise CLIError(
                f"--fold {fold} is out of range for {cfg.protocol.folds}-fold cross-validation",
                f"use --fold 0 .. {cfg.protocol.folds - 1}",
            )
    elif args.fold is not None:
        raise CLIError(
            "--fold only applies to cross-validation presets", "drop --fold (this preset uses a fixed split)"
        )
    repeat = args.repeat or 0
    if not 0 <= repeat < cfg.protocol.repeats:
        cfg.protocol.repeats = repeat + 1
    specs = [RunSpec(m, repeat, fold) for m in cfg.methods]
    out = Path(args.out)
    _say(
        f"Training {', '.join(cfg.methods)} on {cfg.data.name} ({_split_text(cfg, specs[0])}), "
        f"{cfg.train.epochs} epochs -> {out}"
    )
    result = run_experiment(cfg, out, jobs=args.jobs, resume=args.resume, runs=specs)
    headers = ["method", "test acc", "test AUC", "val acc", "epoch", "P@0.5", "R@0.5", "F@0.5", "time (s)"]
    rows = []
    for r in result["runs"]:
        ret = (r.get("instance_retrieval") or {}).get("0.5") or {}
        rows.append(
            [
                r["method"],
                r["test_accuracy"],
                r["test_auc"],
                r.get("val_accuracy"),
                r["selected_epoch"] + 1,
                ret.get("precision"),
                ret.get("recall"),
                ret.get("f1"),
                f"{r['seconds']:.1f}",
            ]
        )
    first = result["runs"][0]
    _say(
        f"\nbags: {first['n_train']} train / {first['n_val']} validation / {first['n_test']} test; "
        "epoch selected on validation error, then loss (P/R/F: instance retrieval α > 0.5)"
    )
    _say(format_table(headers, rows))
    _say("")
    for spec in specs:
        _say(f"Wrote {out / spec.method / spec.key}/ (best.pt, metrics.csv, result.json, config.yaml)")
    run = out / specs[-1].method / specs[-1].key
    _say(f"Next: lossattn evaluate {run}   |   lossattn predict {run} DATA --out preds/")
    return 0


def cmd_cv(args: argparse.Namespace) -> int:
    from lossattn.train.io import atomic_write_text
    from lossattn.train.protocols import plan_runs, protocol_description, run_experiment

    cfg = build_experiment(args, "cv")
    out = Path(args.out)
    n = len(plan_runs(cfg))
    _say(f"{cfg.name}: {len(cfg.methods)} method(s) on {cfg.data.name}, {n} runs -> {out}")
    _say(f"Protocol: {protocol_description(cfg)}")
    result = run_experiment(
        cfg, out, jobs=args.jobs, scheduler=args.scheduler, resume=args.resume, progress=_progress_enabled(args)
    )
    oracle = any(e["oracle_accuracy"].get("n") for e in result["summary"].values())
    headers = ["method", "runs", "accuracy", "AUC", *(["oracle acc*"] if oracle else []), "epoch", "time/run (s)"]
    rows = []
    for m, e in result["summary"].items():
        rows.append(
            [
                m,
                e["runs"],
                _pm(e["accuracy"]),
                _pm(e["auc"]),
                *([_pm(e["oracle_accuracy"])] if oracle else []),
                _fmt(e["selected_epoch"]["mean"] + 1, 1),
                _fmt(e["seconds"]["mean"], 1),
            ]
        )
    table = format_table(headers, rows)
    note = "accuracy / AUC on the test bags, mean ± std over runs; epoch: mean selected epoch (validation)"
    if oracle:
        note += "\n* best test accuracy over epochs (the reference code's test-set selection): for comparison only"
    _say("")
    _say(table)
    _say(note)
    md = [f"# {cfg.name}", "", f"Protocol: {result['protocol']}", "", "```", table, "```", "", note, ""]
    atomic_write_text(out / "summary.md", "\n".join(md))
    _say(f"\nWrote {out}/results.json (every run), summary.md, and one folder per run ({out}/<method>/<run>/)")
    return 0


# =========================================================================== evaluate / predict / explain


def _data_dir(args: argparse.Namespace) -> str | None:
    """``--data-dir`` with ``~`` expanded, or None."""
    return None if args.data_dir is None else str(Path(args.data_dir).expanduser())


def _load_checkpoint(args: argparse.Namespace):
    from lossattn.image_predict import is_image_checkpoint
    from lossattn.predict import load_trained

    device = _device(args.device) or "cpu"
    trained = load_trained(args.checkpoint, device=device)
    return trained, device, is_image_checkpoint(trained)


def _load_images(
    args: argparse.Namespace, trained, count: int | None = None, select: str = "first", seed: int | None = None
):
    """The images an image checkpoint (ResNet18-MIL) is evaluated on, predicted and explained."""
    from lossattn.image_predict import load_images

    if args.split == "all":
        raise CLIError("--split all is not defined for image data", "use --split test (default) or --split train")
    data_dir = _data_dir(args)
    inputs = load_images(
        args.data, trained, root=data_dir, split=args.split, count=count, select=select,
        seed=seed if seed is not None else (args.data_seed or 0),
    )  # fmt: skip
    _say(f"Checkpoint: {trained.path}  [{trained.describe()}]")
    _say(f"Data: {inputs.description}")
    return inputs


def _load_for_data(args: argparse.Namespace, trained=None, device=None):
    from lossattn.predict import prepare_data, resolve_data

    if trained is None:
        trained, device, _ = _load_checkpoint(args)
    data_dir = _data_dir(args)
    resolved = resolve_data(
        args.data, trained, root=data_dir, split=args.split, seed=args.data_seed, num_bags=args.num_bags
    )
    ds = prepare_data(trained, resolved)
    return trained, resolved, ds, device


def _evaluate_images(args: argparse.Namespace, trained, device) -> int:
    from lossattn.image_predict import evaluate_image_checkpoint
    from lossattn.train.io import atomic_write_json

    inputs = _load_images(args, trained, count=args.num_bags)
    if inputs.labels is None:
        raise CLIError("these images have no labels: nothing to evaluate against",
                       "evaluate on a labelled dataset (cifar10, tinyimagenet); `lossattn predict` works on unlabelled images")  # fmt: skip
    res = evaluate_image_checkpoint(trained, inputs, batch_size=args.batch_size, device=device)
    metrics: dict[str, Any] = {
        "checkpoint": str(trained.path),
        "data": inputs.description,
        "images": len(inputs.images),
        **{k: v for k, v in res.summary().items() if v is not None},
    }
    _say("")
    shown = [[k, metrics[k]] for k in ("images", "accuracy", "top5", "localization_ap", "loss") if k in metrics]
    _say(format_table(["metric", "value"], shown, align="lr"))
    if args.out:
        path = Path(args.out) / "metrics.json"
        atomic_write_json(path, metrics)
        _say(f"\nWrote {path}")
    return 0


def cmd_evaluate(args: argparse.Namespace) -> int:
    from lossattn.train.io import atomic_write_json
    from lossattn.train.trainer import evaluate

    trained, device, is_image = _load_checkpoint(args)
    if is_image:
        return _evaluate_images(args, trained, device)
    trained, resolved, ds, device = _load_for_data(args, trained, device)
    if int(max(ds.labels)) >= trained.num_classes:
        raise CLIError(
            f"the data has bag labels up to {int(max(ds.labels))} but the model predicts {trained.num_classes} classes",
            "evaluate on data with the classes the checkpoint was trained on",
        )
    _say(f"Checkpoint: {trained.path}  [{trained.describe()}]")
    _say(f"Data: {resolved.description}")
    res = evaluate(trained.model, ds, batch_size=args.batch_size, device=device)
    counts = [int((res.labels == k).sum()) for k in range(trained.num_classes)]
    rows = [
        ["bags", len(ds)],
        ["class counts", " / ".join(str(c) for c in counts)],
        ["accuracy", res.accuracy],
        ["AUC", res.auc],
        ["loss", res.loss],
    ]
    _say("")
    _say(format_table(["metric", "value"], rows, align="lr"))
    metrics: dict[str, Any] = {
        "checkpoint": str(trained.path),
        "data": resolved.description,
        "bags": len(ds),
        **res.summary(),
    }
    retrieval = res.retrieval()
    if retrieval is not None:
        metrics["instance_retrieval"] = {str(t): v for t, v in retrieval.items()}
        rrows = [[f"{t:g}", v["precision"], v["recall"], v["f1"], v["retrieved"]] for t, v in retrieval.items()]
        _say("\ninstance retrieval (α > τ vs. the target instances):")
        _say(format_table(["τ", "precision", "recall", "F-score", "retrieved"], rrows))
    if args.out:
        path = Path(args.out) / "metrics.json"
        atomic_write_json(path, metrics)
        _say(f"\nWrote {path}")
    return 0


def cmd_predict(args: argparse.Namespace) -> int:
    from lossattn.predict import predict_bags, write_bag_csv, write_instance_csv

    trained, device, is_image = _load_checkpoint(args)
    if is_image:
        from lossattn.image_predict import predict_images

        inputs = _load_images(args, trained, count=args.num_bags)
        pred = predict_images(trained, inputs, batch_size=args.batch_size, device=device)
    else:
        trained, resolved, ds, device = _load_for_data(args, trained, device)
        _say(f"Checkpoint: {trained.path}  [{trained.describe()}]")
        _say(f"Data: {resolved.description}")
        pred = predict_bags(trained, ds, batch_size=args.batch_size, device=device, progress=_progress_enabled(args))
    out = Path(args.out)
    bags_csv = write_bag_csv(pred, out / "bags.csv")
    inst_csv = write_instance_csv(pred, out / "instances.csv")
    counts = [int((pred.predicted == k).sum()) for k in range(pred.num_classes)]
    bags, instances = ("images", "feature-map positions") if is_image else ("bags", "instances")
    _say(f"\nPredicted {len(pred)} {bags} ({pred.bag_sizes.sum()} {instances}); predicted class counts: {counts}")
    if pred.labels is not None and int(pred.labels.max()) < pred.num_classes:
        acc = float((pred.labels == pred.predicted).mean())
        _say(f"Accuracy against the labels in the data: {acc:.3f}")
    show = min(5, len(pred))
    rows = [
        [pred.names[i], int(pred.labels[i]) if pred.labels is not None else "", int(pred.predicted[i])]
        + [float(p) for p in pred.probabilities[i]]
        for i in range(show)
    ]
    _say(format_table(["bag", "label", "predicted", *(f"p{k}" for k in range(pred.num_classes))], rows))
    if len(pred) > show:
        _say(f"... ({len(pred) - show} more)")
    _say(f"\nWrote {bags_csv} (one row per {bags[:-1]}) and {inst_csv} (one row per {instances[:-1]}"
         + ("" if pred.weights is not None else "; this model has no instance weights") + ")")  # fmt: skip
    return 0


def _is_image_shape(shape: Sequence[int]) -> bool:
    return len(shape) == 3 and shape[0] in (1, 3, 4) or len(shape) == 2 and min(shape) >= 4


def _instance_scores(pred, i: int) -> tuple[Any, str]:
    """What to draw for bag ``i``: the weights, else the instance probability of the predicted class."""
    if pred.weights is not None:
        return pred.weights[i], "weight α"
    if pred.instance_probabilities is not None:
        k = int(pred.predicted[i])
        if k == 0 and pred.num_classes > 1:
            k = int(pred.instance_probabilities[i][:, 1:].sum(axis=0).argmax()) + 1
        return pred.instance_probabilities[i][:, k], f"instance p(class {k})"
    raise CLIError(
        "this model gives neither instance weights nor instance predictions: nothing to explain",
        "explain a model with weights (loss_attention, attention, gated_attention) or instance outputs",
    )


def _pick_bags(pred, n: int, select: str, seed: int) -> list[int]:
    import numpy as np

    total = len(pred)
    if select == "first":
        return list(range(min(n, total)))
    if select == "random":
        return sorted(np.random.default_rng(seed).choice(total, size=min(n, total), replace=False).tolist())
    positive = [i for i in range(total) if pred.predicted[i] != 0]
    rest = [i for i in range(total) if pred.predicted[i] == 0]
    return (positive + rest)[:n]


def _safe_name(name: str) -> str:
    keep = "".join(c if c.isalnum() or c in "-_." else "_" for c in str(name))
    return keep.strip("._") or "bag"


def _explain_images(args: argparse.Namespace, trained, device) -> int:
    """Feature-map checkpoints: each image beside its weight map upsampled over it."""
    from lossattn.image_predict import predict_images
    from lossattn.plots import plot_weight_map

    select = "first" if args.select == "positive" else args.select  # images have no negative class
    inputs = _load_images(args, trained, count=args.bags, select=select, seed=args.seed)
    pred = predict_images(trained, inputs, batch_size=args.batch_size, device=device)
    label = trained.method or trained.model_name
    kind = "weights" if trained.has_weights else "class activation map"
    names = pred.class_names
    out = Path(args.out)
    written = []
    for i, name in enumerate(pred.names):
        k = int(pred.predicted[i])
        predicted = names[k] if names else str(k)
        truth = ""
        if pred.labels is not None:
            y = int(pred.labels[i])
            truth = f", label {names[y] if names else y}"
        title = f"{label} ({kind}) — {Path(name).name}: predicted {predicted} p={pred.probabilities[i, k]:.2f}{truth}"
        box = None if inputs.boxes is None else inputs.boxes[i]
        path = out / f"image_{i:03d}_{_safe_name(Path(name).stem)}.png"
        plot_weight_map(inputs.images[i], pred.extra["maps"][i], path, title=title, box=box)
        written.append(path)
    _say(f"\nWrote {len(written)} picture(s) to {out}/ (each image beside its {kind} over the "
         f"{pred.extra['grid'][0]}×{pred.extra['grid'][1]} feature map, upsampled; white frame: the peak cell"
         + ("; green: the ground-truth box" if inputs.boxes is not None else "") + "):")  # fmt: skip
    for p in written:
        _say(f"  {p}")
    return 0


def cmd_explain(args: argparse.Namespace) -> int:
    from lossattn.plots import ImageBag, plot_image_bags, plot_ranked_weights
    from lossattn.predict import predict_bags

    if args.bags < 1:
        raise CLIError(f"--bags must be >= 1, got {args.bags}", "e.g. --bags 4")
    trained, device, is_image = _load_checkpoint(args)
    if is_image:
        return _explain_images(args, trained, device)
    trained, resolved, ds, device = _load_for_data(args, trained, device)
    _say(f"Checkpoint: {trained.path}  [{trained.describe()}]")
    _say(f"Data: {resolved.description}")
    pred = predict_bags(trained, ds, batch_size=args.batch_size, device=device, progress=_progress_enabled(args))
    chosen = _pick_bags(pred, args.bags, args.select, args.seed)
    out = Path(args.out)
    raw = resolved.dataset  # draw the instances as loaded, not standardised
    shape = tuple(raw.instance_shape)
    written = []
    label = trained.method or trained.model_name
    images = _is_image_shape(shape)
    panels = []
    for i in chosen:
        scores, what = _instance_scores(pred, i)
        bag = raw[i]
        cls = pred.class_names[int(pred.predicted[i])] if pred.class_names else str(int(pred.predicted[i]))
        title = f"{bag.name}: label {bag.label}, predicted {int(pred.predicted[i])} ({cls}), p={pred.probabilities[i].max():.2f}"
        inst = bag.instance_labels.numpy()
        inst = inst if (inst >= 0).any() else None
        path = out / f"bag_{_safe_name(bag.name)}.png"
        if images:
            key = "α" if pred.weights is not None else "p"
            panel = ImageBag(images=bag.x, weights={key: scores}, title=title, instance_labels=inst)
            panels.append(panel)
            plot_image_bags([panel], path, title=f"{label}: instance weights")
        else:
            plot_ranked_weights(scores, path, instance_labels=inst, title=f"{label} — {title}", ylabel=what)
        written.append(path)
    if images and len(panels) > 1:
        overview = out / "bags.png"
        plot_image_bags(panels, overview, title=f"{label}: instance weights of {len(panels)} bags")
        written.insert(0, overview)
    kind = "image tiles annotated with their weights" if images else "ranked bar charts of the instance weights"
    _say(f"\nWrote {len(written)} picture(s) to {out}/ ({kind}):")
    for p in written:
        _say(f"  {p}")
    return 0


# =========================================================================== reproduce

REPRODUCIBLE = ("table1", "table2", "table3", "table4", "table5", "figure2", "figure3")
IMAGE_TABLES = {
    "table3": "Table 3 (CIFAR10-bags)",
    "table4": "Table 4 (CIFAR-10 image classification)",
    "table5": "Table 5 (Tiny ImageNet)",
}


def _parse_overrides(items: Sequence[str] | None) -> dict[str, Any]:
    from lossattn.train.config import _split_override

    return dict(_split_override(o) for o in (items or []))


def _csv_list(text: str | None) -> list[str] | None:
    if text is None:
        return None
    values = [v.strip() for v in text.split(",") if v.strip()]
    return values or None


def _call_with_supported(func: Callable, *args: Any, **kwargs: Any) -> Any:
    params = inspect.signature(func).parameters
    if not any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values()):
        kwargs = {k: v for k, v in kwargs.items() if k in params}
    return func(*args, **kwargs)


def cmd_reproduce(args: argparse.Namespace) -> int:
    name = args.what
    out = Path(args.out) if args.out else Path("results") / (name + ("_quick" if args.quick else ""))
    overrides = _parse_overrides(args.overrides)
    images = name in IMAGE_TABLES
    if args.epochs is not None and not images:
        overrides["train.epochs"] = args.epochs
    if args.device is not None and not images:
        overrides["train.device"] = _device(args.device)
    data_dir = _data_dir(args)
    common = dict(
        quick=args.quick,
        jobs=args.jobs,
        scheduler=args.scheduler,
        resume=not args.no_resume,
        root=data_dir,
        progress=_progress_enabled(args),
        overrides=overrides or None,
    )
    methods = _csv_list(args.methods)
    _say(f"Reproducing {name}" + (" (QUICK smoke-test settings, not a result)" if args.quick else "") + f" -> {out}")
    if name == "table1":
        from lossattn.train.reproduce import TABLE1_DATASETS, reproduce_table1

        datasets = _csv_list(args.datasets) or list(TABLE1_DATASETS)
        bad = [d for d in datasets if d not in TABLE1_DATASETS]
        if bad:
            raise CLIError(f"unknown Table 1 dataset(s) {bad}; valid: {', '.join(TABLE1_DATASETS)}",
                           "e.g. --datasets musk1,fox")  # fmt: skip
        if args.repeats is not None:
            common["overrides"] = {**(overrides or {}), "protocol.repeats": args.repeats}
        reproduce_table1(out, datasets=datasets, methods=methods, **common)
        files = [out / "table1.md", out / "table1.json"]
    elif name == "table2":
        from lossattn.train.reproduce import reproduce_table2

        tasks = _csv_list(args.task) or ["binary", "multiclass"]
        counts = [int(c) for c in (_csv_list(args.bag_counts) or ["50", "100", "150", "200"])]
        reproduce_table2(out, tasks=tasks, bag_counts=counts, methods=methods, repeats=args.repeats, **common)
        files = [out / "table2.md", out / "table2.json"]
    elif name in ("figure2", "figure3"):
        from lossattn.train import figures

        task = args.task or "multiclass"
        if name == "figure2":
            report = figures.reproduce_figure2(out, task=task, methods=methods, repeats=args.repeats, **common)
        else:
            lams = [float(v) for v in _csv_list(args.lams)] if args.lams else list(figures.FIGURE3_LAMBDAS)
            report = figures.reproduce_figure3(out, lams=lams, task=task, repeats=args.repeats, **common)
        files = [Path(report["files"][k]) for k in ("md", "png", "json")]
    else:
        from lossattn.train import images as image_tables

        func = getattr(image_tables, f"reproduce_{name}")
        extra = {"epochs": args.epochs, "device": _device(args.device)}
        extra = {k: v for k, v in extra.items() if v is not None}
        _call_with_supported(func, out, methods=methods, repeats=args.repeats, **extra, **common)
        files = [p for p in sorted(out.glob(f"{name}.*"))]
    md = next((f for f in files if f.suffix == ".md" and f.is_file()), None)
    if md is not None:
        _say("")
        _say(md.read_text().rstrip())
    _say("\nWrote " + ", ".join(str(f) for f in files))
    return 0


# =========================================================================== data / models / presets


def _spec_name(name: str) -> str:
    from lossattn.datasets.catalog import get_spec
    from lossattn.predict import resolve_dataset_name

    try:
        return get_spec(name).name
    except KeyError:
        pass
    resolved = resolve_dataset_name(name)
    base = resolved.removesuffix("-multi")
    try:
        return get_spec(base).name
    except KeyError as exc:
        raise CLIError(str(exc.args[0]), "`lossattn data list` shows the known datasets") from exc


def _root_source(data_dir: str | None) -> str:
    from lossattn.datasets.sources import ENV_ROOT

    if data_dir:
        return "--data-dir"
    if os.environ.get(ENV_ROOT, "").strip():
        return f"${ENV_ROOT}"
    return f"default cache; set ${ENV_ROOT} or pass --data-dir to change it"


def _counts_text(counts: dict[str, int]) -> str:
    order = ("bags", "positive_bags", "instances", "features", "images", "train_images", "test_images")
    keys = [k for k in order if k in counts] + [k for k in counts if k not in order]
    return ", ".join(f"{counts[k]} {k.replace('_', ' ')}" for k in keys)


def cmd_data_list(args: argparse.Namespace) -> int:
    from lossattn import datasets as D

    root = D.data_root(args.data_dir)
    _say(f"Data root: {root}  ({_root_source(args.data_dir)})")
    _say("Files are looked for at <root>/<dataset>/<file>.\n")
    rows = []
    for name in D.list_datasets():
        info = D.dataset_info(name, args.data_dir)
        status = "yes" if info.present or info.kind == "embedded" else ("no (fetch)" if info.fetchable else "no")
        rows.append([name, info.kind, status, _counts_text(info.counts)])
    _say(format_table(["dataset", "kind", "present", "counts"], rows, align="llll"))
    _say(
        "\nAlso accepted: mnist-bags-multi / digits-bags-multi (targets 3/5/9) and the path of your own feature\n"
        "folder (manifest.csv + one file per bag) or table (CSV/Parquet, one row per instance).\n"
        "present = 'no (fetch)': run `lossattn data fetch NAME`; `lossattn data info NAME` says where files go."
    )
    return 0


def _describe_bags(ds) -> list[list[Any]]:
    import numpy as np

    sizes = np.asarray(ds.bag_sizes)
    counts = ds.class_counts()
    names = getattr(ds, "class_names", None)
    balance = " / ".join(f"{names[k] if names and k < len(names) else k}: {int(c)}" for k, c in enumerate(counts))
    rows = [
        ["bags", len(ds)],
        ["instances", int(sizes.sum())],
        ["instance shape", "×".join(str(s) for s in ds.instance_shape)],
        ["bag size min / mean / max", f"{int(sizes.min())} / {sizes.mean():.1f} / {int(sizes.max())}"],
        ["classes", ds.num_classes],
        ["class balance (bags)", balance],
    ]
    if ds.has_instance_labels and hasattr(ds, "instance_labels"):
        il = np.asarray(ds.instance_labels)
        rows.append(["target instances", f"{int((il > 0).sum())} of {int((il >= 0).sum())} labelled"])
    splits = getattr(ds, "splits", None)
    if splits is not None:
        values, n = np.unique(np.asarray(splits), return_counts=True)
        rows.append(["split column", ", ".join(f"{v}: {c}" for v, c in zip(values, n, strict=True))])
    return rows


def cmd_data_info(args: argparse.Namespace) -> int:
    from lossattn import datasets as D
    from lossattn.predict import resolve_dataset_name
    from lossattn.train.config import DataConfig, load_preset
    from lossattn.train.data import is_generator, load_dataset, make_generated

    resolved = resolve_dataset_name(args.name)
    if Path(resolved).exists() and resolved not in D.list_datasets():
        ds = load_dataset(DataConfig(name=resolved))
        _say(f"{resolved}: your own bags ({type(ds).__name__})\n")
        _say(_kv_table(_describe_bags(ds)))
        return 0
    name = _spec_name(args.name)
    info = D.dataset_info(name, args.data_dir)
    _say(f"{info.name} ({info.kind})")
    _say(_wrap(info.description))
    _say(_wrap(f"Source: {info.source}"))
    if info.counts:
        _say(f"Known counts: {_counts_text(info.counts)}")
    _say(f"Python: {info.usage}")
    if info.kind != "embedded":
        _say(f"\nData root: {info.root}  ({_root_source(args.data_dir)})")
        _say("Accepted files (any one per group; ✓ = present):")
        for f in info.files:
            mark = "✓" if f.present else " "
            _say(f"  [{mark}] {f.path}" + (f"   <- {f.url}" if f.url else ""))
        if info.present:
            _say("Present: yes")
        else:
            where = f"lossattn data fetch {info.name}" + (f" --data-dir {args.data_dir}" if args.data_dir else "")
            _say(f"Present: no. Get it with `{where}`" + (" or place one of the files above." if info.files else "."))
    if args.no_load or not (info.present or info.kind == "embedded"):
        return 0
    if info.kind == "benchmark":
        ds = D.load(info.name, root=args.data_dir)
        _say(f"\nLoaded {ds.meta.get('source_file', info.name)}:")
        _say(_kv_table(_describe_bags(ds)))
        return 0
    # generated sets: the bags a preset makes, as an example of their balance
    gen = resolved if is_generator(resolved) else info.name
    if not is_generator(gen) or gen.startswith("cifar10"):  # decoding 60,000 CIFAR images takes a while: skip
        return 0
    preset = load_preset(DEFAULT_PRESETS.get(gen, FALLBACK_PRESET))
    cfg = DataConfig(name=gen, root=args.data_dir, kwargs=dict(preset.data.kwargs))
    if gen == "digits-bags" or gen != preset.data.name:
        cfg.kwargs = {k: v for k, v in cfg.kwargs.items() if k != "target_digits"}
    ds = make_generated(cfg, "train", 0)
    _say(f"\nExample: {len(ds)} training bags of {gen} as the {preset.name} preset draws them (seed 0):")
    _say(_kv_table(_describe_bags(ds)))
    return 0


def cmd_data_fetch(args: argparse.Namespace) -> int:
    from lossattn import datasets as D

    name = _spec_name(args.name)
    info = D.dataset_info(name, args.data_dir)
    if info.kind == "embedded":
        _say(f"{name} ships with scikit-learn: nothing to download.")
        return 0
    if info.present and not args.force:
        _say(f"{name} is already present under {info.root}:")
    else:
        _say(f"Downloading {name} into {info.root} ...")
    try:
        paths = D.fetch(name, root=args.data_dir, force=args.force)
    except D.DownloadError as exc:
        lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
        raise CLIError(
            lines[0] if lines else "download failed",
            " ".join(lines[1:]) or f"download the files listed by `lossattn data info {name}` and place them there",
        ) from exc
    for p in paths:
        _say(f"  {p}")
    _say("Done.")
    return 0


def cmd_models(args: argparse.Namespace) -> int:
    from lossattn.nn.extractors import list_extractors
    from lossattn.registry import EXTRACTORS, list_models, model_info

    rows = [[name, model_info(name)] for name in list_models()]
    _say(format_table(["model", "description"], rows, align="ll"))
    _say("\nextractors (model kwarg extractor=...):")
    _say(format_table(["extractor", "description"], [[e, EXTRACTORS.describe(e)] for e in list_extractors()], "ll"))
    _say("\nUse: lossattn train --model NAME [--dataset D]  |  Python: lossattn.create_model(NAME, in_features=...)")
    return 0


def _preset_summary(name: str) -> tuple[str, str, str, str]:
    from lossattn.train.config import _preset_dir, load_preset

    cfg = load_preset(name)
    text = (_preset_dir() / f"{name}.yaml").read_text().splitlines()
    comment = " ".join(line.lstrip("# ").strip() for line in text if line.startswith("#"))
    first = comment.split(". ")[0].rstrip(".") if comment else ""
    protocol = (
        f"{cfg.protocol.folds}-fold CV x{cfg.protocol.repeats}"
        if cfg.protocol.kind == "cv"
        else f"fixed x{cfg.protocol.repeats}"
    )
    return cfg.data.name, protocol, ", ".join(cfg.methods), first


def cmd_presets(args: argparse.Namespace) -> int:
    from lossattn.train.config import _preset_dir, list_presets, load_preset

    if args.show:
        load_preset(args.show)  # a clear error for unknown names
        _say((_preset_dir() / f"{args.show}.yaml").read_text().rstrip())
        return 0
    rows = []
    for name in list_presets():
        try:
            data, protocol, methods, first = _preset_summary(name)
        except (ValueError, TypeError) as exc:  # e.g. a preset whose models are not registered in this install
            rows.append([name, "–", "–", f"(cannot load: {str(exc).splitlines()[0][:70]})"])
            continue
        if len(methods) > 60:
            methods = methods[:57].rsplit(", ", 1)[0] + ", ..."
        rows.append([name, data, protocol, methods])
    _say(format_table(["preset", "dataset", "protocol", "methods"], rows, align="llll"))
    _say("\nDefaults: benchmarks -> classic_mil, mnist-bags -> mnist_bags_binary, mnist-bags-multi -> "
         "mnist_bags_multiclass,\ncifar10-bags -> cifar10_bags, digits-bags -> digits_bags, your own data -> "
         "classic_mil.\nShow every key: lossattn presets --show NAME; change one: --set train.lr=3e-4")  # fmt: skip
    return 0


# =========================================================================== parser


class _Formatter(argparse.RawDescriptionHelpFormatter):
    def __init__(self, prog: str) -> None:
        super().__init__(prog, max_help_position=32, width=100)


def _add_common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--debug", action="store_true", default=argparse.SUPPRESS, help="show tracebacks of errors")
    p.add_argument(
        "--no-progress", action="store_true", default=argparse.SUPPRESS, help="no progress bars (e.g. in logs)"
    )


def _add_experiment_options(p: argparse.ArgumentParser, command: str) -> None:
    g = p.add_argument_group("what to run")
    g.add_argument("--preset", metavar="NAME", help="bundled preset (`lossattn presets`); default: by dataset")
    g.add_argument("--config", metavar="FILE", help="a YAML experiment config instead of a preset")
    g.add_argument(
        "-d",
        "--dataset",
        metavar="NAME|PATH",
        help="benchmark (musk1 ...), generator (digits-bags, mnist-bags-multi ...) or your folder/table",
    )
    g.add_argument(
        "-m",
        "--model",
        metavar="NAME[,NAME]",
        help="registered model(s) or preset method(s); 'all' = every method of the preset"
        + (" (default: loss_attention)" if command == "train" else " (default: all)"),
    )
    g.add_argument(
        "--set",
        dest="overrides",
        action="append",
        metavar="KEY=VALUE",
        default=[],
        help="override any config key, e.g. --set train.lr=3e-4 --set data.kwargs.num_bags=100",
    )
    h = p.add_argument_group("shortcuts for common settings")
    h.add_argument("--epochs", type=int, metavar="N", help="train.epochs")
    h.add_argument("--lr", type=float, metavar="X", help="train.lr (maximum learning rate)")
    h.add_argument("--lam", type=float, metavar="X", help="λ of the Loss-Attention method(s)")
    h.add_argument("--batch-size", type=int, metavar="N", help="train.batch_size (bags per step)")
    h.add_argument("--seed", type=int, metavar="N", help="protocol.seed (bags, splits, initialisation)")
    h.add_argument("--device", metavar="DEV", help="cpu, cuda, cuda:1 or auto")
    h.add_argument("--data-dir", metavar="DIR", help="data root (default: $LOSSATTN_DATA or ~/.cache/lossattn)")
    o = p.add_argument_group("output")
    o.add_argument("-o", "--out", metavar="DIR", help="output folder (default: runs/<experiment>/" + command + ")")
    o.add_argument("--resume", action="store_true", help="reuse finished runs in --out and continue interrupted ones")
    o.add_argument("-j", "--jobs", type=int, default=1, metavar="N", help="parallel worker processes (default 1)")


def _add_checkpoint_options(p: argparse.ArgumentParser, data_required: bool) -> None:
    p.add_argument("checkpoint", metavar="CHECKPOINT", help="a best.pt, or the run folder holding it")
    p.add_argument(
        "data",
        metavar="DATA",
        nargs=None if data_required else "?",
        help="dataset name or path of your folder/table"
        + ("" if data_required else " (default: the checkpoint's own test bags)"),
    )
    p.add_argument("--split", default="test", choices=("test", "train", "all"),
                   help="generated sets: which bags; a table/folder with a split column: that split (default test)")  # fmt: skip
    p.add_argument("--num-bags", type=int, metavar="N", help="generated sets: how many bags (default: as trained)")
    p.add_argument("--data-seed", type=int, metavar="N", help="generated sets: seed (default: the run's test bags)")
    p.add_argument("--data-dir", metavar="DIR", help="data root (default: $LOSSATTN_DATA or ~/.cache/lossattn)")
    p.add_argument("--device", metavar="DEV", help="cpu (default), cuda or auto")
    p.add_argument("--batch-size", type=int, default=64, metavar="N", help="bags per forward pass (default 64)")


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of the ``lossattn`` command."""
    import lossattn

    parser = argparse.ArgumentParser(
        prog=PROG,
        description="Loss-based attention for deep multiple instance learning (Shi et al., AAAI 2020): "
        "train, evaluate, explain and reproduce.",
        epilog=EPILOG_MAIN,
        formatter_class=_Formatter,
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {lossattn.__version__}")
    parser.add_argument("--debug", action="store_true", help="show tracebacks of errors")
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", title="commands")

    def add(name: str, help_: str, epilog: str, func: Callable, description: str | None = None):
        p = sub.add_parser(
            name, help=help_, description=description or help_, epilog=epilog, formatter_class=_Formatter
        )
        p.set_defaults(func=func)
        _add_common(p)
        return p

    p = add(
        "demo",
        "Attention vs Loss-Attention on digits-bags: a table and a picture (no download, < 1 min on a CPU)",
        "examples:\n  lossattn demo\n  lossattn demo --out my-demo --epochs 25",
        cmd_demo,
        description="Train Attention and Loss-Attention on digits-bags (the MNIST-bags construction on "
        "scikit-learn's 8x8 digits; targets 3/5/9), print bag accuracy / AUC and instance retrieval at τ=0.5 side "
        "by side, and draw a few test bags with every instance's weight.",
    )
    p.add_argument("-o", "--out", default="lossattn-demo", metavar="DIR", help="output folder (default lossattn-demo)")
    p.add_argument("--epochs", type=int, metavar="N", help="epochs (default: the digits_bags preset's)")
    p.add_argument("--bags", type=int, metavar="N", help="training bags (default: the preset's)")
    p.add_argument("--test-bags", type=int, metavar="N", help="test bags (default: the preset's)")
    p.add_argument("--show", type=int, default=4, metavar="N", help="test bags to draw (default 4)")
    p.add_argument("--seed", type=int, metavar="N", help="seed of bags, split and initialisation")
    p.add_argument("--device", metavar="DEV", help="cpu (default), cuda or auto")

    p = add(
        "train",
        "train model(s) on one split (a fixed train/test split, or one CV fold)",
        "examples:\n"
        "  lossattn train                                           # loss_attention on digits-bags\n"
        "  lossattn train -d musk1 -m loss_attention --lam 0.1 --fold 3\n"
        "  lossattn train -d mnist-bags-multi -m attention,loss_attention --epochs 20 --device auto\n"
        "  lossattn train -d ./my_bags/ --set protocol.kind=fixed   # your folder with a split column\n"
        "  lossattn train -d digits-bags --set train.weight_decay=0 --out runs/wd0 --resume",
        cmd_train,
    )
    _add_experiment_options(p, "train")
    p.add_argument("--fold", type=int, metavar="K", help="CV presets: which fold is the test fold (default 0)")
    p.add_argument("--repeat", type=int, metavar="R", help="which repeat of the protocol (default 0)")

    p = add(
        "cv",
        "run the full protocol (k-fold CV × repeats, or repeated fixed splits) and print the aggregate table",
        "examples:\n"
        "  lossattn cv -d musk1                                     # Table 1 protocol on MUSK1: 7 methods x 50 runs\n"
        "  lossattn cv -d fox -m loss_attention,attention --jobs 2\n"
        "  lossattn cv --preset mnist_bags_multiclass --set data.kwargs.num_bags=100 --device auto\n"
        "  lossattn cv -d musk1 --set protocol.folds=5 --set protocol.repeats=1 --epochs 20\n"
        "  lossattn cv -d musk1 --set train.oracle=true   # also record the paper's best-test-epoch figure",
        cmd_cv,
    )
    _add_experiment_options(p, "cv")
    p.add_argument("--scheduler", metavar="ADDR", help="Dask scheduler address (tcp://host:port) to fan runs out")

    p = add(
        "evaluate",
        "metrics of a trained checkpoint on bags (the run's own test bags by default)",
        "examples:\n"
        "  lossattn evaluate runs/digits_bags/train/loss_attention/r0\n"
        "  lossattn evaluate runs/x/loss_attention/r0/best.pt digits-bags-multi --num-bags 500 --data-seed 7\n"
        "  lossattn evaluate best.pt ./my_bags.csv --split all --out eval/",
        cmd_evaluate,
    )
    _add_checkpoint_options(p, data_required=False)
    p.add_argument("-o", "--out", metavar="DIR", help="also write DIR/metrics.json")

    p = add(
        "predict",
        "bag predictions and instance weights of a checkpoint as CSV",
        "examples:\n"
        "  lossattn predict runs/digits_bags/train/loss_attention/r0 digits-bags-multi --out preds/\n"
        "  lossattn predict best.pt ./my_bags/ --split all --out preds/\n\n"
        "writes DIR/bags.csv (bag, n_instances, label, predicted, [predicted_name], prob_0..) and\n"
        "DIR/instances.csv (bag, instance, weight, instance_label, [predicted, prob_0..] where the model has them)",
        cmd_predict,
    )
    _add_checkpoint_options(p, data_required=False)
    p.add_argument("-o", "--out", default="predictions", metavar="DIR", help="output folder (default predictions)")

    p = add(
        "explain",
        "pictures of instance weights: image tiles for image bags, ranked bars for feature bags, weight maps "
        "over the image for image-classification (ResNet18-MIL) runs",
        "examples:\n"
        "  lossattn explain runs/digits_bags/train/loss_attention/r0 digits-bags-multi --out pictures/\n"
        "  lossattn explain best.pt musk1 --split all --bags 6 --select first --out pictures/\n"
        "  lossattn explain results/table5/size_all/loss_attention/r0 tinyimagenet --bags 8   # + boxes\n"
        "  lossattn explain results/table4/size_1000/loss_attention/r0 ./my_photos/ --out maps/",
        cmd_explain,
    )
    _add_checkpoint_options(p, data_required=False)
    p.add_argument("-o", "--out", default="explain", metavar="DIR", help="output folder (default explain)")
    p.add_argument("--bags", type=int, default=4, metavar="N", help="number of bags to draw (default 4)")
    p.add_argument(
        "--select",
        choices=("positive", "first", "random"),
        default="positive",
        help="which bags: predicted non-negative first (default), the first N, or N at random",
    )
    p.add_argument("--seed", type=int, default=0, metavar="N", help="seed of --select random")

    p = add(
        "reproduce",
        "reproduce a table or figure of the paper with the honest protocol (JSON + Markdown [+ PNG])",
        "examples:\n"
        "  lossattn reproduce figure3 --quick                       # minutes on a CPU (digits-bags)\n"
        "  lossattn reproduce table1 --datasets musk1,fox --jobs 2\n"
        "  lossattn reproduce table2 --task multiclass --bag-counts 50,100 --device auto\n"
        "  lossattn reproduce figure2 --out results/fig2 --jobs 4\n\n"
        "  lossattn reproduce table4 --quick                        # ResNet18-MIL smoke test on CPU\n"
        "Outputs are resumable: run the same command again to continue.",
        cmd_reproduce,
    )
    p.add_argument("what", choices=REPRODUCIBLE, metavar="{" + ",".join(REPRODUCIBLE) + "}", help="what to reproduce")
    p.add_argument("--quick", action="store_true", help="reduced settings for a smoke test (not a result)")
    p.add_argument("-o", "--out", metavar="DIR", help="output folder (default results/<what>[_quick])")
    p.add_argument("-j", "--jobs", type=int, default=1, metavar="N", help="parallel worker processes (default 1)")
    p.add_argument("--scheduler", metavar="ADDR", help="Dask scheduler address to fan runs out")
    p.add_argument("--data-dir", metavar="DIR", help="data root (default: $LOSSATTN_DATA or ~/.cache/lossattn)")
    p.add_argument("--no-resume", action="store_true", help="retrain runs already finished in --out")
    p.add_argument("--methods", metavar="A,B", help="subset of the methods")
    p.add_argument("--repeats", type=int, metavar="N", help="number of repeats")
    p.add_argument("--epochs", type=int, metavar="N", help="epochs of every run (default: the paper's / --quick's)")
    p.add_argument("--device", metavar="DEV", help="cpu (default), cuda or auto")
    p.add_argument("--datasets", metavar="A,B", help="table1: subset of musk1,musk2,fox,tiger,elephant")
    p.add_argument("--task", metavar="T", help="table2: binary,multiclass; figures: multiclass (default) or binary")
    p.add_argument("--bag-counts", metavar="N,N", help="table2: training bag counts (default 50,100,150,200)")
    p.add_argument("--lams", metavar="X,X", help="figure3: λ values (default 0,1e-4,1e-3,1e-2,0.1,1,10,100)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a config key of every experiment, e.g. --set train.device=cuda")  # fmt: skip

    p = add(
        "data",
        "datasets: list, describe, download",
        "examples:\n  lossattn data list\n  lossattn data info musk1\n  lossattn data info ./my_bags/\n"
        "  lossattn data fetch fox --data-dir ~/data/mil",
        lambda a: (a.data_parser.print_help(), 2)[1],
    )
    p.set_defaults(data_parser=p)
    dsub = p.add_subparsers(dest="data_command", metavar="ACTION", title="actions")
    q = dsub.add_parser("list", help="every known dataset, whether it is present, its size",
                        formatter_class=_Formatter)  # fmt: skip
    q.set_defaults(func=cmd_data_list)
    q.add_argument("--data-dir", metavar="DIR", help="data root to inspect")
    _add_common(q)
    q = dsub.add_parser("info", help="where a dataset's files go, counts and class balance", formatter_class=_Formatter)
    q.set_defaults(func=cmd_data_info)
    q.add_argument("name", metavar="NAME|PATH")
    q.add_argument("--data-dir", metavar="DIR", help="data root to inspect")
    q.add_argument("--no-load", action="store_true", help="do not load the data (only the catalogue entry)")
    _add_common(q)
    q = dsub.add_parser("fetch", help="download a dataset (checksum-verified) into the data root",
                        formatter_class=_Formatter)  # fmt: skip
    q.set_defaults(func=cmd_data_fetch)
    q.add_argument("name", metavar="NAME")
    q.add_argument("--data-dir", metavar="DIR", help="data root to download into")
    q.add_argument("--force", action="store_true", help="download again even if present")
    _add_common(q)

    add("models", "list the registered models and extractors", "example:\n  lossattn models", cmd_models)
    p = add("presets", "list the bundled experiment presets", "examples:\n  lossattn presets\n"
            "  lossattn presets --show classic_mil", cmd_presets)  # fmt: skip
    p.add_argument("--show", metavar="NAME", help="print one preset's YAML")
    return parser


# =========================================================================== entry point


def main(argv: Sequence[str] | None = None) -> int:
    """Run the ``lossattn`` command; returns the exit code (0 ok, 2 user error)."""
    parser = build_parser()
    args = parser.parse_args(list(argv) if argv is not None else None)
    if getattr(args, "func", None) is None:
        parser.print_help()
        return 2
    from lossattn.datasets import DownloadError

    debug = bool(getattr(args, "debug", False))
    try:
        with warnings.catch_warnings():
            if not debug:
                warnings.filterwarnings("ignore", message="Converting a tensor with requires_grad=True")
            result = args.func(args)
        return int(result or 0)
    except KeyboardInterrupt:
        print("\ninterrupted", file=sys.stderr)
        return 130
    except (CLIError, ValueError, TypeError, FileNotFoundError, DownloadError) as exc:
        if debug:
            raise
        message, hint = _error_lines(exc)
        print(f"error: {message}", file=sys.stderr)
        print(f"hint: {hint}", file=sys.stderr)
        return 2


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
