"""How much denormal floats slow the one-bag-per-step reference loop down on MNIST-bags.

Trains the reference loop of ``mnist_bags.py`` (the authors' structure, LeNet5, Loss-Attention λ = 2,
``torch.optim.Adam(5e-4, weight_decay=1e-4)``, 200 training bags) for ``--epochs`` epochs, counts the
parameters and Adam moments below ``torch.finfo(float32).tiny`` (denormal), then times further epochs of
the same run with ``torch.set_flush_denormal`` off, on and off again. Our Trainer flushes denormals while
training (``TrainConfig.flush_denormal``); this shows what that is worth to a long one-bag-per-step run.

    LOSSATTN_DATA=/path/to/data OMP_NUM_THREADS=1 python benchmarks/denormals.py --epochs 50

Exits 0 with a message when the MNIST files are absent.
"""

from __future__ import annotations

import argparse
import sys
from datetime import datetime, timezone

import torch
from mnist_bags import LAM, LR, WEIGHT_DECAY, ReferenceLossAttention
from reference import ListBags, machine, reference_train, run_main


def denormal_count(tensors) -> tuple[int, int]:
    """(values that are denormal, values in all) over ``tensors``."""
    tiny = torch.finfo(torch.float32).tiny
    denormal = total = 0
    for t in tensors:
        denormal += int(((t != 0) & (t.abs() < tiny)).sum())
        total += t.numel()
    return denormal, total


def run(args: argparse.Namespace) -> dict | None:
    from lossattn.datasets import DataNotFoundError, make_mnist_bags

    torch.set_num_threads(args.threads)
    try:
        train = make_mnist_bags("train", args.train_bags, target_digits=(3, 5, 9), seed=args.seed, root=args.root)
    except DataNotFoundError as exc:
        print(f"skipped: MNIST files not found ({exc}); set LOSSATTN_DATA to a folder holding mnist/")
        return None
    torch.manual_seed(args.seed)
    model = ReferenceLossAttention(int(train.num_classes))
    optimizer = torch.optim.Adam(model.parameters(), lr=LR, weight_decay=WEIGHT_DECAY)
    bags, cpu = ListBags(train), torch.device("cpu")
    hyper = {"lr": LR, "weight_decay": WEIGHT_DECAY, "lam": LAM, "optimizer": optimizer}
    torch.set_flush_denormal(False)
    secs = reference_train(model, bags, args.epochs, args.seed, cpu, lambda: None, **hyper)
    params = denormal_count(p.detach() for p in model.parameters())
    moments = denormal_count(s[k] for s in optimizer.state.values() for k in ("exp_avg", "exp_avg_sq"))
    epoch_seconds = {}
    for i, flush in enumerate((False, True, False)):
        torch.set_flush_denormal(flush)
        t = reference_train(model, bags, 1, args.seed, cpu, lambda: None, first_epoch=args.epochs + i, **hyper)
        epoch_seconds[f"{'flush' if flush else 'no_flush'}_{i}"] = t
    torch.set_flush_denormal(False)
    no_flush = (epoch_seconds["no_flush_0"] + epoch_seconds["no_flush_2"]) / 2
    return {
        "benchmark": "denormals",
        "date": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "command": " ".join(["python", "benchmarks/denormals.py", *sys.argv[1:]]),
        "machine": machine(),
        "settings": {k: getattr(args, k) for k in ("train_bags", "epochs", "seed", "threads")},
        "training": {"seconds": secs, "bags_per_s": len(train) * args.epochs / secs},
        "denormal_parameters": {"count": params[0], "of": params[1]},
        "denormal_adam_moments": {"count": moments[0], "of": moments[1]},
        "next_epoch_seconds": epoch_seconds,
        "slowdown_without_flush": no_flush / epoch_seconds["flush_1"],
    }


def table(r: dict) -> str:
    p, m, e = r["denormal_parameters"], r["denormal_adam_moments"], r["next_epoch_seconds"]
    return "\n".join(
        [
            "| epochs trained | bags/s over them | denormal parameters | denormal Adam moments "
            "| next epoch: no flush / flush / no flush (s) | slowdown without flushing |",
            "|---|---|---|---|---|---|",
            f"| {r['settings']['epochs']} | {r['training']['bags_per_s']:.1f} | {p['count']:,} of {p['of']:,} "
            f"| {m['count']:,} of {m['of']:,} ({100 * m['count'] / m['of']:.1f}%) "
            f"| {e['no_flush_0']:.2f} / {e['flush_1']:.2f} / {e['no_flush_2']:.2f} "
            f"| **{r['slowdown_without_flush']:.2f}×** |",
        ]
    )


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--root", default=None, help="data root holding mnist/ (default: $LOSSATTN_DATA)")
    p.add_argument("--train-bags", type=int, default=200)
    p.add_argument("--epochs", type=int, default=50, help="epochs trained before counting (50: the preset's)")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--threads", type=int, default=1, help="torch CPU threads (default 1)")
    p.add_argument("--json", help="also write the result JSON here")
    return p.parse_args(argv)


def main(argv=None) -> int:
    return run_main(parse_args, run, table, argv)


if __name__ == "__main__":
    raise SystemExit(main())
