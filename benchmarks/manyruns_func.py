"""The Table 1 protocol trained as one batched group: the hand-written backward against torch.func (vmap + grad).

Per dataset and method of the ``classic_mil`` preset (MLP fc256-fc128-fc64 with the preset's dropout 0.5,
Adam 1e-4, weight decay 5e-4, one bag per step, selection on a validation split), all planned runs
(10 folds × 5 repeats = 50) with the same splits, seeds, initial weights and dropout are trained by

* ``hand``: :class:`lossattn.engine.manyruns.VectorizedTrainer` (stacked weights, hand-written backward
  into persistent buffers, fused Adam per class of runs);
* ``func``: :class:`lossattn.engine.manyruns.FuncVectorizedTrainer` (the same data path, Adam and
  selection; the gradient is ``torch.func.vmap(torch.func.grad_and_value(...))`` of the real model's
  ``functional_call`` forward and its own ``loss``). Both engines draw the same per-run dropout masks, so
  they train the same runs up to float rounding.

The two are interleaved (hand, func, hand, func, ...) in one process with one torch thread, ``--repeats``
times; the table gives medians and the median of the paired func/hand ratios. Training time (the
epochs' steps) is reported apart from the per-epoch validation and the final evaluation. Optionally:

* ``--trainer-runs K``: the first K runs with the per-run :class:`~lossattn.engine.Trainer` (its own
  dropout draws), training time per epoch measured and extrapolated to all runs (stated as such);
* ``--bucket-check``: ``func`` with its default size buckets, with ``max_buckets=1`` (every step padded to
  its largest bag) and with eager buckets (a low cost per call) for ``--bucket-check-epochs`` epochs;
* ``--baseline MODEL``: a model the hand-written engine cannot train (``instance_max``) with ``func`` on all
  runs against the per-run Trainer on ``--baseline-trainer-runs`` runs (extrapolated).

    LOSSATTN_DATA=/path/to/data OMP_NUM_THREADS=1 python benchmarks/manyruns_func.py \\
        --datasets musk1 musk2 --epochs 20 --repeats 3 --trainer-runs 2 --bucket-check --json manyruns.json
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import sys
import time
from datetime import datetime, timezone

import numpy as np
import torch
from reference import emit, machine

from lossattn.engine import Trainer
from lossattn.engine.manyruns import FuncVectorizedTrainer, VectorizedTrainer
from lossattn.models import create_model
from lossattn.protocols import MethodConfig, load_preset, plan_runs, prepare_split, run_seed

ENGINES = {"hand": VectorizedTrainer, "func": FuncVectorizedTrainer}


def load_runs(dataset: str, method: str, model: str | None, args) -> tuple:
    """The experiment config, the training config and every planned run's (seed, train, val, test)."""
    cfg = load_preset("classic_mil")
    cfg.data.name = dataset
    if args.root:
        cfg.data.root = args.root
    cfg.train.epochs = args.epochs
    if model is not None:
        cfg.methods = {method: MethodConfig(model, {})}
    else:
        cfg.methods = {method: cfg.methods[method]}
    cfg.validate()
    specs = plan_runs(cfg)[: args.runs]
    runs = []
    for s in specs:
        train, val, test = prepare_split(cfg, s.repeat, s.fold)
        runs.append((run_seed(cfg, s.repeat, s.fold), train, val, test))
    return cfg, cfg.train_config_for(method), runs


def build(cfg, method: str, seed: int, train) -> torch.nn.Module:
    """The run's model, initialised exactly as :func:`lossattn.protocols.runs.prepare_run` does."""
    spec = cfg.methods[method]
    torch.manual_seed(seed)
    return create_model(spec.model, in_features=train.num_features, num_classes=int(train.num_classes), **spec.kwargs)


def run_engine(name: str, cfg, method: str, train_cfg, runs, **kw) -> dict:
    """One batched group of all runs; its timings (per epoch) and test accuracies."""
    models = [build(cfg, method, seed, tr) for seed, tr, _, _ in runs]
    engine = ENGINES[name](models, train_cfg, [r[0] for r in runs], **kw)
    t0, c0 = time.perf_counter(), time.process_time()
    fits = engine.fit([r[1] for r in runs], [r[2] for r in runs], [r[3] for r in runs])
    wall, cpu = time.perf_counter() - t0, time.process_time() - c0
    tm, E = engine.timings, train_cfg.epochs
    out = {
        "train_wall_s_per_epoch": tm["train"] / E,
        "train_cpu_s_per_epoch": tm["cpu_train"] / E,
        "eval_wall_s_per_epoch": tm["eval"] / E,
        "final_eval_wall_s": tm["final_eval"],
        "fit_wall_s": wall,
        "fit_cpu_s": cpu,
        "steps_per_epoch": tm["steps"] // E,
        "test_accuracy": [f.test.accuracy for f in fits],
    }
    if name == "func":
        st = engine.stats
        out["padded_rows_per_real_row"] = st["padded_rows"] / max(1, st["real_rows"])
        out["bucketed_step_fraction"] = st["bucketed_steps"] / max(1, st["steps"])
        out["vmap_calls_per_step"] = st["calls"] / max(1, st["steps"])
    return out


class TimedTrainer(Trainer):
    """The per-run Trainer, with the wall and CPU seconds of its training epochs (no evaluation) recorded."""

    train_wall = train_cpu = 0.0

    def _train_epoch(self, epoch, train_set, ensemble):
        t0, c0 = time.perf_counter(), time.process_time()
        row = super()._train_epoch(epoch, train_set, ensemble)
        self.train_wall += time.perf_counter() - t0
        self.train_cpu += time.process_time() - c0
        return row


def run_trainer(cfg, method: str, train_cfg, runs, k: int) -> dict:
    """The first ``k`` runs one by one with the per-run Trainer; per-epoch times extrapolated to all runs."""
    wall = cpu = 0.0
    acc = []
    for seed, tr, va, te in runs[:k]:
        trainer = TimedTrainer(build(cfg, method, seed, tr), train_cfg, seed=seed)
        fit = trainer.fit(tr, va, te)
        wall += trainer.train_wall
        cpu += trainer.train_cpu
        acc.append(fit.test.accuracy)
    E, n = train_cfg.epochs, len(runs)
    return {
        "measured_runs": k,
        "train_wall_s_per_run_epoch": wall / (k * E),
        "train_wall_s_per_epoch_all_runs_extrapolated": wall / (k * E) * n,
        "train_cpu_s_per_epoch_all_runs_extrapolated": cpu / (k * E) * n,
        "test_accuracy_slice": acc,
    }


def compare(dataset: str, method: str, args) -> dict:
    cfg, train_cfg, runs = load_runs(dataset, method, None, args)
    out: dict = {"dataset": dataset, "method": method, "runs": len(runs), "epochs": args.epochs, "repeats": []}
    load0 = os.getloadavg()[0]
    names = ["hand", "func"]
    for rep in range(args.repeats):
        row = {}
        for name in names:
            row[name] = run_engine(name, cfg, method, train_cfg, runs)
            print(
                f"{dataset} {method} rep {rep} {name}: {row[name]['train_wall_s_per_epoch']:.3f} s/epoch train "
                f"({row[name]['train_cpu_s_per_epoch']:.3f} CPU), load {os.getloadavg()[0]:.1f}",
                file=sys.stderr,
                flush=True,
            )
        out["repeats"].append(row)
    reps = out["repeats"]
    for name in names:
        out[name] = {
            key: float(np.median([r[name][key] for r in reps])) for key in reps[0][name] if key != "test_accuracy"
        }
        out[name]["test_accuracy_mean"] = float(np.mean(reps[0][name]["test_accuracy"]))
    for name in names[1:]:
        for key in ("train_wall_s_per_epoch", "train_cpu_s_per_epoch"):
            ratios = [r[name][key] / r["hand"][key] for r in reps]
            out[f"{name}_over_hand_{key}"] = {"median": float(np.median(ratios)), "all": ratios}
    a, b = np.array(reps[0]["hand"]["test_accuracy"]), np.array(reps[0]["func"]["test_accuracy"])
    out["accuracy_runs_differing"] = int((np.abs(a - b) > 1e-9).sum())
    out["accuracy_max_abs_difference"] = float(np.abs(a - b).max())
    if args.bucket_check:
        short_cfg = dataclasses.replace(train_cfg, epochs=args.bucket_check_epochs)
        row = {}
        variants = (
            ("buckets", {}),
            ("one_call", {"max_buckets": 1}),
            ("eager_buckets", {"bucket_overhead": 150, "gather_cost": 6}),
        )
        for label, kw in variants:
            row[label] = run_engine("func", cfg, method, short_cfg, runs, **kw)
        out["bucket_check"] = {
            "epochs": args.bucket_check_epochs,
            **{f"{label}_train_wall_s_per_epoch": v["train_wall_s_per_epoch"] for label, v in row.items()},
            **{f"{label}_train_cpu_s_per_epoch": v["train_cpu_s_per_epoch"] for label, v in row.items()},
            **{f"{label}_padded_rows_per_real_row": v["padded_rows_per_real_row"] for label, v in row.items()},
            **{f"{label}_vmap_calls_per_step": v["vmap_calls_per_step"] for label, v in row.items()},
        }
    if args.trainer_runs > 0:
        out["trainer"] = run_trainer(cfg, method, train_cfg, runs, args.trainer_runs)
    out["load_average_before_after"] = [load0, os.getloadavg()[0]]
    return out


def baseline(dataset: str, model: str, args) -> dict:
    cfg, train_cfg, runs = load_runs(dataset, model, model, args)
    load0 = os.getloadavg()[0]
    func = run_engine("func", cfg, model, train_cfg, runs)
    trainer = run_trainer(cfg, model, train_cfg, runs, args.baseline_trainer_runs)
    k = args.baseline_trainer_runs
    return {
        "dataset": dataset,
        "model": model,
        "runs": len(runs),
        "epochs": args.epochs,
        "func": {**{k_: v for k_, v in func.items() if k_ != "test_accuracy"}},
        "func_test_accuracy_mean": float(np.mean(func["test_accuracy"])),
        "func_test_accuracy_mean_on_trainer_slice": float(np.mean(func["test_accuracy"][:k])),
        "trainer": trainer,
        "trainer_over_func_train_wall": trainer["train_wall_s_per_epoch_all_runs_extrapolated"]
        / func["train_wall_s_per_epoch"],
        "load_average_before_after": [load0, os.getloadavg()[0]],
    }


def table(result: dict) -> str:
    lines = [
        f"torch.func vs hand-written backward, classic_mil preset, {result['epochs']} epochs, medians of "
        f"{result['repeats']} interleaved repeats, 1 thread; seconds per epoch of training all runs",
        f"{'dataset':<7} {'method':<15} {'runs':>4} {'hand s/ep':>9} {'func s/ep':>9} {'func/hand wall':>14} "
        f"{'func/hand cpu':>13} {'eval s/ep h/f':>13} {'acc hand':>8} {'acc func':>8} {'Trainer s/ep (extrap.)':>22}",
    ]
    for d in result["compare"]:
        h, f = d["hand"], d["func"]
        tr = d.get("trainer", {}).get("train_wall_s_per_epoch_all_runs_extrapolated", float("nan"))
        lines.append(
            f"{d['dataset']:<7} {d['method']:<15} {d['runs']:>4} {h['train_wall_s_per_epoch']:>9.3f} "
            f"{f['train_wall_s_per_epoch']:>9.3f} {d['func_over_hand_train_wall_s_per_epoch']['median']:>13.2f}x "
            f"{d['func_over_hand_train_cpu_s_per_epoch']['median']:>12.2f}x "
            f"{h['eval_wall_s_per_epoch']:>6.3f}/{f['eval_wall_s_per_epoch']:<6.3f} "
            f"{h['test_accuracy_mean']:>8.3f} {f['test_accuracy_mean']:>8.3f} {tr:>22.2f}"
        )
    for d in result["compare"]:
        if "bucket_check" in d:
            b = d["bucket_check"]
            parts = [
                f"{label} {b[f'{label}_train_cpu_s_per_epoch']:.3f} CPU s/epoch "
                f"({b[f'{label}_padded_rows_per_real_row']:.2f} rows/real row, "
                f"{b[f'{label}_vmap_calls_per_step']:.2f} calls/step)"
                for label in ("buckets", "one_call", "eager_buckets")
                if f"{label}_train_cpu_s_per_epoch" in b
            ]
            lines.append(f"func buckets, {d['dataset']} {d['method']} ({b['epochs']} epochs): " + "; ".join(parts))
    for b in result["baselines"]:
        lines.append(
            f"baseline {b['model']} on {b['dataset']} ({b['runs']} runs): func {b['func']['train_wall_s_per_epoch']:.3f} "
            f"s/epoch, per-run Trainer {b['trainer']['train_wall_s_per_epoch_all_runs_extrapolated']:.3f} s/epoch "
            f"(extrapolated from {b['trainer']['measured_runs']} runs) = {b['trainer_over_func_train_wall']:.1f}x; "
            f"test acc func {b['func_test_accuracy_mean']:.3f} (all runs), "
            f"{b['func_test_accuracy_mean_on_trainer_slice']:.3f} vs Trainer "
            f"{np.mean(b['trainer']['test_accuracy_slice']):.3f} on the slice"
        )
    return "\n".join(lines)


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--datasets", nargs="+", default=["musk1", "musk2"])
    p.add_argument("--methods", nargs="+", default=["loss_attention", "attention"])
    p.add_argument("--epochs", type=int, default=20)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--runs", type=int, default=None, help="only the first runs of the plan (default: all)")
    p.add_argument("--trainer-runs", type=int, default=0, help="per-run Trainer runs to time as the anchor")
    p.add_argument("--bucket-check", action="store_true", help="also time func without size buckets")
    p.add_argument("--bucket-check-epochs", type=int, default=2)
    p.add_argument("--baseline", default=None, help="a model the hand-written engine cannot train")
    p.add_argument("--baseline-trainer-runs", type=int, default=2)
    p.add_argument("--root", default=None, help="data root (default: $LOSSATTN_DATA)")
    p.add_argument("--json", default=None, help="also write the result here")
    return p.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    torch.set_num_threads(1)
    start = time.perf_counter()
    result = {
        "benchmark": "manyruns_func",
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "command": " ".join([os.path.basename(sys.executable), *sys.argv]),
        "malloc_env": {k: v for k, v in os.environ.items() if k.startswith("MALLOC_")},
        "epochs": args.epochs,
        "repeats": args.repeats,
        "compare": [compare(d, m, args) for d in args.datasets for m in args.methods],
        "baselines": [baseline(d, args.baseline, args) for d in args.datasets] if args.baseline else [],
    }
    result["machine"] = machine()
    result["seconds"] = time.perf_counter() - start
    emit(result, table(result), args.json)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
