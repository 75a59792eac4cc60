"""Multi-label MNIST-bags: loss-based attention against attention, gated attention and max/mean pooling.

Every method sees the same bags, the same train/validation split and the same initial RNG state in each
repeat; the epoch is selected on the validation bags only (lowest Hamming error, then lowest loss); test bags
are evaluated once, after selection. Prints a Markdown table (mean ± std over repeats) and writes every
run's record to ``--out`` (JSON).

Example (the table of docs/multilabel.md)::

    OMP_NUM_THREADS=1 python scripts/multilabel_experiment.py --data-root /path/to/data --repeats 3

``--dataset digits`` runs on scikit-learn's 8×8 digits instead (no files needed; a quick smoke test).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch

from lossattn import create_model
from lossattn.datasets import train_val_split
from lossattn.datasets.multilabel import make_multilabel_digits_bags, make_multilabel_mnist_bags
from lossattn.engine import TrainConfig, Trainer

METHODS = {
    "Loss-Attention (λ=2)": ("loss_attention_multilabel", {"lam": 2.0, "reduction": "mean"}),
    "Loss-Attention (λ=0)": ("loss_attention_multilabel", {"lam": 0.0, "reduction": "mean"}),
    "Attention+sigmoid": ("attention_multilabel", {}),
    "Gated-Attention+sigmoid": ("gated_attention_multilabel", {}),
    "Embedding+max": ("embedding_max_multilabel", {}),
    "Embedding+mean": ("embedding_mean_multilabel", {}),
    "Instance+max": ("instance_max_multilabel", {}),
}
COLUMNS = [
    ("micro_f1", "micro-F1"),
    ("macro_f1", "macro-F1"),
    ("map", "mAP"),
    ("subset_accuracy", "subset acc."),
    ("inst_ap", "instance AP"),
    ("inst_f1_best", "instance F (best τ)"),
]


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--dataset", choices=["mnist", "digits"], default="mnist")
    p.add_argument("--data-root", default=None, help="folder holding mnist/ (default: $LOSSATTN_DATA)")
    p.add_argument("--targets", type=int, nargs="+", default=[3, 5, 9])
    p.add_argument("--train-bags", type=int, default=150, help="bags drawn for training + validation")
    p.add_argument("--val-fraction", type=float, default=0.2)
    p.add_argument("--test-bags", type=int, default=500)
    p.add_argument("--label-probability", type=float, default=0.5)
    p.add_argument("--mean-bag-size", type=float, default=10.0)
    p.add_argument("--std-bag-size", type=float, default=2.0)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--epochs", type=int, default=15)
    p.add_argument("--lr", type=float, default=5e-4)
    p.add_argument("--weight-decay", type=float, default=1e-4)
    p.add_argument("--batch-size", type=int, default=1)
    p.add_argument("--methods", nargs="+", default=list(METHODS), help="labels of METHODS to run")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--device", default="cpu")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default="multilabel_results.json")
    return p.parse_args(argv)


def make_split(args: argparse.Namespace, repeat: int):
    seed = args.seed * 1000 + repeat
    kw = dict(
        target_digits=args.targets,
        mean_bag_size=args.mean_bag_size,
        std_bag_size=args.std_bag_size,
        label_probability=args.label_probability,
    )
    if args.dataset == "mnist":
        full = make_multilabel_mnist_bags("train", args.train_bags, seed=seed, root=args.data_root, **kw)
        test = make_multilabel_mnist_bags("test", args.test_bags, seed=seed + 500_000, root=args.data_root, **kw)
        extractor = "lenet5"
    else:
        full = make_multilabel_digits_bags("train", args.train_bags, seed=seed, **kw)
        test = make_multilabel_digits_bags("test", args.test_bags, seed=seed + 500_000, **kw)
        extractor = "mlp"
    tr, va = train_val_split(full.labels, val_fraction=args.val_fraction, seed=seed)  # stratified by label set
    return full.subset(tr), full.subset(va), test, extractor, seed


def run_one(args, label, split) -> dict:
    train, val, test, extractor, seed = split
    name, kwargs = METHODS[label]
    ext_kw = {"image_size": 28} if extractor == "lenet5" else {"hidden": [128, 64], "dropout": 0.2}
    torch.manual_seed(seed)
    model = create_model(
        name,
        in_features=train.num_features,
        num_classes=len(args.targets),
        extractor=extractor,
        extractor_kwargs=ext_kw,
        **kwargs,
    )
    cfg = TrainConfig(
        epochs=args.epochs,
        batch_size=args.batch_size,
        lr=args.lr,
        weight_decay=args.weight_decay,
        device=args.device,
        threads=args.threads,
    )
    res = Trainer(model, cfg, seed=seed).fit(train, val, test)
    rec = {"method": label, "model": name, "seconds": res.seconds, "selected_epoch": res.selected_epoch}
    rec.update({k: v for k, v in res.test.scores.items()})
    ap = res.test.instance_ap()
    if ap is not None:
        rec["inst_ap"] = float(np.nanmean(list(ap.values())))
        rec["inst_ap_per_label"] = {str(k): v for k, v in ap.items()}
        ret = res.test.retrieval()
        by_tau = {tau: float(np.mean([ret[c][tau]["f1"] for c in ret])) for tau in next(iter(ret.values()))}
        rec["inst_f1_by_tau"] = {str(t): v for t, v in by_tau.items()}
        rec["inst_f1_best"] = max(by_tau.values())
    return rec


def table(records: list[dict], methods: list[str]) -> str:
    head = "| method | " + " | ".join(c for _, c in COLUMNS) + " |"
    lines = [head, "|" + "---|" * (len(COLUMNS) + 1)]
    for m in methods:
        rows = [r for r in records if r["method"] == m]
        cells = []
        for key, _ in COLUMNS:
            vals = [r[key] for r in rows if key in r and r[key] is not None]
            cells.append("–" if not vals else f"{np.mean(vals):.3f} ± {np.std(vals):.3f}")
        lines.append(f"| {m} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv=None) -> None:
    args = parse_args(argv)
    unknown = [m for m in args.methods if m not in METHODS]
    if unknown:
        raise SystemExit(f"unknown methods {unknown}; choose from {list(METHODS)}")
    torch.set_num_threads(args.threads)
    records: list[dict] = []
    start = time.perf_counter()
    for r in range(args.repeats):
        split = make_split(args, r)
        counts = split[0].bag_sizes.size, split[1].bag_sizes.size, split[2].bag_sizes.size
        print(f"repeat {r}: {counts[0]} train / {counts[1]} val / {counts[2]} test bags", flush=True)
        for label in args.methods:
            rec = run_one(args, label, split)
            rec["repeat"] = r
            records.append(rec)
            print(
                f"  {label:26s} micro-F1 {rec['micro_f1']:.3f} mAP {rec['map']:.3f} "
                f"inst-AP {rec.get('inst_ap', float('nan')):.3f} epoch {rec['selected_epoch']} ({rec['seconds']:.0f}s)",
                flush=True,
            )
    total = time.perf_counter() - start
    out = {"args": vars(args), "seconds": total, "records": records}
    Path(args.out).write_text(json.dumps(out, indent=1))
    print(f"\n{len(records)} runs in {total / 60:.1f} min; records in {args.out}\n")
    print(table(records, args.methods))


if __name__ == "__main__":
    main()
