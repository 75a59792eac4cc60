"""How much does averaging the fold models of a cv run narrow the spread of the test figure? Measured honestly.

An ensemble of the k fold models of a cross-validation has trained, between its members, on every bag of the
cv, so it must be evaluated on bags none of them saw:

* a benchmark / table (``--dataset musk1``): a stratified share of the bags (``--holdout``) is set aside
  first and written to ``held_out.csv``; the cv runs on the rest (``pool.csv``);
* a generator (``--dataset digits-bags``): the cv runs on its training bags; the test bags are fresh draws
  (digits-bags: from the 445 digit images the training bags never use).

Then every single fold model and, per repeat, the ensemble of that repeat's k fold models
(:mod:`lossattn.inference.ensemble`: mean of the members' probabilities, each with its own standardiser;
threshold: mean of theirs) are scored on the same held-out bags. Written: ``OUT/fold_ensemble.json`` and
``OUT/fold_ensemble.md``.

Usage::

    python scripts/fold_ensemble.py --data-root $LOSSATTN_DATA --dataset musk1 --out results/fold_ensemble_musk1
    python scripts/fold_ensemble.py --dataset digits-bags --out results/fold_ensemble_digits
"""

from __future__ import annotations

import argparse
import csv
import json
import time
from pathlib import Path
from typing import Any

import numpy as np

from lossattn import datasets as D
from lossattn.cli import main as cli_main
from lossattn.inference.ensemble import load_fold_ensemble, predict_ensemble, resolve_ensemble_data
from lossattn.metrics import balanced_accuracy, roc_auc
from lossattn.protocols.config import DataConfig
from lossattn.protocols.data import is_generator, load_dataset


def write_table(ds, path: Path) -> None:
    """One row per instance: ``bag_id, label, f0 .. f{D-1}`` (the table format ``lossattn`` reads)."""
    flat, _ = ds.to_flat()
    flat = flat.reshape(flat.shape[0], -1).numpy()
    offsets = np.concatenate([[0], np.cumsum(ds.bag_sizes)])
    with path.open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["bag_id", "label", *(f"f{j}" for j in range(flat.shape[1]))])
        for i, name in enumerate(ds.names):
            for row in flat[offsets[i] : offsets[i + 1]]:
                w.writerow([name, int(ds.labels[i]), *(f"{v:.7g}" for v in row)])


def scores(labels: np.ndarray, probs: np.ndarray, threshold: float | None) -> dict[str, float]:
    pred = (probs[:, 1] >= threshold).astype(int) if threshold is not None else probs.argmax(1)
    return {
        "balanced_accuracy": balanced_accuracy(labels, pred),
        "accuracy": float((labels == pred).mean()),
        "auc": roc_auc(labels, probs),
    }


def spread(rows: list[dict[str, float]]) -> dict[str, dict[str, float]]:
    out = {}
    for key in rows[0]:
        v = np.asarray([r[key] for r in rows], dtype=np.float64)
        out[key] = {"mean": float(v.mean()), "sd": float(v.std(ddof=1)) if v.size > 1 else float("nan"),
                    "min": float(v.min()), "max": float(v.max()), "n": int(v.size)}  # fmt: skip
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--dataset", default="musk1")
    ap.add_argument("--data-root", default=None)
    ap.add_argument("--method", default="loss_attention")
    ap.add_argument("--folds", type=int, default=5)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--holdout", type=float, default=0.25, help="benchmarks/tables: share of bags held out")
    ap.add_argument("--seed", type=int, default=0, help="seed of the held-out split")
    ap.add_argument("--epochs", type=int, default=None)
    ap.add_argument("--engine", default="auto")
    ap.add_argument("--set", dest="overrides", action="append", default=[])
    ap.add_argument("--out", type=Path, required=True)
    args = ap.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    cv_dir = args.out / "cv"
    common = ["-m", args.method, "--folds", str(args.folds), "--repeats", str(args.repeats), "--engine", args.engine,
              "--out", str(cv_dir), "--no-progress", "--resume"]  # fmt: skip
    common += [f"--set={o}" for o in args.overrides] + (["--epochs", str(args.epochs)] if args.epochs else [])
    if args.data_root:
        common += ["--data-dir", args.data_root]
    if is_generator(args.dataset):
        cv_args = ["cv", "-d", args.dataset, "--protocol", "cv", *common]
        data_spec, held_note = args.dataset, "the generator's test bags (fresh draws)"
    else:
        full = load_dataset(DataConfig(name=args.dataset, root=args.data_root))
        pool_idx, held_idx = D.train_val_split(full.labels, val_fraction=args.holdout, seed=args.seed)
        write_table(full.subset(pool_idx), args.out / "pool.csv")
        write_table(full.subset(held_idx), args.out / "held_out.csv")
        preset = "classic_mil" if args.dataset in ("musk1", "musk2", "fox", "tiger", "elephant") else "user_bags"
        cv_args = ["cv", "--preset", preset, "-d", str(args.out / "pool.csv"), *common]
        data_spec = str(args.out / "held_out.csv")
        held_note = f"{len(held_idx)} of the {len(full)} {args.dataset} bags, held out (stratified, seed {args.seed})"
    print("lossattn " + " ".join(cv_args), flush=True)
    if cli_main(cv_args) != 0:
        raise SystemExit("the cv failed")
    singles: list[dict[str, Any]] = []
    ensembles: list[dict[str, Any]] = []
    for rep in range(args.repeats):
        ens = load_fold_ensemble(cv_dir / args.method, repeat=rep)
        data = resolve_ensemble_data(data_spec, ens, root=args.data_root)
        pred = predict_ensemble(ens, data)
        y = np.asarray(pred.labels)
        for (r, f), probs, thr in zip(ens.keys, pred.extra["member_probabilities"], pred.extra["member_thresholds"],
                                      strict=True):  # fmt: skip
            singles.append({"repeat": r, "fold": f, **scores(y, probs, thr)})
        ensembles.append({"repeat": rep, "members": len(ens.members), **scores(y, pred.probabilities, pred.threshold)})
    everything = load_fold_ensemble(cv_dir / args.method)
    pred_all = predict_ensemble(everything, resolve_ensemble_data(data_spec, everything, root=args.data_root))
    all_scores = scores(np.asarray(pred_all.labels), pred_all.probabilities, pred_all.threshold)
    keys = ("balanced_accuracy", "accuracy", "auc")
    within = {k: float(np.mean([np.std([s[k] for s in singles if s["repeat"] == r], ddof=1)
                                for r in range(args.repeats)])) for k in keys}  # fmt: skip
    report = {
        "dataset": args.dataset,
        "held_out": held_note,
        "n_held_out": int(len(pred_all)),
        "method": args.method,
        "folds": args.folds,
        "repeats": args.repeats,
        "cv_command": "lossattn " + " ".join(cv_args),
        "single_models": singles,
        "single_spread": spread([{k: s[k] for k in keys} for s in singles]),
        "single_within_repeat_sd": within,
        "ensembles": ensembles,
        "ensemble_spread": spread([{k: e[k] for k in keys} for e in ensembles]),
        "ensemble_of_all": all_scores,
        "seconds": time.perf_counter() - start,
    }
    (args.out / "fold_ensemble.json").write_text(json.dumps(report, indent=2) + "\n")
    lines = [
        f"# Fold ensemble vs single fold models — {args.dataset}, {args.method}",
        "",
        f"cv: `{report['cv_command']}`",
        f"Held-out bags: {held_note} ({report['n_held_out']} bags; none of them seen by any fold model).",
        "",
        "| models scored on the held-out bags | n | bal. acc mean ± sd | accuracy mean ± sd | AUC mean ± sd |",
        "|---|---|---|---|---|",
    ]

    def row(name: str, s: dict[str, dict[str, float]]) -> str:
        cells = [f"{s[k]['mean']:.3f} ± {s[k]['sd']:.3f}" for k in keys]
        return f"| {name} | {s[keys[0]]['n']} | " + " | ".join(cells) + " |"

    lines += [
        row(f"single fold models ({args.folds} folds × {args.repeats} repeats)", report["single_spread"]),
        row(f"ensembles of one repeat's {args.folds} fold models", report["ensemble_spread"]),
        f"| ensemble of all {len(everything.members)} fold models | 1 | {all_scores['balanced_accuracy']:.3f} | "
        f"{all_scores['accuracy']:.3f} | {all_scores['auc']:.3f} |",
        "",
        "sd: sample std (ddof=1). Single fold models, sd within a repeat (mean over repeats): "
        + ", ".join(f"{k} {within[k]:.3f}" for k in keys)
        + ".",
        "",
    ]
    (args.out / "fold_ensemble.md").write_text("\n".join(lines))
    print("\n".join(lines))
    print(f"{report['seconds']:.0f} s; wrote {args.out / 'fold_ensemble.json'} and {args.out / 'fold_ensemble.md'}")


if __name__ == "__main__":
    main()
