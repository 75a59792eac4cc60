"""Training, evaluation protocols, metrics, presets and paper reproductions."""

from lossattn.train.config import (
    DataConfig,
    ExperimentConfig,
    MethodConfig,
    ProtocolConfig,
    TrainConfig,
    apply_overrides,
    config_from_dict,
    config_to_dict,
    list_presets,
    load_config,
    load_preset,
)
from lossattn.train.metrics import accuracy, instance_retrieval, roc_auc
from lossattn.train.protocols import RunSpec, aggregate, execute_run, plan_runs, prepare_split, run_experiment
from lossattn.train.trainer import EvalResult, FitResult, Trainer, evaluate

__all__ = [
    "DataConfig",
    "EvalResult",
    "ExperimentConfig",
    "FitResult",
    "MethodConfig",
    "ProtocolConfig",
    "RunSpec",
    "TrainConfig",
    "Trainer",
    "accuracy",
    "aggregate",
    "apply_overrides",
    "config_from_dict",
    "config_to_dict",
    "evaluate",
    "execute_run",
    "instance_retrieval",
    "list_presets",
    "load_config",
    "load_preset",
    "plan_runs",
    "prepare_split",
    "roc_auc",
    "run_experiment",
]
