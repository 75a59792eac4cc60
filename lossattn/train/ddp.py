"""Train one model on several processes / GPUs / nodes with PyTorch DistributedDataParallel.

Launch with ``torchrun`` (gloo on CPU, nccl on CUDA)::

    torchrun --nproc_per_node 2 -m lossattn.train.ddp --preset mnist_bags_multiclass \\
        --method loss_attention --set train.batch_size=8 --out runs/ddp
    torchrun --nnodes 2 --node_rank 0 --master_addr HOST --master_port 29500 --nproc_per_node 4 \\
        -m lossattn.train.ddp --preset ... --device cuda

or call :func:`train_ddp` from a process whose ``torch.distributed`` group is already set up.

Semantics (the same optimisation as :class:`~lossattn.train.Trainer` with ``batch_size = B``):

* Every epoch all ranks draw the same bag order (seeded by ``(seed, epoch)``, as the Trainer) and cut it
  into **global batches** of ``train.batch_size = B`` bags. Rank ``r`` of ``W`` takes the bags
  ``batch[r::W]`` of each global batch (``B = W`` gives one bag per step per rank).
* The training loss is a **mean over the bags of the global batch** (the models' ``loss`` is a mean over
  the bags it is given). Rank ``r`` holding ``n_r`` of the ``n`` bags of a global batch scales its shard's
  mean loss by ``n_r · W / n`` before backward; DDP averages gradients over the ``W`` ranks, so every rank
  steps with ``Σ_r n_r/n · mean_r = mean over the n bags`` -- exactly the gradient of the single-process
  run with batch ``B`` (up to float rounding), also for a short last batch or ``B`` not divisible by ``W``.
  A rank with no bag in a batch (fewer bags than ranks) still joins the gradient all-reduce with a
  zero-weighted step.
* Schedules (lr, Adam betas, consistency ramp-up), Adam (fused where available), gradient clipping and AMP
  are the Trainer's. Temporal-ensemble weights are gathered from all ranks (an all-reduce) at the end
  of every epoch, so every rank holds the ensemble of the single-process run.
* **Rank 0** evaluates the validation bags, selects the epoch (lowest validation error, then loss),
  writes ``checkpoint.pt``, ``metrics.jsonl/csv``, ``best.pt`` and ``result.json``. The other ranks only
  train. ``--resume`` continues every rank from rank 0's checkpoint.
* Dropout: with ``W > 1`` each rank reseeds its torch RNG every epoch from ``(seed, epoch, rank)``, so
  ranks draw different masks and a resumed run is exact; results then depend on ``W``. With dropout 0
  (or ``W = 1``) the run matches the single-process Trainer with the same ``batch_size``.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
import yaml

from lossattn.datasets import collate_bags
from lossattn.registry import create_model
from lossattn.train.config import (
    ExperimentConfig,
    TrainConfig,
    apply_overrides,
    config_to_dict,
    load_config,
    load_preset,
)
from lossattn.train.io import atomic_write_json, atomic_write_text, versions
from lossattn.train.protocols import RunSpec, prepare_split, run_record, run_seed
from lossattn.train.trainer import FitResult, Trainer

__all__ = ["DDPTrainer", "train_ddp", "shard", "main"]


def shard(batch: Sequence[int], rank: int, world_size: int) -> list[int]:
    """The bags of one global batch that rank ``rank`` of ``world_size`` trains on (``batch[rank::world_size]``)."""
    return [int(i) for i in batch[rank::world_size]]


def _world() -> tuple[int, int]:
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


class DDPTrainer(Trainer):
    """:class:`Trainer` whose steps are spread over the ranks of the default process group.

    Construct it on every rank with the same model (rank 0's initial weights are broadcast), config,
    ``run_dir`` and seed; call :meth:`fit` on every rank with the same bags. Only rank 0 needs ``val_set``
    and ``test_set`` (the other ranks ignore them) and only rank 0 writes to ``run_dir``. Outside a
    process group it is a plain single-process Trainer.
    """

    def __init__(self, model, config: TrainConfig, run_dir=None, seed: int = 0, metadata=None):
        super().__init__(model, config, run_dir, seed, metadata)
        self.rank, self.world_size = _world()
        self.ddp_model: torch.nn.Module = self.model
        if self.world_size > 1:
            from torch.nn.parallel import DistributedDataParallel

            device_ids = [self.device] if self.device.type == "cuda" else None
            # broadcasts rank 0's parameters and buffers, so every rank starts from the same weights
            self.ddp_model = DistributedDataParallel(self.model, device_ids=device_ids)

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    # only rank 0 writes; every rank can read rank 0's checkpoint to resume
    def _save_checkpoint(self, path, state) -> None:
        if self.is_main:
            super()._save_checkpoint(path, state)

    def _write_epoch_metrics(self, history) -> None:
        if self.is_main:
            super()._write_epoch_metrics(history)

    def fit(self, train_set, val_set=None, test_set=None, resume: bool = False) -> FitResult:
        if not self.is_main:  # validation, selection and reporting happen on rank 0 only
            val_set = test_set = None
        return super().fit(train_set, val_set, test_set, resume=resume)

    # ------------------------------------------------------------------ one epoch
    def _run_batches(self, epoch, train_set, order, ensemble, sched, omega, autocast) -> dict[str, Any]:
        c = self.config
        W, rank = self.world_size, self.rank
        if W > 1:
            torch.manual_seed(_rank_seed(self.seed, epoch, rank))
        totals: dict[str, float] = {}
        correct = 0
        for start in range(0, len(order), c.batch_size):
            global_batch = order[start : start + c.batch_size]
            mine = shard(global_batch, rank, W)
            if mine:
                batch = collate_bags([train_set[i] for i in mine]).to(self.device)
            else:  # fewer bags than ranks: join the all-reduce with a zero-weighted bag
                batch = collate_bags([train_set[int(global_batch[0])]]).to(self.device)
            weight = len(mine) * W / len(global_batch)
            with torch.autocast(self.device.type, dtype=self.amp_dtype, enabled=autocast):
                out = self.ddp_model(batch.x, batch.mask)
                target = ensemble.target(batch.indices, batch.mask) if (ensemble is not None and omega > 0) else None
                loss, terms = self.model.loss(
                    out,
                    batch.labels,
                    batch.mask,
                    ensemble=None if target is None else target.to(self.device),
                    consistency_weight=omega if target is not None else 0.0,
                )
            if mine and not torch.isfinite(loss):
                raise FloatingPointError(
                    f"non-finite training loss {float(loss)} at epoch {epoch} on rank {rank} (bags {batch.names}); "
                    "lower the learning rate or check the features"
                )
            self.optimizer.zero_grad(set_to_none=True)
            self.scaler.scale(loss * weight).backward()  # DDP averages the gradients over ranks here
            if c.grad_clip:
                self.scaler.unscale_(self.optimizer)
                torch.nn.utils.clip_grad_norm_(self.model.parameters(), c.grad_clip)
            self.scaler.step(self.optimizer)
            self.scaler.update()
            if not mine:
                continue
            if ensemble is not None and out.weights is not None:
                ensemble.record(batch.indices, out.weights, batch.mask)
            n = len(mine)
            for k, v in terms.items():
                totals[k] = totals.get(k, 0.0) + float(v.detach()) * n
            correct += int((out.predictions() == batch.labels).sum())
        if ensemble is not None:
            self._gather_ensemble(ensemble)
            ensemble.step()
        keys = sorted(totals)
        if W > 1:  # epoch totals over all ranks, for the log
            summed = self._all_reduce(torch.tensor([totals[k] for k in keys] + [correct], dtype=torch.float64))
            totals = dict(zip(keys, summed[:-1].tolist(), strict=True))
            correct = int(round(float(summed[-1])))
        n_bags = len(train_set)
        row: dict[str, Any] = {"epoch": epoch, **sched}
        row["train_loss"] = totals.pop("total") / n_bags
        row.update({f"train_{k}": v / n_bags for k, v in totals.items()})
        row["train_accuracy"] = correct / n_bags
        return row

    def _all_reduce(self, tensor: torch.Tensor) -> torch.Tensor:
        # nccl reduces CUDA tensors only; gloo CPU tensors
        backend = dist.get_backend()
        moved = tensor.to(self.device) if backend == "nccl" else tensor
        dist.all_reduce(moved, op=dist.ReduceOp.SUM)
        return moved.cpu()

    def _gather_ensemble(self, ensemble) -> None:
        """Every bag was recorded on exactly one rank this epoch: summing the records gives all of them."""
        if self.world_size == 1:
            return
        ensemble._pending = self._all_reduce(ensemble._pending)
        ensemble._seen = self._all_reduce(ensemble._seen.to(torch.float64)) > 0


def _rank_seed(seed: int, epoch: int, rank: int) -> int:
    return int(np.random.SeedSequence([seed, epoch, rank, 0x0DD9]).generate_state(1)[0])


# --------------------------------------------------------------------------- one run, end to end


def init_distributed(backend: str | None = None, device: str = "cpu") -> tuple[int, int, int]:
    """Join the process group described by torchrun's environment (``RANK``, ``WORLD_SIZE``...).

    Returns ``(rank, world_size, local_rank)``; ``(0, 1, 0)`` without a launcher (single process).
    """
    if dist.is_initialized():
        return dist.get_rank(), dist.get_world_size(), int(os.environ.get("LOCAL_RANK", 0))
    world_size = int(os.environ.get("WORLD_SIZE", 1))
    local_rank = int(os.environ.get("LOCAL_RANK", 0))
    if world_size == 1:
        return 0, 1, local_rank
    if backend is None:
        backend = "nccl" if device.startswith("cuda") else "gloo"
    if device.startswith("cuda"):
        torch.cuda.set_device(local_rank)
    dist.init_process_group(backend=backend, init_method="env://")
    return dist.get_rank(), dist.get_world_size(), local_rank


def train_ddp(
    cfg: ExperimentConfig,
    method: str | None = None,
    repeat: int = 0,
    fold: int | None = None,
    out_dir: str | Path | None = None,
    resume: bool = False,
) -> dict[str, Any] | None:
    """Train one run of ``cfg`` (one method on one split) with DDP over the current process group.

    Every rank builds the same split and model (seeded as :func:`~lossattn.train.execute_run`), so with
    dropout 0 the result equals ``execute_run(cfg, RunSpec(method, repeat, fold))`` with the same
    ``train.batch_size``. Returns the run record on rank 0 (also written to
    ``<out_dir>/<method>/<key>/result.json``) and None on the other ranks.
    """
    cfg.validate()
    method = method or next(iter(cfg.methods))
    if method not in cfg.methods:
        raise ValueError(f"unknown method {method!r}; the config has: {', '.join(cfg.methods)}")
    if cfg.protocol.kind == "cv" and fold is None:
        fold = 0
    if cfg.protocol.kind != "cv":
        fold = None
    rank, world_size = _world()
    spec = RunSpec(method, repeat, fold)
    train_cfg = cfg.train_config_for(method)
    if train_cfg.device.startswith("cuda") and torch.cuda.is_available() and world_size > 1:
        train_cfg.device = f"cuda:{torch.cuda.current_device()}"
    if train_cfg.threads:
        torch.set_num_threads(train_cfg.threads)
    seed = run_seed(cfg, repeat, fold)
    train, val, test, scaler = prepare_split(cfg, repeat, fold, return_scaler=True)
    torch.manual_seed(seed)
    m = cfg.methods[method]
    model = create_model(m.model, in_features=train.num_features, num_classes=int(train.num_classes), **m.kwargs)
    run_dir = None if out_dir is None else Path(out_dir) / method / spec.key
    if run_dir is not None and rank == 0:
        run_dir.mkdir(parents=True, exist_ok=True)
        resolved = config_to_dict(cfg)
        resolved["run"] = {"method": method, "repeat": repeat, "fold": fold, "seed": seed, "world_size": world_size}
        resolved["train_resolved"] = config_to_dict(train_cfg)
        atomic_write_text(run_dir / "config.yaml", yaml.safe_dump(resolved, sort_keys=False))
        atomic_write_json(run_dir / "versions.json", versions())
    metadata = {
        "standardizer": None if scaler is None else scaler.state_dict(),
        "data_config": config_to_dict(cfg.data),
        "num_classes": int(train.num_classes),
        "instance_shape": list(train.instance_shape),
        "method": method,
        "world_size": world_size,
    }
    trainer = DDPTrainer(model, train_cfg, run_dir, seed, metadata)
    fit = trainer.fit(train, val, test, resume=resume)
    if rank != 0:
        return None
    record = run_record(method, m.model, repeat, fold, seed, train_cfg, (train, val, test), fit)
    record.update(world_size=world_size, global_batch=train_cfg.batch_size)
    if run_dir is not None:
        atomic_write_json(run_dir / "result.json", record)
    return record


# --------------------------------------------------------------------------- command line


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m lossattn.train.ddp",
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


if __name__ == "__main__":
    code = main()
    # Skip interpreter finalisation: gloo's C++ worker threads can still hold objects whose teardown
    # needs the GIL, and a rank then aborts at exit ("terminate called without an active exception",
    # pytorch/pytorch#179291) although its work is done and written (atomically) above.
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)
