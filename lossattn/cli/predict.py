"""``lossattn predict``: bag predictions and instance weights of a checkpoint as CSV."""

from __future__ import annotations

import argparse
from pathlib import Path

from lossattn.cli.checkpoints import add_checkpoint_options, load_checkpoint_args, load_data_args, load_images_args
from lossattn.cli.common import format_table, progress_enabled, say
from lossattn.inference.images import predict_images
from lossattn.inference.predict import predict_bags, write_bag_csv, write_instance_csv

__all__ = ["add_parser", "run"]


def run(args: argparse.Namespace) -> int:
    trained, device, is_image = load_checkpoint_args(args)
    if is_image:
        inputs = load_images_args(args, trained, count=args.num_bags)
        pred = predict_images(trained, inputs, batch_size=args.batch_size, device=device)
    else:
        trained, resolved, ds, device = load_data_args(args, trained, device)
        say(f"Checkpoint: {trained.path}  [{trained.describe()}]")
        say(f"Data: {resolved.description}")
        pred = predict_bags(trained, ds, batch_size=args.batch_size, device=device, progress=progress_enabled(args))
    out = Path(args.out)
    bags_csv = write_bag_csv(pred, out / "bags.csv")
    inst_csv = write_instance_csv(pred, out / "instances.csv")
    counts = [int((pred.predicted == k).sum()) for k in range(pred.num_classes)]
    bags, instances = ("images", "feature-map positions") if is_image else ("bags", "instances")
    say(f"\nPredicted {len(pred)} {bags} ({pred.bag_sizes.sum()} {instances}); predicted class counts: {counts}")
    if pred.labels is not None and int(pred.labels.max()) < pred.num_classes:
        acc = float((pred.labels == pred.predicted).mean())
        say(f"Accuracy against the labels in the data: {acc:.3f}")
    show = min(5, len(pred))
    rows = [
        [pred.names[i], int(pred.labels[i]) if pred.labels is not None else "", int(pred.predicted[i])]
        + [float(p) for p in pred.probabilities[i]]
        for i in range(show)
    ]
    say(format_table(["bag", "label", "predicted", *(f"p{k}" for k in range(pred.num_classes))], rows))
    if len(pred) > show:
        say(f"... ({len(pred) - show} more)")
    say(f"\nWrote {bags_csv} (one row per {bags[:-1]}) and {inst_csv} (one row per {instances[:-1]}"
         + ("" if pred.weights is not None else "; this model has no instance weights") + ")")  # fmt: skip
    return 0


def add_parser(sub, add) -> None:
    p = add(
        "predict",
        "bag predictions and instance weights of a checkpoint as CSV",
        "examples:\n"
        "  lossattn predict runs/digits_bags/train/loss_attention/r0 digits-bags-multi --out preds/\n"
        "  lossattn predict best.pt ./my_bags/ --split all --out preds/\n\n"
        "writes DIR/bags.csv (bag, n_instances, label, predicted, [predicted_name], prob_0..) and\n"
        "DIR/instances.csv (bag, instance, weight, instance_label, [predicted, prob_0..] where the model has them)",
        run,
    )
    add_checkpoint_options(p, data_required=False)
    p.add_argument("-o", "--out", default="predictions", metavar="DIR", help="output folder (default predictions)")
