"""``lossattn compare``: paired comparisons recomputed from saved results, with any reference and test.

A thin layer over :mod:`lossattn.protocols.recompare`: reads one or more ``results.json`` (``cv``) or
``reproduce`` JSON files, joins their experiments by place, and prints each experiment's paired table and spread;
``--out FILE.md`` writes them as Markdown.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from lossattn.cli.common import CLIError, format_table, say, wrap
from lossattn.io import atomic_write_text
from lossattn.protocols.comparison import PAIRED_TESTS, comparison_notes, comparison_rows, markdown_table, spread_rows
from lossattn.protocols.recompare import load_saved_results, merge_experiments, recompare

__all__ = ["add_parser", "run"]


def _heading(where: str) -> str:
    return where or "experiment"


def _command(args: argparse.Namespace) -> str:
    words = ["lossattn", "compare", *args.results]
    for option, value in (("--reference", args.reference), ("--paired-test", args.paired_test), ("--only", args.only)):
        if value is not None:
            words += [option, value]
    return " ".join(words + (["--spread"] if args.spread else []))


def run(args: argparse.Namespace) -> int:
    experiments = merge_experiments([load_saved_results(p) for p in args.results])
    if args.only:
        wanted = [w.strip() for w in args.only.split(",") if w.strip()]
        experiments = [e for e in experiments if any(w in e.where for w in wanted)]
        if not experiments:
            raise CLIError(f"--only {args.only!r} matches no experiment", "run without --only to see their names")
    results = recompare(experiments, args.reference, args.paired_test)
    md: list[str] = ["# Paired comparisons", "", f"Recomputed with `{_command(args)}`.", ""]
    notes: list[str] = []
    for res in results:
        sources = ", ".join(dict.fromkeys(res["sources"]))
        say(f"\n== {_heading(res['where'])} ({len(res['methods'])} method(s); {sources})")
        md += [f"## {_heading(res['where'])}", ""]
        if res["comparison"] is None:
            say("one method only: nothing to pair")
            md += ["One method only: nothing to pair.", ""]
        else:
            headers, rows = comparison_rows(res["comparison"])
            say(format_table(headers, rows))
            md += markdown_table(headers, rows) + [""]
            notes = notes or comparison_notes(res["comparison"])  # the same for every experiment of a test
        if args.spread:
            headers, rows = spread_rows(res["spread"])
            say("\n" + format_table(headers, rows))
            md += markdown_table(headers, rows) + [""]
    if notes:
        say("\n" + "\n".join(wrap(n) for n in notes))
        md += notes
    if args.out:
        out = Path(args.out)
        atomic_write_text(out, "\n".join(md).rstrip() + "\n")
        say(f"\nWrote {out}")
    return 0


def add_parser(sub, add) -> None:
    p = add(
        "compare",
        "paired comparisons recomputed from saved results (cv results.json, reproduce JSON), across files too",
        "examples:\n"
        "  lossattn compare runs/cv                                     # the cv output folder's results.json\n"
        "  lossattn compare docs/results/table1.json --reference attention --paired-test corrected-t\n"
        "  lossattn compare runs/cv_la runs/cv_att --reference loss_attention   # two cv runs on the same data\n"
        "  lossattn compare docs/results/table2.json --only binary --out table2_pairs.md\n\n"
        "Every experiment in the files (a dataset of table1, a task and bag count of table2, one cv) gets the\n"
        "table cv prints: per method, the mean difference to the reference over the splits both ran, its\n"
        "standard error, 95% interval, wins/ties/losses and a paired test. Runs of several files are paired when\n"
        "they sit at the same place and were run on the same data and protocol (cv's folds are seeded).",
        run,
    )
    p.add_argument("results", nargs="+", metavar="RESULTS", help="results.json files or cv output folders")
    p.add_argument("--reference", metavar="METHOD", help="the method every other is compared with (default: first)")
    p.add_argument("--paired-test", choices=PAIRED_TESTS, default="wilcoxon",
                   help="wilcoxon (default), t, or corrected-t (Nadeau-Bengio; for cross-validation folds)")  # fmt: skip
    p.add_argument("--only", metavar="TEXT[,TEXT]", help="only the experiments whose place contains one of these")
    p.add_argument("--spread", action="store_true", help="also the fold-to-fold / repeat-to-repeat spread")
    p.add_argument("-o", "--out", metavar="FILE.md", help="write the tables as Markdown")
