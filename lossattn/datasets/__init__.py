"""Data layer of lossattn: bag datasets, benchmark loaders, bag generators, user formats, batching.

Conventions (see ``docs/architecture.md``): bag labels are integers ``0 .. K-1`` (0 = negative), or ``-1`` for
every bag of an unlabeled dataset (``has_labels`` is False); the user's own label values are mapped to
``0 .. K-1`` by :func:`encode_labels` and kept in ``label_values``. Instance labels are integers with ``-1`` =
unknown; a batch is ``x (B, N, *instance_shape)`` plus ``mask (B, N)`` (True = real).
Feature standardisation is a pipeline step (:class:`Standardizer`, fitted on training bags only), never done
by a loader.
"""

from .assumptions import (
    ASSUMPTION_TESTS,
    AssumptionTest,
    make_false_frequency_bags,
    make_multi_concept_bags,
    make_single_concept_bags,
)
from .bagfiles import BagFileHeader, read_bag_features, read_bag_header, read_coords
from .bags import Bag, BagDataset, BaseBagDataset
from .benchmarks import load, read_andrews_mat, read_mil_csv, read_uci_clean
from .catalog import ALIASES, dataset_names, resolve_dataset_name
from .cifar import CIFAR10_CLASSES, load_cifar10, make_cifar10_bags
from .collate import BagBatch, collate_bags
from .columns import AUTO
from .digits import load_digits_split, make_digits_bags
from .errors import DataFormatError, DataNotFoundError, DownloadError, MissingDependencyError, UnknownDatasetError
from .folder import FeatureFolderDataset, load_feature_folder
from .generators import bags_from_pool_indices, make_bags_from_pool, sample_bag_sizes
from .idx import read_idx, write_idx
from .images import ImageArrayDataset, class_balanced_subset, image_transforms, take_images
from .info import DatasetInfo, FileInfo, dataset_info, list_datasets
from .labels import LabelEncoding, check_trainable, encode_labels, normalize_label
from .mnist import load_mnist, make_mnist_bags
from .multilabel import (
    is_multilabel,
    make_multilabel_dataset,
    make_multilabel_digits_bags,
    make_multilabel_mnist_bags,
    multilabel_targets,
    num_labels_of,
)
from .samplers import BucketBatchSampler
from .sources import cache_dir, data_root, download_url, fetch, is_present
from .splits import (
    repeated_stratified_kfold,
    split_indices,
    stratified_group_kfold,
    stratified_kfold,
    train_val_split,
)
from .table import load_table
from .tinyimagenet import TinyImageNetSplit, find_tinyimagenet, load_tinyimagenet, make_synthetic_tinyimagenet
from .transforms import Standardizer

__all__ = [
    "ASSUMPTION_TESTS",
    "AssumptionTest",
    "make_false_frequency_bags",
    "make_multi_concept_bags",
    "make_single_concept_bags",
    "ALIASES",
    "AUTO",
    "BagFileHeader",
    "LabelEncoding",
    "MissingDependencyError",
    "UnknownDatasetError",
    "check_trainable",
    "dataset_names",
    "encode_labels",
    "normalize_label",
    "read_bag_features",
    "read_bag_header",
    "read_coords",
    "resolve_dataset_name",
    "split_indices",
    "stratified_group_kfold",
    "TinyImageNetSplit",
    "find_tinyimagenet",
    "load_tinyimagenet",
    "make_synthetic_tinyimagenet",
    "Bag",
    "BagBatch",
    "BagDataset",
    "BaseBagDataset",
    "BucketBatchSampler",
    "CIFAR10_CLASSES",
    "DataFormatError",
    "DataNotFoundError",
    "DatasetInfo",
    "DownloadError",
    "FeatureFolderDataset",
    "FileInfo",
    "ImageArrayDataset",
    "Standardizer",
    "bags_from_pool_indices",
    "cache_dir",
    "class_balanced_subset",
    "collate_bags",
    "data_root",
    "dataset_info",
    "download_url",
    "fetch",
    "image_transforms",
    "is_multilabel",
    "is_present",
    "list_datasets",
    "load",
    "load_cifar10",
    "load_digits_split",
    "load_feature_folder",
    "load_mnist",
    "load_table",
    "make_bags_from_pool",
    "make_cifar10_bags",
    "make_digits_bags",
    "make_mnist_bags",
    "make_multilabel_dataset",
    "make_multilabel_digits_bags",
    "make_multilabel_mnist_bags",
    "multilabel_targets",
    "num_labels_of",
    "read_andrews_mat",
    "read_idx",
    "read_mil_csv",
    "read_uci_clean",
    "repeated_stratified_kfold",
    "sample_bag_sizes",
    "stratified_kfold",
    "take_images",
    "train_val_split",
    "write_idx",
]
