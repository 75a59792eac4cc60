"""The training engine: one loop (:func:`fit` / :class:`Trainer`) for every model, task and strategy.

* :mod:`~lossattn.engine.config` — :class:`TrainConfig` and the per-epoch schedule;
* :mod:`~lossattn.engine.sources` — datasets → batches ``(x, mask, y, index)``;
* :mod:`~lossattn.engine.tasks` — targets, metrics and selection of single-label, multi-label and image runs;
* :mod:`~lossattn.engine.strategies` — one process or DDP;
* :mod:`~lossattn.engine.checkpoint` — the one versioned checkpoint format;
* :mod:`~lossattn.engine.loop` — the loop; :mod:`~lossattn.engine.manyruns` — many small runs as one
  batched computation (the many-runs backend of :func:`fit_many`).
"""

from lossattn.engine.config import SELECTION_RULES, TrainConfig, epoch_schedule
from lossattn.engine.loop import Trainer, evaluate, fit
from lossattn.engine.results import EvalResult, FitResult, MultiLabelEvalResult
from lossattn.engine.runtime import denormals_flushed, flush_denormals
from lossattn.engine.sources import BagSource, Batch, ImageSource, make_source
from lossattn.engine.strategies import DDPStrategy, LocalStrategy, init_distributed
from lossattn.engine.tasks import ImageClassificationTask, MultiLabelTask, SingleLabelTask, Task, task_for

__all__ = [
    "SELECTION_RULES",
    "BagSource",
    "Batch",
    "DDPStrategy",
    "EvalResult",
    "FitResult",
    "ImageClassificationTask",
    "ImageSource",
    "LocalStrategy",
    "MultiLabelEvalResult",
    "MultiLabelTask",
    "SingleLabelTask",
    "Task",
    "TrainConfig",
    "Trainer",
    "denormals_flushed",
    "epoch_schedule",
    "evaluate",
    "fit",
    "flush_denormals",
    "init_distributed",
    "make_source",
    "task_for",
]
