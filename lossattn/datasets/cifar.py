"""CIFAR-10 images (python pickle batches or JPEG zip) and the CIFAR10-bags generator (Shi et al. 2020, Sec. 5, Table 3).

Accepted layouts, in order of preference:

* pickle batches (lossless; the official ``cifar-10-python.tar.gz`` extracted, torchvision layout):
  ``<root>/cifar10/cifar-10-batches-py/`` or ``<root>/cifar-10-batches-py/`` holding ``data_batch_1..5`` and
  ``test_batch``;
* JPEG zips (quality-75 re-encodings, so not bit-exact CIFAR-10): ``<root>/cifar10/cifar10_{split}_jpeg_q75.zip``
  with entries ``<split>/<class name>/NNNN.jpg``.

JPEG images are decoded with Pillow. With ``cache=True`` a whole split is decoded once and stored as ``.npy``
under the per-user cache folder (never under the data root, which may be read-only); with ``cache=False``
only the images a generator needs are decoded.
"""

from __future__ import annotations

import hashlib
import io
import os
import pickle
import tempfile
import zipfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from .bags import BagDataset
from .catalog import cifar10_candidates, get_spec
from .errors import DataFormatError, DataNotFoundError
from .generators import make_bags_from_pool
from .sources import cache_dir, data_root, find_data_file, missing_data_error

__all__ = ["CIFAR10_CLASSES", "CIFAR10_MEAN", "CIFAR10_STD", "load_cifar10", "make_cifar10_bags", "JpegZipImages"]

CIFAR10_CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")
CIFAR10_MEAN = (0.4914, 0.4822, 0.4465)
CIFAR10_STD = (0.2470, 0.2435, 0.2616)


def _check_split(split: str) -> str:
    if split not in ("train", "test"):
        raise ValueError(f"split must be 'train' or 'test', got {split!r}")
    return split


def read_pickle_batch(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """Reads one CIFAR-10 python batch.

    Returns:
        uint8 images ``(n, 3, 32, 32)`` and int64 labels ``(n,)``.

    Raises:
        DataFormatError: Not a CIFAR batch (unpickling fails, keys or shapes wrong).
    """
    try:
        with open(path, "rb") as f:
            d = pickle.load(f, encoding="bytes")  # noqa: S301 - the standard CIFAR-10 format is a pickle
    except Exception as e:  # pickle raises many types on damaged input
        raise DataFormatError(f"{path}: not a readable CIFAR-10 pickle batch, truncated or corrupt ({e})") from e
    if not isinstance(d, dict):
        raise DataFormatError(f"{path}: expected a dict with 'data' and 'labels', got {type(d).__name__}")
    data = d.get(b"data", d.get("data"))
    labels = d.get(b"labels", d.get("labels"))
    if data is None or labels is None:
        raise DataFormatError(f"{path}: missing 'data' or 'labels' (keys {sorted(map(str, d))})")
    data = np.asarray(data, dtype=np.uint8)
    labels = np.asarray(labels, dtype=np.int64).ravel()
    if data.ndim != 2 or data.shape[1] != 3072 or data.shape[0] != labels.shape[0]:
        raise DataFormatError(
            f"{path}: 'data' has shape {data.shape} for {labels.shape[0]} labels; expected (n, 3072) uint8"
        )
    if labels.size and (labels.min() < 0 or labels.max() > 9):
        raise DataFormatError(f"{path}: labels outside 0..9")
    return data.reshape(-1, 3, 32, 32), labels


def _decode_jpeg(blob: bytes, where: str) -> np.ndarray:
    from PIL import Image

    try:
        with Image.open(io.BytesIO(blob)) as im:
            arr = np.asarray(im.convert("RGB"), dtype=np.uint8)
    except Exception as e:  # PIL raises OSError/SyntaxError/... on damaged images
        raise DataFormatError(f"{where}: cannot decode the JPEG ({e})") from e
    if arr.shape != (32, 32, 3):
        raise DataFormatError(f"{where}: image of shape {arr.shape}, expected 32x32 RGB")
    return arr.transpose(2, 0, 1)


class JpegZipImages:
    """Lazy, indexable view of the images of a CIFAR-10 JPEG zip (entries ``<split>/<class>/<file>.jpg``).

    Entries are ordered by class index (standard CIFAR-10 order) then file name. Labels come from the folder
    names, so they are known without decoding; ``images[idx]`` decodes only the requested images.

    Args:
        path: The zip file.

    Attributes:
        labels: int64 ``(n,)``.
        members: Entry names, in dataset order.
    """

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        try:
            with zipfile.ZipFile(self.path) as z:
                names = [n for n in z.namelist() if n.lower().endswith((".jpg", ".jpeg", ".png"))]
        except (zipfile.BadZipFile, OSError) as e:
            raise DataFormatError(f"{self.path}: not a readable zip file, truncated or corrupt ({e})") from e
        entries = []
        for n in names:
            parts = n.split("/")
            if len(parts) < 2 or parts[-2] not in CIFAR10_CLASSES:
                raise DataFormatError(
                    f"{self.path}: entry {n!r} is not in a CIFAR-10 class folder (<split>/<class>/<file>.jpg, "
                    f"classes {', '.join(CIFAR10_CLASSES)})"
                )
            entries.append((CIFAR10_CLASSES.index(parts[-2]), n))
        if not entries:
            raise DataFormatError(f"{self.path}: the zip holds no images")
        entries.sort()
        self.members = [n for _, n in entries]
        self.labels = np.array([c for c, _ in entries], dtype=np.int64)

    def __len__(self) -> int:
        return len(self.members)

    def __getitem__(self, idx: Any) -> np.ndarray:
        """Decodes the images at integer positions ``idx`` -> uint8 ``(len(idx), 3, 32, 32)``."""
        pos = np.atleast_1d(np.asarray(idx, dtype=np.int64))
        out = np.empty((pos.shape[0], 3, 32, 32), dtype=np.uint8)
        try:
            with zipfile.ZipFile(self.path) as z:
                for j, p in enumerate(pos.tolist()):
                    name = self.members[p]
                    out[j] = _decode_jpeg(z.read(name), f"{self.path}:{name}")
        except (zipfile.BadZipFile, OSError, EOFError) as e:
            raise DataFormatError(f"{self.path}: cannot read the zip, truncated or corrupt ({e})") from e
        return out

    def decode_all(self) -> np.ndarray:
        """Decodes every image -> uint8 ``(n, 3, 32, 32)``."""
        return self[np.arange(len(self))]


def _cached_decode(images: JpegZipImages, cache_root: Path) -> np.ndarray:
    st = images.path.stat()
    key = hashlib.sha1(f"{images.path.resolve()}|{st.st_size}|{st.st_mtime_ns}".encode()).hexdigest()[:16]
    folder = cache_root / "decoded" / "cifar10"
    target = folder / f"{images.path.stem}-{key}.npy"
    if target.is_file():
        try:
            arr = np.load(target, mmap_mode="r")
            if arr.shape == (len(images), 3, 32, 32):
                return arr
        except (OSError, ValueError):
            pass
    arr = images.decode_all()
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=folder, suffix=".npy.part", delete=False) as f:
            np.save(f, arr)
            tmp = f.name
        os.replace(tmp, target)
    except OSError:
        pass  # a cache that cannot be written is not an error
    return arr


def load_cifar10(
    split: str,
    root: str | os.PathLike[str] | None = None,
    *,
    source: str = "auto",
    cache: bool = True,
) -> tuple[Any, np.ndarray]:
    """Loads one CIFAR-10 split.

    Args:
        split: ``"train"`` (50,000 images) or ``"test"`` (10,000).
        root: Data root (default: :func:`~lossattn.datasets.data_root`).
        source: ``"auto"`` (pickle batches if present, else the JPEG zip), ``"pickle"`` or ``"jpeg"``.
        cache: For the JPEG zip: decode everything once and cache it as ``.npy`` in the user cache folder
            (returns a memory-mapped array). Without it, a lazy :class:`JpegZipImages` is returned.

    Returns:
        ``(images, labels)``: uint8 images ``(n, 3, 32, 32)`` (an array, or a lazy :class:`JpegZipImages`),
        int64 labels ``(n,)`` in ``0..9`` (airplane ... truck).

    Raises:
        DataNotFoundError: No accepted layout present.
        DataFormatError: A file is corrupt or malformed.
    """
    split = _check_split(split)
    if source not in ("auto", "pickle", "jpeg"):
        raise ValueError(f"source must be 'auto', 'pickle' or 'jpeg', got {source!r}")
    base = data_root(root)
    spec = get_spec("cifar10-bags")
    cands = cifar10_candidates(split)
    pickle_cands, jpeg_cands = cands[:2], cands[2:]
    if source in ("auto", "pickle"):
        first = find_data_file(base, pickle_cands)
        if first is not None:
            folder = first.parent
            names = [f"data_batch_{i}" for i in range(1, 6)] if split == "train" else ["test_batch"]
            missing = [n for n in names if not (folder / n).is_file()]
            if missing:
                raise DataNotFoundError(
                    f"cifar10: {folder} lacks {missing}; extract the complete cifar-10-python.tar.gz there"
                )
            parts = [read_pickle_batch(folder / n) for n in names]
            return np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts])
        if source == "pickle":
            raise missing_data_error(spec, base, pickle_cands, f"CIFAR-10 {split} pickle batches")
    zp = find_data_file(base, jpeg_cands)
    if zp is None:
        raise missing_data_error(spec, base, cands, f"CIFAR-10 {split} split")
    lazy = JpegZipImages(zp)
    if cache:
        return _cached_decode(lazy, cache_dir()), lazy.labels
    return lazy, lazy.labels


def make_cifar10_bags(
    split: str,
    num_bags: int,
    target_classes: Sequence[int] = (3, 5, 9),
    mean_bag_size: float = 10.0,
    std_bag_size: float = 2.0,
    seed: int = 0,
    root: str | os.PathLike[str] | None = None,
    *,
    balance: bool = False,
    source: str = "auto",
    cache: bool = True,
) -> BagDataset:
    """CIFAR10-bags: bags of CIFAR-10 images; default targets cat/dog/truck (3/5/9 -> labels 1/2/3).

    Label rules and sampling as in :func:`~lossattn.datasets.make_mnist_bags` (multi-class: at most one target
    class per bag).

    Args:
        split: ``"train"`` (bags from the training images) or ``"test"`` (from the test images).
        num_bags: Number of bags.
        target_classes: Target CIFAR-10 classes (0..9).
        mean_bag_size: Mean bag size (the paper: 10 or 50).
        std_bag_size: Standard deviation of the bag size (the paper: 2 or 10).
        seed: Seed of the private generator.
        root: Data root.
        balance: Draw bag labels uniformly.
        source: See :func:`load_cifar10`.
        cache: See :func:`load_cifar10`.

    Returns:
        A :class:`BagDataset` named ``"cifar10-bags"``: instances float32 ``(n_i, 3, 32, 32)`` normalised with
        the CIFAR-10 channel mean/std, ``source_index`` = image index in the split.
    """
    images, labels = load_cifar10(split, root, source=source, cache=cache)
    targets = tuple(int(c) for c in target_classes)
    bad = [c for c in targets if not 0 <= c <= 9]
    if bad:
        raise ValueError(f"target_classes must be CIFAR-10 classes 0..9, got {bad}")
    names = ["none"] + [CIFAR10_CLASSES[c] for c in targets] if len(targets) > 1 else ["negative", "positive"]
    return make_bags_from_pool(
        images,
        labels,
        num_bags,
        targets,
        mean_bag_size,
        std_bag_size,
        seed,
        balance=balance,
        normalize=(CIFAR10_MEAN, CIFAR10_STD),
        name="cifar10-bags",
        split=split,
        class_names=names,
    )
