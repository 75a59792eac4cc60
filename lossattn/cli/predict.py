"""``lossattn predict``: bag predictions and instance weights of a checkpoint as CSV."""

from __future__ import annotations

import argparse
from pathlib import Path

from lossattn.cli.checkpoints import add_checkpoint_options, load_checkpoint_args, load_data_args, load_images_args
from lossattn.cli.common import check_output_folder, format_table, progress_enabled, say
from lossattn.inference.images import predict_images
from lossattn.inference.predict import predict_bags, write_predictions
from lossattn.metrics import balanced_accuracy

__all__ = ["add_parser", "run"]


def run(args: argparse.Namespace) -> int:
    trained, device, is_image = load_checkpoint_args(args)
    resolved = inputs = None
    if is_image:
        inputs = load_images_args(args, trained, count=args.num_bags)
        pred = predict_images(trained, inputs, batch_size=args.batch_size, device=device)
    else:
        trained, resolved, ds, device = load_data_args(args, trained, device)
        say(f"Checkpoint: {trained.path}  [{trained.describe()}]")
        say(f"Data: {resolved.description}")
        pred = predict_bags(trained, ds, batch_size=args.batch_size, device=device, progress=progress_enabled(args))
    description = inputs.description if is_image else resolved.description
    record = {"checkpoint": str(trained.path), "data": description, "threshold": pred.threshold,
              "label_values": pred.label_values}  # fmt: skip
    out = Path(args.out).expanduser()
    check_output_folder(out.parent, "the folder of --out")
    files = write_predictions(pred, out, record)
    counts = {pred.value_of(k): int((pred.predicted == k).sum()) for k in range(pred.num_classes)}
    bags, instances = ("images", "feature-map positions") if is_image else ("bags", "instances")
    say(f"\nPredicted {len(pred)} {bags} ({pred.bag_sizes.sum()} {instances}); predicted class counts: {counts}")
    if pred.threshold is not None:
        say(f"Decision threshold (chosen on the run's validation bags): p({pred.value_of(1)}) >= {pred.threshold:.3f}")
    if pred.labels is not None and len(pred.labels) and int(pred.labels.min()) >= 0:
        y, p = pred.labels, pred.predicted
        bacc = balanced_accuracy(y, p)
        say(f"Against the labels in the data: balanced accuracy {bacc:.3f}, accuracy {float((y == p).mean()):.3f}")
    elif not is_image:
        say("The data is unlabeled: no accuracy (predictions only).")
    show = min(5, len(pred))
    rows = [
        [
            pred.names[i],
            "" if pred.labels is None else pred.value_of(int(pred.labels[i])),
            pred.value_of(int(pred.predicted[i])),
        ]
        + [float(v) for v in pred.probabilities[i]]
        for i in range(show)
    ]
    say(format_table(["bag", "label", "predicted", *(f"p({pred.value_of(k)})" for k in range(pred.num_classes))], rows))
    if len(pred) > show:
        say(f"... ({len(pred) - show} more)")
    say(f"\nWrote {files['bags.csv']} (one row per {bags[:-1]}), {files['instances.csv']} (one row per {instances[:-1]}"
        + ("" if pred.weights is not None else "; this model has no instance weights")
        + f") and {files['predictions.json']} (which bags, which checkpoint)")  # fmt: skip
    return 0


def add_parser(sub, add) -> None:
    p = add(
        "predict",
        "bag predictions and instance weights of a checkpoint as CSV",
        "examples:\n"
        "  lossattn predict runs/x/cv/loss_attention/r0_f3                 # the run's held-out fold\n"
        "  lossattn predict runs/final/loss_attention/r0 new_bags.csv --no-header --label-column none --bag-column 0\n"
        "  lossattn predict best.pt ./my_bags/ --split test --out preds/   # the folder's split column\n\n"
        "writes, as one unit, DIR/bags.csv (bag, n_instances, label, predicted, [predicted_name], prob_<class>..),\n"
        "DIR/instances.csv (bag, instance, [x, y], weight, instance_label, [predicted, prob_..] where the model has\n"
        "them) and DIR/predictions.json (checkpoint, which bags, threshold); labels are written in the values of the\n"
        "training data",
        run,
    )
    add_checkpoint_options(p, data_required=False)
    p.add_argument("-o", "--out", default="predictions", metavar="DIR", help="output folder (default predictions)")
