"""Train one run on several processes / GPUs / nodes with PyTorch DistributedDataParallel.

Launch with ``torchrun`` (gloo on CPU, nccl on CUDA)::

    torchrun --nproc_per_node 2 -m lossattn.protocols.ddp --preset mnist_bags_multiclass \\
        --method loss_attention --set train.batch_size=8 --out runs/ddp
    torchrun --nnodes 2 --node_rank 0 --master_addr HOST --master_port 29500 --nproc_per_node 4 \\
        -m lossattn.protocols.ddp --preset ... --device cuda

(``-m lossattn.train.ddp``, the 0.1 name, works too) or call :func:`train_ddp` from a process whose
``torch.distributed`` group is already set up.

It is the one training loop (:class:`~lossattn.engine.Trainer`) with the
:class:`~lossattn.engine.strategies.DDPStrategy`, whose docstring states the semantics: ``train.batch_size``
is the global batch; with dropout 0 the run equals the single-process run with the same ``batch_size`` (up to
float rounding); rank 0 evaluates, selects and writes ``checkpoint.pt``, ``metrics.jsonl/csv``, ``best.pt`` and
``result.json``; ``--resume`` continues every rank from rank 0's checkpoint.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist

from lossattn.engine.loop import Trainer
from lossattn.engine.strategies import DDPStrategy, init_distributed
from lossattn.protocols.config import ExperimentConfig, apply_overrides, load_config, load_preset
from lossattn.protocols.runs import RunSpec, finish_run, prepare_run

__all__ = ["main", "run", "train_ddp"]


def train_ddp(
    cfg: ExperimentConfig,
    method: str | None = None,
    repeat: int = 0,
    fold: int | None = None,
    out_dir: str | Path | None = None,
    resume: bool = False,
) -> dict[str, Any] | None:
    """Train one run of ``cfg`` (one method on one split) with DDP over the current process group.

    Every rank builds the same split and model (seeded as :func:`~lossattn.protocols.runs.execute_run`), so
    with dropout 0 the result equals ``execute_run(cfg, RunSpec(method, repeat, fold))`` with the same
    ``train.batch_size``. Returns the run record on rank 0 (also written to
    ``<out_dir>/<method>/<key>/result.json``) and None on the other ranks.
    """
    cfg.validate()
    method = method or next(iter(cfg.methods))
    if method not in cfg.methods:
        raise ValueError(f"unknown method {method!r}; the config has: {', '.join(cfg.methods)}")
    fold = (0 if fold is None else fold) if cfg.protocol.kind == "cv" else None
    strategy = DDPStrategy()
    run = prepare_run(cfg, RunSpec(method, repeat, fold), out_dir, write_files=strategy.is_main,
                      extra_config={"world_size": strategy.world_size})  # fmt: skip
    if run.train_config.device.startswith("cuda") and torch.cuda.is_available() and strategy.world_size > 1:
        run.train_config.device = f"cuda:{torch.cuda.current_device()}"
    metadata = {**run.metadata, "world_size": strategy.world_size}
    trainer = Trainer(run.model, run.train_config, run.run_dir, run.seed, metadata, strategy=strategy)
    fit = trainer.fit(run.train, run.val, run.test, resume=resume)
    if not strategy.is_main:
        return None
    return finish_run(run, fit, {"world_size": strategy.world_size, "global_batch": run.train_config.batch_size})


# --------------------------------------------------------------------------- command line


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m lossattn.protocols.ddp",
        description="Train one run with DistributedDataParallel; launch with torchrun --nproc_per_node N.",
    )
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--preset", help="a bundled preset (lossattn presets)")
    src.add_argument("--config", help="an experiment YAML file")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="config override (repeatable)")
    p.add_argument("--method", help="method of the config to train (default: the first)")
    p.add_argument("--repeat", type=int, default=0)
    p.add_argument("--fold", type=int, default=None, help="fold (cross-validation protocols; default 0)")
    p.add_argument("--device", choices=("cpu", "cuda"), help="overrides train.device")
    p.add_argument("--backend", choices=("gloo", "nccl"), help="default: nccl on cuda, gloo on cpu")
    p.add_argument("--out", help="run directory root (rank 0 writes <out>/<method>/<key>/)")
    p.add_argument("--resume", action="store_true", help="continue from rank 0's checkpoint")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        cfg = load_preset(args.preset) if args.preset else load_config(args.config)
        overrides = list(args.set) + ([f"train.device={args.device}"] if args.device else [])
        if overrides:
            cfg = apply_overrides(cfg, overrides)
        if cfg.train.device.startswith("cuda") and not torch.cuda.is_available():
            raise ValueError("train.device is cuda but no CUDA device is available; use --device cpu")
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    init_distributed(args.backend, cfg.train.device)
    try:
        record = train_ddp(cfg, args.method, args.repeat, args.fold, args.out, args.resume)
        if record is not None:
            print(json.dumps(record, indent=2))
        # rank 0 evaluates and writes alone: wait for it, so no rank destroys the group while its peer is
        # still inside it (the exit abort itself is handled under __main__ below)
        dist.barrier()
    finally:
        if dist.is_initialized():
            dist.destroy_process_group()
    return 0


def run() -> None:
    """Entry point of ``python -m``: :func:`main`, then exit without interpreter finalisation.

    gloo's C++ worker threads can still hold objects whose teardown needs the GIL, and a rank then aborts at
    exit ("terminate called without an active exception", pytorch/pytorch#179291) although its work is done
    and written (atomically) above.
    """
    code = main()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


if __name__ == "__main__":
    run()
