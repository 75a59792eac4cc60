"""Per-epoch evaluation of every run of a group: validation (and oracle test) bags as chunks of runs."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from lossattn.engine.manyruns.arch import Arch, attention_scores, classifier, linear, mlp

__all__ = ["EvalSet", "build_eval", "eval_chunk", "eval_chunks", "flat_instances"]


@dataclass
class EvalSet:
    """The validation + test bags of every run, instances flattened per run and padded across runs.

    Bag ``j`` of run ``r`` owns the instances with ``bag_id[r] == j``; padded instances belong to the
    dummy bag ``nb`` (ignored). Bags ``0 .. n_val[r]-1`` are validation bags, the next ``n_test[r]`` test bags.
    """

    x: Tensor  # (R, M, D)
    bag_id: Tensor  # (R, M) long, in 0..nb
    inst_label: Tensor  # (R, M) long: the label of the instance's bag
    labels: Tensor  # (R, nb + 1) long
    sizes: Tensor  # (R, nb + 1) float
    is_val: Tensor  # (R, nb + 1) bool
    is_test: Tensor  # (R, nb + 1) bool
    n_val: np.ndarray  # (R,)
    n_test: np.ndarray  # (R,)
    nb: int
    runs: Tensor | None = None  # positions of these runs in the group (a chunk of it)


def flat_instances(ds) -> tuple[Tensor, np.ndarray]:
    x, offsets = ds.to_flat()
    return x.reshape(x.shape[0], -1), np.diff(offsets)


def eval_chunks(vals: Sequence[Any], tests: Sequence[Any], device: torch.device, budget: int) -> list[EvalSet]:
    """The evaluation bags of all runs as chunks of runs with similar instance counts (little padding).

    A chunk starts with the largest remaining run and takes the next ones while their instance count is at
    least 3/4 of the first's and the chunk's activations stay under ``budget`` bytes.
    """
    counts = [
        sum(ds.num_instances for ds in (v, t) if ds is not None and len(ds)) for v, t in zip(vals, tests, strict=True)
    ]
    order = sorted(range(len(vals)), key=lambda r: -counts[r])
    width = next(ds.num_features for pair in zip(vals, tests, strict=True) for ds in pair if ds is not None)
    chunks, i = [], 0
    while i < len(order):
        first = max(counts[order[i]], 1)
        per_run = first * (width + 3 * 256) * 4
        j = i + 1
        while j < len(order) and 4 * counts[order[j]] >= 3 * first and (j - i + 1) * per_run <= budget:
            j += 1
        runs = order[i:j]
        ev = build_eval([vals[r] for r in runs], [tests[r] for r in runs], device)
        ev.runs = torch.tensor(runs, device=device)
        chunks.append(ev)
        i = j
    return chunks


def build_eval(vals: Sequence[Any], tests: Sequence[Any], device: torch.device) -> EvalSet:
    R = len(vals)
    parts = []
    for v, t in zip(vals, tests, strict=True):
        xs, sizes, labels, nv, nt = [], [], [], 0, 0
        for ds, is_val in ((v, True), (t, False)):
            if ds is None or len(ds) == 0:
                continue
            x, sz = flat_instances(ds)
            xs.append(x)
            sizes.append(sz)
            labels.append(np.asarray(ds.labels))
            if is_val:
                nv = len(ds)
            else:
                nt = len(ds)
        parts.append((xs, sizes, labels, nv, nt))
    M = max(sum(int(s.sum()) for s in p[1]) for p in parts)
    nb = max(p[3] + p[4] for p in parts)
    D = next(x.shape[1] for p in parts for x in p[0])
    X = torch.zeros((R, max(M, 1), D))
    bag_id = torch.full((R, max(M, 1)), nb, dtype=torch.long)
    inst_label = torch.zeros((R, max(M, 1)), dtype=torch.long)
    labels = torch.zeros((R, nb + 1), dtype=torch.long)
    sizes = torch.ones((R, nb + 1))
    is_val = torch.zeros((R, nb + 1), dtype=torch.bool)
    is_test = torch.zeros((R, nb + 1), dtype=torch.bool)
    n_val, n_test = np.zeros(R, dtype=np.int64), np.zeros(R, dtype=np.int64)
    for r, (xs, szs, lbs, nv, nt) in enumerate(parts):
        n_val[r], n_test[r] = nv, nt
        if not xs:
            continue
        x, sz, lb = torch.cat(xs), np.concatenate(szs), np.concatenate(lbs)
        m, n = x.shape[0], len(sz)
        X[r, :m] = x
        ids = np.repeat(np.arange(n), sz)
        bag_id[r, :m] = torch.from_numpy(ids)
        inst_label[r, :m] = torch.from_numpy(lb[ids])
        labels[r, :n] = torch.from_numpy(lb)
        sizes[r, :n] = torch.from_numpy(sz.astype(np.float32))
        is_val[r, :nv] = True
        is_test[r, nv:n] = True
    t = lambda a: a.to(device)  # noqa: E731
    return EvalSet(t(X), t(bag_id), t(inst_label), t(labels), t(sizes), t(is_val), t(is_test), n_val, n_test, nb)


@torch.no_grad()
def eval_chunk(arch: Arch, p: dict[str, Tensor], ev: EvalSet) -> tuple[Tensor, Tensor]:
    """Bag probabilities ``(c, nb+1, K)`` and per-bag losses ``(c, nb+1)`` of the chunk's runs (no dropout)."""
    x = ev.x
    c, M, _ = x.shape
    nb1 = ev.nb + 1
    gid = (ev.bag_id + torch.arange(c, device=x.device).unsqueeze(1) * nb1).reshape(-1)  # (c*M,)
    h = mlp(arch, p, x, None)  # (c, M, H)
    H = h.shape[-1]
    w, b = classifier(arch, p)
    if arch.kind == "loss_attention":
        z = linear(h, w, b)  # (c, M, K)
        s = torch.logsumexp(z, dim=-1)
    else:
        s = attention_scores(arch, p, h)
    flat = s.reshape(-1)
    smax = torch.full((c * nb1,), -math.inf, device=x.device).scatter_reduce(0, gid, flat, "amax")
    e = (flat - smax[gid]).exp()
    den = torch.zeros(c * nb1, device=x.device).index_add_(0, gid, e)
    alpha = e / den[gid]  # segment softmax over each bag's instances
    emb = torch.zeros(c * nb1, H, device=x.device).index_add_(0, gid, alpha.unsqueeze(1) * h.reshape(-1, H))
    zb = linear(emb.view(c, nb1, H), w, b)  # (c, nb+1, K)
    K = zb.shape[-1]
    labels = ev.labels
    loss = F.cross_entropy(zb.reshape(-1, K), labels.reshape(-1), reduction="none").view(c, nb1)
    if arch.kind == "loss_attention":
        inst_ce = s - z.gather(-1, ev.inst_label.unsqueeze(-1)).squeeze(-1)
        inst = torch.zeros(c * nb1, device=x.device).index_add_(0, gid, alpha * inst_ce.reshape(-1)).view(c, nb1)
        if arch.reduction == "mean":
            inst = inst / ev.sizes
        loss = loss + arch.lam * inst
    return torch.softmax(zb, dim=-1), loss
