"""``lossattn train`` (model(s) on one split) and ``lossattn cv`` (the whole protocol, aggregated)."""

from __future__ import annotations

import argparse
from pathlib import Path

from lossattn.cli.common import CLIError, fmt, format_table, pm, progress_enabled, say
from lossattn.cli.experiment import add_experiment_options, build_experiment, split_text
from lossattn.io import atomic_write_text
from lossattn.protocols.fanout import run_experiment
from lossattn.protocols.runs import RunSpec, plan_runs
from lossattn.protocols.summary import protocol_description

__all__ = ["add_parser", "run_cv", "run_train"]


def run_train(args: argparse.Namespace) -> int:
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
    say(
        f"Training {', '.join(cfg.methods)} on {cfg.data.name} ({split_text(cfg, specs[0])}), "
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
    say(
        f"\nbags: {first['n_train']} train / {first['n_val']} validation / {first['n_test']} test; "
        "epoch selected on validation error, then loss (P/R/F: instance retrieval α > 0.5)"
    )
    say(format_table(headers, rows))
    say("")
    for spec in specs:
        say(f"Wrote {out / spec.method / spec.key}/ (best.pt, metrics.csv, result.json, config.yaml)")
    run = out / specs[-1].method / specs[-1].key
    say(f"Next: lossattn evaluate {run}   |   lossattn predict {run} DATA --out preds/")
    return 0


def run_cv(args: argparse.Namespace) -> int:
    cfg = build_experiment(args, "cv")
    out = Path(args.out)
    n = len(plan_runs(cfg))
    say(f"{cfg.name}: {len(cfg.methods)} method(s) on {cfg.data.name}, {n} runs -> {out}")
    say(f"Protocol: {protocol_description(cfg)}")
    result = run_experiment(
        cfg, out, jobs=args.jobs, scheduler=args.scheduler, resume=args.resume, progress=progress_enabled(args)
    )
    oracle = any(e["oracle_accuracy"].get("n") for e in result["summary"].values())
    headers = ["method", "runs", "accuracy", "AUC", *(["oracle acc*"] if oracle else []), "epoch", "time/run (s)"]
    rows = []
    for m, e in result["summary"].items():
        rows.append(
            [
                m,
                e["runs"],
                pm(e["accuracy"]),
                pm(e["auc"]),
                *([pm(e["oracle_accuracy"])] if oracle else []),
                fmt(e["selected_epoch"]["mean"] + 1, 1),
                fmt(e["seconds"]["mean"], 1),
            ]
        )
    table = format_table(headers, rows)
    note = "accuracy / AUC on the test bags, mean ± std over runs; epoch: mean selected epoch (validation)"
    if oracle:
        note += "\n* best test accuracy over epochs (the reference code's test-set selection): for comparison only"
    say("")
    say(table)
    say(note)
    md = [f"# {cfg.name}", "", f"Protocol: {result['protocol']}", "", "```", table, "```", "", note, ""]
    atomic_write_text(out / "summary.md", "\n".join(md))
    say(f"\nWrote {out}/results.json (every run), summary.md, and one folder per run ({out}/<method>/<run>/)")
    return 0


def add_parser(sub, add) -> None:
    p = add(
        "train",
        "train model(s) on one split (a fixed train/test split, or one CV fold)",
        "examples:\n"
        "  lossattn train                                           # loss_attention on digits-bags\n"
        "  lossattn train -d musk1 -m loss_attention --lam 0.1 --fold 3\n"
        "  lossattn train -d mnist-bags-multi -m attention,loss_attention --epochs 20 --device auto\n"
        "  lossattn train -d ./my_bags/ --set protocol.kind=fixed   # your folder with a split column\n"
        "  lossattn train -d digits-bags --set train.weight_decay=0 --out runs/wd0 --resume",
        run_train,
    )
    add_experiment_options(p, "train")
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
        run_cv,
    )
    add_experiment_options(p, "cv")
    p.add_argument("--scheduler", metavar="ADDR", help="Dask scheduler address (tcp://host:port) to fan runs out")
