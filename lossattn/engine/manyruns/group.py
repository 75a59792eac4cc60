"""The set-up and finish shared by both many-runs backends: run order, packed training bags, epoch tables.

Both backends (the hand-written :class:`~lossattn.engine.manyruns.trainer.VectorizedTrainer` and the
``torch.func`` :class:`~lossattn.engine.manyruns.func.FuncTrainer`) train R runs in lock step, one bag per run per
step. What they share lives here: both draw each run's bag order exactly as the per-run
:class:`~lossattn.engine.Trainer` does, draw the same dropout masks, and finish their runs the same way.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import Tensor

from lossattn.engine.config import TrainConfig
from lossattn.engine.loop import evaluate
from lossattn.engine.manyruns.evalsets import flat_instances
from lossattn.engine.results import FitResult

__all__ = [
    "DROPOUT_STREAM",
    "PackedTraining",
    "RunGroup",
    "dropout_generators",
    "epoch_keep_masks",
    "epoch_tables",
    "copy_improved",
    "finish_runs",
    "keep_mask",
    "order_runs",
    "pack_training",
    "pad_to",
    "runs_of_equal",
    "updates_in_input_order",
]

DROPOUT_STREAM = 0xD40  # a run's dropout generator is np.random.default_rng([run seed, DROPOUT_STREAM])


def runs_of_equal(values: np.ndarray) -> list[tuple[int, int]]:
    """Contiguous ``[a, b)`` slices of equal values in a sorted array."""
    out, a = [], 0
    for i in range(1, len(values) + 1):
        if i == len(values) or values[i] != values[a]:
            out.append((a, i))
            a = i
    return out


def pad_to(a: np.ndarray, n: int) -> np.ndarray:
    """``a`` zero-padded to length ``n``."""
    out = np.zeros(n, dtype=np.asarray(a).dtype)
    out[: len(a)] = a
    return out


def dropout_generators(seeds: Sequence[int]) -> list[np.random.Generator]:
    """One dropout generator per run, ``default_rng([seed, DROPOUT_STREAM])``: both backends draw the same masks."""
    return [np.random.default_rng([int(s) & 0xFFFFFFFF, DROPOUT_STREAM]) for s in seeds]


def keep_mask(rng: np.random.Generator, n: int, width: int, p: float) -> np.ndarray:
    """``(n, width)`` bool dropout keep-mask, each entry True with probability ``1 - p``."""
    q = p * 256
    if q == int(q):  # p a multiple of 1/256 (0.5, 0.25, ...): one random byte per entry, exact
        return rng.integers(0, 256, size=(n, width), dtype=np.uint8) >= int(q)
    return rng.random((n, width), dtype=np.float32) >= p


@dataclass
class RunGroup:
    """The runs of a group sorted by number of training bags, descending.

    The runs still active at step ``t`` are then a prefix, and runs with equally many bags (the same number of
    Adam steps, hence the same bias correction) are contiguous: ``classes`` holds their ``[a, b)`` slices.
    ``order[i]`` is the input position of sorted run ``i``.
    """

    order: np.ndarray  # (R,)
    n_sorted: np.ndarray  # (R,) training bags per run
    seeds: list[int]
    models: list[Any]
    trains: list[Any]
    vals: list[Any]
    tests: list[Any]
    classes: list[tuple[int, int]]
    has_val: list[bool]
    has_test: list[bool]
    oracle_test: list[bool]  # test bags scored every epoch, for the labelled oracle figure only

    @property
    def ev_tests(self) -> list[Any]:
        """The test sets evaluated per epoch (None where the run records no oracle figure)."""
        return [t if o else None for t, o in zip(self.tests, self.oracle_test, strict=True)]


def order_runs(
    models: Sequence[Any],
    seeds: Sequence[int],
    train_sets: Sequence[Any],
    val_sets: Sequence[Any] | None,
    test_sets: Sequence[Any] | None,
    oracle: bool,
) -> RunGroup:
    """Check that every run has its sets and sort the runs (see :class:`RunGroup`).

    Raises:
        ValueError: a set count differs from the number of runs, or a training set has no bags.
    """
    R = len(models)
    if len(train_sets) != R:
        raise ValueError(f"got {len(train_sets)} training sets for {R} runs")
    vals = list(val_sets) if val_sets is not None else [None] * R
    tests = list(test_sets) if test_sets is not None else [None] * R
    if len(vals) != R or len(tests) != R:
        raise ValueError("need one validation and one test set (or None) per run")
    for r, ds in enumerate(train_sets):
        if len(ds) == 0:
            raise ValueError(f"the training set of run {r} (seed {seeds[r]}) has no bags")
    n_train = np.array([len(ds) for ds in train_sets], dtype=np.int64)
    order = np.argsort(-n_train, kind="stable")
    tests_sorted = [tests[i] for i in order]
    has_test = [t is not None and len(t) > 0 for t in tests_sorted]
    return RunGroup(
        order=order,
        n_sorted=n_train[order],
        seeds=[int(seeds[i]) for i in order],
        models=[models[i] for i in order],
        trains=[train_sets[i] for i in order],
        vals=[vals[i] for i in order],
        tests=tests_sorted,
        classes=[(int(a), int(b)) for a, b in runs_of_equal(n_train[order])],
        has_val=[vals[i] is not None and len(vals[i]) > 0 for i in order],
        has_test=has_test,
        oracle_test=[bool(oracle) and h for h in has_test],
    )


@dataclass
class PackedTraining:
    """The training instances of all runs as one flat matrix, plus one zero row that padding points at.

    Run ``r``'s instances are rows ``base[r] .. base[r] + counts[r] - 1`` of ``X``; its bag ``j`` starts at row
    ``bag_start[r][j]``. The ``*_tab`` arrays hold each run's bag sizes / starts / labels padded to ``T`` (the
    largest training set); ``active_at[t]`` is the number of runs that still have a bag at step ``t``.
    """

    X: Tensor  # (sum of counts + 1, D)
    pad_row: int
    base: np.ndarray  # (R + 1,)
    counts: np.ndarray  # (R,)
    sizes: list[np.ndarray]
    T: int
    active_at: np.ndarray  # (T,)
    size_tab: np.ndarray  # (R, T)
    start_tab: np.ndarray  # (R, T)
    label_tab: np.ndarray  # (R, T)


def pack_training(group: RunGroup, device: torch.device) -> PackedTraining:
    """Flatten every run's training bags into one matrix on ``device`` (see :class:`PackedTraining`)."""
    R = len(group.trains)
    flats = [flat_instances(ds) for ds in group.trains]
    sizes = [sz for _, sz in flats]
    counts = np.array([int(sz.sum()) for sz in sizes], dtype=np.int64)
    base = np.concatenate([[0], np.cumsum(counts)])
    X = torch.cat([x for x, _ in flats] + [torch.zeros((1, flats[0][0].shape[1]))]).to(device)
    del flats
    bag_start = [base[r] + np.concatenate([[0], np.cumsum(sizes[r])[:-1]]) for r in range(R)]
    labels = [np.asarray(ds.labels, dtype=np.int64) for ds in group.trains]
    T = int(group.n_sorted[0])
    return PackedTraining(
        X=X,
        pad_row=int(base[-1]),
        base=base,
        counts=counts,
        sizes=sizes,
        T=T,
        active_at=np.array([(group.n_sorted > t).sum() for t in range(T)], dtype=np.int64),
        size_tab=np.stack([pad_to(s, T) for s in sizes]),
        start_tab=np.stack([pad_to(s, T) for s in bag_start]),
        label_tab=np.stack([pad_to(s, T) for s in labels]),
    )


def epoch_tables(group: RunGroup, packed: PackedTraining, epoch: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per run and step of ``epoch``: the bag's size, first row in ``X`` and label, each ``(R, T)`` (0 when done).

    Each run's bag order is drawn exactly as the per-run Trainer draws it (``default_rng([seed, epoch])``).
    """
    R, T = len(group.seeds), packed.T
    bag = np.full((R, T), -1, dtype=np.int64)
    for r in range(R):
        n = int(group.n_sorted[r])
        bag[r, :n] = np.random.default_rng([group.seeds[r], epoch]).permutation(n)
    valid = bag >= 0
    safe = np.where(valid, bag, 0)
    size = np.where(valid, np.take_along_axis(packed.size_tab, safe, 1), 0)
    first_row = np.where(valid, np.take_along_axis(packed.start_tab, safe, 1), 0)
    label = np.where(valid, np.take_along_axis(packed.label_tab, safe, 1), 0)
    return size, first_row, label


def epoch_keep_masks(
    gens: Sequence[np.random.Generator],
    packed: PackedTraining,
    size: np.ndarray,
    width: int,
    p_drop: float,
    device: torch.device,
) -> tuple[Tensor, np.ndarray, int]:
    """The dropout keep-masks of one epoch: ``(keep (rows + 1, width), first keep row per step (R, T), pad row)``.

    Each run draws its masks for its real instances in the epoch's bag order from its own generator (so both
    backends drop the same units; the per-run Trainer's ``nn.Dropout`` draws from torch's generator, so runs with
    dropout match it in distribution, not bit for bit); the last row (all False) serves padded instances.
    """
    R = len(gens)
    first = np.cumsum(size, axis=1) - size + packed.base[:R, None]
    keep = torch.from_numpy(
        np.concatenate(
            [keep_mask(gens[r], int(packed.counts[r]), width, p_drop) for r in range(R)]
            + [np.zeros((1, width), dtype=bool)]
        )
    ).to(device)
    return keep, first, packed.pad_row


def copy_improved(best: dict[str, Tensor], params: dict[str, Tensor], improved: list[int], device) -> None:
    """Copy the stacked parameters of the runs in ``improved`` (sorted positions) into ``best``."""
    if improved:
        idx = torch.tensor(improved, device=device)
        for n, p in params.items():
            best[n].index_copy_(0, idx, p.index_select(0, idx))


def updates_in_input_order(group: RunGroup, steps: Sequence[Tensor]) -> list[int]:
    """Optimizer steps per run, in input order (``steps[i]``: the step count of run class ``group.classes[i]``)."""
    updates = np.zeros(len(group.order), dtype=np.int64)
    for (a, b), st in zip(group.classes, steps, strict=True):
        updates[group.order[a:b]] = int(st)
    return updates.tolist()


def finish_runs(
    group: RunGroup,
    best_params: Callable[[int], dict[str, Tensor]],
    best_epoch: Sequence[int],
    histories: Sequence[list[dict[str, Any]]],
    config: TrainConfig,
    device: torch.device,
    engine: str,
) -> list[FitResult]:
    """Give every run's model its selected parameters and score it with the ordinary :func:`evaluate`.

    Args:
        best_params: sorted run index → its selected parameters by name, in the model's own layout.
        engine: recorded as ``FitResult.extra["engine"]``.

    Returns:
        one :class:`FitResult` per run, in input order (``seconds`` left for the caller to set).
    """
    R = len(group.models)
    results: list[FitResult | None] = [None] * R
    for r in range(R):
        model = group.models[r]
        chosen = best_params(r)
        with torch.no_grad():
            for n, p in model.named_parameters():
                p.copy_(chosen[n].to(p.device))
        model.to(device)
        val = evaluate(model, group.vals[r], config.eval_batch_size, device) if group.has_val[r] else None
        test = evaluate(model, group.tests[r], config.eval_batch_size, device) if group.has_test[r] else None
        oracle = max((h["test_accuracy"] for h in histories[r] if "test_accuracy" in h), default=None)
        results[int(group.order[r])] = FitResult(
            selected_epoch=int(best_epoch[r]),
            history=histories[r],
            val=val,
            test=test,
            oracle_test_accuracy=oracle,
            model=model,
            extra={"engine": engine, "group_size": R},
        )
    return [res for res in results if res is not None]
