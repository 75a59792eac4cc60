"""Size classes for the torch.func backend: the step's runs in buckets, the evaluation bags in classes.

Padding every bag of a batched call to the call's largest bag wastes rows when the sizes spread (MUSK2: 1 to
1,044 instances per bag). :func:`partition` cuts sorted sizes into a few contiguous classes at minimal cost
(padded rows plus a fixed cost per call); the trainer uses it to split a training step's runs into buckets and
:func:`eval_batches` to sort every run's validation/test bags into classes evaluated by one ``vmap`` each.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import Tensor

from lossattn.engine.manyruns.evalsets import flat_instances

__all__ = ["EpochEval", "EvalBatch", "epoch_predictions", "eval_batches", "partition"]


def partition(sizes: np.ndarray, weight: np.ndarray, max_parts: int, overhead: float, per_item: float) -> list[int]:
    """Split sorted distinct ``sizes (m,)`` into at most ``max_parts`` contiguous parts at minimal cost.

    A part covering ``sizes[i..j]`` costs ``W[i, j] · sizes[j] + overhead`` (its items padded to its largest size,
    plus a fixed cost per call), plus ``per_item · W[i, j]`` when there is more than one part (gathering the
    items). ``weight`` is the ``(m, m)`` matrix ``W[i, j]``: items padded to ``sizes[j]`` in the part ``i..j``.
    Dynamic programming over the number of parts.

    Returns:
        The indices ``j`` of the last size of every part, increasing (``[m - 1]``: one part).
    """
    m = len(sizes)
    ii, jj = np.meshgrid(np.arange(m), np.arange(m), indexing="ij")
    span = np.where(ii <= jj, weight * sizes[None, :] + overhead + per_item * weight, np.inf)  # part i..j
    dp = span[0].copy()  # one part covering 0..j
    best_cost = span[0, -1] - per_item * weight[0, -1]  # a single part gathers nothing
    best = [m - 1]
    backs = []
    for _ in range(2, min(max_parts, m) + 1):
        # dp_new[j] = min_i dp[i - 1] + span[i, j]
        M = np.full((m, m), np.inf)
        M[1:, :] = dp[:-1, None] + span[1:, :]
        arg = M.argmin(0)
        dp = M[arg, np.arange(m)]
        backs.append(arg)
        if dp[-1] < best_cost:
            best_cost = dp[-1]
            ends, j = [m - 1], m - 1
            for back in reversed(backs):
                j = int(back[j]) - 1
                ends.append(j)
            best = sorted(ends)
    return best


class EvalBatch:
    """The bags of ``k`` runs in one size class, ``b`` slots per run, padded to ``N`` instances.

    Args:
        fidx: ``(k, b, N)`` rows of the flat evaluation instances (the zero row at padding).
        mask: ``(k, b, N)`` bool; a dummy slot holds one (zero) instance.
        labels: ``(k, b)`` bag classes.
        slot_bag: ``(k, b)`` the slot's bag number in its run's evaluation list (-1: dummy slot).
        runs: the runs of the class, increasing (None: all runs, in order).
    """

    def __init__(
        self, fidx: np.ndarray, mask: np.ndarray, labels: np.ndarray, slot_bag: np.ndarray, runs: np.ndarray | None
    ) -> None:
        self.fidx = torch.from_numpy(fidx.reshape(-1))
        self.shape = fidx.shape
        self.mask = torch.from_numpy(mask)
        self.labels = torch.from_numpy(labels)
        self.slot_bag = slot_bag
        self.runs = runs
        self.run_idx: Tensor | None = None

    def to(self, device: torch.device) -> EvalBatch:
        self.fidx, self.mask, self.labels = self.fidx.to(device), self.mask.to(device), self.labels.to(device)
        if self.runs is not None:
            self.run_idx = torch.from_numpy(self.runs).to(device)
        return self


@dataclass
class EpochEval:
    """Every run's evaluation bags: flat instances ``x (M + 1, D)`` (last row zero), the size classes, and per
    run the number of validation bags (its first bags), of all bags and their labels."""

    x: Tensor
    batches: list[EvalBatch]
    n_val: np.ndarray
    n_bags: np.ndarray
    labels: list[np.ndarray]


def eval_batches(
    vals: Sequence[Any], tests: Sequence[Any], device: torch.device, overhead: float, budget: int
) -> EpochEval | None:
    """The validation (+ oracle test) bags of all runs as size classes (None: no run has any).

    Every run's bags are sorted into the same size classes; a class holds ``b`` slots for each of the ``k``
    runs that have a bag in it (``b``: the most any run has there; the others get dummy slots), padded to the
    class's largest size, so a class reached by few runs gathers only their parameters. Class bounds by
    :func:`partition` over the distinct sizes (padded slots + ``overhead`` per class, at most 8 classes); a
    class is cut into chunks whose activations stay under ``budget`` bytes.
    """
    R = len(vals)
    per_run = []  # (x flat parts, sizes, labels, n_val)
    for v, t in zip(vals, tests, strict=True):
        xs, szs, lbs, nv = [], [], [], 0
        for ds, is_val in ((v, True), (t, False)):
            if ds is None or len(ds) == 0:
                continue
            x, sz = flat_instances(ds)
            xs.append(x)
            szs.append(sz)
            lbs.append(np.asarray(ds.labels, dtype=np.int64))
            nv = len(ds) if is_val else nv
        per_run.append((xs, szs, lbs, nv))
    if not any(p[0] for p in per_run):
        return None
    D = next(x.shape[1] for p in per_run for x in p[0])
    all_x, starts, bag_sizes, bag_labels, n_val, n_bags = [], [], [], [], [], []
    offset = 0
    for xs, szs, lbs, nv in per_run:
        sz = np.concatenate(szs).astype(np.int64) if szs else np.zeros(0, dtype=np.int64)
        all_x += xs
        starts.append(offset + np.concatenate([[0], np.cumsum(sz)[:-1]]).astype(np.int64))
        offset += int(sz.sum())
        bag_sizes.append(sz)
        bag_labels.append(np.concatenate(lbs) if lbs else np.zeros(0, dtype=np.int64))
        n_val.append(nv)
        n_bags.append(len(sz))
    pad_row = offset
    EX = torch.cat([*all_x, torch.zeros((1, D))]).to(device)
    sizes_all = np.concatenate(bag_sizes)
    u = np.unique(sizes_all)
    if len(u) > 256:  # candidate class bounds: size quantiles (the largest size is always one)
        u = np.unique(np.quantile(sizes_all, np.linspace(0, 1, 257), method="higher")).astype(np.int64)
    # Dm[r, i, j]: bags of run r in the class (u[i-1], u[j]]; the class holds max_r Dm slots for each run
    # that has a bag in it
    C = np.stack([np.searchsorted(np.sort(s), u, side="right") for s in bag_sizes])  # (R, m)
    Cm = np.concatenate([np.zeros((R, 1), dtype=C.dtype), C[:, :-1]], axis=1)
    Dm = C[:, None, :] - Cm[:, :, None]  # (R, m, m)
    W = ((Dm > 0).sum(0) * Dm.max(0)).astype(np.float64)  # (m, m) slots
    ends = partition(u.astype(np.float64), W, 8, overhead, 0.0)
    act_width = D + 4 * 256  # floats per instance row held at once (input + a few activations), a bound
    batches = []
    lo = 0
    for e in ends:
        N = int(u[e])
        slots = [np.flatnonzero((s > (u[lo - 1] if lo else 0)) & (s <= N)) for s in bag_sizes]
        lo = e + 1
        part = np.array([r for r in range(R) if len(slots[r])], dtype=np.int64)
        if not len(part):
            continue
        k = len(part)
        b_all = max(len(slots[r]) for r in part)
        b_chunk = max(1, min(b_all, budget // max(1, k * N * act_width * 4)))
        for c0 in range(0, b_all, b_chunk):
            b = min(b_chunk, b_all - c0)
            fidx = np.full((k, b, N), pad_row, dtype=np.int64)
            mask = np.zeros((k, b, N), dtype=bool)
            mask[:, :, 0] = True  # dummy slots hold one (zero) instance
            lab = np.zeros((k, b), dtype=np.int64)
            slot_bag = np.full((k, b), -1, dtype=np.int64)
            for i, r in enumerate(part):
                for j, bi in enumerate(slots[r][c0 : c0 + b]):
                    n = int(bag_sizes[r][bi])
                    fidx[i, j, :n] = starts[r][bi] + np.arange(n)
                    mask[i, j, :n] = True
                    lab[i, j] = bag_labels[r][bi]
                    slot_bag[i, j] = bi
            batches.append(EvalBatch(fidx, mask, lab, slot_bag, None if k == R else part).to(device))
    return EpochEval(EX, batches, np.array(n_val), np.array(n_bags), bag_labels)


@torch.no_grad()
def epoch_predictions(
    predict: Callable, params: dict[str, Tensor], ev: EpochEval, shape: tuple[int, ...]
) -> list[tuple[np.ndarray, np.ndarray]]:
    """Per run: class probabilities ``(n_bags, K)`` and per-bag losses ``(n_bags,)`` of its evaluation bags.

    Args:
        predict: ``vmap(vmap(plan.predict))`` over runs and slots: ``(params (k, ...), x (k, b, 1, N, *S),
            mask (k, b, 1, N), labels (k, b, 1))`` → ``(probabilities (k, b, K), losses (k, b))``.
        params: the stacked parameters of all runs ``(R, ...)``.
        ev: the evaluation bags (:func:`eval_batches`).
        shape: the instance shape ``S``.
    """
    R = len(ev.n_bags)
    probs: list[np.ndarray | None] = [None] * R
    losses = [np.full(int(n), math.nan) for n in ev.n_bags]
    for bt in ev.batches:
        k, b, N = bt.shape
        p = params if bt.run_idx is None else {n: v.index_select(0, bt.run_idx) for n, v in params.items()}
        x = ev.x.index_select(0, bt.fidx).view(k, b, 1, N, *shape)
        prob, loss = predict(p, x, bt.mask.view(k, b, 1, N), bt.labels.view(k, b, 1))
        prob_np, loss_np = prob.double().cpu().numpy(), loss.double().cpu().numpy()
        runs = range(R) if bt.runs is None else bt.runs
        for i, r in enumerate(runs):
            real = bt.slot_bag[i] >= 0
            if probs[r] is None:
                probs[r] = np.zeros((int(ev.n_bags[r]), prob_np.shape[-1]))
            probs[r][bt.slot_bag[i][real]] = prob_np[i][real]
            losses[r][bt.slot_bag[i][real]] = loss_np[i][real]
    return [(p if p is not None else np.zeros((0, 0)), loss) for p, loss in zip(probs, losses, strict=True)]
