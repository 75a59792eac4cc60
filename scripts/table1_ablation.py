"""Why does Loss-Attention trail the paper (and sometimes Attention)? An ablation on the paper's protocols.

Runs a preset's honest protocol (validation-based selection; Table 1's 10-fold CV by default, or Table 2's
fixed MNIST-bags splits) for variants of Loss-Attention and Attention, every variant on exactly the same
splits and seeds, and writes a JSON with every run plus a Markdown table of mean test accuracy, the paired
difference to the Loss-Attention baseline (± its standard error) and the optimistic (best-test-epoch)
figure beside it.

Variants (everything else as the preset):

* ``la`` / ``att``: the preset's Loss-Attention and Attention;
* ``la_sum``: the instance loss summed over a bag's instances instead of averaged;
* ``la_lam<x>``: λ = x for each ``--lams`` value;
* ``la_nodrop`` / ``att_nodrop``: no dropout in the feature extractor;

groups (``--groups``): ``std`` (the preset), ``raw`` (features not standardised; classic-MIL presets
only — the released code feeds raw features), ``noval`` (no validation split: trained on all of a run's
training bags, the last epoch kept). ``la_lamval`` is built from the λ runs: per run, the λ with the lowest
validation error, then validation loss — the honest way to tune λ.

Usage::

    python scripts/table1_ablation.py --data-root $LOSSATTN_DATA --datasets tiger musk1 --repeats 2 --jobs 2
    python scripts/table1_ablation.py --data-root $LOSSATTN_DATA --preset mnist_bags_multiclass \\
        --datasets mnist-bags-multi --set data.kwargs.num_bags=200 --repeats 3 \\
        --variants la att la_lam0 --groups std noval --out results/table2_ablation

Table 1: ≈ 2 minutes per variant per dataset on two cores (vectorized engine). MNIST-bags runs one run
at a time (LeNet5): ≈ 3–4 minutes per 200-bag run on one core.
"""

from __future__ import annotations

import argparse
import copy
import json
from pathlib import Path

import numpy as np

from lossattn.protocols import run_experiment
from lossattn.protocols.config import MethodConfig, apply_overrides, load_preset, parse_override

GROUP_OVERRIDES = {
    "std": {},
    "raw": {"data.standardize": False},
    "noval": {"protocol.val_fraction": 0.0},
}
GROUP_VARIANTS = {"raw": ("la", "att"), "noval": ("la", "att")}


def build_variants(preset_methods: dict[str, MethodConfig], lams: list[float]) -> dict[str, MethodConfig]:
    """The variants, derived from the preset's own ``loss_attention`` and ``attention`` entries."""
    la, att = preset_methods["loss_attention"], preset_methods["attention"]

    def with_kwargs(base: MethodConfig, **kw) -> MethodConfig:
        m = copy.deepcopy(base)
        m.kwargs = {**m.kwargs, **kw}
        return m

    def no_dropout(base: MethodConfig) -> MethodConfig:
        extractor_kwargs = {**base.kwargs.get("extractor_kwargs", {}), "dropout": 0.0}
        return with_kwargs(base, extractor_kwargs=extractor_kwargs)

    out = {"la": copy.deepcopy(la), "att": copy.deepcopy(att), "la_sum": with_kwargs(la, reduction="sum")}
    for lam in lams:
        out[f"la_lam{lam:g}"] = with_kwargs(la, lam=float(lam))
    out["la_nodrop"] = no_dropout(la)
    out["att_nodrop"] = no_dropout(att)
    return out


def run_dataset(name: str, args: argparse.Namespace) -> list[dict]:
    records = []
    base = apply_overrides(load_preset(args.preset), _settings(name, args))
    variants = build_variants(base.methods, args.lams)
    chosen = args.variants or list(variants)
    unknown = [v for v in chosen if v not in variants]
    if unknown:
        raise SystemExit(f"unknown variants {unknown}; valid: {', '.join(variants)}")
    for group in args.groups:
        if group == "raw" and not base.data.standardize:
            continue  # the preset feeds raw features already
        names = [v for v in chosen if group == "std" or v in GROUP_VARIANTS[group]]
        if not names:
            continue
        cfg = apply_overrides(copy.deepcopy(base), GROUP_OVERRIDES[group]) if GROUP_OVERRIDES[group] else base
        cfg = copy.deepcopy(cfg)
        cfg.methods = {v: variants[v] for v in names}
        cfg.name = f"ablation_{name}_{group}"
        result = run_experiment(cfg, Path(args.out) / name / group, jobs=args.jobs, resume=True, engine="auto")
        for rec in result["runs"]:
            rec = dict(rec, dataset=name)
            if group != "std":
                rec["method"] = f"{rec['method']}_{group}"
            records.append(rec)
    lam_grid = {"la": float(base.methods["loss_attention"].kwargs.get("lam", 0.1))}
    lam_grid.update({f"la_lam{lam:g}": float(lam) for lam in args.lams})
    return records + _lambda_selected(records, lam_grid)


def _settings(name: str, args: argparse.Namespace) -> dict:
    settings = {
        "data.name": name,
        "data.root": args.data_root,
        "protocol.repeats": args.repeats,
        "train.oracle": True,
    }
    if args.folds is not None:
        settings["protocol.folds"] = args.folds
    if args.epochs is not None:
        settings["train.epochs"] = args.epochs
    settings.update(parse_override(item) for item in args.set or [])
    return settings


def _lambda_selected(records: list[dict], lam_grid: dict[str, float]) -> list[dict]:
    """Per run: the λ run with the lowest validation error, then the lowest validation loss."""
    by_run: dict[tuple, list[dict]] = {}
    for rec in records:
        if rec["method"] in lam_grid and rec.get("val_accuracy") is not None:
            by_run.setdefault((rec["dataset"], rec["repeat"], rec["fold"]), []).append(rec)
    chosen = []
    for candidates in by_run.values():
        if len({c["method"] for c in candidates}) < 2:
            continue  # no grid to choose from
        best = min(candidates, key=lambda r: (1.0 - r["val_accuracy"], r["val_loss"]))
        chosen.append(dict(best, method="la_lamval", lam=lam_grid[best["method"]]))
    return chosen


def markdown(records: list[dict]) -> str:
    datasets = sorted({r["dataset"] for r in records})
    methods = list(dict.fromkeys(r["method"] for r in records))
    lines = [
        "| variant | " + " | ".join(f"{d.upper()} acc (Δ vs la) | {d.upper()} optimistic" for d in datasets) + " |",
        "|---" * (1 + 2 * len(datasets)) + "|",
    ]
    for m in methods:
        cells = []
        for d in datasets:
            base = {(r["repeat"], r["fold"]): r for r in records if r["dataset"] == d and r["method"] == "la"}
            mine = [r for r in records if r["dataset"] == d and r["method"] == m]
            if not mine:
                cells += ["–", "–"]
                continue
            acc = np.array([r["test_accuracy"] for r in mine])
            diff = np.array([r["test_accuracy"] - base[(r["repeat"], r["fold"])]["test_accuracy"] for r in mine])
            oracle = np.array([r.get("oracle_test_accuracy", np.nan) for r in mine], dtype=float)
            sem = diff.std(ddof=1) / np.sqrt(len(diff)) if len(diff) > 1 else float("nan")
            cells.append(f"{acc.mean():.3f} ({diff.mean():+.3f} ± {sem:.3f})")
            cells.append(f"{np.nanmean(oracle):.3f}")
        lines.append(f"| {m} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data-root", required=True)
    parser.add_argument("--preset", default="classic_mil")
    parser.add_argument("--datasets", nargs="+", default=["tiger"])
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--folds", type=int, default=None, help="CV folds (default: the preset's)")
    parser.add_argument("--epochs", type=int, default=None, help="default: the preset's")
    parser.add_argument("--lams", type=float, nargs="*", default=[0.0, 0.01, 1.0])
    parser.add_argument("--variants", nargs="*", default=None, help="default: all")
    parser.add_argument("--groups", nargs="+", default=["std", "raw", "noval"], choices=list(GROUP_OVERRIDES))
    parser.add_argument("--set", action="append", metavar="KEY=VALUE", help="extra preset overrides")
    parser.add_argument("--jobs", type=int, default=1)
    parser.add_argument("--out", default="results/table1_ablation")
    args = parser.parse_args()
    records = []
    for name in args.datasets:
        records += run_dataset(name, args)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "ablation.json").write_text(json.dumps({"args": vars(args), "runs": records}, indent=1))
    table = markdown(records)
    (out / "ablation.md").write_text(table)
    print(table)


if __name__ == "__main__":
    main()
