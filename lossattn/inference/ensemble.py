"""A fold ensemble: the k (or k × repeats) fold models of a cross-validation run, predicting as one model.

A cv run leaves one trained model per (repeat, fold) in ``<out>/<method>/r<R>_f<F>/best.pt``. Averaging their
predictions gives a model trained, between them, on every bag — and, by the same token, one with **no common
held-out bags**: every bag of the cv data was a training (or validation) bag of most members. It can only be
evaluated honestly on bags none of them saw (a held-out file, a generator's fresh test bags), so
:func:`resolve_ensemble_data` requires the data and says when the bags are the cv's own.

Rules (each member is applied exactly as it was trained):

* every member standardises the bags with **its own** training statistics (each fold fitted its own
  standardiser), then predicts;
* bag probabilities: the arithmetic mean over the M members, ``p̄_ik = (1/M) Σ_m p_ik^(m)``;
* instance weights (and instance probabilities, where the model has them): the mean over the members,
  instance by instance — for softmax attention each member's weights sum to 1 over a bag, so the mean does too;
* binary decision threshold: the mean of the members' thresholds, a member without one (argmax) counting as
  0.5 (the threshold argmax amounts to for two classes); None (argmax) when no member has one.

The members must agree on the model, its arguments, the classes (count, label values, names), the instance
shape, the data they were trained on and whether the features are standardised.
"""

from __future__ import annotations

import copy
import dataclasses
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from lossattn.datasets.catalog import resolve_dataset_name
from lossattn.inference.checkpoint import TrainedModel, load_trained
from lossattn.inference.data import ResolvedData, prepare_data, resolve_data
from lossattn.inference.predict import Predictions, predict_bags
from lossattn.protocols.data import is_generator

__all__ = ["FoldEnsemble", "find_fold_runs", "load_fold_ensemble", "predict_ensemble", "resolve_ensemble_data"]

_RUN = re.compile(r"^r(\d+)_f(\d+)$")


@dataclass
class FoldEnsemble:
    """The fold models of a cv run (``members[m]`` trained on repeat ``keys[m][0]``, fold ``keys[m][1]``)."""

    members: list[TrainedModel]
    keys: list[tuple[int, int]]
    folder: Path

    @property
    def first(self) -> TrainedModel:
        return self.members[0]

    @property
    def threshold(self) -> float | None:
        """Mean of the members' binary decision thresholds (a member without one counts as 0.5), or None."""
        values = [m.decision_threshold for m in self.members]
        if self.first.num_classes != 2 or all(v is None for v in values):
            return None
        return float(np.mean([0.5 if v is None else float(v) for v in values]))

    def describe(self) -> str:
        repeats = sorted({r for r, _ in self.keys})
        return (
            f"fold ensemble of {len(self.members)} models ({len(repeats)} repeat(s): {', '.join(map(str, repeats))}) "
            f"of {self.first.describe()}"
        )


def find_fold_runs(path: str | Path, method: str | None = None, repeat: int | None = None) -> list[Path]:
    """The finished fold runs (folders ``r<R>_f<F>`` with ``best.pt`` and ``result.json``) of one method.

    Args:
        path: A method folder of a cv run (``<out>/<method>``), or the cv output folder (with ``method``, or
            holding the runs of one method only).
        method: The method folder inside ``path``.
        repeat: Only the folds of this repeat (default: every repeat).

    Returns:
        Run folders sorted by (repeat, fold).

    Raises:
        ValueError: ``path`` is not a folder, holds no fold runs or several methods' runs (without ``method``),
            a run is incomplete (``best.pt`` without ``result.json``), or fewer than two runs are left.
    """
    base = Path(path).expanduser()
    if not base.is_dir():
        raise ValueError(f"{base} is not a folder; give the method folder of a cv run (e.g. runs/x/cv/loss_attention)")
    if method is not None:
        if not (base / method).is_dir():
            raise ValueError(f"{base} has no method folder {method!r}; methods there: {', '.join(_methods(base))}")
        base = base / method
    elif not _fold_dirs(base):
        methods = _methods(base)
        if len(methods) > 1:
            raise ValueError(
                f"{base} holds the fold runs of several methods ({', '.join(methods)}); name one with --method"
            )
        if not methods:
            raise ValueError(f"no fold runs (r<R>_f<F>/best.pt) in {base}: give the method folder of a cv run")
        base = base / methods[0]
    runs = _fold_dirs(base)
    if repeat is not None:
        runs = [d for d in runs if _key(d)[0] == repeat]
        if not runs:
            found = sorted({_key(d)[0] for d in _fold_dirs(base)})
            raise ValueError(f"no fold runs of repeat {repeat} in {base}; repeats there: {found}")
    incomplete = [d.name for d in runs if not (d / "result.json").is_file()]
    if incomplete:
        raise ValueError(
            f"fold run(s) {', '.join(incomplete)} in {base} are incomplete (no result.json); finish the cv with --resume"
        )
    if len(runs) < 2:
        raise ValueError(f"a fold ensemble needs at least two fold runs; {base} has {len(runs)}")
    return runs


def _key(d: Path) -> tuple[int, int]:
    """(repeat, fold) of a run folder named ``r<R>_f<F>`` (only called on such folders)."""
    m = _RUN.match(d.name)
    return (int(m.group(1)), int(m.group(2))) if m else (-1, -1)


def _fold_dirs(base: Path) -> list[Path]:
    dirs = [d for d in base.iterdir() if d.is_dir() and _RUN.match(d.name) and (d / "best.pt").is_file()]
    return sorted(dirs, key=_key)


def _methods(base: Path) -> list[str]:
    return sorted(d.name for d in base.iterdir() if d.is_dir() and _fold_dirs(d))


def load_fold_ensemble(
    path: str | Path, method: str | None = None, repeat: int | None = None, device: str | torch.device = "cpu"
) -> FoldEnsemble:
    """Load the fold models of a cv run (see :func:`find_fold_runs`) and check they form one ensemble.

    Raises:
        ValueError: As :func:`find_fold_runs`, or members that differ in model, arguments, classes, instance
            shape, training data or standardisation.
    """
    runs = find_fold_runs(path, method, repeat)
    members = [load_trained(d, device=device) for d in runs]
    _check_members(members, runs)
    return FoldEnsemble(members, [_key(d) for d in runs], runs[0].parent)


def _check_members(members: list[TrainedModel], runs: list[Path]) -> None:
    first = members[0]

    def signature(m: TrainedModel) -> dict[str, Any]:
        return {
            "model": m.model_name,
            "model arguments": m.model_kwargs,
            "number of classes": m.num_classes,
            "label values": m.label_values,
            "class names": m.class_names,
            "instance shape": m.instance_shape,
            "training data": (m.data_config or {}).get("name"),
            "standardised features": m.standardizer is not None,
        }

    ref = signature(first)
    for m, run in zip(members[1:], runs[1:], strict=True):
        for what, value in signature(m).items():
            if value != ref[what]:
                raise ValueError(
                    f"fold run {run} differs from {runs[0]} in its {what} ({value!r} vs {ref[what]!r}); a fold "
                    "ensemble needs the fold models of one cv run of one method"
                )


def resolve_ensemble_data(
    spec: str | None,
    ensemble: FoldEnsemble,
    *,
    root: str | None = None,
    split: str | None = None,
    seed: int | None = None,
    num_bags: int | None = None,
    kwargs: dict[str, Any] | None = None,
) -> ResolvedData:
    """The bags to apply an ensemble to, named by the user (a fold ensemble has no held-out bags of its own).

    As :func:`~lossattn.inference.data.resolve_data`, except that the runs' own held-out fold is never used:
    for the cv's own generator the default is its test bags (drawn apart from the cv's bags), and for the
    cv's own table, folder or benchmark the description says the bags trained the members (optimistic).

    Raises:
        ValueError: No data given, or as :func:`~lossattn.inference.data.resolve_data`.
    """
    if spec is None:
        raise ValueError(
            "a fold ensemble has no common held-out bags: every bag of the cross-validation trained most of its "
            "members; give DATA (new bags, a test file, or a generator's test bags)"
        )
    # without its run config the first member resolves the data like any checkpoint, never its own test fold
    trained = dataclasses.replace(ensemble.first, run_config=None)
    resolved = resolve_data(
        spec, trained, root=root, split=split, seed=seed, num_bags=num_bags, kwargs=copy.deepcopy(kwargs)
    )
    trained_on = (ensemble.first.data_config or {}).get("name")
    same = trained_on is not None and _same_name(trained_on, spec)
    protocol = ((ensemble.first.run_config or {}).get("protocol") or {}).get("kind")
    if same and not is_generator(trained_on) and protocol == "cv":
        resolved.description += (
            " — the cross-validated data itself: each bag trained most of the fold models, so figures on it are "
            "optimistic"
        )
    return resolved


def _same_name(trained_on: str, spec: str) -> bool:
    try:
        return resolve_dataset_name(trained_on) == resolve_dataset_name(spec)
    except ValueError:
        return False


@torch.no_grad()
def predict_ensemble(
    ensemble: FoldEnsemble,
    data: ResolvedData,
    batch_size: int = 64,
    device: str | torch.device = "cpu",
    progress: bool = False,
) -> Predictions:
    """Every member's predictions on the bags (each with its own standardiser), averaged (see the module rules).

    Returns:
        :class:`~lossattn.inference.predict.Predictions` with the mean probabilities, weights and instance
        probabilities and the ensemble's threshold; ``extra`` holds ``member_probabilities`` ``(M, n, K)``,
        ``member_thresholds`` and ``members`` (the run folders' names).
    """
    preds = []
    for member in ensemble.members:
        ds = prepare_data(member, data)  # checks the bags fit; the member's own standardiser
        preds.append(predict_bags(member, ds, batch_size=batch_size, device=device, progress=progress))
    first = preds[0]
    stacked = np.stack([p.probabilities for p in preds])  # (M, n, K)
    weights = _mean_lists([p.weights for p in preds])
    inst_probs = _mean_lists([p.instance_probabilities for p in preds])
    return dataclasses.replace(
        first,
        probabilities=stacked.mean(axis=0),
        weights=weights,
        instance_probabilities=inst_probs,
        threshold=ensemble.threshold,
        extra={
            "member_probabilities": stacked,
            "member_thresholds": [p.threshold for p in preds],
            "members": [f"r{r}_f{f}" for r, f in ensemble.keys],
        },
    )


def _mean_lists(per_member: list[list[np.ndarray] | None]) -> list[np.ndarray] | None:
    """Instance by instance mean over the members of per-bag arrays (None when a member has none)."""
    if any(p is None for p in per_member):
        return None
    n = len(per_member[0])
    return [np.mean([p[i] for p in per_member], axis=0) for i in range(n)]
