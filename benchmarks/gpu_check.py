"""One prepared GPU check (well under 10 minutes on one GPU): device paths end to end, with figures.

1. the card: name, memory, torch / CUDA versions;
2. the MNIST-bags benchmark (``benchmarks/mnist_bags.py``) on the GPU: our Trainer vs the one-bag-per-step
   reference loop, throughput, peak CUDA memory and test accuracy;
3. short ``Trainer`` runs with ``device=cuda``, AMP off and on, through the protocol layer
   (``run_experiment``: validation-based selection, checkpoints, ``best.pt``), then a resume of the finished
   run (read back, not retrained) and ``lossattn.inference`` from ``best.pt`` on the GPU;
4. the whole-slide benchmark (``benchmarks/slides.py``) on the GPU: generated slides (1024-d, 500–20,000
   patches), the engine with 0 and ``--slide-workers`` loader workers against the plain one-slide-per-step loop
   on the same model, CLAM-style and torchmil loops, and the kernel floor (target on a GPU: the engine ≥ 3× the
   plain loop);
5. a JSON summary (``--json``, default ``$OUT/gpu_check.json`` when ``$OUT`` is set).

    LOSSATTN_DATA=shared/data python benchmarks/gpu_check.py
    python benchmarks/gpu_check.py --device cpu --smoke      # checks the script itself on a CPU machine

Without CUDA (and without ``--device cpu``) it exits with status 2 and says so.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import torch

HERE = Path(__file__).resolve().parent


def card(device: torch.device) -> dict:
    info = {"torch": torch.__version__, "device": str(device)}
    if device.type == "cuda":
        props = torch.cuda.get_device_properties(device)
        info.update(
            gpu=torch.cuda.get_device_name(device),
            gpu_memory_gib=round(props.total_memory / 2**30, 1),
            capability=f"{props.major}.{props.minor}",
            cuda=torch.version.cuda,
            cudnn=torch.backends.cudnn.version(),
            bf16=torch.cuda.is_bf16_supported(),
        )
    return info


def mnist_benchmark(args) -> dict | None:
    sys.path.insert(0, str(HERE))
    import mnist_bags

    sizes = sorted({1, args.batch_size})  # the preset's one bag per step, and batched
    argv = ["--device", args.device, "--batch-size", *map(str, sizes), "--seeds", *map(str, args.seeds)]
    argv += ["--epochs", str(args.epochs)]
    if args.root:
        argv += ["--root", args.root]
    if args.smoke:
        argv.append("--smoke")
    bench_args = mnist_bags.parse_args(argv)
    bench_args.threads = torch.get_num_threads()
    result = mnist_bags.run(bench_args)
    if result is None:
        return None
    print(mnist_bags.table(result), flush=True)
    return result


def trainer_runs(args, device: torch.device) -> list[dict]:
    """Short protocol runs on the device, AMP off and on; resume and predict from the checkpoint."""
    from lossattn.inference import load_trained, predict_bags
    from lossattn.protocols import apply_overrides, load_preset, prepare_split, run_experiment

    rows = []
    epochs = 1 if args.smoke else 5
    bags = 30 if args.smoke else 200  # the validation split is stratified: a few bags of every class
    test_bags = 20 if args.smoke else 1000
    for amp in (False, True):
        cfg = apply_overrides(
            load_preset("mnist_bags_multiclass"),
            [
                "methods=[loss_attention]",
                "protocol.repeats=1",
                f"data.kwargs.num_bags={bags}",
                f"data.test_kwargs.num_bags={test_bags}",
                f"train.epochs={epochs}",
                f"train.batch_size={args.batch_size}",
                f"train.lr={5e-4 * args.batch_size**0.5}",
                f"train.device={device.type}",
                f"train.amp={str(amp).lower()}",
            ]
            + ([f"data.root={args.root}"] if args.root else []),
        )
        with tempfile.TemporaryDirectory() as tmp:
            if device.type == "cuda":
                torch.cuda.synchronize()
                torch.cuda.reset_peak_memory_stats()
            start = time.perf_counter()
            result = run_experiment(cfg, tmp)
            seconds = time.perf_counter() - start
            rec = result["runs"][0]
            again = run_experiment(cfg, tmp, resume=True)["runs"][0]  # complete: read back, not retrained
            assert again["test_accuracy"] == rec["test_accuracy"], "resume changed a finished run"
            run_dir = Path(tmp) / "loss_attention" / "r0"
            trained = load_trained(run_dir / "best.pt", device=device)
            _, _, test = prepare_split(cfg, 0, None)
            pred = predict_bags(trained, test, batch_size=256, device=device)
            agree = float((pred.predicted == test.labels).mean())
            assert abs(agree - rec["test_accuracy"]) < 1e-9, "best.pt does not reproduce the run's test accuracy"
        row = {
            "amp": amp,
            "amp_dtype": None if not amp or device.type != "cuda" else str(_amp_dtype()),
            "epochs": epochs,
            "batch_size": args.batch_size,
            "train_bags": rec["n_train"],
            "seconds_total": seconds,
            "seconds_fit": rec["seconds"],
            "train_bags_per_s": rec["n_train"] * epochs / rec["seconds"],
            "selected_epoch": rec["selected_epoch"],
            "test_accuracy": rec["test_accuracy"],
            "predict_accuracy_from_best_pt": agree,
        }
        if device.type == "cuda":
            row["cuda_peak_allocated_mib"] = torch.cuda.max_memory_allocated() / 2**20
        print(json.dumps(row), flush=True)
        rows.append(row)
    return rows


def slide_benchmark(args) -> dict:
    """``benchmarks/slides.py`` on the device: the engine (0 and ``--slide-workers`` workers) vs the plain loop."""
    sys.path.insert(0, str(HERE))
    import slides

    workers = sorted({0, args.slide_workers})
    argv = ["--device", args.device, "--workers", *map(str, workers)]
    if args.smoke:
        argv += ["--smoke", "--rounds", "1", "--epochs", "1"]
    else:
        argv += ["--slides", str(args.slides), "--rounds", "2", "--epochs", "2"]
    bench_args = slides.parse_args(argv)
    bench_args.threads = torch.get_num_threads()
    result = slides.run(bench_args)
    print(slides.table(result), flush=True)
    return result


def _amp_dtype():
    import torch

    from lossattn.engine import TrainConfig
    from lossattn.engine.runtime import amp_dtype

    return amp_dtype(TrainConfig(amp=True), torch.device("cuda"))


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description="GPU end-to-end check and figures for lossattn")
    p.add_argument("--device", default="cuda", choices=("cuda", "cpu"))
    p.add_argument("--smoke", action="store_true", help="tiny sizes (checks the script, figures meaningless)")
    p.add_argument("--root", default=None, help="data root holding mnist/ (default: $LOSSATTN_DATA)")
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--epochs", type=int, default=10, help="epochs of the MNIST-bags benchmark")
    p.add_argument("--seeds", type=int, nargs="+", default=[1, 2])
    p.add_argument("--slides", type=int, default=40, help="slides of the whole-slide benchmark")
    p.add_argument("--slide-workers", type=int, default=4, help="loader workers of the engine in the slide benchmark")
    p.add_argument("--json", default=None, help="write the summary here (default: $OUT/gpu_check.json if $OUT)")
    args = p.parse_args(argv)
    if args.device == "cuda" and not torch.cuda.is_available():
        print(
            "gpu_check: no CUDA device is available (torch.cuda.is_available() is False, torch "
            f"{torch.__version__}, CUDA build {torch.version.cuda}); nothing was run. "
            "Use --device cpu --smoke to check the script itself.",
            file=sys.stderr,
        )
        return 2
    if args.root is None and not os.environ.get("LOSSATTN_DATA") and (HERE.parent / "shared" / "data").is_dir():
        args.root = str(HERE.parent / "shared" / "data")
    device = torch.device(args.device)
    start = time.perf_counter()
    summary: dict = {"card": card(device)}
    print(json.dumps(summary["card"]), flush=True)
    bench = mnist_benchmark(args)
    summary["mnist_bags"] = None if bench is None else {k: bench[k] for k in ("settings", "summary", "machine")}
    if bench is not None:
        summary["trainer_runs"] = trainer_runs(args, device)
    summary["slides"] = slide_benchmark(args)
    summary["seconds"] = time.perf_counter() - start
    out = args.json or (str(Path(os.environ["OUT"]) / "gpu_check.json") if os.environ.get("OUT") else None)
    if out:
        Path(out).write_text(json.dumps(summary, indent=2) + "\n")
    print(json.dumps({k: v for k, v in summary.items() if k not in ("mnist_bags", "slides")}, indent=2))
    if bench is not None:
        s = bench["summary"]
        ref = s["reference"]
        print(
            f"\n{summary['card'].get('gpu', 'CPU')}, total {summary['seconds']:.0f} s. MNIST-bags vs the reference loop:"
        )
        for v, e in s.items():
            if v != "reference":
                print(
                    f"  {v}: training {e['train_speedup']:.1f}x ({e['train']['bags_per_s']:.0f} vs "
                    f"{ref['train']['bags_per_s']:.0f} bags/s), inference {e['test_speedup']:.1f}x, accuracy "
                    f"{e['accuracy_mean']:.3f} vs {ref['accuracy_mean']:.3f}, kernel floor "
                    f"{e['kernel_floor_speedup']:.1f}x"
                )
    print("Whole-slide training (target on a GPU: the engine >= 3x the plain one-slide-per-step loop):")
    for kind, e in summary["slides"]["extractors"].items():
        for name, r in e["ratios"].items():
            print(f"  {kind}: {name} {r['median']:.2f}x")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
