"""Protocols: experiment configs and presets, splits (repeated CV, fixed), runs, fan-out, summaries, DDP runs.

An :class:`ExperimentConfig` names the data, the protocol, the training settings and the methods compared;
:func:`run_experiment` trains every run of it (:func:`plan_runs`) and aggregates the records;
:func:`execute_run` trains one. :func:`compare_methods` pairs every method with a reference over the same splits
(mean difference, standard error, interval, wins/ties/losses, paired test) and :func:`spread_summary` separates
fold-to-fold from repeat-to-repeat spread: every result and report carries both.
"""

from lossattn.protocols.comparison import PAIRED_TESTS, compare_methods, spread_summary
from lossattn.protocols.config import (
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
from lossattn.protocols.fanout import ENGINES, run_experiment, run_group
from lossattn.protocols.runs import RunSpec, execute_run, plan_runs, prepare_run, prepare_split, run_seed
from lossattn.protocols.summary import aggregate, protocol_description

__all__ = [
    "ENGINES",
    "PAIRED_TESTS",
    "DataConfig",
    "ExperimentConfig",
    "MethodConfig",
    "ProtocolConfig",
    "RunSpec",
    "TrainConfig",
    "aggregate",
    "apply_overrides",
    "compare_methods",
    "config_from_dict",
    "config_to_dict",
    "execute_run",
    "list_presets",
    "load_config",
    "load_preset",
    "plan_runs",
    "prepare_run",
    "prepare_split",
    "protocol_description",
    "run_experiment",
    "run_group",
    "run_seed",
    "spread_summary",
]
