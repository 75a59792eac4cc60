"""``lossattn explain``: pictures of instance weights (image tiles, ranked bars, weight maps over images)."""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from lossattn.cli.checkpoints import add_checkpoint_options, load_checkpoint_args, load_data_args, load_images_args
from lossattn.cli.common import CLIError, check_output_folder, finite_float, positive_int, progress_enabled, say
from lossattn.inference.images import predict_images
from lossattn.inference.predict import predict_bags
from lossattn.plots import ImageBag, plot_image_bags, plot_ranked_weights, plot_weight_map

__all__ = ["add_parser", "run"]


def _is_image_shape(shape: Sequence[int]) -> bool:
    return len(shape) == 3 and shape[0] in (1, 3, 4) or len(shape) == 2 and min(shape) >= 4


def _instance_scores(pred, i: int) -> tuple[Any, str]:
    """What to draw for bag ``i``: the weights, else the instance probability of the predicted class."""
    if pred.weights is not None:
        return pred.weights[i], "weight α"
    if pred.instance_probabilities is not None:
        k = int(pred.predicted[i])
        if k == 0 and pred.num_classes > 1:
            k = int(pred.instance_probabilities[i][:, 1:].sum(axis=0).argmax()) + 1
        return pred.instance_probabilities[i][:, k], f"instance p(class {k})"
    raise CLIError(
        "this model gives neither instance weights nor instance predictions: nothing to explain",
        "explain a model with weights (loss_attention, attention, gated_attention) or instance outputs",
    )


def _pick_bags(pred, n: int, select: str, seed: int) -> list[int]:
    total = len(pred)
    if select == "first":
        return list(range(min(n, total)))
    if select == "random":
        return sorted(np.random.default_rng(seed).choice(total, size=min(n, total), replace=False).tolist())
    positive = [i for i in range(total) if pred.predicted[i] != 0]
    rest = [i for i in range(total) if pred.predicted[i] == 0]
    return (positive + rest)[:n]


def _safe_name(name: str) -> str:
    keep = "".join(c if c.isalnum() or c in "-_." else "_" for c in str(name))
    return keep.strip("._") or "bag"


def _explain_images(args: argparse.Namespace, trained, device) -> int:
    """Feature-map checkpoints: each image beside its weight map upsampled over it."""
    select = "first" if args.select == "positive" else args.select  # images have no negative class
    inputs = load_images_args(args, trained, count=args.bags, select=select, seed=args.seed)
    pred = predict_images(trained, inputs, batch_size=args.batch_size, device=device)
    label = trained.method or trained.model_name
    kind = "weights" if trained.has_weights else "class activation map"
    names = pred.class_names
    out = Path(args.out)
    written = []
    for i, name in enumerate(pred.names):
        k = int(pred.predicted[i])
        predicted = names[k] if names else str(k)
        truth = ""
        if pred.labels is not None:
            y = int(pred.labels[i])
            truth = f", label {names[y] if names else y}"
        title = f"{label} ({kind}) — {Path(name).name}: predicted {predicted} p={pred.probabilities[i, k]:.2f}{truth}"
        box = None if inputs.boxes is None else inputs.boxes[i]
        path = out / f"image_{i:03d}_{_safe_name(Path(name).stem)}.png"
        plot_weight_map(inputs.images[i], pred.extra["maps"][i], path, title=title, box=box)
        written.append(path)
    say(f"\nWrote {len(written)} picture(s) to {out}/ (each image beside its {kind} over the "
         f"{pred.extra['grid'][0]}×{pred.extra['grid'][1]} feature map, upsampled; white frame: the peak cell"
         + ("; green: the ground-truth box" if inputs.boxes is not None else "") + "):")  # fmt: skip
    for p in written:
        say(f"  {p}")
    return 0


def run(args: argparse.Namespace) -> int:
    if args.bags < 1:
        raise CLIError(f"--bags must be >= 1, got {args.bags}", "e.g. --bags 4")
    trained, device, is_image = load_checkpoint_args(args)
    if is_image:
        return _explain_images(args, trained, device)
    trained, resolved, ds, device = load_data_args(args, trained, device)
    say(f"Checkpoint: {trained.path}  [{trained.describe()}]")
    say(f"Data: {resolved.description}")
    pred = predict_bags(trained, ds, batch_size=args.batch_size, device=device, progress=progress_enabled(args))
    chosen = _chosen(pred, args)
    out = check_output_folder(args.out)
    raw = resolved.dataset  # draw the instances as loaded, not standardised
    if pred.coords is not None:
        return _explain_slides(args, trained, pred, chosen, out)
    shape = tuple(raw.instance_shape)
    written = []
    label = trained.method or trained.model_name
    images = _is_image_shape(shape)
    panels = []
    for i in chosen:
        scores, what = _instance_scores(pred, i)
        bag = raw[i]
        cls = pred.class_names[int(pred.predicted[i])] if pred.class_names else str(int(pred.predicted[i]))
        title = f"{bag.name}: label {bag.label}, predicted {int(pred.predicted[i])} ({cls}), p={pred.probabilities[i].max():.2f}"
        inst = bag.instance_labels.numpy()
        inst = inst if (inst >= 0).any() else None
        path = out / f"bag_{_safe_name(bag.name)}.png"
        if images:
            key = "α" if pred.weights is not None else "p"
            panel = ImageBag(images=bag.x, weights={key: scores}, title=title, instance_labels=inst)
            panels.append(panel)
            plot_image_bags([panel], path, title=f"{label}: instance weights")
        else:
            plot_ranked_weights(scores, path, instance_labels=inst, title=f"{label} — {title}", ylabel=what)
        written.append(path)
    if images and len(panels) > 1:
        overview = out / "bags.png"
        plot_image_bags(panels, overview, title=f"{label}: instance weights of {len(panels)} bags")
        written.insert(0, overview)
    kind = "image tiles annotated with their weights" if images else "ranked bar charts of the instance weights"
    say(f"\nWrote {len(written)} picture(s) to {out}/ ({kind}):")
    for p in written:
        say(f"  {p}")
    return 0


def _chosen(pred, args: argparse.Namespace) -> list[int]:
    """The bags to draw: those named by ``--bag``, else ``--bags`` of them by ``--select``."""
    if not args.bag:
        return _pick_bags(pred, args.bags, args.select, args.seed)
    index = {name: i for i, name in enumerate(pred.names)}
    missing = [name for name in args.bag if name not in index]
    if missing:
        shown = ", ".join(pred.names[:5]) + (" ..." if len(pred.names) > 5 else "")
        raise CLIError(f"--bag {missing[0]!r} is not among the {len(pred)} bags of the data ({shown})",
                       "give a bag (slide) name of the data, or use --bags N")  # fmt: skip
    return [index[name] for name in args.bag]


def _explain_slides(args: argparse.Namespace, trained, pred, chosen: list[int], out: Path) -> int:
    """Whole-slide bags: a heatmap PNG from the patch coordinates and a GeoJSON for QuPath, per slide."""
    from lossattn.slides import draw_heatmap, write_geojson

    if pred.weights is None:
        raise CLIError(
            "this model gives no instance weights: there is no heatmap to draw",
            "explain a model with weights (loss_attention, attention, gated_attention)",
        )
    label = trained.method or trained.model_name
    written = []
    for i in chosen:
        name, coords, weights = pred.names[i], pred.coords[i], pred.weights[i]
        k = int(pred.predicted[i])
        title = f"{label} — {name}: predicted {pred.value_of(k)} (p={pred.probabilities[i, k]:.2f})"
        if pred.labels is not None and pred.labels[i] >= 0:
            title += f", label {pred.value_of(int(pred.labels[i]))}"
        thumbnail = _thumbnail(args.thumbnails, name)
        png = out / f"heatmap_{_safe_name(name)}.png"
        draw_heatmap(coords, weights, png, patch_size=args.patch_size, thumbnail=thumbnail,
                     thumbnail_downsample=args.thumbnail_downsample if thumbnail is not None else None, title=title)  # fmt: skip
        geojson = out / f"{_safe_name(name)}.geojson"
        top = None if args.geojson_top is None else max(1, int(round(args.geojson_top * len(weights))))
        write_geojson(geojson, coords, weights, patch_size=args.patch_size, top_k=top, merge=args.geojson_regions)
        written += [png, geojson]
    say(f"\nWrote {len(written)} file(s) to {out}/ (per slide: a heatmap of the weights drawn from the patch "
        "coordinates, patches coloured by rank within the slide; a GeoJSON of the patches that QuPath imports "
        "with File > Import objects):")  # fmt: skip
    for p in written:
        say(f"  {p}")
    return 0


def _thumbnail(folder: str | None, name: str) -> Path | None:
    """``<folder>/<slide name>.{png,jpg,jpeg,tif,tiff}``, if any."""
    if folder is None:
        return None
    for ext in (".png", ".jpg", ".jpeg", ".tif", ".tiff"):
        path = Path(folder) / f"{name}{ext}"
        if path.is_file():
            return path
    return None


def add_parser(sub, add) -> None:
    p = add(
        "explain",
        "pictures of instance weights: image tiles for image bags, ranked bars for feature bags, weight maps "
        "over the image for image-classification (ResNet18-MIL) runs",
        "examples:\n"
        "  lossattn explain runs/digits_bags/train/loss_attention/r0 digits-bags-multi --out pictures/\n"
        "  lossattn explain best.pt musk1 --split all --bags 6 --select first --out pictures/\n"
        "  lossattn explain results/table5/size_all/loss_attention/r0 tinyimagenet --bags 8   # + boxes\n"
        "  lossattn explain results/table4/size_1000/loss_attention/r0 ./my_photos/ --out maps/\n"
        "  lossattn explain runs/slides/loss_attention/r0 slides/ --bag slide_0005 --out heatmaps/  # PNG + GeoJSON",
        run,
    )
    add_checkpoint_options(p, data_required=False)
    p.add_argument("-o", "--out", default="explain", metavar="DIR", help="output folder (default explain)")
    p.add_argument("--bags", type=int, default=4, metavar="N", help="number of bags to draw (default 4)")
    p.add_argument(
        "--select",
        choices=("positive", "first", "random"),
        default="positive",
        help="which bags: predicted non-negative first (default), the first N, or N at random",
    )
    p.add_argument("--seed", type=int, default=0, metavar="N", help="seed of --select random")
    p.add_argument("--bag", action="append", metavar="NAME", help="draw this bag / slide (repeatable)")
    s = p.add_argument_group("whole-slide bags (data with patch coordinates)")
    s.add_argument("--patch-size", type=positive_int, metavar="PX",
                   help="patch side in level-0 pixels (default: inferred from the coordinate grid)")  # fmt: skip
    s.add_argument("--thumbnails", metavar="DIR",
                   help="draw the heatmap over DIR/<slide>.png (or .jpg/.tif) when it exists")  # fmt: skip
    s.add_argument("--thumbnail-downsample", type=finite_float, metavar="F",
                   help="level-0 pixels per thumbnail pixel (default: fitted to the patch grid)")  # fmt: skip
    s.add_argument("--geojson-top", type=finite_float, metavar="FRACTION",
                   help="GeoJSON: only the highest-weighted fraction of patches, e.g. 0.05 (default: every patch)")  # fmt: skip
    s.add_argument("--geojson-regions", action="store_true",
                   help="GeoJSON: merge touching patches into region annotations (with --geojson-top)")  # fmt: skip
