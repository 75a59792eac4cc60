"""Predict with and explain an image-classification checkpoint (ResNet18-MIL, Tables 4 and 5).

An image run (:func:`lossattn.experiments.image_runs.train_image_classifier` with a ``run_dir``) writes a
``best.pt`` holding ``input_kind = "image"``, the model name and arguments, the normalisation, the class
names and the data config. Here each image is one bag whose instances are the positions of the last
feature map: :func:`load_images` gets the images to look at (the checkpoint's own test images, a named
dataset, or the user's image files), :func:`predict_images` returns per-image predictions plus every
image's weight map (:meth:`~lossattn.models.output.MILOutput.localization_map`: the attention
weights, or the class activation map of the predicted class for mean/max pooling) as
:class:`~lossattn.inference.predict.Predictions`, so the bag and instance CSV writers serve both kinds of model.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from lossattn.datasets.images import ImageArrayDataset, image_transforms
from lossattn.engine.sources import ImageSource
from lossattn.engine.tasks import ImageClassificationTask, eval_mode
from lossattn.inference.checkpoint import TrainedModel
from lossattn.inference.predict import Predictions

__all__ = [
    "ImageInputs",
    "IMAGE_SUFFIXES",
    "evaluate_image_checkpoint",
    "image_dataset",
    "is_image_checkpoint",
    "load_images",
    "predict_images",
]

#: file suffixes read as images from a user's file or folder
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff")

_CIFAR_NAMES = ("cifar10-images", "cifar10", "cifar-10", "cifar10_images")
_TINY_NAMES = ("tinyimagenet-images", "tinyimagenet", "tiny-imagenet", "tiny-imagenet-200", "tinyimagenet_images")


@dataclass
class ImageInputs:
    """Images to predict on: uint8 ``(n, C, H, W)``, names, optional labels and boxes ``(x0, y0, x1, y1)``."""

    images: np.ndarray
    names: list[str]
    labels: np.ndarray | None
    boxes: np.ndarray | None
    description: str


def is_image_checkpoint(trained: TrainedModel) -> bool:
    """True when the checkpoint's model takes images (every feature-map position an instance)."""
    return getattr(trained.model, "input_kind", "instances") == "image"


def _pick(n: int, count: int | None, select: str, seed: int) -> np.ndarray:
    if select not in ("first", "random"):
        raise ValueError(f"select must be 'first' or 'random' for images, got {select!r}")
    if count is None or count >= n:
        return np.arange(n)
    if select == "random":
        return np.sort(np.random.default_rng(seed).choice(n, size=count, replace=False))
    return np.arange(count)


def _image_files(path: Path) -> list[Path]:
    if path.is_file():
        return [path]
    files = sorted(p for p in path.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
    if not files:
        raise ValueError(f"no image files ({', '.join(IMAGE_SUFFIXES)}) in {path}")
    return files


def _read_image(path: Path, size: tuple[int, int] | None) -> np.ndarray:
    """Decode one file to uint8 ``(3, H, W)``, resized (bilinear) to ``size = (H, W)`` when given."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as im:
            im = im.convert("RGB")
            if size is not None and im.size != (size[1], size[0]):
                im = im.resize((size[1], size[0]), Image.BILINEAR)
            arr = np.asarray(im, dtype=np.uint8)
    except (UnidentifiedImageError, OSError) as exc:
        raise ValueError(f"cannot read image {path}: {exc}") from exc
    return np.ascontiguousarray(arr.transpose(2, 0, 1))


def load_images(
    spec: str | None,
    trained: TrainedModel,
    *,
    root: str | None = None,
    split: str = "test",
    count: int | None = None,
    select: str = "first",
    seed: int = 0,
) -> ImageInputs:
    """The images to run an image checkpoint on.

    Args:
        spec: ``None`` (the checkpoint's dataset), ``"cifar10"``, ``"tinyimagenet"`` (its ``val`` images,
            with boxes, are the test split), or a path to an image file or a folder of images (read
            recursively, sorted; resized to the checkpoint's image size when they differ).
        trained: the loaded checkpoint.
        root: data root for named datasets (default: the checkpoint's, else ``$LOSSATTN_DATA``).
        split: ``"test"`` or ``"train"`` for named datasets.
        count: how many images (default all); ``select`` picks ``"first"`` or ``"random"`` ones.
        seed: seed of the random selection.

    Raises:
        ValueError: Unknown dataset name, missing files, unreadable images.
    """
    if split not in ("train", "test"):
        raise ValueError(f"split must be 'train' or 'test' for image data, got {split!r}")
    dc = trained.data_config or {}
    name = spec if spec is not None else dc.get("name")
    if name is None:
        raise ValueError("no images given and the checkpoint does not say what it was trained on")
    shape = _checkpoint_image_shape(trained)
    path = Path(str(name)).expanduser()
    if spec is not None and (path.exists() or any(sep in str(spec) for sep in ("/", "\\"))):
        if not path.exists():
            raise ValueError(f"image path {path} does not exist")
        files = _image_files(path)
        idx = _pick(len(files), count, select, seed)
        size = None if shape is None else (int(shape[1]), int(shape[2]))
        images = np.stack([_read_image(files[i], size) for i in idx])
        resized = "" if size is None else f", resized to {size[0]}×{size[1]}"
        return ImageInputs(
            images, [str(files[i]) for i in idx], None, None, f"{len(idx)} image file(s) from {path}{resized}"
        )
    key = str(name).lower()
    data_root = root if root is not None else dc.get("root")
    if key in _CIFAR_NAMES:
        from lossattn.datasets import load_cifar10

        images, labels = load_cifar10(split, data_root, cache=False)
        idx = _pick(len(labels), count, select, seed)
        taken = np.ascontiguousarray(np.asarray(images[idx]))
        names = [f"cifar10_{split}_{i}" for i in idx]
        return ImageInputs(taken, names, np.asarray(labels)[idx], None, f"{len(idx)} CIFAR-10 {split} images")
    if key in _TINY_NAMES:
        from lossattn.datasets.tinyimagenet import load_tinyimagenet

        part = load_tinyimagenet("val" if split == "test" else "train", data_root)
        idx = _pick(len(part), count, select, seed)
        taken = np.stack([part.image(int(i)) for i in idx])
        names = [part.files[int(i)].name for i in idx]
        where = "val (test)" if split == "test" else "train"
        return ImageInputs(taken, names, part.labels[idx], part.boxes[idx], f"{len(idx)} Tiny ImageNet {where} images")
    known = ", ".join((*_CIFAR_NAMES[:1], *_TINY_NAMES[:1]))
    raise ValueError(f"unknown image data {name!r}; give {known}, an image file or a folder of images")


def _checkpoint_image_shape(trained: TrainedModel) -> tuple[int, ...] | None:
    shape = trained.instance_shape
    return None if shape is None or len(shape) != 3 else tuple(int(s) for s in shape)


def _normalization(trained: TrainedModel) -> tuple[Sequence[float], Sequence[float]]:
    norm = trained.extra.get("normalization") or {}
    if "mean" not in norm or "std" not in norm:
        raise ValueError(f"{trained.path} holds no image normalisation (mean/std); was it written by an image run?")
    return norm["mean"], norm["std"]


def image_dataset(trained: TrainedModel, inputs: ImageInputs):
    """``inputs`` as an :class:`~lossattn.datasets.images.ImageArrayDataset` with the checkpoint's evaluation
    transform (its normalisation); unlabelled images get label -1."""
    images = inputs.images
    if images.ndim != 4 or images.dtype != np.uint8:
        raise TypeError(f"images must be uint8 (n, C, H, W), got {images.dtype} {images.shape}")
    shape = _checkpoint_image_shape(trained)
    if shape is not None and tuple(images.shape[1:]) != shape:
        raise ValueError(
            f"checkpoint {trained.method or trained.model_name!r} expects images of shape {shape}, got {tuple(images.shape[1:])}"
        )
    mean, std = _normalization(trained)
    labels = np.full(len(images), -1, dtype=np.int64) if inputs.labels is None else inputs.labels
    return ImageArrayDataset(images, labels, image_transforms(False, mean, std, tuple(images.shape[2:])), inputs.boxes)


def evaluate_image_checkpoint(
    trained: TrainedModel, inputs: ImageInputs, *, batch_size: int = 128, device: str | torch.device = "cpu"
):
    """Loss, top-1, top-5 and (with boxes) localization AP, by the task that scores the Table 4/5 runs."""
    if inputs.labels is None:
        raise ValueError("these images have no labels: nothing to evaluate against")
    ds = image_dataset(trained, inputs)
    task = ImageClassificationTask(localization=inputs.boxes is not None)
    device = torch.device(device)
    return task.evaluate(trained.model.to(device), ImageSource(ds), batch_size, device)


@torch.no_grad()
def predict_images(
    trained: TrainedModel, inputs: ImageInputs, *, batch_size: int = 128, device: str | torch.device = "cpu"
) -> Predictions:
    """Class probabilities and feature-map weights of every image.

    Returns:
        :class:`~lossattn.inference.predict.Predictions` with one "bag" per image: ``weights[i]`` is the flattened
        ``(h·w,)`` map of image ``i`` (row-major over the feature map, summing to 1) and
        ``extra["maps"]`` the maps ``(n, h, w)``; ``extra["boxes"]`` the ground-truth boxes when known.
    """
    ds = image_dataset(trained, inputs)
    device = torch.device(device)
    model = trained.model.to(device)
    probs, maps = [], []
    with eval_mode(model):
        for batch in ImageSource(ds).eval_batches(batch_size):
            out = model(batch.x.to(device))
            probs.append(out.bag_logits.float().softmax(dim=1).cpu())
            maps.append(out.localization_map().float().cpu())  # (B, h, w)
    maps_all = torch.cat(maps).numpy()
    n, h, w = maps_all.shape
    flat = maps_all.reshape(n, h * w)  # (n, h*w), row-major positions
    return Predictions(
        names=list(inputs.names),
        labels=None if inputs.labels is None else np.asarray(inputs.labels, dtype=np.int64),
        probabilities=torch.cat(probs).numpy(),
        weights=[row for row in flat],
        instance_probabilities=None,
        instance_labels=[np.full(h * w, -1, dtype=np.int64) for _ in range(n)],
        bag_sizes=np.full(n, h * w, dtype=np.int64),
        class_names=trained.extra.get("class_names"),
        extra={"maps": maps_all, "boxes": inputs.boxes, "grid": (h, w)},
    )
