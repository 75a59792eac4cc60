"""Bags larger than memory: streamed loss-attention scoring of one huge bag, and training on 100k-instance bags.

1. Writes (once) a ``rows × dim`` float32 ``.npy`` bag (default 1,000,000 × 512 = 2 GiB) without holding it
   in memory, then scores it with :func:`lossattn.streaming.score_bag` (chunked reads, online softmax) in a
   fresh child process and reports wall time, instances/s and the child's peak resident memory (also the
   peak of a child that only imports torch and builds the model, for reference).
2. Checks exactness on a prefix that fits (``--check-rows``): streamed vs the dense ``model(x[None])``, max
   absolute difference of the bag logits and the weights.
3. ``--train-bags N``: trains Loss-Attention (MLP) with the :class:`Trainer` on N bags of ``--train-rows`` ×
   ``--train-dim`` (default 100,000 × 1,024) for one epoch, one bag per step, and reports instances/s and
   peak memory.

    OMP_NUM_THREADS=1 python benchmarks/streaming.py --json streaming.json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

import numpy as np


def write_bag(path: Path, rows: int, dim: int, seed: int = 0, chunk: int = 65536) -> None:
    """Random standard-normal bag, a few 'positive' instances shifted, written chunk by chunk."""
    import numpy.lib.format as fmt

    if path.exists() and path.stat().st_size >= rows * dim * 4:
        return
    rng = np.random.default_rng(seed)
    tmp = path.with_suffix(".part")
    with open(tmp, "wb") as fh:
        fmt.write_array_header_1_0(fh, {"descr": "<f4", "fortran_order": False, "shape": (rows, dim)})
        for start in range(0, rows, chunk):
            x = rng.standard_normal((min(chunk, rows - start), dim), dtype=np.float32)
            x[::9973, 0] += 4.0
            fh.write(x.tobytes())
    tmp.replace(path)


def _model(dim: int):
    import torch

    import lossattn

    torch.manual_seed(0)
    return lossattn.create_model("loss_attention", in_features=dim, lam=0.1, reduction="mean")


def child_score(path: str, chunk: int) -> dict:
    import torch

    from lossattn.streaming import score_bag

    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "1")))
    shape = np.load(path, mmap_mode="r").shape
    model = _model(shape[1])
    t0 = time.perf_counter()
    out = score_bag(path, model, chunk_size=chunk)
    wall = time.perf_counter() - t0
    return {
        "rows": shape[0],
        "dim": shape[1],
        "chunk": chunk,
        "wall_s": wall,
        "instances_per_s": shape[0] / wall,
        "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "bag_probabilities": out.probabilities()[0].tolist(),
        "max_weight": float(out.weights.max()),
    }


def child_baseline(path: str) -> dict:
    import torch  # noqa: F401

    shape = np.load(path, mmap_mode="r").shape
    _model(shape[1])
    return {"peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}


def child_check(path: str, rows: int, chunk: int) -> dict:
    import torch

    from lossattn.streaming import score_bag

    x = np.array(np.load(path, mmap_mode="r")[:rows])
    model = _model(x.shape[1]).eval()
    with torch.no_grad():
        ref = model(torch.from_numpy(x).unsqueeze(0))
    out = score_bag(x, model, chunk_size=chunk)
    return {
        "rows": rows,
        "max_abs_diff_bag_logits": float((out.bag_logits - ref.bag_logits).abs().max()),
        "max_abs_diff_weights": float((out.weights - ref.weights).abs().max()),
    }


def child_train(n_bags: int, rows: int, dim: int) -> dict:
    import torch

    from lossattn.datasets import BagDataset
    from lossattn.engine import TrainConfig, Trainer

    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "1")))
    rng = np.random.default_rng(1)
    x = rng.standard_normal((n_bags * rows, dim), dtype=np.float32)
    labels = np.arange(n_bags) % 2
    for b in range(n_bags):
        if labels[b]:
            x[b * rows + 7, 0] += 4.0
    ds = BagDataset.from_flat(x, np.arange(n_bags + 1) * rows, labels)
    del x
    model = _model(dim)
    cfg = TrainConfig(epochs=1, batch_size=1, lr=1e-4, weight_decay=5e-4)
    t0 = time.perf_counter()
    fit = Trainer(model, cfg, seed=0).fit(ds)
    wall = time.perf_counter() - t0
    return {
        "bags": n_bags,
        "rows_per_bag": rows,
        "dim": dim,
        "wall_s_one_epoch": wall,
        "instances_per_s": n_bags * rows / wall,
        "bags_per_s": n_bags / wall,
        "train_loss": fit.history[-1]["train_loss"],
        "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    }


def run_child(*args: str) -> dict:
    out = subprocess.run([sys.executable, __file__, "--child", *args], check=True, capture_output=True, text=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--dir", default="/tmp/lossattn_streaming")
    p.add_argument("--rows", type=int, default=1_000_000)
    p.add_argument("--dim", type=int, default=512)
    p.add_argument("--chunk", type=int, default=65536)
    p.add_argument("--check-rows", type=int, default=100_000)
    p.add_argument("--train-bags", type=int, default=2)
    p.add_argument("--train-rows", type=int, default=100_000)
    p.add_argument("--train-dim", type=int, default=1024)
    p.add_argument("--keep", action="store_true", help="keep the bag file")
    p.add_argument("--json", default=None)
    p.add_argument("--child", nargs="+", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.child:
        kind, *rest = args.child
        if kind == "score":
            res = child_score(rest[0], int(rest[1]))
        elif kind == "baseline":
            res = child_baseline(rest[0])
        elif kind == "check":
            res = child_check(rest[0], int(rest[1]), int(rest[2]))
        else:
            res = child_train(int(rest[0]), int(rest[1]), int(rest[2]))
        print(json.dumps(res))
        return 0
    d = Path(args.dir)
    d.mkdir(parents=True, exist_ok=True)
    path = d / f"bag_{args.rows}x{args.dim}.npy"
    t0 = time.perf_counter()
    write_bag(path, args.rows, args.dim)
    result = {
        "benchmark": "streaming",
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "command": " ".join([os.path.basename(sys.executable), *sys.argv]),
        "machine": {"cpu": platform.processor() or platform.machine(), "cores": os.cpu_count()},
        "omp_num_threads": os.environ.get("OMP_NUM_THREADS"),
        "file_gib": path.stat().st_size / 2**30,
        "write_s": time.perf_counter() - t0,
        "load_average_before": os.getloadavg()[0],
    }
    result["baseline_import_and_model"] = run_child("baseline", str(path))
    result["streamed"] = run_child("score", str(path), str(args.chunk))
    result["exactness"] = run_child("check", str(path), str(args.check_rows), str(args.chunk // 8 or 1))
    if args.train_bags > 0:
        result["training"] = run_child("train", str(args.train_bags), str(args.train_rows), str(args.train_dim))
    result["load_average_after"] = os.getloadavg()[0]
    if not args.keep:
        path.unlink()
    print(json.dumps(result, indent=2))
    s, e = result["streamed"], result["exactness"]
    print(
        f"streamed scoring of a {s['rows']:,} x {s['dim']} float32 bag ({result['file_gib']:.2f} GiB on disk): "
        f"{s['wall_s']:.1f} s, {s['instances_per_s']:,.0f} instances/s, peak RSS {s['peak_rss_mib']:.0f} MiB "
        f"(torch + model alone: {result['baseline_import_and_model']['peak_rss_mib']:.0f} MiB)"
    )
    print(
        f"exactness on the first {e['rows']:,} rows: max |Δ bag logits| {e['max_abs_diff_bag_logits']:.2e}, "
        f"max |Δ weights| {e['max_abs_diff_weights']:.2e}"
    )
    if "training" in result:
        t = result["training"]
        print(
            f"training, {t['bags']} bags of {t['rows_per_bag']:,} x {t['dim']}, one bag per step: "
            f"{t['instances_per_s']:,.0f} instances/s ({t['bags_per_s']:.2f} bags/s), peak RSS {t['peak_rss_mib']:.0f} MiB"
        )
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
