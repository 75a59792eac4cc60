"""MUSK2 with the MLP (Loss-Attention, Table 1 settings): the one-bag-per-step reference loop, our Trainer and
our vectorized engine on the same cross-validation runs.

Work measured: the first ``--runs`` runs of the Table 1 protocol on MUSK2 (10-fold CV, repeat 0 first), each
trained for ``--epochs`` epochs with one bag per optimiser step, the last epoch kept (no validation split,
so that all three train on the same bags and nothing but speed differs), then tested on its fold.

* **reference**: the authors' loop structure (``benchmarks/reference.py``) with the MLP fc256-fc128-fc64
  (ReLU, dropout 0.5), Adam 1e-4, weight decay 5e-4, λ = 0.1, one run after the other; test one bag at a time;
* **ours, Trainer**: :class:`lossattn.engine.Trainer` one run after the other (batch size 1, fused Adam),
  batched evaluation;
* **ours, vectorized**: all the runs as one batched computation (:mod:`lossattn.engine.manyruns`).

The three start every run from the same initial weights and see the same bags in the same order; they
draw different dropout masks, so their accuracies agree in distribution, not bag for bag. Reported:
training throughput (bags/s and instances/s over all runs × epochs), inference throughput, peak resident
memory per phase, mean test accuracy, and the ratios to the reference. One process, one thread.

    LOSSATTN_DATA=/path/to/data OMP_NUM_THREADS=1 python benchmarks/musk2_mlp.py --json musk2.json

Exits 0 with a message when the MUSK2 files are absent.
"""

from __future__ import annotations

import argparse
import sys
import time
from datetime import datetime, timezone

import numpy as np
import torch
from reference import (
    ListBags,
    PeakMemory,
    ReferenceMLPLossAttention,
    machine,
    mean_std,
    reference_test,
    reference_train,
    run_main,
    train_reference_mlp,
)

LAM, LR, WEIGHT_DECAY = 0.1, 1e-4, 5e-4  # the classic_mil preset


def config(args):
    from lossattn.protocols import load_preset

    cfg = load_preset("classic_mil")
    cfg.data.name = "musk2"
    if args.root:
        cfg.data.root = args.root
    cfg.train.epochs = args.epochs
    cfg.protocol.val_fraction = 0.0  # last epoch kept: the three train on the same bags
    cfg.protocol.repeats = max(1, -(-args.runs // cfg.protocol.folds))
    cfg.methods = {"loss_attention": cfg.methods["loss_attention"]}
    return cfg.validate()


def _warm_up(cfg, spec, split, fresh_model) -> None:
    """One epoch of each path on one run first, so one-time set-up (lazy imports, allocator growth, kernel
    selection) is charged to none of the timed phases."""
    import copy

    from lossattn.engine import Trainer, evaluate
    from lossattn.protocols import config_to_dict, run_group

    tr, _, te = split
    cpu = torch.device("cpu")
    ref = ReferenceMLPLossAttention(tr.num_features)
    reference_train(ref, ListBags(tr), 1, 0, cpu, lambda: None, lr=LR, weight_decay=WEIGHT_DECAY, lam=LAM)
    reference_test(ref, ListBags(te), cpu, lambda: None)
    one = copy.deepcopy(cfg)
    one.train.epochs = 1
    model = fresh_model(0, tr.num_features)
    Trainer(model, one.train_config_for("loss_attention"), run_dir=None, seed=0).fit(tr)
    evaluate(model, te, batch_size=one.train.eval_batch_size, device=cpu)
    run_group(config_to_dict(one), "loss_attention", [spec])


def bench(args) -> dict | None:
    from lossattn.datasets import DataNotFoundError
    from lossattn.engine import Trainer, evaluate
    from lossattn.models import create_model
    from lossattn.protocols import config_to_dict, plan_runs, prepare_split, run_group, run_seed

    torch.set_num_threads(1)
    device = torch.device("cpu")
    cfg = config(args)
    specs = plan_runs(cfg)[: args.runs]
    try:
        splits = [prepare_split(cfg, s.repeat, s.fold) for s in specs]
    except DataNotFoundError as exc:
        print(f"skipped: MUSK2 not found ({exc}); set LOSSATTN_DATA to the folder holding it")
        return None
    seeds = [run_seed(cfg, s.repeat, s.fold) for s in specs]
    method = cfg.methods["loss_attention"]
    train_bags = sum(len(tr) for tr, _, _ in splits)
    train_inst = sum(tr.num_instances for tr, _, _ in splits)
    test_bags = sum(len(te) for _, _, te in splits)
    test_inst = sum(te.num_instances for _, _, te in splits)
    mem = PeakMemory(device)
    out: dict = {}

    def fresh_model(seed: int, in_features: int):
        torch.manual_seed(seed)
        return create_model(method.model, in_features=in_features, num_classes=2, **method.kwargs)

    _warm_up(cfg, specs[0], splits[0], fresh_model)

    # --- reference loop, one run after the other
    ref_models, secs = [], 0.0
    mem.start()
    for (tr, _, _), seed in zip(splits, seeds, strict=True):
        ref, s = train_reference_mlp(
            fresh_model(seed, tr.num_features), tr, args.epochs, seed, lr=LR, weight_decay=WEIGHT_DECAY, lam=LAM
        )
        secs += s
        ref_models.append(ref)
    out["reference_train"] = {"seconds": secs, **mem.stop()}
    mem.start()
    accs, secs = [], 0.0
    for ref, (_, _, te) in zip(ref_models, splits, strict=True):
        acc, s = reference_test(ref, ListBags(te), device, lambda: None)
        accs.append(acc)
        secs += s
    out["reference_test"] = {"seconds": secs, "accuracy": float(np.mean(accs)), "per_run": accs, **mem.stop()}
    del ref_models

    # --- our Trainer, one run after the other
    trained, secs = [], 0.0
    mem.start()
    for (tr, _, _), seed in zip(splits, seeds, strict=True):
        model = fresh_model(seed, tr.num_features)
        tc = cfg.train_config_for("loss_attention")
        start = time.perf_counter()
        Trainer(model, tc, run_dir=None, seed=seed).fit(tr)
        secs += time.perf_counter() - start
        trained.append(model)
    out["trainer_train"] = {"seconds": secs, **mem.stop()}
    mem.start()
    accs, secs = [], 0.0
    for model, (_, _, te) in zip(trained, splits, strict=True):
        start = time.perf_counter()
        accs.append(evaluate(model, te, batch_size=cfg.train.eval_batch_size, device=device).accuracy)
        secs += time.perf_counter() - start
    out["trainer_test"] = {"seconds": secs, "accuracy": float(np.mean(accs)), "per_run": accs, **mem.stop()}
    del trained

    # --- the vectorized engine: every run in one batched computation (its records time training + evaluation)
    mem.start()
    start = time.perf_counter()
    records = run_group(config_to_dict(cfg), "loss_attention", specs)
    wall = time.perf_counter() - start
    accs = [r["test_accuracy"] for r in records]
    out["vectorized_train"] = {"seconds": wall, "includes_evaluation": True, **mem.stop()}
    out["vectorized_test"] = {"seconds": None, "accuracy": float(np.mean(accs)), "per_run": accs}

    for key, entry in out.items():
        if entry.get("seconds") is None:
            continue
        train_phase = key.endswith("_train")
        bags, inst = (train_bags * args.epochs, train_inst * args.epochs) if train_phase else (test_bags, test_inst)
        entry["bags_per_s"] = bags / entry["seconds"]
        entry["instances_per_s"] = inst / entry["seconds"]
    ref_train, ref_test = out["reference_train"]["bags_per_s"], out["reference_test"]["bags_per_s"]
    for v in ("trainer", "vectorized"):
        out[f"{v}_train"]["speedup_vs_reference"] = out[f"{v}_train"]["bags_per_s"] / ref_train
        if out[f"{v}_test"].get("bags_per_s"):
            out[f"{v}_test"]["speedup_vs_reference"] = out[f"{v}_test"]["bags_per_s"] / ref_test
        diffs = np.subtract(out[f"{v}_test"]["per_run"], out["reference_test"]["per_run"])
        out[f"{v}_test"]["accuracy_difference_mean"], out[f"{v}_test"]["accuracy_difference_std"] = mean_std(diffs)
    return {
        "benchmark": "musk2_mlp",
        "date": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "command": " ".join(["python", "benchmarks/musk2_mlp.py", *sys.argv[1:]]),
        "machine": machine(),
        "settings": {
            "runs": len(specs),
            "epochs": args.epochs,
            "train_bags_per_run_mean": train_bags / len(specs),
            "train_instances_per_run_mean": train_inst / len(specs),
            "lr": LR,
            "weight_decay": WEIGHT_DECAY,
            "lam": LAM,
            "threads": torch.get_num_threads(),
        },
        "results": out,
    }


def table(result: dict) -> str:
    r = result["results"]
    rows = [
        ("reference loop (1 bag/step, authors' structure), run by run", "reference"),
        ("ours: Trainer (1 bag/step), run by run", "trainer"),
        ("ours: vectorized engine, all runs at once (1 bag/step per run)", "vectorized"),
    ]
    lines = [
        "| variant | train bags/s | train inst/s | train × ref | test bags/s | test × ref | peak RSS increase "
        "train (MiB) | test accuracy | Δ accuracy vs ref (paired) |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for name, v in rows:
        tr, te = r[f"{v}_train"], r[f"{v}_test"]
        x = "1" if v == "reference" else f"**{tr['speedup_vs_reference']:.2f}×**"
        tb = "(in train)" if te.get("bags_per_s") is None else f"{te['bags_per_s']:.0f}"
        tx = (
            "1"
            if v == "reference"
            else ("–" if te.get("speedup_vs_reference") is None else f"{te['speedup_vs_reference']:.2f}×")
        )
        diff = (
            "" if v == "reference" else f"{te['accuracy_difference_mean']:+.3f} ± {te['accuracy_difference_std']:.3f}"
        )
        lines.append(
            f"| {name} | {tr['bags_per_s']:.0f} | {tr['instances_per_s']:.0f} | {x} | {tb} | {tx} | "
            f"{tr['peak_rss_increase_mib']:.0f} | {te['accuracy']:.3f} | {diff} |"
        )
    return "\n".join(lines)


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--root", default=None, help="data root holding musk2 (default: $LOSSATTN_DATA)")
    p.add_argument("--runs", type=int, default=10, help="how many CV runs of the protocol (default 10 = one repeat)")
    p.add_argument("--epochs", type=int, default=100)
    p.add_argument("--smoke", action="store_true", help="2 runs × 2 epochs: checks the script runs")
    p.add_argument("--json", help="also write the result JSON here")
    args = p.parse_args(argv)
    if args.smoke:
        args.runs, args.epochs = 2, 2
    return args


def main(argv=None) -> int:
    return run_main(parse_args, bench, table, argv)


if __name__ == "__main__":
    raise SystemExit(main())
