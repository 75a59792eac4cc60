"""MNIST-bags multi-class (LeNet5, Loss-Attention): our Trainer against a one-bag-per-step reference loop.

The reference loop is written here with the structure of the authors' released code: one bag per Python
step (forward, backward, ``optimizer.step()``), instance weights from the global-max-shifted ``exp`` of the
instance logits (no logsumexp, no masking), the fused instance loss averaged over the bag's instances,
plain ``torch.optim.Adam(lr=5e-4, weight_decay=1e-4)``, and one bag at a time at test time. (It is a
conservative reference: it does one forward per step, the released loop's extra forward for the training
error is left out, and the bags are pre-built tensors served by the ``DataLoader(batch_size=1)``.)

Both start from the same initial weights, see the same training bags in the same order per epoch, train
for the same number of epochs (last epoch kept, no model selection) and are tested on the same 1,000 test
bags, in the same process, interleaved per seed. Reported: training and inference throughput (bags/s,
instances/s), peak resident memory of each phase, test accuracy, the ratios, and per batch size the kernel
floor (:func:`kernel_floor`): the largest speed-up any trainer built on the same kernels could show.

    LOSSATTN_DATA=/path/to/data OMP_NUM_THREADS=1 python benchmarks/mnist_bags.py --json out.json

Exits 0 with a message when the MNIST files are absent.
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from reference import ListBags, PeakMemory, machine, mean_std, reference_test, reference_train, run_main
from torch import nn

LAM = 2.0  # Loss-Attention λ of the MNIST-bags presets (mean reduction, as the released code)
LR = 5e-4
WEIGHT_DECAY = 1e-4


# --------------------------------------------------------------------------- the reference (authors' structure)


class ReferenceLossAttention(nn.Module):
    """The released MNIST-bags model (written anew with the same structure and operations).

    LeNet5 features; one linear layer gives the instance logits and, applied to the pooled features, the
    bag logits; the weights are the global-max-shifted ``exp`` of the instance logits summed over classes
    and normalised over the bag; the pooled feature is ``mean_t(n · α_t · h_t)`` (= ``Σ_t α_t h_t``). The
    released attention layer also owns a ``Linear(500, 1)`` that the forward pass never uses; it is kept,
    since the optimiser iterates over it.
    """

    def __init__(self, num_classes: int, dropout: float = 0.5) -> None:
        super().__init__()
        self.feature_extractor_part1 = nn.Sequential(
            nn.Conv2d(1, 20, kernel_size=5),
            nn.ReLU(),
            nn.MaxPool2d(2, stride=2),
            nn.Conv2d(20, 50, kernel_size=5),
            nn.ReLU(),
            nn.MaxPool2d(2, stride=2),
        )
        self.feature_extractor_part2 = nn.Sequential(nn.Linear(50 * 4 * 4, 500), nn.Dropout(dropout), nn.ReLU())
        self.unused_attention_linear = nn.Linear(500, 1)
        self.linear = nn.Linear(500, num_classes)

    def forward(self, x: torch.Tensor):
        x = x.squeeze(0)  # (1, n, 1, 28, 28) from a batch_size=1 DataLoader -> the n instances of ONE bag
        H = self.feature_extractor_part1(x).view(-1, 50 * 4 * 4)
        H = self.feature_extractor_part2(H)  # (n, 500)
        out_c = F.linear(H, self.linear.weight, self.linear.bias)  # instance logits (n, K)
        e = (out_c - out_c.max()).exp().sum(1, keepdim=True)  # global-max shift, not logsumexp
        alpha = e / e.sum(0)  # (n, 1)
        context = H * (H.size(0) * alpha.expand_as(H))
        y = self.linear(context.mean(0, keepdim=True))  # bag logits (1, K)
        return y, out_c, alpha.squeeze()


def _warm_up(ref: nn.Module, ours: nn.Module, train, args, device: torch.device) -> None:
    """A short training and test pass of copies of both models on a few bags, so that one-time library
    set-up (lazy loading, kernel JIT, allocator growth) is charged to neither side's figures."""
    import copy

    from lossattn.engine import TrainConfig, Trainer, evaluate

    few = train.subset(list(range(min(8, len(train)))))
    bags = ListBags(few)
    r = copy.deepcopy(ref).to(device)
    reference_train(r, bags, 1, 0, device, lambda: None, lr=LR, weight_decay=WEIGHT_DECAY, lam=LAM)
    reference_test(r, bags, device, lambda: None)
    for bs in args.batch_size:
        o = copy.deepcopy(ours)
        cfg = TrainConfig(epochs=1, batch_size=bs, lr=LR, device=str(device), amp=args.amp)
        Trainer(o, cfg, seed=0).fit(few)
        evaluate(o, few, batch_size=args.eval_batch_size, device=device)


def run_seed(seed: int, args, train, test, device: torch.device) -> dict:
    import lossattn
    from lossattn.engine import TrainConfig, Trainer, evaluate

    def sync() -> None:
        if device.type == "cuda":
            torch.cuda.synchronize()

    mem = PeakMemory(device)
    torch.manual_seed(seed)
    ours = lossattn.create_model(
        "loss_attention", num_classes=int(train.num_classes), extractor="lenet5", lam=LAM, reduction="mean"
    )
    init = {k: v.clone() for k, v in ours.state_dict().items()}
    ref = ReferenceLossAttention(int(train.num_classes))
    same = {  # same initial weights (the reference's unused layer keeps its own)
        "feature_extractor_part1.0": "extractor.conv.0",
        "feature_extractor_part1.3": "extractor.conv.3",
        "feature_extractor_part2.0": "extractor.fc.0",
        "linear": "attention.classifier",
    }
    with torch.no_grad():
        for ref_name, ours_name in same.items():
            for kind in ("weight", "bias"):
                ref.get_parameter(f"{ref_name}.{kind}").copy_(ours.get_parameter(f"{ours_name}.{kind}"))
    ref.to(device)
    train_bags, test_bags = ListBags(train), ListBags(test)
    n_train_inst, n_test_inst = train.num_instances, test.num_instances
    out: dict = {"seed": seed}
    _warm_up(ref, ours, train, args, device)

    # reference: train, then test one bag at a time. Seeded as the Trainer seeds its runs: with one bag per
    # step both draw the same dropout masks, so ours with batch size 1 should reproduce its accuracy.
    torch.manual_seed(seed)
    mem.start()
    secs = reference_train(ref, train_bags, args.epochs, seed, device, sync, lr=LR, weight_decay=WEIGHT_DECAY, lam=LAM)
    out["reference_train"] = {"seconds": secs, **mem.stop()}
    mem.start()
    acc, secs = reference_test(ref, test_bags, device, sync)
    out["reference_test"] = {"seconds": secs, "accuracy": acc, **mem.stop()}
    del ref, train_bags, test_bags

    # ours: the Trainer (fused Adam, padded batches of bags), then batched evaluation; one variant per batch size
    for bs in args.batch_size:
        key = f"ours_b{bs}"
        ours.load_state_dict(init)
        cfg = TrainConfig(
            epochs=args.epochs,
            batch_size=bs,
            lr=our_lr(args, bs),
            weight_decay=WEIGHT_DECAY,
            device=str(device),
            amp=args.amp,
            eval_batch_size=args.eval_batch_size,
        )
        trainer = Trainer(ours, cfg, run_dir=None, seed=seed)
        mem.start()
        sync()
        start = time.perf_counter()
        trainer.fit(train)  # no validation set: the last epoch is kept, like the reference
        sync()
        out[f"{key}_train"] = {"seconds": time.perf_counter() - start, **mem.stop()}
        mem.start()
        sync()
        start = time.perf_counter()
        res = evaluate(trainer.model, test, batch_size=args.eval_batch_size, device=device)
        sync()
        out[f"{key}_test"] = {"seconds": time.perf_counter() - start, "accuracy": res.accuracy, **mem.stop()}
        floor = kernel_floor(ours, train, bs, seed, device, sync)
        out[f"{key}_floor"] = {"seconds_per_epoch": floor, "bags_per_s": len(train) / floor}

    for key in [k for k in out if k.endswith(("_train", "_test"))]:
        train_phase = key.endswith("_train")
        n_bags, n_inst = (len(train), n_train_inst) if train_phase else (len(test), n_test_inst)
        reps = args.epochs if train_phase else 1
        out[key]["bags_per_s"] = n_bags * reps / out[key]["seconds"]
        out[key]["instances_per_s"] = n_inst * reps / out[key]["seconds"]
    return out


def kernel_floor(model: nn.Module, train, batch_size: int, seed: int, device: torch.device, sync) -> float:
    """Seconds of one epoch of only LeNet5 forward + backward + a fused Adam step, ``batch_size`` bags per step.

    Nothing else runs: no pooling, no loss, no data handling (the instances of every step are concatenated
    before the clock starts). It bounds from below the epoch time of *any* trainer built on PyTorch's CPU
    kernels for this model and batch size, so ``reference time / floor`` is the largest speed-up such a trainer
    could show over the reference.
    """
    import copy

    from lossattn.engine import flush_denormals

    m = copy.deepcopy(model).to(device).train()
    optimizer = torch.optim.Adam(m.parameters(), lr=LR, weight_decay=WEIGHT_DECAY, fused=True)
    order = np.random.default_rng([seed, 0]).permutation(len(train))
    steps = [
        torch.cat([train[int(i)].x for i in order[s : s + batch_size]]).to(device)
        for s in range(0, len(order), batch_size)
    ]
    with flush_denormals():
        sync()
        start = time.perf_counter()
        for x in steps:
            optimizer.zero_grad(set_to_none=True)
            m.extractor(x).sum().backward()
            optimizer.step()
        sync()
        return time.perf_counter() - start


def our_lr(args, batch_size: int) -> float:
    """lr of our Trainer for a batch size: ``--lr`` if given, else 5e-4 scaled by ``--lr-scaling``."""
    if args.lr is not None:
        return args.lr
    factor = {"none": 1.0, "sqrt": math.sqrt(batch_size), "linear": float(batch_size)}[args.lr_scaling]
    return LR * factor


# --------------------------------------------------------------------------- report


def variants(runs: list[dict]) -> list[str]:
    """``reference`` then ``ours_b{B}`` in run order."""
    return [k[: -len("_train")] for k in runs[0] if k.endswith("_train")]


def summarize(runs: list[dict]) -> dict:
    s: dict = {}
    for v in variants(runs):
        entry: dict = {}
        for phase in ("train", "test"):
            rows = [r[f"{v}_{phase}"] for r in runs]
            e = {k: mean_std([x[k] for x in rows])[0] for k in ("bags_per_s", "instances_per_s", "seconds")}
            e["peak_rss_mib"] = max((x["peak_rss_mib"] or 0) for x in rows)
            e["peak_rss_increase_mib"] = max((x["peak_rss_increase_mib"] or 0) for x in rows)
            if "cuda_peak_allocated_mib" in rows[0]:
                e["cuda_peak_allocated_mib"] = max(x["cuda_peak_allocated_mib"] for x in rows)
            entry[phase] = e
        acc = [r[f"{v}_test"]["accuracy"] for r in runs]
        entry["accuracy_mean"], entry["accuracy_std"] = mean_std(acc)
        entry["accuracy_per_seed"] = acc
        if v != "reference":
            ratio = [r[f"{v}_train"]["bags_per_s"] / r["reference_train"]["bags_per_s"] for r in runs]
            entry["train_speedup"] = float(np.mean(ratio))
            entry["train_speedup_per_seed"] = ratio
            # the largest speed-up any trainer on these kernels could reach (see kernel_floor)
            entry["kernel_floor_speedup"] = float(
                np.mean([r[f"{v}_floor"]["bags_per_s"] / r["reference_train"]["bags_per_s"] for r in runs])
            )
            entry["test_speedup"] = float(
                np.mean([r[f"{v}_test"]["bags_per_s"] / r["reference_test"]["bags_per_s"] for r in runs])
            )
            diff = [r[f"{v}_test"]["accuracy"] - r["reference_test"]["accuracy"] for r in runs]
            entry["accuracy_difference_mean"], entry["accuracy_difference_std"] = mean_std(diff)
        s[v] = entry
    return s


def table(result: dict) -> str:
    s, a = result["summary"], result["settings"]
    lines = [
        "| variant | lr | train bags/s | train inst/s | train × ref | test bags/s | test inst/s | test × ref "
        "| peak RSS increase train / test (MiB) | test accuracy mean ± sd | Δ accuracy vs ref (paired) "
        "| kernel floor × ref |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for v, e in s.items():
        if v == "reference":
            name, lr, tr_x, te_x, diff = "reference loop (1 bag/step, authors' structure)", LR, "1", "1", ""
            floor = ""
        else:
            bs = int(v.split("_b")[-1])
            name = f"ours: Trainer, {bs} bag{'s' if bs > 1 else ''}/step"
            lr = a["lr_per_batch_size"][str(bs)]
            tr_x, te_x = f"**{e['train_speedup']:.2f}×**", f"{e['test_speedup']:.2f}×"
            diff = f"{e['accuracy_difference_mean']:+.3f} ± {e['accuracy_difference_std']:.3f}"
            floor = f"{e['kernel_floor_speedup']:.2f}×"
        mem = f"{e['train']['peak_rss_increase_mib']:.0f} / {e['test']['peak_rss_increase_mib']:.0f}"
        if "cuda_peak_allocated_mib" in e["train"]:
            mem += (
                f" (CUDA peak {e['train']['cuda_peak_allocated_mib']:.0f} / {e['test']['cuda_peak_allocated_mib']:.0f})"
            )
        lines.append(
            f"| {name} | {lr:.2g} | {e['train']['bags_per_s']:.1f} | {e['train']['instances_per_s']:.0f} | {tr_x} | "
            f"{e['test']['bags_per_s']:.1f} | {e['test']['instances_per_s']:.0f} | {te_x} | {mem} | "
            f"{e['accuracy_mean']:.3f} ± {e['accuracy_std']:.3f} | {diff} | {floor} |"
        )
    return "\n".join(lines)


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--root", default=None, help="data root holding mnist/ (default: $LOSSATTN_DATA)")
    p.add_argument("--train-bags", type=int, default=200)
    p.add_argument("--test-bags", type=int, default=1000)
    p.add_argument("--epochs", type=int, default=50, help="training epochs of every variant (50: the preset's)")
    p.add_argument("--seeds", type=int, nargs="+", default=[1, 2, 3])
    p.add_argument(
        "--batch-size", type=int, nargs="+", default=[1, 2, 4, 8, 16], help="bags per step of our Trainer (variants)"
    )
    p.add_argument("--lr", type=float, default=None, help="our lr for every batch size (default: see --lr-scaling)")
    p.add_argument(
        "--lr-scaling", choices=("sqrt", "linear", "none"), default="sqrt", help="our lr = 5e-4 × f(batch size)"
    )
    p.add_argument("--eval-batch-size", type=int, default=32, help="bags per forward of our evaluation")
    p.add_argument("--threads", type=int, default=1, help="torch CPU threads for both (default 1)")
    p.add_argument("--device", default="cpu", help="cpu or cuda (both loops run there)")
    p.add_argument("--amp", action="store_true", help="AMP for our Trainer (CUDA only)")
    p.add_argument("--smoke", action="store_true", help="tiny sizes: checks the script runs, figures meaningless")
    p.add_argument("--json", help="also write the result JSON here")
    args = p.parse_args(argv)
    if args.smoke:
        args.train_bags, args.test_bags, args.epochs, args.seeds = 16, 20, 1, args.seeds[:1]
    return args


def run(args: argparse.Namespace) -> dict | None:
    from lossattn.datasets import DataNotFoundError, make_mnist_bags

    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise SystemExit("--device cuda: no CUDA device is available")
    torch.set_num_threads(args.threads)
    runs = []
    for seed in args.seeds:
        try:
            train = make_mnist_bags("train", args.train_bags, target_digits=(3, 5, 9), seed=seed, root=args.root)
            test = make_mnist_bags("test", args.test_bags, target_digits=(3, 5, 9), seed=10_000 + seed, root=args.root)
        except DataNotFoundError as exc:
            print(f"skipped: MNIST files not found ({exc}); set LOSSATTN_DATA to a folder holding mnist/")
            return None
        r = run_seed(seed, args, train, test, device)
        runs.append(r)
        line = ", ".join(
            f"{v}: {r[v + '_train']['bags_per_s']:.1f} bags/s acc {r[v + '_test']['accuracy']:.3f}"
            for v in variants([r])
        )
        print(f"seed {seed}: {line}", file=sys.stderr, flush=True)
    settings = {
        k: getattr(args, k)
        for k in ("train_bags", "test_bags", "epochs", "seeds", "batch_size", "lr_scaling", "eval_batch_size")
    }
    settings.update(
        threads=torch.get_num_threads(),
        device=str(device),
        amp=args.amp,
        lr_per_batch_size={str(b): our_lr(args, b) for b in args.batch_size},
        reference_lr=LR,
        weight_decay=WEIGHT_DECAY,
        lam=LAM,
        task="MNIST-bags multi-class (targets 3/5/9 -> labels 1/2/3), bag size N(10, 2), LeNet5, Loss-Attention",
        ours="lossattn.engine.Trainer: the bags of a step padded + masked (the extractor sees real instances only), "
        "fused Adam; evaluation batched",
        reference="authors' loop structure: DataLoader(batch_size=1), one forward/backward/step per bag, "
        "global-max-shifted exp, weighted CE with a one-hot mask, torch.optim.Adam(5e-4, wd 1e-4); "
        "test one bag at a time",
        protocol="same initial weights, same bags, same bag order per epoch, last epoch kept (no selection), "
        "1,000 test bags; measured in one process, interleaved per seed",
    )
    return {
        "benchmark": "mnist_bags",
        "date": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "command": " ".join(["python", "benchmarks/mnist_bags.py", *(sys.argv[1:] if argv_is_cli() else [])]),
        "machine": machine(),
        "settings": settings,
        "runs": runs,
        "summary": summarize(runs),
    }


def argv_is_cli() -> bool:
    return Path(sys.argv[0]).name == "mnist_bags.py"


def main(argv=None) -> int:
    return run_main(parse_args, run, table, argv)


if __name__ == "__main__":
    raise SystemExit(main())
