"""One GPU session (< 10 minutes): CIFAR-10 with 1,000 training images, Loss-Attention vs mean pooling.

Trains ResNet18-MIL (3×3 stem, the 16 feature-map positions are the instances) with Loss-Attention
(λ = 1, consistency 400·ramp-up on the weights' temporal ensemble) and with mean pooling (= global average
pooling, the standard ResNet) on the same class-balanced, seeded 1,000-image subset, with the SPEC schedule
(``cifar10_images`` preset) compressed to as many epochs as fit the time budget (at most the paper's 200),
and prints, per method, the test accuracy of the last epoch (honest: the test set is never used for
selection) and the best test accuracy over epochs (the paper's figure), beside the paper's Table 4 numbers,
with the card's name.

Data: ``--npz FILE`` (made on any machine with ``--export-npz FILE``: the subset + the 10,000 test images,
~30 MB, small enough to carry to a GPU box), else ``--root`` / ``$LOSSATTN_DATA`` / ``../shared/data`` /
``shared/data`` with CIFAR-10 pickle batches or the JPEG q75 zips.

Examples::

    python scripts/gpu_cifar10.py --smoke                              # CPU, seconds (random data if none)
    python scripts/gpu_cifar10.py --export-npz results/cifar10_1000.npz --root "$LOSSATTN_DATA"
    python scripts/gpu_cifar10.py --npz results/cifar10_1000.npz --budget-s 420 --out "$OUT"
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np
import torch

import lossattn
from lossattn import datasets as D
from lossattn.experiments import image_runs as I
from lossattn.experiments import paper
from lossattn.experiments.table3 import cifar10_source
from lossattn.protocols import load_preset

CIFAR10_MEAN = (0.4914, 0.4822, 0.4465)
CIFAR10_STD = (0.2470, 0.2435, 0.2616)
METHODS = ("loss_attention", "mean")


def say(*parts) -> None:
    print(*parts, flush=True)


def find_root(arg: str | None) -> str | None:
    here = Path(__file__).resolve().parent.parent
    for cand in (arg, os.environ.get("LOSSATTN_DATA"), here.parent / "shared" / "data", here / "shared" / "data"):
        if cand and cifar10_source(str(cand)) != "missing":
            return str(cand)
    return None


def load_data(args) -> tuple[dict[str, np.ndarray], str]:
    """``{"train_x", "train_y", "test_x", "test_y"}`` uint8 images (n, 3, 32, 32) and labels; and a source note."""
    if args.npz:
        with np.load(args.npz) as z:
            data = {k: z[k] for k in ("train_x", "train_y", "test_x", "test_y")}
            note = str(z["source"]) if "source" in z.files else "unknown source"
        return data, f"npz {args.npz} ({note})"
    root = find_root(args.root)
    if root is None:
        if not args.smoke:
            sys.exit("no CIFAR-10 data found: pass --npz FILE or --root DIR (see the module docstring)")
        rng = np.random.default_rng(0)  # smoke test without data: random images, the pipeline still runs
        y = np.arange(args.size) % 10
        return {
            "train_x": rng.integers(0, 256, (args.size, 3, 32, 32), dtype=np.uint8),
            "train_y": y,
            "test_x": rng.integers(0, 256, (args.test_size, 3, 32, 32), dtype=np.uint8),
            "test_y": np.arange(args.test_size) % 10,
        }, "random images (no CIFAR-10 found; smoke test only)"
    from lossattn.datasets import load_cifar10

    tr_img, tr_lab = load_cifar10("train", root, cache=False)
    te_img, te_lab = load_cifar10("test", root, cache=False)
    sub = D.class_balanced_subset(tr_lab, args.size, seed=args.seed)
    test = D.class_balanced_subset(te_lab, args.test_size, seed=12345)
    data = {
        "train_x": np.asarray(tr_img[sub]),
        "train_y": np.asarray(tr_lab)[sub],
        "test_x": np.asarray(te_img[test]),
        "test_y": np.asarray(te_lab)[test],
    }
    return data, f"{cifar10_source(root)} from {root}; subset seed {args.seed}"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--smoke", action="store_true", help="CPU smoke test: width-8 ResNet, 100/200 images, 2 epochs")
    p.add_argument("--budget-s", type=float, default=420.0, help="training time budget in seconds (default 420)")
    p.add_argument("--epochs", type=int, help="fixed number of epochs (default: as many as fit, at most 200)")
    p.add_argument("--size", type=int, default=1000, help="training images, class-balanced (default 1000)")
    p.add_argument("--test-size", type=int, help="test images, class-balanced (default all 10,000)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--root", help="data root with cifar10/ (pickle batches or JPEG zips)")
    p.add_argument("--npz", help="prepared data file (see --export-npz)")
    p.add_argument("--export-npz", metavar="FILE", help="write the subset + test images to FILE and exit")
    p.add_argument("--width", type=int, help="backbone width (default 64 = ResNet18; 8 with --smoke)")
    p.add_argument("--amp", action="store_true", help="bfloat16 autocast on CUDA")
    p.add_argument("--workers", type=int, help="DataLoader workers (default 4 on CUDA, 0 on CPU)")
    p.add_argument("--out", help="folder for results.json (e.g. $OUT)")
    args = p.parse_args(argv)
    start = time.perf_counter()
    if args.smoke:
        args.size, args.test_size = min(args.size, 100), args.test_size or 200
        args.epochs = args.epochs or 2
    args.test_size = args.test_size or 10000
    device = "cuda" if torch.cuda.is_available() and not args.smoke else "cpu"
    card = torch.cuda.get_device_name(0) if device == "cuda" else "cpu"
    if device == "cpu":
        torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "1") or 1))
    else:
        torch.backends.cudnn.benchmark = True
    say(f"device: {device} ({card}); torch {torch.__version__}; lossattn {lossattn.__version__}")

    data, source = load_data(args)
    if args.export_npz:
        Path(args.export_npz).parent.mkdir(parents=True, exist_ok=True)
        np.savez_compressed(args.export_npz, **data, source=np.asarray(source))
        say(f"wrote {args.export_npz} ({Path(args.export_npz).stat().st_size / 1e6:.1f} MB): {source}")
        return 0
    say(f"data: {source}; {len(data['train_y'])} training / {len(data['test_y'])} test images")

    cfg = load_preset("cifar10_images")
    width = args.width or (8 if args.smoke else 64)
    workers = args.workers if args.workers is not None else (4 if device == "cuda" else 0)
    train_tf = D.image_transforms(True, CIFAR10_MEAN, CIFAR10_STD, 32, 4)
    eval_tf = D.image_transforms(False, CIFAR10_MEAN, CIFAR10_STD, 32)
    train_set = D.ImageArrayDataset(data["train_x"], data["train_y"], train_tf)
    test_set = D.ImageArrayDataset(data["test_x"], data["test_y"], eval_tf)

    def build(method: str):
        torch.manual_seed(args.seed)
        m = cfg.methods[method]
        return lossattn.create_model(m.model, num_classes=10, width=width, **m.kwargs)

    def config(method: str, epochs: int):
        tc = I.image_train_config(cfg, method, epochs=epochs, device=device)
        tc.amp = args.amp
        tc.oracle = True
        return tc

    epochs = args.epochs
    if epochs is None:  # calibrate: one full epoch (+ test evaluation) of each method, then fill the budget
        t0 = time.perf_counter()
        per_epoch = 0.0
        for method in METHODS:
            t = time.perf_counter()
            I.train_image_classifier(
                build(method), train_set, config(method, 1), test_set=test_set, num_workers=workers
            )
            per_epoch += time.perf_counter() - t
        left = args.budget_s - (time.perf_counter() - t0)
        epochs = int(max(1, min(200, left // (per_epoch * 1.05))))
        say(f"calibration: {per_epoch:.2f} s per epoch of both methods -> {epochs} epochs each")

    results = {"device": device, "card": card, "epochs": epochs, "width": width, "data": source, "methods": {}}
    for method in METHODS:
        tc = config(method, epochs)
        say(
            f"\n{method}: {epochs} epochs, lr {tc.lr} ramp-up {tc.rampup_length} / ramp-down {tc.rampdown_length}, "
            f"consistency {tc.consistency_weight} over {tc.consistency_rampup}"
        )
        every = max(1, epochs // 10)

        def log(row, every=every):
            if row["epoch"] % every == 0 or row["epoch"] == epochs - 1:
                say(
                    f"  epoch {row['epoch']:3d}  lr {row['lr']:.2e}  loss {row['train_loss']:.3f}  "
                    f"train acc {row['train_accuracy']:.3f}  test acc {row['test_accuracy']:.4f}  {row['seconds']:.0f} s"
                )

        fit = I.train_image_classifier(
            build(method), train_set, tc, test_set=test_set, seed=args.seed, num_workers=workers, log=log
        )
        results["methods"][method] = {
            "test_accuracy_last_epoch": fit.test.accuracy,
            "test_top5_last_epoch": fit.test.top5,
            "best_test_accuracy_over_epochs": fit.oracle_test_accuracy,
            "seconds": fit.seconds,
            "history": fit.history,
        }
        if args.out:
            Path(args.out).mkdir(parents=True, exist_ok=True)
            (Path(args.out) / "results.json").write_text(json.dumps(results, indent=1))

    say(f"\nCIFAR-10, {len(data['train_y'])} training images, {epochs} epochs, {card}:")
    say("| method | test acc (last epoch) | best test acc over epochs | paper (1,000 images) | seconds |")
    say("|---|---|---|---|---|")
    for method, r in results["methods"].items():
        pub = paper.TABLE4[method][0]
        say(
            f"| {method} | {r['test_accuracy_last_epoch']:.4f} | {r['best_test_accuracy_over_epochs']:.4f} | "
            f"{pub:.3f} | {r['seconds']:.0f} |"
        )
    la, mean = (results["methods"][m]["test_accuracy_last_epoch"] for m in METHODS)
    say(f"Loss-Attention − mean (last epoch): {la - mean:+.4f}; total wall {time.perf_counter() - start:.0f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
