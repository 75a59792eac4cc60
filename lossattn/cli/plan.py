"""The run plan a ``train`` / ``cv`` command prints before it starts: runs, engine, threads, estimated time.

The estimate comes from a measurement, not a guess: each method's first run trains one epoch on at most
:data:`CALIBRATION_BAGS` of its training bags through the backend it will use (a batched backend on a group
of runs where one applies), and the time per bag-epoch is scaled to the plan.
"""

from __future__ import annotations

import copy
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from lossattn.cli.common import CLIError
from lossattn.engine.manyruns import fit_many
from lossattn.engine.runtime import ThreadPlan, default_threads
from lossattn.protocols.fanout import method_engine
from lossattn.protocols.runs import RunSpec, prepare_run

__all__ = ["BACKEND_NAMES", "CALIBRATION_BAGS", "Plan", "guard_finished_runs", "make_plan", "remove_if_unused"]

#: training bags one calibration epoch uses at most
CALIBRATION_BAGS = 48

#: how the plan names each batched backend of :func:`~lossattn.engine.manyruns.fit_many`
BACKEND_NAMES = {"vectorized": "batched many-runs engine", "func": "batched (torch.func)"}


@dataclass
class Plan:
    """What a command is about to do."""

    specs: list[RunSpec]
    engines: dict[str, str]  # method -> a BACKEND_NAMES value | "one run at a time (why)"
    threads: ThreadPlan
    jobs: int
    seconds: dict[str, float] = field(default_factory=dict)  # method -> estimated wall seconds

    def lines(self, cfg) -> list[str]:
        methods = list(dict.fromkeys(s.method for s in self.specs))
        per_method = len(self.specs) // max(1, len(methods))
        p = cfg.protocol
        split = {
            "cv": f"{p.folds} folds",
            "fixed": "the data's train/test split",
            "all": "every bag for training (no test bags)",
        }[p.kind]
        if per_method == 1 and self.specs:  # `train`: one chosen split, whatever the protocol's repeats
            one = self.specs[0]
            fold = "" if one.fold is None else f"fold {one.fold} of "
            shape = f"{fold}{split} (repeat {one.repeat})"
        else:
            shape = f"{split} × {p.repeats} repeat(s)"
        out = [f"Plan: {len(methods)} method(s) × {shape} = {len(self.specs)} run(s) of {cfg.train.epochs} epochs"]
        for m in methods:
            est = self.seconds.get(m)
            eta = f", ~{_duration(est)}" if est is not None else ""
            out.append(f"  {m}: {per_method} run(s), {self.engines[m]}{eta}")
        out.append(f"  {self.threads.describe()}")
        if self.seconds:
            total = sum(self.seconds.values())
            out.append(f"  estimated time: ~{_duration(total)} (from one timed epoch of each method)")
        return out


def _duration(seconds: float) -> str:
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 5400:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


def make_plan(cfg, specs: list[RunSpec], engine: str, jobs: int, estimate: bool = True) -> Plan:
    """The plan of ``specs``: each method's engine, the thread setting and (with ``estimate``) the time.

    The thread count is set on ``cfg.train.threads`` when the user gave none (see
    :func:`~lossattn.engine.runtime.default_threads`).
    """
    threads = default_threads(jobs)
    if cfg.train.threads is None:
        cfg.train.threads = threads.threads
    else:
        threads = ThreadPlan(cfg.train.threads, threads.cores, threads.busy, jobs)
    engines: dict[str, str] = {}
    backends: dict[str, str] = {}
    for method in dict.fromkeys(s.method for s in specs):
        backend, reason = method_engine(cfg, method, sum(s.method == method for s in specs), engine)
        backends[method] = backend or "loop"
        engines[method] = BACKEND_NAMES[backend] if backend is not None else f"one run at a time ({reason})"
    plan = Plan(list(specs), engines, threads, jobs)
    if estimate:
        for method in engines:
            mine = [s for s in specs if s.method == method]
            plan.seconds[method] = _estimate(cfg, mine, backend=backends[method], jobs=jobs)
    return plan


def _estimate(cfg, specs: list[RunSpec], backend: str, jobs: int) -> float:
    """Wall seconds of ``specs`` (one method), measured on a few bags of its first run.

    The first run's model trains 1 and then 2 epochs on at most :data:`CALIBRATION_BAGS` of its training bags
    through the backend it will use (``"vectorized"`` / ``"func"``: a group of copies of the run, each batched
    backend timed as itself; ``"loop"``: the one loop); the difference is the time of one epoch, the rest the
    fixed cost of a run (set-up, final evaluation). Both are scaled to the plan.
    """
    import torch

    one = copy.deepcopy(cfg)
    one.train.progress = False
    probe = prepare_run(one, specs[0], None)
    n_bags = len(probe.train)
    take = min(n_bags, CALIBRATION_BAGS)
    train = probe.train.subset(np.arange(take))
    val = None if probe.val is None else probe.val.subset(np.arange(min(len(probe.val), max(1, take // 4))))
    group = min(len(specs), 8) if backend != "loop" else 1
    rng_state = torch.get_rng_state()

    def timed(epochs: int) -> float:
        config = copy.deepcopy(probe.train_config)
        config.epochs = epochs
        config.rampdown_length = min(config.rampdown_length, epochs)
        models = [copy.deepcopy(probe.model) for _ in range(group)]
        start = time.perf_counter()
        fit_many(models, config, [probe.seed + i for i in range(group)], [train] * group, [val] * group,
                 backend=backend)  # fmt: skip
        return time.perf_counter() - start

    timed(1)  # warm-up: one-time costs (lazy imports, kernel selection) are no part of the plan
    t1, t2 = timed(1), timed(2)
    torch.set_rng_state(rng_state)
    per_epoch = max(t2 - t1, 1e-4) * n_bags / take / group  # one epoch of one run on all its bags
    fixed = max(t1 - (t2 - t1), 0.0) / group
    epochs = cfg.train_config_for(specs[0].method).epochs
    total = len(specs) * (fixed + per_epoch * epochs)
    return total / max(1, min(jobs, len(specs)))


def guard_finished_runs(out: Path, specs: list[RunSpec], resume: bool, overwrite: bool) -> None:
    """Refuse to replace finished runs silently: ``--resume`` reuses them, ``--overwrite`` deletes them first.

    Raises:
        CLIError: ``out`` holds finished runs of the plan and neither option was given.
    """
    finished = [out / s.method / s.key for s in specs if (out / s.method / s.key / "result.json").exists()]
    if not finished or resume:
        return
    if not overwrite:
        raise CLIError(
            f"{out} already holds {len(finished)} finished run(s) of this plan (e.g. {finished[0]})",
            "add --resume to reuse them (and continue unfinished ones), --overwrite to replace them, or choose "
            "another --out folder",
        )
    for run in {out / s.method / s.key for s in specs}:
        if run.exists():
            shutil.rmtree(run)


def remove_if_unused(out: Path, existed: bool) -> None:
    """After a failed command: remove ``out`` if this command created it and nothing worth keeping is inside.

    A checkpoint (an interrupted run to resume) or a finished run keeps the folder.
    """
    if existed or not out.is_dir():
        return
    if any(out.rglob("checkpoint.pt")) or any(out.rglob("result.json")):
        return
    shutil.rmtree(out, ignore_errors=True)
