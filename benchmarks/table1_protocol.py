"""Wall time of the paper's Table 1 protocol (classic MIL) with the vectorized engine, against the per-run Trainer.

The protocol (preset ``classic_mil``): MUSK1, MUSK2, FOX, TIGER, ELEPHANT × 10 folds × 5 repeats × 100 epochs,
one bag per optimizer step, MLP fc256-fc128-fc64 (ReLU, dropout 0.5) + the method's pooling head, Adam 1e-4,
weight decay 5e-4, selection on a validation split. Per dataset this script

* trains all planned runs of ``--method`` with the vectorized engine (:mod:`lossattn.engine.manyruns`): the
  runs are split into ``--jobs`` groups, one worker process each, every group one batched computation;
* trains the first ``--reference-runs`` planned runs one by one with the per-run :class:`Trainer` (the
  ``engine="trainer"`` path of ``run_experiment``) and extrapolates its time to all runs (stated as such);
  ``--trainer-keep-denormals`` runs it without flushing denormals to zero (``TrainConfig.flush_denormal``);
* trains the first ``--loop-runs`` runs with the one-bag-per-step reference loop written with the
  structure of the authors' released code (``benchmarks/reference.py``) and extrapolates likewise;
* reports wall and CPU seconds, the mean test accuracy of both (the reference on its slice, next to the
  vectorized engine's accuracy on the same runs), and the machine's load average before and after (other
  processes on the machine slow both down: compare CPU seconds when the load is high).

    LOSSATTN_DATA=/path/to/data OMP_NUM_THREADS=1 python benchmarks/table1_protocol.py \\
        --datasets musk1 tiger --jobs 2 --reference-runs 2 --json table1.json

With dropout the two engines draw different dropout masks (each run is an equally valid random draw); with
``--dropout 0`` each vectorized run equals the Trainer's run to float rounding (tests/train/test_vectorized.py).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from datetime import datetime, timezone

import numpy as np
import torch
from reference import machine

DATASETS = ("musk1", "musk2", "fox", "tiger", "elephant")


def _group(payload):
    """One vectorized group in a worker process: (records, wall s, cpu s, engine timings)."""
    cfg_dict, method, specs = payload
    torch.set_num_threads(1)
    from lossattn.protocols import run_group

    t0, c0 = time.perf_counter(), time.process_time()
    records = run_group(cfg_dict, method, specs)
    return records, time.perf_counter() - t0, time.process_time() - c0


def _reference(payload):
    """Per-run Trainer runs, one after the other, in this process: (records, wall s, cpu s)."""
    cfg_dict, specs, flush = payload
    torch.set_num_threads(1)
    cfg_dict = {**cfg_dict, "train": {**cfg_dict["train"], "flush_denormal": flush}}
    from lossattn.protocols import execute_run

    t0, c0 = time.perf_counter(), time.process_time()
    records = [execute_run(cfg_dict, s) for s in specs]
    return records, time.perf_counter() - t0, time.process_time() - c0


def _authors_loop(payload):
    """The authors'-structure one-bag-per-step loop (``benchmarks/reference.py``) on runs, one after the
    other: training for the preset's epochs, then one test pass (no per-epoch validation, so this
    under-counts the reference's work a little). Returns (test accuracies, wall s, cpu s)."""
    cfg_dict, specs = payload
    torch.set_num_threads(1)
    from reference import ListBags, reference_test, train_reference_mlp

    from lossattn.models import create_model
    from lossattn.protocols import ExperimentConfig, config_from_dict, prepare_split, run_seed

    cfg = config_from_dict(ExperimentConfig, cfg_dict)
    method = next(iter(cfg.methods.values()))
    tc = cfg.train
    lam = float(method.kwargs.get("lam", 0.1))
    cpu = torch.device("cpu")
    t0, c0 = time.perf_counter(), time.process_time()
    accs = []
    for spec in specs:
        train, _, test = prepare_split(cfg, spec.repeat, spec.fold)
        seed = run_seed(cfg, spec.repeat, spec.fold)
        torch.manual_seed(seed)
        ours = create_model(method.model, in_features=train.num_features, num_classes=2, **method.kwargs)
        ref, _ = train_reference_mlp(ours, train, tc.epochs, seed, lr=tc.lr, weight_decay=tc.weight_decay, lam=lam)
        accs.append(reference_test(ref, ListBags(test), cpu, lambda: None)[0])
    return accs, time.perf_counter() - t0, time.process_time() - c0


def load_config(dataset: str, args):
    from lossattn.protocols import config_to_dict, load_preset

    cfg = load_preset("classic_mil")
    cfg.data.name = dataset
    if args.root:
        cfg.data.root = args.root
    cfg.train.epochs = args.epochs
    cfg.protocol.repeats = args.repeats
    cfg.methods = {args.method: cfg.methods[args.method]}
    if args.dropout is not None:
        kw = dict(cfg.methods[args.method].kwargs)
        kw["extractor_kwargs"] = {**kw.get("extractor_kwargs", {}), "dropout": args.dropout}
        cfg.methods[args.method].kwargs = kw
    cfg.validate()
    return cfg, config_to_dict(cfg)


def _slice_timing(k: int, wall: float, cpu: float, n_runs: int, jobs: int) -> dict:
    """Time measured on ``k`` runs, extrapolated to all ``n_runs`` (and spread over ``jobs`` processes)."""
    return {
        "measured_runs": k,
        "wall_s_measured": wall,
        "cpu_s_measured": cpu,
        "wall_s_per_run": wall / k,
        "wall_s_all_runs_extrapolated": wall / k * n_runs,
        "wall_s_all_runs_extrapolated_on_jobs": wall / k * n_runs / max(1, jobs),
    }


def bench_dataset(dataset: str, args) -> dict:
    from joblib import Parallel, delayed

    from lossattn.protocols import plan_runs

    cfg, cfg_dict = load_config(dataset, args)
    specs = plan_runs(cfg)
    n_runs = len(specs)
    out: dict = {"dataset": dataset, "runs": n_runs, "epochs": args.epochs, "method": args.method}
    load0 = os.getloadavg()[0]
    if not args.skip_vectorized:
        chunks = [list(c) for c in np.array_split(np.array(specs, dtype=object), max(1, args.jobs)) if len(c)]
        t0 = time.perf_counter()
        if len(chunks) > 1:
            parts = Parallel(n_jobs=len(chunks), backend="loky")(
                delayed(_group)((cfg_dict, args.method, c)) for c in chunks
            )
        else:
            parts = [_group((cfg_dict, args.method, chunks[0]))]
        wall = time.perf_counter() - t0
        records = [r for part in parts for r in part[0]]
        acc = [r["test_accuracy"] for r in records]
        out["vectorized"] = {
            "wall_s": wall,
            "cpu_s": sum(p[2] for p in parts),
            "groups": len(chunks),
            "group_wall_s": [p[1] for p in parts],
            "test_accuracy_mean": float(np.mean(acc)),
            "test_accuracy_std": float(np.std(acc)),
        }
        by_key = {(r["repeat"], r["fold"]): r for r in records}
    if args.reference_runs > 0:
        ref_specs = specs[: args.reference_runs]
        recs, wall, cpu = _reference((cfg_dict, ref_specs, not args.trainer_keep_denormals))
        k = len(ref_specs)
        out["reference"] = {
            **_slice_timing(k, wall, cpu, n_runs, args.jobs),
            "test_accuracy_mean_slice": float(np.mean([r["test_accuracy"] for r in recs])),
            "flush_denormal": not args.trainer_keep_denormals,
        }
        if "vectorized" in out:
            same = [by_key[(r["repeat"], r["fold"])]["test_accuracy"] for r in recs]
            out["vectorized"]["test_accuracy_mean_on_reference_slice"] = float(np.mean(same))
            out["speedup_wall_vs_reference_on_jobs"] = (
                out["reference"]["wall_s_all_runs_extrapolated_on_jobs"] / out["vectorized"]["wall_s"]
            )
    if args.loop_runs > 0 and args.method == "loss_attention":
        loop_specs = specs[: args.loop_runs]
        accs, wall, cpu = _authors_loop((cfg_dict, loop_specs))
        k = len(loop_specs)
        out["authors_loop"] = {
            **_slice_timing(k, wall, cpu, n_runs, args.jobs),
            "test_accuracy_mean_slice_last_epoch": float(np.mean(accs)),
        }
    out["load_average_before_after"] = [load0, os.getloadavg()[0]]
    return out


def table(result: dict) -> str:
    lines = [
        f"Table 1 protocol, method {result['method']}, {result['epochs']} epochs, jobs={result['jobs']}",
        f"{'dataset':<9} {'runs':>4} {'vec wall s':>10} {'vec cpu s':>9} {'vec acc':>13} "
        f"{'ref s/run':>9} {'ref all s (extrap.)':>19} {'ref acc (slice)':>15} {'speed-up':>8} {'load':>9}",
    ]
    for d in result["datasets"]:
        v, r = d.get("vectorized", {}), d.get("reference", {})
        acc = f"{v['test_accuracy_mean']:.3f}±{v['test_accuracy_std']:.3f}" if v else "-"
        ref_acc = (
            f"{r['test_accuracy_mean_slice']:.3f}/{v.get('test_accuracy_mean_on_reference_slice', float('nan')):.3f}"
            if r
            else "-"
        )
        lines.append(
            f"{d['dataset']:<9} {d['runs']:>4} {v.get('wall_s', float('nan')):>10.1f} {v.get('cpu_s', float('nan')):>9.1f} "
            f"{acc:>13} {r.get('wall_s_per_run', float('nan')):>9.1f} "
            f"{r.get('wall_s_all_runs_extrapolated_on_jobs', float('nan')):>19.0f} {ref_acc:>15} "
            f"{d.get('speedup_wall_vs_reference_on_jobs', float('nan')):>7.1f}x "
            f"{d['load_average_before_after'][0]:>4.1f}/{d['load_average_before_after'][1]:<4.1f}"
        )
    tot = result["total"]
    lines.append(
        f"total over the datasets measured ({', '.join(tot['datasets'])}): vectorized {tot['vectorized_wall_s']:.0f} s "
        f"wall ({tot['vectorized_cpu_s']:.0f} CPU s); per-run Trainer extrapolated {tot['reference_wall_s_extrapolated']:.0f} s "
        f"wall on {result['jobs']} process(es)"
    )
    if tot.get("authors_loop_wall_s_extrapolated"):
        per = ", ".join(
            f"{d['dataset']} {d['authors_loop']['wall_s_per_run']:.1f} s/run"
            for d in result["datasets"]
            if "authors_loop" in d
        )
        lines.append(
            f"authors'-structure reference loop ({per}; measured on a slice): {tot['authors_loop_wall_s_extrapolated']:.0f} s "
            f"wall extrapolated to all runs on {result['jobs']} process(es)"
        )
    lines.append(
        "ref acc (slice) = per-run Trainer / vectorized engine on the same runs; the reference time is measured on "
        "the slice and extrapolated to all runs (divided by jobs: the Trainer's runs spread over as many processes)"
    )
    return "\n".join(lines)


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--datasets", nargs="+", default=list(DATASETS), choices=DATASETS)
    p.add_argument("--method", default="loss_attention", help="a method of the classic_mil preset")
    p.add_argument("--epochs", type=int, default=100)
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--jobs", type=int, default=2, help="vectorized groups (worker processes) per dataset")
    p.add_argument("--reference-runs", type=int, default=2, help="per-run Trainer runs to time (0: none)")
    p.add_argument(
        "--loop-runs", type=int, default=1, help="runs of the authors'-structure reference loop to time (0: none)"
    )
    p.add_argument("--skip-vectorized", action="store_true")
    p.add_argument(
        "--trainer-keep-denormals",
        action="store_true",
        help="run the per-run Trainer without flushing denormals to zero (its default flushes, as the engine)",
    )
    p.add_argument("--dropout", type=float, default=None, help="override the MLP dropout (default: the preset's)")
    p.add_argument("--root", default=None, help="data root (default: $LOSSATTN_DATA)")
    p.add_argument("--json", default=None, help="also write the result here")
    return p.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    torch.set_num_threads(1)
    start = time.perf_counter()
    datasets = []
    for d in args.datasets:
        datasets.append(bench_dataset(d, args))
        print(json.dumps(datasets[-1]), file=sys.stderr, flush=True)
    total = {
        "datasets": [d["dataset"] for d in datasets],
        "vectorized_wall_s": sum(d.get("vectorized", {}).get("wall_s", 0.0) for d in datasets),
        "vectorized_cpu_s": sum(d.get("vectorized", {}).get("cpu_s", 0.0) for d in datasets),
        "reference_wall_s_extrapolated": sum(
            d.get("reference", {}).get("wall_s_all_runs_extrapolated_on_jobs", 0.0) for d in datasets
        ),
        "authors_loop_wall_s_extrapolated": sum(
            d.get("authors_loop", {}).get("wall_s_all_runs_extrapolated_on_jobs", 0.0) for d in datasets
        ),
    }
    result = {
        "benchmark": "table1_protocol",
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "command": " ".join([os.path.basename(sys.executable), *sys.argv]),
        "machine": machine(),
        "method": args.method,
        "epochs": args.epochs,
        "jobs": args.jobs,
        "datasets": datasets,
        "total": total,
        "seconds": time.perf_counter() - start,
    }
    print(json.dumps(result, indent=2))
    print(table(result))
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(result, fh, indent=2)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
