"""Where a feature folder keeps each bag's file: the folder, the usual subfolders of CLAM / TRIDENT, or the one
other subfolder that has it; and the ``.h5`` that holds a ``.pt`` bag's patch coordinates."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

from .bagfiles import BAG_FILE_EXTENSIONS
from .errors import DataFormatError

__all__ = [
    "SLIDE_EXTENSIONS",
    "candidate_stems",
    "find_bag_file",
    "find_coords_file",
    "find_named_file",
    "other_subfolders",
]

SUBFOLDERS = ("", "pt_files", "h5_files", "features")
COORDS_SUBFOLDERS = ("h5_files", "", "patches")
#: whole-slide image extensions dropped from a slide id to find its feature file
SLIDE_EXTENSIONS = (".svs", ".tif", ".tiff", ".ndpi", ".mrxs", ".scn", ".bif", ".vms", ".vmu", ".svslide", ".czi")


def candidate_stems(bag_id: str) -> list[str]:
    """File stems to try for a bag id: the id, then the id without a slide or feature file extension (manifests
    list ``slide_1.svs`` or ``slide_1.h5`` as often as ``slide_1``)."""
    out = [bag_id]
    stem, ext = os.path.splitext(bag_id)
    if ext.lower() in SLIDE_EXTENSIONS + BAG_FILE_EXTENSIONS and stem:
        out.append(stem)
    return out


def find_named_file(folder: Path, name: str, other_subfolders: Sequence[str] = ()) -> Path | None:
    """A file named in a manifest's file column: relative to the folder, else in a usual or the other subfolders."""
    for sub in (*SUBFOLDERS, *other_subfolders):
        p = folder / sub / name if sub else folder / name
        if p.is_file():
            return p
    return None


def find_bag_file(folder: Path, bag_id: str, other_subfolders: Sequence[str] = ()) -> tuple[Path | None, list[Path]]:
    """The file of bag ``bag_id``: in ``folder`` or a usual subfolder, else in exactly one other subfolder
    (``feats/``, TRIDENT's ``features_<encoder>/`` ...); a bag found in several other subfolders is ambiguous."""
    tried = []
    for stem in candidate_stems(bag_id):
        for sub in SUBFOLDERS:
            for ext in BAG_FILE_EXTENSIONS:
                p = folder / sub / f"{stem}{ext}" if sub else folder / f"{stem}{ext}"
                tried.append(p)
                if p.is_file():
                    return p, tried
    hits: dict[str, Path] = {}
    for sub in other_subfolders:
        for stem in candidate_stems(bag_id):
            for ext in BAG_FILE_EXTENSIONS:
                p = folder / sub / f"{stem}{ext}"
                if sub not in hits and p.is_file():
                    hits[sub] = p
    if len(hits) > 1:
        raise DataFormatError(
            f"{folder}: bag {bag_id!r} has a file in several subfolders ({', '.join(sorted(hits))}); keep one "
            f"subfolder of features, or name each bag's file in a 'file' column of the manifest"
        )
    return next(iter(hits.values()), None), tried


def other_subfolders(folder: Path) -> list[str]:
    usual = set(SUBFOLDERS) | set(COORDS_SUBFOLDERS)
    return sorted(d.name for d in folder.iterdir() if d.is_dir() and not d.name.startswith(".") and d.name not in usual)


def find_coords_file(folder: Path, bag_id: str, bag_file: Path) -> Path | None:
    """For a bag file without coordinates of its own kind (``.pt``/``.npy``/``.npz``): the ``.h5`` of the same
    slide, if one exists."""
    if bag_file.suffix.lower() in (".h5", ".hdf5"):
        return None
    for stem in [bag_file.stem, *candidate_stems(bag_id)]:
        for sub in COORDS_SUBFOLDERS:
            for ext in (".h5", ".hdf5"):
                p = folder / sub / f"{stem}{ext}" if sub else folder / f"{stem}{ext}"
                if p.is_file():
                    return p
    return None
