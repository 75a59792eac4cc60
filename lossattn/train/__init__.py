"""Deprecated alias of lossattn 0.1's training package, kept for this release.

Its names now live where the layout says: the loop in :mod:`lossattn.engine`, experiment configs, runs and
fan-out in :mod:`lossattn.protocols`, metrics in :mod:`lossattn.metrics`, the paper's tables and figures in
:mod:`lossattn.experiments`. ``from lossattn.train import Trainer, TrainConfig, run_experiment`` keeps working,
and ``python -m lossattn.train.ddp`` runs :mod:`lossattn.protocols.ddp`.
"""

from lossattn.engine import EvalResult, FitResult, TrainConfig, Trainer, evaluate
from lossattn.metrics import accuracy, instance_retrieval, roc_auc
from lossattn.protocols import (
    DataConfig,
    ExperimentConfig,
    MethodConfig,
    ProtocolConfig,
    RunSpec,
    aggregate,
    apply_overrides,
    config_from_dict,
    config_to_dict,
    execute_run,
    list_presets,
    load_config,
    load_preset,
    plan_runs,
    prepare_split,
    run_experiment,
)

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
