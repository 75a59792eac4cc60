"""What every training loop of the package shares at run time: device, threads, Adam, AMP, denormals, progress."""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

import torch

from lossattn.engine.config import TrainConfig

__all__ = [
    "ThreadPlan",
    "amp_dtype",
    "default_threads",
    "build_adam",
    "denormals_flushed",
    "flush_denormals",
    "progress",
    "resolve_device",
]


@dataclass(frozen=True)
class ThreadPlan:
    """How many torch threads each of ``jobs`` processes gets, and why (for the run plan a command prints)."""

    threads: int
    cores: int
    busy: float
    jobs: int

    def describe(self) -> str:
        return (
            f"{self.threads} torch thread(s) per process ({self.jobs} process(es); {self.cores} usable core(s), "
            f"{self.busy:.1f} busy)"
        )


def default_threads(jobs: int = 1) -> ThreadPlan:
    """Threads per process so that ``jobs`` processes share the cores that are free now, at least 1 each.

    torch's default (one thread per core in every process) oversubscribes a machine that is busy or runs several
    jobs; the small matrix products of one-bag-per-step training gain nothing from more threads anyway (measured:
    7.8 s per epoch with the default against 2.25 s with one thread on a busy 2-core machine).
    """
    jobs = max(1, int(jobs))
    try:
        cores = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # not on Linux
        cores = os.cpu_count() or 1
    try:
        busy = float(os.getloadavg()[0])
    except (AttributeError, OSError):
        busy = 0.0
    free = max(1.0, cores - busy)
    return ThreadPlan(max(1, min(cores // jobs, int(free // jobs))), cores, busy, jobs)


def resolve_device(name: str) -> torch.device:
    """``torch.device(name)``, with a clear error for CUDA on a machine without it."""
    try:
        device = torch.device(name)
    except (RuntimeError, TypeError) as exc:
        raise ValueError(f"TrainConfig.device {name!r} is not a device name (e.g. cpu, cuda, cuda:1)") from exc
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError("TrainConfig.device is 'cuda' but no CUDA device is available; use device=cpu")
    return device


def build_adam(params: Iterable[torch.nn.Parameter], config: TrainConfig) -> torch.optim.Optimizer:
    """Adam with L2 weight decay; the fused kernel where this torch build and device have it.

    The fused kernel removes most of the per-step optimiser overhead of one-bag-per-step training.
    """
    params = list(params)
    kwargs = {"lr": config.lr, "betas": tuple(config.betas), "weight_decay": config.weight_decay}
    try:
        return torch.optim.Adam(params, fused=True, **kwargs)
    except (RuntimeError, TypeError, ValueError):  # older torch or unsupported device/dtype
        return torch.optim.Adam(params, **kwargs)


def amp_dtype(config: TrainConfig, device: torch.device) -> torch.dtype | None:
    """The autocast dtype of mixed precision (CUDA only): bfloat16 where supported, else float16; None = off.

    bfloat16 needs no loss scaling; float16 gradients underflow without it, so the loop pairs float16 with a
    ``GradScaler``.
    """
    if not (config.amp and device.type == "cuda"):
        return None
    return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16


@contextlib.contextmanager
def flush_denormals(enabled: bool = True) -> Iterator[None]:
    """Flush denormal floats to zero inside the block (``torch.set_flush_denormal``), restored afterwards.

    After a few epochs of one-bag-per-step training with weight decay, a good share of the Adam moments
    of rarely-active inputs drift below 1.2e-38 (denormal), and x86 arithmetic on denormals is ~100×
    slower: a classic-MIL epoch then costs ~3× an early one. Flushing changes values only below
    1.2e-38. A no-op where the CPU cannot flush (``set_flush_denormal`` returns False).
    """
    if not enabled:
        yield
        return
    was_on = denormals_flushed()
    torch.set_flush_denormal(True)
    try:
        yield
    finally:
        torch.set_flush_denormal(was_on)


def denormals_flushed() -> bool:
    """Whether denormals are flushed to zero on this thread now (1e-30 · 1e-10 = 1e-40 is denormal)."""
    return bool((torch.tensor([1e-30]) * 1e-10).item() == 0.0)


def progress(iterable: Iterable, enabled: bool, desc: str, total: int | None = None, unit: str = "it"):
    """``iterable`` wrapped in a tqdm bar with an ETA when ``enabled`` and stderr is a terminal; else as it is.

    Redirected output (a log file, CI) gets no bar: carriage-return debris would fill it.
    """
    if not enabled or not sys.stderr.isatty():
        return iterable
    from tqdm.auto import tqdm

    return tqdm(iterable, desc=desc, total=total, unit=unit, leave=False, dynamic_ncols=True)
