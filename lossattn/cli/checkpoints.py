"""What ``evaluate``, ``predict`` and ``explain`` share: the checkpoint, the data it is applied to, the options."""

from __future__ import annotations

import argparse

from lossattn.cli.common import CLIError, data_dir, device_option, positive_int, say
from lossattn.cli.dataopts import add_data_options, data_kwargs
from lossattn.inference.checkpoint import load_trained
from lossattn.inference.data import SPLITS, prepare_data, resolve_data
from lossattn.inference.images import is_image_checkpoint, load_images

__all__ = ["add_checkpoint_options", "load_checkpoint_args", "load_data_args", "load_images_args"]


def load_checkpoint_args(args: argparse.Namespace):
    device = device_option(args.device) or "cpu"
    trained = load_trained(args.checkpoint, device=device)
    return trained, device, is_image_checkpoint(trained)


def load_images_args(
    args: argparse.Namespace, trained, count: int | None = None, select: str = "first", seed: int | None = None
):
    """The images an image checkpoint (ResNet18-MIL) is evaluated on, predicted and explained."""
    if args.split == "all":
        raise CLIError("--split all is not defined for image data", "use --split test (default) or --split train")
    if data_kwargs(args):
        raise CLIError("column options apply to tables and feature folders, not to images", "drop them")
    root = data_dir(args)
    inputs = load_images(
        args.data, trained, root=root, split=args.split or "test", count=count, select=select,
        seed=seed if seed is not None else (args.data_seed or 0),
    )  # fmt: skip
    say(f"Checkpoint: {trained.path}  [{trained.describe()}]")
    say(f"Data: {inputs.description}")
    return inputs


def load_data_args(args: argparse.Namespace, trained=None, device=None):
    if trained is None:
        trained, device, _ = load_checkpoint_args(args)
    root = data_dir(args)
    resolved = resolve_data(
        args.data,
        trained,
        root=root,
        split=args.split,
        seed=args.data_seed,
        num_bags=args.num_bags,
        kwargs=data_kwargs(args) or None,
    )
    ds = prepare_data(trained, resolved)
    return trained, resolved, ds, device


def add_checkpoint_options(p: argparse.ArgumentParser, data_required: bool) -> None:
    p.add_argument("checkpoint", metavar="CHECKPOINT", help="a best.pt, or the run folder holding it")
    p.add_argument(
        "data",
        metavar="DATA",
        nargs=None if data_required else "?",
        help="dataset name or path of your folder/table"
        + ("" if data_required else " (default: the run's own held-out bags)"),
    )
    p.add_argument("--split", choices=SPLITS,
                   help="which bags (default: the run's held-out test bags for the checkpoint's own data, every bag "
                   "of other data); train/test: a generator's bags, or a table/folder's split column (an error if "
                   "it has none); all: every bag")  # fmt: skip
    p.add_argument(
        "--num-bags", type=positive_int, metavar="N", help="generated sets: how many bags (default: as trained)"
    )
    p.add_argument("--data-seed", type=int, metavar="N", help="generated sets: seed (default: the run's test bags)")
    p.add_argument("--data-dir", metavar="DIR", help="data root (default: $LOSSATTN_DATA or ~/.cache/lossattn)")
    p.add_argument("--device", metavar="DEV", help="cpu (default), cuda or auto")
    p.add_argument(
        "--batch-size", type=positive_int, default=64, metavar="N", help="bags per forward pass (default 64)"
    )
    add_data_options(p)
