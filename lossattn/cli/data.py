"""``lossattn data``: list, describe and download datasets."""

from __future__ import annotations

import argparse
import os
from pathlib import Path
from typing import Any

import numpy as np

from lossattn import datasets as D
from lossattn.cli.common import (
    CLIError,
    Formatter,
    add_common,
    check_output_folder,
    format_table,
    kv_table,
    positive_int,
    say,
    wrap,
)
from lossattn.cli.dataopts import add_data_options, data_kwargs
from lossattn.cli.experiment import DEFAULT_PRESETS, FALLBACK_PRESET
from lossattn.datasets.catalog import get_spec
from lossattn.datasets.sources import ENV_ROOT
from lossattn.inference.data import resolve_dataset_name
from lossattn.protocols.config import DataConfig, load_preset
from lossattn.protocols.data import is_generator, load_dataset, make_generated

__all__ = ["add_parser", "run_fetch", "run_info", "run_list"]


def _spec_name(name: str) -> str:
    return get_spec(name).name  # UnknownDatasetError lists the valid names


def _root_source(data_dir: str | None) -> str:
    if data_dir:
        return "--data-dir"
    if os.environ.get(ENV_ROOT, "").strip():
        return f"${ENV_ROOT}"
    return f"default cache; set ${ENV_ROOT} or pass --data-dir to change it"


def _counts_text(counts: dict[str, int]) -> str:
    order = ("bags", "positive_bags", "instances", "features", "images", "train_images", "test_images")
    keys = [k for k in order if k in counts] + [k for k in counts if k not in order]
    return ", ".join(f"{counts[k]} {k.replace('_', ' ')}" for k in keys)


def run_list(args: argparse.Namespace) -> int:
    root = D.data_root(args.data_dir)
    say(f"Data root: {root}  ({_root_source(args.data_dir)})")
    say("Files are looked for at <root>/<dataset>/<file>.\n")
    rows = []
    for name in D.list_datasets():
        info = D.dataset_info(name, args.data_dir)
        status = "yes" if info.present or info.kind == "embedded" else ("no (fetch)" if info.fetchable else "no")
        rows.append([name, info.kind, status, _counts_text(info.counts)])
    say(format_table(["dataset", "kind", "present", "counts"], rows, align="llll"))
    say(
        "\nAlso accepted: mnist-bags-multi / digits-bags-multi (targets 3/5/9) and the path of your own feature\n"
        "folder (manifest.csv + one file per bag) or table (CSV/Parquet, one row per instance).\n"
        "present = 'no (fetch)': run `lossattn data fetch NAME`; `lossattn data info NAME` says where files go."
    )
    return 0


def _describe_bags(ds) -> list[list[Any]]:
    sizes = np.asarray(ds.bag_sizes)
    rows = [
        ["bags", len(ds)],
        ["instances", int(sizes.sum())],
        ["instance shape", "×".join(str(s) for s in ds.instance_shape)],
        ["bag size min / mean / max", f"{int(sizes.min())} / {sizes.mean():.1f} / {int(sizes.max())}"],
    ]
    if getattr(ds, "has_labels", True):
        counts = ds.class_counts()
        values = getattr(ds, "class_names", None) or getattr(ds, "label_values", None)
        balance = " / ".join(
            f"{values[k] if values and k < len(values) else k}: {int(c)}" for k, c in enumerate(counts)
        )
        rows += [["classes", ds.num_classes], ["class balance (bags)", balance]]
        if len(counts) and counts.min() < 0.2 * counts.max():
            rows.append(["note", "imbalanced classes: read balanced accuracy and AUC, not accuracy"])
    else:
        rows.append(["labels", "none (unlabeled bags: predict only)"])
    columns = ds.meta.get("columns") if isinstance(getattr(ds, "meta", None), dict) else None
    if columns:
        rows.append(["columns", ", ".join(f"{role}={col}" for role, col in columns.items() if col is not None)])
    if ds.has_instance_labels and hasattr(ds, "instance_labels"):
        il = np.asarray(ds.instance_labels)
        rows.append(["target instances", f"{int((il > 0).sum())} of {int((il >= 0).sum())} labelled"])
    splits = getattr(ds, "splits", None)
    if splits is not None:
        values, n = np.unique(np.asarray(splits), return_counts=True)
        rows.append(["split column", ", ".join(f"{v}: {c}" for v, c in zip(values, n, strict=True))])
    groups = getattr(ds, "groups", None)
    if groups is not None:
        rows.append(["groups (cases)", f"{len(set(groups))} (folds keep a group's bags together)"])
    if getattr(ds, "has_coords", False):
        rows.append(["patch coordinates", "yes (predict writes x, y; explain draws slide heatmaps)"])
    return rows


def run_info(args: argparse.Namespace) -> int:
    resolved = resolve_dataset_name(args.name)
    if Path(resolved).exists() and resolved not in D.list_datasets():
        ds = load_dataset(DataConfig(name=resolved, kwargs=data_kwargs(args)))
        say(f"{resolved}: your own bags ({type(ds).__name__})\n")
        say(kv_table(_describe_bags(ds)))
        return 0
    name = _spec_name(args.name)
    info = D.dataset_info(name, args.data_dir)
    say(f"{info.name} ({info.kind})")
    say(wrap(info.description))
    say(wrap(f"Source: {info.source}"))
    if info.counts:
        say(f"Known counts: {_counts_text(info.counts)}")
    say(f"Python: {info.usage}")
    if info.kind != "embedded":
        say(f"\nData root: {info.root}  ({_root_source(args.data_dir)})")
        say("Accepted files (any one per group; ✓ = present):")
        for f in info.files:
            mark = "✓" if f.present else " "
            say(f"  [{mark}] {f.path}" + (f"   <- {f.url}" if f.url else ""))
        if info.present:
            say("Present: yes")
        else:
            where = f"lossattn data fetch {info.name}" + (f" --data-dir {args.data_dir}" if args.data_dir else "")
            say(f"Present: no. Get it with `{where}`" + (" or place one of the files above." if info.files else "."))
    if args.no_load or not (info.present or info.kind == "embedded"):
        return 0
    if info.kind == "benchmark":
        ds = D.load(info.name, root=args.data_dir)
        say(f"\nLoaded {ds.meta.get('source_file', info.name)}:")
        say(kv_table(_describe_bags(ds)))
        return 0
    # generated sets: the bags a preset makes, as an example of their balance
    gen = resolved if is_generator(resolved) else info.name
    if not is_generator(gen) or gen.startswith("cifar10"):  # decoding 60,000 CIFAR images takes a while: skip
        return 0
    preset = load_preset(DEFAULT_PRESETS.get(gen, FALLBACK_PRESET))
    cfg = DataConfig(name=gen, root=args.data_dir, kwargs=dict(preset.data.kwargs))
    if gen == "digits-bags" or gen != preset.data.name:
        cfg.kwargs = {k: v for k, v in cfg.kwargs.items() if k != "target_digits"}
    ds = make_generated(cfg, "train", 0)
    say(f"\nExample: {len(ds)} training bags of {gen} as the {preset.name} preset draws them (seed 0):")
    say(kv_table(_describe_bags(ds)))
    return 0


def run_make_slides(args: argparse.Namespace) -> int:
    from lossattn.slides import make_synthetic_slides

    out = check_output_folder(args.out)
    say(f"Writing a synthetic slide set ({args.preset} preset) to {out} ...")
    info = make_synthetic_slides(
        out, num_slides=args.num_slides, feature_dim=args.feature_dim, num_classes=args.classes, dtype=args.dtype,
        seed=args.seed, preset=args.preset, overwrite=args.overwrite,
    )  # fmt: skip
    sizes = np.asarray(info.num_patches)
    lesion = int(sum(info.lesion_patches))
    say(
        f"{len(info.slide_ids)} slides of {len(set(info.case_ids))} cases, {int(sizes.sum())} patches "
        f"({int(sizes.min())}–{int(sizes.max())} per slide), {info.feature_dim}-d {info.dtype}, "
        f"{info.total_bytes / 2**20:.1f} MiB; {sum(1 for y in info.labels if y)} slides with lesions "
        f"({lesion} lesion patches, the ground truth in each file's instance_labels)"
    )
    say(f"Wrote {out}/manifest.csv (slide_id, case_id, label, split), {out}/h5_files/*.h5, {out}/truth.json")
    say(f"Next: lossattn data info {out}   |   lossattn cv -d {out} -m loss_attention,attention")
    return 0


def run_fetch(args: argparse.Namespace) -> int:
    name = _spec_name(args.name)
    info = D.dataset_info(name, args.data_dir)
    if info.kind == "embedded":
        say(f"{name} ships with scikit-learn: nothing to download.")
        return 0
    if info.present and not args.force:
        say(f"{name} is already present under {info.root}:")
    else:
        say(f"Downloading {name} into {info.root} ...")
    try:
        paths = D.fetch(name, root=args.data_dir, force=args.force)
    except D.DownloadError as exc:
        lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
        raise CLIError(
            lines[0] if lines else "download failed",
            " ".join(lines[1:]) or f"download the files listed by `lossattn data info {name}` and place them there",
        ) from exc
    for p in paths:
        say(f"  {p}")
    say("Done.")
    return 0


def add_parser(sub, add) -> None:
    p = add(
        "data",
        "datasets: list, describe, download",
        "examples:\n  lossattn data list\n  lossattn data info musk1\n  lossattn data info ./my_bags/\n"
        "  lossattn data fetch fox --data-dir ~/data/mil\n  lossattn data make-slides slides/ --preset small",
        lambda a: (a.data_parser.print_help(), 2)[1],
    )
    p.set_defaults(data_parser=p)
    dsub = p.add_subparsers(dest="data_command", metavar="ACTION", title="actions")
    q = dsub.add_parser("list", help="every known dataset, whether it is present, its size",
                        formatter_class=Formatter)  # fmt: skip
    q.set_defaults(func=run_list)
    q.add_argument("--data-dir", metavar="DIR", help="data root to inspect")
    add_common(q)
    q = dsub.add_parser(
        "info",
        help="where a dataset's files go, counts and class balance; your own table/folder: what was read",
        description="Describe a dataset: the catalogue entry and its files, or your own table/folder as loaded "
        "(bags, instances, classes and their balance, the columns chosen, splits, groups).",
        epilog="examples:\n  lossattn data info musk1\n  lossattn data info ./bags.csv --no-header\n"
        "  lossattn data info ./slides/ --group-column case_id",
        formatter_class=Formatter,
    )
    q.set_defaults(func=run_info)
    q.add_argument("name", metavar="NAME|PATH")
    q.add_argument("--data-dir", metavar="DIR", help="data root to inspect")
    q.add_argument("--no-load", action="store_true", help="do not load the data (only the catalogue entry)")
    add_data_options(q)
    add_common(q)
    q = dsub.add_parser(
        "make-slides",
        help="write a synthetic whole-slide benchmark (CLAM layout, lesion ground truth) to try the slide pipeline",
        description="Write a seeded synthetic slide set in the CLAM / TRIDENT layout: h5_files/<slide>.h5 with "
        "features (N, D), coords (N, 2) and the patch-level lesion truth (instance_labels), plus manifest.csv "
        "(slide_id, case_id, label, split). Positive slides hold spatially contiguous lesion regions whose patches "
        "carry the class signal; every slide of a case shares its label and split.",
        epilog="examples:\n  lossattn data make-slides slides/ --preset small\n"
        "  lossattn data make-slides big/ --preset default      # 120 slides, 1024-d, about 2 GiB",
        formatter_class=Formatter,
    )
    q.set_defaults(func=run_make_slides)
    q.add_argument("out", metavar="DIR")
    q.add_argument("--preset", default="small", choices=("tiny", "small", "default"),
                   help="sizes: tiny (12 slides, 32-d), small (60 slides, 64-d; default), default (120 slides, 1024-d)")  # fmt: skip
    q.add_argument("--num-slides", type=positive_int, metavar="N", help="number of slides (default: the preset's)")
    q.add_argument("--feature-dim", type=positive_int, metavar="D", help="feature width (default: the preset's)")
    q.add_argument("--classes", type=positive_int, metavar="K", help="classes incl. 0 = no lesion (default 2)")
    q.add_argument("--dtype", choices=("float32", "float16"), help="feature dtype on disk (default float32)")
    q.add_argument("--seed", type=int, default=0, metavar="N", help="seed (the same seed writes the same files)")
    q.add_argument("--overwrite", action="store_true", help="replace a slide set already in DIR")
    add_common(q)
    q = dsub.add_parser(
        "fetch",
        help="download a dataset (checksum-verified) into the data root",
        description="Download a dataset's files from their public source into <root>/<dataset>/, verify their "
        "checksums and write them atomically. Without network the error says which file to put where by hand.",
        epilog="examples:\n  lossattn data fetch fox\n  lossattn data fetch mnist-bags --data-dir ~/data/mil\n"
        "  lossattn data fetch musk2 --force      # download again",
        formatter_class=Formatter,
    )  # fmt: skip
    q.set_defaults(func=run_fetch)
    q.add_argument("name", metavar="NAME")
    q.add_argument("--data-dir", metavar="DIR", help="data root to download into")
    q.add_argument("--force", action="store_true", help="download again even if present")
    add_common(q)
