"""``lossattn check-assumptions``: registered MIL models through the algorithmic unit tests of Raff & Holt (2023).

A thin layer over :func:`lossattn.assumptions.check_assumptions`: a plan line, one progress line per (model, test)
with the runs done and the estimated time left, the verdict table, and ``assumptions.json`` +
``assumptions.md`` in ``--out``.
"""

from __future__ import annotations

import argparse
import math
import time
from pathlib import Path
from typing import Any

from lossattn.assumptions import (
    DEFAULT_LAMBDAS,
    FULL_SETTINGS,
    QUICK_SETTINGS,
    assumptions_markdown,
    check_assumptions,
    model_variants,
)
from lossattn.cli.common import CLIError, check_output_folder, positive_int, progress_enabled, say
from lossattn.datasets import ASSUMPTION_TESTS
from lossattn.io import atomic_write_json, atomic_write_text

__all__ = ["TINY_SETTINGS", "add_parser", "run"]

#: ``--tiny`` (hidden): a seconds-long check of the command itself, not a result
TINY_SETTINGS: dict[str, Any] = {"epochs": 2, "num_train_bags": 20, "num_test_bags": 20, "seeds": (0,)}


def _names(text: str | None, option: str) -> list[str] | None:
    if text is None:
        return None
    values = [v.strip() for v in text.split(",") if v.strip()]
    if not values:
        raise CLIError(f"{option} is empty", f"name one or more values separated by commas, e.g. {option} a,b")
    return values


def _numbers(text: str | None, option: str, kind: type) -> list[Any] | None:
    values = _names(text, option)
    if values is None:
        return None
    try:
        out = [kind(v) for v in values]
    except ValueError:
        raise CLIError(f"{option} must be {kind.__name__} values separated by commas, got {text!r}") from None
    if kind is float and not all(math.isfinite(v) for v in out):
        raise CLIError(f"{option} must be finite numbers, got {text!r}")
    return out


def _settings(args: argparse.Namespace) -> dict[str, Any]:
    """The keyword arguments of :func:`check_assumptions` the options describe (validated before any training)."""
    models = _names(args.models, "--models")
    if models == ["all"]:
        models = None
    tests = _names(args.tests, "--tests")
    bad = [t for t in tests or () if t not in ASSUMPTION_TESTS]
    if bad:
        raise CLIError(
            f"unknown test(s) {bad}; valid tests: {', '.join(ASSUMPTION_TESTS)}", "e.g. --tests single_concept"
        )
    seeds = _numbers(args.seeds, "--seeds", int)
    lams = _numbers(args.lams, "--lams", float)
    kwargs: dict[str, Any] = {
        "models": models,
        "tests": tests,
        "seeds": tuple(seeds) if seeds is not None else (0, 1, 2),
        "quick": bool(args.quick or args.tiny),
        "lam_values": tuple(lams) if lams is not None else DEFAULT_LAMBDAS,
        "epochs": args.epochs,
        "num_train_bags": args.train_bags,
        "num_test_bags": args.test_bags,
        "jobs": args.jobs,
    }
    if args.tiny:  # the options given explicitly still win
        kwargs.update({k: v for k, v in TINY_SETTINGS.items() if k != "seeds" and kwargs[k] is None})
        if seeds is None:
            kwargs["seeds"] = TINY_SETTINGS["seeds"]
    return kwargs


def _plan(kwargs: dict[str, Any], labels: list[str], out: Path) -> str:
    base = dict(QUICK_SETTINGS if kwargs["quick"] else FULL_SETTINGS)
    for key in ("epochs", "num_train_bags", "num_test_bags"):
        if kwargs.get(key) is not None:
            base[key] = kwargs[key]
    tests = kwargs["tests"] or list(ASSUMPTION_TESTS)
    runs = len(labels) * len(tests) * len(kwargs["seeds"])
    mode = "quick" if kwargs["quick"] else "full"
    return (
        f"Plan: {len(labels)} model(s) × {len(tests)} test(s) × {len(kwargs['seeds'])} seed(s) = {runs} runs "
        f"({mode}: {base['epochs']} epochs, batch {base['batch_size']}, {base['num_train_bags']} training / "
        f"{base['num_test_bags']} test bags per seed), {kwargs['jobs']} worker(s) -> {out}"
    )


def _command(kwargs: dict[str, Any], out: Path) -> str:
    """The command line that repeats this run (options in a fixed order, defaults left out)."""
    parts = ["lossattn check-assumptions"]
    if kwargs["models"] is not None:
        parts.append("-m " + ",".join(kwargs["models"]))
    if kwargs["tests"] is not None:
        parts.append("--tests " + ",".join(kwargs["tests"]))
    if tuple(kwargs["seeds"]) != (0, 1, 2):
        parts.append("--seeds " + ",".join(str(v) for v in kwargs["seeds"]))
    if tuple(kwargs["lam_values"]) != DEFAULT_LAMBDAS:
        parts.append("--lams " + ",".join(f"{v:g}" for v in kwargs["lam_values"]))
    if kwargs["quick"]:
        parts.append("--quick")
    for option, key in (("--epochs", "epochs"), ("--train-bags", "num_train_bags"), ("--test-bags", "num_test_bags")):
        if kwargs[key] is not None:
            parts.append(f"{option} {kwargs[key]}")
    if kwargs["jobs"] != 1:
        parts.append(f"--jobs {kwargs['jobs']}")
    return " ".join(parts + [f"--out {out}"])


def _clock(seconds: float) -> str:
    s = int(round(seconds))
    return f"{s // 3600}h{s // 60 % 60:02d}m" if s >= 3600 else f"{s // 60}m{s % 60:02d}s"


def run(args: argparse.Namespace) -> int:
    kwargs = _settings(args)
    labels = list(model_variants(kwargs["models"], kwargs["lam_values"]))  # unknown names fail here, before training
    out = Path(args.out) if args.out else Path("results") / ("assumptions" + ("_quick" if kwargs["quick"] else ""))
    say(_plan(kwargs, labels, out))
    check_output_folder(out)
    show = progress_enabled(args)

    def report_progress(event: dict[str, Any]) -> None:
        e = event["entry"]
        spread = "" if not math.isfinite(e["auc_std"]) else f" ± {e['auc_std']:.2f}"
        say(
            f"  {event['label']:<26} {event['test']:<16} AUC {e['auc_mean']:.2f}{spread:<7} {e['verdict']:<12} "
            f"[{event['done']}/{event['total']} runs, {_clock(event['elapsed'])}, ~{_clock(event['eta'])} left]"
        )

    start = time.perf_counter()
    report = check_assumptions(**kwargs, on_result=report_progress if show else None)
    wall = time.perf_counter() - start
    report["wall_seconds"] = wall
    report["command"] = _command(kwargs, out)
    table = assumptions_markdown(report)
    md = [
        "# Algorithmic unit tests of MIL assumptions (Raff & Holt, NeurIPS 2023)",
        "",
        f"Command: `{report['command']}`",
        "",
        f"Wall time {_clock(wall)} ({wall:.0f} s, {kwargs['jobs']} worker(s)).",
        "",
        table,
    ]
    atomic_write_json(out / "assumptions.json", report)
    atomic_write_text(out / "assumptions.md", "\n".join(md))
    say("")
    say(table.rstrip())
    say(f"\nWall time {_clock(wall)}. Wrote {out / 'assumptions.json'} and {out / 'assumptions.md'}")
    return 0


def add_parser(sub, add) -> None:
    p = add(
        "check-assumptions",
        "run MIL models through the algorithmic unit tests of Raff & Holt (NeurIPS 2023) and give verdicts",
        "examples:\n"
        "  lossattn check-assumptions --quick                      # every bag model, minutes on 2 CPU cores\n"
        "  lossattn check-assumptions -m minet_instance,instance_max --tests single_concept --quick\n"
        "  lossattn check-assumptions --epochs 40 --jobs 2 --out results/assumptions\n\n"
        "Each test's training bags hold a shortcut that contradicts the MIL assumption tested; its test bags\n"
        "reverse it. A model that took the shortcut scores at or below chance (ROC AUC <= 0.5) on the test bags\n"
        "(verdict: fail); pass needs every seed's test AUC >= 0.6. Writes DIR/assumptions.json and\n"
        "DIR/assumptions.md (the verdict table, the settings and the command).",
        run,
    )
    p.add_argument(
        "-m",
        "--models",
        metavar="NAME[,NAME]",
        default="all",
        help="registered single-label bag models, or all (default; Loss-Attention once per --lams value)",
    )
    p.add_argument("--tests", metavar="T[,T]", help=f"subset of {', '.join(ASSUMPTION_TESTS)} (default: all)")
    p.add_argument("--seeds", metavar="S[,S]", help="seeds of data and models (default 0,1,2)")
    p.add_argument(
        "--lams",
        metavar="X[,X]",
        help="λ values of Loss-Attention (default " + ",".join(f"{v:g}" for v in DEFAULT_LAMBDAS) + ")",
    )
    p.add_argument("--quick", action="store_true", help="smoke-scale settings (15 epochs, 100/200 bags, batch 8)")
    p.add_argument("--epochs", type=positive_int, metavar="N", help="epochs of every run (overrides the mode's)")
    p.add_argument("--train-bags", type=positive_int, metavar="N", help="training bags per seed (before validation)")
    p.add_argument("--test-bags", type=positive_int, metavar="N", help="test bags per seed")
    p.add_argument("-j", "--jobs", type=positive_int, default=1, metavar="N", help="worker processes (default 1)")
    p.add_argument("-o", "--out", metavar="DIR", help="output folder (default results/assumptions[_quick])")
    p.add_argument("--tiny", action="store_true", help=argparse.SUPPRESS)  # seconds: a test of the command
