"""``lossattn reproduce``: a table or figure of the paper with the honest protocol (JSON + Markdown [+ PNG]).

Every report pairs each method with a reference method (``--reference``, default the first) over the same
splits: mean difference, standard error, 95 % interval, wins/ties/losses and a paired test (``--paired-test``).
"""

from __future__ import annotations

import argparse
import inspect
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from lossattn.cli.common import CLIError, data_dir, device_option, progress_enabled, say
from lossattn.experiments import figures, image_tables, table3
from lossattn.experiments.bag_tables import TABLE1_DATASETS, reproduce_table1, reproduce_table2
from lossattn.protocols.comparison import PAIRED_TESTS
from lossattn.protocols.config import parse_override

__all__ = ["REPRODUCIBLE", "add_parser", "run"]


REPRODUCIBLE = ("table1", "table2", "table3", "table4", "table5", "figure2", "figure3")
IMAGE_TABLES = {
    "table3": "Table 3 (CIFAR10-bags)",
    "table4": "Table 4 (CIFAR-10 image classification)",
    "table5": "Table 5 (Tiny ImageNet)",
}


def _parse_overrides(items: Sequence[str] | None) -> dict[str, Any]:
    return dict(parse_override(o) for o in (items or []))


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


def run(args: argparse.Namespace) -> int:
    name = args.what
    out = Path(args.out) if args.out else Path("results") / (name + ("_quick" if args.quick else ""))
    overrides = _parse_overrides(args.overrides)
    images = name in IMAGE_TABLES
    if args.epochs is not None and not images:
        overrides["train.epochs"] = args.epochs
    if args.device is not None and not images:
        overrides["train.device"] = device_option(args.device)
    root = data_dir(args)
    common = dict(
        quick=args.quick,
        jobs=args.jobs,
        scheduler=args.scheduler,
        resume=not args.no_resume,
        root=root,
        progress=progress_enabled(args),
        overrides=overrides or None,
        reference=args.reference,
        paired_test=args.paired_test,
    )
    methods = _csv_list(args.methods)
    say(f"Reproducing {name}" + (" (QUICK smoke-test settings, not a result)" if args.quick else "") + f" -> {out}")
    if name == "table1":
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
        tasks = _csv_list(args.task) or ["binary", "multiclass"]
        counts = [int(c) for c in (_csv_list(args.bag_counts) or ["50", "100", "150", "200"])]
        reproduce_table2(out, tasks=tasks, bag_counts=counts, methods=methods, repeats=args.repeats, **common)
        files = [out / "table2.md", out / "table2.json"]
    elif name in ("figure2", "figure3"):
        task = args.task or "multiclass"
        if name == "figure2":
            report = figures.reproduce_figure2(out, task=task, methods=methods, repeats=args.repeats, **common)
        else:
            lams = [float(v) for v in _csv_list(args.lams)] if args.lams else list(figures.FIGURE3_LAMBDAS)
            report = figures.reproduce_figure3(out, lams=lams, task=task, repeats=args.repeats, **common)
        files = [Path(report["files"][k]) for k in ("md", "png", "json")]
    else:
        func = getattr(table3 if name == "table3" else image_tables, f"reproduce_{name}")
        extra = {"epochs": args.epochs, "device": device_option(args.device)}
        extra = {k: v for k, v in extra.items() if v is not None}
        _call_with_supported(func, out, methods=methods, repeats=args.repeats, **extra, **common)
        files = [p for p in sorted(out.glob(f"{name}.*"))]
    md = next((f for f in files if f.suffix == ".md" and f.is_file()), None)
    if md is not None:
        say("")
        say(md.read_text().rstrip())
    say("\nWrote " + ", ".join(str(f) for f in files))
    return 0


def add_parser(sub, add) -> None:
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
        run,
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
    p.add_argument(
        "--reference",
        metavar="METHOD",
        help="the method every other is compared with over the same splits (default: the first method)",
    )
    p.add_argument(
        "--paired-test",
        choices=PAIRED_TESTS,
        default="wilcoxon",
        help="wilcoxon (default), t, or corrected-t (Nadeau-Bengio: folds share training bags)",
    )
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a config key of every experiment, e.g. --set train.device=cuda")  # fmt: skip
