"""``lossattn train`` (model(s) on one split, or on every bag) and ``lossattn cv`` (the whole protocol)."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from lossattn.cli.common import CLIError, check_output_folder, fmt, format_table, pm, progress_enabled, say, wrap
from lossattn.cli.experiment import add_experiment_options, build_experiment, split_text
from lossattn.cli.plan import guard_finished_runs, make_plan, remove_if_unused
from lossattn.io import atomic_write_text
from lossattn.protocols.comparison import (
    PAIRED_TESTS,
    check_reference,
    comparison_markdown,
    comparison_notes,
    comparison_rows,
    spread_markdown,
)
from lossattn.protocols.fanout import run_experiment
from lossattn.protocols.runs import RunSpec, plan_runs
from lossattn.protocols.summary import protocol_description, selection_description

__all__ = ["ESTIMATE_FROM", "add_parser", "comparison_text", "cv_table", "run_cv", "run_train"]

#: run-epochs from which the plan measures and prints an estimated time
ESTIMATE_FROM = 200

#: summary columns of a cv table, in this order when the runs have them (imbalance-aware figures first)
_CV_COLUMNS = (
    ("balanced_accuracy", "bal. acc"),
    ("auc", "AUC"),
    ("accuracy", "accuracy"),
    ("micro_f1", "micro-F1"),
    ("map", "mAP"),
    ("patch_ap", "patch AP"),
    ("froc", "FROC"),
)


def _train_specs(cfg, args: argparse.Namespace) -> list[RunSpec]:
    fold = None
    if cfg.protocol.kind == "cv":
        fold = args.fold if args.fold is not None else 0
        if not 0 <= fold < cfg.protocol.folds:
            raise CLIError(
                f"--fold {fold} is out of range for {cfg.protocol.folds}-fold cross-validation",
                f"use --fold 0 .. {cfg.protocol.folds - 1}",
            )
    elif args.fold is not None:
        raise CLIError("--fold only applies to cross-validation", "drop --fold (this protocol has no folds)")
    repeat = args.repeat or 0
    if not 0 <= repeat < cfg.protocol.repeats:
        cfg.protocol.repeats = repeat + 1
    return [RunSpec(m, repeat, fold) for m in cfg.methods]


def _run(
    cfg, args: argparse.Namespace, specs: list[RunSpec], command: str, reference: str | None = None
) -> dict[str, Any]:
    """Plan, guard, train; a folder this command created is removed again if it fails before anything is kept."""
    out = Path(args.out)
    existed = out.exists()
    big = len(specs) * cfg.train.epochs >= ESTIMATE_FROM  # a short plan is over before an estimate would help
    plan = make_plan(cfg, specs, args.engine, args.jobs, estimate=big and not args.resume)
    for line in plan.lines(cfg):
        say(line)
    check_output_folder(out)
    guard_finished_runs(out, specs, args.resume, args.overwrite)
    cfg.train.progress = progress_enabled(args) and args.jobs == 1
    try:
        return run_experiment(
            cfg,
            out,
            jobs=args.jobs,
            scheduler=getattr(args, "scheduler", None),
            resume=args.resume,
            progress=progress_enabled(args) and command == "cv",
            runs=specs,
            engine=args.engine,
            reference=reference,
            paired_test=getattr(args, "paired_test", "wilcoxon"),
        )
    except Exception:
        remove_if_unused(out, existed)
        raise


def run_train(args: argparse.Namespace) -> int:
    cfg = build_experiment(args, "train")
    specs = _train_specs(cfg, args)
    out = Path(args.out)
    where = "every bag (no test bags)" if cfg.protocol.kind == "all" else split_text(cfg, specs[0])
    say(f"Training {', '.join(cfg.methods)} on {cfg.data.name} ({where}), {cfg.train.epochs} epochs -> {out}")
    result = _run(cfg, args, specs, "train")
    has_test = any(r.get("n_test") for r in result["runs"])
    headers = ["method"]
    headers += ["test bal. acc", "test AUC", "test acc"] if has_test else ["val bal. acc", "val AUC", "val acc"]
    headers += ["epoch", "P@0.5", "R@0.5", "F@0.5", "time (s)"]
    prefix = "test" if has_test else "val"
    slides = any("test_patch_ap" in r for r in result["runs"])  # big bags: α > 0.5 retrieves nothing; rank instead
    if slides:
        headers[headers.index("P@0.5") : headers.index("F@0.5") + 1] = ["patch AP", "FROC"]
    rows = []
    for r in result["runs"]:
        ret = (r.get("instance_retrieval") or {}).get("0.5") or {}
        localization = [r.get("test_patch_ap"), r.get("test_froc")] if slides else [
            ret.get("precision"), ret.get("recall"), ret.get("f1")]  # fmt: skip
        rows.append(
            [
                r["method"],
                r.get(f"{prefix}_balanced_accuracy"),
                r.get(f"{prefix}_auc"),
                r.get(f"{prefix}_accuracy"),
                r["selected_epoch"] + 1,
                *localization,
                f"{r['seconds']:.1f}",
            ]
        )
    first = result["runs"][0]
    say(
        f"\nbags: {first['n_train']} train / {first['n_val']} validation / {first['n_test']} test; "
        f"{selection_description(cfg)}"
    )
    say(format_table(headers, rows))
    if not has_test:
        say("(no test bags: the figures are on the validation bags that selected the epoch, so they are optimistic)")
    say("")
    for spec in specs:
        say(f"Wrote {out / spec.method / spec.key}/ (best.pt, metrics.csv, result.json, config.yaml)")
    run = out / specs[-1].method / specs[-1].key
    say(f"Next: lossattn evaluate {run}   |   lossattn predict {run} DATA --out preds/")
    return 0


def cv_table(summary: dict[str, Any], spread: dict[str, Any] | None = None) -> tuple[str, str]:
    """The aggregate table of a cv result and the note under it.

    With ``spread`` (a result's ``spread`` section) and more than one repeat, a ``rep. sd`` column gives the
    repeat-to-repeat sample std of the first metric beside the run std.
    """
    columns = [(key, title) for key, title in _CV_COLUMNS if any(key in e for e in summary.values())]
    oracle = any(e["oracle_accuracy"].get("n") for e in summary.values())
    first = columns[0] if columns else None
    repeat_sd = None
    if spread and first is not None:
        by_method = spread.get("test_" + first[0]) or {}
        if any(s.get("n_repeats", 0) > 1 for s in by_method.values()):
            repeat_sd = by_method
    headers = ["method", "runs", *(t for _, t in columns)]
    if repeat_sd is not None:
        headers.insert(3, "rep. sd")  # beside the first metric's mean ± std
    headers += [*(["oracle acc*"] if oracle else []), "epoch", "s/run"]
    rows = []
    for m, e in summary.items():
        cells = [pm(e.get(key)) for key, _ in columns]
        if repeat_sd is not None:
            cells.insert(1, fmt((repeat_sd.get(m) or {}).get("repeat_spread")))
        rows.append(
            [
                m,
                e["runs"],
                *cells,
                *([pm(e["oracle_accuracy"])] if oracle else []),
                fmt(e["selected_epoch"]["mean"] + 1, 1),
                fmt(e["seconds"]["mean"], 1),
            ]
        )
    note = (
        "test bags, mean ± std over runs; bal. acc = balanced accuracy (mean recall of the classes: 1/K for a model "
        "that predicts one class); epoch: mean selected epoch (validation)"
    )
    if any("patch_ap" in e for e in summary.values()):
        note += (
            "\npatch AP: average precision of the instance weights against the known positive instances (pooled over "
            "bags); FROC: CAMELYON16 lesion FROC score of the weights (whole-slide data with coordinates)"
        )
    if repeat_sd is not None:
        note += (
            f"\nrep. sd: std of the repeat means of {first[1]} (sample std): how much the figure moves with the seed"
        )
    if oracle:
        note += "\n* best test accuracy over epochs (the reference code's test-set selection): for comparison only"
    return format_table(headers, rows), note


def comparison_text(comparison: dict[str, Any]) -> str:
    """The paired comparison of a cv result as a plain-text table and its notes ("" for a single method)."""
    headers, rows = comparison_rows(comparison)
    if not rows:
        return ""
    return format_table(headers, rows) + "\n" + "\n".join(wrap(n) for n in comparison_notes(comparison))


def run_cv(args: argparse.Namespace) -> int:
    cfg = build_experiment(args, "cv")
    try:
        reference = check_reference(cfg.methods, args.reference)
    except ValueError as exc:
        raise CLIError(str(exc), "name one of the methods of this experiment with --reference") from None
    out = Path(args.out)
    specs = plan_runs(cfg)
    say(f"{cfg.name}: {len(cfg.methods)} method(s) on {cfg.data.name}, {len(specs)} runs -> {out}")
    say(f"Protocol: {protocol_description(cfg)}")
    result = _run(cfg, args, specs, "cv", reference)
    table, note = cv_table(result["summary"], result["spread"])
    say("")
    say(table)
    say(note)
    compared = comparison_text(result["comparison"])
    if compared:
        say("")
        say(compared)
    md = [f"# {cfg.name}", "", f"Protocol: {result['protocol']}", "", "```", table, "```", "", note, ""]
    md += comparison_markdown(result["comparison"], f"## Paired comparison with {reference}")
    md += spread_markdown(result["spread"], "## Spread: folds versus repeats")
    atomic_write_text(out / "summary.md", "\n".join(md))
    say(
        f"\nWrote {out}/results.json (every run, the comparison and the spread), summary.md, and one folder per run "
        f"({out}/<method>/<run>/)"
    )
    return 0


def add_parser(sub, add) -> None:
    p = add(
        "train",
        "train model(s) on one split (a CV fold or a fixed train/test split), or on every bag of your data",
        "examples:\n"
        "  lossattn train                                           # loss_attention on digits-bags\n"
        "  lossattn train -d musk1 -m loss_attention --lam 0.1 --fold 3\n"
        "  lossattn train -d bags.csv --no-header --all --out runs/final   # every bag: the model to predict with\n"
        "  lossattn train -d ./my_bags/ --protocol fixed            # your data's split column (train/test)\n"
        "  lossattn train -d mnist-bags-multi -m attention,loss_attention --epochs 20 --device auto\n"
        "  lossattn train -d digits-bags --set train.weight_decay=0 --out runs/wd0 --resume",
        run_train,
    )
    add_experiment_options(p, "train")
    p.add_argument("--fold", type=int, metavar="K", help="CV presets: which fold is the test fold (default 0)")
    p.add_argument("--repeat", type=int, metavar="R", help="which repeat of the protocol (default 0)")
    p.add_argument(
        "--all",
        dest="all_bags",
        action="store_true",
        help="train on every bag of the data (protocol.kind=all; a validation split still selects the epoch)",
    )

    p = add(
        "cv",
        "run the full protocol (k-fold CV × repeats, or repeated fixed splits) and print the aggregate table",
        "examples:\n"
        "  lossattn cv -d musk1                                     # Table 1 protocol on MUSK1: 7 methods x 50 runs\n"
        "  lossattn cv -d bags.csv --no-header                      # your table: 5 methods x 5 folds x 2 repeats\n"
        "  lossattn cv -d fox -m loss_attention,attention --jobs 2\n"
        "  lossattn cv --preset mnist_bags_multiclass --set data.kwargs.num_bags=100 --device auto\n"
        "  lossattn cv -d musk1 --folds 5 --repeats 1 --epochs 20\n"
        "  lossattn cv -d musk1 --set train.oracle=true   # also record the paper's best-test-epoch figure\n"
        "  lossattn cv -d musk1 -m attention,loss_attention --reference attention --paired-test corrected-t\n\n"
        "After the table, cv pairs every method with the reference (default: the first method) over the same folds:\n"
        "mean difference, standard error, 95% interval, wins/ties/losses and a paired test (Wilcoxon by default:\n"
        "fold differences are few and not normal). results.json gets `comparison` and `spread` (fold-to-fold vs\n"
        "repeat-to-repeat), summary.md their tables.\n\n"
        "Before it starts, cv prints its plan: the runs, the engine of each method, the threads and an estimated\n"
        "time measured on one epoch of each method.",
        run_cv,
    )
    add_experiment_options(p, "cv")
    c = p.add_argument_group("comparison")
    c.add_argument(
        "--reference",
        metavar="METHOD",
        help="the method every other is compared with, over the same folds (default: the first method)",
    )
    c.add_argument("--paired-test", choices=PAIRED_TESTS, default="wilcoxon",
                   help="wilcoxon (default: few, non-normal fold differences), t (paired t-test), or corrected-t "
                   "(Nadeau-Bengio corrected resampled t-test: folds share training bags)")  # fmt: skip
    p.add_argument("--scheduler", metavar="ADDR", help="Dask scheduler address (tcp://host:port) to fan runs out")
