"""``lossattn predict``: bag predictions and instance weights of a checkpoint as CSV."""

from __future__ import annotations

import argparse
from pathlib import Path

from lossattn.cli.checkpoints import add_checkpoint_options, load_checkpoint_args, load_data_args, load_images_args
from lossattn.cli.common import (
    CLIError,
    check_output_folder,
    data_dir,
    device_option,
    format_table,
    progress_enabled,
    say,
)
from lossattn.cli.dataopts import data_kwargs
from lossattn.inference.ensemble import load_fold_ensemble, predict_ensemble, resolve_ensemble_data
from lossattn.inference.images import is_image_checkpoint, predict_images
from lossattn.inference.predict import predict_bags, write_predictions
from lossattn.metrics import balanced_accuracy

__all__ = ["add_parser", "run"]


def _predict_ensemble(args: argparse.Namespace):
    """Predictions of the fold ensemble named by the options, and the record of what was done."""
    device = device_option(args.device) or "cpu"
    ensemble = load_fold_ensemble(args.checkpoint, args.method, args.repeat, device=device)
    if is_image_checkpoint(ensemble.first):
        raise CLIError("--ensemble averages bag models of a cv run; this is an image classifier", "drop --ensemble")
    if args.data is None:
        raise CLIError(
            "a fold ensemble has no common held-out bags: every bag of the cross-validation trained most of its "
            "fold models",
            "give DATA: new bags, a held-out file the cv never saw, or a generator's test bags (e.g. digits-bags)",
        )
    resolved = resolve_ensemble_data(
        args.data, ensemble, root=data_dir(args), split=args.split, seed=args.data_seed, num_bags=args.num_bags,
        kwargs=data_kwargs(args) or None,
    )  # fmt: skip
    say(f"Ensemble: {ensemble.folder}  [{ensemble.describe()}]")
    say(f"Data: {resolved.description}")
    pred = predict_ensemble(ensemble, resolved, args.batch_size, device, progress_enabled(args))
    record = {
        "checkpoint": str(ensemble.folder),
        "data": resolved.description,
        "threshold": pred.threshold,
        "label_values": pred.label_values,
        "ensemble": {
            "members": pred.extra["members"],
            "member_thresholds": pred.extra["member_thresholds"],
            "rule": "mean of the members' bag probabilities and instance weights (each member standardises with its "
            "own training statistics); threshold: mean of the members' thresholds (argmax counts as 0.5)",
        },
    }
    return pred, record, len(ensemble.members)


def run(args: argparse.Namespace) -> int:
    members = 0
    if args.ensemble:
        pred, record, members = _predict_ensemble(args)
        is_image = False
    else:
        if args.method is not None or args.repeat is not None:
            raise CLIError("--method and --repeat choose the fold models of --ensemble", "add --ensemble")
        pred, record, is_image = _predict_single(args)
    out = Path(args.out).expanduser()
    check_output_folder(out.parent, "the folder of --out")
    files = write_predictions(pred, out, record)
    counts = {pred.value_of(k): int((pred.predicted == k).sum()) for k in range(pred.num_classes)}
    bags, instances = ("images", "feature-map positions") if is_image else ("bags", "instances")
    say(f"\nPredicted {len(pred)} {bags} ({pred.bag_sizes.sum()} {instances}); predicted class counts: {counts}")
    if pred.threshold is not None:
        how = f"mean of the {members} fold models' thresholds" if members else "chosen on the run's validation bags"
        say(f"Decision threshold ({how}): p({pred.value_of(1)}) >= {pred.threshold:.3f}")
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


def _predict_single(args: argparse.Namespace):
    trained, device, is_image = load_checkpoint_args(args)
    if is_image:
        inputs = load_images_args(args, trained, count=args.num_bags)
        pred = predict_images(trained, inputs, batch_size=args.batch_size, device=device)
        description = inputs.description
    else:
        trained, resolved, ds, device = load_data_args(args, trained, device)
        say(f"Checkpoint: {trained.path}  [{trained.describe()}]")
        say(f"Data: {resolved.description}")
        pred = predict_bags(trained, ds, batch_size=args.batch_size, device=device, progress=progress_enabled(args))
        description = resolved.description
    record = {"checkpoint": str(trained.path), "data": description, "threshold": pred.threshold,
              "label_values": pred.label_values}  # fmt: skip
    return pred, record, is_image


def add_parser(sub, add) -> None:
    p = add(
        "predict",
        "bag predictions and instance weights of a checkpoint as CSV",
        "examples:\n"
        "  lossattn predict runs/x/cv/loss_attention/r0_f3                 # the run's held-out fold\n"
        "  lossattn predict runs/final/loss_attention/r0 new_bags.csv --no-header --label-column none --bag-column 0\n"
        "  lossattn predict best.pt ./my_bags/ --split test --out preds/   # the folder's split column\n"
        "  lossattn predict runs/x/cv/loss_attention held_out.csv --ensemble   # mean of the cv's fold models\n\n"
        "--ensemble: the fold models of a cv run (CHECKPOINT = the method folder holding r*_f*/best.pt, or the cv\n"
        "folder with --method) predict as one: each standardises with its own training statistics, their bag\n"
        "probabilities and instance weights are averaged, the threshold is the mean of theirs. Every bag of the cv\n"
        "trained most of them, so DATA is required: bags none of them saw.\n\n"
        "writes, as one unit, DIR/bags.csv (bag, n_instances, label, predicted, [predicted_name], prob_<class>..),\n"
        "DIR/instances.csv (bag, instance, [x, y], weight, instance_label, [predicted, prob_..] where the model has\n"
        "them) and DIR/predictions.json (checkpoint, which bags, threshold); labels are written in the values of the\n"
        "training data",
        run,
    )
    add_checkpoint_options(p, data_required=False)
    p.add_argument("-o", "--out", default="predictions", metavar="DIR", help="output folder (default predictions)")
    e = p.add_argument_group("fold ensemble")
    e.add_argument(
        "--ensemble",
        action="store_true",
        help="average the fold models of a cv run (CHECKPOINT: its method folder, or the cv folder)",
    )
    e.add_argument("--method", metavar="NAME", help="--ensemble: the method folder inside the cv folder")
    e.add_argument("--repeat", type=int, metavar="R", help="--ensemble: only the folds of repeat R (default: all)")
