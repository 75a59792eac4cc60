"""``lossattn evaluate``: metrics of a checkpoint on bags (the run's own test bags by default)."""

from __future__ import annotations

import argparse
import dataclasses
from pathlib import Path
from typing import Any

from lossattn.cli.checkpoints import add_checkpoint_options, load_checkpoint_args, load_data_args, load_images_args
from lossattn.cli.common import CLIError, format_table, say
from lossattn.engine.loop import evaluate
from lossattn.inference.images import evaluate_image_checkpoint
from lossattn.io import atomic_write_json

__all__ = ["add_parser", "run"]


def _evaluate_images(args: argparse.Namespace, trained, device) -> int:
    inputs = load_images_args(args, trained, count=args.num_bags)
    if inputs.labels is None:
        raise CLIError("these images have no labels: nothing to evaluate against",
                       "evaluate on a labelled dataset (cifar10, tinyimagenet); `lossattn predict` works on unlabelled images")  # fmt: skip
    res = evaluate_image_checkpoint(trained, inputs, batch_size=args.batch_size, device=device)
    metrics: dict[str, Any] = {
        "checkpoint": str(trained.path),
        "data": inputs.description,
        "images": len(inputs.images),
        **{k: v for k, v in res.summary().items() if v is not None},
    }
    say("")
    shown = [[k, metrics[k]] for k in ("images", "accuracy", "top5", "localization_ap", "loss") if k in metrics]
    say(format_table(["metric", "value"], shown, align="lr"))
    if args.out:
        path = Path(args.out) / "metrics.json"
        atomic_write_json(path, metrics)
        say(f"\nWrote {path}")
    return 0


def run(args: argparse.Namespace) -> int:
    trained, device, is_image = load_checkpoint_args(args)
    if is_image:
        return _evaluate_images(args, trained, device)
    trained, resolved, ds, device = load_data_args(args, trained, device)
    if not getattr(ds, "has_labels", True):
        raise CLIError(
            f"{resolved.description}: these bags have no labels, so there is nothing to evaluate against",
            "`lossattn predict` scores unlabeled bags; evaluate needs a label column",
        )
    say(f"Checkpoint: {trained.path}  [{trained.describe()}]")
    say(f"Data: {resolved.description}")
    res = evaluate(trained.model, ds, batch_size=args.batch_size, device=device)
    if trained.decision_threshold is not None and trained.num_classes == 2:
        res = dataclasses.replace(res, threshold=trained.decision_threshold)
    values = trained.label_values or list(range(trained.num_classes))
    counts = [int((res.labels == k).sum()) for k in range(trained.num_classes)]
    rows = [
        ["bags", len(ds)],
        ["class counts", " / ".join(f"{v}: {c}" for v, c in zip(values, counts, strict=False))],
        ["balanced accuracy", res.balanced_accuracy],
        ["AUC", res.auc],
        ["accuracy", res.accuracy],
        ["loss", res.loss],
    ]
    if res.threshold is not None:
        rows.append(["decision threshold", f"p({values[1]}) >= {res.threshold:.3f} (chosen on validation bags)"])
    say("")
    say(format_table(["metric", "value"], rows, align="lr"))
    metrics: dict[str, Any] = {
        "checkpoint": str(trained.path),
        "data": resolved.description,
        "bags": len(ds),
        **res.summary(),
    }
    retrieval = res.retrieval()
    if retrieval is not None:
        metrics["instance_retrieval"] = {str(t): v for t, v in retrieval.items()}
        rrows = [[f"{t:g}", v["precision"], v["recall"], v["f1"], v["retrieved"]] for t, v in retrieval.items()]
        say("\ninstance retrieval (α > τ vs. the target instances):")
        say(format_table(["τ", "precision", "recall", "F-score", "retrieved"], rrows))
    if args.out:
        path = Path(args.out) / "metrics.json"
        atomic_write_json(path, metrics)
        say(f"\nWrote {path}")
    return 0


def add_parser(sub, add) -> None:
    p = add(
        "evaluate",
        "metrics of a trained checkpoint on bags (the run's own test bags by default)",
        "examples:\n"
        "  lossattn evaluate runs/digits_bags/train/loss_attention/r0\n"
        "  lossattn evaluate runs/x/loss_attention/r0/best.pt digits-bags-multi --num-bags 500 --data-seed 7\n"
        "  lossattn evaluate best.pt ./my_bags.csv --split all --out eval/",
        run,
    )
    add_checkpoint_options(p, data_required=False)
    p.add_argument("-o", "--out", metavar="DIR", help="also write DIR/metrics.json")
