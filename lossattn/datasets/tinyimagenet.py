"""Tiny ImageNet (200 classes, 64×64 RGB) in its standard layout, with the bounding boxes (Shi et al. 2020, Table 5).

Layout of the official ``tiny-imagenet-200.zip`` once extracted::

    tiny-imagenet-200/
      wnids.txt                          one WordNet id per line; the line order is the label order
      words.txt                          optional: "<wnid>\\t<names>" (class names)
      train/<wnid>/images/<file>.JPEG    500 images per class
      train/<wnid>/<wnid>_boxes.txt      "<file>\\t<x0>\\t<y0>\\t<x1>\\t<y1>" per image
      val/images/<file>.JPEG             10,000 images
      val/val_annotations.txt            "<file>\\t<wnid>\\t<x0>\\t<y0>\\t<x1>\\t<y1>" per image
      test/images/...                    unlabelled (not used)

Boxes are inclusive pixel indices ``0 ≤ x0 ≤ x1 < W``, ``0 ≤ y0 ≤ y1 < H`` (see
:mod:`lossattn.localization`). The paper trains on ``train`` and tests on ``val``.

The folder is found at ``root`` itself (when it holds ``wnids.txt``), ``<root>/tiny-imagenet-200`` or
``<root>/tinyimagenet/tiny-imagenet-200``, with ``root`` from the argument, ``$LOSSATTN_DATA`` or the cache
folder. Every structural problem raises :class:`DataNotFoundError` (a file or folder is missing) or
:class:`DataFormatError` (a file is malformed) naming the file, the line and what was expected.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .errors import DataFormatError, DataNotFoundError
from .sources import ENV_ROOT, cache_dir, data_root

__all__ = [
    "TINYIMAGENET_URL",
    "TINYIMAGENET_MEAN",
    "TINYIMAGENET_STD",
    "TinyImageNetSplit",
    "find_tinyimagenet",
    "load_tinyimagenet",
    "make_synthetic_tinyimagenet",
]

TINYIMAGENET_URL = "http://cs231n.stanford.edu/tiny-imagenet-200.zip"
# channel statistics of the Tiny ImageNet training images (commonly used values)
TINYIMAGENET_MEAN = (0.4802, 0.4481, 0.3975)
TINYIMAGENET_STD = (0.2770, 0.2691, 0.2821)
_FOLDER = "tiny-imagenet-200"
_EXTENSIONS = (".jpeg", ".jpg", ".png")


@dataclass
class TinyImageNetSplit:
    """The labelled images of one split: file paths, labels, boxes; images decoded on demand.

    Attributes:
        root: the ``tiny-imagenet-200`` folder.
        split: ``"train"`` or ``"val"``.
        files: image paths, in order (train: by class in ``wnids.txt`` order, then file name; val: file name).
        labels: int64 ``(n,)`` in ``0 … len(wnids) − 1``.
        boxes: int64 ``(n, 4)`` ``(x0, y0, x1, y1)``, inclusive pixel indices.
        wnids: the class ids in label order.
        class_names: human-readable names (from ``words.txt``; the wnid where absent).
        image_size: ``(H, W)`` every image must have (64, 64).
    """

    root: Path
    split: str
    files: list[Path]
    labels: np.ndarray
    boxes: np.ndarray
    wnids: list[str]
    class_names: list[str] = field(default_factory=list)
    image_size: tuple[int, int] = (64, 64)

    def __len__(self) -> int:
        return len(self.files)

    @property
    def num_classes(self) -> int:
        return len(self.wnids)

    def image(self, i: int) -> np.ndarray:
        """Decode image ``i`` → uint8 ``(3, H, W)`` (grayscale images are converted to RGB).

        Raises:
            DataFormatError: the file cannot be decoded or has the wrong size.
        """
        from PIL import Image

        path = self.files[int(i)]
        try:
            with Image.open(path) as im:
                arr = np.asarray(im.convert("RGB"), dtype=np.uint8)
        except FileNotFoundError as e:
            raise DataNotFoundError(f"tinyimagenet: image {path} is listed but missing") from e
        except Exception as e:  # PIL raises OSError/SyntaxError/... on damaged files
            raise DataFormatError(f"{path}: cannot decode the image ({e})") from e
        if arr.shape[:2] != tuple(self.image_size):
            raise DataFormatError(
                f"{path}: image of size {arr.shape[1]}x{arr.shape[0]} (WxH), expected "
                f"{self.image_size[1]}x{self.image_size[0]}"
            )
        return arr.transpose(2, 0, 1).copy()

    def __getitem__(self, idx: Any) -> np.ndarray:
        """Decode the images at integer positions ``idx`` → uint8 ``(len(idx), 3, H, W)``."""
        pos = np.atleast_1d(np.asarray(idx, dtype=np.int64))
        out = np.empty((len(pos), 3, *self.image_size), dtype=np.uint8)
        for j, p in enumerate(pos.tolist()):
            out[j] = self.image(p)
        return out

    def decode_all(self) -> np.ndarray:
        """Every image → uint8 ``(n, 3, H, W)`` (100,000 training images take about 1.2 GB)."""
        return self[np.arange(len(self))]

    def subset(self, indices: Sequence[int]) -> TinyImageNetSplit:
        """The images at ``indices`` (same classes)."""
        idx = np.asarray(indices, dtype=np.int64)
        return TinyImageNetSplit(
            self.root,
            self.split,
            [self.files[i] for i in idx.tolist()],
            self.labels[idx].copy(),
            self.boxes[idx].copy(),
            list(self.wnids),
            list(self.class_names),
            self.image_size,
        )


def find_tinyimagenet(root: str | os.PathLike[str] | None = None) -> Path:
    """The ``tiny-imagenet-200`` folder under ``root`` (see the module docstring).

    Raises:
        DataNotFoundError: no folder with a ``wnids.txt`` in any of the accepted places.
    """
    base = data_root(root)
    candidates = [base, base / _FOLDER, base / "tinyimagenet" / _FOLDER]
    for c in candidates:
        if (c / "wnids.txt").is_file():
            return c
    tried = "\n".join(f"  {c / 'wnids.txt'}" for c in candidates)
    raise DataNotFoundError(
        f"tinyimagenet: the Tiny ImageNet folder was not found (no wnids.txt). Looked for:\n{tried}\n"
        f"Download {TINYIMAGENET_URL} and extract it so that {base / _FOLDER / 'wnids.txt'} exists "
        f"(or pass the extracted folder as root). The data root comes from root=/--data-dir, else ${ENV_ROOT}, "
        f"else {cache_dir()}."
    )


def _read_lines(path: Path, what: str) -> list[str]:
    if not path.is_file():
        raise DataNotFoundError(f"tinyimagenet: {what} {path} is missing")
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise DataFormatError(f"{path}: cannot read {what} ({e})") from e
    return text.splitlines()


def _read_wnids(folder: Path) -> list[str]:
    path = folder / "wnids.txt"
    wnids = []
    for n, line in enumerate(_read_lines(path, "class list"), start=1):
        s = line.strip()
        if not s:
            continue
        if len(s.split()) != 1:
            raise DataFormatError(f"{path}:{n}: expected one WordNet id per line, got {line!r}")
        wnids.append(s)
    if not wnids:
        raise DataFormatError(f"{path}: holds no class ids")
    dup = sorted({w for w in wnids if wnids.count(w) > 1})
    if dup:
        raise DataFormatError(f"{path}: duplicate class ids {dup[:5]}")
    return wnids


def _read_words(folder: Path, wnids: list[str]) -> list[str]:
    path = folder / "words.txt"
    names: dict[str, str] = {}
    if path.is_file():
        for line in _read_lines(path, "class names"):
            parts = line.split("\t", 1)
            if len(parts) == 2:
                names[parts[0].strip()] = parts[1].strip()
    return [names.get(w, w) for w in wnids]


def _parse_box(fields: list[str], path: Path, n: int, size: tuple[int, int]) -> list[int]:
    try:
        x0, y0, x1, y1 = (int(v) for v in fields)
    except ValueError as e:
        raise DataFormatError(f"{path}:{n}: box {fields} is not four integers x0 y0 x1 y1") from e
    H, W = size
    if not (0 <= x0 <= x1 < W and 0 <= y0 <= y1 < H):
        raise DataFormatError(
            f"{path}:{n}: box ({x0}, {y0}, {x1}, {y1}) is not inside the {W}x{H} image "
            f"(expected 0 <= x0 <= x1 < {W} and 0 <= y0 <= y1 < {H}, inclusive pixel indices)"
        )
    return [x0, y0, x1, y1]


def _listed_images(folder: Path) -> set[str]:
    return {p.name for p in folder.iterdir() if p.suffix.lower() in _EXTENSIONS} if folder.is_dir() else set()


def _load_train(folder: Path, wnids: list[str], size: tuple[int, int], check_files: bool):
    files: list[Path] = []
    labels: list[int] = []
    boxes: list[list[int]] = []
    for label, wnid in enumerate(wnids):
        cls_dir = folder / "train" / wnid
        img_dir = cls_dir / "images"
        if not img_dir.is_dir():
            raise DataNotFoundError(
                f"tinyimagenet: {img_dir} is missing; class {wnid} of wnids.txt needs train/{wnid}/images/"
            )
        box_path = cls_dir / f"{wnid}_boxes.txt"
        entries: dict[str, list[int]] = {}
        for n, line in enumerate(_read_lines(box_path, f"box file of class {wnid}"), start=1):
            if not line.strip():
                continue
            parts = line.split()
            if len(parts) != 5:
                raise DataFormatError(
                    f"{box_path}:{n}: expected 5 tab-separated fields '<file> x0 y0 x1 y1', got {line!r}"
                )
            if parts[0] in entries:
                raise DataFormatError(f"{box_path}:{n}: image {parts[0]} is listed twice")
            entries[parts[0]] = _parse_box(parts[1:], box_path, n, size)
        if not entries:
            raise DataFormatError(f"{box_path}: lists no images")
        if check_files:
            present = _listed_images(img_dir)
            missing = sorted(set(entries) - present)
            if missing:
                raise DataFormatError(
                    f"{box_path}: lists {len(missing)} image(s) missing from {img_dir}, e.g. {missing[:3]}"
                )
            unboxed = sorted(present - set(entries))
            if unboxed:
                raise DataFormatError(
                    f"{img_dir}: {len(unboxed)} image(s) have no line in {box_path.name}, e.g. {unboxed[:3]}"
                )
        for name in sorted(entries):
            files.append(img_dir / name)
            labels.append(label)
            boxes.append(entries[name])
    return files, labels, boxes


def _load_val(folder: Path, wnids: list[str], size: tuple[int, int], check_files: bool):
    ann = folder / "val" / "val_annotations.txt"
    img_dir = folder / "val" / "images"
    if not img_dir.is_dir():
        raise DataNotFoundError(f"tinyimagenet: {img_dir} is missing (the validation images)")
    index = {w: i for i, w in enumerate(wnids)}
    entries: dict[str, tuple[int, list[int]]] = {}
    for n, line in enumerate(_read_lines(ann, "validation annotations"), start=1):
        if not line.strip():
            continue
        parts = line.split()
        if len(parts) != 6:
            raise DataFormatError(
                f"{ann}:{n}: expected 6 tab-separated fields '<file> <wnid> x0 y0 x1 y1', got {line!r}"
            )
        name, wnid = parts[0], parts[1]
        if wnid not in index:
            raise DataFormatError(f"{ann}:{n}: class {wnid!r} of {name} is not in wnids.txt")
        if name in entries:
            raise DataFormatError(f"{ann}:{n}: image {name} is listed twice")
        entries[name] = (index[wnid], _parse_box(parts[2:], ann, n, size))
    if not entries:
        raise DataFormatError(f"{ann}: lists no images")
    if check_files:
        present = _listed_images(img_dir)
        missing = sorted(set(entries) - present)
        if missing:
            raise DataFormatError(f"{ann}: lists {len(missing)} image(s) missing from {img_dir}, e.g. {missing[:3]}")
        unlabelled = sorted(present - set(entries))
        if unlabelled:
            raise DataFormatError(
                f"{img_dir}: {len(unlabelled)} image(s) have no line in {ann.name}, e.g. {unlabelled[:3]}"
            )
    names = sorted(entries)
    return [img_dir / n for n in names], [entries[n][0] for n in names], [entries[n][1] for n in names]


def load_tinyimagenet(
    split: str,
    root: str | os.PathLike[str] | None = None,
    *,
    check_files: bool = True,
    image_size: tuple[int, int] = (64, 64),
) -> TinyImageNetSplit:
    """Load the labels and boxes of a Tiny ImageNet split (images are decoded on demand).

    Args:
        split: ``"train"`` (``train/<wnid>/…``) or ``"val"`` (``val/images`` + ``val_annotations.txt``).
        root: the extracted folder or a data root above it (see :func:`find_tinyimagenet`).
        check_files: check that the listed images and the image folders agree (every image listed, every
            listed image present).
        image_size: ``(H, W)`` of every image; boxes must lie inside it.

    Returns:
        :class:`TinyImageNetSplit`.

    Raises:
        ValueError: unknown split.
        DataNotFoundError: the folder, ``wnids.txt``, a class folder, a box file or the annotations are missing.
        DataFormatError: a malformed line, a box outside the image, an unknown class, duplicate or missing images.
    """
    if split not in ("train", "val"):
        raise ValueError(f"split must be 'train' or 'val' (the labelled splits), got {split!r}")
    folder = find_tinyimagenet(root)
    size = (int(image_size[0]), int(image_size[1]))
    wnids = _read_wnids(folder)
    loader = _load_train if split == "train" else _load_val
    files, labels, boxes = loader(folder, wnids, size, check_files)
    return TinyImageNetSplit(
        root=folder,
        split=split,
        files=files,
        labels=np.asarray(labels, dtype=np.int64),
        boxes=np.asarray(boxes, dtype=np.int64).reshape(-1, 4),
        wnids=wnids,
        class_names=_read_words(folder, wnids),
        image_size=size,
    )


# --------------------------------------------------------------------------- synthetic tree


def make_synthetic_tinyimagenet(
    root: str | os.PathLike[str],
    *,
    num_classes: int = 4,
    train_per_class: int = 10,
    val_per_class: int = 4,
    image_size: int = 64,
    seed: int = 0,
) -> Path:
    """Write a small synthetic dataset in the exact Tiny ImageNet layout (for tests and quick runs).

    Each image is noise with one class-coloured, textured rectangle (the object) at a random place; the
    rectangle is the image's box. Returns the ``tiny-imagenet-200`` folder created under ``root``.
    """
    from PIL import Image

    if num_classes < 1 or train_per_class < 1 or val_per_class < 0 or image_size < 8:
        raise ValueError("make_synthetic_tinyimagenet needs num_classes, train_per_class >= 1 and image_size >= 8")
    rng = np.random.default_rng(seed)
    folder = Path(root) / _FOLDER
    wnids = [f"n{90000000 + i:08d}" for i in range(num_classes)]
    colours = rng.integers(40, 255, size=(num_classes, 3))
    S = int(image_size)

    def draw(c: int) -> tuple[np.ndarray, list[int]]:
        img = rng.integers(0, 90, size=(S, S, 3)).astype(np.uint8)
        bw, bh = (int(v) for v in rng.integers(S // 4, S // 2 + 1, size=2))
        x0, y0 = int(rng.integers(0, S - bw + 1)), int(rng.integers(0, S - bh + 1))
        stripes = ((np.arange(bw)[None, :] // (2 + c)) % 2).astype(np.uint8) * 40
        img[y0 : y0 + bh, x0 : x0 + bw] = np.clip(colours[c][None, None, :] - stripes[..., None], 0, 255)
        return img, [x0, y0, x0 + bw - 1, y0 + bh - 1]

    (folder / "val" / "images").mkdir(parents=True, exist_ok=True)
    (folder / "wnids.txt").write_text("".join(w + "\n" for w in wnids))
    (folder / "words.txt").write_text("".join(f"{w}\tsynthetic class {i}\n" for i, w in enumerate(wnids)))
    for label, wnid in enumerate(wnids):
        img_dir = folder / "train" / wnid / "images"
        img_dir.mkdir(parents=True, exist_ok=True)
        lines = []
        for k in range(train_per_class):
            img, box = draw(label)
            name = f"{wnid}_{k}.JPEG"
            Image.fromarray(img).save(img_dir / name, format="JPEG", quality=95)
            lines.append(f"{name}\t" + "\t".join(map(str, box)) + "\n")
        (folder / "train" / wnid / f"{wnid}_boxes.txt").write_text("".join(lines))
    ann = []
    for k in range(num_classes * val_per_class):
        c = k % num_classes
        img, box = draw(c)
        name = f"val_{k}.JPEG"
        Image.fromarray(img).save(folder / "val" / "images" / name, format="JPEG", quality=95)
        ann.append(f"{name}\t{wnids[c]}\t" + "\t".join(map(str, box)) + "\n")
    (folder / "val" / "val_annotations.txt").write_text("".join(ann))
    return folder
