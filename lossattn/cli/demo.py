"""``lossattn demo``: Attention vs Loss-Attention on digits-bags, a table and a picture, no download."""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Any

from lossattn.cli.common import device_option, format_table, progress_enabled, say
from lossattn.inference.checkpoint import TrainedModel, load_trained
from lossattn.inference.predict import predict_bags
from lossattn.io import atomic_write_json, atomic_write_text
from lossattn.plots import ImageBag, plot_image_bags
from lossattn.protocols.config import apply_overrides, load_preset
from lossattn.protocols.runs import RunSpec, execute_run, prepare_split

__all__ = ["add_parser", "run"]


def run(args: argparse.Namespace) -> int:
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
        overrides["train.device"] = device_option(args.device)
    if overrides:
        cfg = apply_overrides(cfg, overrides)
    cfg.train.progress = progress_enabled(args)
    labels = {"attention": "Attention", "loss_attention": "Loss-Attention"}
    methods = [m for m in ("attention", "loss_attention") if m in cfg.methods]
    say(
        f"lossattn demo: Attention vs Loss-Attention on digits-bags (scikit-learn's 8x8 digits, no download);\n"
        f"targets 3/5/9 -> bag labels 1/2/3, {cfg.data.kwargs.get('num_bags')} training bags "
        f"({int(round(cfg.protocol.val_fraction * 100))}% for validation), "
        f"{cfg.data.test_kwargs.get('num_bags')} test bags, {cfg.train.epochs} epochs."
    )
    records: dict[str, dict[str, Any]] = {}
    for i, method in enumerate(methods, 1):
        say(f"[{i}/{len(methods)}] training {labels[method]} ...")
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
    chosen = demo_bags(test, preds, int(args.show))
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
    say("")
    say(table)
    say("")
    say(f"Wrote {out}/:")
    say(f"  demo_bags.png  {len(bags)} test bags, every instance tile annotated with its weight α per method")
    say("  summary.md     the table above;  results.json: every number")
    width = max(len(f"runs/{m}/r0/") for m in methods)
    for m in methods:
        say(f"  {f'runs/{m}/r0/'.ljust(width)}  checkpoint best.pt, per-epoch metrics.csv, config.yaml")
    say(f"Done in {time.perf_counter() - start:.0f} s.")
    la = out / "runs" / "loss_attention" / "r0"
    say(f"Next: lossattn explain {la} digits-bags-multi --out {out / 'explain'}")
    return 0


def demo_bags(test, preds, n: int) -> list[int]:
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


def add_parser(sub, add) -> None:
    p = add(
        "demo",
        "Attention vs Loss-Attention on digits-bags: a table and a picture (no download, 1-2 min on 2 CPU cores)",
        "examples:\n  lossattn demo\n  lossattn demo --out my-demo --epochs 25",
        run,
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
