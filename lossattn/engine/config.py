"""Training settings of one run (:class:`TrainConfig`) and the per-epoch schedule they imply."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from lossattn.schedules import adam_betas, consistency_weight, learning_rate

__all__ = ["EVAL_MAX_INSTANCES", "SELECTION_RULES", "THRESHOLD_RULES", "TrainConfig", "epoch_schedule"]

#: default bound of an evaluation / prediction batch's padded instance count (bags × its largest bag): 64 slides
#: of 20,000 patches are evaluated 3 at a time, 64 small bags of 10 instances in one batch
EVAL_MAX_INSTANCES = 65_536

#: how the epoch of a run is selected on its validation bags (never on test bags):
#: ``error`` — lowest validation error, then lowest validation loss (the paper's stopping criterion);
#: ``balanced_error`` — lowest 1 − balanced accuracy, then loss (imbalanced classes: a model that predicts the
#: majority class scores 0.5, not the prior); ``loss`` — lowest validation loss; ``auc`` — highest validation
#: AUC, then lowest loss.
SELECTION_RULES = ("error", "balanced_error", "loss", "auc")

#: how a binary model turns its positive-class probability into a prediction: ``argmax`` — the more probable
#: class (threshold 0.5); ``validation`` — the threshold that maximises balanced accuracy on the run's validation
#: bags (:func:`lossattn.metrics.best_threshold`), stored in ``best.pt`` and used for test bags and predictions
THRESHOLD_RULES = ("argmax", "validation")


@dataclass
class TrainConfig:
    """Optimisation and schedule settings of a run (Shi et al. 2020, Sec. 4 and the supplement).

    ``lr`` is the maximum learning rate; the schedule multiplies it by the Gaussian ramp-up over
    ``rampup_length`` epochs and the ramp-down over the last ``rampdown_length`` epochs. With
    ``beta1_rampdown_to`` set, Adam β1 moves from ``betas[0]`` to it during the ramp-down; with
    ``beta2_after_rampup`` set, β2 switches to it once the ramp-up ends. The consistency weight is
    ``consistency_weight · ramp_up(epoch, consistency_rampup)`` (Laine & Aila 2017).

    ``selection`` is one of :data:`SELECTION_RULES`, ``threshold`` one of :data:`THRESHOLD_RULES`. ``oracle=True`` also evaluates the test bags after every
    epoch to report the reference code's optimistic figure (best test accuracy over epochs); it never
    influences model selection.

    ``flush_denormal`` trains with denormal floats flushed to zero (values below 1.2e-38 only; avoids the
    ~100× slower denormal arithmetic that late one-bag-per-step epochs otherwise hit on x86).
    ``num_workers`` loads training batches in that many background processes (0: in the training process);
    for bags the batches and the result are the same with any number (see :mod:`lossattn.engine.sources`).

    Whole-slide options (bags of thousands of instances; all off by default, the paper trains one bag per step
    on every instance):

    * ``eval_max_instances`` — an evaluation batch holds at most ``eval_batch_size`` bags and at most this many
      padded instances (bags × its largest bag; a larger lone bag is its own batch; None: no bound).
    * ``bucket_by_size`` — with ``batch_size > 1``, batches of bags of similar size (little padding), in a random
      batch order (:class:`~lossattn.datasets.BucketBatchSampler`, seeded by ``(seed, epoch)``).
    * ``train_subsample`` — each training step uses at most this many instances of a bag, drawn without
      replacement, afresh every epoch, seeded by ``(seed, epoch, bag)``; evaluation always uses every instance.
      Not combinable with the consistency cost (its temporal ensemble addresses every instance of a bag).
    * ``instance_chunk`` — a bag's instances go through the model this many at a time, each chunk's
      activations recomputed in the backward pass (:mod:`lossattn.models.chunked`): the loss and the gradients
      equal the in-memory computation (float rounding), the memory is one chunk's activations. For the
      attention models (loss-based attention, attention, gated attention); also used in evaluation.
    """

    epochs: int = 100
    batch_size: int = 1
    lr: float = 1e-4
    weight_decay: float = 0.0
    betas: tuple[float, float] = (0.9, 0.999)
    rampup_length: int = 0
    rampdown_length: int = 0
    rampdown_c: float = 12.5
    beta1_rampdown_to: float | None = None
    beta2_after_rampup: float | None = None
    consistency_weight: float = 0.0
    consistency_rampup: int = 0
    ensemble_momentum: float = 0.6
    grad_clip: float | None = None
    device: str = "cpu"
    amp: bool = False
    eval_batch_size: int = 64
    checkpoint_every: int = 1
    progress: bool = False
    threads: int | None = None
    oracle: bool = False
    flush_denormal: bool = True
    selection: str = "error"
    threshold: str = "argmax"
    num_workers: int = 0
    eval_max_instances: int | None = EVAL_MAX_INSTANCES
    bucket_by_size: bool = False
    train_subsample: int | None = None
    instance_chunk: int | None = None

    def validate(self) -> TrainConfig:
        """Check every field; returns ``self``.

        Raises:
            ValueError: a field out of range or not finite (the message names the field, the value and the range).
        """
        _positive(self, "epochs", "batch_size", "eval_batch_size", "checkpoint_every")
        _finite(self, "lr", "weight_decay", "rampdown_c", "consistency_weight", "ensemble_momentum")
        if not 0 < self.lr <= 1:
            raise ValueError(f"TrainConfig.lr must be in (0, 1] (Adam's largest step per parameter), got {self.lr}")
        if self.weight_decay < 0 or self.consistency_weight < 0:
            raise ValueError(
                f"TrainConfig.weight_decay and consistency_weight must be >= 0, got {self.weight_decay} and "
                f"{self.consistency_weight}"
            )
        if len(self.betas) != 2 or not all(isinstance(b, (int, float)) and 0 <= b < 1 for b in self.betas):
            raise ValueError(f"TrainConfig.betas must be two numbers in [0, 1), got {self.betas}")
        for name in ("beta1_rampdown_to", "beta2_after_rampup"):
            value = getattr(self, name)
            if value is not None and not (isinstance(value, (int, float)) and 0 <= value < 1):
                raise ValueError(f"TrainConfig.{name} must be None or a number in [0, 1), got {value!r}")
        if not 0 <= self.rampdown_length <= self.epochs:
            raise ValueError(
                f"TrainConfig.rampdown_length must be in [0, epochs={self.epochs}], got {self.rampdown_length}"
            )
        if self.rampup_length < 0 or self.consistency_rampup < 0:
            raise ValueError("TrainConfig.rampup_length and consistency_rampup must be >= 0")
        if not 0 <= self.ensemble_momentum < 1:
            raise ValueError(f"TrainConfig.ensemble_momentum must be in [0, 1), got {self.ensemble_momentum}")
        if self.grad_clip is not None and not (math.isfinite(self.grad_clip) and self.grad_clip > 0):
            raise ValueError(f"TrainConfig.grad_clip must be None or a finite number > 0, got {self.grad_clip}")
        if self.selection not in SELECTION_RULES:
            raise ValueError(
                f"TrainConfig.selection must be one of {', '.join(SELECTION_RULES)}, got {self.selection!r}"
            )
        if self.threshold not in THRESHOLD_RULES:
            raise ValueError(
                f"TrainConfig.threshold must be one of {', '.join(THRESHOLD_RULES)}, got {self.threshold!r}"
            )
        if self.threads is not None and self.threads < 1:
            raise ValueError(f"TrainConfig.threads must be None or >= 1, got {self.threads}")
        if self.num_workers < 0:
            raise ValueError(f"TrainConfig.num_workers must be >= 0, got {self.num_workers}")
        for name in ("eval_max_instances", "train_subsample", "instance_chunk"):
            value = getattr(self, name)
            if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
                raise ValueError(f"TrainConfig.{name} must be None or a positive integer, got {value!r}")
        if self.train_subsample is not None and self.consistency_weight > 0:
            raise ValueError(
                f"TrainConfig.train_subsample={self.train_subsample} cannot be combined with consistency_weight="
                f"{self.consistency_weight}: the temporal ensemble needs the weights of every instance of a bag; "
                "set one of them off"
            )
        return self


def _positive(obj: Any, *names: str) -> None:
    for name in names:
        value = getattr(obj, name)
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"{type(obj).__name__}.{name} must be a positive integer, got {value!r}")


def _finite(obj: Any, *names: str) -> None:
    for name in names:
        value = getattr(obj, name)
        if not isinstance(value, (int, float)) or not math.isfinite(value):
            raise ValueError(f"{type(obj).__name__}.{name} must be a finite number, got {value!r}")


def epoch_schedule(c: TrainConfig, epoch: int) -> dict[str, float]:
    """The settings of one epoch: ``lr``, Adam ``beta1`` / ``beta2`` and the consistency weight.

    ``lr · ramp_up · ramp_down``; β1 from ``betas[0]`` to ``beta1_rampdown_to`` with the ramp-down; β2 from
    ``betas[1]`` to ``beta2_after_rampup`` once the ramp-up ends; ``consistency_weight · ramp_up`` over
    ``consistency_rampup`` epochs. One function for every loop and the many-runs backend.
    """
    lr = learning_rate(epoch, c.lr, c.epochs, c.rampup_length, c.rampdown_length, c.rampdown_c)
    b1_end = c.beta1_rampdown_to if c.beta1_rampdown_to is not None else c.betas[0]
    b2_end = c.beta2_after_rampup if c.beta2_after_rampup is not None else c.betas[1]
    b1, b2 = adam_betas(
        epoch,
        c.epochs,
        c.rampup_length,
        c.rampdown_length,
        c.rampdown_c,
        (c.betas[0], b1_end),
        (c.betas[1], b2_end),
    )
    omega = consistency_weight(epoch, c.consistency_weight, c.consistency_rampup)
    return {"lr": lr, "beta1": b1, "beta2": b2, "consistency_weight": omega}
