"""Inference: a trained checkpoint rebuilt, the bags to score resolved, predictions and their CSV files.

:func:`load_trained` (a ``best.pt`` or its run folder) → :func:`resolve_data` / :func:`prepare_data` (the bags,
standardised with the run's statistics) → :func:`predict_bags` → :func:`write_bag_csv` /
:func:`write_instance_csv`. Image-classification checkpoints: :mod:`lossattn.inference.images`. The fold models
of a cv run as one averaged model: :mod:`lossattn.inference.ensemble`.
"""

from lossattn.inference.checkpoint import TrainedModel, find_checkpoint, load_trained
from lossattn.inference.data import ResolvedData, check_compatible, prepare_data, resolve_data, resolve_dataset_name
from lossattn.inference.ensemble import FoldEnsemble, load_fold_ensemble, predict_ensemble, resolve_ensemble_data
from lossattn.inference.predict import Predictions, predict_bags, write_bag_csv, write_instance_csv

__all__ = [
    "FoldEnsemble",
    "Predictions",
    "ResolvedData",
    "TrainedModel",
    "check_compatible",
    "find_checkpoint",
    "load_fold_ensemble",
    "load_trained",
    "predict_bags",
    "predict_ensemble",
    "prepare_data",
    "resolve_data",
    "resolve_dataset_name",
    "resolve_ensemble_data",
    "write_bag_csv",
    "write_instance_csv",
]
