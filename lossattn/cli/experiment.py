"""The experiment a ``train`` / ``cv`` command describes: preset by dataset, methods, shortcuts and overrides."""

from __future__ import annotations

import argparse
import inspect
from collections.abc import Callable
from pathlib import Path
from typing import Any

from lossattn.cli.common import CLIError, device_option, finite_float, nonnegative_float, positive_int, progress_enabled
from lossattn.cli.dataopts import add_data_options, data_kwargs
from lossattn.datasets.catalog import BENCHMARKS
from lossattn.engine.config import SELECTION_RULES, THRESHOLD_RULES
from lossattn.inference.data import resolve_dataset_name
from lossattn.models.registry import MODELS, list_models
from lossattn.protocols.config import (
    PROTOCOL_KINDS,
    MethodConfig,
    apply_overrides,
    config_to_dict,
    load_config,
    load_preset,
)
from lossattn.protocols.data import GENERATORS
from lossattn.protocols.fanout import ENGINES

__all__ = [
    "DEFAULT_PRESETS",
    "add_experiment_options",
    "build_experiment",
    "default_preset",
    "split_text",
]

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
USER_DATA_PRESET = "user_bags"  # the user's own bags: classic-MIL settings, selection and threshold for imbalance


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
    if name in GENERATORS:
        return GENERATORS[name][0]
    if name in BENCHMARKS:
        return "benchmark"
    return "path:" + name


def _model_kwargs_for(model: str, template: dict[str, Any]) -> dict[str, Any]:
    """The extractor settings of ``template`` that ``model``'s builder accepts."""
    params = inspect.signature(MODELS.get(model)).parameters
    return {k: v for k, v in template.items() if k in ("extractor", "extractor_kwargs", "hidden") and k in params}


def _select_methods(cfg, spec: str | None, command: str):
    """Keep the methods named by ``--model`` (labels or model names); add registered models not in the preset."""
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


def build_experiment(args: argparse.Namespace, command: str):
    """The :class:`~lossattn.protocols.config.ExperimentConfig` described by the options of train/cv."""
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
        overrides["train.device"] = device_option(args.device)
    if getattr(args, "data_dir", None) is not None:
        overrides["data.root"] = str(Path(args.data_dir).expanduser())
    for option, key in (("selection", "train.selection"), ("threshold", "train.threshold"),
                        ("protocol", "protocol.kind"), ("folds", "protocol.folds"), ("repeats", "protocol.repeats"),
                        ("threads", "train.threads")):  # fmt: skip
        if getattr(args, option, None) is not None:
            overrides[key] = getattr(args, option)
    if getattr(args, "all_bags", False):
        overrides["protocol.kind"] = "all"
    given = data_kwargs(args)
    if given:
        name = overrides.get("data.name", cfg.data.name)
        if _family(name) in ("benchmark",) or name in GENERATORS:
            raise CLIError(
                f"column options ({', '.join('--' + k.replace('_', '-') for k in given)}) apply to your own tables "
                f"and feature folders, not to {name!r}",
                "drop them, or give your file with --dataset PATH",
            )
        overrides["data.kwargs"] = {**cfg.data.kwargs, **overrides.get("data.kwargs", {}), **given}
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
    if cfg.protocol.kind == "all" and command == "cv":
        raise CLIError(
            "cv with --protocol all has no test bags to cross-validate on",
            "use `lossattn train --all` to train on every bag, or cv without --protocol all",
        )
    if cfg.data.name.endswith("-images"):
        raise CLIError(
            f"{cfg.name} is an image-classification preset ({cfg.data.name}); train/cv run bag datasets",
            "run it with `lossattn reproduce table4` (CIFAR-10) or `lossattn reproduce table5` (Tiny ImageNet)",
        )
    cfg.train.progress = progress_enabled(args) and command == "train"
    if args.out is None:
        args.out = str(Path("runs") / cfg.name / command)
    saved = Path(args.out) / "config.yaml"
    if args.resume and saved.is_file():
        check_resume(load_config(saved), cfg, saved, config_to_dict)
    return cfg


def check_resume(old, new, path: Path, to_dict: Callable) -> None:
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


def add_experiment_options(p: argparse.ArgumentParser, command: str) -> None:
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
    add_data_options(p)
    h = p.add_argument_group("shortcuts for common settings")
    h.add_argument("--epochs", type=positive_int, metavar="N", help="train.epochs")
    h.add_argument("--lr", type=finite_float, metavar="X", help="train.lr (maximum learning rate, in (0, 1])")
    h.add_argument("--lam", type=nonnegative_float, metavar="X", help="λ of the Loss-Attention method(s), >= 0")
    h.add_argument("--batch-size", type=positive_int, metavar="N", help="train.batch_size (bags per step)")
    h.add_argument("--seed", type=int, metavar="N", help="protocol.seed (bags, splits, initialisation)")
    h.add_argument("--protocol", choices=PROTOCOL_KINDS,
                   help="cv: k-fold cross-validation; fixed: the data's train/test split column (or a generator's test "
                   "bags); all: train on every bag, no test bags (protocol.kind)")  # fmt: skip
    h.add_argument("--folds", type=positive_int, metavar="K", help="protocol.folds (cross-validation)")
    h.add_argument("--repeats", type=positive_int, metavar="R", help="protocol.repeats")
    h.add_argument("--selection", choices=SELECTION_RULES,
                   help="how the epoch is chosen on the validation bags (train.selection): error (the paper's), "
                   "balanced_error, loss or auc — the last three suit imbalanced classes")  # fmt: skip
    h.add_argument("--threshold", choices=THRESHOLD_RULES,
                   help="binary models: argmax (0.5) or the threshold that maximises balanced accuracy on the "
                   "validation bags (train.threshold)")  # fmt: skip
    h.add_argument("--engine", choices=ENGINES, default="auto",
                   help="auto (default): the batched many-runs engine for the methods it supports, the torch.func "
                   "batched engine for the other bag models, one run at a time for the rest; trainer: always one run "
                   "at a time; vectorized / func: batched by that engine or an error")  # fmt: skip
    h.add_argument("--device", metavar="DEV", help="cpu, cuda, cuda:1 or auto")
    h.add_argument("--threads", type=positive_int, metavar="N",
                   help="torch threads per process (default: the free cores shared by --jobs)")  # fmt: skip
    h.add_argument("--data-dir", metavar="DIR", help="data root (default: $LOSSATTN_DATA or ~/.cache/lossattn)")
    o = p.add_argument_group("output")
    o.add_argument("-o", "--out", metavar="DIR", help="output folder (default: runs/<experiment>/" + command + ")")
    r = o.add_mutually_exclusive_group()
    r.add_argument("--resume", action="store_true", help="reuse finished runs in --out and continue interrupted ones")
    r.add_argument("--overwrite", action="store_true", help="replace finished runs already in --out")
    o.add_argument("-j", "--jobs", type=positive_int, default=1, metavar="N",
                   help="parallel worker processes (default 1)")  # fmt: skip


def split_text(cfg, spec) -> str:
    """ "fold 3/10 of repeat 0" or "fixed split, repeat 0"."""
    if spec.fold is None:
        return f"fixed split, repeat {spec.repeat}"
    return f"fold {spec.fold + 1}/{cfg.protocol.folds} of repeat {spec.repeat}"
