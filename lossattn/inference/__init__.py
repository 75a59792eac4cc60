"""Inference: a trained checkpoint rebuilt, the bags to score resolved, predictions and their CSV files.

:func:`load_trained` (a ``best.pt`` or its run folder) → :func:`resolve_data` / :func:`prepare_data` (the bags,
standardised with the run's statistics) → :func:`predict_bags` → :func:`write_bag_csv` /
:func:`write_instance_csv`. Image-classification checkpoints: :mod:`lossattn.inference.images`.
"""

from lossattn.inference.checkpoint import TrainedModel, find_checkpoint, load_trained
from lossattn.inference.data import ResolvedData, check_compatible, prepare_data, resolve_data, resolve_dataset_name
from lossattn.inference.predict import Predictions, predict_bags, write_bag_csv, write_instance_csv

__all__ = [
    "Predictions",
    "ResolvedData",
    "TrainedModel",
    "check_compatible",
    "find_checkpoint",
    "load_trained",
    "predict_bags",
    "prepare_data",
    "resolve_data",
    "resolve_dataset_name",
    "write_bag_csv",
    "write_instance_csv",
]
